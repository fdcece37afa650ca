package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/store"
)

// BroadcastStore is a store that also carries ephemeral messages.
type BroadcastStore interface {
	store.Store
	store.Broadcaster
}

// BroadcastFactory returns two nodes of one fresh deployment, closed by the suite's cleanup:
// two Stores on the same backend. A single-node store (memory) returns the same Store twice.
type BroadcastFactory func(t *testing.T) (a, b BroadcastStore)

// BusStore is a store that also carries ephemeral messages and requests between nodes.
type BusStore interface {
	store.Store
	store.Broadcaster
	store.Bus
}

// BusFactory is BroadcastFactory for stores with a bus.
type BusFactory func(t *testing.T) (a, b BusStore)

// RunBroadcast runs the contract of store.Broadcaster.
func RunBroadcast(t *testing.T, nodes BroadcastFactory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, nodes BroadcastFactory)
	}{
		{"DeliveredToListenersOnly", testBroadcastListenersOnly},
		{"FieldsRoundTrip", testBroadcastFields},
		{"InOrderExactlyOnce", testBroadcastOrder},
		{"NotAfterUnlisten", testBroadcastUnlisten},
		{"KeepsEventsContiguous", testBroadcastWithAppends},
		{"ReachesEveryNode", testBroadcastNodes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, nodes) })
	}
}

// RunBus runs the contract of store.Bus.
func RunBus(t *testing.T, nodes BusFactory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, nodes BusFactory)
	}{
		{"RoundTrip", testBusRoundTrip},
		{"ConcurrentRequests", testBusConcurrent},
		{"UnknownNode", testBusUnknownNode},
		{"Timeout", testBusTimeout},
		{"HandlerUsesStore", testBusHandlerUsesStore},
		{"ArbitraryBytes", testBusBytes},
		{"ServeEndsWithContext", testBusServeEnds},
		{"Close", testBusClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, nodes) })
	}
}

// received is an ephemeral message as a recorder got it.
type received struct {
	msg store.Ephemeral
	// afterEvents is how many events of the channel the recorder had received before it.
	afterEvents int
}

func (r *recorder) ephemerals(ch string) []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.ephs[ch]...)
}

func (r *recorder) gapCount(ch string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gaps[ch]
}

// waitEphemeral returns the first n ephemeral messages of ch, failing after 10 s or if more
// have arrived.
func (r *recorder) waitEphemeral(t *testing.T, ch string, n int) []received {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if got := r.ephemerals(ch); len(got) >= n {
			if len(got) > n {
				t.Fatalf("channel %s: %d ephemeral messages, want %d", ch, len(got), n)
			}
			return got
		}
		select {
		case <-r.notify:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("channel %s: %d ephemeral messages after 10s, want %d", ch, len(r.ephemerals(ch)), n)
		}
	}
}

func ephemeral(ch string, i int) store.Ephemeral {
	return store.Ephemeral{
		Channel: ch, Name: "client-typing", Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)),
		SocketID: "1." + strconv.Itoa(i), UserID: "u:" + strconv.Itoa(i),
	}
}

func broadcast(t *testing.T, s store.Broadcaster, msg store.Ephemeral) {
	t.Helper()
	if err := s.Broadcast(ctx(t), msg); err != nil {
		t.Fatalf("broadcast to %s: %v", msg.Channel, err)
	}
}

func sameEphemeral(a, b store.Ephemeral) bool {
	return a.Channel == b.Channel && a.Name == b.Name && string(a.Data) == string(b.Data) &&
		a.SocketID == b.SocketID && a.UserID == b.UserID
}

func testBroadcastListenersOnly(t *testing.T, nodes BroadcastFactory) {
	s, _ := nodes(t)
	ch, quiet, never := Channel(t), Channel(t), Channel(t)
	h := newRecorder()
	if _, err := s.Listen(ctx(t), h, ch, quiet); err != nil {
		t.Fatal(err)
	}
	defer s.Unlisten(ch, quiet)
	// A channel nobody listens to swallows it without an error.
	broadcast(t, s, ephemeral(never, 1))
	broadcast(t, s, ephemeral(ch, 2))
	got := h.waitEphemeral(t, ch, 1)
	if want := ephemeral(ch, 2); !sameEphemeral(got[0].msg, want) {
		t.Fatalf("got %+v, want %+v", got[0].msg, want)
	}
	// What was sent before the message that arrived has arrived too, had it been delivered.
	if n := len(h.ephemerals(never)); n != 0 {
		t.Fatalf("%d messages delivered for a channel nobody listens to", n)
	}
	if n := len(h.ephemerals(quiet)); n != 0 {
		t.Fatalf("%d messages delivered on a channel nothing was sent to", n)
	}
	if evs := h.events(ch); len(evs) != 0 {
		t.Fatalf("an ephemeral message was delivered as event %+v", evs[0])
	}
	if page, err := s.Read(ctx(t), ch, store.Beginning, 10); err != nil || len(page.Events) != 0 || page.Head.Seq != 0 {
		t.Fatalf("an ephemeral message was stored: %+v, %v", page, err)
	}
}

