package stream

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
)

// Request says what a socket subscribes to and from where.
type Request struct {
	// Channels to subscribe to: valid names, at most channel.MaxPerSocket, no duplicates.
	Channels []string
	// Positions resumes channels after these cursors. A channel without a position starts at
	// its head (live only), unless FromBeginning is set.
	Positions map[string]store.Cursor
	// FromBeginning replays the retained history of channels without a position.
	FromBeginning bool
	// Composite makes the socket's cursor a composite cursor even for one channel — what a
	// multi-channel stream or poll sends.
	Composite bool
	// Exclude lists socket ids whose events this socket skips (besides its own).
	Exclude []string
	// Dynamic lets Subscribe and Unsubscribe change the channels later (a socket of the JS
	// adapter); its cursor is always composite.
	Dynamic bool
	// EnvelopesOnly says the reader sends events' JSON envelopes (long-poll), never SSE
	// frames: history read for it is encoded as envelopes alone, and only Envelope may be
	// called on those messages.
	EnvelopesOnly bool
}

// Delivery is one thing to send to a client: an event, or a resync notice.
type Delivery struct {
	// Msg is the event; nil for a resync notice.
	Msg *Message
	// ID is the socket's cursor after this delivery: the SSE `id:` of a composite stream.
	// For a one-channel socket it equals Msg's cursor and Msg.Frame() already carries it.
	ID string
	// Resync, when set, says the retained history did not cover the socket's cursor for these
	// channels: delivery goes on from the oldest retained event.
	Resync *Resync
	// Control, when set, is a notice of the socket itself (subscription succeeded or refused).
	Control *Control
}

// Control is a socket-level notice: herald:subscription_succeeded, herald:subscription_error.
type Control struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// Resync reports channels whose history was trimmed past the client's cursor.
type Resync struct {
	Channels []string `json:"channels"`
	Reason   string   `json:"reason"`
	Cursor   string   `json:"cursor"`
	// ChannelCursor is the channel's own position after the resync (the cursor to subscribe
	// it again with), where Cursor is the socket's.
	ChannelCursor string `json:"channel_cursor,omitempty"`
}

// Socket is one client connection's view of its channels: its queue of live events, its
// position in each channel, and the catch-up from the log. Next must be called from one
// goroutine at a time; Subscribe, Unsubscribe and Close may be called from any.
type Socket struct {
	hub       *Hub
	id        string
	composite bool
	// envelopesOnly: history is encoded as envelopes alone (Request.EnvelopesOnly).
	envelopesOnly bool

	// mu guards the subscription state below, which Subscribe and Unsubscribe change from
	// other goroutines while Next runs. Next holds it except while it waits on the queue.
	mu      sync.Mutex
	exclude []string
	subs    []*subscription // sorted by channel name
	control []Delivery      // notices owed to the client, sent before anything else
	dynamic bool            // subscriptions may change: never assume a single channel

	queue  queue
	lagged atomic.Bool
	onLag  atomic.Pointer[func()]
	done   chan struct{}
	errMu  sync.Mutex
	err    error

	catchingUp int       // subscriptions still reading history
	lastActive time.Time // when Next last returned something; heartbeats count from it

	// Wait blocks on the queue's ready signal alone — one channel receive, no select — so
	// every other reason to wake up (heartbeat due, context done, socket killed) signals it.
	timerMu     sync.Mutex // guards heartbeat, watched and stopWatch: Close may run beside Next
	heartbeat   *time.Timer
	beatPending atomic.Bool // the heartbeat timer is armed and has not fired
	watched     context.Context
	stopWatch   func() bool
	idBuf       []byte
}

// subscription is one socket's membership in one channel.
type subscription struct {
	sock      *Socket
	state     *channelState
	idx       int // position in state.subs, guarded by state.mu
	channel   string
	key       string // channelKey(channel)
	pos       store.Cursor
	catchup   bool
	beginning bool // the first history read starts at the oldest retained event
}

