// Package stream is Herald's engine: sockets, their channel subscriptions, the fan-out of each
// published event to the sockets of its channel, cursors, and the merge of stored history with
// live events so a subscriber never loses, repeats or reorders an event.
//
// It owns no transport: it knows nothing of HTTP, Echo, SSE connections or long-poll requests —
// the server package turns sockets into those. It reads and listens to the ordered log only
// through the store.Store interface.
package stream

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-rt/herald/store"
)

// Errors that end a socket. Compare with errors.Is.
var (
	// ErrLagged: the socket's queue overflowed because its client read too slowly. The client
	// resumes from its cursor; the publisher and other sockets were never slowed down.
	ErrLagged = errors.New("stream: socket fell behind and was disconnected")
	// ErrShutdown: the hub is shutting down.
	ErrShutdown = errors.New("stream: server shutting down")
	// ErrClosed: the socket was closed.
	ErrClosed = errors.New("stream: socket closed")
)

// Options configures a Hub. The zero value gives the defaults.
type Options struct {
	// QueueSize is how many live events a socket may have waiting; more and it is dropped
	// (ErrLagged). Default 256.
	QueueSize int
	// ReadBatch is how many events one history read fetches. Default 256.
	ReadBatch int
	// Linger keeps a channel listened to for a while after its last socket leaves, so clients
	// that reconnect or poll again do not make the store subscribe and unsubscribe each time.
	// Default 30s.
	Linger time.Duration
	// Node names this process in socket ids and in the deployment's registry; the hubs of
	// one process (one per app) share it. Default: a random number.
	Node string
}

// DefaultOptions holds the defaults of Options; `herald serve`'s flags take theirs from it.
func DefaultOptions() Options {
	return Options{QueueSize: 256, ReadBatch: 256, Linger: 30 * time.Second}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.QueueSize <= 0 {
		o.QueueSize = d.QueueSize
	}
	if o.ReadBatch <= 0 {
		o.ReadBatch = d.ReadBatch
	}
	if o.Linger <= 0 {
		o.Linger = d.Linger
	}
	return o
}

// Hub fans events of the store out to sockets. Create it with New; it is the store's Handler.
type Hub struct {
	st   store.Store
	opts Options
	node string // the first part of this process's socket ids

	mu       sync.RWMutex // guards channels
	channels map[string]*channelState

	socketsMu sync.Mutex
	sockets   map[string]*Socket // by id
	closing   bool

	// counts is this node's share of the deployment's registry (see Register); its fields
	// are guarded by mu, so a subscription records its change under the lock it takes anyway.
	counts registryCounts

	nextSocket atomic.Uint64
	// Rare events, counted for Counters.
	historyExpired, gaps atomic.Uint64
	stop                 chan struct{}
	janitor              chan struct{}
	closeOnce            sync.Once
}

// listenTimeout bounds how long subscribing to new channels may take in the store.
const listenTimeout = 15 * time.Second

// channelState is a channel this node listens to and the sockets subscribed to it.
type channelState struct {
	name  string
	ready chan struct{} // closed once the store listens (or failed to)
	err   error         // set before ready is closed
	refs  int           // subscriptions, guarded by Hub.mu
	idle  time.Time     // when refs dropped to zero, guarded by Hub.mu

	mu   sync.RWMutex // guards subs; fan-out holds it for reading, joining for writing
	subs []*subscription

	// head is the newest position of the channel this node knows: the head Listen read, then
	// each event delivered. Fan-out moves it while holding mu for reading, so a socket joining
	// under mu for writing reads a head that no event delivered to it precedes, and starts
	// there without asking the store. Unknown before Listen answers and after a gap, until the
	// next event.
	headMu    sync.Mutex
	head      store.Cursor
	headKnown bool
	headSeen  bool // an event moved head: Listen's older answer must not overwrite it
}

// advance records the position of an event delivered now.
func (cs *channelState) advance(c store.Cursor) {
	cs.headMu.Lock()
	cs.head, cs.headKnown, cs.headSeen = c, true, true
	cs.headMu.Unlock()
}

// forgetHead records a gap: the events missed moved the head by an unknown amount.
func (cs *channelState) forgetHead() {
	cs.headMu.Lock()
	cs.headKnown = false
	cs.headMu.Unlock()
}

