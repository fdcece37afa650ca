package test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// backend is the Redis a test's herald nodes share, as the serve flags that point a node at it.
type backend func(t testing.TB) []string

// oneRedis is the test binary's shared redis-server.
func oneRedis(t testing.TB) []string { return []string{"--redis-url", testRedis(t)} }

// startCluster starts two herald processes on the backend with the same key prefix (unique to
// the test) and the same JWT secret: two nodes of one deployment.
func startCluster(t *testing.T, on backend, extra ...string) (a, b *herald) {
	t.Helper()
	nodes := startNodes(t, on, 2, extra...)
	for _, n := range nodes {
		r := mustDo(t, "GET", n.Base+"/v1/health", nil, nil)
		if r.Status != 200 || !strings.Contains(string(r.Body), `"store":"redis"`) {
			t.Fatalf("%s on Redis: GET /v1/health = %s, want 200 with \"store\":\"redis\"", n.name, r)
		}
	}
	return nodes[0], nodes[1]
}

// startNodes starts n nodes of one deployment on the backend.
func startNodes(t *testing.T, on backend, n int, extra ...string) []*herald {
	t.Helper()
	prefix := fmt.Sprintf("herald-e2e-%s-%s:", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), randomSuffix())
	secret := randomSecret()
	args := append(append(on(t), "--redis-prefix", prefix), extra...)
	nodes := make([]*herald, n)
	for i := range nodes {
		nodes[i] = startHerald(t, heraldOpts{name: fmt.Sprintf("node-%c", 'A'+i), secret: secret, args: args})
	}
	return nodes
}

// TestClusterPublishOtherNode: events published on either node reach subscribers of both
// nodes, each in the one order the publishes were acknowledged in.
func TestClusterPublishOtherNode(t *testing.T) {
	t.Parallel()
	clusterPublishOtherNode(t, oneRedis)
}

func clusterPublishOtherNode(t *testing.T, on backend) {
	a, b := startCluster(t, on)
	tok := a.Publisher(t)
	ch, other := uniqueChannel("cluster"), uniqueChannel("cluster-other")

	subs := []*sseStream{
		mustSSE(t, b.Base+eventsPath(ch), nil),
		mustSSE(t, a.Base+eventsPath(ch), nil),
		mustSSE(t, b.Base+"/v1/stream?"+url.Values{"channel": {ch, other}}.Encode(), nil),
	}
	for _, s := range subs {
		s.expectPreamble(t)
	}
	const n = 300
	ids := make([]string, 0, n)
	for i := 0; i < n; i++ {
		node := a
		if i%3 == 2 {
			node = b // mostly A, sometimes B: one total order either way
		}
		ids = append(ids, node.mustPublish(t, tok, ch, "Tick", map[string]int{"n": i}))
	}
	for k, s := range subs {
		got := s.mustEvents(t, n, 30*time.Second)
		for j, g := range got {
			if g.Env.ID != ids[j] || g.N != j {
				t.Fatalf("subscriber %d (%s): event %d is %q n=%d, want %q n=%d", k, s.URL, j, g.Env.ID, g.N, ids[j], j)
			}
		}
		s.expectQuiet(t, 100*time.Millisecond)
	}

	// History written through A is B's history: since=beginning and Last-Event-ID on B.
	sb := mustSSE(t, b.Base+eventsPath(ch)+"?since=beginning", nil)
	sb.expectPreamble(t)
	if got := ids2(sb.mustEvents(t, n, 30*time.Second)); !slices.Equal(got, ids) {
		t.Errorf("since=beginning on node B: history differs from what was published")
	}
	sr := mustSSE(t, b.Base+eventsPath(ch), lastEventHeader(ids[100]))
	sr.expectPreamble(t)
	if got := ids2(sr.mustEvents(t, n-101, 30*time.Second)); !slices.Equal(got, ids[101:]) {
		t.Errorf("resume on node B from a cursor node A sent: got %d events, not exactly the %d after it", len(got), n-101)
	}

	// Idempotency holds across nodes: a retry sent to the other node is the same event.
	key := map[string][]string{"Idempotency-Key": {"k-" + randomSuffix()}}
	body := []byte(`{"event":"Once","data":{"x":1}}`)
	r1, err := a.publishBody(tok, other, body, key)
	if err != nil || r1.Status != 201 {
		t.Fatalf("idempotent publish on A: %v %v", r1, err)
	}
	r2, err := b.publishBody(tok, other, body, key)
	if err != nil || r2.Status != 200 || string(r2.Body) != string(r1.Body) {
		t.Errorf("the same Idempotency-Key retried on node B: want 200 %s, got %v %v", r1.Body, r2, err)
	}
}