// Open creates a socket subscribed to req.Channels and returns once every channel is live:
// an event published after Open returns is certain to be delivered. History owed to the
// socket (from a cursor, or from the beginning) comes first from Next.
func (h *Hub) Open(ctx context.Context, req Request) (*Socket, error) {
	s := &Socket{
		hub:           h,
		id:            h.newSocketID(),
		composite:     req.Composite || req.Dynamic || len(req.Channels) != 1,
		dynamic:       req.Dynamic,
		envelopesOnly: req.EnvelopesOnly,
		exclude:       req.Exclude,
		queue:         newQueue(h.opts.QueueSize),
		done:          make(chan struct{}),
		lastActive:    time.Now(),
	}
	names := slices.Clone(req.Channels)
	slices.Sort(names)
	names = slices.Compact(names)
	h.socketsMu.Lock()
	if h.closing {
		h.socketsMu.Unlock()
		return nil, ErrShutdown
	}
	h.sockets[s.id] = s
	h.socketsMu.Unlock()

	states, err := h.acquire(ctx, names)
	if err != nil {
		h.forget(s)
		return nil, err
	}
	s.mu.Lock() // the socket is already findable by id: a Subscribe may come in
	defer s.mu.Unlock()
	s.subs = make([]*subscription, len(names))
	var live []int // subscriptions that start at a head the hub does not know
	for i, name := range names {
		sub := &subscription{sock: s, state: states[i], channel: name, key: channelKey(name)}
		startAtHead := false
		if pos, ok := req.Positions[name]; ok {
			sub.pos, sub.catchup = pos, true
		} else if req.FromBeginning {
			sub.catchup, sub.beginning = true, true
		} else {
			startAtHead = true
		}
		if sub.catchup {
			s.catchingUp++
		}
		s.subs[i] = sub
		st := sub.state
		st.mu.Lock()
		sub.idx = len(st.subs)
		st.subs = append(st.subs, sub)
		if startAtHead {
			// Joining under the fan-out's lock: the head the hub knows now is exactly where
			// the events this socket will be offered begin.
			var known bool
			if sub.pos, known = st.knownHead(); !known {
				live = append(live, i)
			}
		}
		st.mu.Unlock()
	}
	if len(live) > 0 {
		// Joined the live path first, so the head read now is a safe start: events after it
		// are queued, events before it are skipped by sequence.
		liveNames := make([]string, len(live))
		for j, i := range live {
			liveNames[j] = names[i]
		}
		heads, err := h.st.Heads(ctx, liveNames)
		if err != nil {
			subs := s.subs
			s.subs = nil
			s.kill(ErrClosed)
			h.forget(s)
			s.leave(subs)
			return nil, err
		}
		for j, i := range live {
			s.subs[i].pos = heads[j]
		}
	}
	return s, nil
}

// ID is the socket id (Pusher's "<digits>.<digits>").
func (s *Socket) ID() string { return s.id }

// Cursor is the socket's current position: the channel cursor of a one-channel socket, or a
// composite cursor.
func (s *Socket) Cursor() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursorLocked()
}

func (s *Socket) cursorLocked() string {
	s.idBuf = s.appendCursor(s.idBuf[:0])
	return string(s.idBuf)
}

func (s *Socket) appendCursor(b []byte) []byte {
	if s.composite || len(s.subs) != 1 {
		return appendComposite(b, s.subs)
	}
	return appendCursor(b, s.subs[0].pos)
}

// Done is closed when the socket ends for a reason of its own (Err tells which).
func (s *Socket) Done() <-chan struct{} { return s.done }

// Err is why the socket ended, or nil while it is open.
func (s *Socket) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

func (s *Socket) kill(err error) {
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
		close(s.done)
	}
	s.errMu.Unlock()
	s.wake()
}

// wake makes a waiting reader look at the socket's state.
func (s *Socket) wake() { s.queue.signal() }

func (s *Socket) heartbeatDue() {
	s.beatPending.Store(false)
	s.wake()
}

// offer queues m without blocking; a full queue marks the socket lagged.
func (s *Socket) offer(m *Message) {
	if s.queue.push(m) {
		return
	}
	if s.lagged.CompareAndSwap(false, true) {
		if f := s.onLag.Load(); f != nil {
			(*f)()
		}
	}
}

// OnLag sets f to run, once, the moment the socket falls behind: its queue is full, so Next
// will end it with ErrLagged. A transport whose writer may be stuck on a client that does not
// read uses it to cut that client off now rather than at its write timeout. f runs on the
// goroutine fanning events out and must not block.
func (s *Socket) OnLag(f func()) { s.onLag.Store(&f) }

// Close unsubscribes the socket. It is safe to call more than once.
func (s *Socket) Close() {
	s.kill(ErrClosed)
	s.hub.forget(s)
	s.timerMu.Lock()
	if s.stopWatch != nil {
		s.stopWatch()
	}
	if s.heartbeat != nil {
		s.heartbeat.Stop()
	}
	s.timerMu.Unlock()
	s.mu.Lock()
	subs := s.subs
	s.subs = nil
	s.mu.Unlock()
	s.leave(subs)
}

