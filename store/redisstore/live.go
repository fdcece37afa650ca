package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
)

// Ephemeral messages and the node bus ride on the Store's shard channels (shard.go), beside the
// event notices:
//
//	<prefix>{<channel>}:n   also carries ephemeral messages, told apart by ephemeralMark
//	<prefix>node:<node>     requests to a node; subscribed by the Store that serves it
//	<prefix>reply:<id>      answers to one Store's requests; id is random per Store
//
// An ephemeral message is "!e:<len name>,<len socket id>,<len user id>:<name><socket id>
// <user id><data>". An event notice starts with its epoch, which is never empty and only ever
// [0-9a-z], so the '!' cannot be mistaken for one; and a decoder that predates ephemeral
// messages rejects them (its sequence field would be "n,s,u"), so a rolling upgrade only logs.
//
// A request is "<requester id>:<call id>:<body>" and an answer "a<call id>:<body>", or
// "n<call id>:" when the node stopped serving while the request was on its way. The ids never
// contain ':', and bodies run to the end of the payload, so any bytes pass through unescaped.
const ephemeralMark = "!e:"

// liveState is the Store's bus state. Lock order: Store.subMu, then mu; mu is never held
// together with Store.mu.
type liveState struct {
	mu      sync.Mutex
	serving map[string]*serving // by node
	reply   *replySub           // nil until the first Request
	calls   map[uint64]chan answer
	closing bool           // set by Close: no new work may start
	work    sync.WaitGroup // handlers and the publishes of answers, awaited by Close

	nextCall atomic.Uint64
}

// serving is one node this Store answers for.
type serving struct {
	node string
	h    func(ctx context.Context, req []byte) []byte
	// ctx is Serve's context, also canceled when the Store closes: the handlers' context.
	ctx    context.Context
	cancel context.CancelFunc
	stop   func() bool // unregisters the watch on Serve's context

	sub       sub
	confirmed bool // guarded by liveState.mu
	ready     chan struct{}
}

// replySub is the channel this Store's requests are answered on.
type replySub struct {
	id        string
	sub       sub
	confirmed bool // guarded by liveState.mu
	ready     chan struct{}
	err       error // set before ready is closed when the subscription failed
}

type answer struct {
	body   []byte
	noNode bool
}

var (
	_ store.Broadcaster = (*Store)(nil)
	_ store.Bus         = (*Store)(nil)
)

// Broadcast implements store.Broadcaster. It publishes on the channel's notice channel, so
// every node listening to the channel already receives it, in order with the channel's events.
func (s *Store) Broadcast(ctx context.Context, msg store.Ephemeral) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkChannel(msg.Channel); err != nil {
		return err
	}
	if err := s.client.SPublish(ctx, s.noticeChannel(msg.Channel), encodeEphemeral(&msg)).Err(); err != nil {
		return s.wrapErr(ctx, "broadcast", err)
	}
	return nil
}

func encodeEphemeral(m *store.Ephemeral) string {
	var b strings.Builder
	b.Grow(len(ephemeralMark) + 24 + len(m.Name) + len(m.SocketID) + len(m.UserID) + len(m.Data))
	b.WriteString(ephemeralMark)
	b.WriteString(strconv.Itoa(len(m.Name)))
	b.WriteByte(',')
	b.WriteString(strconv.Itoa(len(m.SocketID)))
	b.WriteByte(',')
	b.WriteString(strconv.Itoa(len(m.UserID)))
	b.WriteByte(':')
	b.WriteString(m.Name)
	b.WriteString(m.SocketID)
	b.WriteString(m.UserID)
	b.Write(m.Data)
	return b.String()
}

func decodeEphemeral(ch, payload string) (store.Ephemeral, error) {
	rest, ok := strings.CutPrefix(payload, ephemeralMark)
	if !ok {
		return store.Ephemeral{}, fmt.Errorf("ephemeral %.40q: no mark", payload)
	}
	lens, rest, ok := strings.Cut(rest, ":")
	if !ok {
		return store.Ephemeral{}, fmt.Errorf("ephemeral %.40q: no header", payload)
	}
	var n [3]int
	for i := range n {
		var field string
		field, lens, _ = strings.Cut(lens, ",")
		v, err := strconv.Atoi(field)
		if err != nil || v < 0 {
			return store.Ephemeral{}, fmt.Errorf("ephemeral %.40q: bad length %q", payload, field)
		}
		n[i] = v
	}
	if lens != "" || n[0]+n[1]+n[2] > len(rest) {
		return store.Ephemeral{}, fmt.Errorf("ephemeral %.40q: bad lengths", payload)
	}
	return store.Ephemeral{
		Channel:  ch,
		Name:     rest[:n[0]],
		SocketID: rest[n[0] : n[0]+n[1]],
		UserID:   rest[n[0]+n[1] : n[0]+n[1]+n[2]],
		Data:     []byte(rest[n[0]+n[1]+n[2]:]),
	}, nil
}

func (s *Store) nodeChannel(node string) string { return s.prefix + "node:" + node }

func (s *Store) replyChannel(id string) string { return s.prefix + "reply:" + id }

