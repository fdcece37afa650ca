package redisstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/store/storetest"
	"github.com/herald-rt/herald/test/testkit"
)

// twoNodes returns two Stores sharing a prefix: two nodes of one deployment.
func twoNodes(t *testing.T) (a, b *redisstore.Store) {
	prefix := uniquePrefix()
	return newStore(t, redisstore.Options{Prefix: prefix}), newStore(t, redisstore.Options{Prefix: prefix})
}

func TestBroadcastContract(t *testing.T) {
	needRedis(t)
	storetest.RunBroadcast(t, func(t *testing.T) (a, b storetest.BroadcastStore) { return twoNodes(t) })
}

func TestBusContract(t *testing.T) {
	needRedis(t)
	storetest.RunBus(t, func(t *testing.T) (a, b storetest.BusStore) { return twoNodes(t) })
}

// liveRecorder also keeps ephemeral messages.
type liveRecorder struct {
	*recorder
	emu  sync.Mutex
	ephs map[string][]store.Ephemeral
}

func newLiveRecorder() *liveRecorder {
	return &liveRecorder{recorder: newRecorder(), ephs: map[string][]store.Ephemeral{}}
}

func (r *liveRecorder) HandleEphemeral(e *store.Ephemeral) {
	r.emu.Lock()
	r.ephs[e.Channel] = append(r.ephs[e.Channel], *e)
	r.emu.Unlock()
}

func (r *liveRecorder) ephemerals(ch string) []store.Ephemeral {
	r.emu.Lock()
	defer r.emu.Unlock()
	return append([]store.Ephemeral(nil), r.ephs[ch]...)
}

