package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-rt/herald/test/testkit"
)

// checkStreamHeaders checks the headers every SSE answer must carry.
func checkStreamHeaders(t *testing.T, s *sseStream) {
	t.Helper()
	h := s.Resp.Header
	if mt, _, err := mime.ParseMediaType(h.Get("Content-Type")); err != nil || mt != "text/event-stream" {
		t.Errorf("%s: Content-Type = %q, want text/event-stream", s.URL, h.Get("Content-Type"))
	}
	if got := h.Get("Cache-Control"); got != "no-cache, no-transform" {
		t.Errorf("%s: Cache-Control = %q, want \"no-cache, no-transform\"", s.URL, got)
	}
	if got := h.Get("X-Accel-Buffering"); got != "no" {
		t.Errorf("%s: X-Accel-Buffering = %q, want no", s.URL, got)
	}
	if got := h.Get("Content-Encoding"); got != "" {
		t.Errorf("%s: stream must not be encoded, Content-Encoding = %q", s.URL, got)
	}
}

// TestPublishReceiveOneChannelSSE: publish → receive on a one-channel stream, with the exact
// frames and headers of the wire contract, and heartbeats.
func TestPublishReceiveOneChannelSSE(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--heartbeat", "1s"}})
	tok := h.Publisher(t)
	ch := uniqueChannel("room")

	health := mustDo(t, http.MethodGet, h.Base+"/v1/health", nil, nil)
	if health.Status != 200 || !bytes.Equal(bytes.TrimSpace(health.Body), []byte(`{"status":"ok","store":"memory"}`)) {
		t.Errorf("GET /v1/health: want 200 {\"status\":\"ok\",\"store\":\"memory\"}, got %s", health)
	}

	s := mustSSE(t, h.Base+eventsPath(ch), nil)
	checkStreamHeaders(t, s)
	hello := s.expectPreamble(t)
	if hello.Heartbeat != 1 {
		t.Errorf("herald:connected heartbeat = %d, want 1 (--heartbeat 1s)", hello.Heartbeat)
	}

	// The publish answer: 201 {"id","channel"}. Data is compacted to one line.
	body := []byte("{\"event\":\"MessageSent\",\"data\":{ \"text\" : \"two\\nlines\",\n  \"n\": 1, \"nested\": [1, {\"a\": null}] }}")
	r, err := h.publishBody(tok, ch, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusCreated {
		t.Fatalf("publish: want 201, got %s", r)
	}
	var pr publishReply
	if err := strictJSON(r.Body, &pr); err != nil || pr.ID == "" || pr.Channel != ch {
		t.Fatalf("publish answer must be exactly {\"id\",\"channel\"}: %s (%v)", r.Body, err)
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		t.Errorf("publish answer Content-Type = %q", r.Header.Get("Content-Type"))
	}
	before := time.Now()
	id2 := h.mustPublish(t, tok, ch, "Other.Event-name", "a string")
	id3 := h.mustPublish(t, tok, ch, "MessageSent", nil)

	got := s.mustEvents(t, 3, 10*time.Second)
	wantIDs := []string{pr.ID, id2, id3}
	wantData := []string{`{"text":"two\nlines","n":1,"nested":[1,{"a":null}]}`, `"a string"`, `null`}
	wantNames := []string{"MessageSent", "Other.Event-name", "MessageSent"}
	for i, g := range got {
		if g.LineID != wantIDs[i] || g.Env.ID != wantIDs[i] {
			t.Errorf("event %d: id line %q, envelope id %q, want both %q (the publish answer's id)", i, g.LineID, g.Env.ID, wantIDs[i])
		}
		if g.Env.Channel != ch || g.Env.Event != wantNames[i] || string(g.Env.Data) != wantData[i] {
			t.Errorf("event %d: envelope %+v, want channel %q event %q data %s", i, g.Env, ch, wantNames[i], wantData[i])
		}
		if ts := time.UnixMilli(g.Env.TS); ts.Before(before.Add(-time.Minute)) || ts.After(time.Now().Add(time.Minute)) {
			t.Errorf("event %d: ts %d is not the publish time in unix ms", i, g.Env.TS)
		}
		if strings.Contains(g.Raw, "socket_id") {
			t.Errorf("event %d: the publisher's socket_id must never be sent: %q", i, g.Raw)
		}
	}
	if got[0].LineID == got[1].LineID || got[1].LineID == got[2].LineID {
		t.Errorf("event ids must differ: %q %q %q", got[0].LineID, got[1].LineID, got[2].LineID)
	}

	// Heartbeat: exactly ": ping\n\n" within a few seconds of an idle stream.
	deadline := time.Now().Add(4 * time.Second)
	for {
		f, err := s.next(time.Until(deadline))
		if err != nil {
			t.Fatalf("no `: ping` heartbeat within 4s with --heartbeat 1s: %v", err)
		}
		if f.CommentOnly() {
			if f.Raw != ": ping\n\n" {
				t.Errorf("heartbeat frame = %q, want \": ping\\n\\n\"", f.Raw)
			}
			break
		}
		t.Fatalf("unexpected frame on an idle stream: %q", f.Raw)
	}

	// A second subscriber that connects now gets only what is published after it (live only),
	// and its connected cursor is the channel's head.
	s2 := mustSSE(t, h.Base+eventsPath(ch), nil)
	hello2 := s2.expectPreamble(t)
	if hello2.Cursor != id3 {
		t.Errorf("herald:connected cursor = %q, want the head %q", hello2.Cursor, id3)
	}
	if hello2.SocketID == hello.SocketID {
		t.Errorf("two connections got the same socket id %q", hello.SocketID)
	}
	id4 := h.mustPublish(t, tok, ch, "MessageSent", map[string]int{"n": 4})
	if g := s2.mustEvents(t, 1, 10*time.Second)[0]; g.LineID != id4 {
		t.Errorf("second subscriber: first event %q, want %q (live only, nothing older)", g.LineID, id4)
	}
	if g := s.mustEvents(t, 1, 10*time.Second)[0]; g.LineID != id4 {
		t.Errorf("first subscriber: event %q, want %q", g.LineID, id4)
	}

	// POST /v1/test publishes a TestMessage to the channel.
	r = mustDo(t, http.MethodPost, h.Base+"/v1/test", bearerHeader(tok), strings.NewReader(`{"channel":"`+ch+`","message":"hi"}`))
	if r.Status != http.StatusCreated {
		t.Fatalf("POST /v1/test: want 201, got %s", r)
	}
	f, err := s.nextEvent(10 * time.Second)
	if err != nil {
		t.Fatalf("waiting for the TestMessage: %v", err)
	}
	tm, err := eventFrame(f)
	var msg struct {
		Message string `json:"message"`
	}
	if err != nil || tm.Env.Event != "TestMessage" || json.Unmarshal(tm.Env.Data, &msg) != nil || msg.Message != "hi" {
		t.Errorf("POST /v1/test {channel, message:\"hi\"}: subscriber got %q (%v), want a TestMessage with message \"hi\"", f.Raw, err)
	}
}

// TestPublishReceiveMultiChannelSSE: /v1/stream carries several channels with composite ids
// while the envelope ids stay the per-channel cursors.
func TestPublishReceiveMultiChannelSSE(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{})
	tok := h.Publisher(t)
	a, b, c := uniqueChannel("a"), uniqueChannel("b"), uniqueChannel("c")

	s := mustSSE(t, h.Base+"/v1/stream?"+url.Values{"channel": {a, b}}.Encode(), nil)
	checkStreamHeaders(t, s)
	hello := s.expectPreamble(t)
	if !strings.HasPrefix(hello.Cursor, "c") {
		t.Errorf("/v1/stream herald:connected cursor %q is not composite (starts with c)", hello.Cursor)
	}

	type pub struct{ ch, id string }
	var pubs []pub
	for i, ch := range []string{a, b, c, a, b, a} { // c is not subscribed
		pubs = append(pubs, pub{ch, h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": i})})
	}
	got := s.mustEvents(t, 5, 10*time.Second)
	byChannel := map[string][]string{}
	seenLine := map[string]bool{}
	for _, g := range got {
		if !strings.HasPrefix(g.LineID, "c") {
			t.Errorf("/v1/stream id line %q is not composite", g.LineID)
		}
		if g.LineID == g.Env.ID {
			t.Errorf("/v1/stream id line equals the envelope id %q; it must be the composite cursor", g.LineID)
		}
		if seenLine[g.LineID] {
			t.Errorf("composite id %q sent twice", g.LineID)
		}
		seenLine[g.LineID] = true
		byChannel[g.Env.Channel] = append(byChannel[g.Env.Channel], g.Env.ID)
	}
	for _, ch := range []string{a, b} {
		var want []string
		for _, p := range pubs {
			if p.ch == ch {
				want = append(want, p.id)
			}
		}
		if !slices.Equal(byChannel[ch], want) {
			t.Errorf("channel %s on /v1/stream: got ids %v, want %v in order", ch, byChannel[ch], want)
		}
	}
	if len(byChannel[c]) > 0 {
		t.Errorf("got events of unsubscribed channel %s", c)
	}
	s.expectQuiet(t, 300*time.Millisecond)
}

// TestPublishReceivePoll: long-poll answers at once without a cursor, waits for an event with
// one, and times out with the same cursor; one-channel and multi-channel.
func TestPublishReceivePoll(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{})
	tok := h.Publisher(t)
	ch, other := uniqueChannel("poll"), uniqueChannel("poll2")

	// Without a cursor: at once, no events, the head cursor.
	start := time.Now()
	a0, r0, err := h.poll(pollPath(ch), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 3*time.Second || len(a0.Events) != 0 {
		t.Errorf("poll without cursor: want an immediate empty answer, got %s after %v", r0.Body, time.Since(start))
	}
	if got := r0.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("poll Cache-Control = %q, want no-store", got)
	}
	id0 := h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 0})

	// With the cursor: the event published after it, at once.
	a1 := h.mustPoll(t, pollPath(ch), url.Values{"cursor": {a0.Cursor}, "timeout": {"10"}}, "")
	if len(a1.Events) != 1 || a1.Cursor != id0 {
		t.Fatalf("poll after the head: want [%s] and cursor %s, got %d events, cursor %s", id0, id0, len(a1.Events), a1.Cursor)
	}
	if e, err := parseEnvelope(a1.Events[0]); err != nil || e.ID != id0 || e.Channel != ch || e.Event != "Tick" || string(e.Data) != `{"n":0}` {
		t.Errorf("poll event: %s (%v)", a1.Events[0], err)
	}

	// A waiting poll is answered when an event arrives.
	done := pollInFlight(t, h, pollPath(ch), url.Values{"cursor": {a1.Cursor}, "timeout": {"20"}})
	id1 := h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 1})
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if len(r.a.Events) != 1 || r.a.Cursor != id1 || r.d > 10*time.Second {
			t.Errorf("waiting poll: want [%s] soon after the publish, got %d events cursor %s after %v", id1, len(r.a.Events), r.a.Cursor, r.d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a waiting poll was not answered within 15s of a publish")
	}

	// Nothing new: empty events and the same cursor at the timeout.
	start = time.Now()
	a2 := h.mustPoll(t, pollPath(ch), url.Values{"cursor": {id1}, "timeout": {"1"}}, "")
	if el := time.Since(start); len(a2.Events) != 0 || a2.Cursor != id1 || el < 900*time.Millisecond || el > 5*time.Second {
		t.Errorf("poll with nothing new, timeout=1: want [] and cursor %s after ~1s, got %d events, cursor %s after %v", id1, len(a2.Events), a2.Cursor, el)
	}

	// Multi-channel poll: composite cursor; a channel added to the set starts at its head.
	m0 := h.mustPoll(t, "/v1/poll", url.Values{"channel": {ch}}, "")
	if !strings.HasPrefix(m0.Cursor, "c") || len(m0.Events) != 0 {
		t.Fatalf("multi poll without cursor: want composite cursor and no events, got %+v", m0)
	}
	idOther := h.mustPublish(t, tok, other, "Tick", map[string]int{"n": 2}) // before `other` joins the set
	idCh := h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 3})
	m1 := h.mustPoll(t, "/v1/poll", url.Values{"channel": {ch, other}, "cursor": {m0.Cursor}, "timeout": {"5"}}, "")
	if len(m1.Events) != 1 || !strings.HasPrefix(m1.Cursor, "c") {
		t.Fatalf("multi poll: want just the %s event (the added channel starts at its head), got %d events: %s", ch, len(m1.Events), m1.Events)
	}
	if e, _ := parseEnvelope(m1.Events[0]); e.ID != idCh {
		t.Errorf("multi poll event id %q, want %q", e.ID, idCh)
	}
	idOther2 := h.mustPublish(t, tok, other, "Tick", map[string]int{"n": 4})
	m2 := h.mustPoll(t, "/v1/poll", url.Values{"channel": {ch, other}, "cursor": {m1.Cursor}, "timeout": {"5"}}, "")
	if len(m2.Events) != 1 {
		t.Fatalf("multi poll 2: want 1 event, got %s", m2.Events)
	}
	if e, _ := parseEnvelope(m2.Events[0]); e.ID != idOther2 || e.ID == idOther {
		t.Errorf("multi poll 2: event %q, want %q", e.ID, idOther2)
	}
}

