package authz

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// exampleEnv supplies the secrets the example file names.
var exampleEnv = envOf(map[string]string{
	"REVERB_APP_SECRET":    "first-app-secret",
	"OTHER_APP_SECRET":     "second-app-secret",
	"OTHER_APP_JWT_SECRET": "second-app-jwt-secret-0123456789abcdef",
	"HERALD_BILLING_KEY":   "billing-key-0123456789abcdef0123456789",
})

func mustParse(t testing.TB, doc string, env func(string) string) *Config {
	t.Helper()
	c, err := Parse([]byte(doc), env)
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, doc)
	}
	return c
}

func TestExampleFileLoads(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "herald.example.yaml"), exampleEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(c.Apps()); got != 2 {
		t.Fatalf("apps = %d, want 2", got)
	}
	a := c.App("1001")
	if a == nil || c.AppByKey("herald-app-key") != a || c.DefaultApp() != a {
		t.Fatalf("app 1001 lookups: %v %v %v", a, c.AppByKey("herald-app-key"), c.DefaultApp())
	}
	if string(a.secret) != "first-app-secret" || a.ClientEvents != ClientEventsMembers || a.Limits != DefaultLimits() {
		t.Errorf("app 1001 = %+v / %q", a, a.secret)
	}
	b := c.App("1002")
	if b == nil || string(b.secret) != "second-app-secret" || b.ClientEvents != ClientEventsNone {
		t.Errorf("app 1002 = %#v", b)
	}
	if c.App("nope") != nil || c.AppByKey("nope") != nil {
		t.Error("unknown ids and keys must give nil")
	}
	if len(c.Rules.rules) != 4 || c.Rules.denyUnmatched {
		t.Errorf("rules = %d, deny = %v", len(c.Rules.rules), c.Rules.denyUnmatched)
	}
	billing, ok := c.APIKey("billing-key-0123456789abcdef0123456789")
	if !ok || billing.Name != "billing" || billing.App != "1001" || !billing.CanPublish("invoices") {
		t.Errorf("billing key = %+v, %v", billing, ok)
	}
	reporting, ok := c.APIKey("reporting-key-for-the-example-file-only")
	if !ok || reporting.Name != "reporting" || reporting.App != "1001" || !reporting.CanPublish("reports.daily") {
		t.Errorf("reporting key = %+v, %v", reporting, ok)
	}
}

func TestExampleFileNeedsItsSecrets(t *testing.T) {
	_, err := Load(filepath.Join("testdata", "herald.example.yaml"), nil)
	if err == nil || !strings.Contains(err.Error(), "REVERB_APP_SECRET") || !strings.Contains(err.Error(), "line ") {
		t.Fatalf("err = %v, want one naming REVERB_APP_SECRET and a line", err)
	}
}

func TestUnknownKeyNamesTheLine(t *testing.T) {
	doc := "apps:\n  - id: a\n    key: k\n    secrte: s\n"
	_, err := Parse([]byte(doc), nil)
	if err == nil || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), `unknown key "secrte"`) {
		t.Fatalf("err = %v, want line 4 and the key", err)
	}
	doc = "channels:\n  rules:\n    - channel: a\n      when:\n        any:\n          - claim: x\n            equal: y\n"
	_, err = Parse([]byte(doc), nil)
	if err == nil || !strings.Contains(err.Error(), "line 7") || !strings.Contains(err.Error(), "a condition") {
		t.Fatalf("err = %v, want line 7 in a condition", err)
	}
}

func TestLoadFileErrors(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil {
		t.Fatal("a missing file must be an error")
	}
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", MaxConfigSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big, nil); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Fatalf("err = %v, want a size error", err)
	}
}

