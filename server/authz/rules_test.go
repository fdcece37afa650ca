package authz

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herald-rt/herald/store/channel"
)

// claimsOf decodes a JWT payload the way the server does: encoding/json into map[string]any.
func claimsOf(t testing.TB, js string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatalf("claims %s: %v", js, err)
	}
	return m
}

func exampleRules(t testing.TB) *Rules {
	t.Helper()
	c, err := Load(filepath.Join("testdata", "herald.example.yaml"), exampleEnv)
	if err != nil {
		t.Fatal(err)
	}
	return c.Rules
}

func TestAllowMatrix(t *testing.T) {
	r := exampleRules(t)
	const sub = `"herald.subscribe":["private-*","presence-*"],"herald.publish":["private-*"]`
	cases := []struct {
		name    string
		action  Action
		channel string
		claims  string
		allow   bool
		reason  string
	}{
		{"own organization", Subscribe, "private-organization.acme", `{` + sub + `,"org":"acme"}`, true, reasonTokenAndRule},
		{"other organization", Subscribe, "private-organization.globex", `{` + sub + `,"org":"acme"}`, false, "channel rule 0 (private-organization.{org}, line "},
		{"no org claim", Subscribe, "private-organization.acme", `{` + sub + `}`, false, "channel rule 0"},
		{"org claim of the wrong type", Subscribe, "private-organization.acme", `{` + sub + `,"org":["acme"]}`, false, "channel rule 0"},
		{"numeric org", Subscribe, "private-organization.42", `{` + sub + `,"org":42}`, true, ""},
		{"no token pattern", Subscribe, "private-organization.acme", `{"org":"acme","herald.subscribe":["public-*"]}`, false, reasonNoSubscribe},
		{"no token claims at all", Subscribe, "private-organization.acme", `{"org":"acme"}`, false, reasonNoSubscribe},
		{"subscribe pattern does not grant publish", Publish, "presence-room.1", `{"herald.subscribe":["*"],"user":{"verified":true}}`, false, reasonNoPublish},
		{"participant", Subscribe, "private-conversation.acme.7", `{` + sub + `,"org":"acme","conversations":[3,7]}`, true, ""},
		{"participant by string id", Subscribe, "private-conversation.acme.c7", `{` + sub + `,"org":"acme","conversations":["c7"]}`, true, ""},
		{"not a participant", Subscribe, "private-conversation.acme.8", `{` + sub + `,"org":"acme","conversations":[3,7]}`, false, "channel rule 1"},
		{"conversations not an array", Subscribe, "private-conversation.acme.7", `{` + sub + `,"org":"acme","conversations":"7"}`, false, "channel rule 1"},
		{"admin override", Subscribe, "private-conversation.acme.8", `{` + sub + `,"org":"acme","role":"admin"}`, true, ""},
		{"admin of another org", Subscribe, "private-conversation.globex.8", `{` + sub + `,"org":"acme","role":"admin"}`, false, "channel rule 1"},
		{"agent publishes", Publish, "private-organization.acme", `{` + sub + `,"org":"other","role":"agent"}`, true, ""},
		{"member cannot publish", Publish, "private-organization.acme", `{` + sub + `,"org":"acme","role":"member"}`, false, "channel rule 2"},
		{"no role cannot publish", Publish, "private-organization.acme", `{` + sub + `,"org":"acme"}`, false, "channel rule 2"},
		{"publish rule covers deeper names", Publish, "private-organization.acme.billing", `{` + sub + `,"role":"member"}`, false, "channel rule 2"},
		{"a placeholder is one segment", Subscribe, "private-organization.acme.billing", `{` + sub + `,"org":"acme.billing"}`, true, reasonTokenOnly},
		{"a placeholder is never empty", Subscribe, "private-organization.", `{` + sub + `}`, true, reasonTokenOnly},
		{"three segments do not match two placeholders", Subscribe, "private-conversation.acme", `{` + sub + `}`, true, reasonTokenOnly},
		{"four segments do not match either", Subscribe, "private-conversation.acme.7.x", `{` + sub + `,"org":"zzz"}`, true, reasonTokenOnly},
		{"prefix is literal", Subscribe, "private-organizations.acme", `{` + sub + `}`, true, reasonTokenOnly},
		{"nested claim", Subscribe, "presence-room.lobby", `{` + sub + `,"user":{"verified":true}}`, true, ""},
		{"nested claim false", Subscribe, "presence-room.lobby", `{` + sub + `,"user":{"verified":false}}`, false, "channel rule 3"},
		{"literal dotted key wins", Subscribe, "presence-room.lobby", `{` + sub + `,"user.verified":"true","user":{"verified":false}}`, true, ""},
		{"banned", Subscribe, "presence-room.lobby", `{` + sub + `,"user":{"verified":true},"banned_rooms":["lobby"]}`, false, "channel rule 3"},
		{"banned elsewhere", Subscribe, "presence-room.lobby", `{` + sub + `,"user":{"verified":true},"banned_rooms":["cellar"]}`, true, ""},
		{"public channel, no rule", Subscribe, "news", `{"herald.subscribe":["news"]}`, true, reasonTokenOnly},
		{"pattern as one string", Subscribe, "news", `{"herald.subscribe":"ne*"}`, true, reasonTokenOnly},
		{"non-string patterns are ignored", Subscribe, "news", `{"herald.subscribe":[1,null,{"a":"*"}]}`, false, reasonNoSubscribe},
		{"invalid channel", Subscribe, "private-organization.acme corp", `{` + sub + `,"org":"acme corp"}`, false, reasonBadChannel},
		{"empty channel", Subscribe, "", `{"herald.subscribe":["*"]}`, false, reasonBadChannel},
		{"long channel", Subscribe, "a" + strings.Repeat("b", channel.MaxLen), `{"herald.subscribe":["*"]}`, false, reasonBadChannel},
		{"unknown action", Subscribe | Publish, "news", `{"herald.subscribe":["*"],"herald.publish":["*"]}`, false, reasonBadAction},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason := r.Allow(tc.action, tc.channel, claimsOf(t, tc.claims))
			if ok != tc.allow || !strings.Contains(reason, tc.reason) {
				t.Fatalf("Allow = %v, %q; want %v, %q", ok, reason, tc.allow, tc.reason)
			}
		})
	}
}