// TestOrderNoLoss10k: 10,000 events on one channel from one keep-alive publisher reach two SSE
// subscribers and a long-poll loop exactly once each, in publish order.
func TestOrderNoLoss10k(t *testing.T) {
	t.Parallel()
	const total = 10000
	h := startHerald(t, heraldOpts{args: []string{"--history-size", "20000", "--log-level", "warn"}})
	tok := h.Publisher(t)
	ch := uniqueChannel("bulk")

	type result struct {
		name       string
		ids        []string
		ns         []int
		reconnects int
		err        error
	}
	results := make(chan result, 3)

	// A subscriber that, like a real client, resumes with Last-Event-ID if it is dropped.
	subscriber := func(name string, s *sseStream) {
		r := result{name: name}
		defer func() { results <- r }()
		var evs []received
		evs, r.reconnects, r.err = readResuming(s, h.Base+eventsPath(ch), total, 90*time.Second)
		for _, ev := range evs {
			r.ids = append(r.ids, ev.LineID)
			r.ns = append(r.ns, ev.N)
		}
	}
	var streams []*sseStream
	for i := 0; i < 2; i++ {
		s := mustSSE(t, h.Base+eventsPath(ch), nil)
		s.expectPreamble(t)
		streams = append(streams, s)
	}
	head := h.mustPoll(t, pollPath(ch), nil, "").Cursor
	go subscriber("sse-1", streams[0])
	go subscriber("sse-2", streams[1])
	go func() {
		r := result{name: "long-poll"}
		defer func() { results <- r }()
		cursor := head
		deadline := time.Now().Add(90 * time.Second)
		for polls := 0; len(r.ids) < total && polls < total && time.Now().Before(deadline); polls++ {
			a, _, err := h.poll(pollPath(ch), url.Values{"cursor": {cursor}, "limit": {"1000"}, "timeout": {"10"}}, "")
			if err != nil {
				r.err = err
				return
			}
			for _, raw := range a.Events {
				e, err := parseEnvelope(raw)
				if err != nil {
					r.err = err
					return
				}
				n, _ := seqN(e.Data)
				r.ids = append(r.ids, e.ID)
				r.ns = append(r.ns, n)
			}
			if len(a.Resync) > 0 {
				r.err = fmt.Errorf("unexpected resync %+v", a.Resync)
				return
			}
			cursor = a.Cursor
		}
	}()

	start := time.Now()
	ids := make([]string, 0, total)
	for i := 0; i < total; i++ {
		id, err := h.publish(tok, ch, "Tick", map[string]int{"n": i})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		ids = append(ids, id)
	}
	t.Logf("published %d events in %v", total, time.Since(start))
	if len(slices.Compact(slices.Clone(ids))) != total {
		t.Fatalf("publish answers repeated an id")
	}

	for i := 0; i < 3; i++ {
		r := <-results
		if r.err != nil {
			t.Errorf("%s: %v", r.name, r.err)
			continue
		}
		if r.reconnects > 0 {
			t.Logf("%s: was dropped and resumed %d times", r.name, r.reconnects)
		}
		if len(r.ids) != total {
			t.Errorf("%s: got %d events, want %d", r.name, len(r.ids), total)
			continue
		}
		for j := range total {
			if r.ids[j] != ids[j] || r.ns[j] != j {
				t.Errorf("%s: event %d is id %q n=%d, want id %q n=%d (lost, duplicated or reordered)", r.name, j, r.ids[j], r.ns[j], ids[j], j)
				break
			}
		}
	}
	t.Logf("all subscribers done %v after the first publish", time.Since(start))
}

