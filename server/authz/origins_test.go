package authz

import (
	"strings"
	"testing"

	"github.com/herald-rt/herald/store/channel"
)

func TestParseOrigins(t *testing.T) {
	for _, bad := range [][]string{{""}, {"https://app.example.com"}, {"app.example.com:443"}, {"app.example.com/x"}, {"a b"}, {strings.Repeat("a", 254)}} {
		if _, err := ParseOrigins(bad); err == nil {
			t.Errorf("ParseOrigins(%q) accepted", bad)
		}
	}
	o, err := ParseOrigins(nil)
	if err != nil || o.Configured() {
		t.Fatalf("no patterns: %v %v", o, err)
	}
	o, err = ParseOrigins([]string{"*"})
	if err != nil || !o.Any() || !o.Allows("null") {
		t.Fatal(`"*" allows every origin, "null" too`)
	}
}

// The patterns match as Laravel's Str::is does, through channel.Match.
func TestOriginPatternsMatchLikeStrIs(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "a.example.com.evil", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"*", "", true},
		{"", "", true},
		{"", "a", false},
		{"app.test", "app.test", true},
		{"**x", "yx", true},
	} {
		if got := channel.Match(c.p, c.s); got != c.want {
			t.Errorf("Match(%q, %q) = %v", c.p, c.s, got)
		}
	}
}

// FuzzOrigins: any origin string is answered without a panic, and a host pattern always
// allows an origin of exactly that host.
func FuzzOrigins(f *testing.F) {
	f.Add("app.example.com", "https://app.example.com")
	f.Add("*.example.com", "null")
	f.Add("a*b", "http://[::1]:80")
	f.Fuzz(func(t *testing.T, pattern, origin string) {
		o, err := ParseOrigins([]string{pattern})
		if err != nil {
			return
		}
		_ = o.Allows(origin)
		if !strings.Contains(pattern, "*") && !o.Allows("https://"+pattern) && validHostish(pattern) {
			t.Fatalf("pattern %q does not allow its own host", pattern)
		}
	})
}

// validHostish: a pattern that url.Parse reads back as the same host.
func validHostish(p string) bool {
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			return false
		}
	}
	return p != ""
}