func ids2(rs []received) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Env.ID
	}
	return out
}

// TestClusterPollContinuesOnOtherNode: a long-poll chain started on node A and continued on
// node B with A's cursor gets exactly the rest, and a poll waiting on B is woken by a publish
// on A.
func TestClusterPollContinuesOnOtherNode(t *testing.T) {
	t.Parallel()
	clusterPollContinuesOnOtherNode(t, oneRedis)
}

func clusterPollContinuesOnOtherNode(t *testing.T, on backend) {
	a, b := startCluster(t, on)
	tok := a.Publisher(t)
	ch, ch2 := uniqueChannel("cpoll"), uniqueChannel("cpoll2")
	ids := a.publishN(t, tok, ch, "Tick", 0, 50)

	p1 := a.mustPoll(t, pollPath(ch), url.Values{"cursor": {ids[9]}, "limit": {"15"}, "timeout": {"5"}}, "")
	var got []string
	for _, raw := range p1.Events {
		e, _ := parseEnvelope(raw)
		got = append(got, e.ID)
	}
	if !slices.Equal(got, ids[10:25]) || p1.Cursor != ids[24] {
		t.Fatalf("poll on A after event 9, limit 15: got %v cursor %s, want %v cursor %s", got, p1.Cursor, ids[10:25], ids[24])
	}
	p2 := b.mustPoll(t, pollPath(ch), url.Values{"cursor": {p1.Cursor}, "limit": {"100"}, "timeout": {"5"}}, "")
	got = got[:0]
	for _, raw := range p2.Events {
		e, _ := parseEnvelope(raw)
		got = append(got, e.ID)
	}
	if !slices.Equal(got, ids[25:]) || p2.Cursor != ids[49] {
		t.Fatalf("poll continued on B with A's cursor: got %d events cursor %s, want exactly the %d after it, cursor %s", len(got), p2.Cursor, 25, ids[49])
	}
	if len(p2.Resync) > 0 {
		t.Errorf("poll continued on B: unexpected resync %+v", p2.Resync)
	}

	// A poll waiting on B is answered by a publish on A.
	done := pollInFlight(t, b, pollPath(ch), url.Values{"cursor": {p2.Cursor}, "timeout": {"20"}})
	live := a.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 50})
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if len(r.a.Events) != 1 || r.a.Cursor != live {
			t.Errorf("poll waiting on B, publish on A: got %s cursor %s, want [%s]", r.a.Events, r.a.Cursor, live)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a poll waiting on node B was not answered within 15s of a publish on node A")
	}

	// Multi-channel poll chain alternating between the nodes.
	m := a.mustPoll(t, "/v1/poll", url.Values{"channel": {ch, ch2}}, "")
	want := map[string][]string{}
	for i := 0; i < 20; i++ {
		c, node := ch, a
		if i%2 == 1 {
			c, node = ch2, b
		}
		want[c] = append(want[c], node.mustPublish(t, tok, c, "Tick", map[string]int{"n": 100 + i}))
	}
	gotBy := map[string][]string{}
	cursor := m.Cursor
	for i := 0; i < 20; i++ {
		node := []*herald{a, b}[i%2]
		p := node.mustPoll(t, "/v1/poll", url.Values{"channel": {ch, ch2}, "cursor": {cursor}, "limit": {"3"}, "timeout": {"0"}}, "")
		if len(p.Events) == 0 {
			break
		}
		for _, raw := range p.Events {
			e, _ := parseEnvelope(raw)
			gotBy[e.Channel] = append(gotBy[e.Channel], e.ID)
		}
		cursor = p.Cursor
	}
	for _, c := range []string{ch, ch2} {
		if !slices.Equal(gotBy[c], want[c]) {
			t.Errorf("multi-channel poll chain alternating nodes, channel %s: got %v, want %v", c, gotBy[c], want[c])
		}
	}
}