// readResuming reads total events from a one-channel stream the way a real client does: if
// the server drops it (a subscriber that falls behind is disconnected by design), it
// reconnects with Last-Event-ID, at most 5 times. Safe from any goroutine.
func readResuming(s *sseStream, streamURL string, total int, d time.Duration) (evs []received, reconnects int, err error) {
	deadline := time.Now().Add(d)
	defer func() { s.Close() }()
	for len(evs) < total {
		f, err := s.nextEvent(time.Until(deadline))
		if err != nil {
			if err == errTimeout || reconnects >= 5 || len(evs) == 0 {
				return evs, reconnects, fmt.Errorf("after %d events: %w", len(evs), err)
			}
			s.Close()
			reconnects++
			s, err = openSSE(streamURL, lastEventHeader(evs[len(evs)-1].LineID))
			if err != nil {
				return evs, reconnects, fmt.Errorf("reconnect after %d events: %w", len(evs), err)
			}
			continue
		}
		if f.Event == "herald:connected" || f.HasRetry && !f.HasData {
			continue
		}
		ev, err := eventFrame(f)
		if err != nil {
			return evs, reconnects, err
		}
		if ev.LineID != ev.Env.ID {
			return evs, reconnects, fmt.Errorf("id line %q != envelope id %q", ev.LineID, ev.Env.ID)
		}
		evs = append(evs, ev)
	}
	return evs, reconnects, nil
}

// TestResume: from sampled cursors (Last-Event-ID header, ?last_event_id=, poll cursors) the
// client gets exactly the remaining events in order, then live ones; since=beginning replays
// history; malformed cursors are 400 invalid_cursor.
func TestResume(t *testing.T) {
	t.Parallel()
	const total = 200
	h := startHerald(t, heraldOpts{args: []string{"--history-size", "1000"}})
	tok := h.Publisher(t)
	ch := uniqueChannel("resume")
	ids := h.publishN(t, tok, ch, "Tick", 0, total)

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 42))
	t.Logf("cursor sample seed %d", seed)
	samples := []int{0, total - 2, total - 1}
	for len(samples) < 20 {
		samples = append(samples, rng.IntN(total))
	}

	type resumed struct {
		from int
		s    *sseStream
	}
	var open []resumed
	for k, from := range samples {
		var s *sseStream
		if k%2 == 0 {
			s = mustSSE(t, h.Base+eventsPath(ch), lastEventHeader(ids[from]))
		} else {
			s = mustSSE(t, h.Base+eventsPath(ch)+"?last_event_id="+url.QueryEscape(ids[from]), nil)
		}
		s.expectPreamble(t)
		rest := s.mustEvents(t, total-1-from, 15*time.Second)
		for j, g := range rest {
			if want := ids[from+1+j]; g.LineID != want || g.N != from+1+j {
				t.Fatalf("resume after event %d: event %d is %q n=%d, want %q n=%d", from, j, g.LineID, g.N, want, from+1+j)
			}
		}
		open = append(open, resumed{from, s})
	}
	// Then every resumed stream goes on live, with no duplicate of the history it replayed.
	live := h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": total})
	for _, r := range open {
		if g := r.s.mustEvents(t, 1, 10*time.Second)[0]; g.LineID != live {
			t.Errorf("stream resumed after event %d: next live event %q, want %q", r.from, g.LineID, live)
		}
		r.s.expectQuiet(t, 50*time.Millisecond)
	}
	ids = append(ids, live)

	// since=beginning replays the retained history, then goes on live.
	sb := mustSSE(t, h.Base+eventsPath(ch)+"?since=beginning", nil)
	sb.expectPreamble(t)
	all := sb.mustEvents(t, len(ids), 15*time.Second)
	for j, g := range all {
		if g.LineID != ids[j] {
			t.Fatalf("since=beginning: event %d is %q, want %q", j, g.LineID, ids[j])
		}
	}
	sb.expectQuiet(t, 100*time.Millisecond)

	// Long-poll: page through from since=beginning with small pages, keep each cursor, and
	// resume a poll chain from sampled ones.
	var cursors []string // cursors[k] = cursor after k events
	var polled []string
	a := h.mustPoll(t, pollPath(ch), url.Values{"since": {"beginning"}, "limit": {"7"}}, "")
	for guard := 0; ; guard++ {
		if guard > 100 {
			t.Fatal("poll chain did not end")
		}
		for _, raw := range a.Events {
			e, err := parseEnvelope(raw)
			if err != nil {
				t.Fatal(err)
			}
			polled = append(polled, e.ID)
			cursors = append(cursors, e.ID)
		}
		if len(a.Events) == 0 {
			break
		}
		if len(a.Events) > 7 {
			t.Fatalf("poll limit=7 answered %d events", len(a.Events))
		}
		a = h.mustPoll(t, pollPath(ch), url.Values{"cursor": {a.Cursor}, "limit": {"7"}, "timeout": {"0"}}, "")
	}
	if !slices.Equal(polled, ids) {
		t.Fatalf("poll chain from since=beginning: got %d ids, want %d in publish order", len(polled), len(ids))
	}
	for k := 0; k < 10; k++ {
		from := rng.IntN(len(ids))
		cur := cursors[from]
		var got []string
		for guard := 0; guard < 50; guard++ {
			p := h.mustPoll(t, pollPath(ch), url.Values{"cursor": {cur}, "limit": {"50"}, "timeout": {"0"}}, "")
			if len(p.Events) == 0 {
				if p.Cursor != cur {
					t.Errorf("empty poll answer changed the cursor %q → %q", cur, p.Cursor)
				}
				break
			}
			for _, raw := range p.Events {
				e, _ := parseEnvelope(raw)
				got = append(got, e.ID)
			}
			cur = p.Cursor
		}
		if !slices.Equal(got, ids[from+1:]) {
			t.Errorf("poll resumed after event %d: got %d events, want exactly the %d after it", from, len(got), len(ids)-from-1)
		}
	}

	// Malformed cursors are a 400 invalid_cursor, on every transport.
	for _, bad := range []string{"garbage", "-5", "UPPER-1", "abc-", "c.zz", ids[0] + "x"} {
		_, err := openSSE(h.Base+eventsPath(ch), lastEventHeader(bad))
		var se *statusError
		if !asStatus(err, &se) {
			t.Errorf("Last-Event-ID %q: want 400, got %v", bad, err)
		} else {
			expectAPIError(t, "Last-Event-ID "+bad, se.r, 400, "invalid_cursor")
		}
		r := mustDo(t, http.MethodGet, h.Base+pollPath(ch)+"?cursor="+url.QueryEscape(bad), nil, nil)
		expectAPIError(t, "poll cursor "+bad, r, 400, "invalid_cursor")
	}
	_, err := openSSE(h.Base+eventsPath(ch)+"?last_event_id=not-a-cursor!", nil)
	var se *statusError
	if !asStatus(err, &se) {
		t.Errorf("?last_event_id=not-a-cursor!: want 400, got %v", err)
	} else {
		expectAPIError(t, "?last_event_id=not-a-cursor!", se.r, 400, "invalid_cursor")
	}
	// A one-channel cursor is not a composite cursor.
	_, err = openSSE(h.Base+"/v1/stream?channel="+ch, lastEventHeader(ids[3]))
	if !asStatus(err, &se) {
		t.Errorf("/v1/stream with a one-channel cursor: want 400, got %v", err)
	} else {
		expectAPIError(t, "/v1/stream with a one-channel cursor", se.r, 400, "invalid_cursor")
	}
}

