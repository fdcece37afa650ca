package test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/test/testkit"
)

// TestRedisOverTLSWithACL: two nodes on a Redis that speaks only TLS with client certificates
// to anyone but a PING, logged in as an ACL user (rediss://user:password@…, --redis-ca,
// --redis-cert, --redis-key), serve a publish on one node to a stream on the other. A wrong
// password, an untrusted CA, a missing client certificate or TLS options on a redis:// URL
// stop the node at startup with one line saying so, rather than serving 503 forever.
func TestRedisOverTLSWithACL(t *testing.T) {
	t.Parallel()
	rd, err := testkit.StartTLSRedis()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rd.Close)
	tlsArgs := []string{"--redis-ca", rd.Certs.CA, "--redis-cert", rd.Certs.ClientCert, "--redis-key", rd.Certs.ClientKey}
	prefix := "herald-e2e-tls-" + randomSuffix() + ":"
	secret := randomSecret()
	args := append([]string{"--redis-url", rd.URL(), "--redis-prefix", prefix}, tlsArgs...)
	a := startHerald(t, heraldOpts{name: "node-A", secret: secret, args: args})
	b := startHerald(t, heraldOpts{name: "node-B", secret: secret, args: args})
	if r := mustDo(t, "GET", b.Base+"/v1/health", nil, nil); r.Status != 200 || !strings.Contains(string(r.Body), `"store":"redis"`) {
		t.Fatalf("health over TLS: %s", r)
	}
	ch := uniqueChannel("tls")
	s := mustSSE(t, b.Base+eventsPath(ch), nil)
	defer s.Close()
	s.expectPreamble(t)
	ids := a.publishN(t, a.Publisher(t), ch, "E", 0, 5)
	for i, g := range s.mustEvents(t, 5, 10*time.Second) {
		if g.Env.ID != ids[i] || g.N != i {
			t.Fatalf("event %d on B: %s n=%d, want %s n=%d", i, g.Env.ID, g.N, ids[i], i)
		}
	}

	wrongPassword := strings.Replace(rd.URL(), url.QueryEscape(rd.Password), "nope", 1)
	plain := fmt.Sprintf("redis://127.0.0.1:%d/0", rd.Port())
	for _, c := range []struct {
		what string
		args []string
		want string
	}{
		{"a wrong password", append([]string{"--redis-url", wrongPassword}, tlsArgs...), "WRONGPASS"},
		{"an untrusted CA", []string{"--redis-url", rd.URL(), "--redis-cert", rd.Certs.ClientCert, "--redis-key", rd.Certs.ClientKey}, "certificate signed by unknown authority"},
		{"no client certificate", []string{"--redis-url", rd.URL(), "--redis-ca", rd.Certs.CA}, "refused this node"},
		{"TLS files with redis://", append([]string{"--redis-url", plain}, tlsArgs...), "need a rediss:// URL"},
		{"a certificate without its key", []string{"--redis-url", rd.URL(), "--redis-cert", rd.Certs.ClientCert}, "go together"},
	} {
		_, err := tryStartHerald(t, heraldOpts{name: c.what, secret: secret, args: c.args}, fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t)))
		if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want an exit at startup saying %q, got %v", c.what, c.want, err)
		}
	}
}