func TestDefaultDeny(t *testing.T) {
	c := mustParse(t, `
channels:
  default: deny
  rules:
    - channel: private-known.{id}
    - channel: presence-room.*
      action: subscribe
      when: {claim: sub, exists: true}
`, nil)
	claims := map[string]any{ClaimSubscribe: []any{"*"}, ClaimPublish: []any{"*"}, "sub": "u1"}
	cases := []struct {
		action  Action
		channel string
		allow   bool
	}{
		{Subscribe, "private-known.1", true}, // a rule without `when` marks the channel known
		{Publish, "private-known.1", true},
		{Subscribe, "private-unknown", false},
		{Subscribe, "private-known.1.2", false},
		{Subscribe, "presence-room.1", true},
		{Publish, "presence-room.1", false}, // the rule covers subscribe only
		{Subscribe, "presence-other", false},
		{Subscribe, "private-encrypted-x", false},
		{Subscribe, "public", true}, // default never touches public channels
		{Publish, "public.x", true},
	}
	for _, tc := range cases {
		ok, reason := c.Rules.Allow(tc.action, tc.channel, claims)
		if ok != tc.allow {
			t.Errorf("%v %s = %v (%s), want %v", tc.action, tc.channel, ok, reason, tc.allow)
		}
	}
	delete(claims, "sub")
	if ok, _ := c.Rules.Allow(Subscribe, "presence-room.1", claims); ok {
		t.Error("exists: true must need the claim")
	}
	claims["sub"] = nil
	if ok, _ := c.Rules.Allow(Subscribe, "presence-room.1", claims); ok {
		t.Error("a null claim does not exist")
	}
}

func TestNilRulesAndClaims(t *testing.T) {
	var r *Rules
	if ok, _ := r.Allow(Subscribe, "x", map[string]any{ClaimSubscribe: []string{"x"}}); !ok {
		t.Error("nil rules: the token decides")
	}
	if ok, _ := exampleRules(t).Allow(Subscribe, "x", nil); ok {
		t.Error("nil claims grant nothing")
	}
}

func TestEveryMatchingRuleMustHold(t *testing.T) {
	c := mustParse(t, `
channels:
  rules:
    - channel: "*"
      when: {claim: active, equals: "true"}
    - channel: private-team.{team}
      when: {claim: teams, contains: "team-{team}"}
    - channel: private-team.{team}
      action: publish
      when: {claim: role, in: ["lead", "{team}-owner"]}
    - channel: private-team.{t}
      when:
        not: {claim: "suspended.{t}", exists: true}
`, nil)
	base := `"herald.subscribe":["*"],"herald.publish":["*"]`
	cases := []struct {
		action Action
		claims string
		allow  bool
	}{
		{Subscribe, `{` + base + `,"active":true,"teams":["team-red"]}`, true},
		{Subscribe, `{` + base + `,"active":false,"teams":["team-red"]}`, false},
		{Subscribe, `{` + base + `,"active":true,"teams":["red"]}`, false},
		{Publish, `{` + base + `,"active":true,"teams":["team-red"],"role":"lead"}`, true},
		{Publish, `{` + base + `,"active":true,"teams":["team-red"],"role":"red-owner"}`, true},
		{Publish, `{` + base + `,"active":true,"teams":["team-red"],"role":"blue-owner"}`, false},
		{Subscribe, `{` + base + `,"active":true,"teams":["team-red"],"suspended":{"red":1}}`, false},
		{Subscribe, `{` + base + `,"active":true,"teams":["team-red"],"suspended":{"blue":1}}`, true},
	}
	for _, tc := range cases {
		ok, reason := c.Rules.Allow(tc.action, "private-team.red", claimsOf(t, tc.claims))
		if ok != tc.allow {
			t.Errorf("%v %s = %v (%s), want %v", tc.action, tc.claims, ok, reason, tc.allow)
		}
	}
}

