package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/store"
)

// RegistryFactory returns two store.Registry values on one fresh, empty backend: two nodes'
// views of one deployment. An implementation with nothing to share (memory) returns the same
// value twice. Cleanup is the factory's.
type RegistryFactory func(t *testing.T) (a, b store.Registry)

// RunRegistry runs the registry contract suite against the backends newRegistry makes.
func RunRegistry(t *testing.T, newRegistry RegistryFactory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, newRegistry RegistryFactory)
		slow bool
	}{
		{"RegisterAndList", testRegistryNodes, false},
		{"OccupancyTransitions", testRegistryOccupancy, false},
		{"OccupiedByPrefix", testRegistryPrefix, false},
		{"Deregister", testRegistryDeregister, false},
		{"UnknownNode", testRegistryUnknownNode, false},
		{"ManyChannels", testRegistryManyChannels, false},
		{"ConcurrentTransitions", testRegistryConcurrent, false},
		{"CanceledContext", testRegistryCanceled, false},
		{"LeaseExpires", testRegistryLeaseExpires, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.slow {
				t.Parallel()
			}
			tc.fn(t, newRegistry)
		})
	}
}

const longLease = time.Minute

func register(t *testing.T, r store.Registry, id, info string, ttl time.Duration, wantFresh bool) []store.Occupancy {
	t.Helper()
	fresh, changes, err := r.Register(ctx(t), id, json.RawMessage(info), ttl)
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	if fresh != wantFresh {
		t.Fatalf("register %s: fresh=%v, want %v", id, fresh, wantFresh)
	}
	return changes
}

func setSubs(t *testing.T, r store.Registry, id string, counts map[string]int, want ...store.Occupancy) {
	t.Helper()
	got, err := r.SetSubscriptions(ctx(t), id, counts)
	if err != nil {
		t.Fatalf("set subscriptions of %s %v: %v", id, counts, err)
	}
	checkChanges(t, fmt.Sprintf("set subscriptions of %s %v", id, counts), got, want)
}

func checkChanges(t *testing.T, what string, got, want []store.Occupancy) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s: changes %v, want %v", what, got, want)
	}
}

func occupied(ch string) store.Occupancy { return store.Occupancy{Channel: ch, Occupied: true} }
func vacated(ch string) store.Occupancy  { return store.Occupancy{Channel: ch} }

func checkCounts(t *testing.T, what string, got map[string]int, err error, want map[string]int) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func nodeIDs(t *testing.T, r store.Registry) []string {
	t.Helper()
	nodes, err := r.Nodes(ctx(t))
	if err != nil {
		t.Fatalf("nodes: %v", err)
	}
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.ID
	}
	return ids
}

func testRegistryNodes(t *testing.T, newRegistry RegistryFactory) {
	a, b := newRegistry(t)
	if ids := nodeIDs(t, a); len(ids) != 0 {
		t.Fatalf("a fresh registry lists %v", ids)
	}
	before := time.Now()
	register(t, a, "n2", `{"addr":"127.0.0.1:2","v":"😀"}`, longLease, true)
	register(t, b, "n1", `{"addr":"127.0.0.1:1"}`, longLease, true)
	register(t, a, "n2", `{"addr":"127.0.0.1:2","v":"renewed"}`, longLease, false)
	nodes, err := b.Nodes(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].ID != "n1" || nodes[1].ID != "n2" {
		t.Fatalf("nodes %v, want n1 and n2 in that order", nodes)
	}
	if string(nodes[0].Info) != `{"addr":"127.0.0.1:1"}` || string(nodes[1].Info) != `{"addr":"127.0.0.1:2","v":"renewed"}` {
		t.Fatalf("infos %s and %s, want what was registered last", nodes[0].Info, nodes[1].Info)
	}
	// The store's clock may differ a little from this one; the lease is a minute.
	for _, n := range nodes {
		if n.Expires.Before(before.Add(longLease-10*time.Second)) || n.Expires.After(time.Now().Add(longLease+10*time.Second)) {
			t.Fatalf("node %s expires at %v, want about a minute from %v", n.ID, n.Expires, before)
		}
	}
}