// leave removes subs from their channels' fan-out and drops the hub's references.
func (s *Socket) leave(subs []*subscription) {
	states := make([]*channelState, 0, len(subs))
	for _, sub := range subs {
		st := sub.state
		st.mu.Lock()
		if sub.idx >= 0 {
			last := len(st.subs) - 1
			st.subs[sub.idx] = st.subs[last]
			st.subs[sub.idx].idx = sub.idx
			st.subs[last] = nil
			st.subs = st.subs[:last]
			sub.idx = -1
			states = append(states, st)
		}
		st.mu.Unlock()
	}
	s.hub.release(states)
}

func (h *Hub) forget(s *Socket) {
	h.socketsMu.Lock()
	if h.sockets[s.id] == s {
		delete(h.sockets, s.id)
	}
	h.socketsMu.Unlock()
}

// Socket returns this node's open socket with id, or nil.
func (h *Hub) Socket(id string) *Socket {
	h.socketsMu.Lock()
	defer h.socketsMu.Unlock()
	return h.sockets[id]
}

// Node is this hub's node id: the part of its socket ids before the dot.
func (h *Hub) Node() string { return h.node }

// Next appends to out what the socket has for its client: owed history first, then live
// events, at most max deliveries. With nothing to deliver it waits up to wait and returns
// out unchanged at the timeout (time for a heartbeat). It returns an error when ctx ends or
// the socket ends (ErrLagged, ErrShutdown, ErrClosed); deliveries appended before the error
// are still valid.
func (s *Socket) Next(ctx context.Context, max int, wait time.Duration, out []Delivery) ([]Delivery, error) {
	for {
		var done bool
		var err error
		if out, done, err = s.TryNext(ctx, max, wait, out); done {
			return out, err
		}
		s.Wait()
	}
}

// TryNext is Next without the waiting: done reports that Next would return now with out and
// err; otherwise Wait blocks until the socket may have more, and TryNext is called again. A
// transport whose waiting goroutine must stay shallow — an HTTP/2 stream parks on its handler
// goroutine for hours, and a goroutine's stack shrinks only when little of it is in use —
// waits between its own calls rather than deep inside Next.
func (s *Socket) TryNext(ctx context.Context, max int, wait time.Duration, out []Delivery) (_ []Delivery, done bool, _ error) {
	start := len(out)
	if d := ctx.Done(); d != nil && s.watched != ctx {
		// Transports pass the same context on every call: watch it once, not per call.
		s.timerMu.Lock()
		if s.stopWatch != nil {
			s.stopWatch()
		}
		s.watched, s.stopWatch = ctx, context.AfterFunc(ctx, s.wake)
		s.timerMu.Unlock()
	}
	if err := s.Err(); err != nil {
		return out, true, err
	}
	if err := ctx.Err(); err != nil {
		return out, true, err
	}
	s.mu.Lock()
	out, ready, err := s.step(ctx, out, start, max)
	s.mu.Unlock()
	if err != nil || ready {
		if len(out) > start {
			s.lastActive = time.Now()
		}
		return out, true, err
	}
	deadline := s.lastActive.Add(wait)
	now := time.Now()
	if !now.Before(deadline) {
		s.lastActive = now
		return out, true, nil // time for a heartbeat
	}
	// The heartbeat timer is armed only when none is pending, not per event: a busy socket
	// pays nothing for it. A timer armed for an earlier deadline just wakes the reader once
	// more.
	if !s.beatPending.Load() {
		s.beatPending.Store(true)
		s.timerMu.Lock()
		if s.heartbeat == nil {
			s.heartbeat = time.AfterFunc(deadline.Sub(now), s.heartbeatDue)
		} else {
			s.heartbeat.Reset(deadline.Sub(now))
		}
		s.timerMu.Unlock()
	}
	return out, false, nil
}

// Wait blocks until the socket may have something for TryNext: a message queued, the
// heartbeat due, the socket ended or TryNext's context done. It may also return for nothing.
func (s *Socket) Wait() { <-s.queue.ready }

// step does everything Next can do without waiting, with s.mu held. ready reports that out
// should go to the client now.
func (s *Socket) step(ctx context.Context, out []Delivery, start, max int) (_ []Delivery, ready bool, _ error) {
	if len(s.control) > 0 {
		out = append(out, s.control...)
		clear(s.control)
		s.control = s.control[:0]
	}
	if s.lagged.Load() {
		if s.catchingUp == 0 {
			s.kill(ErrLagged)
			return out, true, ErrLagged
		}
		// Still replaying history: what the queue dropped is in the log, read it there.
		s.lagged.Store(false)
		s.drain()
		for _, sub := range s.subs {
			s.startCatchup(sub)
		}
	}
	out = s.takeQueued(out, start+max)
	if len(out)-start >= max {
		return out, true, nil
	}
	for s.catchingUp > 0 {
		var err error
		before := len(out)
		out, err = s.readHistory(ctx, out, start+max)
		if err != nil || len(out) > before {
			return out, true, err
		}
	}
	return out, len(out) > start, nil
}