// listened records the head Listen read, unless an event already moved past it.
func (cs *channelState) listened(c store.Cursor) {
	cs.headMu.Lock()
	if !cs.headSeen {
		cs.head, cs.headKnown = c, true
	}
	cs.headMu.Unlock()
}

// knownHead is the head, when known. Call it holding mu for writing (joining the channel).
func (cs *channelState) knownHead() (store.Cursor, bool) {
	cs.headMu.Lock()
	defer cs.headMu.Unlock()
	return cs.head, cs.headKnown
}

var _ store.Handler = (*Hub)(nil)

// New returns a Hub that reads and listens to st. Call Close when done.
func New(st store.Store, opts Options) *Hub {
	opts = opts.withDefaults()
	if opts.Node == "" {
		opts.Node = NewNodeID()
	}
	h := &Hub{
		st:       st,
		opts:     opts,
		node:     opts.Node,
		channels: make(map[string]*channelState),
		sockets:  make(map[string]*Socket),
		stop:     make(chan struct{}),
		janitor:  make(chan struct{}),
	}
	go h.janitorLoop()
	return h
}

// Store returns the store the hub reads.
func (h *Hub) Store() store.Store { return h.st }

// HandleEvent implements store.Handler: it encodes the event once and queues the same message
// on every socket of the channel without ever blocking — a full queue marks that socket lagged.
func (h *Hub) HandleEvent(ev *store.Event) {
	cs := h.channel(ev.Channel)
	if cs == nil {
		return
	}
	cs.mu.RLock()
	cs.advance(ev.Cursor())
	if len(cs.subs) > 0 {
		cs.offer(NewMessage(ev))
	}
	cs.mu.RUnlock()
}

// HandleEphemeral implements store.Handler: live-only messages go to the channel's sockets
// like events, without touching their positions.
func (h *Hub) HandleEphemeral(e *store.Ephemeral) {
	cs := h.channel(e.Channel)
	if cs == nil {
		return
	}
	cs.mu.RLock()
	if len(cs.subs) > 0 {
		cs.offer(NewEphemeral(e))
	}
	cs.mu.RUnlock()
}

// HandleGap implements store.Handler: every socket of the channel catches up from the log.
func (h *Hub) HandleGap(channel string) {
	cs := h.channel(channel)
	if cs == nil {
		return
	}
	cs.mu.RLock()
	cs.forgetHead()
	if len(cs.subs) > 0 {
		h.gaps.Add(1)
		cs.offer(&Message{Channel: channel, gapped: true})
	}
	cs.mu.RUnlock()
}

func (h *Hub) channel(name string) *channelState {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.channels[name]
}

// offer queues one message on every socket of the channel on this node; call it holding mu
// for reading, and only when there are sockets, so nothing is encoded for nobody.
func (cs *channelState) offer(m *Message) {
	for _, sub := range cs.subs {
		sub.sock.offer(m)
	}
}

// acquire takes a reference on each channel, making the store listen to the ones that are new,
// and returns once all of them are live.
func (h *Hub) acquire(ctx context.Context, names []string) ([]*channelState, error) {
	states := make([]*channelState, len(names))
	var fresh []*channelState
	var freshNames []string
	h.mu.Lock()
	for i, name := range names {
		cs := h.channels[name]
		if cs == nil {
			cs = &channelState{name: name, ready: make(chan struct{})}
			h.channels[name] = cs
			fresh = append(fresh, cs)
			freshNames = append(freshNames, name)
		}
		cs.refs++
		h.counts.changed(name)
		states[i] = cs
	}
	h.mu.Unlock()
	if len(fresh) > 0 {
		// Other sockets may be waiting on these channels too: one caller going away must not
		// fail them all, so the listen is bounded by time rather than by this caller.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), listenTimeout)
		heads, err := h.st.Listen(lctx, h, freshNames...)
		cancel()
		if err != nil {
			h.mu.Lock()
			for _, cs := range fresh {
				if h.channels[cs.name] == cs {
					delete(h.channels, cs.name)
				}
			}
			h.mu.Unlock()
		}
		for i, cs := range fresh {
			if err == nil {
				cs.listened(heads[i])
			}
			cs.err = err
			close(cs.ready)
		}
	}
	for _, cs := range states {
		select {
		case <-cs.ready:
			if cs.err == nil {
				continue
			}
			h.release(states)
			return nil, cs.err
		case <-ctx.Done():
			h.release(states)
			return nil, ctx.Err()
		}
	}
	return states, nil
}

