// Package store owns Herald's ordered log: one append-only, per-channel sequence of events with
// idempotent appends, reads after a cursor, bounded retention and live notification of new events.
//
// It knows nothing of sockets, subscribers, HTTP or the wire format: the engine (package stream)
// builds on it. Every implementation — memstore (embedded default) and redisstore (Redis Streams)
// — passes the one contract suite in package storetest.
package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Errors returned by every Store. Compare with errors.Is.
var (
	// ErrIdempotencyConflict: the idempotency key was used before with a different request.
	ErrIdempotencyConflict = errors.New("store: idempotency key reused with a different request")
	// ErrUnavailable: the backing service could not be reached; nothing was appended.
	ErrUnavailable = errors.New("store: unavailable")
	// ErrUnconfirmed: an append was sent but its outcome never came back (a timeout, or the
	// connection lost while waiting): it may or may not have happened. Repeating it with the
	// same idempotency key settles it — the key's record answers with the event if the first
	// attempt landed, and the append happens at most once either way.
	ErrUnconfirmed = errors.New("store: append sent but not confirmed")
	// ErrNotReplicated: the append happened, but the replicas the store's durability asks for
	// did not confirm it in time, so losing the primary now could lose it. Repeating it with the
	// same idempotency key appends nothing new and waits for the replicas again.
	ErrNotReplicated = errors.New("store: appended, not yet replicated")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
)

// Cursor is a position in one channel's log: the event with sequence Seq in the channel's
// incarnation Epoch. A channel gets a new epoch whenever its log starts over (its keys expired,
// the store was reset, the process restarted with the memory store), so a cursor from an earlier
// incarnation is never matched against new events. Seq 0 means "before the first event".
type Cursor struct {
	Epoch string
	Seq   uint64
}

// IsZero reports whether c is the position before everything, in any epoch.
func (c Cursor) IsZero() bool { return c.Seq == 0 }

// String encodes c as "<epoch>-<seq>"; an empty epoch is written "0".
func (c Cursor) String() string {
	e := c.Epoch
	if e == "" {
		e = "0"
	}
	return e + "-" + strconv.FormatUint(c.Seq, 10)
}

// MaxEpochLen bounds an epoch's length in a cursor.
const MaxEpochLen = 16

// ErrBadCursor is the error of ParseCursor (and of the engine's composite cursor parser).
var ErrBadCursor = errors.New("malformed cursor")

// ParseCursor is the inverse of Cursor.String.
func ParseCursor(s string) (Cursor, error) {
	i := strings.LastIndexByte(s, '-')
	if i <= 0 || i > MaxEpochLen || i == len(s)-1 {
		return Cursor{}, ErrBadCursor
	}
	epoch, digits := s[:i], s[i+1:]
	for j := 0; j < len(epoch); j++ {
		if c := epoch[j]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return Cursor{}, ErrBadCursor
		}
	}
	if len(digits) > 1 && digits[0] == '0' {
		return Cursor{}, ErrBadCursor
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || (digits[0] == '+') {
		return Cursor{}, ErrBadCursor
	}
	if epoch == "0" {
		epoch = ""
	}
	return Cursor{Epoch: epoch, Seq: seq}, nil
}

// Event is one entry of a channel's log.
type Event struct {
	Channel string
	Epoch   string
	Seq     uint64
	Name    string          // the event name, e.g. "MessageSent"
	Data    json.RawMessage // compact JSON, one line
	Time    int64           // unix milliseconds, assigned by the store
	// SocketID is the publisher's socket, kept so its own socket can be skipped on delivery
	// (Laravel's toOthers) — also in replayed history. It is never sent to subscribers.
	SocketID string
}

// Cursor returns the event's position.
func (e *Event) Cursor() Cursor { return Cursor{Epoch: e.Epoch, Seq: e.Seq} }

// AppendRequest is one publish.
type AppendRequest struct {
	Channel  string
	Name     string
	Data     json.RawMessage // must be valid compact JSON; the store does not check it
	SocketID string
	// IdempotencyKey, when set, makes the append happen at most once per (channel, key) for
	// the store's idempotency TTL: a repeat with the same Name, Data and SocketID returns the
	// first event with Duplicate set; a repeat with anything different fails with
	// ErrIdempotencyConflict.
	IdempotencyKey string
}

// AppendResult is what Append did.
type AppendResult struct {
	// Event is the appended event (or, for a duplicate, the first one). Its Data may share the
	// request's bytes.
	Event     Event
	Duplicate bool // the idempotency key was seen before; nothing was appended
}

// Page is the answer to Read.
type Page struct {
	Events []Event
	// Head is the position of the newest event (Seq 0 and empty Epoch if the channel has none).
	Head Cursor
	// Expired reports that the retained history no longer covers the cursor asked for: it
	// was trimmed, or is from another epoch. Events then start at the oldest retained event.
	Expired bool
}

// ChannelStats describes one channel's retained history.
type ChannelStats struct {
	Head       Cursor    // the newest event's position; Seq 0 when there is none
	Retained   int       // events kept for resuming
	Oldest     uint64    // the oldest retained event's sequence; 0 when none is retained
	OldestTime time.Time // when it was appended; zero when none is retained
	NewestTime time.Time // when the newest retained event was appended
	// Recent counts the retained events appended at or after the time Stats was asked
	// about. When OldestTime is after that time, history does not reach back so far and
	// Recent counts the retained events alone.
	Recent int
}

