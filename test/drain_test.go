package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDrainMovesClientsWithoutLoss: node A of two drains on SIGTERM while events are
// published through it. It leaves the registry at once, /v1/ready turns 503, new streams are
// refused with Retry-After, its streams end over the drain period with a retry, publishes keep
// being answered until it exits (0). Every client, resuming on node B from its Last-Event-ID as
// a load balancer would send it, gets every acknowledged event exactly once, in order.
func TestDrainMovesClientsWithoutLoss(t *testing.T) {
	t.Parallel()
	a, b := startCluster(t, oneRedis, "--drain-period", "2s", "--admin-token", adminToken)
	ch := uniqueChannel("drain")
	tok := a.Publisher(t)

	const clients = 6
	type client struct {
		got      []int
		ids      []string
		moved    bool
		retryFor string // the retry the ended stream asked for
		err      error
	}
	cs := make([]*client, clients)
	streams := make([]*sseStream, clients)
	for i := range cs {
		cs[i] = &client{}
		streams[i] = mustSSE(t, a.Base+eventsPath(ch), nil)
		streams[i].expectPreamble(t)
	}

	// The publisher: through A until A stops answering, then through B, each event with an
	// Idempotency-Key so that a publish A may have taken before dying is repeated safely.
	var acked []int
	stop := make(chan struct{})
	pubDone := make(chan error, 1)
	go func() {
		node := a
		for i := 0; ; i++ {
			select {
			case <-stop:
				pubDone <- nil
				return
			default:
			}
			body, _ := json.Marshal(map[string]any{"event": "Tick", "data": map[string]int{"n": i}})
			hdr := http.Header{"Idempotency-Key": {"drain-" + strconv.Itoa(i)}}
			deadline := time.Now().Add(20 * time.Second)
			for {
				r, err := node.publishBody(tok, ch, body, hdr)
				if err == nil && (r.Status == http.StatusCreated || r.Status == http.StatusOK) {
					break
				}
				if node == a {
					node = b // A is gone (or going): B has the same log
					continue
				}
				if time.Now().After(deadline) {
					pubDone <- fmt.Errorf("publish %d: %v %v", i, r, err)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			acked = append(acked, i)
			time.Sleep(5 * time.Millisecond)
		}
	}()

	// The clients: read; when A ends the stream, reconnect to B from the last id.
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := streams[i]
			defer func() { s.Close() }()
			deadline := time.Now().Add(40 * time.Second)
			for time.Now().Before(deadline) {
				f, err := s.next(time.Until(deadline))
				if errors.Is(err, errTimeout) {
					c.err = fmt.Errorf("no frame before the deadline after %d events", len(c.got))
					return
				}
				if err != nil { // the stream ended
					if c.moved {
						c.err = fmt.Errorf("the stream on B ended: %v", err)
						return
					}
					c.moved = true
					var hdr http.Header
					if len(c.ids) > 0 {
						hdr = lastEventHeader(c.ids[len(c.ids)-1])
					}
					if s, err = openSSE(b.Base+eventsPath(ch), hdr); err != nil {
						c.err = fmt.Errorf("reconnect to B: %v", err)
						return
					}
					continue
				}
				if f.HasRetry && f.Event == "" && !f.HasData {
					c.retryFor = f.Retry
				}
				if !f.HasID {
					continue
				}
				r, err := eventFrame(f)
				if err != nil {
					c.err = err
					return
				}
				c.got, c.ids = append(c.got, r.N), append(c.ids, r.Env.ID)
				if c.moved && r.N == -1 {
					return // the publisher's last word
				}
			}
			c.err = fmt.Errorf("deadline: %d events", len(c.got))
		}()
	}

	time.Sleep(300 * time.Millisecond) // some events before the drain
	a.Signal(syscall.SIGTERM)
	// Out of the registry at once, while it still serves.
	waitAdmin(t, b, "/admin/nodes", "A out of the registry", func(v adminNodesAnswer) bool {
		return len(v.Nodes) == 1 && v.Nodes[0].Addr == b.Addr
	})
	r, err := do("GET", a.Base+"/v1/ready", nil, nil)
	if err != nil || r.Status != http.StatusServiceUnavailable || string(r.Body) != `{"status":"draining"}`+"\n" {
		t.Fatalf("A's /v1/ready while draining: %v %v, want 503 draining", r, err)
	}
	if _, err := openSSE(a.Base+eventsPath(ch), nil); err == nil {
		t.Fatal("A accepted a new stream while draining")
	} else {
		var refused *statusError
		if !errors.As(err, &refused) {
			t.Fatalf("a new stream on A while draining: %v", err)
		}
		expectAPIError(t, "new stream while draining", refused.r, http.StatusServiceUnavailable, "shutting_down")
		if refused.r.Header.Get("Retry-After") == "" {
			t.Fatal("no Retry-After on a stream refused while draining")
		}
	}
	if rb := mustDo(t, "GET", b.Base+"/v1/ready", nil, nil); rb.Status != http.StatusOK {
		t.Fatalf("B's /v1/ready: %s", rb)
	}
	if code, exited := a.WaitExit(20 * time.Second); !exited || code != 0 {
		t.Fatalf("A after SIGTERM: exited %v with %d, want 0 within the drain and shutdown", exited, code)
	}
	time.Sleep(300 * time.Millisecond) // some events through B
	close(stop)
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	b.mustPublish(t, tok, ch, "Tick", map[string]int{"n": -1})
	wg.Wait()

	for k, c := range cs {
		if c.err != nil {
			t.Fatalf("client %d: %v", k, c.err)
		}
		if !c.moved || c.retryFor == "" {
			t.Errorf("client %d: moved %v, retry %q: A's stream must end with a retry", k, c.moved, c.retryFor)
		}
		got := c.got[:len(c.got)-1] // without the last word
		if len(got) != len(acked) {
			t.Fatalf("client %d: %d events, want the %d acknowledged", k, len(got), len(acked))
		}
		for j := range got {
			if got[j] != acked[j] {
				t.Fatalf("client %d: event %d is n=%d, want %d (lost, duplicated or reordered)", k, j, got[j], acked[j])
			}
		}
	}
	t.Logf("%d events acknowledged, %d clients moved to B", len(acked), clients)
}