func asStatus(err error, se **statusError) bool {
	e, ok := err.(*statusError)
	if ok {
		*se = e
	}
	return ok
}

// TestResumeMultiChannel: resuming /v1/stream from sampled composite ids gives exactly the
// events after each, per channel in order, no duplicates.
func TestResumeMultiChannel(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{})
	tok := h.Publisher(t)
	a, b := uniqueChannel("ma"), uniqueChannel("mb")
	streamURL := h.Base + "/v1/stream?" + url.Values{"channel": {a, b}}.Encode()

	s := mustSSE(t, streamURL, nil)
	s.expectPreamble(t)
	const n = 60
	for i := 0; i < n; i++ {
		ch := a
		if i%3 == 1 {
			ch = b
		}
		h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": i})
	}
	orig := s.mustEvents(t, n, 15*time.Second)

	perChannel := func(evs []received) map[string][]string {
		m := map[string][]string{}
		for _, e := range evs {
			m[e.Env.Channel] = append(m[e.Env.Channel], e.Env.ID)
		}
		return m
	}
	for _, from := range []int{0, 1, 7, 22, 30, 45, 58, n - 1} {
		hdr := lastEventHeader(orig[from].LineID)
		u := streamURL
		if from%2 == 1 {
			hdr, u = nil, streamURL+"&last_event_id="+url.QueryEscape(orig[from].LineID)
		}
		r := mustSSE(t, u, hdr)
		r.expectPreamble(t)
		want := orig[from+1:]
		got := r.mustEvents(t, len(want), 10*time.Second)
		r.expectQuiet(t, 100*time.Millisecond)
		gm, wm := perChannel(got), perChannel(want)
		for _, ch := range []string{a, b} {
			if !slices.Equal(gm[ch], wm[ch]) {
				t.Errorf("resume /v1/stream after frame %d: channel %s got %v, want %v", from, ch, gm[ch], wm[ch])
			}
		}
		r.Close()
	}
	// The connected cursor alone is enough to resume: a client that dropped before its first
	// event still gets what it missed.
	s2 := mustSSE(t, streamURL, nil)
	hello := s2.expectPreamble(t)
	s2.Close()
	missed := h.mustPublish(t, tok, b, "Tick", map[string]int{"n": n})
	s3 := mustSSE(t, streamURL, lastEventHeader(hello.Cursor))
	s3.expectPreamble(t)
	if g := s3.mustEvents(t, 1, 10*time.Second)[0]; g.Env.ID != missed {
		t.Errorf("resume from the herald:connected cursor: got %q, want %q", g.Env.ID, missed)
	}
}

// TestResyncAfterTrim: a cursor older than the retained history gives herald:resync first,
// then every event from the oldest retained — never a silent skip; the same on long-poll.
func TestResyncAfterTrim(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--history-size", "10"}})
	tok := h.Publisher(t)
	ch := uniqueChannel("trim")
	ids := h.publishN(t, tok, ch, "Tick", 1, 50) // ids[k] is event k+1

	// What is retained, as since=beginning reports it.
	hist := h.mustPoll(t, pollPath(ch), url.Values{"since": {"beginning"}, "limit": {"1000"}}, "")
	if len(hist.Events) < 10 || len(hist.Events) >= 48 {
		t.Fatalf("--history-size 10 keeps %d events", len(hist.Events))
	}
	oldest, _ := parseEnvelope(hist.Events[0])
	oldestIdx := slices.Index(ids, oldest.ID)
	if oldestIdx < 0 || oldestIdx+len(hist.Events) != len(ids) {
		t.Fatalf("since=beginning is not a suffix of the published events: oldest %q, %d events", oldest.ID, len(hist.Events))
	}

	s := mustSSE(t, h.Base+eventsPath(ch), lastEventHeader(ids[1]))
	s.expectPreamble(t)
	f := s.mustEvent(t, 10*time.Second)
	if f.Event != "herald:resync" {
		t.Fatalf("resume from a trimmed cursor: first frame must be herald:resync, got %q", f.Raw)
	}
	var rs resyncNotice
	if err := strictJSON([]byte(f.Data), &rs); err != nil {
		t.Fatalf("herald:resync data %s: %v", f.Data, err)
	}
	if !slices.Equal(rs.Channels, []string{ch}) || rs.Reason != "history_expired" || rs.Cursor == "" {
		t.Errorf("herald:resync data = %s, want {\"channels\":[%q],\"reason\":\"history_expired\",\"cursor\":…}", f.Data, ch)
	}
	rest := s.mustEvents(t, len(ids)-oldestIdx, 10*time.Second)
	for j, g := range rest {
		if g.LineID != ids[oldestIdx+j] {
			t.Fatalf("after resync: event %d is %q, want %q (from the oldest retained, no gap)", j, g.LineID, ids[oldestIdx+j])
		}
	}
	s.expectQuiet(t, 100*time.Millisecond)

	// The resync cursor resumes cleanly from the oldest retained event.
	s2 := mustSSE(t, h.Base+eventsPath(ch), lastEventHeader(rs.Cursor))
	s2.expectPreamble(t)
	f2 := s2.mustEvent(t, 10*time.Second)
	if r, err := eventFrame(f2); err != nil || r.LineID != ids[oldestIdx] {
		t.Errorf("resume from the resync cursor %q: first frame %q, want event %q", rs.Cursor, f2.Raw, ids[oldestIdx])
	}

	// Long-poll: the same resync notice in "resync", then the retained events.
	p := h.mustPoll(t, pollPath(ch), url.Values{"cursor": {ids[1]}, "limit": {"1000"}, "timeout": {"0"}}, "")
	if len(p.Resync) != 1 || !slices.Equal(p.Resync[0].Channels, []string{ch}) || p.Resync[0].Reason != "history_expired" || p.Resync[0].Cursor == "" {
		t.Errorf("poll from a trimmed cursor: resync = %+v, want one history_expired notice for %s", p.Resync, ch)
	}
	var got []string
	for _, raw := range p.Events {
		e, _ := parseEnvelope(raw)
		got = append(got, e.ID)
	}
	if !slices.Equal(got, ids[oldestIdx:]) {
		t.Errorf("poll from a trimmed cursor: got %v, want %v", got, ids[oldestIdx:])
	}
	if p.Cursor != ids[len(ids)-1] {
		t.Errorf("poll cursor after the resync answer = %q, want %q", p.Cursor, ids[len(ids)-1])
	}

	// Multi-channel stream: the resync names just the trimmed channel.
	other := uniqueChannel("fresh")
	ms := mustSSE(t, h.Base+"/v1/stream?"+url.Values{"channel": {ch, other}}.Encode(), nil)
	hello := ms.expectPreamble(t)
	ms.Close()
	h.publishN(t, tok, ch, "Tick", 51, 15) // trims everything the composite cursor points at
	ms2 := mustSSE(t, h.Base+"/v1/stream?"+url.Values{"channel": {ch, other}}.Encode(), lastEventHeader(hello.Cursor))
	ms2.expectPreamble(t)
	fr := ms2.mustEvent(t, 10*time.Second)
	var mrs resyncNotice
	if fr.Event != "herald:resync" || json.Unmarshal([]byte(fr.Data), &mrs) != nil || !slices.Equal(mrs.Channels, []string{ch}) {
		t.Errorf("/v1/stream resume past trimmed history: first frame %q, want herald:resync for [%s]", fr.Raw, ch)
	}
}

