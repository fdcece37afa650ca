package authz

import (
	"errors"
	"net/url"
	"strings"

	"github.com/herald-rt/herald/store/channel"
)

// Origins is an app's allowed_origins: the page origins whose browsers may use the app's
// streams, polls and sockets. Like Reverb's, each pattern is matched against the host of the
// request's Origin header alone (no scheme, no port), with * standing for any run of
// characters: "app.example.com", "*.example.com", or "*" for any origin.
type Origins struct {
	patterns []string // lower-case
	any      bool
}

// maxOriginPatterns bounds an app's allowed_origins, and maxOriginPattern one pattern.
const (
	maxOriginPatterns = 100
	maxOriginPattern  = 253 // the longest DNS name
)

// ParseOrigins validates allowed_origins patterns. None gives the zero Origins, which
// Configured reports as unset.
func ParseOrigins(patterns []string) (Origins, error) {
	var o Origins
	if len(patterns) > maxOriginPatterns {
		return o, errors.New("at most 100 patterns")
	}
	for _, p := range patterns {
		switch {
		case p == "":
			return o, errors.New("an empty pattern")
		case len(p) > maxOriginPattern:
			return o, errors.New("a pattern longer than 253 characters")
		case strings.Contains(p, "://"):
			return o, errors.New("patterns are hosts, as Reverb matches them: write app.example.com, not " + p)
		case strings.ContainsAny(p, ":/ \t\r\n?#@[]"):
			return o, errors.New("patterns are hosts without port or path (app.example.com, *.example.com): not " + p)
		}
		if p == "*" {
			o.any = true
		}
		o.patterns = append(o.patterns, strings.ToLower(p))
	}
	return o, nil
}

// Configured reports whether the app sets allowed_origins at all.
func (o Origins) Configured() bool { return len(o.patterns) > 0 }

// Any reports whether every origin is allowed ("*").
func (o Origins) Any() bool { return o.any }

// Allows reports whether a page of origin (an Origin header's value) may use the app. An
// origin without a host ("null", from a sandboxed frame or a file) is allowed only by "*".
func (o Origins) Allows(origin string) bool {
	if o.any {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return false
	}
	for _, p := range o.patterns {
		if channel.Match(p, host) { // * is any run of characters, as in Str::is
			return true
		}
	}
	return false
}
