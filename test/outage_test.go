package test

import (
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// privateRedis is a redis-server this test alone owns, so it can stop and restart it.
type privateRedis struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	args []string // extra redis-server options
	cmd  *exec.Cmd
}

func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("this test needs redis-server on PATH (apt-get install redis-server; make test installs it)")
	}
	r := &privateRedis{t: t, bin: bin, dir: t.TempDir(), port: freePort(t)}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *privateRedis) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

func (r *privateRedis) start() {
	r.t.Helper()
	args := append([]string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir}, r.args...)
	r.cmd = exec.Command(r.bin, args...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if redisPing(r.port) {
			return
		}
	}
	r.t.Fatalf("redis-server on port %d did not come up", r.port)
}

func (r *privateRedis) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		r.cmd = nil
	}
}

// waitHealth polls /v1/health until it answers want, returning the last answer.
func waitHealth(t *testing.T, h *herald, want int) reply {
	t.Helper()
	var r reply
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var err error
		r, err = do(http.MethodGet, h.Base+"/v1/health", nil, nil)
		if err == nil && r.Status == want {
			return r
		}
	}
	t.Fatalf("GET /v1/health: want %d within 15s, last answer %s", want, r)
	return r
}

// TestStoreOutage: with Redis down a publish is refused with 503 and nothing is appended, the
// health check says so, and once Redis is back the same Idempotency-Key publishes safely.
// Redis here keeps nothing on disk, so its restart is a store reset: cursors from before it
// must resync, never be matched against the new events.
func TestStoreOutage(t *testing.T) {
	rd := startPrivateRedis(t)
	h := startHerald(t, heraldOpts{args: []string{"--redis-url", rd.url(), "--redis-prefix", "outage:" + randomSuffix() + ":"}})
	tok := h.Publisher(t)
	const ch = "outage"
	before := h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 1})
	if r := waitHealth(t, h, http.StatusOK); !strings.Contains(string(r.Body), `"store":"redis"`) {
		t.Fatalf("health: %s", r)
	}

	rd.stop()
	body := []byte(`{"event":"Tick","data":{"n":2}}`)
	key := http.Header{"Idempotency-Key": {"outage-" + randomSuffix()}}
	var r reply
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var err error
		if r, err = h.publishBody(tok, ch, body, key); err == nil && r.Status == http.StatusServiceUnavailable {
			break
		}
	}
	expectAPIError(t, "publish with Redis down", r, http.StatusServiceUnavailable, "store_unavailable")
	if r := waitHealth(t, h, http.StatusServiceUnavailable); !strings.Contains(string(r.Body), `"status":"unavailable"`) {
		t.Fatalf("health with Redis down: %s", r)
	}

	rd.start()
	waitHealth(t, h, http.StatusOK)
	var retried reply
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var err error
		if retried, err = h.publishBody(tok, ch, body, key); err == nil && retried.Status != http.StatusServiceUnavailable {
			break
		}
	}
	if retried.Status != http.StatusCreated {
		t.Fatalf("retry with the same Idempotency-Key after the outage: want 201, got %s", retried)
	}
	again, err := h.publishBody(tok, ch, body, key)
	if err != nil || again.Status != http.StatusOK || string(again.Body) != string(retried.Body) {
		t.Fatalf("second retry: want 200 with the same id as %s, got %s (%v)", retried, again, err)
	}

	// Exactly one event exists after the outage, and the old cursor resyncs onto it.
	a := h.mustPoll(t, pollPath(ch), url.Values{"cursor": {before}, "timeout": {"0"}}, tok)
	if len(a.Resync) != 1 || a.Resync[0].Reason != "history_expired" || len(a.Events) != 1 {
		t.Fatalf("poll after the store reset from %s: resync %+v, %d events; want one resync and the one new event", before, a.Resync, len(a.Events))
	}
	env, err := parseEnvelope(a.Events[0])
	if err != nil || env.ID == before || !strings.Contains(string(env.Data), `"n":2`) {
		t.Fatalf("event after the reset: %s (%v)", a.Events[0], err)
	}
}
