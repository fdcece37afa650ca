package redisstore

import (
	"cmp"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Live traffic uses sharded pub/sub (SSUBSCRIBE, SPUBLISH; Redis 7.0): a shard channel lives in
// the cluster slot of its name, so a notice published by the append script — which must stay
// in its channel's slot — reaches exactly the master that serves that slot and its subscribers
// there, instead of being broadcast to every node of the cluster as PUBLISH is. On one Redis
// (or one behind Sentinel) there is one master and everything below collapses to one link.
//
// A Store holds one link per master it needs, each one go-redis PubSub on that master's
// connection (ClusterClient.SSubscribe would pin all channels to the first one's node), read
// by a goroutine of its own that hands what it reads to the one receive loop. That loop is the
// only goroutine that delivers to the handler, so a channel's events stay in order whichever
// link carries them.
//
// Every subscription is a sub. It is routed to a link, SSUBSCRIBEd there, and then a marker
// PING is sent on the same link: the PONG proves the subscription is in effect, because one
// connection's commands run in order. Whatever breaks a subscription — its link failing, the
// server moving its slot to another master (Redis says so with an unsolicited sunsubscribe),
// a read the loop needed failing — sends the sub back to be routed again, and the confirmation
// of the new route makes the loop catch the channel up from its log. That one path covers
// reconnects, failovers and resharding alike.

// sub is one shard channel the Store subscribes to. Its fields are guarded by Store.mu.
type sub struct {
	name  string
	owner any // *listened, *serving or *replySub
	link  *link
	// marker is the sync PING whose PONG on link confirms the subscription; 0 once confirmed
	// (or while unrouted).
	marker uint64
}

// link is one pub/sub connection to one master.
type link struct {
	client *redis.Client // the master's client
	ps     *redis.PubSub
	// leaving counts the SUNSUBSCRIBEs this Store sent per channel and whose confirmation has
	// not been read yet, which tells them from the server's own (a slot moved). Guarded by
	// Store.mu.
	leaving map[string]int
}

// delivery is what a link's reader hands the receive loop: a message, or the error that ended
// the link.
type delivery struct {
	l   *link
	msg any
	err error
}

const (
	syncPrefix   = "herald-sync:"
	probePayload = "herald-probe"
	// movedDelay gives go-redis's cluster view (reloaded in the background) time to learn a
	// slot's new master before a moved subscription is routed again.
	movedDelay = 100 * time.Millisecond
)

var errUnresponsive = errors.New("redisstore: pub/sub connection unresponsive")

// masterFor returns the client of the master that serves name's slot.
func (s *Store) masterFor(name string) (*redis.Client, error) {
	if s.cluster == nil {
		return s.single, nil
	}
	return s.cluster.MasterForKey(s.ctx, name)
}

// linkForLocked returns the link to the master serving name, opening it if needed. The caller
// holds subMu.
func (s *Store) linkForLocked(name string) (*link, error) {
	c, err := s.masterFor(name)
	if err != nil {
		return nil, err
	}
	if l := s.links[c]; l != nil {
		return l, nil
	}
	l := &link{client: c, ps: c.SSubscribe(s.ctx), leaving: make(map[string]int)}
	s.links[c] = l
	s.ensureLoopLocked()
	s.readers.Add(1)
	go s.readLink(l)
	return l, nil
}

// ensureLoopLocked starts the receive loop. The caller holds subMu.
func (s *Store) ensureLoopLocked() {
	if s.loopDone == nil {
		s.loopDone = make(chan struct{})
		go s.receiveLoop(s.loopDone)
	}
}

// nextMarker numbers a sync PING; one sequence for every link, so a PONG with m confirms the
// subscriptions sent on its link before PING m.
func (s *Store) nextMarker() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marker++
	return s.marker
}

// routeLocked subscribes each sub on the link of its master and sends the marker that will
// confirm it. It returns the subs it could not route (and why); the others are on their way.
// The caller holds subMu; the subs are registered in s.subs and unrouted.
func (s *Store) routeLocked(subs []*sub) ([]*sub, error) {
	groups := make(map[*link][]*sub)
	var order []*link
	var failed []*sub
	var firstErr error
	for _, sb := range subs {
		l, err := s.linkForLocked(sb.name)
		if err != nil {
			failed, firstErr = append(failed, sb), cmp.Or(firstErr, err)
			continue
		}
		if groups[l] == nil {
			order = append(order, l)
		}
		groups[l] = append(groups[l], sb)
	}
	for _, l := range order {
		group := groups[l]
		names := make([]string, len(group))
		for i, sb := range group {
			names[i] = sb.name
		}
		err := s.perSlot(names, func(names ...string) error { return l.ps.SSubscribe(s.ctx, names...) })
		if err == nil {
			m := s.nextMarker()
			s.mu.Lock()
			for _, sb := range group {
				if s.subs[sb.name] == sb {
					sb.link, sb.marker = l, m
					s.waiting[sb] = struct{}{}
				}
			}
			s.mu.Unlock()
			err = l.ps.Ping(s.ctx, syncPrefix+strconv.FormatUint(m, 10))
		}
		if err != nil {
			// The link is broken: its reader reports it, and the loop routes everything on
			// it again, these included.
			failed, firstErr = append(failed, group...), cmp.Or(firstErr, err)
		}
	}
	return failed, firstErr
}