// eventually retries f until it succeeds, failing the test after 10 s.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 10s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLiveSurvivesReconnect kills both nodes' pub/sub connections: the resync must subscribe
// the served node and the reply channel again along with the listened channels. Only these
// stores' connections are killed (by name), so tests sharing the server are not disturbed.
func TestLiveSurvivesReconnect(t *testing.T) {
	t.Parallel()
	name := fmt.Sprintf("herald-live-%d-%d", os.Getpid(), prefixSerial.Add(1))
	prefix := uniquePrefix()
	a := newStore(t, redisstore.Options{Client: rawClient(t, name), Prefix: prefix})
	b := newStore(t, redisstore.Options{Client: rawClient(t, name), Prefix: prefix})
	admin := rawClient(t, "")
	ch, node := "live.reconnect", "node-a"
	h := newLiveRecorder()
	if _, err := a.Listen(testCtx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	defer a.Unlisten(ch)
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.Serve(sctx, node, func(_ context.Context, req []byte) []byte { return append([]byte("a:"), req...) }); err != nil {
		t.Fatal(err)
	}
	request := func(what string) func() error {
		return func() error {
			c, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
			defer cancel()
			ans, err := b.Request(c, node, []byte(what))
			if err == nil && string(ans) != "a:"+what {
				t.Fatalf("answer %q to %q", ans, what)
			}
			return err
		}
	}
	sent := 0
	broadcastArrives := func() error {
		sent++
		if err := b.Broadcast(testCtx(t), store.Ephemeral{Channel: ch, Name: "x", Data: json.RawMessage(`1`)}); err != nil {
			return err
		}
		for range 15 {
			if len(h.ephemerals(ch)) > 0 {
				return nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return errors.New("not delivered")
	}
	if err := request("before")(); err != nil { // subscribes b's reply channel
		t.Fatal(err)
	}
	if err := broadcastArrives(); err != nil {
		t.Fatal(err)
	}
	before := appendN(t, b, ch, 1)

	ids := pubsubClientIDs(t, admin, name)
	if len(ids) != 2 {
		t.Fatalf("found %d pub/sub connections of the two stores, want 2", len(ids))
	}
	for _, id := range ids {
		if err := admin.Do(testCtx(t), "CLIENT", "KILL", "ID", id).Err(); err != nil {
			t.Fatal(err)
		}
	}
	h.emu.Lock()
	clear(h.ephs)
	h.emu.Unlock()
	eventually(t, "request after the reconnect", request("after"))
	eventually(t, "broadcast after the reconnect", broadcastArrives)
	if got := len(h.ephemerals(ch)); got > sent {
		t.Fatalf("%d ephemeral messages delivered, %d sent", got, sent)
	}
	after := appendN(t, b, ch, 1)
	evs := h.wait(t, ch, 2, 5*time.Second)
	checkSeqs(t, evs, before[0].Epoch, 1)
	if after[0].Seq != 2 {
		t.Fatalf("second append got %s", after[0].Cursor())
	}
	if _, gaps := h.snapshot(ch); gaps != 0 {
		t.Fatalf("%d gaps", gaps)
	}
	if n := len(pubsubClientIDs(t, admin, name)); n != 2 {
		t.Fatalf("%d pub/sub connections after the reconnect, want 2", n)
	}
}

// TestLiveIgnoresForeignMessages publishes what no Store sends on the channels a Store
// subscribes to: it must be dropped, and nothing after it lost.
func TestLiveIgnoresForeignMessages(t *testing.T) {
	t.Parallel()
	prefix := uniquePrefix()
	s := newStore(t, redisstore.Options{Prefix: prefix})
	raw := rawClient(t, "")
	ch, node := "foreign", "node-f"
	h := newLiveRecorder()
	if _, err := s.Listen(testCtx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	defer s.Unlisten(ch)
	if err := s.Serve(testCtx(t), node, func(_ context.Context, req []byte) []byte { return req }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Request(testCtx(t), node, []byte("warm-up")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ channel, payload string }{
		{prefix + "{" + ch + "}:n", "!e:"},
		{prefix + "{" + ch + "}:n", "!e:1,2:abc"},
		{prefix + "{" + ch + "}:n", "!e:9,9,9:short"},
		{prefix + "{" + ch + "}:n", "!e:-1,0,0:x"},
		{prefix + "node:" + node, "no-colons"},
		{prefix + "node:" + node, ":1:empty requester"},
	} {
		if err := raw.SPublish(testCtx(t), p.channel, p.payload).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Broadcast(testCtx(t), store.Ephemeral{Channel: ch, Name: "ok", Data: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, ch, 1)
	h.wait(t, ch, 1, 5*time.Second)
	if got := h.ephemerals(ch); len(got) != 1 || got[0].Name != "ok" {
		t.Fatalf("ephemeral messages delivered: %+v", got)
	}
	if _, gaps := h.snapshot(ch); gaps != 0 {
		t.Fatalf("%d gaps", gaps)
	}
	if ans, err := s.Request(testCtx(t), node, []byte("still")); err != nil || string(ans) != "still" {
		t.Fatalf("request after foreign messages: %q, %v", ans, err)
	}
}

func TestLiveUnavailable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	client := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, DialerRetries: 1, MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	s := newStore(t, redisstore.Options{Client: client})
	ctx := testCtx(t)
	if err := s.Broadcast(ctx, store.Ephemeral{Channel: "down", Name: "x", Data: json.RawMessage(`1`)}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("broadcast: %v, want ErrUnavailable", err)
	}
	if err := s.Serve(ctx, "node", func(context.Context, []byte) []byte { return nil }); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("serve: %v, want ErrUnavailable", err)
	}
	if _, err := s.Request(ctx, "node", []byte("x")); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("request: %v, want ErrUnavailable", err)
	}
}

// TestLiveSurvivesSilentConnection silences both nodes' connections: the probe replaces each
// pub/sub connection with a new one, which knows no subscription but those the resync makes,
// so the served node and the reply channel must be among them.
func TestLiveSurvivesSilentConnection(t *testing.T) {
	t.Parallel()
	needRedis(t)
	o, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newProxy(t, o.Addr)
	prefix := uniquePrefix()
	opts := redisstore.Options{
		URL:          fmt.Sprintf("redis://%s/%d?read_timeout=300ms&write_timeout=300ms", proxy.Addr(), o.DB),
		Prefix:       prefix,
		PingInterval: 100 * time.Millisecond,
	}
	a, b := newStore(t, opts), newStore(t, opts)
	ch, node := "live.silent", "node-a"
	h := newLiveRecorder()
	if _, err := a.Listen(testCtx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	defer a.Unlisten(ch)
	if err := a.Serve(testCtx(t), node, func(_ context.Context, req []byte) []byte { return req }); err != nil {
		t.Fatal(err)
	}
	request := func() error {
		c, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
		defer cancel()
		_, err := b.Request(c, node, []byte("x"))
		return err
	}
	if err := request(); err != nil {
		t.Fatal(err)
	}
	proxy.Silence()
	// The probes find the silent connections and replace them: calls work again.
	eventually(t, "request after the connections went silent", request)
	eventually(t, "broadcast after the connections went silent", func() error {
		if err := b.Broadcast(testCtx(t), store.Ephemeral{Channel: ch, Name: "x", Data: json.RawMessage(`1`)}); err != nil {
			return err
		}
		if !testkit.WaitFor(time.Second, func() bool { return len(h.ephemerals(ch)) > 0 }) {
			return errors.New("not delivered")
		}
		return nil
	})
}
