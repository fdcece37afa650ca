package authz

// MaxChannelLen is the longest channel name (Pusher's limit, and Herald's).
const MaxChannelLen = 164

// channelByte marks the bytes a channel name may hold: A-Z a-z 0-9 _ - = @ , . ;
// It repeats stream.ValidChannel's set on purpose: authz decides without depending on the
// engine. The two must stay the same (docs/protocol.md, "Channels").
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

// validChannel reports whether name is 1–164 bytes of the channel character set. Every
// decision denies other names, so hostile input never reaches a pattern.
func validChannel(name string) bool {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !channelByte[name[i]] {
			return false
		}
	}
	return true
}

// guarded reports whether a channel needs authorization in the Pusher protocol.
func guarded(channel string) bool {
	return hasPrefix(channel, "private-") || hasPrefix(channel, "presence-")
}

func hasPrefix(s, prefix string) bool { return len(s) >= len(prefix) && s[:len(prefix)] == prefix }

// Match reports whether name matches a token or API key pattern: `*` stands for any run of
// characters, possibly empty, and every other byte stands for itself.
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

// matchAny reports whether any of the patterns matches name.
func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if Match(p, name) {
			return true
		}
	}
	return false
}