func TestCompilePattern(t *testing.T) {
	cases := []struct {
		pattern, channel string
		match            bool
		captures         []string
	}{
		{"private-organization.{org}", "private-organization.acme", true, []string{"acme"}},
		{"private-organization.{org}", "private-organization.ac-me_1=@,;", true, []string{"ac-me_1=@,;"}},
		{"private-organization.{org}", "private-organization.", false, nil},
		{"private-organization.{org}", "private-organization.a.b", false, nil},
		{"private-organization.{org}", "xprivate-organization.a", false, nil},
		{"a.{x}.b.{y}", "a.1.b.2", true, []string{"1", "2"}},
		{"a.{x}.b.{y}", "a.1.c.2", false, nil},
		{"a.{x}-{y}", "a.1-2", true, []string{"1", "2"}},
		{"a.{x}-{y}", "a.1-2-3", true, []string{"1-2", "3"}}, // leftmost placeholder takes the most
		{"a.{x}.*", "a.1.", true, []string{"1"}},
		{"a.{x}.*", "a.1.b.c", true, []string{"1"}},
		{"*.{x}", "a.b.c", true, []string{"c"}},
		{"*.{x}", "abc", false, nil},
		{"pre{x}", "prefix", true, []string{"fix"}},
		{"a.(b)+", "a.(b)+", false, nil}, // not a channel pattern: rejected below
	}
	for _, tc := range cases {
		ru, names, err := compilePattern(tc.pattern)
		if tc.pattern == "a.(b)+" {
			if err == nil {
				t.Errorf("%q must be rejected", tc.pattern)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		if len(names) != len(ru.re.SubexpNames())-1 {
			t.Fatalf("%q: %d names for %d groups", tc.pattern, len(names), len(ru.re.SubexpNames())-1)
		}
		m := ru.re.FindStringSubmatch(tc.channel)
		if (m != nil) != tc.match {
			t.Errorf("%q ~ %q = %v, want %v", tc.pattern, tc.channel, m != nil, tc.match)
			continue
		}
		if m != nil && strings.Join(m[1:], "|") != strings.Join(tc.captures, "|") {
			t.Errorf("%q ~ %q captured %q, want %q", tc.pattern, tc.channel, m[1:], tc.captures)
		}
		if !strings.HasPrefix(tc.channel, ru.prefix) && tc.match {
			t.Errorf("%q: prefix %q rejects a match", tc.pattern, ru.prefix)
		}
	}
	ru, names, err := compilePattern("private-a.*.b")
	if err != nil || ru.re != nil || ru.glob != "private-a.*.b" || ru.prefix != "private-a." || names != nil {
		t.Fatalf("a pattern without placeholders is a glob: %+v %v %v", ru, names, err)
	}
}

func TestTemplates(t *testing.T) {
	names := []string{"org", "id"}
	caps := []string{"acme", "7"}
	cases := []struct {
		tmpl, s string
		want    bool
	}{
		{"{org}", "acme", true},
		{"{org}", "acm", false},
		{"{org}", "acmee", false},
		{"team-{org}-{id}", "team-acme-7", true},
		{"team-{org}-{id}", "team-acme-8", false},
		{"literal", "literal", true},
		{"", "", true},
		{"", "x", false},
		{"{not closed", "{not closed", true},
		{"{1x}", "{1x}", true},
		{"a{}b", "a{}b", true},
		{"{{org}}", "{acme}", true},
	}
	for _, tc := range cases {
		tm, err := compileTemplate(tc.tmpl, names)
		if err != nil {
			t.Fatalf("%q: %v", tc.tmpl, err)
		}
		if got := tm.equals(tc.s, caps); got != tc.want {
			t.Errorf("%q equals %q = %v, want %v", tc.tmpl, tc.s, got, tc.want)
		}
	}
	if _, err := compileTemplate("{orgs}", names); err == nil {
		t.Error("an unknown placeholder must be an error")
	}
}

func TestScalar(t *testing.T) {
	cases := []struct {
		v    any
		want string
		ok   bool
	}{
		{"x", "x", true},
		{true, "true", true},
		{float64(10), "10", true},
		{float64(-3), "-3", true},
		{1.5, "1.5", true},
		{1e300, "1e+300", true},
		{json.Number("12"), "12", true},
		{7, "7", true},
		{int64(8), "8", true},
		{nil, "", false},
		{[]any{"x"}, "", false},
		{map[string]any{}, "", false},
	}
	for _, tc := range cases {
		got, ok := scalar(tc.v)
		if got != tc.want || ok != tc.ok {
			t.Errorf("scalar(%#v) = %q, %v; want %q, %v", tc.v, got, ok, tc.want, tc.ok)
		}
	}
}

func BenchmarkAllow(b *testing.B) {
	r := exampleRules(b)
	claims := claimsOf(b, `{"herald.subscribe":["private-*"],"org":"acme","conversations":[1,2,3,7],"role":"member"}`)
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := r.Allow(Subscribe, "private-conversation.acme.7", claims); !ok {
			b.Fatal("denied")
		}
	}
}