// TestResyncAfterRestart: the memory store starts over when the process restarts, and a cursor
// from before must not be matched against the new events (epochs): herald:resync, then all
// new events.
func TestResyncAfterRestart(t *testing.T) {
	t.Parallel()
	secret := randomSecret()
	h := startHerald(t, heraldOpts{secret: secret})
	tok := h.Publisher(t)
	ch := uniqueChannel("epoch")
	old := h.publishN(t, tok, ch, "Tick", 0, 5)
	h.Kill()
	h2 := startHerald(t, heraldOpts{secret: secret, addr: h.Addr})
	fresh := h2.publishN(t, tok, ch, "Tick", 100, 8)

	s := mustSSE(t, h2.Base+eventsPath(ch), lastEventHeader(old[1]))
	s.expectPreamble(t)
	f := s.mustEvent(t, 10*time.Second)
	if f.Event != "herald:resync" {
		t.Fatalf("cursor from before a restart of the memory store: want herald:resync first, got %q", f.Raw)
	}
	got := s.mustEvents(t, len(fresh), 10*time.Second)
	for j, g := range got {
		if g.LineID != fresh[j] {
			t.Fatalf("after resync: event %d = %q, want %q (all events of the new epoch)", j, g.LineID, fresh[j])
		}
	}
	p := h2.mustPoll(t, pollPath(ch), url.Values{"cursor": {old[4]}, "timeout": {"0"}}, "")
	if len(p.Resync) != 1 || len(p.Events) != len(fresh) {
		t.Errorf("poll with a cursor from before the restart: want a resync and %d events, got %+v and %d events", len(fresh), p.Resync, len(p.Events))
	}
}

