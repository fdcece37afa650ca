//go:build soak

package test

import (
	"os/exec"
	"regexp"
	"testing"

	"github.com/herald-rt/herald/test/testkit"
)

// The Caddy and HAProxy recipes of docs/deploy.md, run the way TestProxyNginx runs nginx's: the
// recipe as written (frames unbuffered and in order over HTTP/2, the clientjs client on SSE) and
// the recipe with a 5 s idle timeout towards Herald, whose cuts the client must resume from with
// nothing lost or repeated. They install nothing: caddy and haproxy must be on PATH.

var caddyFront = frontKind{
	name: "caddy",
	// The site's address carries the port; bind keeps it on loopback (Caddy listens on every
	// interface otherwise).
	listen:   [2]string{"rt.example.com {", "rt.example.com:%d {\n\tbind 127.0.0.1"},
	upstream: [2]string{"reverse_proxy 127.0.0.1:8081 {", "reverse_proxy %s {"},
	certs: func(c siteCert) [][2]string {
		return [][2]string{{"/etc/caddy/tls/rt.example.com.crt", c.certFile}, {"/etc/caddy/tls/rt.example.com.key", c.keyFile}}
	},
	start:  testkit.StartCaddy,
	cutLog: regexp.MustCompile(`reading from backend.*i/o timeout`),
}

var haproxyFront = frontKind{
	name:     "haproxy",
	listen:   [2]string{"bind :443 ssl", "bind 127.0.0.1:%d ssl"},
	upstream: [2]string{"server herald1 127.0.0.1:8081", "server herald1 %s"},
	certs: func(c siteCert) [][2]string {
		return [][2]string{{"/etc/haproxy/tls/rt.example.com.pem", c.bundleFile}}
	},
	start: testkit.StartHAProxy,
	// The termination state of a request the server-side timeout ended while data flowed.
	cutLog: regexp.MustCompile(` sD-- `),
}

func TestSoakProxyCaddy(t *testing.T) {
	// Caddy has no idle timeout towards the backend unless told: the cut variant adds one.
	soakFront(t, caddyFront, [2]string{"\t\tflush_interval -1\n", "\t\tflush_interval -1\n\t\ttransport http {\n\t\t\tread_timeout 5s\n\t\t}\n"})
}

func TestSoakProxyHAProxy(t *testing.T) {
	soakFront(t, haproxyFront, [2]string{"timeout server 75s", "timeout server 5s"})
}

// soakFront runs the recommended and the idle-cut cases through one proxy kind.
func soakFront(t *testing.T, k frontKind, cutEdit [2]string) {
	for _, p := range []string{"caddy", "haproxy"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("this test needs caddy and haproxy on PATH: apt-get install -y caddy haproxy (%s is missing)", p)
		}
	}
	env := newProxyEnv(t)
	t.Run("recommended", func(t *testing.T) {
		t.Parallel()
		h := startHerald(t, heraldOpts{args: env.heraldArgs()})
		checkRecommended(t, env, startFront(t, env, k, h.Addr), h)
	})
	t.Run("idle-cut", func(t *testing.T) {
		t.Parallel()
		h := startHerald(t, heraldOpts{args: append(env.heraldArgs(), "--heartbeat", "60s")})
		checkIdleCuts(t, env, startFront(t, env, k, h.Addr, cutEdit), h)
	})
}