// perSlot runs a shard channel command for names: at once on one Redis, one name at a time
// on a cluster, where a command naming channels of different slots is refused (CROSSSLOT).
func (s *Store) perSlot(names []string, run func(names ...string) error) error {
	if s.cluster == nil {
		return run(names...)
	}
	for _, name := range names {
		if err := run(name); err != nil {
			return err
		}
	}
	return nil
}

// dropLocked forgets subs and unsubscribes them on their links. The caller holds subMu.
func (s *Store) dropLocked(subs []*sub) {
	byLink := make(map[*link][]string)
	s.mu.Lock()
	for _, sb := range subs {
		if s.subs[sb.name] != sb {
			continue
		}
		delete(s.subs, sb.name)
		delete(s.waiting, sb)
		if l := sb.link; l != nil && s.links[l.client] == l {
			l.leaving[sb.name]++
			byLink[l] = append(byLink[l], sb.name)
		}
		sb.link, sb.marker = nil, 0
	}
	s.mu.Unlock()
	if s.closed.Load() {
		return
	}
	for l, names := range byLink {
		// A failure leaves at worst a stray subscription whose messages the loop ignores.
		if err := s.perSlot(names, func(names ...string) error { return l.ps.SUnsubscribe(s.ctx, names...) }); err != nil {
			s.log.Debug().Err(err).Msg("redisstore: sunsubscribe")
		}
	}
}

// readLink reads l until it fails, handing everything to the receive loop. An idle connection
// is probed with a PING; one that answers nothing for another interval is silently dead (a
// failover can leave a TCP peer that never answers) and is reported as failed.
func (s *Store) readLink(l *link) {
	defer s.readers.Done()
	probing := false
	for {
		msg, err := l.ps.ReceiveTimeout(s.ctx, s.pingInterval)
		if s.closed.Load() {
			return
		}
		if err != nil && isIdleTimeout(err) {
			if !probing {
				probing = true
				if err = l.ps.Ping(s.ctx, probePayload); err == nil {
					continue
				}
			} else {
				err = errUnresponsive
			}
		}
		if err != nil {
			s.deliver(delivery{l: l, err: err})
			return
		}
		probing = false
		if !s.deliver(delivery{l: l, msg: msg}) {
			return
		}
	}
}

func (s *Store) deliver(d delivery) bool {
	select {
	case s.inbox <- d:
		return true
	case <-s.done:
		return false
	}
}

// closeLinks closes every link's connection, which ends its reader; Close calls it.
func (s *Store) closeLinks() {
	s.subMu.Lock()
	for c, l := range s.links {
		_ = l.ps.Close()
		delete(s.links, c)
	}
	s.subMu.Unlock()
	s.readers.Wait()
}

// loop is the receive loop's own state.
type loop struct {
	s *Store
	// unrouted are the subs to route again once the retry timer fires.
	unrouted []*sub
	retry    *time.Timer
	backoff  time.Duration
}

// receiveLoop is the only goroutine that calls the handler, so events of a channel are
// delivered in order and never concurrently.
func (s *Store) receiveLoop(done chan struct{}) {
	defer close(done)
	lp := &loop{s: s, retry: time.NewTimer(time.Hour)}
	lp.retry.Stop()
	defer lp.retry.Stop()
	for {
		select {
		case d := <-s.inbox:
			lp.handle(d)
		case <-lp.retry.C:
			lp.reroute()
		case <-s.done:
			return
		}
	}
}

func (lp *loop) handle(d delivery) {
	s := lp.s
	if d.err != nil {
		lp.linkFailed(d.l, d.err)
		return
	}
	switch m := d.msg.(type) {
	case *redis.Message:
		if !s.dispatchLive(m) { // live.go: ephemeral messages and the bus
			lp.onNotice(m)
		}
	case *redis.Pong:
		lp.onPong(d.l, m.Payload)
	case *redis.Subscription:
		if m.Kind == "sunsubscribe" {
			lp.onSunsubscribe(d.l, m.Channel)
		}
	}
}