// Serve implements store.Bus. It returns once Redis has the node's subscription, so a
// Request sent after it returns finds the node.
func (s *Store) Serve(ctx context.Context, node string, h func(ctx context.Context, req []byte) []byte) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if node == "" || h == nil {
		return errors.New("redisstore: serve needs a node id and a handler")
	}
	hctx, cancel := context.WithCancel(ctx)
	sv := &serving{node: node, h: h, ctx: hctx, cancel: cancel, ready: make(chan struct{})}
	sv.sub = sub{name: s.nodeChannel(node), owner: sv}

	s.subMu.Lock()
	s.live.mu.Lock()
	if s.live.closing || s.closed.Load() { // checked under subMu, so Close sees any new pub/sub
		s.live.mu.Unlock()
		s.subMu.Unlock()
		cancel()
		return store.ErrClosed
	}
	if old := s.live.serving[node]; old != nil && old.ctx.Err() == nil {
		s.live.mu.Unlock()
		s.subMu.Unlock()
		cancel()
		return fmt.Errorf("redisstore: node %q is already served by this store", node)
	}
	if s.live.serving == nil {
		s.live.serving = make(map[string]*serving)
	}
	s.live.serving[node] = sv
	// A canceled Serve context ends the service; the watch is dropped again by Close.
	sv.stop = context.AfterFunc(ctx, func() { s.stopServing(sv) })
	s.live.mu.Unlock()

	err := s.addSubLocked(&sv.sub)
	s.subMu.Unlock()
	if err != nil {
		s.stopServing(sv)
		return s.wrapErr(ctx, "serve", err)
	}

	select {
	case <-sv.ready:
		return nil
	case <-ctx.Done():
		s.stopServing(sv)
		return ctx.Err()
	case <-s.done:
		return store.ErrClosed
	}
}

// stopServing ends sv, unless the node is already served by a newer Serve.
func (s *Store) stopServing(sv *serving) {
	sv.cancel()
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.live.mu.Lock()
	mine := s.live.serving[sv.node] == sv
	if mine {
		delete(s.live.serving, sv.node)
	}
	stop := sv.stop
	s.live.mu.Unlock()
	if stop != nil {
		stop()
	}
	if mine {
		// Should the unsubscribe fail, requests the subscription still brings are answered
		// "no node".
		s.dropLocked([]*sub{&sv.sub})
	}
}

// Request implements store.Bus. Redis reports how many subscribers a PUBLISH reached, so a
// node nobody serves is known at once; an answer comes back on this Store's reply channel.
func (s *Store) Request(ctx context.Context, node string, req []byte) ([]byte, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if node == "" {
		return nil, fmt.Errorf("redisstore: request to an empty node id: %w", store.ErrNoNode)
	}
	rs, err := s.replySubscription(ctx)
	if err != nil {
		return nil, err
	}
	id := s.live.nextCall.Add(1)
	ans := make(chan answer, 1)
	s.live.mu.Lock()
	if s.live.closing {
		s.live.mu.Unlock()
		return nil, store.ErrClosed
	}
	if s.live.calls == nil {
		s.live.calls = make(map[uint64]chan answer)
	}
	s.live.calls[id] = ans
	s.live.mu.Unlock()
	defer func() {
		s.live.mu.Lock()
		delete(s.live.calls, id) // a late answer finds no one and is dropped
		s.live.mu.Unlock()
	}()

	payload := rs.id + ":" + strconv.FormatUint(id, 10) + ":" + string(req)
	n, err := s.client.SPublish(ctx, s.nodeChannel(node), payload).Result()
	if err != nil {
		return nil, s.wrapErr(ctx, "request", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("redisstore: request to node %q: %w", node, store.ErrNoNode)
	}
	select {
	case a := <-ans:
		if a.noNode {
			return nil, fmt.Errorf("redisstore: request to node %q: %w", node, store.ErrNoNode)
		}
		return a.body, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, store.ErrClosed
	}
}

// replySubscription returns the reply channel once Redis has its subscription: an answer
// published before that would be lost.
func (s *Store) replySubscription(ctx context.Context) (*replySub, error) {
	s.live.mu.Lock()
	rs := s.live.reply
	s.live.mu.Unlock()
	if rs == nil {
		var err error
		if rs, err = s.subscribeReplies(); err != nil {
			return nil, s.wrapErr(ctx, "request", err)
		}
	}
	select {
	case <-rs.ready:
		if rs.err != nil {
			return nil, s.wrapErr(ctx, "request", rs.err)
		}
		return rs, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, store.ErrClosed
	}
}

func (s *Store) subscribeReplies() (*replySub, error) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	s.live.mu.Lock()
	rs := s.live.reply
	s.live.mu.Unlock()
	if rs != nil {
		return rs, nil // another request subscribed first
	}
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	id := hex.EncodeToString(b[:])
	rs = &replySub{id: id, ready: make(chan struct{})}
	rs.sub = sub{name: s.replyChannel(id), owner: rs}
	s.live.mu.Lock()
	s.live.reply = rs
	s.live.mu.Unlock()

	if err := s.addSubLocked(&rs.sub); err != nil {
		s.live.mu.Lock()
		s.live.reply = nil
		rs.err, rs.confirmed = err, true // fails the requests that already wait on it
		close(rs.ready)
		s.live.mu.Unlock()
		s.dropLocked([]*sub{&rs.sub})
		return nil, err
	}
	return rs, nil
}

