// Package memstore is the embedded store: Herald's ordered log kept in this process's memory,
// bounded per channel by count and age. It has the same contract as the Redis store (package
// storetest checks both), so `herald serve` runs with no other server. Its history does not
// survive a restart; each channel then starts a new epoch, which readers detect.
package memstore

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-rt/herald/store"
)

// Options configures a Store. The zero value is usable.
type Options struct {
	Retention store.Retention
	// Now is the clock; tests may replace it. Defaults to time.Now.
	Now func() time.Time
	// SweepInterval is how often forgotten channels and idempotency keys are dropped.
	// Defaults to one minute.
	SweepInterval time.Duration
}

// Store is an in-memory store.Store. Create it with New.
type Store struct {
	ret     store.Retention
	now     func() time.Time
	handler atomic.Pointer[store.Handler]

	mu       sync.Mutex // guards channels
	channels map[string]*channel

	idemMu sync.Mutex // guards idem; taken inside a channel's lock, never the other way round
	idem   map[idemKey]idemEntry

	closed    atomic.Bool
	stop      chan struct{}
	sweepDone chan struct{}
}

type idemKey struct{ channel, key string }

type idemEntry struct {
	fingerprint string
	event       store.Event
	expires     time.Time
}

// channel is one channel's log: a ring of the newest events.
type channel struct {
	mu         sync.Mutex
	epoch      string
	seq        uint64
	ring       []store.Event // capacity grows up to MaxEvents
	start      int           // index of the oldest event in ring
	n          int           // events in ring
	listeners  int
	lastAppend time.Time
}

var _ store.Store = (*Store)(nil)

// New returns a ready Store. Call Close to stop its background sweeper.
func New(opts Options) *Store {
	s := &Store{
		ret:       opts.Retention.WithDefaults(),
		now:       opts.Now,
		channels:  make(map[string]*channel),
		idem:      make(map[idemKey]idemEntry),
		stop:      make(chan struct{}),
		sweepDone: make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	interval := opts.SweepInterval
	if interval <= 0 {
		interval = time.Minute
	}
	go s.sweepLoop(interval)
	return s
}

// Kind implements store.Store.
func (s *Store) Kind() string { return "memory" }

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return ctx.Err()
}

// Close implements store.Store.
func (s *Store) Close() error {
	if s.closed.CompareAndSwap(false, true) {
		close(s.stop)
		<-s.sweepDone
	}
	return nil
}

// lookup returns the channel's state, creating it when create is set.
func (s *Store) lookup(name string, create bool) *channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[name]
	if ch == nil && create {
		ch = &channel{epoch: store.NewEpoch(), lastAppend: s.now()}
		s.channels[name] = ch
	}
	return ch
}

// Append implements store.Store.
func (s *Store) Append(ctx context.Context, req store.AppendRequest) (store.AppendResult, error) {
	if s.closed.Load() {
		return store.AppendResult{}, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return store.AppendResult{}, err
	}
	var fp string
	if req.IdempotencyKey != "" {
		fp = store.Fingerprint(req)
	}
	for {
		ch := s.lookup(req.Channel, true)
		ch.mu.Lock()
		if ch.epoch == "" { // swept between lookup and lock
			ch.mu.Unlock()
			continue
		}
		res, err := s.appendLocked(ch, req, fp)
		ch.mu.Unlock()
		return res, err
	}
}

func (s *Store) appendLocked(ch *channel, req store.AppendRequest, fp string) (store.AppendResult, error) {
	now := s.now()
	key := idemKey{req.Channel, req.IdempotencyKey}
	if fp != "" {
		s.idemMu.Lock()
		prev, ok := s.idem[key]
		s.idemMu.Unlock()
		if ok && now.Before(prev.expires) {
			if prev.fingerprint != fp {
				return store.AppendResult{}, store.ErrIdempotencyConflict
			}
			return store.AppendResult{Event: prev.event, Duplicate: true}, nil
		}
	}
	ch.trimAge(now.Add(-s.ret.MaxAge))
	ch.seq++
	ev := store.Event{
		Channel:  req.Channel,
		Epoch:    ch.epoch,
		Seq:      ch.seq,
		Name:     req.Name,
		Data:     append([]byte(nil), req.Data...),
		Time:     now.UnixMilli(),
		SocketID: req.SocketID,
	}
	ch.push(ev, s.ret.MaxEvents)
	ch.lastAppend = now
	if fp != "" {
		s.idemMu.Lock()
		s.idem[key] = idemEntry{fingerprint: fp, event: ev, expires: now.Add(s.ret.IdempotencyTTL)}
		s.idemMu.Unlock()
	}
	if ch.listeners > 0 {
		if h := s.handler.Load(); h != nil {
			delivered := ev
			(*h).HandleEvent(&delivered)
		}
	}
	return store.AppendResult{Event: ev}, nil
}

func (c *channel) push(ev store.Event, limit int) {
	if c.n < len(c.ring) {
		c.ring[(c.start+c.n)%len(c.ring)] = ev
		c.n++
		return
	}
	if len(c.ring) < limit {
		// Grow: unroll the ring into a larger slice so memory follows actual use.
		size := min(max(2*len(c.ring), 8), limit)
		grown := make([]store.Event, size)
		for i := 0; i < c.n; i++ {
			grown[i] = c.ring[(c.start+i)%len(c.ring)]
		}
		c.ring, c.start = grown, 0
		c.ring[c.n] = ev
		c.n++
		return
	}
	// Full: overwrite the oldest.
	c.ring[c.start] = ev
	c.start = (c.start + 1) % len(c.ring)
}

