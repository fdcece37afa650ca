package authz

import (
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/herald-rt/herald/store/channel"
)

var verifyErrors = []error{ErrUnknownApp, ErrBadSignature, ErrMalformed, ErrChannelData, ErrUserData, ErrMissingParam, ErrTimestamp, ErrBodyMD5, ErrWrongApp}

func typed(err error) bool {
	for _, e := range verifyErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// refMatch is a slow, obviously-correct matcher for rule patterns: `*` is any run,
// {name} one or more bytes other than '.', anything else itself. It memoizes on the suffixes
// it is asked about, so hostile inputs stay polynomial.
func refMatch(p, s string) bool {
	memo := map[[2]int]bool{}
	var m func(p, s string) bool
	m = func(p, s string) bool {
		key := [2]int{len(p), len(s)}
		if v, ok := memo[key]; ok {
			return v
		}
		var r bool
		switch {
		case p == "":
			r = s == ""
		case p[0] == '*':
			for i := 0; i <= len(s) && !r; i++ {
				r = m(p[1:], s[i:])
			}
		case p[0] == '{':
			rest := p[strings.IndexByte(p, '}')+1:]
			for i := 1; i <= len(s) && s[i-1] != '.' && !r; i++ {
				r = m(rest, s[i:])
			}
		default:
			r = s != "" && s[0] == p[0] && m(p[1:], s[1:])
		}
		memo[key] = r
		return r
	}
	return m(p, s)
}

func FuzzLoad(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("testdata", "herald.example.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	for _, s := range []string{
		"", "apps:\n  - id: a\n    key: k\n    secret_env: S\n",
		"channels:\n  default: deny\n  rules:\n    - channel: private-{a}.{b}\n      when: {any: [{claim: \"x.{a}\", contains: \"{b}\"}, {not: {claim: y, exists: true}}]}\n",
		"a: &a [*a, *a]\n", "apps: [{id: 1, key: 2, secret: 3}]\napi_keys: [{key_env: K, publish: ['*']}]\n",
		"{", "- - -", "apps: !!binary aGVsbG8=\n", "<<: {default_app: x}\n",
	} {
		f.Add([]byte(s))
	}
	env := envOf(map[string]string{"S": "secret", "K": strings.Repeat("k", 40), "REVERB_APP_SECRET": "x", "OTHER_APP_SECRET": "y", "HERALD_BILLING_KEY": strings.Repeat("b", 40)})
	claims := map[string]any{ClaimSubscribe: []any{"*"}, ClaimPublish: []any{"*"}, "x": map[string]any{"a": []any{"b"}}, "org": "a", "role": "admin"}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, env)
		if err != nil {
			if c != nil {
				t.Fatal("a Config with an error")
			}
			return
		}
		if c.Rules == nil {
			t.Fatal("nil Rules")
		}
		for _, ch := range []string{"private-a.b", "presence-x", "public", "private-organization.a", "private-conversation.a.1"} {
			c.Rules.Allow(Subscribe, ch, claims)
			c.Rules.Allow(Publish, ch, claims)
		}
		for _, a := range c.Apps() {
			if c.App(a.ID) != a || c.AppByKey(a.Key) != a || len(a.secret) == 0 {
				t.Fatalf("app %v is not indexed", a)
			}
			if _, err := a.VerifyChannelAuth("1.1", "private-x", a.SignChannel("1.1", "private-x", ""), ""); err != nil {
				t.Fatalf("own signature: %v", err)
			}
			if a.VacateDelay < 0 || a.VacateDelay > maxVacateDelay || len(a.Webhooks) > maxWebhooks {
				t.Fatalf("app %v: vacate delay %v, %d webhooks", a, a.VacateDelay, len(a.Webhooks))
			}
			for _, w := range a.Webhooks {
				if u := strings.ToLower(w.URL); !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") || len(w.Events) == 0 {
					t.Fatalf("app %v: webhook %q with events %v", a, w.URL, w.Events)
				}
				for _, e := range w.Events {
					if !slices.Contains(HookEvents, e) {
						t.Fatalf("app %v: unknown webhook event %q", a, e)
					}
				}
			}
		}
	})
}