// Subscribe adds channel to a dynamic socket: the client gets a subscription notice (data as
// given, e.g. the presence member list), then the history after cursor if one is given, then
// live events — no gap and no duplicate. exclude adds socket ids (the client's earlier
// sockets) whose events are skipped, also in replayed history. Subscribing to a channel the
// socket already has only repeats the notice.
func (s *Socket) Subscribe(ctx context.Context, ch string, cursor *store.Cursor, exclude []string, notice json.RawMessage) error {
	if err := s.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if !s.dynamic {
		s.mu.Unlock()
		return ErrNotDynamic
	}
	s.exclude = append(s.exclude, exclude...)
	if s.sub(ch) != nil {
		s.noticeLocked("herald:subscription_succeeded", ch, notice)
		s.mu.Unlock()
		s.wake()
		return nil
	}
	if len(s.subs) >= channel.MaxPerSocket {
		s.mu.Unlock()
		return ErrTooManyChannels
	}
	s.mu.Unlock()

	states, err := s.hub.acquire(ctx, []string{ch})
	if err != nil {
		return err
	}
	sub := &subscription{sock: s, state: states[0], channel: ch, key: channelKey(ch), catchup: true}
	st := sub.state
	st.mu.Lock()
	sub.idx = len(st.subs)
	st.subs = append(st.subs, sub)
	head, headKnown := st.knownHead()
	st.mu.Unlock()
	// Joined the live path first; now the start position. Live events that reach the socket
	// before the subscription is in s.subs are dropped, and the catch-up from pos reads them.
	switch {
	case cursor != nil:
		sub.pos = *cursor
	case headKnown:
		sub.pos = head
	default:
		heads, err := s.hub.st.Heads(ctx, []string{ch})
		if err != nil {
			s.leave([]*subscription{sub})
			return err
		}
		sub.pos = heads[0]
	}
	s.mu.Lock()
	if s.Err() != nil {
		s.mu.Unlock()
		s.leave([]*subscription{sub})
		return ErrClosed
	}
	if existing := s.sub(ch); existing != nil { // a concurrent Subscribe won
		s.noticeLocked("herald:subscription_succeeded", ch, notice)
		s.mu.Unlock()
		s.leave([]*subscription{sub})
		s.wake()
		return nil
	}
	i, _ := slices.BinarySearchFunc(s.subs, ch, compareSub)
	s.subs = slices.Insert(s.subs, i, sub)
	s.catchingUp++
	s.noticeLocked("herald:subscription_succeeded", ch, notice)
	s.mu.Unlock()
	s.wake()
	return nil
}

// Unsubscribe removes channel from a dynamic socket. It reports whether the socket had it.
func (s *Socket) Unsubscribe(channel string) bool {
	s.mu.Lock()
	i, ok := slices.BinarySearchFunc(s.subs, channel, compareSub)
	if !ok || !s.dynamic {
		s.mu.Unlock()
		return false
	}
	sub := s.subs[i]
	s.subs = slices.Delete(s.subs, i, i+1)
	if sub.catchup {
		s.catchingUp--
	}
	s.mu.Unlock()
	s.leave([]*subscription{sub})
	return true
}

// Refuse tells the client a subscription was refused (herald:subscription_error).
func (s *Socket) Refuse(channel string, data json.RawMessage) {
	s.mu.Lock()
	s.noticeLocked("herald:subscription_error", channel, data)
	s.mu.Unlock()
	s.wake()
}

// Has reports whether the socket is subscribed to channel.
func (s *Socket) Has(channel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := slices.BinarySearchFunc(s.subs, channel, compareSub)
	return ok
}

// Channels lists the socket's channels.
func (s *Socket) Channels() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.subs))
	for i, sub := range s.subs {
		out[i] = sub.channel
	}
	return out
}

func (s *Socket) noticeLocked(event, channel string, data json.RawMessage) {
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	s.control = append(s.control, Delivery{Control: &Control{Event: event, Channel: channel, Data: data}})
}

// Errors of dynamic subscriptions.
var (
	ErrNotDynamic      = errors.New("stream: the socket's channels are fixed")
	ErrTooManyChannels = errors.New("stream: too many channels on one socket")
)

