package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
)

// listened is one channel's live state. refs and marker are guarded by Store.mu; the
// continuity fields belong to the receive loop alone. A channel that is unlistened and
// listened again gets a fresh listened, so the loop never sees an old one come back to life.
type listened struct {
	refs int
	// marker is the sync PING sent after this channel's SUBSCRIBE: its PONG proves Redis
	// processed the SUBSCRIBE, because one connection's commands run in order.
	marker uint64
	ready  chan struct{} // closed once confirmed and the tracker is initialized

	// Continuity tracker: the last sequence delivered, in epoch ("" before the channel had a
	// log, in which case the first epoch seen is adopted).
	init  bool
	epoch string
	last  uint64
	// head is the position read when the channel became live, set once before ready is
	// closed and never changed: what Listen answers.
	head store.Cursor
}

const (
	syncPrefix   = "herald-sync:"
	probePayload = "herald-probe"
	// catchUpPage bounds each read that refills missed events.
	catchUpPage = 512
	// catchUpChannels bounds how many channels share one catch-up MULTI, which holds Redis
	// while it runs.
	catchUpChannels = 32
)

// Listen implements store.Store. A channel's first reference SUBSCRIBEs and sends a marker
// PING; Listen returns when the loop has seen the marker's PONG (so Redis has the
// subscription) and has then read the channel's head (so every later append has a larger
// sequence, whose notice — or the refill of a lost one — reaches h).
func (s *Store) Listen(ctx context.Context, h store.Handler, channels ...string) ([]store.Cursor, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, ch := range channels {
		if err := checkChannel(ch); err != nil {
			return nil, err
		}
	}
	if len(channels) == 0 {
		return nil, nil
	}
	s.handler.CompareAndSwap(nil, &h)

	s.subMu.Lock()
	if s.closed.Load() {
		s.subMu.Unlock()
		return nil, store.ErrClosed
	}
	s.ensurePubSubLocked() // live.go: shared with the bus
	sts := make([]*listened, 0, len(channels))
	var fresh []*listened
	var names []string
	s.mu.Lock()
	for _, ch := range channels {
		st := s.chans[ch]
		if st == nil {
			st = &listened{ready: make(chan struct{})}
			s.chans[ch] = st
			s.pending[ch] = st
			fresh = append(fresh, st)
			names = append(names, s.noticeChannel(ch))
		}
		st.refs++
		sts = append(sts, st)
	}
	s.mu.Unlock()
	var err error
	if len(fresh) > 0 {
		// The store's context, not the caller's: a canceled caller must not make go-redis
		// drop the connection every other listener shares.
		if err = s.ps.Subscribe(s.ctx, names...); err == nil {
			s.mu.Lock()
			s.marker++
			m := s.marker
			for _, st := range fresh {
				st.marker = m
			}
			s.mu.Unlock()
			err = s.ps.Ping(s.ctx, syncPrefix+strconv.FormatUint(m, 10))
		}
		if err != nil {
			s.unlistenLocked(channels)
		}
	}
	s.subMu.Unlock()
	if err != nil {
		return nil, s.wrapErr(ctx, "listen", err)
	}

	heads := make([]store.Cursor, len(sts))
	for i, st := range sts {
		select {
		case <-st.ready:
			heads[i] = st.head
		case <-ctx.Done():
			s.Unlisten(channels...)
			return nil, ctx.Err()
		case <-s.done:
			return nil, store.ErrClosed
		}
	}
	return heads, nil
}

// Unlisten implements store.Store.
func (s *Store) Unlisten(channels ...string) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.unlistenLocked(channels)
}

