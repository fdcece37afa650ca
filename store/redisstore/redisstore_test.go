package redisstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/store/storetest"
	"github.com/herald-rt/herald/test/testkit"
)

// redisURL is the server every test uses: HERALD_TEST_REDIS_URL (CI starts one), else an
// ephemeral redis-server this binary starts.
var (
	redisURL   string
	redisSetup error
)

func TestMain(m *testing.M) {
	redisURL, redisSetup = testkit.SharedRedisURL()
	os.Exit(testkit.Main(m))
}

func needRedis(t testing.TB) {
	t.Helper()
	if redisSetup != nil {
		t.Fatal(redisSetup)
	}
}

var prefixSerial atomic.Int64

// uniquePrefix keeps each store's keys apart from every other test's, also across packages
// and runs sharing one server.
func uniquePrefix() string {
	return fmt.Sprintf("ht:%d.%d.%d:", os.Getpid(), time.Now().UnixNano()%1e9, prefixSerial.Add(1))
}

// newStore returns a store on the test server, closed and its keys removed at cleanup.
func newStore(t testing.TB, opts redisstore.Options) *redisstore.Store {
	t.Helper()
	needRedis(t)
	if opts.URL == "" && opts.Client == nil {
		opts.URL = redisURL
	}
	if opts.Prefix == "" {
		opts.Prefix = uniquePrefix()
	}
	s, err := redisstore.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		deleteKeys(t, opts.Prefix)
	})
	return s
}

// rawClient is a plain client for what the tests do behind the store's back.
func rawClient(t testing.TB, name string) *redis.Client {
	t.Helper()
	needRedis(t)
	o, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	o.ClientName = name
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

func deleteKeys(t testing.TB, prefix string) {
	o, err := redis.ParseURL(redisURL)
	if err != nil {
		return
	}
	c := redis.NewClient(o)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if len(keys) > 0 {
		c.Unlink(ctx, keys...)
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func appendN(t testing.TB, s store.Store, ch string, n int) []store.Event {
	t.Helper()
	evs := make([]store.Event, n)
	for i := range n {
		res, err := s.Append(testCtx(t), store.AppendRequest{Channel: ch, Name: "Tick", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i+1))})
		if err != nil {
			t.Fatalf("append %d: %v", i+1, err)
		}
		evs[i] = res.Event
	}
	return evs
}

func TestContract(t *testing.T) {
	needRedis(t)
	storetest.Run(t, func(t *testing.T, ret store.Retention) store.Store {
		return newStore(t, redisstore.Options{Retention: ret})
	})
}

// recorder is a store.Handler that keeps what it receives.
type recorder struct {
	mu     sync.Mutex
	events map[string][]store.Event
	gaps   map[string]int
}

func newRecorder() *recorder {
	return &recorder{events: map[string][]store.Event{}, gaps: map[string]int{}}
}

func (r *recorder) HandleEvent(ev *store.Event) {
	r.mu.Lock()
	r.events[ev.Channel] = append(r.events[ev.Channel], *ev)
	r.mu.Unlock()
}

func (r *recorder) HandleEphemeral(*store.Ephemeral) {}

func (r *recorder) HandleGap(ch string) {
	r.mu.Lock()
	r.gaps[ch]++
	r.mu.Unlock()
}

func (r *recorder) snapshot(ch string) ([]store.Event, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]store.Event(nil), r.events[ch]...), r.gaps[ch]
}

