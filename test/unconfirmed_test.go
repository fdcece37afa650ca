package test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-rt/herald/test/testkit"
)

// An append whose answer never came back may have happened. Herald says so —
// 503 store_timeout, "may have been appended" — and keeps 503 store_unavailable ("nothing was
// appended") for failures that prove it; with an Idempotency-Key it settles the question itself
// before answering. No subscriber ever gets an event twice when publishers keep their keys.

// TestUnconfirmedAppend: a reply lost on the way is not "nothing was appended". With an
// Idempotency-Key, Herald repeats the append on a fresh connection, finds the event the first
// attempt appended, and answers 201 with its id; without one it answers 503 store_timeout.
// Either way the subscriber gets each event once, in order.
func TestUnconfirmedAppend(t *testing.T) {
	t.Parallel()
	redisAddr := strings.TrimSuffix(strings.TrimPrefix(testRedis(t), "redis://"), "/0")
	proxy := startProxy(t, redisAddr)
	// One pooled connection per pool, so the repeat cannot land on another muted one.
	cfg, app := writePusherConfig(t)
	h := startHerald(t, heraldOpts{args: []string{
		"--redis-url", "redis://" + proxy.Addr() + "/0?read_timeout=1s&write_timeout=1s&pool_size=1",
		"--redis-prefix", "unconfirmed:" + randomSuffix() + ":", "--config", cfg,
	}})
	tok := h.Publisher(t)
	ch := uniqueChannel("unconfirmed")
	s := mustSSE(t, h.Base+eventsPath(ch), nil)
	s.expectPreamble(t)
	publish := func(n int, key string) reply {
		t.Helper()
		var hdr http.Header
		if key != "" {
			hdr = http.Header{"Idempotency-Key": {key}}
		}
		r, err := h.publishBody(tok, ch, []byte(fmt.Sprintf(`{"event":"Tick","data":{"n":%d}}`, n)), hdr)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// loseNextReply makes sure the appends' connection is open — an append to another channel
	// leaves it pooled — then drops whatever Redis answers on it.
	side := uniqueChannel("side")
	loseNextReply := func() {
		t.Helper()
		h.mustPublish(t, tok, side, "Warm", nil)
		proxy.MuteReplies()
	}
	first := publish(1, "k1")
	if first.Status != http.StatusCreated {
		t.Fatalf("publish before the replies are lost: %s", first)
	}

	loseNextReply()
	withKey := publish(2, "k2")
	if withKey.Status != http.StatusCreated || !strings.Contains(string(withKey.Body), `"id":"`) {
		t.Fatalf("publish with a key whose first reply was lost: want 201 with the event's id (settled by the key), got %s", withKey)
	}
	again := publish(2, "k2")
	if again.Status != http.StatusOK || string(again.Body) != string(withKey.Body) {
		t.Fatalf("retry with the same key: want 200 with the same id as %s, got %s", withKey, again)
	}

	loseNextReply()
	noKey := publish(3, "")
	expectAPIError(t, "publish without a key whose reply was lost", noKey, http.StatusServiceUnavailable, "store_timeout")
	if !strings.Contains(string(noKey.Body), "may have been appended") {
		t.Errorf("store_timeout must say the event may have been appended: %s", noKey)
	}

	// The other publishing routes carry no key: the same answer.
	loseNextReply()
	test := mustDo(t, "POST", h.Base+"/v1/test", bearerHeader(tok), strings.NewReader(`{"channel":"`+ch+`","message":4}`))
	expectAPIError(t, "/v1/test whose reply was lost", test, http.StatusServiceUnavailable, "store_timeout")
	for i, path := range []string{"/apps/" + app.ID + "/events", "/apps/" + app.ID + "/batch_events"} {
		body := fmt.Sprintf(`{"name":"Tick","data":"{\"n\":%d}","channel":"%s"}`, 5+i, ch)
		if i == 1 {
			body = `{"batch":[` + body + `]}`
		}
		loseNextReply()
		u, hdr := pusherSigned(app, "POST", path, []byte(body))
		r := mustDo(t, "POST", h.Base+u, hdr, strings.NewReader(body))
		expectAPIError(t, "Pusher "+path+" whose reply was lost", r, http.StatusServiceUnavailable, "store_timeout")
	}

	// The subscriber's connection lost nothing for good: the notices of muted connections are
	// refilled from the stream. Every event arrives once, in order: all of them were appended.
	got := s.mustEvents(t, 6, 30*time.Second)
	for i, r := range got {
		if i == 3 {
			continue // the TestMessage, whose data is {"message":4,"sent_at":…}
		}
		if r.N != i+1 {
			t.Fatalf("events %v: want n = 1 … 6 in order, each once", envIDs(got))
		}
	}
	if got[3].Env.Event != "TestMessage" {
		t.Fatalf("the 4th event: want the TestMessage, got %s", got[3].Raw)
	}
	s.expectQuiet(t, 500*time.Millisecond)
}

// TestRedisHungAnswers: while Redis is stopped (SIGSTOP), keyed publishes in flight are never
// answered store_unavailable — their appends were sent and run once Redis resumes. Each answer
// is 201, 200 or 503 store_timeout; retrying the timeouts with their keys after SIGCONT answers
// with the events' ids, and the subscriber gets every event exactly once.
func TestRedisHungAnswers(t *testing.T) {
	t.Parallel()
	rd := startPrivateRedis(t)
	h := startHerald(t, heraldOpts{args: []string{
		"--redis-url", rd.URL() + "?read_timeout=1s&write_timeout=1s", "--redis-prefix", "hung:" + randomSuffix() + ":",
	}})
	tok := h.Publisher(t)
	ch := uniqueChannel("hung")
	s := mustSSE(t, h.Base+eventsPath(ch), nil)
	s.expectPreamble(t)
	h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 0})
	s.mustEvents(t, 1, 10*time.Second)

	const n = 8
	if err := rd.Signal(syscall.SIGSTOP); err != nil { // its Close resumes it if the test fails
		t.Fatal(err)
	}
	// Every publish is answered while Redis is still stopped: its append, and the repeat with its
	// key, both go unanswered.
	answers := make([]reply, n)
	var wg sync.WaitGroup
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := h.publishBody(tok, ch, []byte(fmt.Sprintf(`{"event":"Tick","data":{"n":%d}}`, i)), http.Header{"Idempotency-Key": {fmt.Sprintf("hung-%d", i)}})
			if err != nil {
				r = reply{Status: -1, Body: []byte(err.Error())}
			}
			answers[i-1] = r
		}()
	}
	wg.Wait()
	if err := rd.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	ids := map[int]string{}
	for i, r := range answers {
		switch {
		case r.Status == http.StatusCreated || r.Status == http.StatusOK:
			var pr publishReply
			if err := strictJSON(r.Body, &pr); err != nil {
				t.Fatalf("event %d: %s", i+1, r)
			}
			ids[i+1] = pr.ID
		case r.Status == http.StatusServiceUnavailable && strings.Contains(string(r.Body), `"store_timeout"`):
		default:
			t.Errorf("event %d while Redis hung: want 201, 200 or 503 store_timeout, got %s", i+1, r)
		}
	}
	// Retry every unsettled one with its key until Redis answers (it is back: bounded).
	for i := 1; i <= n; i++ {
		if ids[i] != "" {
			continue
		}
		body := []byte(fmt.Sprintf(`{"event":"Tick","data":{"n":%d}}`, i))
		var r reply
		testkit.WaitFor(15*time.Second, func() bool {
			var err error
			r, err = h.publishBody(tok, ch, body, http.Header{"Idempotency-Key": {fmt.Sprintf("hung-%d", i)}})
			return err == nil && r.Status != http.StatusServiceUnavailable
		})
		var pr publishReply
		if (r.Status != http.StatusOK && r.Status != http.StatusCreated) || strictJSON(r.Body, &pr) != nil {
			t.Fatalf("retry of event %d after Redis resumed: %s", i, r)
		}
		ids[i] = pr.ID
	}
	got := s.mustEvents(t, n, 30*time.Second)
	seen := map[int]string{}
	for _, r := range got {
		if _, dup := seen[r.N]; dup {
			t.Fatalf("event %d delivered twice: %v", r.N, envIDs(got))
		}
		seen[r.N] = r.Env.ID
	}
	for i := 1; i <= n; i++ {
		if seen[i] != ids[i] {
			t.Errorf("event %d: acknowledged as %q, delivered as %q", i, ids[i], seen[i])
		}
	}
	// In the log's order: sequence numbers rise one by one.
	var last uint64
	for _, r := range got {
		_, seqText, _ := strings.Cut(r.Env.ID, "-")
		seq, err := strconv.ParseUint(seqText, 10, 64)
		if err != nil || (last != 0 && seq != last+1) {
			t.Fatalf("delivery order %v: not the log's order", envIDs(got))
		}
		last = seq
	}
	s.expectQuiet(t, 500*time.Millisecond)
}