func TestEmptyConfig(t *testing.T) {
	for _, doc := range []string{"", "# nothing\n", "---\n", "{}"} {
		c := mustParse(t, doc, nil)
		if c.DefaultApp() != nil || len(c.Apps()) != 0 || c.Rules == nil {
			t.Errorf("%q: %+v", doc, c)
		}
		if ok, _ := c.Rules.Allow(Subscribe, "private-x", map[string]any{ClaimSubscribe: []any{"*"}}); !ok {
			t.Errorf("%q: no rules must leave the token pattern in charge", doc)
		}
	}
	c, err := Load("", envOf(map[string]string{EnvAppID: "9", EnvAppKey: "k9", EnvAppSecret: "s9"}))
	if err != nil {
		t.Fatal(err)
	}
	if a := c.DefaultApp(); a == nil || a.ID != "9" || a.Key != "k9" || string(a.secret) != "s9" || a.Limits != DefaultLimits() {
		t.Fatalf("app from the environment = %#v", a)
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	one := "apps:\n  - id: \"1\"\n    key: file-key\n    secret: file-secret\n    secret_env: MY_SECRET\n"
	two := one + "  - id: \"2\"\n    key: k2\n    secret: s2\n"
	cases := []struct {
		name, doc         string
		env               map[string]string
		id, key, secret   string
		apps              int
		wantErr           string
		defaultAppID      string
		defaultAppChanged bool
	}{
		{name: "file only", doc: one, id: "1", key: "file-key", secret: "file-secret", apps: 1},
		{name: "secret_env wins over secret", doc: one, env: map[string]string{"MY_SECRET": "env-secret"}, id: "1", key: "file-key", secret: "env-secret", apps: 1},
		{name: "HERALD_APP_SECRET wins over secret_env", doc: one, env: map[string]string{"MY_SECRET": "env-secret", EnvAppSecret: "herald-secret"}, id: "1", key: "file-key", secret: "herald-secret", apps: 1},
		{name: "key and secret of the only app", doc: one, env: map[string]string{EnvAppKey: "env-key", EnvAppSecret: "s"}, id: "1", key: "env-key", secret: "s", apps: 1},
		{name: "by id", doc: two, env: map[string]string{EnvAppID: "2", EnvAppSecret: "new"}, id: "2", key: "k2", secret: "new", apps: 2},
		{name: "a new app", doc: two, env: map[string]string{EnvAppID: "3", EnvAppKey: "k3", EnvAppSecret: "s3"}, id: "3", key: "k3", secret: "s3", apps: 3},
		{name: "new app without key", doc: two, env: map[string]string{EnvAppID: "3", EnvAppSecret: "s3"}, wantErr: EnvAppKey},
		{name: "new app without secret", doc: "", env: map[string]string{EnvAppID: "3", EnvAppKey: "k3"}, wantErr: EnvAppSecret},
		{name: "which app?", doc: two, env: map[string]string{EnvAppSecret: "s"}, wantErr: "set " + EnvAppID},
		{name: "no app", doc: "", env: map[string]string{EnvAppKey: "k"}, wantErr: EnvAppID + " is not"},
		{name: "bad id", doc: "", env: map[string]string{EnvAppID: "a b", EnvAppKey: "k", EnvAppSecret: "s"}, wantErr: "app id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.doc), envOf(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a := c.App(tc.id)
			if a == nil || a.Key != tc.key || string(a.secret) != tc.secret || len(c.Apps()) != tc.apps {
				t.Fatalf("app %s = %#v secret %q, %d apps", tc.id, a, a.secret, len(c.Apps()))
			}
			if c.DefaultApp() != c.Apps()[0] {
				t.Error("the default app must stay the first one listed")
			}
		})
	}
}

