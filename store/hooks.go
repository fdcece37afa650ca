package store

import (
	"context"
	"time"
)

// HookQueue is one webhook endpoint's queue of outgoing events: the payloads the HTTP layer
// generated, each added once, held by the store until a deliverer acknowledges it. A node
// that dies with events queued, or claimed and not yet acknowledged, loses none: another
// node claims them once the claim went stale. Payloads are opaque bytes: the store knows
// nothing of their format or of HTTP.
//
// Delivery is at least once: an event whose acknowledgement was lost (the deliverer died
// after sending) is sent again.
type HookQueue interface {
	// Add queues payloads, in order, for delivery now.
	Add(ctx context.Context, payloads ...[]byte) error
	// AddAfter queues payload under key for delivery once delay has passed, replacing what
	// key held before. A later AddOrCancel of the same key withdraws it: that is how a
	// channel's vacancy waits for the flapping to end.
	AddAfter(ctx context.Context, key string, payload []byte, delay time.Duration) error
	// AddOrCancel withdraws the delayed payload of key if one is still waiting and reports
	// false; otherwise it queues payload now and reports true — unless payload is empty, which
	// only withdraws. The check and the change are one step, whatever the number of nodes.
	AddOrCancel(ctx context.Context, key string, payload []byte) (added bool, err error)
	// Claim gives consumer up to max queued events, oldest first, waiting up to wait for the
	// first: first those claimed more than the queue's stale time ago and never
	// acknowledged, then new ones. One consumer at a time delivers: the queue's lease goes to
	// the first that claims and stays with it while it claims or holds within the stale time,
	// so events leave in the order they were queued — also when a consumer dies and another
	// takes its stale claims over. Others get nothing meanwhile. Delayed payloads whose time
	// came are queued first.
	Claim(ctx context.Context, consumer string, max int, wait time.Duration) ([]Hook, error)
	// Hold renews consumer's claims on events it still works on (a delivery being retried),
	// and its lease, so neither goes stale.
	Hold(ctx context.Context, consumer string, ids ...string) error
	// Release gives up consumer's lease and its claims at once, for a consumer that stops
	// delivering on purpose (a node shutting down): the next consumer takes them over without
	// waiting for them to go stale.
	Release(ctx context.Context, consumer string) error
	// Ack removes delivered events for good.
	Ack(ctx context.Context, ids ...string) error
	// Len counts the events queued or claimed and not yet acknowledged (delayed payloads not
	// included).
	Len(ctx context.Context) (int, error)
}

// Hook is a queued webhook event.
type Hook struct {
	ID      string
	Payload []byte
}

// Defaults of a HookQueue.
const (
	// DefaultHookStale is how long a claim, and the delivering consumer's lease, hold without
	// Claim or Hold before another consumer may take over.
	DefaultHookStale = 30 * time.Second
	// DefaultHookMaxLen bounds a queue: past it the oldest events are dropped, so an endpoint
	// that stays down costs bounded memory.
	DefaultHookMaxLen = 10000
)
