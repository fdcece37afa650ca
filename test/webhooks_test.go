package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Webhooks end to end: two herald nodes on one Redis send Pusher webhooks to an endpoint that
// checks every request with the real `pusher` npm package's webhook() validator
// (test/node/webhook-receiver.mjs). Each transition is sent once, whichever node saw it, under
// races, flapping and node deaths; a failing endpoint gets the same events again; a node
// killed with events queued loses none.

// hookReceiver is the running webhook-receiver.mjs.
type hookReceiver struct {
	url   string
	stdin io.WriteCloser

	mu       sync.Mutex
	events   []hookEvent // from valid requests answered 200, in arrival order
	refused  int         // requests answered 500
	invalid  int         // requests the validator refused
	requests int
}

type hookEvent struct {
	Name     string `json:"name"`
	Channel  string `json:"channel"`
	UserID   string `json:"user_id"`
	Event    string `json:"event"`
	Data     string `json:"data"`
	SocketID string `json:"socket_id"`
	Count    *int   `json:"subscription_count"`
}

func startHookReceiver(t *testing.T, app pusherApp) *hookReceiver {
	t.Helper()
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("this test needs Node.js (node on PATH): %v", err)
	}
	if _, err := os.Stat(filepath.Join("node", "node_modules", "pusher", "package.json")); err != nil {
		t.Fatalf("the pusher npm package is not installed: run `npm ci` in test/node (make test does): %v", err)
	}
	arg, _ := json.Marshal(map[string]string{"appId": app.ID, "key": app.Key, "secret": app.Secret})
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, nodeBin, filepath.Join("node", "webhook-receiver.mjs"), string(arg))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cancel()
		_ = cmd.Wait()
	})
	r := &hookReceiver{stdin: stdin}
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	if !lines.Scan() {
		t.Fatal("webhook-receiver.mjs printed nothing")
	}
	var hello struct{ Listening int }
	if err := json.Unmarshal(lines.Bytes(), &hello); err != nil || hello.Listening == 0 {
		t.Fatalf("webhook-receiver.mjs: %q", lines.Text())
	}
	r.url = fmt.Sprintf("http://127.0.0.1:%d/pusher/webhooks", hello.Listening)
	go func() {
		for lines.Scan() {
			var req struct {
				Valid  bool        `json:"valid"`
				Status int         `json:"status"`
				Events []hookEvent `json:"events"`
			}
			if json.Unmarshal(lines.Bytes(), &req) != nil {
				continue
			}
			r.mu.Lock()
			r.requests++
			switch {
			case !req.Valid:
				r.invalid++
			case req.Status != http.StatusOK:
				r.refused++
			default:
				r.events = append(r.events, req.Events...)
			}
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *hookReceiver) command(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(r.stdin, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

// of returns the events delivered for channel, in arrival order, as "name" or "name user".
// Occupancy events (channel_*) and the others come from different places — the registry's
// periodic write, the request itself — so each kind is in order only among its own: of with
// occupancy true gives the channel_* events, false the others.
// subscription_count events are left out (see counts).
func (r *hookReceiver) of(channel string, occupancy bool) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if e.Channel == channel && e.Name != "subscription_count" && strings.HasPrefix(e.Name, "channel_") == occupancy {
			out = append(out, strings.TrimSpace(e.Name+" "+e.UserID))
		}
	}
	return out
}

// counts returns the subscription_count values delivered for channel, in arrival order.
func (r *hookReceiver) counts(channel string) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, e := range r.events {
		if e.Channel == channel && e.Name == "subscription_count" && e.Count != nil {
			out = append(out, *e.Count)
		}
	}
	return out
}

