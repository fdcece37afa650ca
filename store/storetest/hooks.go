package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/store"
)

// HookConfig is what a hook queue under test is made with.
type HookConfig struct {
	Stale  time.Duration
	MaxLen int
}

// HookFactory returns two store.HookQueue values on one fresh, empty queue: two nodes' views
// of one webhook endpoint's queue (memory returns the same value twice). Cleanup is the
// factory's.
type HookFactory func(t *testing.T, cfg HookConfig) (a, b store.HookQueue)

// RunHookQueue runs the webhook queue contract suite against the backends newQueue makes.
func RunHookQueue(t *testing.T, newQueue HookFactory) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, newQueue HookFactory)
	}{
		{"OrderClaimAck", testHooksOrder},
		{"ClaimWaits", testHooksWait},
		{"ShortWaits", testHooksShortWaits},
		{"StaleClaimsMove", testHooksStale},
		{"ReleaseHandsOver", testHooksRelease},
		{"DelayAndCancel", testHooksDelay},
		{"Bounded", testHooksBounded},
		{"ConcurrentConsumers", testHooksConcurrent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newQueue)
		})
	}
}

func payloads(hs []store.Hook) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = string(h.Payload)
	}
	return out
}

func claim(t *testing.T, q store.HookQueue, consumer string, max int, wait time.Duration) []store.Hook {
	t.Helper()
	hs, err := q.Claim(ctx(t), consumer, max, wait)
	if err != nil {
		t.Fatalf("claim by %s: %v", consumer, err)
	}
	return hs
}

func addHooks(t *testing.T, q store.HookQueue, ps ...string) {
	t.Helper()
	bs := make([][]byte, len(ps))
	for i, p := range ps {
		bs[i] = []byte(p)
	}
	if err := q.Add(ctx(t), bs...); err != nil {
		t.Fatal(err)
	}
}

