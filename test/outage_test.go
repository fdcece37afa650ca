package test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/test/testkit"
)

// waitHealth polls /v1/health until it answers want, returning the last answer.
func waitHealth(t *testing.T, h *herald, want int) reply {
	t.Helper()
	var r reply
	if !testkit.WaitFor(15*time.Second, func() bool {
		var err error
		r, err = do(http.MethodGet, h.Base+"/v1/health", nil, nil)
		return err == nil && r.Status == want
	}) {
		t.Fatalf("GET /v1/health: want %d within 15s, last answer %s", want, r)
	}
	return r
}

// TestStoreOutage: with Redis down a publish is refused with 503 and nothing is appended, the
// health check says so, and once Redis is back the same Idempotency-Key publishes safely.
// Redis here keeps nothing on disk, so its restart is a store reset: cursors from before it
// must resync, never be matched against the new events.
func TestStoreOutage(t *testing.T) {
	rd := startPrivateRedis(t)
	h := startHerald(t, heraldOpts{args: []string{"--redis-url", rd.URL(), "--redis-prefix", "outage:" + randomSuffix() + ":"}})
	tok := h.Publisher(t)
	const ch = "outage"
	before := h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 1})
	if r := waitHealth(t, h, http.StatusOK); !strings.Contains(string(r.Body), `"store":"redis"`) {
		t.Fatalf("health: %s", r)
	}

	rd.Stop()
	body := []byte(`{"event":"Tick","data":{"n":2}}`)
	key := http.Header{"Idempotency-Key": {"outage-" + randomSuffix()}}
	var r reply
	testkit.WaitFor(15*time.Second, func() bool {
		var err error
		r, err = h.publishBody(tok, ch, body, key)
		return err == nil && r.Status == http.StatusServiceUnavailable
	})
	expectAPIError(t, "publish with Redis down", r, http.StatusServiceUnavailable, "store_unavailable")
	if r := waitHealth(t, h, http.StatusServiceUnavailable); !strings.Contains(string(r.Body), `"status":"unavailable"`) {
		t.Fatalf("health with Redis down: %s", r)
	}

	restart(t, rd)
	waitHealth(t, h, http.StatusOK)
	var retried reply
	testkit.WaitFor(15*time.Second, func() bool {
		var err error
		retried, err = h.publishBody(tok, ch, body, key)
		return err == nil && retried.Status != http.StatusServiceUnavailable
	})
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
