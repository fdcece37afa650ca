package test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Sockets are held by one node, but any node accepts the calls that act on them and reaches
// the owner through Redis: no sticky sessions.

func socketHeader(tok string) http.Header {
	return http.Header{"X-Herald-Socket-Token": {tok}, "Content-Type": {"application/json"}}
}

// TestClusterSocketCallsReachTheOwner: a stream socket on node A is subscribed, served and
// unsubscribed through node B; a socket whose node died is socket_gone.
func TestClusterSocketCallsReachTheOwner(t *testing.T) {
	t.Parallel()
	clusterSocketCallsReachTheOwner(t, oneRedis)
}

func clusterSocketCallsReachTheOwner(t *testing.T, on backend) {
	a, b := startCluster(t, on)
	tok := a.Publisher(t)
	ch := uniqueChannel("sock")
	first := a.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 1})

	s := mustSSE(t, a.Base+"/v1/stream", nil)
	hello := s.expectPreamble(t)
	if hello.Cursor != "c" {
		t.Fatalf("a stream without channels starts at cursor %q, want \"c\"", hello.Cursor)
	}
	subs := b.Base + "/v1/sockets/" + hello.SocketID + "/subscriptions"
	r := mustDo(t, "POST", subs, socketHeader(hello.SocketToken), strings.NewReader(`{"channel":"`+ch+`","cursor":"`+first+`"}`))
	if r.Status != http.StatusOK {
		t.Fatalf("subscribe through node B: %s", r)
	}
	// POST answered only once the owner applied it: the notice is already on its way.
	f := s.mustEvent(t, 10*time.Second)
	if f.Event != "herald:subscription_succeeded" || f.HasID || !strings.Contains(f.Data, `"channel":"`+ch+`"`) {
		t.Fatalf("want the subscription notice, got %q", f.Raw)
	}
	second := b.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 2})
	f = s.mustEvent(t, 10*time.Second)
	env, err := parseEnvelope([]byte(f.Data))
	if err != nil || env.ID != second || !strings.HasPrefix(f.ID, "c.") {
		t.Fatalf("want event %s with a composite id, got %q (%v)", second, f.Raw, err)
	}

	r = mustDo(t, "DELETE", subs+"/"+url.PathEscape(ch), socketHeader(hello.SocketToken), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("unsubscribe through node B: %s", r)
	}
	b.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 3})
	s.expectQuiet(t, 300*time.Millisecond)

	expectAPIError(t, "bad socket token through node B",
		mustDo(t, "POST", subs, socketHeader("forged"), strings.NewReader(`{"channel":"x"}`)), http.StatusUnauthorized, "socket_token_invalid")

	a.Kill()
	expectAPIError(t, "socket of a dead node",
		mustDo(t, "POST", subs, socketHeader(hello.SocketToken), strings.NewReader(`{"channel":"x"}`)), http.StatusNotFound, "socket_gone")
}

// TestClusterPollSocketOnEitherNode: a long-poll socket opened on node A is polled through
// node B and A alternately, and gets every event once, in order.
func TestClusterPollSocketOnEitherNode(t *testing.T) {
	t.Parallel()
	clusterPollSocketOnEitherNode(t, oneRedis)
}

func clusterPollSocketOnEitherNode(t *testing.T, on backend) {
	a, b := startCluster(t, on)
	tok := a.Publisher(t)
	ch := uniqueChannel("pollsock")
	r := mustDo(t, "POST", a.Base+"/v1/sockets", nil, nil)
	var sk struct {
		SocketID    string `json:"socket_id"`
		SocketToken string `json:"socket_token"`
		Cursor      string `json:"cursor"`
	}
	if r.Status != http.StatusCreated || strictJSON(r.Body, &sk) != nil {
		t.Fatalf("POST /v1/sockets: %s", r)
	}
	if r := mustDo(t, "POST", b.Base+"/v1/sockets/"+sk.SocketID+"/subscriptions", socketHeader(sk.SocketToken), strings.NewReader(`{"channel":"`+ch+`"}`)); r.Status != http.StatusOK {
		t.Fatalf("subscribe: %s", r)
	}
	const n = 40
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := b.publish(tok, ch, "Tick", map[string]int{"n": i}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	var seq uint64
	next := 0
	notices := 0
	for round := 0; next < n && round < 200; round++ {
		node := a
		if round%2 == 1 {
			node = b
		}
		q := url.Values{"socket_id": {sk.SocketID}, "timeout": {"2"}, "seq": {jsonNumber(seq)}}
		r := mustDo(t, "GET", node.Base+"/v1/poll?"+q.Encode(), socketHeader(sk.SocketToken), nil)
		var ans struct {
			Events []json.RawMessage `json:"events"`
			Cursor string            `json:"cursor"`
			Seq    uint64            `json:"seq"`
		}
		if r.Status != http.StatusOK || strictJSON(r.Body, &ans) != nil {
			t.Fatalf("poll through %s: %s", node.name, r)
		}
		for _, raw := range ans.Events {
			if strings.Contains(string(raw), `"event":"herald:subscription_succeeded"`) {
				notices++
				continue
			}
			env, err := parseEnvelope(raw)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := seqN(env.Data)
			if got != next {
				t.Fatalf("poll through %s: event n=%d, want n=%d", node.name, got, next)
			}
			next++
		}
		seq = ans.Seq
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if next != n || notices != 1 {
		t.Fatalf("got %d of %d events and %d notices", next, n, notices)
	}
}

func jsonNumber(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
