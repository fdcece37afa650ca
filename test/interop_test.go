package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"

	"github.com/herald-rt/herald/test/testkit"
)

// clientEvent is one application event as a third-party SSE client reported it.
type clientEvent struct {
	ID   string `json:"id"`   // the client's lastEventId for it
	Data string `json:"data"` // the envelope
}

// clientProbe reads what a third-party client has seen so far.
type clientProbe interface {
	// snapshot returns how many herald:connected events and which Tick events the client has
	// seen, in order.
	snapshot() (connected int, events []clientEvent, err error)
}

// reconnectScenario is the interop check shared by the browser and the Node client, which both
// reconnect by themselves: events arrive in order, the client survives a cut connection,
// comes back with Last-Event-ID, and gets the events it missed exactly once.
//
// The client reads `streamPath` through proxy; the first stream request must have gone out
// already (the client was started before).
func reconnectScenario(t *testing.T, h *herald, proxy *testkit.Proxy, probe clientProbe, ch, streamPath string, composite bool) {
	t.Helper()
	tok := h.Publisher(t)
	snap := func() (int, []clientEvent) {
		t.Helper()
		c, evs, err := probe.snapshot()
		if err != nil {
			t.Fatalf("reading the client's state: %v", err)
		}
		return c, evs
	}
	waitClient := func(what string, d time.Duration, cond func(c int, evs []clientEvent) bool) {
		t.Helper()
		var c int
		var evs []clientEvent
		if !testkit.WaitFor(d, func() bool { c, evs = snap(); return cond(c, evs) }) {
			t.Fatalf("client: %s not reached within %v (connected %d times, %d events)", what, d, c, len(evs))
		}
	}
	waitClient("herald:connected", 20*time.Second, func(c int, _ []clientEvent) bool { return c >= 1 })

	const half = 25
	ids := h.publishN(t, tok, ch, "Tick", 0, half)
	waitClient(fmt.Sprintf("%d events", half), 15*time.Second, func(_ int, evs []clientEvent) bool { return len(evs) >= half })
	_, evs := snap()
	lastSeen := evs[half-1].ID

	if n := proxy.CutAll(); n < 1 {
		t.Fatalf("the proxy carried no connection to cut")
	}
	ids = append(ids, h.publishN(t, tok, ch, "Tick", half, half)...) // while the client is away
	waitClient("reconnect and the missed events", 20*time.Second, func(c int, evs []clientEvent) bool { return c >= 2 && len(evs) >= 2*half })
	ids = append(ids, h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 2 * half})) // live again
	waitClient("the live event after reconnecting", 10*time.Second, func(_ int, evs []clientEvent) bool { return len(evs) >= 2*half+1 })
	// A last event fences the check: a duplicate of anything before it would have come first.
	fence := h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": -1})
	waitClient("the fence event", 10*time.Second, func(_ int, evs []clientEvent) bool {
		return len(evs) > 0 && strings.Contains(evs[len(evs)-1].Data, fence)
	})
	conns, evs := snap()
	evs = evs[:len(evs)-1] // the fence

	if len(evs) != len(ids) {
		t.Errorf("client got %d events, want %d (duplicates or losses)", len(evs), len(ids))
	}
	seen := map[string]bool{}
	for i, e := range evs {
		env, err := parseEnvelope([]byte(e.Data))
		if err != nil {
			t.Errorf("event %d: %v", i, err)
			continue
		}
		if i < len(ids) && env.ID != ids[i] {
			t.Errorf("event %d: envelope id %q, want %q (order or loss)", i, env.ID, ids[i])
		}
		if n, err := seqN(env.Data); err != nil || n != i {
			t.Errorf("event %d: data %s, want n=%d", i, env.Data, i)
		}
		if seen[env.ID] {
			t.Errorf("event %d: %q delivered twice", i, env.ID)
		}
		seen[env.ID] = true
		switch {
		case composite && !strings.HasPrefix(e.ID, "c"):
			t.Errorf("event %d: lastEventId %q on /v1/stream is not a composite cursor", i, e.ID)
		case !composite && e.ID != env.ID:
			t.Errorf("event %d: lastEventId %q != envelope id %q", i, e.ID, env.ID)
		}
	}
	if conns != 2 {
		t.Errorf("client saw herald:connected %d times, want 2 (first connect and one reconnect)", conns)
	}
	reqs := proxy.Requests(streamPath)
	if len(reqs) < 2 {
		t.Fatalf("the proxy saw %d stream requests, want 2", len(reqs))
	}
	if got := reqs[0].Header.Get("Last-Event-ID"); got != "" {
		t.Errorf("first stream request carried Last-Event-ID %q", got)
	}
	if got := reqs[1].Header.Get("Last-Event-ID"); got != lastSeen {
		t.Errorf("reconnect carried Last-Event-ID %q, want the last id seen %q", got, lastSeen)
	}
	if len(reqs) != 2 {
		t.Errorf("the client made %d stream requests, want 2", len(reqs))
	}
}

