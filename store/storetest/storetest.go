// Package storetest is the one contract every store.Store implementation must pass. The memory
// store and the Redis store run the same suite, so the engine can rely on the contract alone.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/store"
)

// Factory returns a fresh store with the given retention, closed by the suite's cleanup.
type Factory func(t *testing.T, ret store.Retention) store.Store

// Run runs the contract suite against the stores newStore makes.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, newStore Factory)
	}{
		{"AppendAssignsContiguousSequence", testAppendSequence},
		{"ReadAfterCursor", testReadAfterCursor},
		{"ReadPaging", testReadPaging},
		{"PayloadRoundTrip", testPayloadRoundTrip},
		{"Heads", testHeads},
		{"Stats", testStats},
		{"ListenReturnsHeads", testListenReturnsHeads},
		{"IdempotentAppend", testIdempotency},
		{"RetentionByCount", testRetentionByCount},
		{"RetentionByAge", testRetentionByAge},
		{"ForeignEpochExpired", testForeignEpoch},
		{"CursorAheadExpired", testCursorAhead},
		{"ChannelsAreIndependent", testChannelsIndependent},
		{"ListenDeliversInOrder", testListenInOrder},
		{"ListenIsRefCounted", testListenRefCounted},
		{"ConcurrentAppendsStayContiguous", testConcurrentAppends},
		{"CanceledContext", testCanceledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore) })
	}
}

var channelSerial struct {
	sync.Mutex
	n int
}

// Channel returns a channel name no other test of this process uses, so suites can share one
// Redis server.
func Channel(t *testing.T) string {
	channelSerial.Lock()
	defer channelSerial.Unlock()
	channelSerial.n++
	return fmt.Sprintf("test.%d.%d.%d", time.Now().UnixNano(), channelSerial.n, len(t.Name()))
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func appendN(t *testing.T, s store.Store, channel string, n int) []store.Event {
	t.Helper()
	evs := make([]store.Event, 0, n)
	for i := range n {
		res, err := s.Append(ctx(t), store.AppendRequest{
			Channel: channel, Name: "Tick", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i+1)),
		})
		if err != nil {
			t.Fatalf("append %d: %v", i+1, err)
		}
		if res.Duplicate {
			t.Fatalf("append %d without idempotency key reported a duplicate", i+1)
		}
		evs = append(evs, res.Event)
	}
	return evs
}

// checkRun asserts evs are consecutive events of one epoch starting at seq first.
func checkRun(t *testing.T, evs []store.Event, epoch string, first uint64) {
	t.Helper()
	for i, ev := range evs {
		if want := first + uint64(i); ev.Seq != want || ev.Epoch != epoch {
			t.Fatalf("event %d: got %s, want %s", i, ev.Cursor(), store.Cursor{Epoch: epoch, Seq: want})
		}
	}
}

func testAppendSequence(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	ch := Channel(t)
	before := time.Now().Add(-5 * time.Second).UnixMilli()
	evs := appendN(t, s, ch, 5)
	if evs[0].Epoch == "" {
		t.Fatal("appended event has no epoch")
	}
	checkRun(t, evs, evs[0].Epoch, 1)
	for _, ev := range evs {
		if ev.Channel != ch || ev.Name != "Tick" {
			t.Fatalf("event %+v: wrong channel or name", ev)
		}
		if ev.Time < before || ev.Time > time.Now().Add(5*time.Second).UnixMilli() {
			t.Fatalf("event time %d is not the append time", ev.Time)
		}
	}
	if evs[4].Time < evs[0].Time {
		t.Fatalf("time went backwards: %d then %d", evs[0].Time, evs[4].Time)
	}
}

