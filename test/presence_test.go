package test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// presenceToken is a JWT whose sub and herald.user_info are the presence identity.
func presenceToken(t *testing.T, h *herald, user, name string) string {
	return tokenClaims(t, h.Secret, jwt.MapClaims{
		"sub":              user,
		"exp":              time.Now().Add(time.Hour).Unix(),
		"herald.subscribe": []string{"presence-*"},
		"herald.user_info": map[string]string{"name": name},
	})
}

// joinPresence opens a stream socket on node h and joins channel as the token's user,
// sending the subscription call to node via.
func joinPresence(t *testing.T, h, via *herald, channel, tok string) (*sseStream, connected) {
	t.Helper()
	s := mustSSE(t, h.Base+"/v1/stream", nil)
	c := s.expectPreamble(t)
	hdr := socketHeader(c.SocketToken)
	hdr.Set("Authorization", "Bearer "+tok)
	r := mustDo(t, "POST", via.Base+"/v1/sockets/"+c.SocketID+"/subscriptions", hdr, strings.NewReader(`{"channel":"`+channel+`"}`))
	if r.Status != http.StatusOK {
		t.Fatalf("join %s on %s via %s: %s", channel, h.name, via.name, r)
	}
	if f := s.mustEvent(t, 10*time.Second); f.Event != "herald:subscription_succeeded" || !strings.Contains(f.Data, `"presence":`) {
		t.Fatalf("want the presence notice, got %q", f.Raw)
	}
	return s, c
}

// TestClusterPresence: members are one set across nodes, a user with several sockets counts
// once, and the members of a node that dies are announced gone by the others.
func TestClusterPresence(t *testing.T) {
	t.Parallel()
	clusterPresence(t, oneRedis)
}

func clusterPresence(t *testing.T, on backend) {
	a, b := startCluster(t, on, "--presence-ttl", "2s")
	ch := "presence-" + uniqueChannel("room")
	annA := presenceToken(t, a, "ann", "Ann")
	bob := presenceToken(t, b, "bob", "Bob")

	sa, _ := joinPresence(t, a, b, ch, annA) // Ann on node A, the call sent to node B
	sb, _ := joinPresence(t, b, b, ch, bob)  // Bob on node B
	if f := sa.mustEvent(t, 10*time.Second); f.Event != "herald:member_added" || !strings.Contains(f.Data, `"user_id":"bob"`) || !strings.Contains(f.Data, `"name":"Bob"`) {
		t.Fatalf("Ann on node A: want member_added for Bob from node B, got %q", f.Raw)
	}
	// Ann opens a second tab, on node B: nobody hears of a new member.
	sa2, _ := joinPresence(t, b, b, ch, annA)
	sb.expectQuiet(t, 300*time.Millisecond)

	members := func(h *herald) string {
		r := mustDo(t, "GET", h.Base+"/v1/channels/"+ch+"/members", bearerHeader(bob), nil)
		if r.Status != http.StatusOK {
			t.Fatalf("members on %s: %s", h.name, r)
		}
		return string(r.Body)
	}
	if m := members(a); !strings.Contains(m, `"count":2`) {
		t.Fatalf("members seen from node A: %s", m)
	}

	// Node A dies without a word: Ann still has her tab on node B, so she stays.
	a.Kill()
	sb.expectQuiet(t, 3*time.Second)
	if m := members(b); !strings.Contains(m, `"count":2`) || !strings.Contains(m, `"ann"`) {
		t.Fatalf("after node A died, with Ann's second tab on B: %s", m)
	}
	// Her last tab goes: Bob hears she left.
	sa2.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		f, err := sb.nextEvent(time.Until(deadline))
		if err != nil {
			t.Fatalf("Bob never heard Ann leave: %v (members: %s)", err, members(b))
		}
		if f.Event == "herald:member_removed" {
			if !strings.Contains(f.Data, `"user_id":"ann"`) {
				t.Fatalf("member_removed for the wrong user: %q", f.Raw)
			}
			break
		}
	}
	if m := members(b); !strings.Contains(m, `"count":1`) {
		t.Fatalf("members at the end: %s", m)
	}
}

// TestClusterPresenceNodeDeath: the only socket of a user is on a node that dies; the
// surviving node announces member_removed once the membership's lease runs out.
func TestClusterPresenceNodeDeath(t *testing.T) {
	t.Parallel()
	a, b := startCluster(t, oneRedis, "--presence-ttl", "2s")
	ch := "presence-" + uniqueChannel("death")
	joinPresence(t, a, a, ch, presenceToken(t, a, "ann", "Ann"))
	sb, _ := joinPresence(t, b, b, ch, presenceToken(t, b, "bob", "Bob"))
	a.Kill()
	start := time.Now()
	f, err := sb.nextEvent(20 * time.Second)
	if err != nil || f.Event != "herald:member_removed" || !strings.Contains(f.Data, `"user_id":"ann"`) {
		t.Fatalf("after node A died: want member_removed for Ann, got %q (%v)", f.Raw, err)
	}
	t.Logf("member_removed %v after the node died (lease 2s)", time.Since(start).Round(100*time.Millisecond))
}