// TestErrors: every error status of the wire contract, each with the exact JSON error body.
func TestErrors(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--max-body-bytes", "1024"}})
	pub := h.Token(t, "u1", []string{"private-ok*"}, []string{"*"}, time.Hour)
	noPub := h.Token(t, "u2", []string{"private-ok*"}, []string{"other-*"}, time.Hour)
	ch := uniqueChannel("err")
	pubPath := eventsPath(ch)
	json1 := http.Header{"Content-Type": {"application/json"}}
	withTok := func(tok string, extra http.Header) http.Header {
		hd := bearerHeader(tok)
		for k, v := range extra {
			hd[k] = v
		}
		return hd
	}
	manyChannels := url.Values{}
	for i := 0; i < 101; i++ {
		manyChannels.Add("channel", fmt.Sprintf("c%d", i))
	}
	hundred := url.Values{}
	for i := 0; i < 100; i++ {
		hundred.Add("channel", fmt.Sprintf("c%d", i))
	}
	long164, long165 := strings.Repeat("x", 164), strings.Repeat("y", 165)

	// Tokens that must all be refused with 401.
	expired := tokenClaims(t, h.Secret, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(-time.Hour).Unix(), "herald.publish": []string{"*"}})
	otherSecret := tokenClaims(t, randomSecret(), jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix(), "herald.publish": []string{"*"}})
	noExp := tokenClaims(t, h.Secret, jwt.MapClaims{"sub": "u", "herald.publish": []string{"*"}})
	algNone, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix(), "herald.publish": []string{"*"}}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	hs384, err := jwt.NewWithClaims(jwt.SigningMethodHS384, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix(), "herald.publish": []string{"*"}}).SignedString(h.Secret)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name         string
		method, path string
		header       http.Header
		body         string
		status       int
		code         string
	}{
		// 400: bad JSON and bad fields.
		{"truncated JSON", "POST", pubPath, withTok(pub, json1), `{"event":`, 400, "invalid_json"},
		{"empty body", "POST", pubPath, withTok(pub, json1), ``, 400, "invalid_json"},
		{"array body", "POST", pubPath, withTok(pub, json1), `[1,2]`, 400, "invalid_json"},
		{"two objects", "POST", pubPath, withTok(pub, json1), `{"event":"A"} {"event":"B"}`, 400, "invalid_json"},
		{"unknown field", "POST", pubPath, withTok(pub, json1), `{"event":"A","data":1,"extra":true}`, 400, "invalid_json"},
		{"event not a string", "POST", pubPath, withTok(pub, json1), `{"event":5}`, 400, "invalid_json"},
		{"missing event", "POST", pubPath, withTok(pub, json1), `{"data":{"a":1}}`, 400, "invalid_event"},
		{"empty event", "POST", pubPath, withTok(pub, json1), `{"event":"","data":1}`, 400, "invalid_event"},
		{"reserved event name", "POST", pubPath, withTok(pub, json1), `{"event":"herald:connected"}`, 400, "invalid_event"},
		{"event with newline", "POST", pubPath, withTok(pub, json1), `{"event":"a\nid: 5"}`, 400, "invalid_event"},
		{"bad socket_id", "POST", pubPath, withTok(pub, json1), `{"event":"A","socket_id":"abc"}`, 400, "invalid_socket_id"},
		{"socket_id with two dots", "POST", pubPath, withTok(pub, json1), `{"event":"A","socket_id":"1.2.3"}`, 400, "invalid_socket_id"},
		{"stream since=foo", "GET", pubPath + "?since=foo", nil, "", 400, "invalid_since"},
		{"poll since=foo", "GET", pollPath(ch) + "?since=foo", nil, "", 400, "invalid_since"},
		{"poll timeout=999", "GET", pollPath(ch) + "?timeout=999", nil, "", 400, "invalid_timeout"},
		{"poll timeout=61", "GET", pollPath(ch) + "?timeout=61", nil, "", 400, "invalid_timeout"},
		{"poll timeout=abc", "GET", pollPath(ch) + "?timeout=abc", nil, "", 400, "invalid_timeout"},
		{"poll limit=0", "GET", pollPath(ch) + "?limit=0", nil, "", 400, "invalid_limit"},
		{"poll limit=-1", "GET", pollPath(ch) + "?limit=-1", nil, "", 400, "invalid_limit"},
		{"multi poll limit=0", "GET", "/v1/poll?channel=a&limit=0", nil, "", 400, "invalid_limit"},
		{"poll without channel", "GET", "/v1/poll", nil, "", 400, "channel_required"},
		{"stream with 101 channels", "GET", "/v1/stream?" + manyChannels.Encode(), nil, "", 400, "too_many_channels"},
		{"poll with 101 channels", "GET", "/v1/poll?" + manyChannels.Encode(), nil, "", 400, "too_many_channels"},
		// 401: missing or bad tokens.
		{"publish without token", "POST", pubPath, json1, `{"event":"A"}`, 401, "token_missing"},
		{"publish with garbage token", "POST", pubPath, withTok("garbage", json1), `{"event":"A"}`, 401, "token_invalid"},
		{"publish with garbage ?token=", "POST", pubPath + "?token=garbage", json1, `{"event":"A"}`, 401, "token_invalid"},
		{"publish with expired token", "POST", pubPath, withTok(expired, json1), `{"event":"A"}`, 401, "token_invalid"},
		{"publish with token of another secret", "POST", pubPath, withTok(otherSecret, json1), `{"event":"A"}`, 401, "token_invalid"},
		{"publish with alg none token", "POST", pubPath, withTok(algNone, json1), `{"event":"A"}`, 401, "token_invalid"},
		{"publish with HS384 token", "POST", pubPath, withTok(hs384, json1), `{"event":"A"}`, 401, "token_invalid"},
		{"publish with token without exp", "POST", pubPath, withTok(noExp, json1), `{"event":"A"}`, 401, "token_invalid"},
		{"test hook without token", "POST", "/v1/test", json1, `{"channel":"` + ch + `"}`, 401, "token_missing"},
		{"private stream without token", "GET", eventsPath("private-x"), nil, "", 401, "token_missing"},
		{"private poll without token", "GET", pollPath("private-x"), nil, "", 401, "token_missing"},
		{"private multi stream without token", "GET", "/v1/stream?channel=pub&channel=private-x", nil, "", 401, "token_missing"},
		{"private stream with expired token", "GET", eventsPath("private-ok1"), withTok(expired, nil), "", 401, "token_invalid"},
		{"private stream with garbage ?token=", "GET", eventsPath("private-ok1") + "?token=garbage", nil, "", 401, "token_invalid"},
		// 403: valid token, not allowed.
		{"publish without herald.publish match", "POST", pubPath, withTok(noPub, json1), `{"event":"A"}`, 403, "forbidden"},
		{"test hook without herald.publish match", "POST", "/v1/test", withTok(noPub, json1), `{"channel":"` + ch + `"}`, 403, "forbidden"},
		{"private stream without herald.subscribe match", "GET", eventsPath("private-x"), withTok(pub, nil), "", 403, "forbidden"},
		{"private stream, token in query", "GET", eventsPath("private-x") + "?token=" + pub, nil, "", 403, "forbidden"},
		{"private poll without herald.subscribe match", "GET", pollPath("private-x"), withTok(pub, nil), "", 403, "forbidden"},
		{"private multi stream without match", "GET", "/v1/stream?channel=private-ok1&channel=private-x", withTok(pub, nil), "", 403, "forbidden"},
		{"presence stream without match", "GET", eventsPath("presence-x"), withTok(pub, nil), "", 403, "forbidden"},
		// 413: body over --max-body-bytes.
		{"body over the limit", "POST", pubPath, withTok(pub, json1), `{"event":"A","data":"` + strings.Repeat("z", 2000) + `"}`, 413, "payload_too_large"},
		// 422: bad channel names.
		{"publish to `bad name`", "POST", eventsPath("bad name"), withTok(pub, json1), `{"event":"A"}`, 422, "invalid_channel"},
		{"publish to 165 chars", "POST", eventsPath(long165), withTok(pub, json1), `{"event":"A"}`, 422, "invalid_channel"},
		{"publish to non-ASCII", "POST", eventsPath("caf\u00e9"), withTok(pub, json1), `{"event":"A"}`, 422, "invalid_channel"},
		{"stream of `bad name`", "GET", eventsPath("bad name"), nil, "", 422, "invalid_channel"},
		{"stream of 165 chars", "GET", eventsPath(long165), nil, "", 422, "invalid_channel"},
		{"poll of `bad name`", "GET", pollPath("bad name"), nil, "", 422, "invalid_channel"},
		{"multi stream with `bad name`", "GET", "/v1/stream?" + url.Values{"channel": {"ok", "bad name"}}.Encode(), nil, "", 422, "invalid_channel"},
		{"multi poll with 165 chars", "GET", "/v1/poll?channel=" + long165, nil, "", 422, "invalid_channel"},
		{"test hook to `bad name`", "POST", "/v1/test", withTok(pub, json1), `{"channel":"bad name"}`, 422, "invalid_channel"},
		// 404 and 405.
		{"unknown route", "GET", "/v1/nope", nil, "", 404, "not_found"},
		{"unknown root route", "GET", "/index.html", nil, "", 404, "not_found"},
		{"unknown v2 route", "POST", "/v2/channels/a/events", withTok(pub, json1), `{"event":"A"}`, 404, "not_found"},
		{"wrong method", "PUT", pubPath, withTok(pub, json1), `{"event":"A"}`, 405, "method_not_allowed"},
	}
	for _, c := range cases {
		r := mustDo(t, c.method, h.Base+c.path, c.header, strings.NewReader(c.body))
		expectAPIError(t, c.name, r, c.status, c.code)
	}

	// A body over the limit sent without Content-Length (chunked) is refused too.
	r := mustDo(t, "POST", h.Base+pubPath, withTok(pub, json1), io.MultiReader(strings.NewReader(`{"event":"A","data":"`+strings.Repeat("z", 4000)+`"}`)))
	expectAPIError(t, "chunked body over the limit", r, 413, "payload_too_large")

	// What must succeed around those limits.
	okCases := []struct {
		name, path string
		status     int
	}{
		{"164-char channel", eventsPath(long164), 201},
		{"every allowed character", eventsPath("A-Za-z0-9_-=@,.;"), 201},
	}
	for _, c := range okCases {
		r := mustDo(t, "POST", h.Base+c.path, withTok(pub, json1), strings.NewReader(`{"event":"A"}`))
		if r.Status != c.status {
			t.Errorf("%s: want %d, got %s", c.name, c.status, r)
		}
	}
	if r := mustDo(t, "GET", h.Base+"/v1/stream?"+hundred.Encode()+"&since=foo", nil, nil); r.Status != 400 {
		t.Errorf("100 channels must be accepted (checked via since=foo → 400 invalid_since): %s", r)
	} else {
		expectAPIError(t, "100 channels with since=foo", r, 400, "invalid_since")
	}
	if s, err := openSSE(h.Base+eventsPath("private-ok1")+"?token="+url.QueryEscape(pub), nil); err != nil {
		t.Errorf("private stream with a matching ?token=: %v", err)
	} else {
		s.Close()
	}
	if r := mustDo(t, "POST", h.Base+"/v1/test", withTok(pub, json1), strings.NewReader(`{"channel":"`+ch+`"}`)); r.Status != 201 {
		t.Errorf("POST /v1/test with a publish token: want 201, got %s", r)
	}

	// Idempotency-Key: a true repeat is 200 with the same id and appends nothing; the same key
	// with another body is 409.
	idem := uniqueChannel("idem")
	key := http.Header{"Idempotency-Key": {"order-42"}}
	first, err := h.publishBody(pub, idem, []byte(`{"event":"OrderPlaced","data":{"id":42}}`), key)
	if err != nil {
		t.Fatal(err)
	}
	var p1 publishReply
	if first.Status != 201 || strictJSON(first.Body, &p1) != nil {
		t.Fatalf("first publish with Idempotency-Key: want 201, got %s", first)
	}
	for i := 0; i < 2; i++ {
		again, err := h.publishBody(pub, idem, []byte(`{"event":"OrderPlaced","data":{"id":42}}`), key)
		if err != nil {
			t.Fatal(err)
		}
		var p2 publishReply
		if again.Status != 200 || strictJSON(again.Body, &p2) != nil || p2 != p1 {
			t.Errorf("repeat %d with the same Idempotency-Key and body: want 200 %s, got %s", i+1, first.Body, again)
		}
	}
	conflict, err := h.publishBody(pub, idem, []byte(`{"event":"OrderPlaced","data":{"id":43}}`), key)
	if err != nil {
		t.Fatal(err)
	}
	expectAPIError(t, "same Idempotency-Key, different body", conflict, 409, "idempotency_conflict")
	// Keys are scoped to the channel: the same key elsewhere is a new event.
	otherCh, err := h.publishBody(pub, idem+"-b", []byte(`{"event":"OrderPlaced","data":{"id":43}}`), key)
	if err != nil || otherCh.Status != 201 {
		t.Errorf("same Idempotency-Key on another channel: want 201, got %v %v", otherCh, err)
	}
	hist := h.mustPoll(t, pollPath(idem), url.Values{"since": {"beginning"}}, "")
	if len(hist.Events) != 1 {
		t.Errorf("after one publish, two repeats and a conflict with one Idempotency-Key: want 1 event in history, got %d: %s", len(hist.Events), hist.Events)
	} else if e, _ := parseEnvelope(hist.Events[0]); e.ID != p1.ID || string(e.Data) != `{"id":42}` {
		t.Errorf("idempotent history event: %s", hist.Events[0])
	}
}