func testBroadcastFields(t *testing.T, nodes BroadcastFactory) {
	s, _ := nodes(t)
	ch := Channel(t)
	h := newRecorder()
	if _, err := s.Listen(ctx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	defer s.Unlisten(ch)
	msgs := []store.Ephemeral{
		{Name: "client-typing", Data: json.RawMessage(`{"typing":true}`), SocketID: "123.456", UserID: "42"},
		{Name: "herald:member_added", Data: json.RawMessage(`{"user_id":"a:b","user_info":{"x":"1:2:3"}}`), UserID: "a:b"},
		{Name: "a:b:c", Data: json.RawMessage(`"::"`), SocketID: "1:2", UserID: ":"},
		{Name: "", Data: json.RawMessage(`null`), SocketID: "", UserID: ""},
		{Name: "!e:1,2,3:", Data: json.RawMessage(`3`), SocketID: "4,5", UserID: "6"},
		{Name: "héllo 🎉", Data: json.RawMessage(`{"t":"wörld \u2028","q":"\"\\\n"}`), SocketID: "9.9", UserID: "ü@x.y"},
		{Name: "7", Data: json.RawMessage(`[1,2,3]`), SocketID: "8", UserID: "9"},
	}
	for i := range msgs {
		msgs[i].Channel = ch
		broadcast(t, s, msgs[i])
	}
	got := h.waitEphemeral(t, ch, len(msgs))
	for i, want := range msgs {
		if !sameEphemeral(got[i].msg, want) {
			t.Errorf("message %d: got %+v (data %s), want %+v (data %s)", i, got[i].msg, got[i].msg.Data, want, want.Data)
		}
	}
}

func testBroadcastOrder(t *testing.T, nodes BroadcastFactory) {
	s, _ := nodes(t)
	ch := Channel(t)
	h := newRecorder()
	if _, err := s.Listen(ctx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	defer s.Unlisten(ch)
	const n = 200
	for i := range n {
		broadcast(t, s, ephemeral(ch, i))
	}
	got := h.waitEphemeral(t, ch, n)
	time.Sleep(50 * time.Millisecond) // let a duplicate show itself
	got = h.waitEphemeral(t, ch, n)
	for i, r := range got {
		if !sameEphemeral(r.msg, ephemeral(ch, i)) {
			t.Fatalf("message %d is %+v (data %s)", i, r.msg, r.msg.Data)
		}
	}
}

func testBroadcastUnlisten(t *testing.T, nodes BroadcastFactory) {
	s, _ := nodes(t)
	ch, fence := Channel(t), Channel(t)
	h := newRecorder()
	if _, err := s.Listen(ctx(t), h, ch, fence); err != nil {
		t.Fatal(err)
	}
	defer s.Unlisten(fence)
	broadcast(t, s, ephemeral(ch, 1))
	h.waitEphemeral(t, ch, 1)
	s.Unlisten(ch)
	broadcast(t, s, ephemeral(ch, 2))
	broadcast(t, s, ephemeral(fence, 3))
	// The fence was sent after the message to the unlistened channel and has arrived.
	h.waitEphemeral(t, fence, 1)
	if n := len(h.ephemerals(ch)); n != 1 {
		t.Fatalf("after Unlisten %d messages were delivered, want 1", n)
	}
}

// testBroadcastWithAppends checks that ephemeral messages are not events: they never count
// in the channel's sequence nor break its continuity, and one sender's appends and
// broadcasts arrive in the order they were made.
func testBroadcastWithAppends(t *testing.T, nodes BroadcastFactory) {
	s, other := nodes(t)
	ch := Channel(t)
	h := newRecorder()
	if _, err := s.Listen(ctx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	defer s.Unlisten(ch)
	const n = 50
	var evs []store.Event
	for i := range n {
		sender := s
		if i%2 == 1 {
			sender = other
		}
		evs = append(evs, appendN(t, sender, ch, 1)...)
		broadcast(t, sender, ephemeral(ch, i))
	}
	checkRun(t, evs, evs[0].Epoch, 1)
	checkRun(t, h.wait(t, ch, n), evs[0].Epoch, 1)
	got := h.waitEphemeral(t, ch, n)
	for i, r := range got {
		if !sameEphemeral(r.msg, ephemeral(ch, i)) {
			t.Fatalf("message %d is %+v", i, r.msg)
		}
		if r.afterEvents != i+1 {
			t.Fatalf("message %d arrived after %d events, want after %d", i, r.afterEvents, i+1)
		}
	}
	if gaps := h.gapCount(ch); gaps != 0 {
		t.Fatalf("%d gaps reported on a channel carrying ephemeral messages", gaps)
	}
	page, err := s.Read(ctx(t), ch, store.Beginning, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != n || page.Head != evs[n-1].Cursor() {
		t.Fatalf("log holds %d events up to %s, want %d up to %s", len(page.Events), page.Head, n, evs[n-1].Cursor())
	}
}

func testBroadcastNodes(t *testing.T, nodes BroadcastFactory) {
	a, b := nodes(t)
	ch := Channel(t)
	ha, hb := newRecorder(), newRecorder()
	if _, err := a.Listen(ctx(t), ha, ch); err != nil {
		t.Fatal(err)
	}
	defer a.Unlisten(ch)
	single := store.Store(a) == store.Store(b)
	if single {
		hb = ha
	} else {
		if _, err := b.Listen(ctx(t), hb, ch); err != nil {
			t.Fatal(err)
		}
		defer b.Unlisten(ch)
	}
	broadcast(t, b, ephemeral(ch, 1)) // reaches its own node as well as the other
	broadcast(t, a, ephemeral(ch, 2))
	for node, h := range map[string]*recorder{"a": ha, "b": hb} {
		got := h.waitEphemeral(t, ch, 2)
		for i, r := range got {
			if !sameEphemeral(r.msg, ephemeral(ch, i+1)) {
				t.Fatalf("node %s, message %d: %+v", node, i, r.msg)
			}
		}
	}
	time.Sleep(50 * time.Millisecond)
	ha.waitEphemeral(t, ch, 2) // still exactly two: never delivered twice
	hb.waitEphemeral(t, ch, 2)
}

// node returns a node id no other test of this process uses.
func node(t *testing.T) string { return "node-" + Channel(t) }

// serve makes s serve id with h until the test ends.
func serve(t *testing.T, s store.Bus, id string, h func(ctx context.Context, req []byte) []byte) context.CancelFunc {
	t.Helper()
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := s.Serve(c, id, h); err != nil {
		t.Fatalf("serve %s: %v", id, err)
	}
	return cancel
}

func prefixer(p string) func(context.Context, []byte) []byte {
	return func(_ context.Context, req []byte) []byte { return append([]byte(p), req...) }
}

func request(t *testing.T, s store.Bus, id string, req string) string {
	t.Helper()
	ans, err := s.Request(ctx(t), id, []byte(req))
	if err != nil {
		t.Fatalf("request %q to %s: %v", req, id, err)
	}
	return string(ans)
}

func testBusRoundTrip(t *testing.T, nodes BusFactory) {
	a, b := nodes(t)
	na, nb := node(t), node(t)
	serve(t, a, na, prefixer("a:"))
	serve(t, b, nb, prefixer("b:"))
	if got := request(t, b, na, "hello"); got != "a:hello" {
		t.Fatalf("b asked a: %q", got)
	}
	if got := request(t, a, nb, "hi"); got != "b:hi" {
		t.Fatalf("a asked b: %q", got)
	}
	if got := request(t, a, na, "self"); got != "a:self" {
		t.Fatalf("a asked itself: %q", got)
	}
}

func testBusConcurrent(t *testing.T, nodes BusFactory) {
	a, b := nodes(t)
	na := node(t)
	serve(t, a, na, func(ctx context.Context, req []byte) []byte {
		n, _ := strconv.Atoi(string(req))
		time.Sleep(time.Duration(n%7) * time.Millisecond) // answers come back out of order
		return []byte("answer " + string(req))
	})
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			req := strconv.Itoa(i)
			ans, err := b.Request(ctx(t), na, []byte(req))
			if err == nil && string(ans) != "answer "+req {
				err = fmt.Errorf("request %s answered %q", req, ans)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testBusUnknownNode(t *testing.T, nodes BusFactory) {
	a, b := nodes(t)
	serve(t, a, node(t), prefixer("a:"))
	for _, s := range []store.Bus{b, a} {
		start := time.Now()
		_, err := s.Request(ctx(t), node(t), []byte("anyone?"))
		if !errors.Is(err, store.ErrNoNode) {
			t.Fatalf("request to an unknown node: %v, want ErrNoNode", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("ErrNoNode took %v", d)
		}
	}
}

func testBusTimeout(t *testing.T, nodes BusFactory) {
	a, b := nodes(t)
	na := node(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	serve(t, a, na, func(ctx context.Context, req []byte) []byte {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return []byte("late")
	})
	c, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := b.Request(c, na, []byte("slow"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request to a slow handler: %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the request outlived its context by %v", d-200*time.Millisecond)
	}
	// A handler that answers after its requester gave up does not disturb the next request.
	nb := node(t)
	serve(t, a, nb, prefixer("ok:"))
	if got := request(t, b, nb, "next"); got != "ok:next" {
		t.Fatalf("next request: %q", got)
	}
}

// testBusHandlerUsesStore checks that a handler may call back into its store, as the engine's
// do (a whisper for a socket another node holds is a broadcast on that node).
func testBusHandlerUsesStore(t *testing.T, nodes BusFactory) {
	a, b := nodes(t)
	ch, na := Channel(t), node(t)
	h := newRecorder()
	if _, err := a.Listen(ctx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	defer a.Unlisten(ch)
	serve(t, a, na, func(ctx context.Context, req []byte) []byte {
		if _, err := a.Append(ctx, store.AppendRequest{Channel: ch, Name: "Ev", Data: json.RawMessage(req)}); err != nil {
			return []byte(err.Error())
		}
		if err := a.Broadcast(ctx, store.Ephemeral{Channel: ch, Name: "client-x", Data: json.RawMessage(req)}); err != nil {
			return []byte(err.Error())
		}
		return []byte("done")
	})
	for i := range 3 {
		if got := request(t, b, na, strconv.Itoa(i)); got != "done" {
			t.Fatalf("handler answered %q", got)
		}
	}
	evs := h.wait(t, ch, 3)
	got := h.waitEphemeral(t, ch, 3)
	for i := range 3 {
		if string(evs[i].Data) != strconv.Itoa(i) || string(got[i].msg.Data) != strconv.Itoa(i) {
			t.Fatalf("position %d: event %s, ephemeral %s", i, evs[i].Data, got[i].msg.Data)
		}
	}
}

func testBusBytes(t *testing.T, nodes BusFactory) {
	a, b := nodes(t)
	na := node(t)
	reverse := func(p []byte) []byte {
		out := make([]byte, len(p))
		for i, c := range p {
			out[len(p)-1-i] = c
		}
		return out
	}
	serve(t, a, na, func(_ context.Context, req []byte) []byte { return reverse(req) })
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := bytes.Repeat([]byte("line\n\x00:{}\r\n"), 8000)
	for _, p := range [][]byte{nil, {0}, []byte("\n"), []byte(":::"), []byte("a\x00b\nc\r\n"), all, []byte("n1:a2:"), big} {
		ans, err := b.Request(ctx(t), na, p)
		if err != nil {
			t.Fatalf("request of %d bytes: %v", len(p), err)
		}
		if !bytes.Equal(ans, reverse(p)) {
			t.Fatalf("request %.40q answered %.40q", p, ans)
		}
	}
}

func testBusServeEnds(t *testing.T, nodes BusFactory) {
	a, b := nodes(t)
	na := node(t)
	stop := serve(t, a, na, prefixer("first:"))
	if got := request(t, b, na, "x"); got != "first:x" {
		t.Fatalf("answer %q", got)
	}
	stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, cancel := context.WithTimeout(ctx(t), time.Second)
		ans, err := b.Request(c, na, []byte("x"))
		cancel()
		if errors.Is(err, store.ErrNoNode) {
			break
		}
		if err != nil {
			t.Fatalf("request after Serve's context ended: %v, want ErrNoNode", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("still answered (%q) 5s after Serve's context ended", ans)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The node id is free again.
	serve(t, a, na, prefixer("second:"))
	if got := request(t, b, na, "x"); got != "second:x" {
		t.Fatalf("answer %q", got)
	}
}

func testBusClose(t *testing.T, nodes BusFactory) {
	a, b := nodes(t)
	na := node(t)
	entered, left := make(chan struct{}, 1), make(chan struct{})
	serve(t, a, na, func(ctx context.Context, req []byte) []byte {
		entered <- struct{}{}
		<-ctx.Done() // only the store's closing ends it
		close(left)
		return nil
	})
	errc := make(chan error, 1)
	go func() {
		_, err := b.Request(ctx(t), na, []byte("pending"))
		errc <- err
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler was never called")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, store.ErrClosed) {
			t.Fatalf("pending request after its store closed: %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a pending request outlived its store's Close")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-left:
	case <-time.After(2 * time.Second):
		t.Fatal("a running handler's context was not canceled by Close")
	}
	if err := a.Serve(context.Background(), node(t), prefixer("")); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("serve after close: %v, want ErrClosed", err)
	}
	if _, err := a.Request(ctx(t), na, nil); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("request after close: %v, want ErrClosed", err)
	}
}
