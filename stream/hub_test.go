package stream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/stream"
	"github.com/herald-rt/herald/test/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

func newHub(t *testing.T, ret store.Retention, opts stream.Options) (*stream.Hub, store.Store) {
	t.Helper()
	st := memstore.New(memstore.Options{Retention: ret})
	h := stream.New(st, opts)
	t.Cleanup(func() { h.Close(); st.Close() })
	return h, st
}

func publish(t *testing.T, st store.Store, ch string, n int, socketID string) []store.Event {
	t.Helper()
	evs := make([]store.Event, n)
	for i := range n {
		res, err := st.Append(context.Background(), store.AppendRequest{
			Channel: ch, Name: "Tick", Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), SocketID: socketID,
		})
		if err != nil {
			t.Error(err)
			return nil
		}
		evs[i] = res.Event
	}
	return evs
}

func open(t *testing.T, h *stream.Hub, req stream.Request) *stream.Socket {
	t.Helper()
	s, err := h.Open(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// collect reads deliveries until want events arrived (resyncs included in the result).
func collect(t *testing.T, s *stream.Socket, want int) []stream.Delivery {
	t.Helper()
	var out []stream.Delivery
	deadline := time.Now().Add(20 * time.Second)
	events := 0
	for events < want {
		if time.Now().After(deadline) {
			t.Fatalf("socket %s: %d of %d events after 20s", s.ID(), events, want)
		}
		before := len(out)
		var err error
		out, err = s.Next(context.Background(), 64, 100*time.Millisecond, out)
		if err != nil {
			t.Fatalf("socket %s: %v", s.ID(), err)
		}
		for _, d := range out[before:] {
			if d.Msg != nil {
				events++
			}
		}
	}
	if events > want {
		t.Fatalf("socket %s: %d events, want %d", s.ID(), events, want)
	}
	return out
}

// collectResuming reads channel from a cursor up to seq last the way a client does: when the
// server drops the socket as too slow, it reopens one at the last cursor it saw.
func collectResuming(t *testing.T, h *stream.Hub, channel string, from store.Cursor, last uint64) []uint64 {
	var got []uint64
	deadline := time.Now().Add(20 * time.Second)
	for reconnects := 0; ; reconnects++ {
		if reconnects > 1000 || time.Now().After(deadline) {
			t.Errorf("gave up after %d reconnects with %d events", reconnects, len(got))
			return got
		}
		s, err := h.Open(context.Background(), stream.Request{Channels: []string{channel}, Positions: map[string]store.Cursor{channel: from}})
		if err != nil {
			t.Error(err)
			return got
		}
		var out []stream.Delivery
		for err == nil && time.Now().Before(deadline) {
			out, err = s.Next(context.Background(), 64, 100*time.Millisecond, out[:0])
			for _, d := range out {
				if d.Msg != nil {
					got = append(got, d.Msg.Cursor.Seq)
					from = d.Msg.Cursor
				}
			}
			if from.Seq >= last {
				s.Close()
				return got
			}
		}
		s.Close()
		if !errors.Is(err, stream.ErrLagged) {
			t.Errorf("socket ended: %v", err)
			return got
		}
	}
}

// quiet asserts nothing more arrives for a moment.
func quiet(t *testing.T, s *stream.Socket) {
	t.Helper()
	out, err := s.Next(context.Background(), 64, 150*time.Millisecond, nil)
	if err != nil || len(out) != 0 {
		t.Fatalf("socket %s: unexpected %d deliveries (%v)", s.ID(), len(out), err)
	}
}

func seqs(ds []stream.Delivery) []uint64 {
	var out []uint64
	for _, d := range ds {
		if d.Msg != nil && !d.Msg.Ephemeral() {
			out = append(out, d.Msg.Cursor.Seq)
		}
	}
	return out
}

func checkContiguous(t *testing.T, got []uint64, from, to uint64) {
	t.Helper()
	if uint64(len(got)) != to-from+1 {
		t.Fatalf("got %d events (%v…), want %d..%d", len(got), head(got), from, to)
	}
	for i, s := range got {
		if s != from+uint64(i) {
			t.Fatalf("position %d: seq %d, want %d (lost, repeated or reordered)", i, s, from+uint64(i))
		}
	}
}

func head(s []uint64) []uint64 { return s[:min(len(s), 10)] }

func TestLiveEventsReachEverySocketInOrderAsSharedBytes(t *testing.T) {
	h, st := newHub(t, store.Retention{}, stream.Options{QueueSize: 1024})
	socks := []*stream.Socket{
		open(t, h, stream.Request{Channels: []string{"room"}}),
		open(t, h, stream.Request{Channels: []string{"room"}}),
		open(t, h, stream.Request{Channels: []string{"room", "other"}}),
	}
	publish(t, st, "room", 500, "")
	var first [][]stream.Delivery
	for _, s := range socks {
		ds := collect(t, s, 500)
		checkContiguous(t, seqs(ds), 1, 500)
		first = append(first, ds)
	}
	for i := range 500 {
		if first[0][i].Msg != first[1][i].Msg || first[0][i].Msg != first[2][i].Msg {
			t.Fatalf("event %d was encoded more than once", i)
		}
	}
	m := first[0][0].Msg
	if want := "id: " + m.ID + "\nevent: Tick\ndata: " + string(m.Envelope()) + "\n\n"; string(m.Frame()) != want {
		t.Fatalf("frame %q, want %q", m.Frame(), want)
	}
	var env struct {
		ID, Channel, Event string
		Data               json.RawMessage
		TS                 int64
	}
	if err := json.Unmarshal(m.Envelope(), &env); err != nil || env.ID != m.ID || env.Channel != "room" || env.Event != "Tick" || string(env.Data) != `{"i":0}` || env.TS == 0 {
		t.Fatalf("envelope %s: %+v %v", m.Envelope(), env, err)
	}
	if first[0][0].ID != m.ID {
		t.Fatalf("one-channel delivery id %q, want the channel cursor %q", first[0][0].ID, m.ID)
	}
	if !strings.HasPrefix(first[2][0].ID, "c.") {
		t.Fatalf("multi-channel delivery id %q is not composite", first[2][0].ID)
	}
}

func TestResumeWhilePublishingLosesAndRepeatsNothing(t *testing.T) {
	h, st := newHub(t, store.Retention{MaxEvents: 10000}, stream.Options{ReadBatch: 50})
	const total = 3000
	var mu sync.Mutex
	var appended []store.Event
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range total {
			res, err := st.Append(context.Background(), store.AppendRequest{Channel: "c", Name: "E", Data: json.RawMessage(fmt.Sprint(i))})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			appended = append(appended, res.Event)
			mu.Unlock()
			if i%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	var wg sync.WaitGroup
	for range 20 {
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		n := len(appended)
		var from store.Cursor
		if n > 0 {
			from = appended[rng.IntN(n)].Cursor()
		}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := collectResuming(t, h, "c", from, total)
			checkContiguous(t, got, from.Seq+1, total)
		}()
	}
	wg.Wait()
	<-done
}

func TestSlowSocketIsDroppedAndOthersKeepUp(t *testing.T) {
	h, st := newHub(t, store.Retention{}, stream.Options{QueueSize: 16})
	slow := open(t, h, stream.Request{Channels: []string{"c"}})
	fast := open(t, h, stream.Request{Channels: []string{"c"}})
	var got []stream.Delivery
	for range 10 {
		publish(t, st, "c", 10, "")
		got = append(got, collect(t, fast, 10)...)
	}
	checkContiguous(t, seqs(got), 1, 100)
	_, err := slow.Next(context.Background(), 1000, time.Second, nil)
	if !errors.Is(err, stream.ErrLagged) {
		t.Fatalf("slow socket: err %v, want ErrLagged", err)
	}
	select {
	case <-slow.Done():
	default:
		t.Fatal("lagged socket not done")
	}
}

func TestTrimmedHistorySendsResyncThenGoesOnFromOldest(t *testing.T) {
	h, st := newHub(t, store.Retention{MaxEvents: 10}, stream.Options{})
	evs := publish(t, st, "c", 30, "")
	s := open(t, h, stream.Request{Channels: []string{"c"}, Positions: map[string]store.Cursor{"c": evs[1].Cursor()}})
	ds := collect(t, s, 10)
	if ds[0].Resync == nil || ds[0].Msg != nil {
		t.Fatalf("first delivery %+v, want a resync", ds[0])
	}
	r := ds[0].Resync
	if want := (store.Cursor{Epoch: evs[0].Epoch, Seq: 20}).String(); r.Cursor != want || ds[0].ID != want || r.Reason != "history_expired" || len(r.Channels) != 1 || r.Channels[0] != "c" {
		t.Fatalf("resync %+v id %q, want cursor %s", r, ds[0].ID, want)
	}
	checkContiguous(t, seqs(ds), 21, 30)
	// A cursor from another epoch (the store was reset) is never matched against new events.
	s2 := open(t, h, stream.Request{Channels: []string{"c"}, Positions: map[string]store.Cursor{"c": {Epoch: "zzzz", Seq: 25}}})
	ds = collect(t, s2, 10)
	if ds[0].Resync == nil {
		t.Fatal("foreign epoch: no resync")
	}
	checkContiguous(t, seqs(ds), 21, 30)
}

// A client resuming past the head in the head's epoch holds events a failed Redis master
// acknowledged and its promoted replica never got. It is told so, and is sent none of the
// retained events again: up to the head it already has them.
func TestCursorAheadOfTheLogResyncsWithoutRepeating(t *testing.T) {
	h, st := newHub(t, store.Retention{}, stream.Options{})
	evs := publish(t, st, "c", 5, "")
	s := open(t, h, stream.Request{Channels: []string{"c"}, Positions: map[string]store.Cursor{"c": {Epoch: evs[0].Epoch, Seq: 9}}})
	ds, err := s.Next(context.Background(), 64, 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Resync == nil {
		t.Fatalf("deliveries %+v, want one resync and nothing replayed", ds)
	}
	if r, want := ds[0].Resync, evs[4].Cursor().String(); r.Cursor != want || r.ChannelCursor != want || ds[0].ID != want {
		t.Fatalf("resync %+v id %q, want it to go on from the head %s", r, ds[0].ID, want)
	}
	quiet(t, s)
	publish(t, st, "c", 2, "")
	checkContiguous(t, seqs(collect(t, s, 2)), 6, 7)
}

func TestPublisherSocketIsExcluded(t *testing.T) {
	h, st := newHub(t, store.Retention{}, stream.Options{})
	me := open(t, h, stream.Request{Channels: []string{"c"}})
	other := open(t, h, stream.Request{Channels: []string{"c"}, Exclude: []string{"9.9"}})
	publish(t, st, "c", 2, me.ID())
	publish(t, st, "c", 1, "")
	publish(t, st, "c", 1, "9.9")
	mine := collect(t, me, 2)
	checkContiguous(t, seqs(mine), 3, 4)
	theirs := collect(t, other, 3)
	checkContiguous(t, seqs(theirs), 1, 3)
	// Excluded events still move the cursor, and replayed history excludes them too.
	if want := theirs[2].Msg.ID; !strings.HasSuffix(want, "-3") {
		t.Fatalf("unexpected id %s", want)
	}
	replay := open(t, h, stream.Request{Channels: []string{"c"}, FromBeginning: true, Exclude: []string{me.ID()}})
	checkContiguous(t, seqs(collect(t, replay, 2)), 3, 4)
}

func TestCompositeCursorResumesEveryChannel(t *testing.T) {
	h, st := newHub(t, store.Retention{}, stream.Options{})
	chans := []string{"b", "a", "c"}
	s := open(t, h, stream.Request{Channels: chans})
	publish(t, st, "a", 3, "")
	publish(t, st, "b", 2, "")
	ds := collect(t, s, 5)
	resumeAt := ds[3].ID // after a1..a3 and b1
	publish(t, st, "c", 1, "")
	pos, err := stream.ParseComposite(resumeAt, []string{"a", "b", "c", "d"})
	if err != nil {
		t.Fatal(err)
	}
	if pos["a"].Seq != 3 || pos["b"].Seq != 1 || pos["c"].Seq != 0 {
		t.Fatalf("positions %v", pos)
	}
	if _, ok := pos["d"]; ok {
		t.Fatal("a channel not in the cursor got a position")
	}
	publish(t, st, "d", 2, "")
	r := open(t, h, stream.Request{Channels: []string{"a", "b", "c", "d"}, Positions: pos})
	got := collect(t, r, 2)
	if got[0].Msg.Channel != "b" || got[0].Msg.Cursor.Seq != 2 || got[1].Msg.Channel != "c" || got[1].Msg.Cursor.Seq != 1 {
		t.Fatalf("resumed with %v %v", got[0].Msg.ID, got[1].Msg.ID)
	}
	quiet(t, r) // "d" was not in the cursor: it starts at its head
	publish(t, st, "d", 1, "")
	got = collect(t, r, 1)
	if got[0].Msg.Channel != "d" || got[0].Msg.Cursor.Seq != 3 {
		t.Fatalf("added channel delivered %s seq %d, want d seq 3", got[0].Msg.Channel, got[0].Msg.Cursor.Seq)
	}
}

// lossyStore drops chosen live notifications and reports a gap instead, as the Redis store does
// when pub/sub loses messages it cannot recover.
type lossyStore struct {
	store.Store
	mu   sync.Mutex
	drop map[uint64]bool
}

type lossyHandler struct {
	s *lossyStore
	h store.Handler
}

func (l lossyHandler) HandleEvent(ev *store.Event) {
	l.s.mu.Lock()
	drop := l.s.drop[ev.Seq]
	l.s.mu.Unlock()
	if drop {
		l.h.HandleGap(ev.Channel)
		return
	}
	l.h.HandleEvent(ev)
}
func (l lossyHandler) HandleGap(ch string)                  { l.h.HandleGap(ch) }
func (l lossyHandler) HandleEphemeral(msg *store.Ephemeral) { l.h.HandleEphemeral(msg) }

func (s *lossyStore) Listen(ctx context.Context, h store.Handler, channels ...string) ([]store.Cursor, error) {
	return s.Store.Listen(ctx, lossyHandler{s, h}, channels...)
}

func TestGapInLiveDeliveryIsFilledFromTheLog(t *testing.T) {
	mem := memstore.New(memstore.Options{})
	st := &lossyStore{Store: mem, drop: map[uint64]bool{3: true, 7: true, 8: true}}
	h := stream.New(st, stream.Options{})
	defer func() { h.Close(); mem.Close() }()
	s := open(t, h, stream.Request{Channels: []string{"c"}})
	publish(t, st, "c", 20, "")
	checkContiguous(t, seqs(collect(t, s, 20)), 1, 20)
}

func TestShutdownEndsSocketsAndRefusesNewOnes(t *testing.T) {
	h, _ := newHub(t, store.Retention{}, stream.Options{})
	s := open(t, h, stream.Request{Channels: []string{"c"}})
	errc := make(chan error, 1)
	go func() {
		_, err := s.Next(context.Background(), 10, time.Minute, nil)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	h.Shutdown()
	select {
	case err := <-errc:
		if !errors.Is(err, stream.ErrShutdown) {
			t.Fatalf("Next: %v, want ErrShutdown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still blocked after Shutdown")
	}
	if _, err := h.Open(context.Background(), stream.Request{Channels: []string{"c"}}); !errors.Is(err, stream.ErrShutdown) {
		t.Fatalf("Open after Shutdown: %v", err)
	}
}

// TestDrainEndsSocketsSpreadOut: Drain refuses new sockets at once, ends every open one with
// ErrShutdown and returns once they have all ended; with
// ctx ended early, it ends the rest at once.
func TestDrainEndsSocketsSpreadOut(t *testing.T) {
	h, st := newHub(t, store.Retention{}, stream.Options{})
	const n = 8
	ended := make(chan error, n)
	for range n {
		s := open(t, h, stream.Request{Channels: []string{"c"}})
		go func() {
			var err error
			for err == nil {
				_, err = s.Next(context.Background(), 10, time.Minute, nil)
			}
			ended <- err
		}()
	}
	publish(t, st, "c", 3, "")
	done := make(chan struct{})
	go func() {
		h.Drain(context.Background(), 200*time.Millisecond)
		close(done)
	}()
	for range n {
		select {
		case err := <-ended:
			if !errors.Is(err, stream.ErrShutdown) {
				t.Fatalf("Next: %v, want ErrShutdown", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a socket outlived the drain")
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return once every socket ended")
	}
	if _, err := h.Open(context.Background(), stream.Request{Channels: []string{"c"}}); !errors.Is(err, stream.ErrShutdown) {
		t.Fatalf("Open while draining: %v, want ErrShutdown", err)
	}

	// A drain cut short ends every socket at once.
	h2, _ := newHub(t, store.Retention{}, stream.Options{})
	s := open(t, h2, stream.Request{Channels: []string{"c"}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h2.Drain(ctx, time.Hour)
	if !errors.Is(s.Err(), stream.ErrShutdown) {
		t.Fatalf("after a drain cut short: %v, want ErrShutdown", s.Err())
	}
}

func TestIdleChannelsAreUnlistenedAfterLinger(t *testing.T) {
	h, _ := newHub(t, store.Retention{}, stream.Options{Linger: 30 * time.Millisecond})
	s := open(t, h, stream.Request{Channels: []string{"a", "b"}})
	if n := h.ListenedChannels(); n != 2 {
		t.Fatalf("listening to %d channels, want 2", n)
	}
	s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for h.ListenedChannels() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still listening to %d channels", h.ListenedChannels())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if h.Sockets() != 0 {
		t.Fatalf("%d sockets left", h.Sockets())
	}
}

func TestNextHonoursContextAndHeartbeatWait(t *testing.T) {
	h, _ := newHub(t, store.Retention{}, stream.Options{})
	s := open(t, h, stream.Request{Channels: []string{"c"}})
	out, err := s.Next(context.Background(), 10, 20*time.Millisecond, nil)
	if err != nil || len(out) != 0 {
		t.Fatalf("idle Next: %d deliveries, %v", len(out), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Next(ctx, 10, time.Minute, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with canceled ctx: %v", err)
	}
}

func TestEphemeralMessagesSkipSenderAndLeavePositions(t *testing.T) {
	h, st := newHub(t, store.Retention{}, stream.Options{})
	sender := open(t, h, stream.Request{Channels: []string{"private-c"}})
	other := open(t, h, stream.Request{Channels: []string{"private-c", "x"}})
	publish(t, st, "private-c", 1, "")
	h.HandleEphemeral(&store.Ephemeral{Channel: "private-c", Name: "client-typing", Data: json.RawMessage(`{"typing":true}`), SocketID: sender.ID(), UserID: "u1"})
	publish(t, st, "private-c", 1, "")
	got := collect(t, other, 3)
	if len(got) != 3 || got[1].Msg == nil || !got[1].Msg.Ephemeral() {
		t.Fatalf("deliveries %+v, want event, whisper, event", got)
	}
	w := got[1].Msg
	if want := "event: client-typing\ndata: {\"channel\":\"private-c\",\"event\":\"client-typing\",\"data\":{\"typing\":true},\"user_id\":\"u1\"}\n\n"; string(w.Frame()) != want {
		t.Fatalf("whisper frame %q, want %q", w.Frame(), want)
	}
	checkContiguous(t, seqs([]stream.Delivery{got[0], got[2]}), 1, 2)
	mine := collect(t, sender, 2)
	for _, d := range mine {
		if d.Msg.Ephemeral() {
			t.Fatal("the sender received its own whisper")
		}
	}
}

// headCounter counts the store's Heads calls.
type headCounter struct {
	store.Store
	heads atomic.Int64
}

func (c *headCounter) Heads(ctx context.Context, channels []string) ([]store.Cursor, error) {
	c.heads.Add(1)
	return c.Store.Heads(ctx, channels)
}

// TestLiveStartNeedsNoRoundTrip: a socket that starts live on a channel the hub already
// listens to starts at the head the hub has seen — no read from the store — and still gets
// exactly the events after it. After a gap the head is unknown again, and the store is asked.
func TestLiveStartNeedsNoRoundTrip(t *testing.T) {
	mem := memstore.New(memstore.Options{})
	lossy := &lossyStore{Store: mem, drop: map[uint64]bool{}}
	st := &headCounter{Store: lossy}
	h := stream.New(st, stream.Options{})
	defer func() { h.Close(); mem.Close() }()

	first := open(t, h, stream.Request{Channels: []string{"c"}})
	publish(t, st, "c", 3, "")
	checkContiguous(t, seqs(collect(t, first, 3)), 1, 3)
	later := open(t, h, stream.Request{Channels: []string{"c"}})
	dyn := open(t, h, stream.Request{Dynamic: true})
	if err := dyn.Subscribe(context.Background(), "c", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := st.heads.Load(); n != 0 {
		t.Fatalf("the store was asked for heads %d times; the hub knew them", n)
	}
	publish(t, st, "c", 2, "")
	checkContiguous(t, seqs(collect(t, later, 2)), 4, 5)
	checkContiguous(t, seqs(collect(t, dyn, 2)), 4, 5)

	lossy.mu.Lock()
	lossy.drop[6] = true
	lossy.mu.Unlock()
	publish(t, st, "c", 1, "") // seq 6 is lost live: a gap
	checkContiguous(t, seqs(collect(t, first, 3)), 4, 6)
	afterGap := open(t, h, stream.Request{Channels: []string{"c"}})
	if n := st.heads.Load(); n != 1 {
		t.Fatalf("after a gap: the store was asked for heads %d times, want 1", n)
	}
	publish(t, st, "c", 1, "")
	checkContiguous(t, seqs(collect(t, afterGap, 1)), 7, 7)
}

// TestEnvelopesOnlyHistory: a socket whose reader sends envelopes gets the very envelopes a
// stream reader gets, for history and live events alike.
func TestEnvelopesOnlyHistory(t *testing.T) {
	h, st := newHub(t, store.Retention{}, stream.Options{})
	publish(t, st, "c", 3, "")
	full := open(t, h, stream.Request{Channels: []string{"c"}, FromBeginning: true})
	bare := open(t, h, stream.Request{Channels: []string{"c"}, FromBeginning: true, EnvelopesOnly: true})
	a, b := collect(t, full, 3), collect(t, bare, 3)
	publish(t, st, "c", 1, "")
	a, b = append(a, collect(t, full, 1)...), append(b, collect(t, bare, 1)...)
	for i := range a {
		if string(a[i].Msg.Envelope()) != string(b[i].Msg.Envelope()) || a[i].ID != b[i].ID {
			t.Fatalf("delivery %d: %s (id %s) and %s (id %s)", i, a[i].Msg.Envelope(), a[i].ID, b[i].Msg.Envelope(), b[i].ID)
		}
	}
}