func (s *Store) unlistenLocked(channels []string) {
	var gone []string
	s.mu.Lock()
	for _, ch := range channels {
		st := s.chans[ch]
		if st == nil {
			continue
		}
		if st.refs--; st.refs <= 0 {
			delete(s.chans, ch)
			delete(s.pending, ch)
			gone = append(gone, s.noticeChannel(ch))
		}
	}
	s.mu.Unlock()
	if len(gone) > 0 && s.ps != nil && !s.closed.Load() {
		// A failure leaves at worst a stray subscription whose notices the loop ignores;
		// go-redis has already dropped the channels from what it resubscribes.
		if err := s.ps.Unsubscribe(s.ctx, gone...); err != nil {
			s.log.Debug().Err(err).Msg("redisstore: unsubscribe")
		}
	}
}

// loop is the receive loop's own state.
type loop struct {
	s *Store
	// resyncMarker is the marker sent after the last (re)subscription of everything; its PONG
	// means the subscriptions are back, and every tracked channel must catch up from the log.
	resyncMarker uint64
	// failed asks for a resync: a read the loop needed could not be done.
	failed bool
}

// receiveLoop reads the pub/sub connection. It is the only reader, and the only goroutine
// that calls the handler, so events of a channel are delivered in order and never
// concurrently.
func (s *Store) receiveLoop(done chan struct{}) {
	defer close(done)
	lp := &loop{s: s}
	var backoff time.Duration
	resync, probing := false, false
	for !s.closed.Load() {
		if resync {
			if !s.sleep(backoff) {
				return
			}
			if err := lp.resync(); err != nil {
				s.log.Warn().Err(err).Msg("redisstore: pub/sub resubscribe failed")
				backoff = nextBackoff(backoff)
				continue
			}
			resync = false
		}
		s.subMu.Lock()
		ps := s.ps
		s.subMu.Unlock()
		msg, err := ps.ReceiveTimeout(s.ctx, s.pingInterval)
		if s.closed.Load() {
			return
		}
		if err != nil {
			if isIdleTimeout(err) {
				if probing {
					// A whole interval without even the probe's PONG: the connection is
					// silently dead (a failover can leave a TCP peer that never answers).
					// go-redis cannot be told to reconnect, so start a new PubSub.
					s.log.Warn().Msg("redisstore: pub/sub connection unresponsive, reconnecting")
					s.replacePubSub()
					resync, probing = true, false
					continue
				}
				probing = true
				if err := ps.Ping(s.ctx, probePayload); err != nil {
					resync, probing = true, false
				}
				continue
			}
			s.log.Warn().Err(err).Msg("redisstore: pub/sub receive failed")
			resync, probing = true, false
			backoff = nextBackoff(backoff)
			continue
		}
		probing = false
		switch m := msg.(type) {
		case *redis.Message:
			if !s.dispatchLive(m) { // live.go: ephemeral messages and the bus
				lp.onNotice(m)
			}
		case *redis.Pong:
			lp.onPong(m.Payload)
		}
		if lp.failed {
			lp.failed, resync = false, true
			backoff = nextBackoff(backoff)
		} else {
			backoff = 0
		}
	}
}

