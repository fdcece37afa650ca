package stream

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/herald-rt/herald/store"
)

// RegisterOptions configures Hub.Register.
type RegisterOptions struct {
	// TTL is the node's lease; Register renews it every third of that. Default
	// store.DefaultNodeTTL.
	TTL time.Duration
	// Info returns what the node says of itself; it is called at each renewal. Nil: "{}".
	Info func() json.RawMessage
	// OnOccupancy receives the deployment-wide occupancy changes this node's writes caused,
	// those of nodes it found dead included, in the order the registry reported them. It is
	// called from Register's goroutine. Nil: ignored.
	OnOccupancy func([]store.Occupancy)
	// OnWritten receives, after each write the registry took, this node's socket counts it
	// wrote (zero for channels the node left): the channels whose deployment-wide count may
	// have changed. It is called from Register's goroutine. Nil: ignored.
	OnWritten func(counts map[string]int)
	// OnError hears of failed registry writes; Register keeps trying. Nil: ignored.
	OnError func(error)
}

// registryCounts tracks which channels' socket counts changed since the registry last heard
// of them. Its fields are guarded by Hub.mu.
type registryCounts struct {
	on    bool                // a Register is running
	dirty map[string]struct{} // channels whose count changed since the last write
	wake  chan struct{}       // cap 1: the writer has something to send
}

// changed records that channel's count moved. Call it holding Hub.mu for writing.
func (rc *registryCounts) changed(channel string) {
	if !rc.on {
		return
	}
	rc.dirty[channel] = struct{}{}
	select {
	case rc.wake <- struct{}{}:
	default:
	}
}

// Register lists the hub's node in reg, and keeps there the number of this hub's sockets on
// each channel, until ctx ends; then it removes the node at once and returns. Each count
// change is written as soon as the previous write is done, so changes that come in a burst
// share a write. If the registry lost the node (its lease ran out while the store was
// unreachable, say) Register re-registers it and sends every count again. Run it once per hub.
func (h *Hub) Register(ctx context.Context, reg store.Registry, opts RegisterOptions) {
	if opts.TTL <= 0 {
		opts.TTL = store.DefaultNodeTTL
	}
	wake := make(chan struct{}, 1)
	h.mu.Lock()
	h.counts = registryCounts{on: true, dirty: make(map[string]struct{}), wake: wake}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.counts = registryCounts{}
		h.mu.Unlock()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		defer cancel()
		changes, err := reg.Deregister(dctx, h.node)
		h.registryOutcome(opts, changes, err)
	}()

	renew := time.NewTicker(opts.TTL / 3)
	defer renew.Stop()
	registered, lost := false, false
	for {
		if !registered {
			registered = h.renew(ctx, reg, opts)
		}
		if registered {
			err := h.writeCounts(ctx, reg, opts)
			// Lost again right after registering: wait for the next renewal, not spin.
			if errors.Is(err, store.ErrNoNode) && !lost {
				registered, lost = false, true
				continue
			}
			lost = false
		}
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			registered = h.renew(ctx, reg, opts)
		case <-wake:
		}
	}
}

// renew registers the node or renews its lease, and reports whether it is registered. A
// fresh registration marks every channel with sockets for writing.
func (h *Hub) renew(ctx context.Context, reg store.Registry, opts RegisterOptions) bool {
	info := json.RawMessage(`{}`)
	if opts.Info != nil {
		info = opts.Info()
	}
	fresh, changes, err := reg.Register(ctx, h.node, info, opts.TTL)
	h.registryOutcome(opts, changes, err)
	if err != nil {
		return false
	}
	if fresh {
		h.mu.Lock()
		for name, cs := range h.channels {
			if cs.refs > 0 {
				h.counts.dirty[name] = struct{}{}
			}
		}
		h.mu.Unlock()
	}
	return true
}

// writeCounts sends the counts that changed. On failure they stay marked for the next try.
func (h *Hub) writeCounts(ctx context.Context, reg store.Registry, opts RegisterOptions) error {
	h.mu.Lock()
	if len(h.counts.dirty) == 0 {
		h.mu.Unlock()
		return nil
	}
	counts := make(map[string]int, len(h.counts.dirty))
	for name := range h.counts.dirty {
		n := 0
		if cs := h.channels[name]; cs != nil {
			n = cs.refs
		}
		counts[name] = n
	}
	clear(h.counts.dirty)
	h.mu.Unlock()

	changes, err := reg.SetSubscriptions(ctx, h.node, counts)
	if err != nil {
		h.mu.Lock()
		if h.counts.on {
			for name := range counts {
				h.counts.dirty[name] = struct{}{}
			}
		}
		h.mu.Unlock()
	}
	h.registryOutcome(opts, changes, err)
	if err == nil && opts.OnWritten != nil {
		opts.OnWritten(counts)
	}
	return err
}

func (h *Hub) registryOutcome(opts RegisterOptions, changes []store.Occupancy, err error) {
	if len(changes) > 0 && opts.OnOccupancy != nil {
		opts.OnOccupancy(changes)
	}
	if err != nil && opts.OnError != nil && !errors.Is(err, context.Canceled) {
		opts.OnError(err)
	}
}

// Counters are a hub's figures for metrics and the admin API: counts now, and totals since
// the hub started.
type Counters struct {
	Sockets       int // open sockets
	Channels      int // channels with at least one socket
	Subscriptions int // a socket on three channels counts three
	// HistoryExpired counts the resyncs sent because a socket's history had expired.
	HistoryExpired uint64
	// Gaps counts the times a channel's live notifications lost continuity, so that its
	// sockets caught up from the log.
	Gaps uint64
}

// Counters returns the hub's figures now.
func (h *Hub) Counters() Counters {
	c := Counters{Sockets: h.Sockets(), HistoryExpired: h.historyExpired.Load(), Gaps: h.gaps.Load()}
	h.mu.RLock()
	for _, cs := range h.channels {
		if cs.refs > 0 {
			c.Channels++
			c.Subscriptions += cs.refs
		}
	}
	h.mu.RUnlock()
	return c
}
