package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
)

// listened is one channel's live state. refs is guarded by Store.mu; the continuity fields
// belong to the receive loop alone. A channel that is unlistened and listened again gets a
// fresh listened, so the loop never sees an old one come back to life.
type listened struct {
	sub  sub
	refs int
	// ready is closed once the subscription is confirmed and the tracker initialized.
	ready chan struct{}

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
	// catchUpPage bounds each read that refills missed events.
	catchUpPage = 512
	// catchUpChannels bounds how many channels share one catch-up MULTI, which holds Redis
	// while it runs.
	catchUpChannels = 32
)

// Listen implements store.Store. A channel's first reference subscribes (see shard.go);
// Listen returns when the loop has seen the subscription confirmed and has then read the
// channel's head, so every later append has a larger sequence, whose notice — or the refill
// of a lost one — reaches h.
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
	sts := make([]*listened, 0, len(channels))
	var fresh []*sub
	s.mu.Lock()
	for _, ch := range channels {
		st := s.chans[ch]
		if st == nil {
			st = &listened{ready: make(chan struct{})}
			st.sub = sub{name: s.noticeChannel(ch), owner: st}
			s.chans[ch] = st
			s.subs[st.sub.name] = &st.sub
			fresh = append(fresh, &st.sub)
		}
		st.refs++
		sts = append(sts, st)
	}
	s.mu.Unlock()
	var err error
	if len(fresh) > 0 {
		if _, err = s.routeLocked(fresh); err != nil {
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
	var gone []*sub
	s.mu.Lock()
	for _, ch := range channels {
		st := s.chans[ch]
		if st == nil {
			continue
		}
		if st.refs--; st.refs <= 0 {
			delete(s.chans, ch)
			gone = append(gone, &st.sub)
		}
	}
	s.mu.Unlock()
	if len(gone) > 0 {
		s.dropLocked(gone)
	}
}

// initialize reads the heads of newly confirmed channels and starts their trackers there.
func (lp *loop) initialize(sts []*listened) {
	s := lp.s
	names := make([]string, len(sts))
	for i, st := range sts {
		names[i] = s.channelOf(st)
	}
	heads, err := s.readHeads(s.ctx, names)
	if err != nil {
		s.log.Warn().Err(err).Msg("redisstore: reading heads of new subscriptions failed")
		lp.requeueListened(sts)
		return
	}
	for i, st := range sts {
		st.epoch, st.last, st.init, st.head = heads[i].Epoch, heads[i].Seq, true, heads[i]
		close(st.ready)
	}
}

// requeueListened routes channels again after a read the loop needed failed: the new
// confirmation retries it.
func (lp *loop) requeueListened(sts []*listened) {
	subs := make([]*sub, len(sts))
	for i, st := range sts {
		subs[i] = &st.sub
	}
	lp.backoff = nextBackoff(lp.backoff)
	lp.requeue(subs, lp.backoff)
}

func (s *Store) channelOf(st *listened) string {
	ch, _ := s.channelOfNotice(st.sub.name)
	return ch
}

// catchUp delivers what each channel's log holds after its tracker, in pipelined rounds. A
// channel whose read fails is routed again, and caught up when that is confirmed.
func (lp *loop) catchUp(sts []*listened) {
	s := lp.s
	for len(sts) > 0 {
		n := min(len(sts), catchUpChannels)
		batch := sts[:n]
		sts = sts[n:]
		for len(batch) > 0 {
			names := make([]string, len(batch))
			afters := make([]int64, len(batch))
			for i, st := range batch {
				names[i], afters[i] = s.channelOf(st), int64(st.last)
			}
			tails, err := s.readTails(s.ctx, names, afters, catchUpPage)
			if err != nil {
				s.log.Warn().Err(err).Msg("redisstore: catching up from the log failed")
				lp.requeueListened(append(batch, sts...))
				return
			}
			var more []*listened
			for i, st := range batch {
				if lp.apply(names[i], st, &tails[i]) {
					more = append(more, st)
				}
			}
			batch = more
		}
	}
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
			lp.requeueListened([]*listened{st}) // the new route's catch-up delivers them
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