// addSubLocked registers a bus subscription and routes it. The caller holds subMu.
func (s *Store) addSubLocked(sb *sub) error {
	s.mu.Lock()
	if old := s.subs[sb.name]; old != nil {
		delete(s.waiting, old) // a node served again: the new Serve's subscription replaces it
	}
	s.subs[sb.name] = sb
	s.mu.Unlock()
	_, err := s.routeLocked([]*sub{sb})
	return err
}

// confirmLive puts a bus subscription into effect: what waits for it may go on.
func (s *Store) confirmLive(sb *sub) {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	switch o := sb.owner.(type) {
	case *serving:
		if !o.confirmed {
			o.confirmed = true
			close(o.ready)
		}
	case *replySub:
		if !o.confirmed {
			o.confirmed = true
			close(o.ready)
		}
	}
}

// dispatchLive handles what the receive loop reads that is not an event notice, and reports
// whether msg was one of those. It never blocks: handlers and publishes run elsewhere.
func (s *Store) dispatchLive(msg *redis.Message) bool {
	if strings.HasPrefix(msg.Channel, s.prefix+"{") {
		if !strings.HasPrefix(msg.Payload, ephemeralMark) {
			return false // an event notice
		}
		s.onEphemeral(msg)
		return true
	}
	if node, ok := strings.CutPrefix(msg.Channel, s.prefix+"node:"); ok {
		s.onRequest(node, msg.Payload)
		return true
	}
	if _, ok := strings.CutPrefix(msg.Channel, s.prefix+"reply:"); ok {
		s.onAnswer(msg.Payload)
		return true
	}
	return false
}

func (s *Store) onEphemeral(msg *redis.Message) {
	ch, ok := s.channelOfNotice(msg.Channel)
	if !ok {
		return
	}
	s.mu.Lock()
	st := s.chans[ch]
	s.mu.Unlock()
	h := s.handler.Load()
	if st == nil || h == nil {
		return // not listened (any more)
	}
	e, err := decodeEphemeral(ch, msg.Payload)
	if err != nil {
		s.log.Error().Err(err).Str("channel", ch).Msg("redisstore: malformed ephemeral message")
		return
	}
	(*h).HandleEphemeral(&e)
}

func (s *Store) onRequest(node, payload string) {
	requester, rest, ok1 := strings.Cut(payload, ":")
	call, body, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || requester == "" || call == "" {
		s.log.Error().Str("node", node).Msg("redisstore: malformed bus request")
		return
	}
	reply := s.replyChannel(requester)
	s.live.mu.Lock()
	sv := s.live.serving[node]
	s.live.mu.Unlock()
	if sv == nil || sv.ctx.Err() != nil {
		// Unsubscribing lags behind Serve's end: say so rather than let the requester time out.
		s.spawn(func() { s.publishAnswer(reply, "n"+call+":") })
		return
	}
	s.spawn(func() {
		out := sv.h(sv.ctx, []byte(body))
		s.publishAnswer(reply, "a"+call+":"+string(out))
	})
}

// spawn runs f in a goroutine Close waits for, unless the Store is closing.
func (s *Store) spawn(f func()) {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	if s.live.closing {
		return
	}
	s.live.work.Add(1)
	go func() {
		defer s.live.work.Done()
		f()
	}()
}

func (s *Store) publishAnswer(channel, payload string) {
	if err := s.client.SPublish(s.ctx, channel, payload).Err(); err != nil && !s.closed.Load() {
		s.log.Warn().Err(err).Msg("redisstore: publishing a bus answer failed")
	}
}

func (s *Store) onAnswer(payload string) {
	if payload == "" {
		return
	}
	kind := payload[0]
	call, body, ok := strings.Cut(payload[1:], ":")
	id, err := strconv.ParseUint(call, 10, 64)
	if !ok || err != nil || (kind != 'a' && kind != 'n') {
		s.log.Error().Msg("redisstore: malformed bus answer")
		return
	}
	s.live.mu.Lock()
	ans := s.live.calls[id]
	s.live.mu.Unlock()
	if ans == nil {
		return // its request gave up
	}
	select {
	case ans <- answer{body: []byte(body), noNode: kind == 'n'}:
	default: // a second answer (two stores serving one node): the first one stands
	}
}

// closeLive ends the bus once the receive loop has stopped: no handler starts after it, the
// running ones see their context canceled, and Close waits for them.
func (s *Store) closeLive() {
	s.live.mu.Lock()
	s.live.closing = true
	svs := make([]*serving, 0, len(s.live.serving))
	for _, sv := range s.live.serving {
		svs = append(svs, sv)
	}
	s.live.mu.Unlock()
	for _, sv := range svs {
		sv.stop()
		sv.cancel()
	}
	s.live.work.Wait()
}