func hookLen(t *testing.T, q store.HookQueue) int {
	t.Helper()
	n, err := q.Len(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func testHooksOrder(t *testing.T, newQueue HookFactory) {
	a, b := newQueue(t, HookConfig{Stale: time.Minute})
	addHooks(t, a, "1", "2", "3")
	addHooks(t, b, "4", "5")
	first := claim(t, a, "node-a", 3, 0)
	if got := payloads(first); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Fatalf("first claim %v, want 1 2 3", got)
	}
	// One consumer delivers at a time: the other gets nothing while the first holds the lease.
	if got := claim(t, b, "node-b", 10, 100*time.Millisecond); len(got) != 0 {
		t.Fatalf("a second consumer got %v while the first delivers", payloads(got))
	}
	// Claimed events do not come again; the rest follow in order.
	second := claim(t, a, "node-a", 10, 0)
	if got := payloads(second); !slices.Equal(got, []string{"4", "5"}) {
		t.Fatalf("second claim %v, want 4 5", got)
	}
	if n := hookLen(t, a); n != 5 {
		t.Fatalf("len %d with 5 unacknowledged", n)
	}
	if err := a.Ack(ctx(t), first[0].ID, first[1].ID, first[2].ID); err != nil {
		t.Fatal(err)
	}
	if n := hookLen(t, b); n != 2 {
		t.Fatalf("len %d after acknowledging 3 of 5", n)
	}
	if got := claim(t, a, "node-a", 10, 0); len(got) != 0 {
		t.Fatalf("acknowledged or claimed events came again: %v", payloads(got))
	}
}

func testHooksWait(t *testing.T, newQueue HookFactory) {
	a, b := newQueue(t, HookConfig{Stale: time.Minute})
	start := time.Now()
	if got := claim(t, a, "node-a", 10, 200*time.Millisecond); len(got) != 0 {
		t.Fatalf("empty queue gave %v", payloads(got))
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("an empty claim waited far past its wait")
	}
	got := make(chan []store.Hook, 1)
	go func() {
		hs, _ := a.Claim(ctx(t), "node-a", 10, 10*time.Second)
		got <- hs
	}()
	time.Sleep(100 * time.Millisecond)
	addHooks(t, b, "late")
	select {
	case hs := <-got:
		if p := payloads(hs); !slices.Equal(p, []string{"late"}) {
			t.Fatalf("waiting claim got %v", p)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("a waiting claim did not see an event added on another node")
	}
}

// testHooksShortWaits: a claim whose wait is about spent when it would block must not wait
// for the next event instead (Redis reads a BLOCK of 0 as "forever", and a wait under a
// millisecond truncates to 0). The waits step through the range where that happened, and each
// empty claim must come back long before an idle queue sees its next event.
func testHooksShortWaits(t *testing.T, newQueue HookFactory) {
	a, _ := newQueue(t, HookConfig{Stale: time.Minute})
	for wait := 100 * time.Microsecond; wait <= 3*time.Millisecond; wait += 100 * time.Microsecond {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		hs, err := a.Claim(c, "node-a", 10, wait)
		cancel()
		if err != nil || len(hs) != 0 {
			t.Fatalf("empty claim with a %s wait: %v, %v (it must return nothing, soon after its wait)", wait, payloads(hs), err)
		}
	}
}

func testHooksStale(t *testing.T, newQueue HookFactory) {
	const stale = 500 * time.Millisecond
	a, b := newQueue(t, HookConfig{Stale: stale})
	addHooks(t, a, "x", "y")
	mine := claim(t, a, "node-a", 10, 0)
	if len(mine) != 2 {
		t.Fatalf("claimed %v", payloads(mine))
	}
	// While node a holds its claims (a delivery being retried), nobody else delivers.
	for end := time.Now().Add(2 * stale); time.Now().Before(end); {
		if err := a.Hold(ctx(t), "node-a", mine[0].ID, mine[1].ID); err != nil {
			t.Fatal(err)
		}
		if got := claim(t, b, "node-b", 10, 0); len(got) != 0 {
			t.Fatalf("node b took %v from a node that holds them", payloads(got))
		}
		time.Sleep(stale / 5)
	}
	// Node a dies with them: once stale, node b takes both over, in order, with their ids,
	// and what comes next after them.
	addHooks(t, a, "z")
	deadline := time.Now().Add(10 * time.Second)
	var took []store.Hook
	for len(took) == 0 && time.Now().Before(deadline) {
		took = claim(t, b, "node-b", 10, stale)
	}
	if got := payloads(took); !slices.Equal(got, []string{"x", "y", "z"}) || took[0].ID != mine[0].ID || took[1].ID != mine[1].ID {
		t.Fatalf("after node a went stale, node b took %v, want x y (same ids) then z", got)
	}
	if got := claim(t, a, "node-a", 10, 0); len(got) != 0 {
		t.Fatalf("node a, back, got %v while node b delivers", payloads(got))
	}
	ids := []string{took[0].ID, took[1].ID, took[2].ID}
	if err := b.Ack(ctx(t), ids...); err != nil {
		t.Fatal(err)
	}
	if n := hookLen(t, a); n != 0 {
		t.Fatalf("len %d after every event was acknowledged", n)
	}
}

func testHooksRelease(t *testing.T, newQueue HookFactory) {
	a, b := newQueue(t, HookConfig{Stale: time.Minute})
	addHooks(t, a, "x", "y")
	mine := claim(t, a, "node-a", 1, 0)
	if got := payloads(mine); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("claimed %v", got)
	}
	// Node a stops on purpose, x still unacknowledged: node b takes over at once, x first.
	if err := a.Release(ctx(t), "node-a"); err != nil {
		t.Fatal(err)
	}
	took := claim(t, b, "node-b", 10, 5*time.Second)
	if got := payloads(took); !slices.Equal(got, []string{"x", "y"}) || took[0].ID != mine[0].ID {
		t.Fatalf("after node a released, node b took %v, want x (same id) and y", got)
	}
	// Releasing what one does not hold changes nothing.
	if err := a.Release(ctx(t), "node-a"); err != nil {
		t.Fatal(err)
	}
	addHooks(t, a, "z")
	if got := payloads(claim(t, a, "node-a", 10, 0)); len(got) != 0 {
		t.Fatalf("node a got %v while node b leads", got)
	}
}

func testHooksDelay(t *testing.T, newQueue HookFactory) {
	a, b := newQueue(t, HookConfig{Stale: time.Minute})
	c := ctx(t)
	const delay = 400 * time.Millisecond
	if err := a.AddAfter(c, "vacated:room", []byte("vacated room"), delay); err != nil {
		t.Fatal(err)
	}
	if err := a.AddAfter(c, "vacated:flap", []byte("vacated flap"), delay); err != nil {
		t.Fatal(err)
	}
	// The flapping channel is occupied again within the delay: its vacancy is withdrawn and
	// the occupation not queued.
	added, err := b.AddOrCancel(c, "vacated:flap", []byte("occupied flap"))
	if err != nil || added {
		t.Fatalf("AddOrCancel with a pending delay = %v, %v; want false", added, err)
	}
	// Without a pending delay it queues.
	added, err = b.AddOrCancel(c, "vacated:new", []byte("occupied new"))
	if err != nil || !added {
		t.Fatalf("AddOrCancel without a pending delay = %v, %v; want true", added, err)
	}
	// An empty payload only withdraws.
	if added, err := b.AddOrCancel(c, "vacated:other", nil); err != nil || added {
		t.Fatalf("AddOrCancel of an empty payload = %v, %v; want false", added, err)
	}
	if got := payloads(claim(t, a, "node-a", 10, 0)); !slices.Equal(got, []string{"occupied new"}) {
		t.Fatalf("before the delay: %v, want only the new occupation", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	var got []string
	for len(got) == 0 && time.Now().Before(deadline) {
		got = payloads(claim(t, a, "node-a", 10, time.Second))
	}
	if !slices.Equal(got, []string{"vacated room"}) {
		t.Fatalf("after the delay: %v, want the one vacancy not withdrawn", got)
	}
	if more := claim(t, a, "node-a", 10, 2*delay); len(more) != 0 {
		t.Fatalf("more came: %v", payloads(more))
	}
	// Once queued, a vacancy can no longer be withdrawn: the occupation is queued after it.
	if added, err := b.AddOrCancel(c, "vacated:room", []byte("occupied room")); err != nil || !added {
		t.Fatalf("AddOrCancel after the vacancy was queued = %v, %v; want true", added, err)
	}
}

func testHooksBounded(t *testing.T, newQueue HookFactory) {
	a, _ := newQueue(t, HookConfig{Stale: time.Minute, MaxLen: 5})
	for i := 1; i <= 8; i++ {
		addHooks(t, a, fmt.Sprint(i))
	}
	got := payloads(claim(t, a, "node-a", 100, 0))
	// The oldest go first; a store may trim lazily, keeping a few more than the bound.
	if len(got) < 5 || len(got) > 8 || got[len(got)-1] != "8" || !slices.IsSorted(got) {
		t.Fatalf("after 8 adds to a queue of 5: %v", got)
	}
	if len(got) == 8 {
		t.Log("this store keeps a little over the bound (trims lazily)")
	}
}

func testHooksConcurrent(t *testing.T, newQueue HookFactory) {
	a, b := newQueue(t, HookConfig{Stale: time.Minute})
	const n = 300
	for i := 0; i < n; i += 50 {
		batch := make([]string, 0, 50)
		for j := i; j < i+50; j++ {
			batch = append(batch, fmt.Sprint(j))
		}
		addHooks(t, a, batch...)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		q, name := a, fmt.Sprintf("node-a-%d", w)
		if w%2 == 1 {
			q, name = b, fmt.Sprintf("node-b-%d", w)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < 200; round++ {
				hs, err := q.Claim(ctx(t), name, 7, 50*time.Millisecond)
				if err != nil {
					t.Error(err)
					return
				}
				if len(hs) == 0 {
					return
				}
				ids := make([]string, len(hs))
				mu.Lock()
				for i, h := range hs {
					seen[string(h.Payload)]++
					ids[i] = h.ID
				}
				mu.Unlock()
				if err := q.Ack(ctx(t), ids...); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("%d distinct events delivered, want %d", len(seen), n)
	}
	for p, k := range seen {
		if k != 1 {
			t.Fatalf("event %s claimed %d times", p, k)
		}
	}
}
