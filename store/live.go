package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Ephemeral is a live-only message on a channel: whispers (typing indicators) and presence
// changes. It reaches the channel's listeners on every node at most once, is never stored and
// never replayed, and has no place in the channel's sequence.
type Ephemeral struct {
	Channel string
	Name    string          // e.g. "client-typing", "herald:member_added"
	Data    json.RawMessage // compact JSON
	// SocketID is the sender's socket, which must not receive it.
	SocketID string
	// UserID is the sender's user on presence channels (whispers carry it to receivers).
	UserID string
}

// Broadcaster delivers ephemeral messages through the same live path as events: to the
// Handler.HandleEphemeral of every node that listens to the channel, this one included.
type Broadcaster interface {
	Broadcast(ctx context.Context, msg Ephemeral) error
}

// ErrNoNode: a Bus request was addressed to a node that no longer exists.
var ErrNoNode = errors.New("store: no such node")

// Bus carries requests between the nodes of one deployment, addressed by node id (the first
// part of every socket id). It is how any node can act on a socket another node holds — no
// sticky sessions.
type Bus interface {
	// Serve makes this process the node called node: requests addressed to it are answered
	// by h until ctx ends. Call it once per node id.
	Serve(ctx context.Context, node string, h func(ctx context.Context, req []byte) []byte) error
	// Request sends req to node and returns its answer. It fails with ErrNoNode when no
	// process serves that node, and with ctx's error when no answer comes in time.
	Request(ctx context.Context, node string, req []byte) ([]byte, error)
}

// Member is one user of a presence channel.
type Member struct {
	UserID   string          `json:"user_id"`
	UserInfo json.RawMessage `json:"user_info,omitempty"`
}

// DefaultPresenceTTL is how long a membership lasts without a Refresh when a Presence is given
// none: long enough that a node refreshing every third of it survives a couple of slow rounds,
// short enough that a vanished socket's user leaves within a minute.
const DefaultPresenceTTL = time.Minute

// DefaultMaxMembers is Pusher's limit on the users of one presence channel, which Laravel
// applications are written against.
const DefaultMaxMembers = 100

// ErrPresenceFull: the channel already has the most members allowed.
var ErrPresenceFull = errors.New("store: presence channel is full")

// Presence keeps the members of presence channels, per socket, for the whole deployment. A
// user with several sockets (tabs, devices) is one member: added with its first socket,
// removed with its last. Memberships are leases: a node refreshes those of its sockets, and
// the memberships of a node that stops (crashes) expire, so the others see those users leave.
type Presence interface {
	// Join adds socketID to channel as m. first reports that the user had no other socket
	// there (announce member_added). ErrPresenceFull when a new user would exceed the limit.
	Join(ctx context.Context, channel, socketID string, m Member) (first bool, err error)
	// Leave removes socketID. last reports that its user has no socket left (announce
	// member_removed); m is that user. Leaving twice is not an error (ok is false).
	Leave(ctx context.Context, channel, socketID string) (m Member, last, ok bool, err error)
	// Refresh renews the leases of these sockets' memberships in channel.
	Refresh(ctx context.Context, channel string, socketIDs []string) error
	// Expire ends the memberships whose lease ran out and returns the users that left as a
	// result (no socket left). Every node may call it; each expired user is returned once.
	Expire(ctx context.Context, channel string) ([]Member, error)
	// Members lists the channel's current users, one entry per user, ordered by user id.
	Members(ctx context.Context, channel string) ([]Member, error)
}
