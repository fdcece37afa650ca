package channel

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"", "", true},
		{"", "a", false},
		{"*", "", true},
		{"*", "anything.at-all", true},
		{"**", "x", true},
		{"a", "a", true},
		{"a", "ab", false},
		{"ab", "a", false},
		{"exact", "exactly", false},
		{"a*", "a", true},
		{"a*", "abc", true},
		{"*c", "abc", true},
		{"*c", "abd", false},
		{"a*c", "ac", true},
		{"a*c", "abbbc", true},
		{"a*c", "abbbcd", false},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "aXcYb", false},
		{"a*b*c", "aXXbYY", false},
		{"a**c", "abc", true},
		{"*a*a*a*a*b", strings.Repeat("a", 60), false},
		{"private-*", "private-conversation.1", true},
		{"private-*", "presence-x", false},
		{"private-conversation.*.7", "private-conversation.1.7", true},
		{"private-conversation.*.7", "private-conversation.1.77", false},
		{"*.*", "a.b", true},
		{"*.*", "ab", false},
	} {
		if got := Match(c.pattern, c.name); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

// refMatch is a slow, obviously correct matcher: `*` is any run of bytes, anything else itself.
func refMatch(p, s string) bool {
	// match[i][j]: p[i:] matches s[j:].
	match := make([][]bool, len(p)+1)
	for i := range match {
		match[i] = make([]bool, len(s)+1)
	}
	match[len(p)][len(s)] = true
	for i := len(p) - 1; i >= 0; i-- {
		for j := len(s); j >= 0; j-- {
			if p[i] == '*' {
				match[i][j] = match[i+1][j] || (j < len(s) && match[i][j+1])
			} else {
				match[i][j] = j < len(s) && p[i] == s[j] && match[i+1][j+1]
			}
		}
	}
	return match[0][0]
}

func FuzzMatch(f *testing.F) {
	for _, s := range [][2]string{{"private-*", "private-x"}, {"a*b*c", "aXbYc"}, {"*.*", "a.b"}, {"**", ""}, {"a*", "b"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if len(pattern)*len(name) > 1<<20 {
			return // the reference is quadratic in memory
		}
		if got, want := Match(pattern, name), refMatch(pattern, name); got != want {
			t.Fatalf("Match(%q, %q) = %v, want %v", pattern, name, got, want)
		}
	})
}

func FuzzValid(f *testing.F) {
	for _, s := range []string{"a", "private-conversation.1.2", "presence-room;x=@,", "#server-to-user-42", "#server-to-user-", "#nodes", "", "a b", "{x}", strings.Repeat("a", 165)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if Valid(name) != nil {
			return
		}
		rest := strings.TrimPrefix(name, UserPrefix)
		if len(name) < 1 || len(name) > MaxLen || rest == "" || strings.ContainsAny(rest, "{}/ ?#%&\r\n\"\\:*") {
			t.Fatalf("accepted %q", name)
		}
		if !ValidPattern(name) {
			t.Fatalf("a valid name %q is not a valid pattern (matching itself)", name)
		}
	})
}

func TestNeedsAuth(t *testing.T) {
	for name, want := range map[string][2]bool{ // NeedsAuth, IsPresence
		"private-conversation.7": {true, false},
		"presence-room":          {true, true},
		"private":                {false, false},
		"public-private-x":       {false, false},
		"presence":               {false, false},
		"PRIVATE-x":              {false, false},
	} {
		if got := [2]bool{NeedsAuth(name), IsPresence(name)}; got != want {
			t.Errorf("%q: NeedsAuth, IsPresence = %v, want %v", name, got, want)
		}
	}
}

func TestUserChannels(t *testing.T) {
	for name, want := range map[string]bool{
		"#server-to-user-42":              true,
		"#server-to-user-ann@example.com": true,
		"#server-to-user-":                false, // no user
		"#server-to-user-a#b":             false,
		"#nodes":                          false, // the registry's key: never a channel
		"#server-to-user":                 false,
		"x#server-to-user-1":              false,
		"#server-to-user-" + strings.Repeat("1", MaxLen-len(UserPrefix)+1): false,
	} {
		if got := Valid(name) == nil; got != want {
			t.Errorf("Valid(%q) = %v, want %v", name, got, want)
		}
	}
	if got := UserChannel("42"); got != "#server-to-user-42" || !IsUser(got) || NeedsAuth(got) {
		t.Errorf("UserChannel(42) = %q (IsUser %v, NeedsAuth %v)", got, IsUser(got), NeedsAuth(got))
	}
	if got := UserChannel("a b"); got != "" {
		t.Errorf("UserChannel(a b) = %q, want \"\" (a space is no channel character)", got)
	}
}