// TestExpiredTokenClosesStream: a stream opened with a token that expires in ~4 s ends with an
// `event: herald:error` token_expired frame.
func TestExpiredTokenClosesStream(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--heartbeat", "1s"}})
	ch := "private-" + randomSuffix()
	exp := time.Now().Add(4 * time.Second)
	tok := tokenClaims(t, h.Secret, jwt.MapClaims{"sub": "u", "exp": exp.Unix(), "herald.subscribe": []string{"private-*"}})
	streams := []*sseStream{
		mustSSE(t, h.Base+eventsPath(ch), bearerHeader(tok)),
		mustSSE(t, h.Base+"/v1/stream?"+url.Values{"channel": {ch, "public-" + randomSuffix()}, "token": {tok}}.Encode(), nil),
	}
	for _, s := range streams {
		s.expectPreamble(t)
	}
	// It still works until then.
	id := h.mustPublish(t, h.Publisher(t), ch, "Tick", map[string]int{"n": 1})
	for _, s := range streams {
		if g := s.mustEvents(t, 1, 5*time.Second)[0]; g.Env.ID != id {
			t.Errorf("%s: got %q, want %q", s.URL, g.Env.ID, id)
		}
	}
	for _, s := range streams {
		f := s.mustEvent(t, time.Until(exp)+10*time.Second)
		if f.Event != "herald:error" || f.HasID {
			t.Fatalf("%s: want an `event: herald:error` frame without id when the token expires, got %q", s.URL, f.Raw)
		}
		var e struct{ Code, Message string }
		if err := strictJSON([]byte(f.Data), &e); err != nil || e.Code != "token_expired" || e.Message == "" {
			t.Errorf("%s: herald:error data = %s, want {\"code\":\"token_expired\",\"message\":…}", s.URL, f.Data)
		}
		if rest, err := s.waitEnd(5 * time.Second); err != nil {
			t.Errorf("%s: stream still open 5s after herald:error token_expired", s.URL)
		} else {
			for _, r := range rest {
				if !r.CommentOnly() {
					t.Errorf("%s: frame after herald:error: %q", s.URL, r.Raw)
				}
			}
		}
		if el := time.Since(exp); el > 10*time.Second {
			t.Errorf("%s: stream ended %v after the token's exp", s.URL, el)
		}
	}
	// Reconnecting with the expired token is refused.
	// Reconnecting with the expired token never gives a working stream: either a 401, or
	// (within the server's clock-skew leeway) a stream that ends at once with token_expired.
	s, err := openSSE(h.Base+eventsPath(ch), bearerHeader(tok))
	var se *statusError
	switch {
	case asStatus(err, &se):
		expectAPIError(t, "reconnect with the expired token", se.r, 401, "token_invalid")
	case err != nil:
		t.Errorf("reconnect with the expired token: %v", err)
	default:
		t.Cleanup(s.Close)
		s.expectPreamble(t)
		rest, err := s.waitEnd(3 * time.Second)
		if err != nil || len(rest) == 0 || rest[0].Event != "herald:error" || !strings.Contains(rest[0].Data, `"token_expired"`) {
			t.Errorf("reconnect with the expired token was accepted (200) and did not end at once with herald:error token_expired: frames %q, %v", rawFrames(rest), err)
		} else {
			t.Logf("note: a reconnect with the just-expired token got 200 and an immediate herald:error (JWT leeway) instead of a 401")
		}
	}
}

// TestToOthers: a publish with the socket_id of a subscriber skips that subscriber only.
func TestToOthers(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{})
	tok := h.Publisher(t)
	ch := uniqueChannel("others")
	me := mustSSE(t, h.Base+eventsPath(ch), nil)
	meHello := me.expectPreamble(t)
	other := mustSSE(t, h.Base+eventsPath(ch), nil)
	other.expectPreamble(t)
	multi := mustSSE(t, h.Base+"/v1/stream?channel="+ch, nil)
	multiHello := multi.expectPreamble(t)

	send := func(socketID string, n int) string {
		body, _ := json.Marshal(map[string]any{"event": "MessageSent", "data": map[string]int{"n": n}, "socket_id": socketID})
		r, err := h.publishBody(tok, ch, body, nil)
		if err != nil {
			t.Fatal(err)
		}
		var pr publishReply
		if r.Status != 201 || strictJSON(r.Body, &pr) != nil {
			t.Fatalf("publish with socket_id %s: want 201, got %s", socketID, r)
		}
		return pr.ID
	}
	x := send(meHello.SocketID, 1) // toOthers from "me"
	y := h.mustPublish(t, tok, ch, "MessageSent", map[string]int{"n": 2})
	z := send(multiHello.SocketID, 3)  // toOthers from the multi-channel socket
	w := send("999999999999.12345", 4) // a socket id nobody has

	if got := ids(me.mustEvents(t, 3, 10*time.Second)); !slices.Equal(got, []string{y, z, w}) {
		t.Errorf("excluded subscriber: got %v, want %v (without its own %s)", got, []string{y, z, w}, x)
	}
	if got := ids(other.mustEvents(t, 4, 10*time.Second)); !slices.Equal(got, []string{x, y, z, w}) {
		t.Errorf("other subscriber: got %v, want %v", got, []string{x, y, z, w})
	}
	if got := envIDs(multi.mustEvents(t, 3, 10*time.Second)); !slices.Equal(got, []string{x, y, w}) {
		t.Errorf("multi-channel subscriber: got %v, want %v (without its own %s)", got, []string{x, y, w}, z)
	}
	me.expectQuiet(t, 100*time.Millisecond)
	multi.expectQuiet(t, 100*time.Millisecond)
}

func ids(rs []received) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.LineID
	}
	return out
}

func envIDs(rs []received) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Env.ID
	}
	return out
}

