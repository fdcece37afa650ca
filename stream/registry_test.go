package stream_test

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/stream"
	"github.com/herald-rt/herald/test/testkit"
)

// registered runs h.Register against a fresh memory registry until the test ends, and
// returns the registry and the occupancy changes it reported so far.
func registered(t *testing.T, h *stream.Hub, ttl time.Duration) (*memstore.Registry, func() []store.Occupancy) {
	t.Helper()
	reg := memstore.NewRegistry(memstore.RegistryOptions{})
	var mu sync.Mutex
	var changes []store.Occupancy
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Register(ctx, reg, stream.RegisterOptions{TTL: ttl, OnOccupancy: func(c []store.Occupancy) {
			mu.Lock()
			changes = append(changes, c...)
			mu.Unlock()
		}})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return reg, func() []store.Occupancy {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(changes)
	}
}

func waitOccupied(t *testing.T, reg store.Registry, want map[string]int) {
	t.Helper()
	var got map[string]int
	if !testkit.WaitFor(10*time.Second, func() bool {
		var err error
		got, err = reg.Occupied(context.Background(), "")
		return err == nil && maps.Equal(got, want)
	}) {
		t.Fatalf("registry counts %v, want %v", got, want)
	}
}

// TestRegisterCounts checks that the registry follows the hub's sockets: each subscription
// and each socket that goes moves the node's count, and the channel's occupancy changes are
// reported once each.
func TestRegisterCounts(t *testing.T) {
	h, _ := newHub(t, store.Retention{}, stream.Options{Node: "n1"})
	reg, changes := registered(t, h, time.Minute)
	s1 := open(t, h, stream.Request{Channels: []string{"a", "b"}})
	s2 := open(t, h, stream.Request{Channels: []string{"a"}})
	dyn := open(t, h, stream.Request{Dynamic: true})
	if err := dyn.Subscribe(context.Background(), "c", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	waitOccupied(t, reg, map[string]int{"a": 2, "b": 1, "c": 1})
	if c := h.Counters(); c.Channels != 3 || c.Subscriptions != 4 || c.Sockets != 3 {
		t.Fatalf("Counters %+v, want 3 channels, 4 subscriptions, 3 sockets", c)
	}
	subs, err := reg.Subscriptions(context.Background(), "a")
	if err != nil || !maps.Equal(subs, map[string]int{"n1": 2}) {
		t.Fatalf("subscriptions of a: %v %v, want n1:2", subs, err)
	}
	s1.Close()
	dyn.Unsubscribe("c")
	waitOccupied(t, reg, map[string]int{"a": 1})
	s2.Close()
	waitOccupied(t, reg, map[string]int{})
	got := changes()
	slices.SortStableFunc(got, func(x, y store.Occupancy) int {
		if x.Channel < y.Channel {
			return -1
		}
		if x.Channel > y.Channel {
			return 1
		}
		return 0
	})
	var want []store.Occupancy
	for _, ch := range []string{"a", "b", "c"} {
		want = append(want, store.Occupancy{Channel: ch, Occupied: true}, store.Occupancy{Channel: ch})
	}
	if !slices.Equal(got, want) {
		t.Fatalf("occupancy changes (by channel) %v, want %v", got, want)
	}
}

// TestRegisterRecovers drops the node from the registry behind the hub's back (its lease ran
// out while the store was away): the next write finds it gone, registers again and sends
// every count, not only the one that changed.
func TestRegisterRecovers(t *testing.T) {
	h, _ := newHub(t, store.Retention{}, stream.Options{Node: "n1"})
	reg, _ := registered(t, h, time.Minute)
	open(t, h, stream.Request{Channels: []string{"a"}})
	open(t, h, stream.Request{Channels: []string{"b"}})
	waitOccupied(t, reg, map[string]int{"a": 1, "b": 1})
	if _, err := reg.Deregister(context.Background(), "n1"); err != nil {
		t.Fatal(err)
	}
	open(t, h, stream.Request{Channels: []string{"a"}})
	waitOccupied(t, reg, map[string]int{"a": 2, "b": 1})
}

// TestRegisterLeaves checks that a node that stops registering leaves the registry at once,
// and that its lease is renewed meanwhile.
func TestRegisterLeaves(t *testing.T) {
	h, _ := newHub(t, store.Retention{}, stream.Options{Node: "n1"})
	reg := memstore.NewRegistry(memstore.RegistryOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Register(ctx, reg, stream.RegisterOptions{TTL: 300 * time.Millisecond})
	}()
	open(t, h, stream.Request{Channels: []string{"a"}})
	waitOccupied(t, reg, map[string]int{"a": 1})
	// Three leases later it is still there: it renews.
	nodes, err := reg.Nodes(context.Background())
	if err != nil || len(nodes) != 1 || nodes[0].ID != "n1" {
		t.Fatalf("nodes %v %v", nodes, err)
	}
	first := nodes[0].Expires
	if !testkit.WaitFor(10*time.Second, func() bool {
		nodes, err := reg.Nodes(context.Background())
		return err == nil && len(nodes) == 1 && nodes[0].Expires.Sub(first) > 900*time.Millisecond
	}) {
		t.Fatal("the lease was not renewed")
	}
	cancel()
	<-done
	nodes, err = reg.Nodes(context.Background())
	if err != nil || len(nodes) != 0 {
		t.Fatalf("nodes after Register returned: %v %v, want none", nodes, err)
	}
}

// TestRegisterReportsWrites: OnWritten hears each count the registry took, a channel the
// node left included (as zero), so a caller can follow channels' deployment-wide counts.
func TestRegisterReportsWrites(t *testing.T) {
	h, _ := newHub(t, store.Retention{}, stream.Options{Node: "n1"})
	reg := memstore.NewRegistry(memstore.RegistryOptions{})
	var mu sync.Mutex
	last := map[string]int{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Register(ctx, reg, stream.RegisterOptions{TTL: time.Minute, OnWritten: func(c map[string]int) {
			mu.Lock()
			maps.Copy(last, c)
			mu.Unlock()
		}})
	}()
	t.Cleanup(func() { cancel(); <-done })
	seen := func(want map[string]int) {
		t.Helper()
		if !testkit.WaitFor(10*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return maps.Equal(last, want)
		}) {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("written %v, want %v", last, want)
		}
	}
	s1 := open(t, h, stream.Request{Channels: []string{"a"}})
	s2 := open(t, h, stream.Request{Channels: []string{"a", "b"}})
	seen(map[string]int{"a": 2, "b": 1})
	s2.Close()
	seen(map[string]int{"a": 1, "b": 0})
	s1.Close()
	seen(map[string]int{"a": 0, "b": 0})
}