// TestAppJWTKeys: an app's own token key comes from jwt_secret_env or jwt_public_key; apps
// without either have none and use the deployment's.
func TestAppJWTKeys(t *testing.T) {
	doc := "apps:\n" +
		"  - {id: a, key: ka, secret: s}\n" +
		"  - {id: b, key: kb, secret: s, jwt_secret_env: B_JWT}\n" +
		"  - {id: c, key: kc, secret: s, jwt_public_key: keys/c.pem}\n"
	long := strings.Repeat("k", MinJWTSecretLen)
	c := mustParse(t, doc, envOf(map[string]string{"B_JWT": long}))
	if a := c.App("a"); a.HasOwnJWTKey() || a.JWTSecret() != nil || a.JWTPublicKeyFile != "" {
		t.Errorf("app a has no key of its own: %#v", a)
	}
	if b := c.App("b"); !b.HasOwnJWTKey() || string(b.JWTSecret()) != long || b.JWTPublicKeyFile != "" {
		t.Errorf("app b: secret %q, file %q", b.JWTSecret(), b.JWTPublicKeyFile)
	}
	if k := c.App("c"); !k.HasOwnJWTKey() || k.JWTSecret() != nil || k.JWTPublicKeyFile != "keys/c.pem" {
		t.Errorf("app c: secret %q, file %q", k.JWTSecret(), k.JWTPublicKeyFile)
	}
	if _, err := Parse([]byte(doc), envOf(map[string]string{"B_JWT": long[1:]})); err == nil || !strings.Contains(err.Error(), "at least 32 bytes") {
		t.Errorf("a short jwt_secret_env: err = %v", err)
	}
	if strings.Contains(fmt.Sprintf("%v %#v %s", c.App("b"), c.App("b"), c.App("b")), long) {
		t.Error("printing an app shows its JWT secret")
	}
}