// ---------------------------------------------------------------------------------------------
// The eventsource npm package

type nodeClient struct {
	mu        sync.Mutex
	connected int
	events    []clientEvent
	other     []string
	exited    chan struct{}
	stdin     io.WriteCloser
	cmd       *exec.Cmd
	stderr    *testkit.LogBuffer
}

func (n *nodeClient) snapshot() (int, []clientEvent, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case <-n.exited:
		return n.connected, slices.Clone(n.events), fmt.Errorf("node exited early; stderr:\n%s\nother output: %q", n.stderr.String(), n.other)
	default:
	}
	return n.connected, slices.Clone(n.events), nil
}

// startNodeClient runs test/node/sse-client.mjs on streamURL.
func startNodeClient(t *testing.T, streamURL string) *nodeClient {
	t.Helper()
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("this test needs Node.js (node on PATH): %v", err)
	}
	script, err := filepath.Abs(filepath.Join("node", "sse-client.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("node", "node_modules", "eventsource", "package.json")); err != nil {
		t.Fatalf("the eventsource npm package is not installed: run `npm ci` in test/node (make test does): %v", err)
	}
	n := &nodeClient{exited: make(chan struct{}), stderr: &testkit.LogBuffer{}}
	n.cmd = exec.Command(nodeBin, script, streamURL, "Tick", "45000")
	n.cmd.Dir = filepath.Dir(script)
	n.cmd.Stderr = n.stderr
	n.stdin, err = n.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := n.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var m struct {
				Type string `json:"type"`
				ID   string `json:"id"`
				Data string `json:"data"`
			}
			line := sc.Text()
			n.mu.Lock()
			if json.Unmarshal([]byte(line), &m) != nil {
				n.other = append(n.other, line)
			} else {
				switch m.Type {
				case "connected":
					n.connected++
				case "event":
					n.events = append(n.events, clientEvent{ID: m.ID, Data: m.Data})
				default:
					n.other = append(n.other, line)
				}
			}
			n.mu.Unlock()
		}
		n.cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(func() {
		n.stdin.Close() // the script's signal to stop
		select {
		case <-n.exited:
		case <-time.After(5 * time.Second):
			n.cmd.Process.Kill()
			<-n.exited
		}
		if t.Failed() {
			n.mu.Lock()
			t.Logf("node client: other output %q; stderr:\n%s", n.other, n.stderr.String())
			n.mu.Unlock()
		}
	})
	return n
}

// TestInteropNodeEventSource: the `eventsource` npm package reads one-channel and
// multi-channel streams in order, reconnects with Last-Event-ID after a cut, no duplicates.
func TestInteropNodeEventSource(t *testing.T) {
	t.Parallel()
	for _, composite := range []bool{false, true} {
		name := map[bool]string{false: "one-channel", true: "multi-channel"}[composite]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := startHerald(t, heraldOpts{args: []string{"--retry", "300ms"}})
			proxy := startProxy(t, h.Addr)
			ch := uniqueChannel("node")
			path := eventsPath(ch)
			if composite {
				path = "/v1/stream?" + url.Values{"channel": {ch, uniqueChannel("node-other")}}.Encode()
			}
			client := startNodeClient(t, proxy.Base()+path)
			reconnectScenario(t, h, proxy, client, ch, path, composite)
		})
	}
}

