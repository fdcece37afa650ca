package authz

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/herald-rt/herald/store/channel"
)

// Action is what a token asks to do with a channel.
type Action uint8

// Actions. A rule may cover both.
const (
	Subscribe Action = 1 << iota
	Publish
)

// String returns subscribe, publish or both.
func (a Action) String() string {
	switch a {
	case Subscribe:
		return "subscribe"
	case Publish:
		return "publish"
	case Subscribe | Publish:
		return "both"
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// The claims that carry a token's channel patterns.
const (
	ClaimSubscribe = "herald.subscribe"
	ClaimPublish   = "herald.publish"
)

// Rules are the compiled channel rules of a Config. A nil *Rules has no rules: the token
// patterns alone decide.
type Rules struct {
	denyUnmatched bool // channels.default: deny
	rules         []*rule
}

type rule struct {
	glob    string         // the pattern, when it has no placeholders (matched with match)
	re      *regexp.Regexp // the pattern, when it has placeholders; submatch i+1 is placeholder i
	prefix  string         // the literal text the pattern starts with: a cheap first test
	actions Action
	cond    cond // nil: the rule holds whenever it matches
	desc    string
}

// Reasons Allow gives. They name no claim values, so they are safe to log.
const (
	reasonBadAction    = "unknown action"
	reasonBadChannel   = "invalid channel name"
	reasonNoSubscribe  = "no herald.subscribe pattern in the token matches the channel"
	reasonNoPublish    = "no herald.publish pattern in the token matches the channel"
	reasonDefaultDeny  = "no channel rule covers this private/presence channel and channels.default is deny"
	reasonTokenOnly    = "allowed by the token pattern; no channel rule matches"
	reasonTokenAndRule = "allowed by the token pattern and every matching channel rule"
)

// Allow decides whether a token with these claims (the JWT payload, JSON-decoded) may perform
// action on channel: a pattern of the token's herald.subscribe or herald.publish claim must
// match, and so must the condition of every rule that matches the channel for that action.
// A private-/presence- channel no rule matches is denied when channels.default is deny.
// The reason explains the decision for logs; it holds no claim values.
func (r *Rules) Allow(action Action, ch string, claims map[string]any) (bool, string) {
	claim, missing := ClaimSubscribe, reasonNoSubscribe
	switch action {
	case Subscribe:
	case Publish:
		claim, missing = ClaimPublish, reasonNoPublish
	default:
		return false, reasonBadAction
	}
	if channel.Valid(ch) != nil {
		return false, reasonBadChannel
	}
	if !tokenGrants(claims[claim], ch) {
		return false, missing
	}
	if r == nil {
		return true, reasonTokenOnly
	}
	matched := false
	for _, ru := range r.rules {
		if ru.actions&action == 0 || !strings.HasPrefix(ch, ru.prefix) {
			continue
		}
		var captures []string
		if ru.re == nil {
			if !channel.Match(ru.glob, ch) {
				continue
			}
		} else {
			m := ru.re.FindStringSubmatch(ch)
			if m == nil {
				continue
			}
			captures = m[1:]
		}
		matched = true
		if ru.cond != nil && !ru.cond.eval(claims, captures) {
			return false, ru.desc + " is not met"
		}
	}
	if !matched {
		if r.denyUnmatched && channel.NeedsAuth(ch) {
			return false, reasonDefaultDeny
		}
		return true, reasonTokenOnly
	}
	return true, reasonTokenAndRule
}

// tokenGrants reports whether a herald.subscribe/herald.publish claim value (a JSON array of
// strings, or one string) holds a pattern matching channel.
func tokenGrants(v any, ch string) bool {
	switch v := v.(type) {
	case []any:
		for _, p := range v {
			if s, ok := p.(string); ok && channel.Match(s, ch) {
				return true
			}
		}
	case []string:
		return channel.MatchAny(v, ch)
	case string:
		return channel.Match(v, ch)
	}
	return false
}

// --- conditions -------------------------------------------------------------------------

type cond interface {
	eval(claims map[string]any, captures []string) bool
}

type allCond []cond

func (c allCond) eval(claims map[string]any, captures []string) bool {
	for _, sub := range c {
		if !sub.eval(claims, captures) {
			return false
		}
	}
	return true
}

type anyCond []cond

func (c anyCond) eval(claims map[string]any, captures []string) bool {
	for _, sub := range c {
		if sub.eval(claims, captures) {
			return true
		}
	}
	return false
}

type notCond struct{ sub cond }

func (c notCond) eval(claims map[string]any, captures []string) bool {
	return !c.sub.eval(claims, captures)
}

type claimOp uint8

const (
	opEquals   claimOp = iota // the claim, a scalar, equals the value
	opIn                      // the claim, a scalar, equals one of the values
	opContains                // the claim, an array, holds an element equal to the value
	opExists                  // the claim is present (and not null) — or absent, when exists: false
)

type claimCond struct {
	path   template // the claim's name or dotted path; may use placeholders
	op     claimOp
	values []template
	exists bool
}

func (c *claimCond) eval(claims map[string]any, captures []string) bool {
	v, ok := lookup(claims, c.path.expand(captures))
	if ok && v == nil {
		ok = false
	}
	switch c.op {
	case opExists:
		return ok == c.exists
	case opEquals, opIn:
		s, ok := scalar(v)
		if !ok {
			return false
		}
		for _, t := range c.values {
			if t.equals(s, captures) {
				return true
			}
		}
	case opContains:
		want := c.values[0]
		switch arr := v.(type) {
		case []any:
			for _, e := range arr {
				if s, ok := scalar(e); ok && want.equals(s, captures) {
					return true
				}
			}
		case []string:
			for _, s := range arr {
				if want.equals(s, captures) {
					return true
				}
			}
		}
	}
	return false
}

// lookup finds a claim by name, or by a dotted path into nested objects: "user.role" is
// claims["user.role"] if that key exists, else claims["user"]["role"]. A literal key always
// wins, so claims such as "herald.subscribe" are found as they are.
func lookup(m map[string]any, path string) (any, bool) {
	if v, ok := m[path]; ok {
		return v, true
	}
	for i := 0; i < len(path); i++ {
		if path[i] != '.' {
			continue
		}
		if sub, ok := m[path[:i]].(map[string]any); ok {
			if v, ok := lookup(sub, path[i+1:]); ok {
				return v, true
			}
		}
	}
	return nil, false
}

// scalar renders a claim value as the text conditions compare: strings as they are, integral
// numbers without a fraction or exponent (10, not 1e+01), booleans as true/false. Arrays,
// objects and null are not scalars.
func scalar(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return strconv.FormatInt(int64(v), 10), true
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return "", false
		}
		return strconv.FormatFloat(v, 'g', -1, 64), true
	case json.Number:
		return v.String(), true
	case int:
		return strconv.Itoa(v), true
	case int64:
		return strconv.FormatInt(v, 10), true
	}
	return "", false
}