// waitCount waits until the last subscription_count delivered for channel is n.
func (r *hookReceiver) waitCount(t *testing.T, channel string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := r.counts(channel)
		if len(got) > 0 && got[len(got)-1] == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscription_count for %s: %v, want it to end at %d", channel, got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait waits until channel's events of one kind (see of) are want, then for quiet to pass with
// nothing more arriving for it.
func (r *hookReceiver) wait(t *testing.T, channel string, want []string, within, quiet time.Duration) {
	t.Helper()
	occupancy := len(want) > 0 && strings.HasPrefix(want[0], "channel_")
	deadline := time.Now().Add(within)
	for !slices.Equal(r.of(channel, occupancy), want) {
		if got := r.of(channel, occupancy); len(got) > len(want) || time.Now().After(deadline) {
			t.Fatalf("webhooks for %s: %q, want %q", channel, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(quiet)
	if got := r.of(channel, occupancy); !slices.Equal(got, want) {
		t.Fatalf("webhooks for %s after %v more: %q, want %q", channel, quiet, got, want)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.invalid > 0 {
		t.Fatalf("%d webhook requests failed pusher's validator", r.invalid)
	}
}

// webhookCluster starts the receiver and two nodes of an app sending it every event, with a
// vacate delay of 500 ms and short leases, so node deaths show within seconds.
func webhookCluster(t *testing.T, extra ...string) (a, b *herald, r *hookReceiver) {
	t.Helper()
	app := pusherApp{ID: "hooks-" + randomSuffix(), Key: "key-" + randomSuffix(), Secret: string(randomSecret())}
	r = startHookReceiver(t, app)
	yaml := "apps:\n  - id: \"" + app.ID + "\"\n    key: " + app.Key + "\n    secret: \"" + app.Secret + "\"\n" +
		"    webhook_vacate_delay: 500ms\n    webhooks:\n      - url: " + r.url + "\n" +
		"        events: [channel_occupied, channel_vacated, member_added, member_removed, client_event, subscription_count]\n"
	path := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--config", path, "--node-ttl", "2s", "--presence-ttl", "2s", "--webhook-stale", "5s"}, extra...)
	a, b = startCluster(t, oneRedis, args...)
	return a, b, r
}

// subscribeOn opens a stream socket on node h subscribed to a public channel.
func subscribeOn(t *testing.T, h *herald, channel string) *sseStream {
	t.Helper()
	s := mustSSE(t, h.Base+"/v1/stream?channel="+channel, nil)
	s.expectPreamble(t)
	return s
}

func TestWebhooksOncePerTransition(t *testing.T) {
	t.Parallel()
	a, b, r := webhookCluster(t)
	const long = 15 * time.Second

	// Six sockets on two nodes arrive at once and leave at once: one occupied, one vacated.
	race := uniqueChannel("race")
	var streams []*sseStream
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		h := []*herald{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := subscribeOn(t, h, race)
			mu.Lock()
			streams = append(streams, s)
			mu.Unlock()
		}()
	}
	wg.Wait()
	r.wait(t, race, []string{"channel_occupied"}, long, 300*time.Millisecond)
	for _, s := range streams {
		go s.Close()
	}
	r.wait(t, race, []string{"channel_occupied", "channel_vacated"}, long, time.Second)

	// subscription_count follows the deployment-wide count: three sockets on two nodes, then none.
	counted := uniqueChannel("counted")
	c1, c2, c3 := subscribeOn(t, a, counted), subscribeOn(t, a, counted), subscribeOn(t, b, counted)
	r.waitCount(t, counted, 3, long)
	c1.Close()
	c3.Close()
	r.waitCount(t, counted, 1, long)
	c2.Close()
	r.waitCount(t, counted, 0, long)
	for _, n := range r.counts(counted) {
		if n < 0 || n > 3 {
			t.Fatalf("subscription_count for %s: %v", counted, r.counts(counted))
		}
	}

	// A channel left and joined again within the vacate delay flapped: nothing is sent, until
	// it is left for longer.
	flap := uniqueChannel("flap")
	s := subscribeOn(t, a, flap)
	r.wait(t, flap, []string{"channel_occupied"}, long, 0)
	s.Close()
	time.Sleep(100 * time.Millisecond)
	s = subscribeOn(t, b, flap)
	r.wait(t, flap, []string{"channel_occupied"}, long, 1500*time.Millisecond)
	s.Close()
	r.wait(t, flap, []string{"channel_occupied", "channel_vacated"}, long, 0)

	// Presence: a user counts once, whatever the number of tabs and nodes; client events
	// carry their sender.
	room := "presence-" + uniqueChannel("room")
	ann := presenceToken(t, a, "ann", "Ann")
	annA, _ := joinPresence(t, a, b, room, ann)
	annB, _ := joinPresence(t, b, a, room, ann)
	bob, bobHello := joinPresence(t, b, b, room, presenceToken(t, b, "bob", "Bob"))
	r.wait(t, room, []string{"channel_occupied"}, long, 0)
	r.wait(t, room, []string{"member_added ann", "member_added bob"}, long, 300*time.Millisecond)
	w := mustDo(t, "POST", a.Base+"/v1/channels/"+room+"/whispers?socket_id="+bobHello.SocketID, socketHeader(bobHello.SocketToken),
		strings.NewReader(`{"event":"client-typing","data":{"typing":true}}`))
	if w.Status != http.StatusOK {
		t.Fatalf("whisper: %s", w)
	}
	r.wait(t, room, []string{"member_added ann", "member_added bob", "client_event bob"}, long, 0)
	r.mu.Lock()
	ce := r.events[len(r.events)-1]
	r.mu.Unlock()
	if ce.Event != "client-typing" || ce.Data != `{"typing":true}` || ce.SocketID != bobHello.SocketID {
		t.Fatalf("client_event %+v", ce)
	}
	annA.Close()
	annB.Close()
	r.wait(t, room, []string{"member_added ann", "member_added bob", "client_event bob", "member_removed ann"}, long, 300*time.Millisecond)

	// Node B dies with the last subscriber of a channel, and Bob's membership: node A sends
	// what its lease expiry causes, once.
	lonely := uniqueChannel("lonely")
	subscribeOn(t, b, lonely)
	r.wait(t, lonely, []string{"channel_occupied"}, long, 0)
	_ = bob
	b.Kill()
	r.wait(t, lonely, []string{"channel_occupied", "channel_vacated"}, long, time.Second)
	r.wait(t, room, []string{"channel_occupied", "channel_vacated"}, long, 0)
	r.wait(t, room, []string{"member_added ann", "member_added bob", "client_event bob", "member_removed ann", "member_removed bob"}, long, time.Second)
}

func TestWebhooksRetriedAndNeverLost(t *testing.T) {
	t.Parallel()
	a, _, r := webhookCluster(t)
	const long = 20 * time.Second

	// The endpoint fails twice: the same event comes a third time.
	retried := uniqueChannel("retried")
	r.command(t, "fail 2")
	s := subscribeOn(t, a, retried)
	r.wait(t, retried, []string{"channel_occupied"}, long, 0)
	r.mu.Lock()
	refused := r.refused
	r.mu.Unlock()
	if refused < 2 {
		t.Fatalf("%d refused requests before the delivery, want 2", refused)
	}
	s.Close()
	r.wait(t, retried, []string{"channel_occupied", "channel_vacated"}, long, 0)

	// The endpoint is down while ten channels are occupied through node A, and node A dies
	// with their events queued or claimed: node B delivers every one once the endpoint is back.
	chans := occupyWhileDown(t, a, r, 10)
	a.Kill()
	r.command(t, "ok")
	for _, ch := range chans {
		// Occupied, then vacated: node A's sockets went with it.
		r.wait(t, ch, []string{"channel_occupied", "channel_vacated"}, long, 0)
	}
}

// occupyWhileDown makes the endpoint refuse everything and occupies n new channels through
// node h, long enough for their events to be claimed and refused at least once.
func occupyWhileDown(t *testing.T, h *herald, r *hookReceiver, n int) []string {
	t.Helper()
	r.command(t, "fail 1000000")
	var chans []string
	for i := 0; i < n; i++ {
		ch := uniqueChannel("queued")
		chans = append(chans, ch)
		subscribeOn(t, h, ch)
	}
	time.Sleep(1500 * time.Millisecond)
	return chans
}

// TestWebhooksHandedOverOnShutdown: a node stopped with SIGTERM while the endpoint is down
// hands its delivery lease and its claims over at once: the other node delivers every event
// long before a claim could go stale (--webhook-stale 60s here).
func TestWebhooksHandedOverOnShutdown(t *testing.T) {
	t.Parallel()
	a, _, r := webhookCluster(t, "--webhook-stale", "60s", "--drain-period", "0s")
	chans := occupyWhileDown(t, a, r, 5)
	a.Signal(syscall.SIGTERM)
	if _, exited := a.WaitExit(20 * time.Second); !exited {
		t.Fatal("node A did not stop")
	}
	r.command(t, "ok")
	for _, ch := range chans {
		r.wait(t, ch, []string{"channel_occupied", "channel_vacated"}, 20*time.Second, 0)
	}
}
