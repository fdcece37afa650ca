package stream

import (
	"errors"
	"unicode/utf8"
)

// MaxEventNameLen is the longest event name.
const MaxEventNameLen = 200

// ErrBadEventName is returned for an event name outside the syntax. (Channel names are package
// channel's.)
var ErrBadEventName = errors.New("event names are 1-200 characters of printable UTF-8 and must not start with \"herald:\"")

// ValidEventName checks an event name: it goes into an SSE `event:` line, so it must not hold
// line breaks or other control characters; "herald:" names are the server's own.
func ValidEventName(name string) error {
	if len(name) == 0 || len(name) > MaxEventNameLen || !utf8.ValidString(name) {
		return ErrBadEventName
	}
	if len(name) >= 7 && name[:7] == "herald:" {
		return ErrBadEventName
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029' || r == '\ufeff' {
			return ErrBadEventName
		}
	}
	return nil
}