// linkFailed drops a failed link and routes everything it carried again.
func (lp *loop) linkFailed(l *link, err error) {
	s := lp.s
	s.subMu.Lock()
	current := s.links[l.client] == l
	if current {
		delete(s.links, l.client)
	}
	s.subMu.Unlock()
	_ = l.ps.Close()
	if !current || s.closed.Load() {
		return
	}
	s.log.Warn().Err(err).Str("redis", l.client.Options().Addr).Msg("redisstore: pub/sub connection lost; subscribing again")
	var moved []*sub
	s.mu.Lock()
	for _, sb := range s.subs {
		if sb.link == l {
			moved = append(moved, sb)
		}
	}
	s.mu.Unlock()
	if s.cluster != nil {
		s.cluster.ReloadState(s.ctx) // a failover may have promoted another master
	}
	lp.requeue(moved, nextBackoff(lp.backoff))
}

// onSunsubscribe tells the confirmations of this Store's own SUNSUBSCRIBEs from the server's:
// those say the channel's slot now belongs to another master.
func (lp *loop) onSunsubscribe(l *link, name string) {
	s := lp.s
	s.mu.Lock()
	if n := l.leaving[name]; n > 0 {
		if n == 1 {
			delete(l.leaving, name)
		} else {
			l.leaving[name] = n - 1
		}
		s.mu.Unlock()
		return
	}
	sb := s.subs[name]
	s.mu.Unlock()
	if sb == nil || sb.link != l {
		return
	}
	s.log.Info().Str("shard_channel", name).Msg("redisstore: a slot moved to another master; following it")
	if s.cluster != nil {
		s.cluster.ReloadState(s.ctx)
	}
	lp.requeue([]*sub{sb}, movedDelay)
}

// requeue takes subs off their links and routes them again after delay (or the backoff, if
// longer).
func (lp *loop) requeue(subs []*sub, delay time.Duration) {
	s := lp.s
	s.mu.Lock()
	for _, sb := range subs {
		if s.subs[sb.name] != sb {
			continue
		}
		delete(s.waiting, sb)
		sb.link, sb.marker = nil, 0
		lp.unrouted = append(lp.unrouted, sb)
	}
	s.mu.Unlock()
	lp.retry.Reset(max(delay, lp.backoff))
}

// reroute routes the unrouted subs that are still wanted.
func (lp *loop) reroute() {
	s := lp.s
	s.subMu.Lock()
	if s.closed.Load() {
		s.subMu.Unlock()
		return
	}
	s.mu.Lock()
	subs := lp.unrouted[:0:0]
	for _, sb := range lp.unrouted {
		if s.subs[sb.name] == sb && sb.link == nil {
			subs = append(subs, sb)
		}
	}
	lp.unrouted = nil
	s.mu.Unlock()
	failed, err := s.routeLocked(subs)
	s.subMu.Unlock()
	if err != nil {
		s.log.Warn().Err(err).Int("subscriptions", len(failed)).Msg("redisstore: subscribing again failed; retrying")
		if s.cluster != nil {
			s.cluster.ReloadState(s.ctx)
		}
		lp.backoff = nextBackoff(lp.backoff)
		lp.requeue(failed, lp.backoff)
		return
	}
	lp.backoff = 0
}

// onPong confirms the subscriptions its marker covers on its link: new channels get their
// trackers initialized from the heads read now, channels already tracked (routed again) catch
// up from their logs, and the bus's subscriptions go into effect.
func (lp *loop) onPong(l *link, payload string) {
	text, ok := strings.CutPrefix(payload, syncPrefix)
	if !ok {
		return // a probe's answer
	}
	m, err := strconv.ParseUint(text, 10, 64)
	if err != nil {
		return
	}
	s := lp.s
	var fresh, again []*listened
	var bus []*sub
	s.mu.Lock()
	for sb := range s.waiting {
		if sb.link != l || sb.marker > m {
			continue
		}
		delete(s.waiting, sb)
		sb.marker = 0
		switch o := sb.owner.(type) {
		case *listened:
			if o.init {
				again = append(again, o)
			} else {
				fresh = append(fresh, o)
			}
		default:
			bus = append(bus, sb)
		}
	}
	s.mu.Unlock()
	for _, sb := range bus {
		s.confirmLive(sb) // live.go: Serve and Request wait for their subscriptions too
	}
	if len(fresh) > 0 {
		lp.initialize(fresh)
	}
	if len(again) > 0 {
		lp.catchUp(again)
	}
}

// nextBackoff paces retries after a failure: quickly at first, never slower than once a second,
// which bounds how long a subscription trails a failover once the new master is known.
func nextBackoff(d time.Duration) time.Duration {
	return min(max(2*d, 50*time.Millisecond), time.Second)
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