// template is a condition value: literal text and placeholders of the channel pattern.
type template []tpart

type tpart struct {
	lit     string
	capture int // index of the placeholder, or -1 for literal text
}

// equals reports whether s equals the template with the placeholders filled in, without
// building the filled-in text.
func (t template) equals(s string, captures []string) bool {
	for _, p := range t {
		part := p.lit
		if p.capture >= 0 {
			part = captures[p.capture]
		}
		if !strings.HasPrefix(s, part) {
			return false
		}
		s = s[len(part):]
	}
	return s == ""
}

// expand fills in the placeholders.
func (t template) expand(captures []string) string {
	if len(t) == 1 && t[0].capture < 0 {
		return t[0].lit
	}
	var sb strings.Builder
	for _, p := range t {
		if p.capture >= 0 {
			sb.WriteString(captures[p.capture])
		} else {
			sb.WriteString(p.lit)
		}
	}
	return sb.String()
}

// --- compiling --------------------------------------------------------------------------

const (
	maxCondDepth = 16
)

// placeholderClass is what a {placeholder} matches: one or more channel characters but '.'.
const placeholderClass = `([-A-Za-z0-9_=@,;]+)`

// compilePattern compiles a rule's channel pattern: channel characters stand for themselves,
// `*` for any run of characters (as in token patterns) and {name} for one segment. It returns
// the placeholder names in order.
func compilePattern(p string) (ru *rule, names []string, err error) {
	if p == "" {
		return nil, nil, fmt.Errorf("empty channel pattern")
	}
	if len(p) > channel.MaxPatternLen {
		return nil, nil, fmt.Errorf("channel pattern longer than %d bytes", channel.MaxPatternLen)
	}
	var re strings.Builder
	re.WriteString(`^`)
	ru = &rule{}
	prefixDone := false
	const (
		lit = iota
		star
		hole
	)
	prev := -1
	for i := 0; i < len(p); {
		c := p[i]
		switch {
		case c == '*':
			if prev == hole {
				return nil, nil, fmt.Errorf("channel pattern %q: a placeholder cannot be followed by *", p)
			}
			re.WriteString(`.*`)
			prefixDone, prev = true, star
			i++
		case c == '{':
			end := strings.IndexByte(p[i:], '}')
			if end < 0 {
				return nil, nil, fmt.Errorf("channel pattern %q: unclosed {", p)
			}
			name := p[i+1 : i+end]
			if !isIdent(name) {
				return nil, nil, fmt.Errorf("channel pattern %q: placeholder {%s} must be a name of letters, digits and _", p, name)
			}
			if prev == hole || prev == star {
				return nil, nil, fmt.Errorf("channel pattern %q: placeholder {%s} must follow literal text, not another placeholder or *", p, name)
			}
			for _, n := range names {
				if n == name {
					return nil, nil, fmt.Errorf("channel pattern %q: placeholder {%s} appears twice", p, name)
				}
			}
			names = append(names, name)
			re.WriteString(placeholderClass)
			prefixDone, prev = true, hole
			i += end + 1
		case channel.NameByte(c):
			if !prefixDone {
				ru.prefix += string(c)
			}
			re.WriteString(regexp.QuoteMeta(string(c)))
			prev = lit
			i++
		default:
			return nil, nil, fmt.Errorf("channel pattern %q: character %q is not allowed (channel characters, * and {name} only)", p, c)
		}
	}
	re.WriteString(`$`)
	if len(names) == 0 {
		ru.glob = p
		return ru, nil, nil
	}
	ru.re, err = regexp.Compile(re.String())
	if err != nil {
		return nil, nil, fmt.Errorf("channel pattern %q: %w", p, err)
	}
	return ru, names, nil
}

func isIdent(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// compileTemplate parses a condition value. {name} refers to a placeholder of the rule's
// pattern (an unknown name is an error, to catch typos); any other text is literal.
func compileTemplate(v string, names []string) (template, error) {
	var t template
	literal := func(s string) {
		if s == "" {
			return
		}
		if n := len(t); n > 0 && t[n-1].capture < 0 {
			t[n-1].lit += s
			return
		}
		t = append(t, tpart{lit: s, capture: -1})
	}
	for {
		i := strings.IndexByte(v, '{')
		if i < 0 {
			literal(v)
			return t, nil
		}
		end := strings.IndexByte(v[i:], '}')
		if end < 0 || !isIdent(v[i+1:i+end]) {
			literal(v[:i+1])
			v = v[i+1:]
			continue
		}
		name := v[i+1 : i+end]
		idx := -1
		for j, n := range names {
			if n == name {
				idx = j
			}
		}
		if idx < 0 {
			return nil, fmt.Errorf("placeholder {%s} is not in the channel pattern", name)
		}
		literal(v[:i])
		t = append(t, tpart{capture: idx})
		v = v[i+end+1:]
	}
}