// at returns the i-th oldest retained event.
func (c *channel) at(i int) *store.Event { return &c.ring[(c.start+i)%len(c.ring)] }

// trimAge drops events older than cutoff.
func (c *channel) trimAge(cutoff time.Time) {
	ms := cutoff.UnixMilli()
	for c.n > 0 && c.at(0).Time < ms {
		*c.at(0) = store.Event{} // release the data
		c.start = (c.start + 1) % len(c.ring)
		c.n--
	}
}

// oldest returns the sequence of the oldest retained event, or seq+1 when none is.
func (c *channel) oldest() uint64 {
	if c.n == 0 {
		return c.seq + 1
	}
	return c.at(0).Seq
}

func (c *channel) head() store.Cursor {
	if c.seq == 0 {
		return store.Cursor{}
	}
	return store.Cursor{Epoch: c.epoch, Seq: c.seq}
}

// Read implements store.Store.
func (s *Store) Read(ctx context.Context, name string, after store.Cursor, limit int) (store.Page, error) {
	if s.closed.Load() {
		return store.Page{}, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return store.Page{}, err
	}
	ch := s.lookup(name, false)
	if ch == nil {
		_, expired := store.PlanRead(after, store.Cursor{}, 0)
		return store.Page{Expired: expired}, nil
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.trimAge(s.now().Add(-s.ret.MaxAge))
	head := ch.head()
	from, expired := store.PlanRead(after, head, ch.oldest())
	page := store.Page{Head: head, Expired: expired}
	if from >= ch.seq || limit <= 0 {
		return page, nil
	}
	skip := int(from + 1 - ch.oldest()) // index of the first event to return
	count := min(ch.n-skip, limit)
	page.Events = make([]store.Event, count)
	for i := range count {
		page.Events[i] = *ch.at(skip + i)
	}
	return page, nil
}

// Stats implements store.Store.
func (s *Store) Stats(ctx context.Context, name string, since time.Time) (store.ChannelStats, error) {
	if s.closed.Load() {
		return store.ChannelStats{}, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return store.ChannelStats{}, err
	}
	ch := s.lookup(name, false)
	if ch == nil {
		return store.ChannelStats{}, nil
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.trimAge(s.now().Add(-s.ret.MaxAge))
	st := store.ChannelStats{Head: ch.head(), Retained: ch.n}
	if ch.n == 0 {
		return st, nil
	}
	st.Oldest = ch.at(0).Seq
	st.OldestTime = time.UnixMilli(ch.at(0).Time)
	st.NewestTime = time.UnixMilli(ch.at(ch.n - 1).Time)
	ms := since.UnixMilli()
	for i := ch.n - 1; i >= 0 && ch.at(i).Time >= ms; i-- {
		st.Recent++
	}
	return st, nil
}

// Heads implements store.Store.
func (s *Store) Heads(ctx context.Context, channels []string) ([]store.Cursor, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	heads := make([]store.Cursor, len(channels))
	for i, name := range channels {
		if ch := s.lookup(name, false); ch != nil {
			ch.mu.Lock()
			heads[i] = ch.head()
			ch.mu.Unlock()
		}
	}
	return heads, nil
}

// Listen implements store.Store. Live delivery is synchronous with Append, so the channel is
// live as soon as the listener is counted.
func (s *Store) Listen(ctx context.Context, h store.Handler, channels ...string) ([]store.Cursor, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.handler.CompareAndSwap(nil, &h)
	heads := make([]store.Cursor, len(channels))
	for i, name := range channels {
		for {
			ch := s.lookup(name, true)
			ch.mu.Lock()
			if ch.epoch == "" { // swept between lookup and lock
				ch.mu.Unlock()
				continue
			}
			ch.listeners++
			heads[i] = ch.head()
			ch.mu.Unlock()
			break
		}
	}
	return heads, nil
}

// Unlisten implements store.Store.
func (s *Store) Unlisten(channels ...string) {
	for _, name := range channels {
		if ch := s.lookup(name, false); ch != nil {
			ch.mu.Lock()
			if ch.listeners > 0 {
				ch.listeners--
			}
			ch.mu.Unlock()
		}
	}
}

func (s *Store) sweepLoop(interval time.Duration) {
	defer close(s.sweepDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.sweep()
		}
	}
}

// sweep forgets channels nobody listens to whose history has aged out, and expired
// idempotency keys, so memory follows the live set rather than every name ever used.
func (s *Store) sweep() {
	now := s.now()
	cutoff := now.Add(-s.ret.MaxAge)
	s.mu.Lock()
	for name, ch := range s.channels {
		ch.mu.Lock()
		ch.trimAge(cutoff)
		if ch.listeners == 0 && ch.n == 0 && (ch.seq == 0 || !ch.lastAppend.After(cutoff)) {
			ch.epoch = "" // tells a concurrent Append or Listen holding ch to look up again
			delete(s.channels, name)
		}
		ch.mu.Unlock()
	}
	s.mu.Unlock()
	s.idemMu.Lock()
	for k, e := range s.idem {
		if !now.Before(e.expires) {
			delete(s.idem, k)
		}
	}
	s.idemMu.Unlock()
}