func FuzzRules(f *testing.F) {
	f.Add("private-organization.{org}", "org", "{org}", "private-organization.acme", []byte(`{"org":"acme"}`))
	f.Add("private-conversation.{org}.{id}", "c.{org}", "x-{id}", "private-conversation.a.7", []byte(`{"c":{"a":"x-7"}}`))
	f.Add("*.{x}", "x", "{x}", "a.b.c", []byte(`{"x":"c"}`))
	f.Add("a*", "n", "1", "abc", []byte(`{"n":1}`))
	f.Add("{a}", "", "", "", []byte(`null`))
	f.Fuzz(func(t *testing.T, pattern, claim, value, ch string, claimsJSON []byte) {
		var claims map[string]any
		_ = json.Unmarshal(claimsJSON, &claims)
		if claims == nil {
			claims = map[string]any{}
		}
		delete(claims, "\x00never")
		claims[ClaimSubscribe] = []any{"*"}
		ruleDoc := func(when map[string]any) []byte {
			doc, err := yaml.Marshal(map[string]any{"channels": map[string]any{"rules": []any{
				map[string]any{"channel": pattern, "action": "subscribe", "when": when},
			}}})
			if err != nil {
				t.Skip()
			}
			return doc
		}
		c, err := Parse(ruleDoc(map[string]any{"claim": claim, "equals": value}), nil)
		if err != nil {
			return
		}
		ok, reason := c.Rules.Allow(Subscribe, ch, claims)
		if ok && channel.Valid(ch) != nil {
			t.Fatalf("allowed an invalid channel %q (%s)", ch, reason)
		}
		// A rule that never holds denies exactly the channels its pattern matches.
		never, err := Parse(ruleDoc(map[string]any{"claim": "\x00never", "exists": true}), nil)
		if err != nil {
			t.Fatalf("pattern %q compiled once but not twice: %v", pattern, err)
		}
		ok, _ = never.Rules.Allow(Subscribe, ch, claims)
		if channel.Valid(ch) != nil {
			return
		}
		if want := !refMatch(pattern, ch); ok != want {
			t.Fatalf("pattern %q, channel %q: allowed = %v, want %v", pattern, ch, ok, want)
		}
	})
}

func FuzzChannelData(f *testing.F) {
	f.Add(`{"user_id":10,"user_info":{"name":"Mr. Channels"}}`, uint16(1024), uint16(128))
	f.Add(`{"user_id":"a","user_info":null}`, uint16(1), uint16(1))
	f.Add(`{"user_id":-0}`, uint16(10), uint16(10))
	f.Add(`{"user_id":"\ud800"}`, uint16(10), uint16(10))
	f.Fuzz(func(t *testing.T, data string, maxInfo, maxID uint16) {
		lim := DefaultLimits()
		lim.MaxUserInfoBytes, lim.MaxUserIDLength = int(maxInfo), int(maxID)
		m, err := parsePresence(data, lim)
		if err != nil {
			if !errors.Is(err, ErrChannelData) || m != nil {
				t.Fatalf("untyped error or a member with it: %v %v", m, err)
			}
			return
		}
		if m.UserID == "" || utf8.RuneCountInString(m.UserID) > lim.MaxUserIDLength || len(m.UserInfo) > lim.MaxUserInfoBytes {
			t.Fatalf("over the limits: %+v", m)
		}
		if m.UserInfo != nil && !json.Valid(m.UserInfo) {
			t.Fatalf("user_info %q is not JSON", m.UserInfo)
		}
	})
}

