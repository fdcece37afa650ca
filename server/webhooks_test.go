package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWebhooksOnOneNode: a node on the memory store sends an app's webhooks as Pusher does —
// the body signed with the app's secret, the key in X-Pusher-Key — for a channel's life: its
// occupation, a member, a client event, the member leaving and the vacancy after the delay.
// (test/webhooks_test.go covers several nodes on Redis, with pusher's own validator.)
func TestWebhooksOnOneNode(t *testing.T) {
	var mu sync.Mutex
	var got []string
	var bad []string
	fail := 1 // the first request is refused: the same events must come again
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, []byte("secret-one-secret-one"))
		m.Write(body)
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("X-Pusher-Key") != "key-one" || r.Header.Get("X-Pusher-Signature") != hex.EncodeToString(m.Sum(nil)) ||
			r.Header.Get("Content-Type") != "application/json" {
			bad = append(bad, string(body))
		}
		if fail > 0 {
			fail--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var b struct {
			TimeMs int64 `json:"time_ms"`
			Events []struct {
				Name    string `json:"name"`
				Channel string `json:"channel"`
				UserID  string `json:"user_id"`
				Event   string `json:"event"`
				Data    string `json:"data"`
			} `json:"events"`
		}
		if err := json.Unmarshal(body, &b); err != nil || b.TimeMs == 0 {
			bad = append(bad, string(body))
		}
		for _, e := range b.Events {
			got = append(got, strings.TrimSpace(strings.Join([]string{e.Name, e.UserID, e.Event, e.Data}, " ")))
		}
	}))
	defer recv.Close()
	ts, apps := pusherServerWith(t, `
apps:
  - id: "1"
    key: key-one
    secret: secret-one-secret-one
    webhook_vacate_delay: 100ms
    webhooks:
      - url: `+recv.URL+`
        events: [channel_occupied, channel_vacated, member_added, member_removed, client_event]
`)
	app := apps["1"]
	events := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	waitFor := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !slices.Equal(events(), want) {
			if time.Now().After(deadline) || len(events()) > len(want) {
				t.Fatalf("webhooks %q, want %q", events(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	st, id, tok := streamSocket(t, ts.URL)
	data := `{"user_id":"7","user_info":{"name":"Ann"}}`
	body, _ := json.Marshal(map[string]string{"channel": "presence-room", "auth": app.SignChannel(id, "presence-room", data), "channel_data": data})
	pusherSubscribe(t, ts.URL, id, tok, string(body))
	st.expect(t, "herald:subscription_succeeded")
	// Member events come with the request; occupancy with the registry's next write.
	deadline := time.Now().Add(15 * time.Second)
	for len(events()) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if e := events(); !slices.Contains(e, "channel_occupied") || !slices.Contains(e, "member_added 7") || len(e) != 2 {
		t.Fatalf("after the join: %q", e)
	}
	first := events()
	if r := call(t, "POST", ts.URL+"/v1/channels/presence-room/whispers?socket_id="+id, map[string]string{socketTokenHeader: tok},
		`{"event":"client-typing","data":{"on":true}}`); r.status != http.StatusOK {
		t.Fatalf("whisper: %d %s", r.status, r.body)
	}
	waitFor(append(first, `client_event 7 client-typing {"on":true}`)...)
	st.cancel()
	waitFor(append(first, `client_event 7 client-typing {"on":true}`, "member_removed 7", "channel_vacated")...)
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("badly signed or shaped requests: %q", bad)
	}
	if fail != 0 {
		t.Fatal("the refused request was not retried")
	}
}