// wait returns ch's live events once there are n, failing after the timeout or if more arrive.
func (r *recorder) wait(t testing.TB, ch string, n int, timeout time.Duration) []store.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs, _ := r.snapshot(ch)
		if len(evs) >= n {
			time.Sleep(20 * time.Millisecond) // let a duplicate show itself
			if evs, _ = r.snapshot(ch); len(evs) != n {
				t.Fatalf("channel %s: %d live events, want %d", ch, len(evs), n)
			}
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("channel %s: %d live events after %v, want %d", ch, len(evs), timeout, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkSeqs asserts evs are seq first, first+1, ... of one epoch.
func checkSeqs(t testing.TB, evs []store.Event, epoch string, first uint64) {
	t.Helper()
	for i, ev := range evs {
		if ev.Seq != first+uint64(i) || ev.Epoch != epoch {
			t.Fatalf("event %d is %s, want %s", i, ev.Cursor(), store.Cursor{Epoch: epoch, Seq: first + uint64(i)})
		}
	}
}

func TestRefillsLostNotices(t *testing.T) {
	t.Parallel()
	s := newStore(t, redisstore.Options{})
	ch := "lost.notices"
	h := newRecorder()
	if _, err := s.Listen(testCtx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	first := appendN(t, s, ch, 3)
	redisstore.SuppressPublish(s, true)
	appendN(t, s, ch, 5) // their notices are "lost"
	redisstore.SuppressPublish(s, false)
	// Colons in every field the notice carries, to check its framing.
	if _, err := s.Append(testCtx(t), store.AppendRequest{Channel: ch, Name: "A:B", Data: json.RawMessage(`{"k":"a:b"}`), SocketID: "1:2"}); err != nil {
		t.Fatal(err)
	}
	evs := h.wait(t, ch, 9, 10*time.Second)
	checkSeqs(t, evs, first[0].Epoch, 1)
	for i, ev := range evs[:8] {
		n := i + 1 // appendN numbers each run from 1
		if i >= 3 {
			n = i - 2
		}
		if want := fmt.Sprintf(`{"n":%d}`, n); string(ev.Data) != want {
			t.Fatalf("event %d data %s, want %s", i+1, ev.Data, want)
		}
	}
	if last := evs[8]; last.Name != "A:B" || last.SocketID != "1:2" || string(last.Data) != `{"k":"a:b"}` {
		t.Fatalf("last event decoded as %+v", last)
	}
	if _, gaps := h.snapshot(ch); gaps != 0 {
		t.Fatalf("%d gaps reported for notices the log could refill", gaps)
	}
	s.Unlisten(ch)
}

// pubsubClientIDs lists the server's pub/sub connections named name.
func pubsubClientIDs(t testing.TB, c *redis.Client, name string) []string {
	t.Helper()
	list, err := c.ClientList(testCtx(t)).Result()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, line := range strings.Split(list, "\n") {
		fields := map[string]string{}
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			fields[k] = v
		}
		if fields["name"] == name && (fields["sub"] != "" && fields["sub"] != "0" || fields["ssub"] != "" && fields["ssub"] != "0") {
			ids = append(ids, fields["id"])
		}
	}
	return ids
}

func TestReconnectCatchesUp(t *testing.T) {
	t.Parallel()
	name := fmt.Sprintf("herald-test-%d-%d", os.Getpid(), prefixSerial.Add(1))
	client := rawClient(t, name)
	var logs testkit.LogBuffer
	s := newStore(t, redisstore.Options{Client: client, Logger: zerolog.New(&logs)})
	admin := rawClient(t, "")
	ch := "reconnect"
	h := newRecorder()
	if _, err := s.Listen(testCtx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	const total = 400
	done := make(chan []store.Event)
	go func() {
		evs := make([]store.Event, 0, total)
		for i := range total {
			res, err := s.Append(context.Background(), store.AppendRequest{Channel: ch, Name: "Tick", Data: json.RawMessage(strconv.Itoa(i + 1))})
			if err != nil {
				t.Errorf("append %d: %v", i+1, err)
				break
			}
			evs = append(evs, res.Event)
			time.Sleep(time.Millisecond)
		}
		done <- evs
	}()
	kills := 0
	for range 5 {
		time.Sleep(60 * time.Millisecond)
		for _, id := range pubsubClientIDs(t, admin, name) {
			if err := admin.Do(testCtx(t), "CLIENT", "KILL", "ID", id).Err(); err == nil {
				kills++
			}
		}
	}
	appended := <-done
	if kills == 0 {
		t.Fatal("found no pub/sub connection of the store to kill")
	}
	if len(appended) != total {
		t.FailNow()
	}
	evs := h.wait(t, ch, total, 10*time.Second)
	checkSeqs(t, evs, appended[0].Epoch, 1)
	for i, ev := range evs {
		if string(ev.Data) != strconv.Itoa(i+1) {
			t.Fatalf("event %d carries %s", i+1, ev.Data)
		}
	}
	if _, gaps := h.snapshot(ch); gaps != 0 {
		t.Fatalf("%d gaps reported across reconnects", gaps)
	}
	if !strings.Contains(logs.String(), "pub/sub connection lost") {
		t.Fatalf("the store never noticed a lost connection; log:\n%s", logs.String())
	}
	t.Logf("%d pub/sub connections killed; %d refills", kills, strings.Count(logs.String(), "refilled"))
	s.Unlisten(ch)
}

// newProxy is a testkit.Proxy to target, closed when the test ends.
func newProxy(t *testing.T, target string) *testkit.Proxy {
	t.Helper()
	p, err := testkit.StartProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestProbeReplacesSilentConnection(t *testing.T) {
	t.Parallel()
	needRedis(t)
	o, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newProxy(t, o.Addr)
	prefix := uniquePrefix()
	var logs testkit.LogBuffer
	listener := newStore(t, redisstore.Options{
		URL:          fmt.Sprintf("redis://%s/%d?read_timeout=300ms&write_timeout=300ms", proxy.Addr(), o.DB),
		Prefix:       prefix,
		PingInterval: 100 * time.Millisecond,
		Logger:       zerolog.New(&logs),
	})
	writer := newStore(t, redisstore.Options{Prefix: prefix})
	ch := "silent"
	h := newRecorder()
	if _, err := listener.Listen(testCtx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	evs := appendN(t, writer, ch, 3)
	h.wait(t, ch, 3, 5*time.Second)
	proxy.Silence()
	appendN(t, writer, ch, 5) // their notices go into the void
	got := h.wait(t, ch, 8, 10*time.Second)
	checkSeqs(t, got, evs[0].Epoch, 1)
	appendN(t, writer, ch, 1)
	checkSeqs(t, h.wait(t, ch, 9, 5*time.Second), evs[0].Epoch, 1)
	if _, gaps := h.snapshot(ch); gaps != 0 {
		t.Fatalf("%d gaps reported", gaps)
	}
	if !strings.Contains(logs.String(), "unresponsive") {
		t.Fatalf("the events arrived, but not through a probe's reconnect; log:\n%s", logs.String())
	}
	listener.Unlisten(ch)
}

// TestLostReplyIsNotRetried checks that an append whose reply is lost is reported as
// unconfirmed — not as "unavailable, nothing appended", which would be false — and not sent
// again: go-redis would retry the pipeline on a new connection, and Redis, which already ran the
// script, would append the event twice. The same idempotent append, repeated, answers with the
// event that landed.
func TestLostReplyIsNotRetried(t *testing.T) {
	t.Parallel()
	needRedis(t)
	o, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newProxy(t, o.Addr)
	prefix := uniquePrefix()
	// go-redis's default retries stay on: the store must switch them off for appends.
	s := newStore(t, redisstore.Options{
		URL:    fmt.Sprintf("redis://%s/%d?read_timeout=300ms", proxy.Addr(), o.DB),
		Prefix: prefix,
	})
	ch := "lost.reply"
	appendN(t, s, ch, 1)
	proxy.MuteReplies()
	req := store.AppendRequest{Channel: ch, Name: "X", Data: json.RawMessage(`2`), IdempotencyKey: "k2"}
	_, err = s.Append(testCtx(t), req)
	if !errors.Is(err, store.ErrUnconfirmed) || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("append without a reply: %v, want ErrUnconfirmed", err)
	}
	if n := rawClient(t, "").XLen(testCtx(t), prefix+"{"+ch+"}:s").Val(); n != 2 {
		t.Fatalf("stream holds %d entries, want 2: the unanswered append ran %d times", n, n-1)
	}
	// New connections answer again: the repeat finds the key's record.
	direct := newStore(t, redisstore.Options{Prefix: prefix})
	res, err := direct.Append(testCtx(t), req)
	if err != nil || !res.Duplicate || res.Event.Seq != 2 {
		t.Fatalf("repeat of the unconfirmed append: %+v %v, want the duplicate of seq 2", res, err)
	}
}

func TestEpochChangeReportsGap(t *testing.T) {
	t.Parallel()
	prefix := uniquePrefix()
	s := newStore(t, redisstore.Options{Prefix: prefix})
	raw := rawClient(t, "")
	ch := "reset"
	h := newRecorder()
	if _, err := s.Listen(testCtx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	old := appendN(t, s, ch, 3)
	h.wait(t, ch, 3, 5*time.Second)
	if err := raw.Del(testCtx(t), prefix+"{"+ch+"}:s", prefix+"{"+ch+"}:m").Err(); err != nil {
		t.Fatal(err)
	}
	fresh := appendN(t, s, ch, 2)
	if fresh[0].Epoch == old[0].Epoch || fresh[0].Seq != 1 {
		t.Fatalf("after the keys were deleted the log continued at %s (was %s)", fresh[0].Cursor(), old[2].Cursor())
	}
	evs := h.wait(t, ch, 5, 5*time.Second)
	checkSeqs(t, evs[3:], fresh[0].Epoch, 1)
	if _, gaps := h.snapshot(ch); gaps != 1 {
		t.Fatalf("%d gaps reported for a log that started over, want 1", gaps)
	}
	page, err := s.Read(testCtx(t), ch, old[1].Cursor(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if !page.Expired || len(page.Events) != 2 || page.Head != fresh[1].Cursor() {
		t.Fatalf("old cursor after the reset: %+v", page)
	}
	s.Unlisten(ch)
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	ctx := testCtx(t)
	// Through a URL, as the service configures it.
	s := newStore(t, redisstore.Options{URL: "redis://" + addr + "/0?dial_timeout=200ms&max_retries=-1"})
	_, err = s.Append(ctx, store.AppendRequest{Channel: "down", Name: "X", Data: json.RawMessage(`1`)})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("append: %v, want ErrUnavailable", err)
	}
	// The rest through a client that gives up on the first failed dial, to keep the test short.
	client := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, DialerRetries: 1, MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	s = newStore(t, redisstore.Options{Client: client})
	_, err = s.Append(ctx, store.AppendRequest{Channel: "down", Name: "X", Data: json.RawMessage(`1`)})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("append: %v, want ErrUnavailable", err)
	}
	if _, err := s.Read(ctx, "down", store.Beginning, 10); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("read: %v, want ErrUnavailable", err)
	}
	if _, err := s.Heads(ctx, []string{"down"}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("heads: %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("ping: %v, want ErrUnavailable", err)
	}
	if _, err := s.Listen(ctx, newRecorder(), "down"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("listen: %v, want ErrUnavailable", err)
	}
}

// TestOneCallManyAppends: appends sent together share one script call, and each keeps its
// own answer: two to one channel in order, a repeated idempotency key answered as the
// duplicate of the append just before it in the same call, and one whose channel's stream
// was clobbered (not a stream any more) failing alone without taking its neighbours along.
func TestOneCallManyAppends(t *testing.T) {
	t.Parallel()
	prefix := uniquePrefix()
	s := newStore(t, redisstore.Options{Prefix: prefix})
	ctx := testCtx(t)
	if _, err := s.Append(ctx, store.AppendRequest{Channel: "call.bad", Name: "E", Data: json.RawMessage(`0`)}); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, "")
	if err := raw.Del(ctx, prefix+"{call.bad}:s").Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.Set(ctx, prefix+"{call.bad}:s", "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	req := func(ch, key, data string) store.AppendRequest {
		return store.AppendRequest{Channel: ch, Name: "E", Data: json.RawMessage(data), IdempotencyKey: key}
	}
	res, errs := redisstore.AppendBatch(s, []store.AppendRequest{
		req("call.a", "", `1`), req("call.bad", "", `2`), req("call.a", "", `3`),
		req("call.b", "k", `4`), req("call.b", "k", `4`),
	})
	for i, want := range []struct {
		ok        bool
		seq       uint64
		duplicate bool
	}{{true, 1, false}, {false, 0, false}, {true, 2, false}, {true, 1, false}, {true, 1, true}} {
		if (errs[i] == nil) != want.ok || (want.ok && (res[i].Event.Seq != want.seq || res[i].Duplicate != want.duplicate)) {
			t.Errorf("append %d: %+v, %v; want ok=%v seq %d duplicate=%v", i, res[i], errs[i], want.ok, want.seq, want.duplicate)
		}
	}
	if errs[1] != nil && !strings.Contains(errs[1].Error(), "WRONGTYPE") {
		t.Errorf("the clobbered channel's append: %v, want Redis's WRONGTYPE", errs[1])
	}
	if res[3].Event.Epoch != res[4].Event.Epoch {
		t.Errorf("the duplicate names another event: %s vs %s", res[3].Event.Cursor(), res[4].Event.Cursor())
	}
	page, err := s.Read(ctx, "call.a", store.Beginning, 10)
	if err != nil || len(page.Events) != 2 || string(page.Events[0].Data) != "1" || string(page.Events[1].Data) != "3" {
		t.Fatalf("call.a holds %+v (%v), want 1 then 3", page.Events, err)
	}
}

func TestBatchingKeepsOrder(t *testing.T) {
	t.Parallel()
	s := newStore(t, redisstore.Options{Retention: store.Retention{MaxEvents: 100000}})
	channels := []string{"order.a", "order.b", "order.c", "order.d"}
	h := newRecorder()
	if _, err := s.Listen(testCtx(t), h, channels...); err != nil {
		t.Fatal(err)
	}
	const writers, each = 32, 60
	type key struct{ w, ch int }
	seqs := make([]map[int][]uint64, writers) // per writer: channel -> seqs in call order
	var wg sync.WaitGroup
	for w := range writers {
		seqs[w] = map[int][]uint64{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				c := (w + i) % len(channels)
				res, err := s.Append(context.Background(), store.AppendRequest{
					Channel: channels[c], Name: "X", Data: json.RawMessage(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)),
				})
				if err != nil {
					t.Errorf("writer %d append %d: %v", w, i, err)
					return
				}
				seqs[w][c] = append(seqs[w][c], res.Event.Seq)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for w := range writers {
		for c, ss := range seqs[w] {
			for i := 1; i < len(ss); i++ {
				if ss[i] <= ss[i-1] {
					t.Fatalf("writer %d on %s: seq %d after %d", w, channels[c], ss[i], ss[i-1])
				}
			}
		}
	}
	total := 0
	for _, ch := range channels {
		page, err := s.Read(testCtx(t), ch, store.Beginning, 100000)
		if err != nil {
			t.Fatal(err)
		}
		total += len(page.Events)
		checkSeqs(t, page.Events, page.Head.Epoch, 1)
		live := h.wait(t, ch, len(page.Events), 10*time.Second)
		checkSeqs(t, live, page.Head.Epoch, 1)
		// Each writer's events appear in its call order.
		lastI := map[int]int{}
		for _, ev := range page.Events {
			var d struct{ W, I int }
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				t.Fatal(err)
			}
			if prev, ok := lastI[d.W]; ok && d.I <= prev {
				t.Fatalf("%s: writer %d's append %d stored after its append %d", ch, d.W, d.I, prev)
			}
			lastI[d.W] = d.I
		}
	}
	if total != writers*each {
		t.Fatalf("stored %d events, want %d", total, writers*each)
	}
	s.Unlisten(channels...)
}

func TestIdempotencyOutlivesHistory(t *testing.T) {
	t.Parallel()
	prefix := uniquePrefix()
	s := newStore(t, redisstore.Options{Prefix: prefix, Retention: store.Retention{MaxAge: 500 * time.Millisecond, IdempotencyTTL: time.Hour}})
	req := store.AppendRequest{Channel: "idem", Name: "X", Data: json.RawMessage(`{"a":1}`), IdempotencyKey: "k:1"}
	first, err := s.Append(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, "")
	if !testkit.WaitFor(10*time.Second, func() bool { return raw.Exists(testCtx(t), prefix+"{idem}:m", prefix+"{idem}:s").Val() == 0 }) {
		t.Fatal("the idle channel's log was not forgotten")
	}
	again, err := s.Append(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Event.Cursor() != first.Event.Cursor() || again.Event.Time != first.Event.Time {
		t.Fatalf("repeat after the history expired: %+v, want duplicate of %+v", again, first)
	}
	next := appendN(t, s, "idem", 1)
	if next[0].Epoch == first.Event.Epoch || next[0].Seq != 1 {
		t.Fatalf("append to a forgotten channel got %s, want seq 1 of a new epoch", next[0].Cursor())
	}
}

func TestAgedEntriesAreNotRetained(t *testing.T) {
	t.Parallel()
	prefix := uniquePrefix()
	s := newStore(t, redisstore.Options{Prefix: prefix, Retention: store.Retention{MaxAge: 700 * time.Millisecond}})
	raw := rawClient(t, "")
	ch := "aging"
	old := appendN(t, s, ch, 40)
	// Ages are the store's own timestamps: the young events come a good part of MaxAge later.
	age := func(ev store.Event) time.Duration {
		return time.Duration(time.Now().UnixMilli()-ev.Time) * time.Millisecond
	}
	testkit.WaitFor(5*time.Second, func() bool { return age(old[39]) >= 400*time.Millisecond })
	young := appendN(t, s, ch, 20)
	// The first 40 are past MaxAge, the stream still holds them.
	if !testkit.WaitFor(5*time.Second, func() bool { return age(old[39]) > 700*time.Millisecond+50*time.Millisecond }) || age(young[0]) >= 700*time.Millisecond {
		t.Skipf("the machine is too slow for these ages: old %v, young %v", age(old[39]), age(young[0]))
	}
	if n := raw.XLen(testCtx(t), prefix+"{"+ch+"}:s").Val(); n != 60 {
		t.Fatalf("stream holds %d entries before any trim, want 60", n)
	}
	page, err := s.Read(testCtx(t), ch, store.Beginning, 100)
	if err != nil {
		t.Fatal(err)
	}
	if page.Expired || len(page.Events) != 20 {
		t.Fatalf("from the beginning: expired=%v, %d events; want the 20 young ones", page.Expired, len(page.Events))
	}
	checkSeqs(t, page.Events, old[0].Epoch, 41)
	// A page filled with aged entries must not come back short.
	page, err = s.Read(testCtx(t), ch, store.Beginning, 10)
	if err != nil || page.Expired || len(page.Events) != 10 {
		t.Fatalf("10 from the beginning: %v, expired=%v, %d events", err, page.Expired, len(page.Events))
	}
	checkSeqs(t, page.Events, old[0].Epoch, 41)
	page, err = s.Read(testCtx(t), ch, old[10].Cursor(), 100)
	if err != nil || !page.Expired || len(page.Events) != 20 || page.Events[0].Seq != 41 {
		t.Fatalf("aged cursor: %v, expired=%v, %d events", err, page.Expired, len(page.Events))
	}
	page, err = s.Read(testCtx(t), ch, old[39].Cursor(), 100)
	if err != nil || page.Expired || len(page.Events) != 20 {
		t.Fatalf("cursor just before the young ones: %v, expired=%v, %d events", err, page.Expired, len(page.Events))
	}
	// The next append trims what aged out, so the stream stops carrying it.
	appendN(t, s, ch, 1)
	if n := raw.XLen(testCtx(t), prefix+"{"+ch+"}:s").Val(); n != 21 {
		t.Fatalf("stream holds %d entries after an append trimmed by age, want 21", n)
	}
}

func TestRejectsBracedNames(t *testing.T) {
	needRedis(t)
	if _, err := redisstore.New(context.Background(), redisstore.Options{URL: redisURL, Prefix: "a{b}:"}); err == nil {
		t.Fatal("a prefix with braces was accepted")
	}
	s := newStore(t, redisstore.Options{})
	if _, err := s.Append(testCtx(t), store.AppendRequest{Channel: "a{b}", Name: "X", Data: json.RawMessage(`1`)}); err == nil {
		t.Fatal("a channel with braces was accepted")
	}
}

func TestClose(t *testing.T) {
	s := newStore(t, redisstore.Options{})
	h := newRecorder()
	if _, err := s.Listen(testCtx(t), h, "closing"); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "closing", 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(testCtx(t), store.AppendRequest{Channel: "closing", Name: "X", Data: json.RawMessage(`1`)}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if _, err := s.Listen(testCtx(t), h, "closing"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("listen after close: %v", err)
	}
	if s.Kind() != "redis" {
		t.Fatalf("kind %q", s.Kind())
	}
}

// TestListenChurn listens and unlistens channels from many goroutines while they are being
// appended to: after each Listen returns, the next event must arrive; delivery never repeats
// or goes backwards.
func TestListenChurn(t *testing.T) {
	t.Parallel()
	s := newStore(t, redisstore.Options{Retention: store.Retention{MaxEvents: 100000}})
	h := newRecorder()
	channels := []string{"churn.a", "churn.b", "churn.c"}
	stop := make(chan struct{})
	background := make(chan struct{})
	go func() {
		defer close(background)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Append(context.Background(), store.AppendRequest{Channel: channels[i%len(channels)], Name: "Noise", Data: json.RawMessage(`0`)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				ch := channels[(w+i)%len(channels)]
				if _, err := s.Listen(testCtx(t), h, ch); err != nil {
					t.Error(err)
					return
				}
				res, err := s.Append(testCtx(t), store.AppendRequest{Channel: ch, Name: "Probe", Data: json.RawMessage(`1`)})
				if err != nil {
					t.Error(err)
					return
				}
				if !h.has(ch, res.Event.Cursor(), 5*time.Second) {
					t.Errorf("%s: event %s appended after Listen returned never arrived", ch, res.Event.Cursor())
				}
				s.Unlisten(ch)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-background
	for _, ch := range channels {
		evs, gaps := h.snapshot(ch)
		for i := 1; i < len(evs); i++ {
			if evs[i].Seq <= evs[i-1].Seq {
				t.Fatalf("%s: delivered %s after %s", ch, evs[i].Cursor(), evs[i-1].Cursor())
			}
		}
		if gaps != 0 {
			t.Fatalf("%s: %d gaps", ch, gaps)
		}
	}
}

// has waits for ch's event at cur.
func (r *recorder) has(ch string, cur store.Cursor, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		evs, _ := r.snapshot(ch)
		for i := len(evs) - 1; i >= 0; i-- {
			if evs[i].Cursor() == cur {
				return true
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}