func compareSub(sub *subscription, ch string) int {
	switch {
	case sub.channel < ch:
		return -1
	case sub.channel > ch:
		return 1
	}
	return 0
}

// drain empties the queue.
func (s *Socket) drain() { s.queue.clear() }

// takeQueued moves queued messages to out without waiting.
func (s *Socket) takeQueued(out []Delivery, limit int) []Delivery {
	q := &s.queue
	q.mu.Lock()
	for q.n > 0 && len(out) < limit {
		out = s.accept(q.popLocked(), out)
	}
	q.mu.Unlock()
	return out
}

func (s *Socket) sub(channel string) *subscription {
	if len(s.subs) == 1 && !s.dynamic {
		return s.subs[0] // a fixed socket is only sent its own channels' messages
	}
	i, ok := slices.BinarySearchFunc(s.subs, channel, compareSub)
	if !ok {
		return nil
	}
	return s.subs[i]
}

// accept merges one live message into the socket's positions.
func (s *Socket) accept(m *Message, out []Delivery) []Delivery {
	sub := s.sub(m.Channel)
	if sub == nil || (sub.catchup && !m.ephemeral) {
		// Channels still catching up read this event from the log.
		return out
	}
	switch {
	case m.ephemeral:
		if s.excluded(m.SocketID) {
			return out
		}
		return append(out, Delivery{Msg: m, ID: ""})
	case m.gapped:
		s.startCatchup(sub)
		return out
	case sub.pos.Seq == 0 && m.Cursor.Seq == 1,
		m.Cursor.Epoch == sub.pos.Epoch && m.Cursor.Seq == sub.pos.Seq+1:
		// The next event.
	case m.Cursor.Epoch == sub.pos.Epoch && m.Cursor.Seq <= sub.pos.Seq:
		return out // already delivered from history
	default:
		// A jump or another epoch: the log tells what was missed.
		s.startCatchup(sub)
		return out
	}
	sub.pos = m.Cursor
	if s.excluded(m.SocketID) {
		return out
	}
	return append(out, Delivery{Msg: m, ID: s.deliveryID(m)})
}

func (s *Socket) startCatchup(sub *subscription) {
	if !sub.catchup {
		sub.catchup = true
		s.catchingUp++
	}
}

func (s *Socket) deliveryID(m *Message) string {
	if !s.composite {
		return m.ID
	}
	return s.cursorLocked()
}

func (s *Socket) excluded(socketID string) bool {
	if socketID == "" {
		return false
	}
	return socketID == s.id || slices.Contains(s.exclude, socketID)
}

// readHistory reads one batch of owed history for the first channel still catching up.
func (s *Socket) readHistory(ctx context.Context, out []Delivery, limit int) ([]Delivery, error) {
	var sub *subscription
	for _, c := range s.subs {
		if c.catchup {
			sub = c
			break
		}
	}
	after := sub.pos
	if sub.beginning {
		after = store.Beginning
	}
	batch := min(s.hub.opts.ReadBatch, max(limit-len(out), 1))
	page, err := s.hub.st.Read(ctx, sub.channel, after, batch)
	if err != nil {
		return out, err
	}
	sub.beginning = false
	if page.Expired {
		s.hub.historyExpired.Add(1)
		if len(page.Events) > 0 {
			sub.pos = store.Cursor{Epoch: page.Events[0].Epoch, Seq: page.Events[0].Seq - 1}
		} else {
			sub.pos = page.Head
		}
		out = append(out, Delivery{
			Resync: &Resync{Channels: []string{sub.channel}, Reason: "history_expired", Cursor: s.cursorLocked(), ChannelCursor: sub.pos.String()},
			ID:     s.cursorLocked(),
		})
	}
	for i := range page.Events {
		ev := &page.Events[i]
		sub.pos = ev.Cursor()
		if s.excluded(ev.SocketID) {
			continue
		}
		var m *Message
		if s.envelopesOnly {
			m = newEnvelope(ev)
		} else {
			m = NewMessage(ev)
		}
		out = append(out, Delivery{Msg: m, ID: s.deliveryID(m)})
	}
	if len(page.Events) < batch {
		// Caught up: anything newer is in the queue (the socket joined the live path first).
		sub.catchup = false
		s.catchingUp--
	}
	return out, nil
}

// Terminate ends the socket from any goroutine: Next returns ErrClosed, and whoever reads the
// socket then closes it. Unlike Close it touches nothing Next uses.
func (s *Socket) Terminate() { s.kill(ErrClosed) }