func testRegistryOccupancy(t *testing.T, newRegistry RegistryFactory) {
	a, b := newRegistry(t)
	register(t, a, "n1", `{}`, longLease, true)
	register(t, b, "n2", `{}`, longLease, true)
	ch, other := Channel(t), Channel(t)

	setSubs(t, a, "n1", map[string]int{ch: 1}, occupied(ch))
	setSubs(t, b, "n2", map[string]int{ch: 2, other: 0}) // occupied already; zero for a channel it never had is nothing
	setSubs(t, a, "n1", map[string]int{ch: 5})           // a count change is not a transition
	subs, err := b.Subscriptions(ctx(t), ch)
	checkCounts(t, "subscriptions", subs, err, map[string]int{"n1": 5, "n2": 2})
	occ, err := a.Occupied(ctx(t), "")
	checkCounts(t, "occupied", occ, err, map[string]int{ch: 7})

	setSubs(t, a, "n1", map[string]int{ch: 0}) // n2 still has sockets there
	subs, err = a.Subscriptions(ctx(t), ch)
	checkCounts(t, "subscriptions", subs, err, map[string]int{"n2": 2})
	setSubs(t, b, "n2", map[string]int{ch: 0}, vacated(ch))
	setSubs(t, b, "n2", map[string]int{ch: 0}) // vacated once only
	occ, err = b.Occupied(ctx(t), "")
	checkCounts(t, "occupied", occ, err, map[string]int{})
	subs, err = b.Subscriptions(ctx(t), ch)
	checkCounts(t, "subscriptions", subs, err, map[string]int{})

	// Several channels in one call are reported in name order.
	first, second := "a-"+ch, "b-"+ch
	setSubs(t, b, "n2", map[string]int{second: 1, first: 3}, occupied(first), occupied(second))
	setSubs(t, a, "n1", map[string]int{first: 1}) // n2 has it
	setSubs(t, b, "n2", map[string]int{second: 0, first: 0}, vacated(second))
	setSubs(t, a, "n1", map[string]int{first: 0}, vacated(first))
}

func testRegistryPrefix(t *testing.T, newRegistry RegistryFactory) {
	a, b := newRegistry(t)
	register(t, a, "n1", `{}`, longLease, true)
	register(t, b, "n2", `{}`, longLease, true)
	base := Channel(t)
	pres, priv, pub := "presence-"+base, "private-"+base, base
	setSubs(t, a, "n1", map[string]int{pres: 2, priv: 1}, occupied(pres), occupied(priv))
	setSubs(t, b, "n2", map[string]int{pres: 1, pub: 4}, occupied(pub))
	occ, err := b.Occupied(ctx(t), "presence-")
	checkCounts(t, "occupied presence-", occ, err, map[string]int{pres: 3})
	occ, err = a.Occupied(ctx(t), "private-"+base)
	checkCounts(t, "occupied private-…", occ, err, map[string]int{priv: 1})
	occ, err = a.Occupied(ctx(t), "")
	checkCounts(t, "occupied", occ, err, map[string]int{pres: 3, priv: 1, pub: 4})
	occ, err = a.Occupied(ctx(t), "nothing-starts-like-this")
	checkCounts(t, "occupied nothing", occ, err, map[string]int{})
}

func testRegistryDeregister(t *testing.T, newRegistry RegistryFactory) {
	a, b := newRegistry(t)
	register(t, a, "n1", `{}`, longLease, true)
	register(t, b, "n2", `{}`, longLease, true)
	shared, own := Channel(t), Channel(t)
	setSubs(t, a, "n1", map[string]int{shared: 1, own: 2}, occupied(shared), occupied(own))
	setSubs(t, b, "n2", map[string]int{shared: 1})
	changes, err := a.Deregister(ctx(t), "n1")
	if err != nil {
		t.Fatal(err)
	}
	checkChanges(t, "deregister", changes, []store.Occupancy{vacated(own)})
	if ids := nodeIDs(t, b); !slices.Equal(ids, []string{"n2"}) {
		t.Fatalf("nodes after deregister %v, want [n2]", ids)
	}
	occ, err := b.Occupied(ctx(t), "")
	checkCounts(t, "occupied", occ, err, map[string]int{shared: 1})
	if changes, err := b.Deregister(ctx(t), "n1"); err != nil || len(changes) != 0 {
		t.Fatalf("second deregister: %v %v, want nothing", changes, err)
	}
	if changes, err := b.Deregister(ctx(t), "never-was"); err != nil || len(changes) != 0 {
		t.Fatalf("deregister of an unknown node: %v %v, want nothing", changes, err)
	}
	// Registering again starts from nothing: the old counts are gone.
	register(t, a, "n1", `{}`, longLease, true)
	subs, err := a.Subscriptions(ctx(t), own)
	checkCounts(t, "subscriptions after re-registering", subs, err, map[string]int{})
}

func testRegistryUnknownNode(t *testing.T, newRegistry RegistryFactory) {
	a, _ := newRegistry(t)
	ch := Channel(t)
	if _, err := a.SetSubscriptions(ctx(t), "ghost", map[string]int{ch: 1}); !errors.Is(err, store.ErrNoNode) {
		t.Fatalf("set subscriptions of an unregistered node: %v, want ErrNoNode", err)
	}
	occ, err := a.Occupied(ctx(t), "")
	checkCounts(t, "occupied", occ, err, map[string]int{})
}

