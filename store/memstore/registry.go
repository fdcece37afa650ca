package memstore

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/herald-rt/herald/store"
)

// RegistryOptions configures a Registry. The zero value is usable.
type RegistryOptions struct {
	// Now is the clock; tests may replace it. Defaults to time.Now.
	Now func() time.Time
}

// Registry is the single-process store.Registry, the companion of Store. A process with the
// memory store is the whole deployment, so in practice it lists one node; it still keeps
// leases and per-node counts like the Redis one, so the engine and the contract tests treat
// both alike. It starts no goroutine and needs no Close.
type Registry struct {
	now func() time.Time

	mu    sync.Mutex
	nodes map[string]*registeredNode
}

type registeredNode struct {
	info    json.RawMessage
	expires time.Time
	counts  map[string]int // channel → sockets, never zero
}

var _ store.Registry = (*Registry)(nil)

// NewRegistry returns an empty Registry.
func NewRegistry(opts RegistryOptions) *Registry {
	r := &Registry{now: opts.Now, nodes: make(map[string]*registeredNode)}
	if r.now == nil {
		r.now = time.Now
	}
	return r
}

var errNoNodeID = errors.New("memstore: empty node id")

// Register implements store.Registry.
func (r *Registry) Register(ctx context.Context, id string, info json.RawMessage, ttl time.Duration) (bool, []store.Occupancy, error) {
	if err := ctx.Err(); err != nil {
		return false, nil, err
	}
	if id == "" {
		return false, nil, errNoNodeID
	}
	if ttl <= 0 {
		ttl = store.DefaultNodeTTL
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	changes := r.expireLocked(now)
	n := r.nodes[id]
	fresh := n == nil
	if fresh {
		n = &registeredNode{counts: make(map[string]int)}
		r.nodes[id] = n
	}
	n.info = slices.Clone(info)
	n.expires = now.Add(ttl)
	return fresh, changes, nil
}

// Deregister implements store.Registry.
func (r *Registry) Deregister(ctx context.Context, id string) ([]store.Occupancy, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	changes := r.expireLocked(now)
	return append(changes, r.removeLocked(id)...), nil
}

// SetSubscriptions implements store.Registry.
func (r *Registry) SetSubscriptions(ctx context.Context, id string, counts map[string]int) ([]store.Occupancy, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	changes := r.expireLocked(now)
	n := r.nodes[id]
	if n == nil {
		return changes, store.ErrNoNode
	}
	for _, ch := range sortedKeys(counts) {
		c := counts[ch]
		_, had := n.counts[ch]
		switch {
		case c > 0:
			n.counts[ch] = c
			if !had && !r.occupiedLocked(ch, id) {
				changes = append(changes, store.Occupancy{Channel: ch, Occupied: true})
			}
		case had:
			delete(n.counts, ch)
			if !r.occupiedLocked(ch, id) {
				changes = append(changes, store.Occupancy{Channel: ch})
			}
		}
	}
	return changes, nil
}

// Nodes implements store.Registry.
func (r *Registry) Nodes(ctx context.Context) ([]store.Node, error) {
	out := []store.Node{}
	err := r.eachLive(ctx, func(id string, n *registeredNode) {
		out = append(out, store.Node{ID: id, Info: slices.Clone(n.info), Expires: n.expires})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b store.Node) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Subscriptions implements store.Registry.
func (r *Registry) Subscriptions(ctx context.Context, channel string) (map[string]int, error) {
	out := make(map[string]int)
	err := r.eachLive(ctx, func(id string, n *registeredNode) {
		if c := n.counts[channel]; c > 0 {
			out[id] = c
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Occupied implements store.Registry.
func (r *Registry) Occupied(ctx context.Context, prefix string) (map[string]int, error) {
	out := make(map[string]int)
	err := r.eachLive(ctx, func(_ string, n *registeredNode) {
		for ch, c := range n.counts {
			if strings.HasPrefix(ch, prefix) {
				out[ch] += c
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// eachLive calls f, holding the lock, for every node whose lease has not run out.
func (r *Registry) eachLive(ctx context.Context, f func(id string, n *registeredNode)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, n := range r.nodes {
		if now.Before(n.expires) {
			f(id, n)
		}
	}
	return nil
}

// expireLocked removes the nodes whose lease ran out and returns the channels left vacant.
func (r *Registry) expireLocked(now time.Time) []store.Occupancy {
	var dead []string
	for id, n := range r.nodes {
		if !now.Before(n.expires) {
			dead = append(dead, id)
		}
	}
	slices.Sort(dead)
	var changes []store.Occupancy
	for _, id := range dead {
		changes = append(changes, r.removeLocked(id)...)
	}
	return changes
}

// removeLocked deletes node id and returns the channels no other node has sockets on.
func (r *Registry) removeLocked(id string) []store.Occupancy {
	n := r.nodes[id]
	if n == nil {
		return nil
	}
	delete(r.nodes, id)
	var changes []store.Occupancy
	for _, ch := range sortedKeys(n.counts) {
		if !r.occupiedLocked(ch, id) {
			changes = append(changes, store.Occupancy{Channel: ch})
		}
	}
	return changes
}

// occupiedLocked reports whether a node other than except has sockets on channel. Nodes past
// their lease are still in the map only until the next write removes them, and do not count.
func (r *Registry) occupiedLocked(channel, except string) bool {
	now := r.now()
	for id, n := range r.nodes {
		if id != except && n.counts[channel] > 0 && now.Before(n.expires) {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