// sleep waits d unless the store closes first.
func (s *Store) sleep(d time.Duration) bool {
	if d <= 0 {
		return !s.closed.Load()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

func nextBackoff(d time.Duration) time.Duration {
	return min(max(2*d, 50*time.Millisecond), 2*time.Second)
}

// isIdleTimeout tells the read deadline of ReceiveTimeout (nothing arrived) from a failure
// to connect, which is also a timeout when the dial times out.
func isIdleTimeout(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *Store) replacePubSub() {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	if s.closed.Load() {
		return
	}
	old := s.ps
	s.ps = s.client.Subscribe(s.ctx)
	_ = old.Close()
}

// resync subscribes every listened channel again (harmless where Redis still has it: it just
// confirms) and sends a marker whose PONG starts the catch-up. It covers every way a
// subscription can be lost: a reconnect go-redis made on its own, a SUBSCRIBE written to a
// dying connection, a replaced PubSub.
func (lp *loop) resync() error {
	s := lp.s
	s.subMu.Lock()
	defer s.subMu.Unlock()
	if s.closed.Load() {
		return store.ErrClosed
	}
	s.mu.Lock()
	names := make([]string, 0, len(s.chans))
	for ch := range s.chans {
		names = append(names, s.noticeChannel(ch))
	}
	s.marker++
	m := s.marker
	s.mu.Unlock()
	names = append(names, s.liveChannels()...) // live.go: the bus's nodes and reply channel
	if len(names) > 0 {
		if err := s.ps.Subscribe(s.ctx, names...); err != nil {
			return err
		}
	}
	if err := s.ps.Ping(s.ctx, syncPrefix+strconv.FormatUint(m, 10)); err != nil {
		return err
	}
	lp.resyncMarker = m
	return nil
}

// onPong confirms the subscriptions its marker covers: it initializes their trackers from
// the heads read now, and after a resync catches up every channel that was already tracked.
func (lp *loop) onPong(payload string) {
	text, ok := strings.CutPrefix(payload, syncPrefix)
	if !ok {
		return // a probe's answer
	}
	m, err := strconv.ParseUint(text, 10, 64)
	if err != nil {
		return
	}
	s := lp.s
	s.confirmLive(m) // live.go: Serve and Request wait for their subscriptions too
	catchUp := lp.resyncMarker != 0 && m >= lp.resyncMarker
	var readyNames, trackedNames []string
	var ready, tracked []*listened
	s.mu.Lock()
	for ch, st := range s.pending {
		if st.marker != 0 && st.marker <= m {
			readyNames, ready = append(readyNames, ch), append(ready, st)
			delete(s.pending, ch)
		}
	}
	if catchUp {
		for ch, st := range s.chans {
			if st.init {
				trackedNames, tracked = append(trackedNames, ch), append(tracked, st)
			}
		}
	}
	s.mu.Unlock()

	if len(ready) > 0 {
		heads, err := s.readHeads(s.ctx, readyNames)
		if err != nil {
			s.log.Warn().Err(err).Msg("redisstore: reading heads of new subscriptions failed")
			s.mu.Lock()
			for i, st := range ready {
				if s.chans[readyNames[i]] == st {
					s.pending[readyNames[i]] = st // the resync's marker will cover it
				}
			}
			s.mu.Unlock()
			lp.failed = true
		} else {
			for i, st := range ready {
				st.epoch, st.last, st.init, st.head = heads[i].Epoch, heads[i].Seq, true, heads[i]
				close(st.ready)
			}
		}
	}
	if catchUp {
		lp.resyncMarker = 0
		if err := lp.catchUp(trackedNames, tracked); err != nil {
			s.log.Warn().Err(err).Msg("redisstore: catching up after a reconnect failed")
			lp.failed = true
		}
	}
}

// catchUp delivers what each channel's log holds after its tracker, in pipelined rounds.
func (lp *loop) catchUp(names []string, sts []*listened) error {
	for len(names) > 0 {
		n := min(len(names), catchUpChannels)
		batchNames, batch := names[:n], sts[:n]
		names, sts = names[n:], sts[n:]
		for len(batchNames) > 0 {
			afters := make([]int64, len(batch))
			for i, st := range batch {
				afters[i] = int64(st.last)
			}
			tails, err := lp.s.readTails(lp.s.ctx, batchNames, afters, catchUpPage)
			if err != nil {
				return err
			}
			var moreNames []string
			var more []*listened
			for i, st := range batch {
				if lp.apply(batchNames[i], st, &tails[i]) {
					moreNames, more = append(moreNames, batchNames[i]), append(more, st)
				}
			}
			batchNames, batch = moreNames, more
		}
	}
	return nil
}

// apply delivers a tail read after st.last and reports whether more remains to be read. A log
// that started over or no longer holds the next event is a gap: the handler is told, and the
// tracker moves to the head.
func (lp *loop) apply(ch string, st *listened, t *tail) bool {
	h := *lp.s.handler.Load()
	if st.epoch == "" && st.last == 0 {
		st.epoch = t.epoch
	}
	if t.epoch != st.epoch {
		h.HandleGap(ch)
		st.epoch, st.last = t.epoch, t.head
		return false
	}
	from := st.last
	for i := range t.events {
		ev := &t.events[i]
		if ev.Seq <= st.last {
			continue
		}
		if ev.Seq != st.last+1 {
			h.HandleGap(ch)
			st.last = t.head
			return false
		}
		h.HandleEvent(ev)
		st.last = ev.Seq
	}
	if st.last > from {
		lp.s.log.Debug().Str("channel", ch).Uint64("after", from).Uint64("through", st.last).Msg("redisstore: refilled from the log")
	}
	if len(t.events) == 0 && t.head > st.last {
		h.HandleGap(ch) // trimmed or aged out before it could be refilled
		st.last = t.head
		return false
	}
	return len(t.events) == catchUpPage && st.last < t.head
}

// onNotice delivers a live event, refilling from the log first when notices were lost.
func (lp *loop) onNotice(msg *redis.Message) {
	s := lp.s
	ch, ok := s.channelOfNotice(msg.Channel)
	if !ok {
		return
	}
	s.mu.Lock()
	st := s.chans[ch]
	s.mu.Unlock()
	if st == nil || !st.init {
		// Not listened, or not yet confirmed: such an event was appended before Listen
		// returned, and the head read at confirmation covers it.
		return
	}
	ev, err := decodeNotice(ch, msg.Payload)
	if err != nil {
		s.log.Error().Err(err).Str("channel", ch).Msg("redisstore: malformed notice")
		return
	}
	h := *s.handler.Load()
	if st.epoch == "" && st.last == 0 {
		st.epoch = ev.Epoch
	}
	if ev.Epoch != st.epoch {
		// The log started over: what came before this event in the new epoch is only in
		// the log now.
		h.HandleGap(ch)
		st.epoch, st.last = ev.Epoch, ev.Seq-1
	}
	switch {
	case ev.Seq <= st.last:
		return // already delivered, by a refill
	case ev.Seq == st.last+1:
		h.HandleEvent(&ev)
		st.last = ev.Seq
		return
	}
	// Notices were lost (pub/sub is at most once): refill from the log, which holds this
	// event too since the script publishes only after adding it.
	for {
		tails, err := s.readTails(s.ctx, []string{ch}, []int64{int64(st.last)}, catchUpPage)
		if err != nil {
			s.log.Warn().Err(err).Str("channel", ch).Msg("redisstore: refilling lost notices failed")
			lp.failed = true // the resync's catch-up delivers them
			return
		}
		if !lp.apply(ch, st, &tails[0]) {
			break
		}
	}
}

// decodeNotice parses "<epoch>:<seq>:<time>:<len name>:<len socket id>:<name><socket id><data>",
// the compact form the append script publishes.
func decodeNotice(ch, payload string) (store.Event, error) {
	var head [5]string
	rest := payload
	for i := range head {
		var ok bool
		if head[i], rest, ok = strings.Cut(rest, ":"); !ok {
			return store.Event{}, fmt.Errorf("notice %.40q: missing field %d", payload, i+1)
		}
	}
	seq, err1 := strconv.ParseUint(head[1], 10, 64)
	t, err2 := strconv.ParseInt(head[2], 10, 64)
	nameLen, err3 := strconv.Atoi(head[3])
	sidLen, err4 := strconv.Atoi(head[4])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return store.Event{}, fmt.Errorf("notice %.40q: %w", payload, err)
	}
	if nameLen < 0 || sidLen < 0 || nameLen+sidLen > len(rest) {
		return store.Event{}, fmt.Errorf("notice %.40q: bad lengths", payload)
	}
	return store.Event{
		Channel:  ch,
		Epoch:    head[0],
		Seq:      seq,
		Name:     rest[:nameLen],
		SocketID: rest[nameLen : nameLen+sidLen],
		Data:     []byte(rest[nameLen+sidLen:]),
		Time:     t,
	}, nil
}