func TestConfigErrors(t *testing.T) {
	app := "apps:\n  - id: a\n    key: k\n    secret: s\n"
	rule := func(r string) string { return "channels:\n  rules:\n" + r }
	cases := []struct{ name, doc, want string }{
		{"missing secret", "apps:\n  - id: a\n    key: k\n", `line 2: apps[0]: app "a" has no secret`},
		{"empty secret_env", "apps:\n  - id: a\n    key: k\n    secret_env: NOPE\n", "line 4: apps[0].secret_env: app \"a\" has no secret: the environment variable NOPE is empty"},
		{"missing key", "apps:\n  - id: a\n    secret: s\n", "apps[0].key"},
		{"empty jwt_secret_env", app + "    jwt_secret_env: NOPE\n", "line 5: apps[0].jwt_secret_env: app \"a\": the environment variable NOPE must hold a JWT secret of at least 32 bytes"},
		{"both JWT keys", app + "    jwt_secret_env: NOPE\n    jwt_public_key: k.pem\n", `line 2: apps[0]: app "a": set jwt_secret_env or jwt_public_key, not both`},
		{"bad id", "apps:\n  - id: a/b\n    key: k\n    secret: s\n", "line 2: apps[0].id"},
		{"duplicate id", app + "  - id: a\n    key: k2\n    secret: s\n", `line 5: apps[1].id: app id "a" is used twice`},
		{"duplicate key", app + "  - id: b\n    key: k\n    secret: s\n", `line 6: apps[1].key: app key "k" is used twice`},
		{"client events", app + "    accept_client_events_from: some\n", "line 5: apps[0].accept_client_events_from: want members, all or none"},
		{"durability", app + "    durability: disk\n", `line 5: apps[0].durability: want memory, redis or replicated, not "disk"`},
		{"zero limit", app + "    limits:\n      max_presence_members: 0\n", "line 6: apps[0].limits.max_presence_members: want 1 to"},
		{"huge limit", app + "    limits:\n      max_user_info_bytes: 100000000\n", "max_user_info_bytes: want 1 to 65536"},
		{"limit type", app + "    limits:\n      max_user_id_length: many\n", "line 6"},
		{"webhook url", app + "    webhooks:\n      - url: ftp://x\n        events: [channel_occupied]\n", `line 6: apps[0].webhooks[0].url: want an http:// or https:// URL`},
		{"webhook credentials", app + "    webhooks:\n      - url: https://u:p@x\n        events: [channel_occupied]\n", `apps[0].webhooks[0].url`},
		{"webhook no events", app + "    webhooks:\n      - url: https://x\n", `apps[0].webhooks[0].events: name the events`},
		{"webhook event", app + "    webhooks:\n      - url: https://x\n        events: [channel_occupied, channel_exploded]\n", `unknown event "channel_exploded"`},
		{"webhook key", app + "    webhooks:\n      - url: https://x\n        event: [x]\n", `unknown key "event" in a webhook (url, events)`},
		{"vacate delay", app + "    webhook_vacate_delay: soon\n", `line 5: apps[0].webhook_vacate_delay: want a duration`},
		{"default app", app + "default_app: b\n", `line 5: default_app: no app has id "b"`},
		{"default", "channels:\n  default: maybe\n", "line 2: channels.default: want allow or deny"},
		{"empty pattern", rule("    - action: publish\n"), "channels.rules[0].channel: empty channel pattern"},
		{"bad char", rule("    - channel: a/b\n"), `line 3: channels.rules[0].channel: channel pattern "a/b": character '/'`},
		{"unclosed", rule("    - channel: a.{b\n"), "unclosed {"},
		{"bad name", rule("    - channel: a.{b-c}\n"), "placeholder {b-c} must be a name"},
		{"adjacent placeholders", rule("    - channel: a.{b}{c}\n"), "must follow literal text"},
		{"star after placeholder", rule("    - channel: a.{b}*\n"), "cannot be followed by *"},
		{"placeholder after star", rule("    - channel: a.*{b}\n"), "must follow literal text"},
		{"twice", rule("    - channel: a.{b}.{b}\n"), "appears twice"},
		{"action", rule("    - channel: a\n      action: read\n"), "line 4: channels.rules[0].action: want subscribe, publish or both"},
		{"unknown placeholder", rule("    - channel: a.{org}\n      when:\n        claim: org\n        equals: \"{orgg}\"\n"), "line 6: channels.rules[0].when.equals: placeholder {orgg} is not in the channel pattern"},
		{"unknown placeholder in list", rule("    - channel: a.{org}\n      when: {claim: role, in: [a, \"{x}\"]}\n"), "channels.rules[0].when.in[1]: placeholder {x}"},
		{"two kinds", rule("    - channel: a\n      when:\n        claim: x\n        equals: y\n        all: [{claim: y, exists: true}]\n"), "line 5: channels.rules[0].when: a condition is exactly one of"},
		{"no kind", rule("    - channel: a\n      when: {}\n"), "a condition is exactly one of"},
		{"two ops", rule("    - channel: a\n      when: {claim: x, equals: y, in: [y]}\n"), `claim "x" needs exactly one of`},
		{"no op", rule("    - channel: a\n      when: {claim: x}\n"), `claim "x" needs exactly one of`},
		{"empty all", rule("    - channel: a\n      when: {all: []}\n"), "when.all: an empty list"},
		{"empty in", rule("    - channel: a\n      when: {claim: x, in: []}\n"), "when.in: an empty list"},
		{"nested error", rule("    - channel: a\n      when:\n        any:\n          - not:\n              claim: x\n"), "line 7: channels.rules[0].when.any[0].not: claim \"x\" needs"},
		{"too deep", rule("    - channel: a\n      when: " + strings.Repeat("{not: ", 20) + "{claim: x, exists: true}" + strings.Repeat("}", 20) + "\n"), "nest deeper"},
		{"short api key", "api_keys:\n  - key: short\n    publish: [a]\n", "line 2: api_keys[0].key: API key \"api_keys[0]\" must be 32 to"},
		{"no api key", "api_keys:\n  - name: x\n    publish: [a]\n", `API key "x" has no key`},
		{"empty key_env", "api_keys:\n  - name: x\n    key_env: NOPE\n    publish: [a]\n", "line 3: api_keys[0].key_env: API key \"x\": the environment variable NOPE is empty"},
		{"bad hash", "api_keys:\n  - key_sha256: abc\n    publish: [a]\n", "api_keys[0].key_sha256: want 64 hex digits"},
		{"hash and key", "api_keys:\n  - key_sha256: abc\n    key: " + strings.Repeat("k", 40) + "\n    publish: [a]\n", "not both"},
		{"no publish", "api_keys:\n  - key: " + strings.Repeat("k", 40) + "\n", "may publish nowhere"},
		{"bad publish pattern", "api_keys:\n  - key: " + strings.Repeat("k", 40) + "\n    publish: [ok, \"no space\"]\n", "line 3: api_keys[0].publish[1]"},
		{"api app", "api_keys:\n  - key: " + strings.Repeat("k", 40) + "\n    app: x\n    publish: [a]\n", `api_keys[0].app: no app has id "x"`},
		{"same api key twice", "api_keys:\n  - key: " + strings.Repeat("k", 40) + "\n    publish: [a]\n  - key: " + strings.Repeat("k", 40) + "\n    publish: [b]\n", "listed twice"},
		{"two documents", "apps: []\n---\napps: []\n", "single YAML document"},
		{"not a mapping", "- a\n- b\n", "cannot unmarshal"},
		{"duplicate mapping key", "default_app: a\ndefault_app: b\n", "already defined"},
		{"syntax", "apps: [\n", "invalid YAML"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant one containing %q", err, tc.want)
			}
		})
	}
}