func FuzzChannelAuth(f *testing.F) {
	const data = `{"user_id":10,"user_info":{"name":"Mr. Channels"}}`
	f.Add("1234.1234", "private-foobar", docKey+":58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4", "")
	f.Add("1234.1234", "presence-foobar", docKey+":31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80", data)
	f.Add("1.2", "presence-x", "other-key:", "{}")
	f.Add("", "", ":", "")
	c := docConfig(f)
	f.Fuzz(func(t *testing.T, socketID, ch, auth, channelData string) {
		app, m, err := c.VerifyChannelAuth(socketID, ch, auth, channelData)
		if err != nil {
			if !typed(err) || app != nil || m != nil {
				t.Fatalf("%v / %v / untyped or non-nil results: %v", app, m, err)
			}
		} else if (m != nil) != strings.HasPrefix(ch, "presence-") {
			t.Fatalf("member %v for channel %q", m, ch)
		} else if !strings.EqualFold(auth, app.SignChannel(socketID, ch, channelData)) {
			t.Fatalf("accepted %q, which is not the signature", auth)
		}
		// What the app itself signs always verifies, unless the channel_data is bad.
		if !validSocketID(socketID) || channel.Valid(ch) != nil {
			return
		}
		for _, a := range c.Apps() {
			_, _, err := c.VerifyChannelAuth(socketID, ch, a.SignChannel(socketID, ch, channelData), channelData)
			if err != nil && !errors.Is(err, ErrChannelData) {
				t.Fatalf("own signature refused: %v", err)
			}
		}
	})
}

func FuzzVerifyPusherRequest(f *testing.F) {
	f.Add("POST", "/apps/3/events", docQuery().Encode(), []byte(docBody), int64(0))
	f.Add("GET", "/apps/3/channels", "info=user_count&filter_by_prefix=presence-&auth_key="+docKey, []byte(nil), int64(601))
	f.Add("POST", "/apps/4/events", "AUTH_KEY=x&auth_key=other-key&auth_timestamp=1353088179&auth_version=1.0&body_md5=&auth_signature=zz", []byte("{}"), int64(-600))
	c := docConfig(f)
	f.Fuzz(func(t *testing.T, method, path, rawQuery string, body []byte, skew int64) {
		now := time.Unix(docTimestamp+skew%2000, 0)
		q, _ := url.ParseQuery(rawQuery)
		app, err := c.VerifyPusherRequest(method, path, q, body, now)
		if err != nil && (!typed(err) || app != nil) {
			t.Fatalf("untyped error or an app with it: %v %v", app, err)
		}
		if err == nil && app == nil {
			t.Fatal("no error and no app")
		}
		// Whatever an app signs verifies.
		for _, a := range c.Apps() {
			p := "/apps/" + a.ID + "/" + path
			signed, err := a.SignRequest(method, p, q, body, now)
			if err != nil {
				if !errors.Is(err, ErrMissingParam) {
					t.Fatalf("SignRequest: %v", err)
				}
				continue
			}
			if got, err := c.VerifyPusherRequest(method, p, signed, body, now); err != nil || got != a {
				t.Fatalf("own request refused: %v", err)
			}
		}
	})
}

func FuzzUserAuth(f *testing.F) {
	f.Add("1234.1234", `{"id":"12345","user_info":{"name":"Ann"}}`, false)
	f.Add("1.2", `{"id":42}`, false)
	f.Add("1.2", `{"id":"a b"}`, false)
	f.Add("1.2", `{"id":"1"}`, true)
	app := docConfig(f).App("3")
	f.Fuzz(func(t *testing.T, socketID, userData string, forged bool) {
		auth := app.SignUser(socketID, userData)
		if forged { // the last hex digit changed
			last := byte('0')
			if auth[len(auth)-1] == '0' {
				last = '1'
			}
			auth = auth[:len(auth)-1] + string(last)
		}
		id, err := app.VerifyUserAuth(socketID, auth, userData)
		if err != nil {
			if !typed(err) || id != "" {
				t.Fatalf("untyped error or an id with it: %q %v", id, err)
			}
			return
		}
		if forged {
			t.Fatalf("accepted a forged signature for %q", userData)
		}
		if channel.UserChannel(id) == "" || utf8.RuneCountInString(id) > app.Limits.MaxUserIDLength {
			t.Fatalf("accepted id %q, which names no user channel or is over the limit", id)
		}
	})
}
