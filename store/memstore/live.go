package memstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/herald-rt/herald/store"
)

var (
	_ store.Broadcaster = (*Store)(nil)
	_ store.Bus         = (*Store)(nil)
)

// Broadcast implements store.Broadcaster. The memory store is a single node, so delivering to
// this Store's handler is delivering everywhere. It runs under the channel's lock, like an
// append's delivery, so the handler never sees a channel's messages concurrently and a
// sender's appends and broadcasts arrive in the order they were made.
func (s *Store) Broadcast(ctx context.Context, msg store.Ephemeral) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ch := s.lookup(msg.Channel, false)
	if ch == nil {
		return nil // nobody listens
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.listeners == 0 {
		return nil
	}
	if h := s.handler.Load(); h != nil {
		delivered := msg
		delivered.Data = bytes.Clone(msg.Data) // the caller may reuse its buffer
		(*h).HandleEphemeral(&delivered)
	}
	return nil
}

// bus is one Store's served nodes. It lives in a table beside the Store rather than in it and
// ends when the Store stops, because Store.Close predates the bus and knows nothing of it.
type bus struct {
	mu     sync.Mutex
	nodes  map[string]*served
	closed bool
}

type served struct {
	h func(ctx context.Context, req []byte) []byte
	// ctx is Serve's context, also canceled when the Store closes: the handlers' context.
	ctx    context.Context
	cancel context.CancelFunc
}

var buses sync.Map // *Store → *bus

// bus returns s's bus, creating it (and the watch that ends it with s) when create is set.
func (s *Store) bus(create bool) *bus {
	if b, ok := buses.Load(s); ok {
		return b.(*bus)
	}
	if !create {
		return nil
	}
	v, loaded := buses.LoadOrStore(s, &bus{nodes: make(map[string]*served)})
	b := v.(*bus)
	if !loaded {
		go func() {
			<-s.stop
			buses.Delete(s)
			b.mu.Lock()
			b.closed = true
			for _, sv := range b.nodes {
				sv.cancel()
			}
			clear(b.nodes)
			b.mu.Unlock()
		}()
	}
	return b
}

// Serve implements store.Bus. The node is served as soon as it is registered.
func (s *Store) Serve(ctx context.Context, node string, h func(ctx context.Context, req []byte) []byte) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if node == "" || h == nil {
		return errors.New("memstore: serve needs a node id and a handler")
	}
	b := s.bus(true)
	hctx, cancel := context.WithCancel(ctx)
	sv := &served{h: h, ctx: hctx, cancel: cancel}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		cancel()
		return store.ErrClosed
	}
	if old := b.nodes[node]; old != nil && old.ctx.Err() == nil {
		cancel()
		return fmt.Errorf("memstore: node %q is already served by this store", node)
	}
	b.nodes[node] = sv
	// hctx ends with Serve's context or with the Store, whichever comes first.
	context.AfterFunc(hctx, func() {
		b.mu.Lock()
		if b.nodes[node] == sv {
			delete(b.nodes, node)
		}
		b.mu.Unlock()
	})
	return nil
}

// Request implements store.Bus. The handler runs in a goroutine of its own, as on a remote
// node, so a requester that gives up is not held by a slow handler.
func (s *Store) Request(ctx context.Context, node string, req []byte) ([]byte, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var sv *served
	if b := s.bus(false); b != nil {
		b.mu.Lock()
		sv = b.nodes[node]
		b.mu.Unlock()
	}
	if sv == nil || sv.ctx.Err() != nil {
		return nil, fmt.Errorf("memstore: request to node %q: %w", node, store.ErrNoNode)
	}
	body := bytes.Clone(req) // the handler may keep it after the caller has moved on
	out := make(chan []byte, 1)
	go func() { out <- sv.h(sv.ctx, body) }()
	select {
	case ans := <-out:
		return ans, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.stop:
		return nil, store.ErrClosed
	}
}
