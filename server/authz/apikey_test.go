package authz

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func TestAPIKeys(t *testing.T) {
	plain := "backend-key-" + strings.Repeat("p", 30)
	fromEnv := "env-key-" + strings.Repeat("e", 30)
	hashed := "hashed-key-" + strings.Repeat("h", 30)
	sum := sha256.Sum256([]byte(hashed))
	doc := `
apps:
  - {id: a, key: ka, secret: sa}
  - {id: b, key: kb, secret: sb}
default_app: b
api_keys:
  - name: plain
    key: ` + plain + `
    publish: ["orders.*", "private-organization.*.billing"]
  - name: env
    key: overridden-by-the-environment-0000000
    key_env: MY_KEY
    app: a
    publish: ["*"]
  - name: hashed
    key_sha256: ` + strings.ToUpper(hex.EncodeToString(sum[:])) + `
    publish: [exact]
`
	c := mustParse(t, doc, envOf(map[string]string{"MY_KEY": fromEnv}))

	k, ok := c.APIKey(plain)
	if !ok || k.Name != "plain" || k.App != "b" {
		t.Fatalf("plain = %+v %v; want the default app b", k, ok)
	}
	for ch, want := range map[string]bool{
		"orders.1":                           true,
		"orders.":                            true,
		"orders":                             false,
		"private-organization.acme.billing":  true,
		"private-organization.acme.invoices": false,
		"orders.1 2":                         false, // not a channel name
		"":                                   false,
	} {
		if got := k.CanPublish(ch); got != want {
			t.Errorf("plain.CanPublish(%q) = %v, want %v", ch, got, want)
		}
	}
	if k, ok := c.APIKey(fromEnv); !ok || k.Name != "env" || k.App != "a" || !k.CanPublish("anything") {
		t.Errorf("env = %+v %v", k, ok)
	}
	if _, ok := c.APIKey("overridden-by-the-environment-0000000"); ok {
		t.Error("the environment must replace the inline key")
	}
	if k, ok := c.APIKey(hashed); !ok || k.Name != "hashed" || !k.CanPublish("exact") || k.CanPublish("exactly") {
		t.Errorf("hashed = %+v %v", k, ok)
	}
	for _, bad := range []string{"", "x", plain + "x", plain[:len(plain)-1], strings.ToUpper(plain), hex.EncodeToString(sum[:]), strings.Repeat("k", 5000)} {
		if k, ok := c.APIKey(bad); ok || k != nil {
			t.Errorf("APIKey(%.20q…) = %v", bad, k)
		}
	}
	var nilKey *APIKey
	if nilKey.CanPublish("orders.1") {
		t.Error("a nil key publishes nowhere")
	}
	var nilConfig *Config
	if _, ok := nilConfig.APIKey(plain); ok || nilConfig.App("a") != nil || nilConfig.DefaultApp() != nil || nilConfig.AppByKey("ka") != nil || nilConfig.Apps() != nil {
		t.Error("a nil config has nothing")
	}
}

func TestAPIKeyWithoutApps(t *testing.T) {
	c := mustParse(t, "api_keys:\n  - key: "+strings.Repeat("k", 32)+"\n    publish: [\"*\"]\n", nil)
	if k, ok := c.APIKey(strings.Repeat("k", 32)); !ok || k.App != "" {
		t.Fatalf("= %+v %v", k, ok)
	}
}

func BenchmarkAPIKey(b *testing.B) {
	c := mustParse(b, "api_keys:\n  - key: "+strings.Repeat("k", 32)+"\n    publish: [\"*\"]\n  - key: "+strings.Repeat("j", 32)+"\n    publish: [\"*\"]\n", nil)
	for b.Loop() {
		if _, ok := c.APIKey(strings.Repeat("j", 32)); !ok {
			b.Fatal("not found")
		}
	}
}