// TestShutdown: without a drain (--drain-period 0), SIGTERM ends every open stream at once
// with a final jittered `retry:` frame, answers waiting long-polls, and the process exits 0
// within its shutdown timeout. (The drain: TestDrainMovesClientsWithoutLoss.)
func TestShutdown(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--shutdown-timeout", "5s", "--retry", "1s", "--drain-period", "0"}})
	tok := h.Publisher(t)
	ch := uniqueChannel("bye")
	priv := "private-" + randomSuffix()
	var streams []*sseStream
	for i := 0; i < 3; i++ {
		streams = append(streams, mustSSE(t, h.Base+eventsPath(ch), nil))
	}
	streams = append(streams,
		mustSSE(t, h.Base+"/v1/stream?"+url.Values{"channel": {ch, priv}}.Encode(), bearerHeader(tok)),
		mustSSE(t, h.Base+eventsPath(priv)+"?since=beginning", bearerHeader(tok)))
	for _, s := range streams {
		s.expectPreamble(t)
	}
	h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 1})
	for _, s := range streams[:4] {
		s.mustEvents(t, 1, 5*time.Second)
	}
	head := h.mustPoll(t, pollPath(ch), nil, "").Cursor
	waiting := pollInFlight(t, h, pollPath(ch), url.Values{"timeout": {"30"}, "cursor": {head}})

	sent := time.Now()
	h.Signal(syscall.SIGTERM)
	var retries []string
	for _, s := range streams {
		rest, err := s.waitEnd(3 * time.Second)
		if err != nil {
			t.Errorf("%s: still open 3s after SIGTERM", s.URL)
			continue
		}
		var last *frame
		for i := range rest {
			if !rest[i].CommentOnly() {
				last = &rest[i]
			}
		}
		if last == nil || !last.HasRetry || last.HasData || last.HasID || last.Raw != "retry: "+last.Retry+"\n\n" {
			t.Errorf("%s: the stream must end with a `retry: <ms>` frame, got frames %q", s.URL, rawFrames(rest))
			continue
		}
		if ms, err := strconv.Atoi(last.Retry); err != nil || ms <= 0 {
			t.Errorf("%s: bad final retry %q", s.URL, last.Retry)
		}
		retries = append(retries, last.Retry)
	}
	if len(retries) == len(streams) && len(slices.Compact(slices.Sorted(slices.Values(retries)))) == 1 {
		t.Errorf("every stream got the same final retry %s: it must be jittered so clients spread their reconnects", retries[0])
	}
	t.Logf("final retry values: %v; streams ended within %v", retries, time.Since(sent))
	code, exited := h.WaitExit(5*time.Second + 2*time.Second)
	if !exited {
		t.Fatalf("herald did not exit within the 5s shutdown timeout (+2s) after SIGTERM")
	}
	if code != 0 {
		t.Errorf("herald exit code after SIGTERM = %d, want 0", code)
	}
	t.Logf("exited %v after SIGTERM", time.Since(sent))
	res := <-waiting
	switch {
	case res.r.Status == 0:
		t.Errorf("a waiting long-poll got no answer at shutdown: %v", res.err)
	case res.r.Status == 503:
		expectAPIError(t, "long-poll at shutdown", res.r, 503, "shutting_down")
	case res.r.Status != 200:
		t.Errorf("long-poll at shutdown: want 200 or 503, got %s", res.r)
	}
}

func rawFrames(fs []frame) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Raw
	}
	return out
}

// TestTokenNotLogged: a token passed as ?token= (EventSource cannot set headers) or in the
// Authorization header never appears in the server's logs.
func TestTokenNotLogged(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--log-level", "debug"}})
	tok := h.Token(t, "u1", []string{"private-*"}, []string{"*"}, time.Hour)
	bad := tok[:len(tok)-4] + "AAAA" // same header and claims, wrong signature
	ch := "private-" + randomSuffix()
	s := mustSSE(t, h.Base+eventsPath(ch)+"?token="+tok, nil)
	s.expectPreamble(t)
	h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 1})
	s.mustEvents(t, 1, 10*time.Second)
	s.Close()
	mustDo(t, http.MethodGet, h.Base+pollPath(ch)+"?timeout=0&since=beginning&token="+tok, nil, nil)
	mustDo(t, http.MethodGet, h.Base+"/v1/poll?channel="+ch+"&token="+url.QueryEscape(tok), nil, nil)
	mustDo(t, http.MethodGet, h.Base+pollPath(ch)+"?token="+bad, nil, nil)
	mustDo(t, http.MethodPost, h.Base+eventsPath(ch)+"?token="+tok, nil, strings.NewReader(`{"event":"A"}`))
	mustDo(t, http.MethodPost, h.Base+eventsPath(ch), bearerHeader(bad), strings.NewReader(`{"event":"A"}`))
	// A last request fences the log: its line comes after every line of the requests before it.
	mustDo(t, http.MethodGet, h.Base+"/v1/health?fence=1", nil, nil)
	if !testkit.WaitFor(5*time.Second, func() bool { return strings.Contains(h.logs.String(), "fence=1") }) {
		t.Fatalf("herald did not log the fencing request:\n%s", h.logs.String())
	}
	logs := h.logs.String()
	sig := tok[strings.LastIndexByte(tok, '.')+1:]
	for what, secret := range map[string]string{"a token": tok, "a token's signature": sig, "a bad token's signature": bad[strings.LastIndexByte(bad, '.')+1:], "the JWT secret": string(h.Secret)} {
		if strings.Contains(logs, secret) {
			t.Errorf("%s appears in the server's log:\n%s", what, logs)
		}
	}
}

// TestSlowSubscriberDoesNotStall: a client that stops reading is cut off; the publisher and
// the other subscribers never wait for it.
func TestSlowSubscriberDoesNotStall(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--queue-size", "16", "--write-timeout", "2s", "--log-level", "warn"}})
	tok := h.Publisher(t)
	ch := uniqueChannel("slow")

	// The stuck client: a raw connection with a tiny receive buffer that reads only the headers.
	conn, err := net.DialTimeout("tcp", h.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", eventsPath(ch), h.Addr)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	head := make([]byte, 512)
	if n, err := conn.Read(head); err != nil || !strings.HasPrefix(string(head[:n]), "HTTP/1.1 200") {
		t.Fatalf("stuck client: %q %v", head[:n], err)
	}

	good := mustSSE(t, h.Base+eventsPath(ch), nil)
	good.expectPreamble(t)
	big := strings.Repeat("x", 4000)
	const n = 1500
	var ids []string
	var slowest time.Duration
	start := time.Now()
	for i := 0; i < n; i++ {
		st := time.Now()
		ids = append(ids, h.mustPublish(t, tok, ch, "Big", map[string]any{"n": i, "pad": big}))
		slowest = max(slowest, time.Since(st))
	}
	t.Logf("%d publishes of 4 KB in %v, slowest %v", n, time.Since(start), slowest)
	if slowest > 2*time.Second {
		t.Errorf("a publish took %v while a subscriber was stuck: the publisher must never wait for subscribers", slowest)
	}
	got, reconnects, err := readResuming(good, h.Base+eventsPath(ch), n, 60*time.Second)
	if err != nil {
		t.Fatalf("reading subscriber: %v", err)
	}
	if reconnects > 0 {
		t.Logf("the reading subscriber was dropped and resumed %d times", reconnects)
	}
	for i, g := range got {
		if g.LineID != ids[i] {
			t.Fatalf("reading subscriber: event %d is %q, want %q", i, g.LineID, ids[i])
		}
	}
	// The stuck client is cut off: reading now drains what was buffered, then the end.
	conn.(*net.TCPConn).SetReadBuffer(1 << 20)
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	total, err := io.Copy(io.Discard, conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("the stuck client's connection was still open %v after the burst (read %d bytes)", 20*time.Second, total)
	} else if total >= int64(n*4000) {
		t.Errorf("the stuck client got the whole burst (%d bytes): it was never cut off", total)
	} else {
		t.Logf("the stuck client was cut off after %d bytes", total)
	}
}
