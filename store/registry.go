package store

import (
	"context"
	"encoding/json"
	"time"
)

// Node is one Herald process as the registry knows it.
type Node struct {
	ID string
	// Info is what the node says of itself (address, version, counts), as JSON. The store keeps
	// it as given and never reads it.
	Info json.RawMessage
	// Expires is when the node's lease runs out unless it is renewed, on the store's clock.
	Expires time.Time
}

// Occupancy is a change, deployment-wide, of whether a channel has subscribers: Occupied when
// the first socket of any node subscribed, not Occupied when the last one left or its node
// went away.
type Occupancy struct {
	Channel  string
	Occupied bool
}

// DefaultNodeTTL is a node's lease when none is given: a node that stops renewing (it died, or
// lost the store) vanishes from the deployment's view within this long.
const DefaultNodeTTL = 15 * time.Second

// Registry is the deployment's directory of its nodes and of how many sockets each node has on
// each channel. A node's entry and its counts are one lease: when the lease runs out they
// vanish together from every answer, and the next Register of any node removes them for good.
// A node that stops gracefully deregisters at once.
//
// Counts change per node and per channel in one step each, so a channel's deployment-wide
// transition between no subscribers and some is seen exactly when it happens: each change is
// reported once, to the caller whose write caused it (for a node that died, to the caller that
// removed it). Every write first removes the nodes whose lease ran out, so their channels'
// vacancies come before the writer's own changes.
type Registry interface {
	// Register adds node id, or renews its lease, for ttl, with info. fresh reports that the
	// store held no live entry for it (first registration, or its lease had run out): its
	// counts are gone, and the node must send them all again.
	Register(ctx context.Context, id string, info json.RawMessage, ttl time.Duration) (fresh bool, changes []Occupancy, err error)
	// Deregister removes node id and its counts at once. Removing an unknown node is not an
	// error.
	Deregister(ctx context.Context, id string) ([]Occupancy, error)
	// SetSubscriptions records node id's socket count on each channel given; zero removes
	// the channel from the node. It fails with ErrNoNode when the node holds no live lease:
	// register again, then send every count.
	SetSubscriptions(ctx context.Context, id string, counts map[string]int) ([]Occupancy, error)
	// Nodes lists the live nodes, ordered by id.
	Nodes(ctx context.Context) ([]Node, error)
	// Subscriptions returns, per live node with sockets on channel, how many it has.
	Subscriptions(ctx context.Context, channel string) (map[string]int, error)
	// Occupied returns every channel starting with prefix that a live node has sockets on,
	// each with its socket count summed over the nodes.
	Occupied(ctx context.Context, prefix string) (map[string]int, error)
}