// TestClusterStreamResumeOnOtherNode: an SSE client whose node dies resumes on the other node
// with its last id and loses nothing.
func TestClusterStreamResumeOnOtherNode(t *testing.T) {
	t.Parallel()
	clusterStreamResumeOnOtherNode(t, oneRedis)
}

func clusterStreamResumeOnOtherNode(t *testing.T, on backend) {
	a, b := startCluster(t, on)
	tok := b.Publisher(t)
	ch := uniqueChannel("failover")
	s := mustSSE(t, a.Base+eventsPath(ch), nil)
	s.expectPreamble(t)
	ids := b.publishN(t, tok, ch, "Tick", 0, 20)
	got := s.mustEvents(t, 20, 10*time.Second)
	if !slices.Equal(ids2(got), ids) {
		t.Fatalf("node A subscriber, publishes on B: got %v, want %v", ids2(got), ids)
	}
	a.Kill()
	if _, err := s.waitEnd(5 * time.Second); err != nil {
		t.Fatalf("stream on node A did not end when A was killed")
	}
	more := b.publishN(t, tok, ch, "Tick", 20, 10)
	s2 := mustSSE(t, b.Base+eventsPath(ch), lastEventHeader(got[len(got)-1].LineID))
	s2.expectPreamble(t)
	rest := s2.mustEvents(t, 10, 10*time.Second)
	if !slices.Equal(ids2(rest), more) {
		t.Errorf("resumed on B after A died: got %v, want %v", ids2(rest), more)
	}
	s2.expectQuiet(t, 100*time.Millisecond)
}

// TestClusterResyncAfterTrim: with a small history on Redis (trimmed approximately), resuming
// on the other node from an early cursor never skips silently: either the exact rest, or
// herald:resync and then everything from the oldest retained event.
func TestClusterResyncAfterTrim(t *testing.T) {
	t.Parallel()
	a, b := startCluster(t, oneRedis, "--history-size", "10")
	tok := a.Publisher(t)
	ch := uniqueChannel("ctrim")
	const n = 400 // far past any approximate trimming slack
	ids := a.publishN(t, tok, ch, "Tick", 0, n)

	hist := b.mustPoll(t, pollPath(ch), url.Values{"since": {"beginning"}, "limit": {"1000"}}, "")
	if len(hist.Events) == 0 || len(hist.Events) == n {
		t.Fatalf("--history-size 10 on Redis kept %d of %d events", len(hist.Events), n)
	}
	oldest, _ := parseEnvelope(hist.Events[0])
	oldestIdx := slices.Index(ids, oldest.ID)
	if oldestIdx < 0 || oldestIdx+len(hist.Events) != n {
		t.Fatalf("since=beginning on B is not a suffix of what A published: oldest %q, %d events", oldest.ID, len(hist.Events))
	}

	s := mustSSE(t, b.Base+eventsPath(ch), lastEventHeader(ids[1]))
	s.expectPreamble(t)
	f := s.mustEvent(t, 10*time.Second)
	if f.Event != "herald:resync" {
		t.Fatalf("resume on B from a trimmed cursor: first frame must be herald:resync, got %q", f.Raw)
	}
	var rs resyncNotice
	if err := strictJSON([]byte(f.Data), &rs); err != nil || !slices.Equal(rs.Channels, []string{ch}) || rs.Reason != "history_expired" || rs.Cursor == "" {
		t.Errorf("herald:resync data %s (%v)", f.Data, err)
	}
	rest := s.mustEvents(t, n-oldestIdx, 15*time.Second)
	if !slices.Equal(ids2(rest), ids[oldestIdx:]) {
		t.Errorf("after resync on B: not exactly the retained events from the oldest on")
	}
	p := a.mustPoll(t, pollPath(ch), url.Values{"cursor": {ids[1]}, "limit": {"1000"}, "timeout": {"0"}}, "")
	if len(p.Resync) != 1 || len(p.Events) != n-oldestIdx {
		t.Errorf("poll on A from a trimmed cursor: want one resync and %d events, got %+v and %d events", n-oldestIdx, p.Resync, len(p.Events))
	}
}