func TestLimitsAndClientEvents(t *testing.T) {
	doc := "apps:\n  - id: a\n    key: k\n    secret: s\n    accept_client_events_from: all\n    durability: replicated\n    limits:\n      max_presence_members: 5\n      max_user_info_bytes: 64\n      max_user_id_length: 8\n      client_events_per_second: 2\n"
	a := mustParse(t, doc, nil).App("a")
	want := Limits{MaxPresenceMembers: 5, MaxUserInfoBytes: 64, MaxUserIDLength: 8, ClientEventsPerSecond: 2}
	if a.Limits != want || a.ClientEvents != ClientEventsAll || a.Durability != "replicated" {
		t.Fatalf("app = %+v %v %q", a.Limits, a.ClientEvents, a.Durability)
	}
	// Unquoted numbers are fine as ids.
	if c := mustParse(t, "apps:\n  - id: 1001\n    key: 42\n    secret: 7\n", nil); c.App("1001") == nil || c.AppByKey("42") == nil {
		t.Fatal("numeric id and key must read as text")
	}
}

func TestSecretsStayOutOfLogs(t *testing.T) {
	c := mustParse(t, "apps:\n  - id: a\n    key: k\n    secret: very-secret-value\napi_keys:\n  - name: n\n    key: "+strings.Repeat("z", 40)+"\n    publish: [a]\n", nil)
	a := c.App("a")
	k, _ := c.APIKey(strings.Repeat("z", 40))
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", a, a, a, a), fmt.Sprintf("%v %+v %s", k, k, k), fmt.Sprint(c.Apps())} {
		if strings.Contains(s, "very-secret") || strings.Contains(s, "zzzz") {
			t.Errorf("leaks a secret: %s", s)
		}
	}
}

func TestWebhooks(t *testing.T) {
	doc := "apps:\n  - id: a\n    key: k\n    secret: s\n    webhook_vacate_delay: 500ms\n    webhooks:\n" +
		"      - url: https://app.example.com/pusher/webhooks?token=x\n        events: [member_removed, channel_vacated, channel_occupied]\n" +
		"      - url: http://127.0.0.1:9/hooks\n        events: [client_event]\n  - id: b\n    key: k2\n    secret: s\n"
	c := mustParse(t, doc, nil)
	a := c.App("a")
	if len(a.Webhooks) != 2 || a.VacateDelay != 500*time.Millisecond {
		t.Fatalf("webhooks %+v, delay %v", a.Webhooks, a.VacateDelay)
	}
	// Events in Pusher's order, whatever the file's.
	if got := a.Webhooks[0].Events; !slices.Equal(got, []string{HookChannelOccupied, HookChannelVacated, HookMemberRemoved}) {
		t.Fatalf("events %v", got)
	}
	if !a.Webhooks[1].Wants(HookClientEvent) || a.Webhooks[1].Wants(HookMemberAdded) {
		t.Fatal("Wants disagrees with events")
	}
	if s := a.Webhooks[0].String(); strings.Contains(s, "token") {
		t.Fatalf("%q shows the query", s)
	}
	if b := c.App("b"); len(b.Webhooks) != 0 || b.VacateDelay != DefaultVacateDelay {
		t.Fatalf("app without webhooks: %+v %v", b.Webhooks, b.VacateDelay)
	}
	// Pusher's webhook signature: hex HMAC-SHA256 of the body with the secret.
	if got := a.SignWebhook([]byte(`{"time_ms":1,"events":[]}`)); len(got) != 64 {
		t.Fatalf("signature %q", got)
	}
}