// Handler receives live events of the channels a store listens to.
type Handler interface {
	// HandleEvent is called once per appended event, in sequence order per channel, never
	// concurrently for the same channel. It must not block and must not call back into the store.
	HandleEvent(ev *Event)
	// HandleGap reports that live delivery of channel lost continuity (events may have been
	// missed); readers of that channel must catch up from the log.
	HandleGap(channel string)
	// HandleEphemeral receives a live-only message of a listened channel (see Broadcaster).
	// Same rules as HandleEvent: it must not block or call back into the store.
	HandleEphemeral(msg *Ephemeral)
}

// Store is the ordered per-channel log.
type Store interface {
	// Append adds an event to the end of its channel's log. It returns only once the event is
	// durable as far as the store goes. On ErrUnconfirmed the event may have been appended; on
	// any other error it was not. A retry with the same idempotency key is safe either way.
	Append(ctx context.Context, req AppendRequest) (AppendResult, error)
	// Read returns up to limit events after the cursor, oldest first. A zero cursor with an
	// empty epoch reads from the oldest retained event and is never Expired.
	Read(ctx context.Context, channel string, after Cursor, limit int) (Page, error)
	// Heads returns the newest position of each channel, in the order asked.
	Heads(ctx context.Context, channels []string) ([]Cursor, error)
	// Stats describes a channel's retained history for operators, counting the events
	// appended at or after since. A channel with no history has zero stats.
	Stats(ctx context.Context, channel string, since time.Time) (ChannelStats, error)
	// Listen starts live delivery of the channels' new events to h, and returns once every
	// event appended after it returns is certain to reach h. It also returns, per channel in
	// the order asked, the head it read once the channel was live: every event after that head
	// reaches h, so a reader may start there without asking the store again. (For a channel
	// already listened to, the head read when it became live.) Listen counts references: each
	// call needs one Unlisten. A store has one handler; every call must pass the same h.
	Listen(ctx context.Context, h Handler, channels ...string) ([]Cursor, error)
	// Unlisten drops one reference taken by Listen for each channel.
	Unlisten(channels ...string)
	// Ping reports whether the store can serve requests.
	Ping(ctx context.Context) error
	// Kind names the implementation ("memory", "redis").
	Kind() string
	// Close releases resources. It does not delete data.
	Close() error
}

// Retention bounds how much history a store keeps per channel.
type Retention struct {
	// MaxEvents is the most events kept per channel (approximately, for Redis). Default 1000.
	MaxEvents int
	// MaxAge drops events older than this; a channel without new events for MaxAge is
	// forgotten entirely (a later append starts a new epoch). Default 24h.
	MaxAge time.Duration
	// IdempotencyTTL is how long idempotency keys are remembered, independent of history
	// trimming. Default 24h.
	IdempotencyTTL time.Duration
}

// DefaultRetention is the history kept when a Retention field is unset: 1000 events per channel,
// for 24 hours, and idempotency keys remembered for 24 hours.
func DefaultRetention() Retention {
	return Retention{MaxEvents: 1000, MaxAge: 24 * time.Hour, IdempotencyTTL: 24 * time.Hour}
}

// WithDefaults fills unset fields with DefaultRetention's.
func (r Retention) WithDefaults() Retention {
	d := DefaultRetention()
	if r.MaxEvents <= 0 {
		r.MaxEvents = d.MaxEvents
	}
	if r.MaxAge <= 0 {
		r.MaxAge = d.MaxAge
	}
	if r.IdempotencyTTL <= 0 {
		r.IdempotencyTTL = d.IdempotencyTTL
	}
	return r
}

// Fingerprint identifies an append request's content, to tell a true repeat of an idempotent
// request from a different request that reuses its key.
func Fingerprint(req AppendRequest) string {
	h := sha256.New()
	for _, part := range []string{req.Name, string(req.Data), req.SocketID} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write([]byte(part))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Beginning is the cursor of a reader that wants the whole retained history: it reads from the
// oldest retained event and is never Expired. It has no string form.
var Beginning = Cursor{Epoch: "*"}

// PlanRead decides where a read after cursor starts, given the channel's head and the sequence
// of its oldest retained event (head.Seq+1 when none is retained). It returns the sequence to
// read after and whether the cursor fell outside the retained history. Every Store uses it, so
// all of them agree on what "expired" means.
func PlanRead(after, head Cursor, oldest uint64) (from uint64, expired bool) {
	if oldest == 0 {
		oldest = 1
	}
	first := oldest - 1 // read after this to start at the oldest retained event
	switch {
	case after == Beginning:
		return first, false
	case head.Seq == 0:
		// Nothing was ever appended in this epoch (or the channel was forgotten).
		return 0, after.Seq != 0
	case after.Seq == 0:
		// "Before the first event": fine as long as nothing was trimmed since.
		return first, first > 0
	case after.Epoch != head.Epoch, after.Seq < first:
		return first, true
	case after.Seq > head.Seq:
		// Past the head in the head's epoch: a failed Redis master had handed out events its
		// promoted replica never got (the channel starts a new epoch only at its next append).
		// Up to the head the log still holds what the reader already has, since an epoch never
		// gives a sequence twice: replaying it would repeat every retained event. So the reader
		// is told it lost something, and goes on from the head.
		return head.Seq, true
	default:
		return after.Seq, false
	}
}

// NewEpoch returns a fresh random epoch.
func NewEpoch() string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	// Never "0", which stands for "no epoch" in a cursor's text.
	return string(b[:])
}