func testReadAfterCursor(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	ch := Channel(t)
	evs := appendN(t, s, ch, 10)
	epoch := evs[0].Epoch
	for _, after := range []int{0, 1, 5, 9, 10} {
		cur := store.Cursor{Epoch: epoch, Seq: uint64(after)}
		page, err := s.Read(ctx(t), ch, cur, 100)
		if err != nil {
			t.Fatal(err)
		}
		if page.Expired {
			t.Fatalf("after %s: expired, want covered", cur)
		}
		if page.Head != evs[9].Cursor() {
			t.Fatalf("after %s: head %s, want %s", cur, page.Head, evs[9].Cursor())
		}
		if len(page.Events) != 10-after {
			t.Fatalf("after %s: %d events, want %d", cur, len(page.Events), 10-after)
		}
		checkRun(t, page.Events, epoch, uint64(after)+1)
		for i, ev := range page.Events {
			if want := evs[after+i]; string(ev.Data) != string(want.Data) || ev.Time != want.Time {
				t.Fatalf("after %s: event %s reads back as data %s time %d, appended %s at %d", cur, ev.Cursor(), ev.Data, ev.Time, want.Data, want.Time)
			}
		}
	}
	page, err := s.Read(ctx(t), ch, store.Beginning, 100)
	if err != nil {
		t.Fatal(err)
	}
	if page.Expired || len(page.Events) != 10 {
		t.Fatalf("from beginning: expired=%v, %d events", page.Expired, len(page.Events))
	}
	checkRun(t, page.Events, epoch, 1)
	// The empty-channel cursor "0-0" covers the whole history while nothing was trimmed.
	page, err = s.Read(ctx(t), ch, store.Cursor{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if page.Expired || len(page.Events) != 10 {
		t.Fatalf("after zero cursor: expired=%v, %d events", page.Expired, len(page.Events))
	}
}

func testReadPaging(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	ch := Channel(t)
	evs := appendN(t, s, ch, 25)
	var got []store.Event
	cur := store.Beginning
	for range 10 {
		page, err := s.Read(ctx(t), ch, cur, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Events) > 7 {
			t.Fatalf("limit 7 returned %d events", len(page.Events))
		}
		if len(page.Events) == 0 {
			break
		}
		got = append(got, page.Events...)
		cur = page.Events[len(page.Events)-1].Cursor()
	}
	if len(got) != 25 {
		t.Fatalf("paged read returned %d events, want 25", len(got))
	}
	checkRun(t, got, evs[0].Epoch, 1)
	page, err := s.Read(ctx(t), ch, evs[3].Cursor(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 0 || page.Head != evs[24].Cursor() || page.Expired {
		t.Fatalf("limit 0: got %d events, head %s, expired %v", len(page.Events), page.Head, page.Expired)
	}
}

func testPayloadRoundTrip(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	ch := Channel(t)
	h := newRecorder()
	if _, err := s.Listen(ctx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	defer s.Unlisten(ch)
	payloads := []string{
		`{}`, `null`, `"plain string"`, `[1,2,3]`, `{"text":"héllo \u2028 wörld 🎉","nested":{"a":[true,false,null]}}`,
		`{"quote":"\"","backslash":"\\","newline":"\n"}`, `12345678901234567890`,
	}
	for i, p := range payloads {
		req := store.AppendRequest{Channel: ch, Name: fmt.Sprintf("Ev.%d-ü", i), Data: json.RawMessage(p), SocketID: fmt.Sprintf("%d.%d", i, i*7)}
		if _, err := s.Append(ctx(t), req); err != nil {
			t.Fatal(err)
		}
	}
	page, err := s.Read(ctx(t), ch, store.Beginning, 100)
	if err != nil {
		t.Fatal(err)
	}
	live := h.wait(t, ch, len(payloads))
	for i, p := range payloads {
		for src, ev := range map[string]store.Event{"read": page.Events[i], "live": live[i]} {
			if string(ev.Data) != p || ev.Name != fmt.Sprintf("Ev.%d-ü", i) || ev.SocketID != fmt.Sprintf("%d.%d", i, i*7) {
				t.Errorf("%s event %d: got name %q data %s socket %q", src, i, ev.Name, ev.Data, ev.SocketID)
			}
		}
	}
}

func testHeads(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	a, b, unknown := Channel(t), Channel(t), Channel(t)
	evsA := appendN(t, s, a, 3)
	evsB := appendN(t, s, b, 1)
	heads, err := s.Heads(ctx(t), []string{b, unknown, a})
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Cursor{evsB[0].Cursor(), {}, evsA[2].Cursor()}
	for i := range want {
		if heads[i] != want[i] {
			t.Fatalf("heads = %v, want %v", heads, want)
		}
	}
	page, err := s.Read(ctx(t), unknown, store.Cursor{}, 10)
	if err != nil || page.Expired || len(page.Events) != 0 || page.Head != (store.Cursor{}) {
		t.Fatalf("read of unknown channel: %+v, %v", page, err)
	}
}

// testStats: a channel's stats count its retained events, and those appended from a time on.
func testStats(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	ch, unknown := Channel(t), Channel(t)
	st, err := s.Stats(ctx(t), unknown, time.Now().Add(-time.Hour))
	if err != nil || st != (store.ChannelStats{}) {
		t.Fatalf("stats of an unknown channel: %+v, %v", st, err)
	}
	early := appendN(t, s, ch, 3)
	// Event times are the store's clock, in milliseconds: the mark is a millisecond after the
	// third event, and the next events come once the store's clock has passed it.
	mark := time.UnixMilli(early[2].Time + 1)
	var late []store.Event
	deadline := time.Now().Add(10 * time.Second)
	for len(late) == 0 || late[0].Time < mark.UnixMilli() {
		if time.Now().After(deadline) {
			t.Fatal("the store's clock did not move past the mark in 10 s")
		}
		time.Sleep(2 * time.Millisecond)
		late = appendN(t, s, ch, 1)
		early = append(early, late...)
	}
	late = append(late, appendN(t, s, ch, 3)...)
	all := append(early[:len(early)-1:len(early)-1], late...)
	st, err = s.Stats(ctx(t), ch, mark)
	if err != nil {
		t.Fatal(err)
	}
	newest := all[len(all)-1]
	want := store.ChannelStats{
		Head: newest.Cursor(), Retained: len(all), Oldest: all[0].Seq,
		OldestTime: time.UnixMilli(all[0].Time), NewestTime: time.UnixMilli(newest.Time), Recent: len(late),
	}
	if !st.OldestTime.Equal(want.OldestTime) || !st.NewestTime.Equal(want.NewestTime) {
		t.Fatalf("stats times %v / %v, want %v / %v", st.OldestTime, st.NewestTime, want.OldestTime, want.NewestTime)
	}
	st.OldestTime, st.NewestTime, want.OldestTime, want.NewestTime = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if st != want {
		t.Fatalf("stats since the mark: %+v, want %+v", st, want)
	}
	for _, ms := range []int64{all[0].Time, all[len(all)/2].Time, newest.Time, newest.Time + 1} {
		want := 0
		for _, ev := range all {
			if ev.Time >= ms {
				want++
			}
		}
		st, err := s.Stats(ctx(t), ch, time.UnixMilli(ms))
		if err != nil || st.Recent != want {
			t.Fatalf("stats since %d: recent %d, %v; want %d", ms, st.Recent, err, want)
		}
	}
}

// testListenReturnsHeads: Listen answers each channel's head, read once the channel was live —
// the same Heads answers — and the next event to reach the handler is the one after it.
func testListenReturnsHeads(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	a, empty := Channel(t), Channel(t)
	evs := appendN(t, s, a, 3)
	h := newRecorder()
	heads, err := s.Listen(ctx(t), h, empty, a)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unlisten(empty, a)
	if len(heads) != 2 || heads[0] != (store.Cursor{}) || heads[1] != evs[2].Cursor() {
		t.Fatalf("Listen's heads = %v, want [%v %v]", heads, store.Cursor{}, evs[2].Cursor())
	}
	next := appendN(t, s, a, 1)
	got := h.wait(t, a, 1)
	if got[0].Cursor() != next[0].Cursor() || got[0].Seq != heads[1].Seq+1 {
		t.Fatalf("first live event %v, want %v, right after the head", got[0].Cursor(), next[0].Cursor())
	}
}

func testIdempotency(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	ch, other := Channel(t), Channel(t)
	req := store.AppendRequest{Channel: ch, Name: "MessageSent", Data: json.RawMessage(`{"n":1}`), IdempotencyKey: "key-1"}
	first, err := s.Append(ctx(t), req)
	if err != nil || first.Duplicate {
		t.Fatalf("first append: %+v, %v", first, err)
	}
	again, err := s.Append(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Event.Cursor() != first.Event.Cursor() || string(again.Event.Data) != `{"n":1}` {
		t.Fatalf("repeat: %+v, want duplicate of %s", again, first.Event.Cursor())
	}
	for _, changed := range []store.AppendRequest{
		{Channel: ch, Name: "MessageSent", Data: json.RawMessage(`{"n":2}`), IdempotencyKey: "key-1"},
		{Channel: ch, Name: "Other", Data: json.RawMessage(`{"n":1}`), IdempotencyKey: "key-1"},
		{Channel: ch, Name: "MessageSent", Data: json.RawMessage(`{"n":1}`), SocketID: "1.2", IdempotencyKey: "key-1"},
	} {
		if _, err := s.Append(ctx(t), changed); !errors.Is(err, store.ErrIdempotencyConflict) {
			t.Fatalf("same key, different request %+v: err %v, want ErrIdempotencyConflict", changed, err)
		}
	}
	// Keys are scoped to the channel.
	res, err := s.Append(ctx(t), store.AppendRequest{Channel: other, Name: "MessageSent", Data: json.RawMessage(`{"n":2}`), IdempotencyKey: "key-1"})
	if err != nil || res.Duplicate || res.Event.Seq != 1 {
		t.Fatalf("same key on another channel: %+v, %v", res, err)
	}
	page, err := s.Read(ctx(t), ch, store.Beginning, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 1 {
		t.Fatalf("channel holds %d events after repeats, want 1", len(page.Events))
	}
	next := appendN(t, s, ch, 1)
	if next[0].Seq != 2 {
		t.Fatalf("append after repeats got seq %d, want 2", next[0].Seq)
	}
}

func testRetentionByCount(t *testing.T, newStore Factory) {
	const keep = 50
	s := newStore(t, store.Retention{MaxEvents: keep})
	ch := Channel(t)
	evs := appendN(t, s, ch, 1000)
	page, err := s.Read(ctx(t), ch, store.Beginning, 2000)
	if err != nil {
		t.Fatal(err)
	}
	// Trimming may be approximate (Redis MAXLEN ~) but never keeps fewer than asked, nor
	// lets history grow without bound.
	if n := len(page.Events); n < keep || n > keep+300 {
		t.Fatalf("retained %d events with MaxEvents %d", n, keep)
	}
	oldest := page.Events[0].Seq
	checkRun(t, page.Events, evs[0].Epoch, oldest)
	if page.Events[len(page.Events)-1].Seq != 1000 {
		t.Fatalf("newest retained is %d, want 1000", page.Events[len(page.Events)-1].Seq)
	}
	// A cursor before the retained history is expired; reading goes on from the oldest retained.
	page, err = s.Read(ctx(t), ch, evs[0].Cursor(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if !page.Expired || len(page.Events) == 0 || page.Events[0].Seq != oldest {
		t.Fatalf("trimmed cursor: expired=%v first=%v, want expired from %d", page.Expired, page.Events, oldest)
	}
	// The cursor just before the oldest retained is still covered.
	page, err = s.Read(ctx(t), ch, store.Cursor{Epoch: evs[0].Epoch, Seq: oldest - 1}, 10)
	if err != nil || page.Expired || page.Events[0].Seq != oldest {
		t.Fatalf("cursor before oldest: %+v, %v", page.Expired, err)
	}
	// So is "before everything" only while nothing was trimmed.
	page, err = s.Read(ctx(t), ch, store.Cursor{}, 10)
	if err != nil || !page.Expired {
		t.Fatalf("zero cursor on a trimmed channel: expired=%v, %v; want expired", page.Expired, err)
	}
}

func testRetentionByAge(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{MaxAge: time.Second})
	ch := Channel(t)
	old := appendN(t, s, ch, 3)
	time.Sleep(1500 * time.Millisecond)
	page, err := s.Read(ctx(t), ch, old[0].Cursor(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if !page.Expired || len(page.Events) != 0 {
		t.Fatalf("aged-out history: expired=%v events=%d, want expired and none", page.Expired, len(page.Events))
	}
	// Up to date is not expired, even when the history aged out.
	page, err = s.Read(ctx(t), ch, old[2].Cursor(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if page.Head.Seq != 0 && page.Expired {
		t.Fatal("cursor at the head reported expired")
	}
	fresh := appendN(t, s, ch, 2)
	page, err = s.Read(ctx(t), ch, old[0].Cursor(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if !page.Expired || len(page.Events) != 2 || page.Events[0].Cursor() != fresh[0].Cursor() {
		t.Fatalf("after new appends: expired=%v events=%v, want expired then the 2 new", page.Expired, page.Events)
	}
	if fresh[0].Epoch == old[0].Epoch && fresh[0].Seq != 4 {
		t.Fatalf("same epoch must continue the sequence: got %s after %s", fresh[0].Cursor(), old[2].Cursor())
	}
}

func testForeignEpoch(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	ch := Channel(t)
	evs := appendN(t, s, ch, 3)
	page, err := s.Read(ctx(t), ch, store.Cursor{Epoch: "zzzzzzzz", Seq: 2}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !page.Expired || len(page.Events) != 3 {
		t.Fatalf("foreign epoch: expired=%v events=%d, want expired and all 3", page.Expired, len(page.Events))
	}
	checkRun(t, page.Events, evs[0].Epoch, 1)
}

func testCursorAhead(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	ch := Channel(t)
	evs := appendN(t, s, ch, 3)
	// What a client holds after a failover lost the channel's last events: everything up to
	// the head is the log's own, so it is told it lost something and is sent nothing twice.
	page, err := s.Read(ctx(t), ch, store.Cursor{Epoch: evs[0].Epoch, Seq: 99}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !page.Expired || len(page.Events) != 0 || page.Head != evs[2].Cursor() {
		t.Fatalf("cursor ahead of head: expired=%v events=%d head=%s; want expired, none, head %s",
			page.Expired, len(page.Events), page.Head, evs[2].Cursor())
	}
	// From the head it goes on with the next event.
	next := appendN(t, s, ch, 1)
	page, err = s.Read(ctx(t), ch, page.Head, 10)
	if err != nil || page.Expired || len(page.Events) != 1 || page.Events[0].Cursor() != next[0].Cursor() {
		t.Fatalf("after the head: %+v, %v; want only %s", page, err, next[0].Cursor())
	}
	page, err = s.Read(ctx(t), Channel(t), store.Cursor{Epoch: evs[0].Epoch, Seq: 2}, 10)
	if err != nil || !page.Expired {
		t.Fatalf("cursor on an empty channel: expired=%v, %v; want expired", page.Expired, err)
	}
}

func testChannelsIndependent(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	a, b := Channel(t), Channel(t)
	appendN(t, s, a, 4)
	evsB := appendN(t, s, b, 2)
	checkRun(t, evsB, evsB[0].Epoch, 1)
	page, err := s.Read(ctx(t), b, store.Beginning, 10)
	if err != nil || len(page.Events) != 2 {
		t.Fatalf("channel b: %d events, %v", len(page.Events), err)
	}
	for _, ev := range page.Events {
		if ev.Channel != b {
			t.Fatalf("channel b returned an event of %q", ev.Channel)
		}
	}
}

func testListenInOrder(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	a, b, quiet := Channel(t), Channel(t), Channel(t)
	appendN(t, s, a, 2) // before Listen: must not be delivered live
	h := newRecorder()
	if _, err := s.Listen(ctx(t), h, a, b); err != nil {
		t.Fatal(err)
	}
	evs := appendN(t, s, a, 50)
	appendN(t, s, b, 5)
	appendN(t, s, quiet, 5) // not listened to
	got := h.wait(t, a, 50)
	checkRun(t, got, evs[0].Epoch, 3)
	h.wait(t, b, 5)
	s.Unlisten(a, b)
	time.Sleep(200 * time.Millisecond)
	appendN(t, s, a, 3)
	time.Sleep(300 * time.Millisecond)
	if n := len(h.events(a)); n != 50 {
		t.Fatalf("after Unlisten %d events were delivered, want 50", n)
	}
	if n := len(h.events(quiet)); n != 0 {
		t.Fatalf("%d events delivered for a channel nobody listens to", n)
	}
}

func testListenRefCounted(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	ch := Channel(t)
	h := newRecorder()
	for range 2 {
		if _, err := s.Listen(ctx(t), h, ch); err != nil {
			t.Fatal(err)
		}
	}
	s.Unlisten(ch)
	time.Sleep(100 * time.Millisecond)
	evs := appendN(t, s, ch, 3)
	checkRun(t, h.wait(t, ch, 3), evs[0].Epoch, 1)
	s.Unlisten(ch)
}

func testConcurrentAppends(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{MaxEvents: 10000})
	channels := []string{Channel(t), Channel(t), Channel(t)}
	h := newRecorder()
	if _, err := s.Listen(ctx(t), h, channels...); err != nil {
		t.Fatal(err)
	}
	defer s.Unlisten(channels...)
	const writers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				ch := channels[(w+i)%len(channels)]
				if _, err := s.Append(context.Background(), store.AppendRequest{Channel: ch, Name: "X", Data: json.RawMessage(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for _, ch := range channels {
		page, err := s.Read(ctx(t), ch, store.Beginning, 10000)
		if err != nil {
			t.Fatal(err)
		}
		n := len(page.Events)
		total += n
		live := h.wait(t, ch, n)
		seen := map[string]bool{}
		for i := range n {
			if page.Events[i].Seq != uint64(i+1) || live[i].Seq != uint64(i+1) {
				t.Fatalf("channel %s position %d: read seq %d, live seq %d", ch, i, page.Events[i].Seq, live[i].Seq)
			}
			if seen[string(page.Events[i].Data)] {
				t.Fatalf("event %s stored twice", page.Events[i].Data)
			}
			seen[string(page.Events[i].Data)] = true
		}
	}
	if total != writers*each {
		t.Fatalf("stored %d events, want %d", total, writers*each)
	}
}

func testCanceledContext(t *testing.T, newStore Factory) {
	s := newStore(t, store.Retention{})
	c, cancel := context.WithCancel(context.Background())
	cancel()
	ch := Channel(t)
	if _, err := s.Append(c, store.AppendRequest{Channel: ch, Name: "X", Data: json.RawMessage(`1`)}); err == nil {
		t.Fatal("append with a canceled context succeeded")
	}
	page, err := s.Read(ctx(t), ch, store.Beginning, 10)
	if err != nil || len(page.Events) != 0 {
		t.Fatalf("canceled append left %d events (%v)", len(page.Events), err)
	}
}

// recorder is a store.Handler that keeps what it receives.
type recorder struct {
	mu     sync.Mutex
	byChan map[string][]store.Event
	gaps   map[string]int
	ephs   map[string][]received // ephemeral messages, see live.go
	notify chan struct{}
}

func newRecorder() *recorder {
	return &recorder{byChan: map[string][]store.Event{}, gaps: map[string]int{}, ephs: map[string][]received{}, notify: make(chan struct{}, 1)}
}

func (r *recorder) HandleEvent(ev *store.Event) {
	r.mu.Lock()
	r.byChan[ev.Channel] = append(r.byChan[ev.Channel], *ev)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) HandleEphemeral(e *store.Ephemeral) {
	r.mu.Lock()
	msg := *e
	msg.Data = append(json.RawMessage(nil), e.Data...)
	r.ephs[e.Channel] = append(r.ephs[e.Channel], received{msg: msg, afterEvents: len(r.byChan[e.Channel])})
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) HandleGap(channel string) {
	r.mu.Lock()
	r.gaps[channel]++
	r.mu.Unlock()
}

func (r *recorder) events(ch string) []store.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]store.Event(nil), r.byChan[ch]...)
}

// wait returns the first n live events of ch, failing after 10 s.
func (r *recorder) wait(t *testing.T, ch string, n int) []store.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if evs := r.events(ch); len(evs) >= n {
			if len(evs) > n {
				t.Fatalf("channel %s: %d live events, want %d", ch, len(evs), n)
			}
			return evs
		}
		select {
		case <-r.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("channel %s: %d live events after 10s, want %d", ch, len(r.events(ch)), n)
		}
	}
}
