package stream

import (
	"errors"
	"unicode/utf8"
)

// MaxChannelLen is the longest channel name (Pusher's limit).
const MaxChannelLen = 164

// MaxEventNameLen is the longest event name.
const MaxEventNameLen = 200

// Errors of name validation. Compare with errors.Is.
var (
	ErrBadChannel   = errors.New("channel names are 1-164 characters of A-Z a-z 0-9 _ - = @ , . ;")
	ErrBadEventName = errors.New("event names are 1-200 characters of printable UTF-8 and must not start with \"herald:\"")
)

// ValidChannel checks a channel name: 1–164 characters of A-Za-z0-9_-=@,.; — the Pusher set,
// which also keeps names safe inside Redis hash tags, URLs and SSE lines.
func ValidChannel(name string) error {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return ErrBadChannel
	}
	for i := 0; i < len(name); i++ {
		if !channelByte[name[i]] {
			return ErrBadChannel
		}
	}
	return nil
}

var channelByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_-=@,.;" {
		t[c] = true
	}
	return t
}()

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