// release drops the references taken by acquire. The janitor stops listening to channels that
// stay unreferenced for the linger time.
func (h *Hub) release(states []*channelState) {
	now := time.Now()
	h.mu.Lock()
	for _, cs := range states {
		cs.refs--
		h.counts.changed(cs.name)
		if cs.refs == 0 {
			cs.idle = now
		}
	}
	h.mu.Unlock()
}

func (h *Hub) janitorLoop() {
	defer close(h.janitor)
	t := time.NewTicker(max(h.opts.Linger/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case now := <-t.C:
			h.forgetIdle(now.Add(-h.opts.Linger))
		}
	}
}

// forgetIdle stops listening to channels nobody has used since cutoff.
func (h *Hub) forgetIdle(cutoff time.Time) {
	var names []string
	h.mu.Lock()
	for name, cs := range h.channels {
		if cs.refs == 0 && cs.idle.Before(cutoff) && isClosed(cs.ready) && cs.err == nil {
			delete(h.channels, name)
			names = append(names, name)
		}
	}
	h.mu.Unlock()
	if len(names) > 0 {
		h.st.Unlisten(names...)
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// ListenedChannels reports how many channels the hub listens to; for tests and metrics.
func (h *Hub) ListenedChannels() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.channels)
}

// Sockets reports how many sockets are open.
func (h *Hub) Sockets() int {
	h.socketsMu.Lock()
	defer h.socketsMu.Unlock()
	return len(h.sockets)
}

// NewNodeID returns a random node id, as a hub takes when Options.Node is empty: digits only,
// so it never contains the '.' that ends it in a socket id.
func NewNodeID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return strconv.FormatUint(binary.BigEndian.Uint64(b[:])%1_000_000_000+1, 10)
}

func (h *Hub) newSocketID() string {
	return h.node + "." + strconv.FormatUint(h.nextSocket.Add(1), 10)
}

// Shutdown ends every open socket with ErrShutdown and refuses new ones. Transports then
// tell their clients to reconnect elsewhere.
func (h *Hub) Shutdown() {
	for _, s := range h.stopOpening() {
		s.kill(ErrShutdown)
	}
}

// stopOpening refuses new sockets from now on and returns the open ones.
func (h *Hub) stopOpening() []*Socket {
	h.socketsMu.Lock()
	defer h.socketsMu.Unlock()
	h.closing = true
	socks := make([]*Socket, 0, len(h.sockets))
	for _, s := range h.sockets {
		socks = append(socks, s)
	}
	return socks
}

// Drain ends every open socket with ErrShutdown, each at a random moment within period, so
// that their clients reconnect — to other nodes, once the load balancer has stopped sending
// new ones here — spread out rather than all at once. New sockets are refused (ErrShutdown)
// from the start. Drain returns when every socket has ended, or when ctx ends, having then
// ended the rest at once.
func (h *Hub) Drain(ctx context.Context, period time.Duration) {
	socks := h.stopOpening()
	timers := make([]*time.Timer, len(socks))
	for i, s := range socks {
		var after time.Duration
		if period > 0 {
			after = mrand.N(period)
		}
		timers[i] = time.AfterFunc(after, func() { s.kill(ErrShutdown) })
	}
	for i, s := range socks {
		select {
		case <-s.done:
		case <-ctx.Done():
			for j := i; j < len(socks); j++ {
				timers[j].Stop()
				socks[j].kill(ErrShutdown)
			}
			return
		}
	}
}

// Close shuts the hub down and stops listening to every channel. It does not close the store.
func (h *Hub) Close() {
	h.closeOnce.Do(func() {
		h.Shutdown()
		close(h.stop)
		<-h.janitor
		h.mu.Lock()
		names := make([]string, 0, len(h.channels))
		for name, cs := range h.channels {
			if isClosed(cs.ready) && cs.err == nil {
				names = append(names, name)
			}
		}
		clear(h.channels)
		h.mu.Unlock()
		if len(names) > 0 {
			h.st.Unlisten(names...)
		}
	})
}