func testRegistryManyChannels(t *testing.T, newRegistry RegistryFactory) {
	a, b := newRegistry(t)
	register(t, a, "n1", `{}`, longLease, true)
	base := Channel(t)
	counts := make(map[string]int)
	var want []store.Occupancy
	for i := range 1234 {
		ch := fmt.Sprintf("%s.%04d", base, i)
		counts[ch] = i%3 + 1
		want = append(want, occupied(ch))
	}
	setSubs(t, a, "n1", counts, want...)
	occ, err := b.Occupied(ctx(t), base)
	checkCounts(t, "occupied", occ, err, counts)
	changes, err := b.Deregister(ctx(t), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != len(counts) {
		t.Fatalf("deregister reported %d vacated channels, want %d", len(changes), len(counts))
	}
	for _, c := range changes {
		if c.Occupied || counts[c.Channel] == 0 {
			t.Fatalf("deregister reported %v", c)
		}
	}
}

// testRegistryConcurrent toggles one channel on two nodes at once. Each change reported flips
// the channel's deployment-wide state, so however the calls interleave, as many vacancies as
// occupations are reported once both nodes have left — a write that was not atomic would
// report the channel occupied (or vacated) twice.
func testRegistryConcurrent(t *testing.T, newRegistry RegistryFactory) {
	a, b := newRegistry(t)
	register(t, a, "n1", `{}`, longLease, true)
	register(t, b, "n2", `{}`, longLease, true)
	ch := Channel(t)
	var occupations, vacancies, others [2]int
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for i, r := range []store.Registry{a, b} {
		id := fmt.Sprintf("n%d", i+1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 60 {
				changes, err := r.SetSubscriptions(ctx(t), id, map[string]int{ch: (j + 1) % 2})
				if err != nil {
					errs <- err
					return
				}
				for _, c := range changes {
					switch {
					case c.Channel != ch:
						others[i]++
					case c.Occupied:
						occupations[i]++
					default:
						vacancies[i]++
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	occ, vac := occupations[0]+occupations[1], vacancies[0]+vacancies[1]
	if occ == 0 || occ != vac || others[0]+others[1] != 0 {
		t.Fatalf("reported %d occupations and %d vacancies (and %d changes of other channels), want as many of each, at least one",
			occ, vac, others[0]+others[1])
	}
}

func testRegistryCanceled(t *testing.T, newRegistry RegistryFactory) {
	a, _ := newRegistry(t)
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := a.Register(c, "n1", json.RawMessage(`{}`), longLease); err == nil {
		t.Fatal("register with a canceled context succeeded")
	}
	if _, err := a.Nodes(c); err == nil {
		t.Fatal("nodes with a canceled context succeeded")
	}
	if _, err := a.SetSubscriptions(c, "n1", map[string]int{"x": 1}); err == nil {
		t.Fatal("set subscriptions with a canceled context succeeded")
	}
}

// testRegistryLeaseExpires lets one node's lease run out: its entry and counts vanish from
// every answer at once, before anyone removes them, and the next write of another node
// removes them for good, reporting the channels only it had — once.
func testRegistryLeaseExpires(t *testing.T, newRegistry RegistryFactory) {
	a, b := newRegistry(t)
	const short = 300 * time.Millisecond
	register(t, a, "kept", `{}`, longLease, true)
	register(t, b, "dying", `{}`, short, true)
	shared, own := Channel(t), Channel(t)
	setSubs(t, b, "dying", map[string]int{shared: 1, own: 3}, occupied(shared), occupied(own))
	setSubs(t, a, "kept", map[string]int{shared: 2})

	deadline := time.Now().Add(10 * time.Second)
	for slices.Contains(nodeIDs(t, a), "dying") {
		if time.Now().After(deadline) {
			t.Fatal("a node whose lease ran out is still listed after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	occ, err := a.Occupied(ctx(t), "")
	checkCounts(t, "occupied once the lease ran out", occ, err, map[string]int{shared: 2})
	subs, err := b.Subscriptions(ctx(t), own)
	checkCounts(t, "subscriptions once the lease ran out", subs, err, map[string]int{})

	changes := register(t, a, "kept", `{}`, longLease, false)
	checkChanges(t, "renewal after the other's lease ran out", changes, []store.Occupancy{vacated(own)})
	changes = register(t, a, "kept", `{}`, longLease, false)
	checkChanges(t, "second renewal", changes, nil)
	if _, err := b.SetSubscriptions(ctx(t), "dying", map[string]int{own: 1}); !errors.Is(err, store.ErrNoNode) {
		t.Fatalf("set subscriptions after the lease ran out: %v, want ErrNoNode", err)
	}
	// The node comes back (it was only cut off): it starts again from nothing.
	register(t, b, "dying", `{}`, longLease, true)
	setSubs(t, b, "dying", map[string]int{own: 1}, occupied(own))
}
