package redisstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/test/testkit"
)

// pipelineCounter counts the pipelines a client sends: one per batch of appends.
type pipelineCounter struct{ n atomic.Int64 }

func (*pipelineCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (*pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (c *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// waitUntil fails the test with what unless cond holds within 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !testkit.WaitFor(10*time.Second, cond) {
		t.Fatal(what)
	}
}

// appendAsync appends data to channel in a goroutine of its own and hands back its error.
func appendAsync(ctx context.Context, s *redisstore.Store, channel, data string) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, store.AppendRequest{Channel: channel, Name: "X", Data: json.RawMessage(data)})
		errc <- err
	}()
	return errc
}

// wantAnswered fails the test unless each errc gives nil within 10 s; timeout says what not
// getting an answer means.
func wantAnswered(t *testing.T, timeout string, errcs ...<-chan error) {
	t.Helper()
	for _, errc := range errcs {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal(timeout)
		}
	}
}

// wantData fails the test unless channel holds events with exactly these data, in order.
func wantData(t *testing.T, s *redisstore.Store, channel string, want ...string) {
	t.Helper()
	page, err := s.Read(testCtx(t), channel, store.Beginning, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range page.Events {
		got = append(got, string(ev.Data))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s holds %q, want %q", channel, got, want)
	}
}

// A lone caller's appends are never held for company: with a linger of an hour, one caller's
// appends in a row each still go at once.
func TestLoneCallerIsNotHeld(t *testing.T) {
	t.Parallel()
	s := newStore(t, redisstore.Options{AppendLinger: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 50 {
		res, err := s.Append(ctx, store.AppendRequest{Channel: "lone", Name: "X", Data: json.RawMessage(`1`)})
		if err != nil {
			t.Fatalf("append %d: %v", i+1, err)
		}
		if res.Event.Seq != uint64(i+1) {
			t.Fatalf("append %d got seq %d", i+1, res.Event.Seq)
		}
	}
}

// Appends from many callers at once share pipelines: within a linger they leave together.
// The callers pause between appends, as publishers that do other work do, so they are not all
// waiting at once and the linger runs its course.
func TestConcurrentAppendsShareRoundTrips(t *testing.T) {
	t.Parallel()
	client := rawClient(t, "")
	counter := &pipelineCounter{}
	client.AddHook(counter)
	s := newStore(t, redisstore.Options{Client: client, AppendLinger: 20 * time.Millisecond})
	const callers, each = 32, 25
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for i := range each {
				time.Sleep(time.Duration(c%8) * time.Millisecond)
				_, err := s.Append(testCtx(t), store.AppendRequest{
					Channel: fmt.Sprintf("share.%d", c%8), Name: "X", Data: json.RawMessage(fmt.Sprintf(`{"c":%d,"i":%d}`, c, i)),
				})
				if err != nil {
					t.Errorf("caller %d append %d: %v", c, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for ch := range 8 {
		page, err := s.Read(testCtx(t), fmt.Sprintf("share.%d", ch), store.Beginning, 1000)
		if err != nil {
			t.Fatal(err)
		}
		checkSeqs(t, page.Events, page.Head.Epoch, 1)
		total += len(page.Events)
	}
	if total != callers*each {
		t.Fatalf("stored %d events, want %d", total, callers*each)
	}
	// Listening and the store's own housekeeping send no pipelines; every one counted here
	// carried appends. Without the linger these callers take about 570 (seven of ten appends
	// alone), with it about 60.
	n := counter.n.Load()
	t.Logf("%d appends, %d pipelines", callers*each, n)
	if n > callers*each/4 {
		t.Fatalf("%d appends took %d pipelines, want at most %d", callers*each, n, callers*each/4)
	}
}

// A linger ends once a batch's worth of appends is queued, however long it may last and
// however many callers were pending at once before: sixteen appends already share a script
// call's cost, so holding them for more only adds latency.
func TestLingerEndsAtAFullBatch(t *testing.T) {
	t.Parallel()
	s := newStore(t, redisstore.Options{AppendLinger: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var errcs []<-chan error
	appendOne := func(i int) {
		// A crowd larger than the batch, seen just now, so only the batch can end the linger.
		redisstore.RememberCrowd(s, 1000)
		errcs = append(errcs, appendAsync(ctx, s, "full", fmt.Sprint(i)))
	}
	appendOne(0)
	waitUntil(t, "the first append does not linger", func() bool { return redisstore.Lingering(s) })
	for i := 1; i < 15; i++ {
		appendOne(i)
		waitUntil(t, fmt.Sprintf("append %d is not queued", i), func() bool { return redisstore.Queued(s) == i+1 })
	}
	for i, errc := range errcs {
		select {
		case err := <-errc:
			t.Fatalf("append %d of 15 came back before the batch was full: %v", i, err)
		default:
		}
	}
	if !redisstore.Lingering(s) {
		t.Fatal("15 appends queued: the linger ended before the batch was full")
	}
	appendOne(15)
	for i, errc := range errcs {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("append %d: %v", i, err)
			}
		case <-ctx.Done():
			// The linger would have lasted an hour.
			t.Fatalf("16 appends queued: append %d is still waiting", i)
		}
	}
	page, err := s.Read(testCtx(t), "full", store.Beginning, 100)
	if err != nil {
		t.Fatal(err)
	}
	checkSeqs(t, page.Events, page.Head.Epoch, 1)
	if len(page.Events) != 16 {
		t.Fatalf("the channel holds %d events, want 16", len(page.Events))
	}
}

// A caller that gives up while its own goroutine lingers for company is answered at once; the
// appends of others it was holding still leave when the linger ends, and its own never does.
func TestCancelledSenderLeavesTheLinger(t *testing.T) {
	t.Parallel()
	s := newStore(t, redisstore.Options{AppendLinger: time.Hour})
	redisstore.RememberCrowd(s, 32)
	ctx, cancel := context.WithCancel(context.Background())
	first := appendAsync(ctx, s, "leave", `"a"`)
	waitUntil(t, "the first append does not linger", func() bool { return redisstore.Lingering(s) })
	second := appendAsync(context.Background(), s, "leave", `"b"`)
	waitUntil(t, "the second append is not queued", func() bool { return redisstore.Queued(s) == 2 })
	cancel()
	select {
	case err := <-first:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the cancelled append: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cancelled append waits for the linger it was sending")
	}
	if !redisstore.Lingering(s) {
		t.Fatal("the linger ended with its first caller: the second append was sent alone")
	}
	// A crowd of two is now complete: the linger ends and the batch leaves.
	redisstore.RememberCrowd(s, 2)
	third := appendAsync(context.Background(), s, "leave", `"c"`)
	wantAnswered(t, "the linger its first caller left never ends", second, third)
	wantData(t, s, "leave", `"b"`, `"c"`)
}

// Two senders that took a slot in the same instant do not both linger: the second leaves its
// slot and the queue to the first, which sends everything when its linger ends. Two lingering
// at once each held a slot, and the one whose wake-up the other replaced waited out its whole
// linger.
func TestOneSenderLingers(t *testing.T) {
	t.Parallel()
	s := newStore(t, redisstore.Options{AppendLinger: time.Hour})
	redisstore.RememberCrowd(s, 32)
	first := redisstore.RaceSenders(s, store.AppendRequest{Channel: "race", Name: "X", Data: json.RawMessage(`"a"`)})
	waitUntil(t, "no sender lingers", func() bool { return redisstore.Lingering(s) })
	waitUntil(t, "both racing senders hold a slot", func() bool { return redisstore.Slots(s) == 1 })
	// A crowd of two is now complete: the linger ends, and both appends leave in one batch.
	redisstore.RememberCrowd(s, 2)
	second := appendAsync(testCtx(t), s, "race", `"b"`)
	wantAnswered(t, "the linger did not end when its crowd was complete", first, second)
	waitUntil(t, "a slot is still held after the batch", func() bool { return redisstore.Slots(s) == 0 })
	wantData(t, s, "race", `"a"`, `"b"`)
}

// Close ends a linger at once: the append waiting in it fails with store.ErrClosed.
func TestCloseEndsLinger(t *testing.T) {
	t.Parallel()
	needRedis(t)
	s, err := redisstore.New(context.Background(), redisstore.Options{URL: redisURL, Prefix: uniquePrefix(), AppendLinger: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(testCtx(t), store.AppendRequest{Channel: "linger", Name: "X", Data: json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	// After 32 appends pending at once, this one waits for company.
	redisstore.RememberCrowd(s, 32)
	appended := appendAsync(context.Background(), s, "linger", `2`)
	waitUntil(t, "the append does not linger", func() bool { return redisstore.Lingering(s) })
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waits for the linger")
	}
	if err := <-appended; !errors.Is(err, store.ErrClosed) {
		t.Fatalf("the lingering append: %v, want ErrClosed", err)
	}
}

// An append whose caller gives up while it waits in the queue is never sent: its caller was
// told it failed, so appending it later would add an event nobody acknowledged.
func TestAbandonedAppendIsNeverSent(t *testing.T) {
	t.Parallel()
	s := newStore(t, redisstore.Options{AppendLinger: time.Hour})
	redisstore.RememberCrowd(s, 32)
	first := appendAsync(context.Background(), s, "abandon", `"a"`)
	waitUntil(t, "the first append does not linger", func() bool { return redisstore.Lingering(s) })
	ctx, cancel := context.WithCancel(context.Background())
	second := appendAsync(ctx, s, "abandon", `"b"`)
	waitUntil(t, "the second append is not queued", func() bool { return redisstore.Queued(s) == 2 })
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("the abandoned append: %v, want context.Canceled", err)
	}
	// A crowd of two is now complete: the linger ends and the batch leaves.
	redisstore.RememberCrowd(s, 2)
	third := appendAsync(context.Background(), s, "abandon", `"c"`)
	for _, errc := range []<-chan error{first, third} {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	wantData(t, s, "abandon", `"a"`, `"c"`)
}