// ---------------------------------------------------------------------------------------------
// r3labs/sse/v2's client

// TestInteropR3labsClient: r3labs/sse's Go client receives the events in order with the right
// ids and event names. (It cannot be trusted to resume: see the library notes.)
func TestInteropR3labsClient(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{})
	tok := h.Publisher(t)
	ch := uniqueChannel("r3labs")
	other := uniqueChannel("r3labs-other")
	for _, composite := range []bool{false, true} {
		u := h.Base + eventsPath(ch)
		if composite {
			u = h.Base + "/v1/stream?" + url.Values{"channel": {ch, other}}.Encode()
		}
		var mu sync.Mutex
		var msgs []*sse.Event
		client := sse.NewClient(u)
		client.Connection = &http.Client{Transport: streamTransport}
		client.ReconnectStrategy = &backoff.StopBackOff{} // one connection; the test owns retries
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- client.SubscribeRawWithContext(ctx, func(m *sse.Event) {
				c := *m
				mu.Lock()
				msgs = append(msgs, &c)
				mu.Unlock()
			})
		}()
		snapshot := func() []*sse.Event {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(msgs)
		}
		stop := func() {
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Errorf("r3labs client did not return 5s after its context was cancelled")
			}
		}
		if !testkit.WaitFor(10*time.Second, func() bool {
			for _, m := range snapshot() {
				if string(m.Event) == "herald:connected" {
					return true
				}
			}
			return false
		}) {
			stop()
			t.Fatalf("%s: r3labs client saw no herald:connected within 10s: %d messages", u, len(snapshot()))
		}
		ids := h.publishN(t, tok, ch, "Tick", 0, 50)
		// A last event fences the check: an extra message before it would have come first.
		fence := h.mustPublish(t, tok, ch, "Fence", map[string]int{"n": -1})
		ok := testkit.WaitFor(15*time.Second, func() bool {
			got := snapshot()
			return len(got) > 0 && strings.Contains(string(got[len(got)-1].Data), fence)
		})
		stop()
		got := snapshot()
		var fenceMsg *sse.Event
		if ok {
			got, fenceMsg = got[:len(got)-1], got[len(got)-1]
		}
		if !ok {
			t.Fatalf("%s: r3labs client got %d messages, want retry + connected + 50 events", u, len(got))
		}
		if len(got) != 52 {
			t.Errorf("%s: r3labs client got %d messages, want 52", u, len(got))
		}
		if string(got[0].Retry) == "" || len(got[0].Data) != 0 {
			t.Errorf("%s: first message should be the retry field, got %+v", u, got[0])
		}
		if string(got[1].Event) != "herald:connected" {
			t.Errorf("%s: second message event %q, want herald:connected", u, got[1].Event)
		}
		for i, m := range got[2:] {
			env, err := parseEnvelope(m.Data)
			if err != nil {
				t.Errorf("%s: event %d: %v", u, i, err)
				continue
			}
			if string(m.Event) != "Tick" || env.ID != ids[i] {
				t.Errorf("%s: event %d: event %q envelope id %q, want Tick %q", u, i, m.Event, env.ID, ids[i])
			}
			if n, _ := seqN(env.Data); n != i {
				t.Errorf("%s: event %d: data %s", u, i, env.Data)
			}
			switch {
			case composite && !strings.HasPrefix(string(m.ID), "c"):
				t.Errorf("%s: event %d: id %q is not composite", u, i, m.ID)
			case !composite && string(m.ID) != ids[i]:
				t.Errorf("%s: event %d: id %q, want %q", u, i, m.ID, ids[i])
			}
		}
		if last, _ := client.LastEventID.Load().([]byte); fenceMsg != nil && string(last) != string(fenceMsg.ID) {
			t.Errorf("%s: r3labs LastEventID %q, want the last id %q", u, last, fenceMsg.ID)
		}
	}
}
