// Package channel owns what a channel name is, for every layer of Herald: the characters and
// length a name may have, the prefixes that make a channel private or presence, how many
// channels one socket may hold, and the `*` patterns that tokens, API keys and channel rules
// match names with.
//
// It depends on nothing, so the store, the engine, the authorization rules and the HTTP layer
// all take these rules from one place and cannot drift apart. It knows nothing of events,
// subscribers or HTTP. (The JS client keeps its own copy; docs/protocol.md, "Channels", is the
// contract both follow.)
package channel

import "errors"

// MaxLen is the longest channel name (Pusher's limit).
const MaxLen = 164

// MaxPerSocket bounds the channels of one stream, poll or socket.
const MaxPerSocket = 100

// ErrInvalid is returned for a name outside the channel syntax.
var ErrInvalid = errors.New("channel names are 1-164 characters of A-Z a-z 0-9 _ - = @ , . ; (or #server-to-user-<user id>)")

// Valid checks a channel name: 1–164 characters of A-Za-z0-9_-=@,.; — the Pusher set, which
// also keeps names safe inside Redis hash tags (no braces), URLs and SSE lines — or a user
// channel, UserPrefix and a user id of those characters. '#' opens no other name, so store
// keys of Herald's own that start with '#' (the node registry's {#nodes}) never meet a channel.
func Valid(name string) error {
	if len(name) == 0 || len(name) > MaxLen {
		return ErrInvalid
	}
	start := 0
	if name[0] == '#' {
		if !IsUser(name) || len(name) == len(UserPrefix) {
			return ErrInvalid
		}
		start = len(UserPrefix)
	}
	for i := start; i < len(name); i++ {
		if !nameByte[name[i]] {
			return ErrInvalid
		}
	}
	return nil
}

var nameByte = func() (t [256]bool) {
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

// NameByte reports whether c may appear in a channel name.
func NameByte(c byte) bool { return nameByte[c] }

// Prefixes of the channels that need authorization to be read, as in the Pusher protocol.
const (
	PrivatePrefix  = "private-"
	PresencePrefix = "presence-"
)

// NeedsAuth reports whether reading the channel needs authorization: a private- or
// presence- channel.
func NeedsAuth(name string) bool {
	return hasPrefix(name, PrivatePrefix) || hasPrefix(name, PresencePrefix)
}

// UserPrefix starts a user channel, Pusher's "#server-to-user-<user id>": what the Pusher
// API's sendToUser publishes to, read by every socket signed in as that user. No socket
// subscribes to one: signing in joins it.
const UserPrefix = "#server-to-user-"

// IsUser reports whether the name is a user channel's.
func IsUser(name string) bool { return hasPrefix(name, UserPrefix) }

// UserChannel is the user channel of a user id, or "" when the id cannot be in a channel name.
func UserChannel(userID string) string {
	name := UserPrefix + userID
	if Valid(name) != nil {
		return ""
	}
	return name
}

// IsPresence reports whether the channel keeps members.
func IsPresence(name string) bool { return hasPrefix(name, PresencePrefix) }

func hasPrefix(s, prefix string) bool { return len(s) >= len(prefix) && s[:len(prefix)] == prefix }

// MaxPatternLen is the longest pattern ValidPattern accepts.
const MaxPatternLen = 512

// ValidPattern reports whether p is a pattern of channel characters and `*`, 1 to
// MaxPatternLen bytes long.
func ValidPattern(p string) bool {
	if p == "" || len(p) > MaxPatternLen {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] != '*' && p[i] != '#' && !nameByte[p[i]] {
			return false
		}
	}
	return true
}

// Match reports whether name matches a pattern: `*` stands for any run of characters, possibly
// empty, and every other byte stands for itself.
//
// It walks both strings once; after a mismatch it goes back to the most recent star and lets
// that star absorb one more byte. Only the latest star ever needs revisiting, so the work is
// bounded by len(pattern)*len(name) and there is no recursion.
func Match(pattern, name string) bool {
	pi, ni := 0, 0
	lastStar, resume := -1, 0
	for ni < len(name) {
		if pi < len(pattern) {
			if pattern[pi] == '*' {
				lastStar, resume = pi, ni
				pi++
				continue
			}
			if pattern[pi] == name[ni] {
				pi++
				ni++
				continue
			}
		}
		if lastStar < 0 {
			return false
		}
		resume++
		pi, ni = lastStar+1, resume
	}
	for pi < len(pattern) && pattern[pi] == '*' {
		pi++
	}
	return pi == len(pattern)
}

// MatchAny reports whether any of the patterns matches name.
func MatchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if Match(p, name) {
			return true
		}
	}
	return false
}
