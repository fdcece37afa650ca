package test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestClusterWhispers: typing indicators go live to the channel's other subscribers on every
// node, never back to the sender, never into history, and only within the rules.
func TestClusterWhispers(t *testing.T) {
	t.Parallel()
	clusterWhispers(t, oneRedis)
}

func clusterWhispers(t *testing.T, on backend) {
	a, b := startCluster(t, on)
	ch := "presence-" + uniqueChannel("typing")
	ann := presenceToken(t, a, "ann", "Ann")
	sa, ca := joinPresence(t, a, a, ch, ann)
	sb, _ := joinPresence(t, b, b, ch, presenceToken(t, b, "bob", "Bob"))
	sa.mustEvent(t, 10*time.Second) // Bob's member_added
	outsider := mustSSE(t, b.Base+"/v1/stream", nil)
	co := outsider.expectPreamble(t)

	whisper := func(via *herald, c connected, channel, body string) reply {
		return mustDo(t, "POST", via.Base+"/v1/channels/"+channel+"/whispers?socket_id="+url.QueryEscape(c.SocketID),
			socketHeader(c.SocketToken), strings.NewReader(body))
	}
	// Ann (on node A) whispers through node B; Bob (on node B) hears it, with her user id.
	if r := whisper(b, ca, ch, `{"event":"client-typing","data":{"typing":true}}`); r.Status != http.StatusOK {
		t.Fatalf("whisper: %s", r)
	}
	f := sb.mustEvent(t, 10*time.Second)
	if f.Event != "client-typing" || f.HasID || f.Data != `{"channel":"`+ch+`","event":"client-typing","data":{"typing":true},"user_id":"ann"}` {
		t.Fatalf("Bob got %q", f.Raw)
	}
	sa.expectQuiet(t, 300*time.Millisecond) // never back to the sender

	expectAPIError(t, "not subscribed", whisper(b, co, ch, `{"event":"client-typing"}`), http.StatusForbidden, "not_subscribed")
	expectAPIError(t, "public channel", whisper(a, ca, uniqueChannel("public"), `{"event":"client-typing"}`), http.StatusForbidden, "client_events_not_allowed")
	expectAPIError(t, "name without client-", whisper(a, ca, ch, `{"event":"typing"}`), http.StatusBadRequest, "invalid_event")
	limited := false
	for range 30 {
		if r := whisper(a, ca, ch, `{"event":"client-typing"}`); r.Status == http.StatusTooManyRequests {
			expectAPIError(t, "flood", r, http.StatusTooManyRequests, "rate_limited")
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("30 whispers in a burst were all accepted (limit 10/s)")
	}

	// Whispers are not events: nothing of them is in the channel's history.
	pub := a.Publisher(t)
	poll := mustDo(t, "GET", a.Base+pollPath(ch)+"?since=beginning&timeout=0", bearerHeader(pub), nil)
	if poll.Status != http.StatusOK || strings.Contains(string(poll.Body), "client-typing") {
		t.Fatalf("history after whispers: %s", poll)
	}
}
