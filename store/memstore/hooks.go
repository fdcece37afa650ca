package memstore

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/herald-rt/herald/store"
)

// HookQueue is a store.HookQueue in memory, for a node that is the whole deployment: it
// survives nothing, but keeps the contract — claims, staleness, delays, the bound.
type HookQueue struct {
	stale  time.Duration
	maxLen int
	now    func() time.Time

	mu       sync.Mutex
	next     uint64
	queue    []memHook            // queued or claimed, oldest first
	delayed  map[string]delayHook // key → payload waiting for its time
	ready    chan struct{}        // closed and replaced when something is queued
	leader   string               // the consumer that delivers, until leaseEnd
	leaseEnd time.Time
}

type memHook struct {
	id      uint64
	payload []byte
	owner   string
	claimed time.Time // zero while unclaimed
}

type delayHook struct {
	due     time.Time
	payload []byte
}

// HookQueueOptions configures a HookQueue.
type HookQueueOptions struct {
	// Stale is how long a claim holds without Hold; default store.DefaultHookStale.
	Stale time.Duration
	// MaxLen bounds the queue (the oldest go first); default store.DefaultHookMaxLen.
	MaxLen int
}

var _ store.HookQueue = (*HookQueue)(nil)

// NewHookQueue returns an empty queue.
func NewHookQueue(opts HookQueueOptions) *HookQueue {
	q := &HookQueue{stale: opts.Stale, maxLen: opts.MaxLen, now: time.Now, delayed: map[string]delayHook{}, ready: make(chan struct{})}
	if q.stale <= 0 {
		q.stale = store.DefaultHookStale
	}
	if q.maxLen <= 0 {
		q.maxLen = store.DefaultHookMaxLen
	}
	return q
}

// push queues a payload; q.mu is held.
func (q *HookQueue) push(p []byte) {
	q.next++
	q.queue = append(q.queue, memHook{id: q.next, payload: append([]byte(nil), p...)})
	if over := len(q.queue) - q.maxLen; over > 0 {
		q.queue = append(q.queue[:0], q.queue[over:]...)
	}
	close(q.ready)
	q.ready = make(chan struct{})
}

// Add implements store.HookQueue.
func (q *HookQueue) Add(ctx context.Context, payloads ...[]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, p := range payloads {
		q.push(p)
	}
	return nil
}

// AddAfter implements store.HookQueue.
func (q *HookQueue) AddAfter(ctx context.Context, key string, payload []byte, delay time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.delayed[key] = delayHook{due: q.now().Add(delay), payload: append([]byte(nil), payload...)}
	return nil
}

// AddOrCancel implements store.HookQueue.
func (q *HookQueue) AddOrCancel(ctx context.Context, key string, payload []byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.promote()
	if _, ok := q.delayed[key]; ok {
		delete(q.delayed, key)
		return false, nil
	}
	if len(payload) == 0 {
		return false, nil
	}
	q.push(payload)
	return true, nil
}

// promote queues the delayed payloads whose time came, earliest first; q.mu is held.
func (q *HookQueue) promote() {
	now := q.now()
	for {
		key, first := "", time.Time{}
		for k, d := range q.delayed {
			if !d.due.After(now) && (key == "" || d.due.Before(first)) {
				key, first = k, d.due
			}
		}
		if key == "" {
			return
		}
		q.push(q.delayed[key].payload)
		delete(q.delayed, key)
	}
}

// lead reports whether consumer holds the lease, taking or renewing it; q.mu is held.
func (q *HookQueue) lead(consumer string, now time.Time) bool {
	if q.leader != consumer && now.Before(q.leaseEnd) {
		return false
	}
	q.leader, q.leaseEnd = consumer, now.Add(q.stale)
	return true
}

// Claim implements store.HookQueue.
func (q *HookQueue) Claim(ctx context.Context, consumer string, max int, wait time.Duration) ([]store.Hook, error) {
	if max <= 0 {
		return nil, nil
	}
	var timeout <-chan time.Time
	for {
		q.mu.Lock()
		q.promote()
		now := q.now()
		var out []store.Hook
		room := max
		if !q.lead(consumer, now) {
			room = 0 // another consumer delivers: wait, and try again
		}
		// Stale claims first (they are the oldest), then unclaimed events, in queue order.
		for i := range q.queue {
			h := &q.queue[i]
			if len(out) >= room {
				break
			}
			if h.claimed.IsZero() || now.Sub(h.claimed) >= q.stale {
				h.owner, h.claimed = consumer, now
				out = append(out, store.Hook{ID: strconv.FormatUint(h.id, 10), Payload: h.payload})
			}
		}
		ready := q.ready
		q.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		if timeout == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		// Delayed payloads come due without an Add: look again at least every 100 ms.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timeout:
			return nil, nil
		case <-ready:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Hold implements store.HookQueue.
func (q *HookQueue) Hold(ctx context.Context, consumer string, ids ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	if q.leader == consumer {
		q.leaseEnd = now.Add(q.stale)
	}
	for _, id := range ids {
		for i := range q.queue {
			if h := &q.queue[i]; strconv.FormatUint(h.id, 10) == id {
				h.owner, h.claimed = consumer, now
			}
		}
	}
	return nil
}

// Release implements store.HookQueue.
func (q *HookQueue) Release(ctx context.Context, consumer string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.leader == consumer {
		q.leader, q.leaseEnd = "", time.Time{}
	}
	for i := range q.queue {
		if h := &q.queue[i]; h.owner == consumer {
			h.owner, h.claimed = "", time.Time{}
		}
	}
	close(q.ready) // a consumer waiting to lead may now
	q.ready = make(chan struct{})
	return nil
}

// Ack implements store.HookQueue.
func (q *HookQueue) Ack(ctx context.Context, ids ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(map[string]bool, len(ids))
	for _, id := range ids {
		done[id] = true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	kept := q.queue[:0]
	for _, h := range q.queue {
		if !done[strconv.FormatUint(h.id, 10)] {
			kept = append(kept, h)
		}
	}
	clear(q.queue[len(kept):])
	q.queue = kept
	return nil
}

// Len implements store.HookQueue.
func (q *HookQueue) Len(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.promote()
	return len(q.queue), nil
}
