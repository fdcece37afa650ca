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
	// first: first those another consumer claimed more than the queue's stale time ago and
	// never acknowledged, then new ones. A claimed event goes to no one else until it is
	// stale. Delayed payloads whose time came are queued first.
	Claim(ctx context.Context, consumer string, max int, wait time.Duration) ([]Hook, error)
	// Hold renews consumer's claim on events it still works on (a delivery being retried),
	// so they do not go stale.
	Hold(ctx context.Context, consumer string, ids ...string) error
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
	// DefaultHookStale is how long a claim holds without Hold before another consumer may
	// take the event.
	DefaultHookStale = 30 * time.Second
	// DefaultHookMaxLen bounds a queue: past it the oldest events are dropped, so an endpoint
	// that stays down costs bounded memory.
	DefaultHookMaxLen = 10000
)
