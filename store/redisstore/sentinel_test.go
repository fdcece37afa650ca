package redisstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/test/testkit"
)

// startSentinel starts a master, its replica and three sentinels for t.
func startSentinel(t *testing.T) *testkit.RedisSentinel {
	t.Helper()
	needRedis(t)
	s, err := testkit.StartRedisSentinel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// sentinelClient is a client of s's master, found through the sentinels, as a Herald node
// makes one from --redis-sentinels.
func sentinelClient(t testing.TB, s *testkit.RedisSentinel) *redis.Client {
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:      s.Name,
		SentinelAddrs:   s.SentinelAddrs(),
		DisableIdentity: true,
		DialTimeout:     time.Second,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestContractsOnSentinel: every store contract holds on a Redis found through Sentinel.
func TestContractsOnSentinel(t *testing.T) {
	t.Parallel()
	s := startSentinel(t)
	runContracts(t, func(t *testing.T) redis.UniversalClient { return sentinelClient(t, s) })
}

// TestSentinelFailover: when the master dies and Sentinel promotes its replica, a store on a
// failover client appends again once the new master is known, and its listener, subscribed
// again on the new master, receives what is appended from then on, in order.
//
// What was appended before the kill may not have reached the replica (replication is
// asynchronous), so the log starts a new epoch on the promoted replica, which the listener
// must hear as one gap (HandleGap). Events of the new epoch appended before the listener is
// subscribed again are covered by that gap (the tracker moves to the head), so the test first
// waits for the listener to be back (an event or a gap after the kill) and then checks the
// next appends.
//
// Measured (2-core container, -race, 8 runs): every sentinel reports the promoted replica, and
// it answers role:master, 2.2–2.4 s after the SIGKILL (down-after 1 s, then the sentinels'
// agreement, the election and the promotion); the first append after that succeeds at once.
// An append while there is no master fails as unavailable after about 0.8 s (go-redis's dial
// retries). The listener is back 0.4–0.9 s after the failover (2.6–3.2 s after the kill): its
// resubscription waits out the backoff that grew during the outage (nextBackoff's cap).
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	rs := startSentinel(t)
	s, err := redisstore.New(context.Background(), redisstore.Options{Client: sentinelClient(t, rs), Prefix: uniquePrefix()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ch := "failover"
	h := newRecorder()
	if _, err := s.Listen(testCtx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	before := appendN(t, s, ch, 5)
	checkSeqs(t, h.wait(t, ch, 5, 5*time.Second), before[0].Epoch, 1)

	old, err := rs.CurrentMaster()
	if err != nil {
		t.Fatal(err)
	}
	if old != rs.Master.Addr() {
		t.Fatalf("the sentinels report %s as master, want %s", old, rs.Master.Addr())
	}
	killed := time.Now()
	rs.Master.Stop()
	// With no master, an append fails, and says it may be retried.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err = s.Append(ctx, store.AppendRequest{Channel: ch, Name: "Tick", Data: json.RawMessage(`{"outage":1}`)})
	cancel()
	if !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, store.ErrUnconfirmed) {
		t.Fatalf("append with no master: %v, want ErrUnavailable or ErrUnconfirmed", err)
	}
	t.Logf("append with no master failed after %v: %v", time.Since(killed).Round(time.Millisecond), err)
	now, err := rs.WaitFailover(old, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failover from %s to %s took %v", old, now, time.Since(killed).Round(10*time.Millisecond))
	if now != rs.Replica.Addr() {
		t.Fatalf("the sentinels promoted %s, want the replica %s", now, rs.Replica.Addr())
	}

	// Appends may fail until the client has found the new master; each is retried, with an
	// idempotency key so that one whose answer was lost is not appended twice.
	deadline := time.Now().Add(20 * time.Second)
	failures := map[string]int{}
	appendAgain := func(i int) store.Event {
		t.Helper()
		req := store.AppendRequest{Channel: ch, Name: "Tick", Data: json.RawMessage(fmt.Sprintf(`{"after":%d}`, i)), IdempotencyKey: fmt.Sprintf("after-%d", i)}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			res, err := s.Append(ctx, req)
			cancel()
			if err == nil {
				return res.Event
			}
			failures[err.Error()]++
			if time.Now().After(deadline) {
				t.Fatalf("append %d after the failover still fails 20 s on: %v", i, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	first := appendAgain(0)
	t.Logf("appending again %v after the kill; failures meanwhile: %v", time.Since(killed).Round(10*time.Millisecond), failures)
	if first.Epoch == before[0].Epoch || first.Seq != 1 {
		t.Fatalf("the first append after the failover is %s, want seq 1 of a new epoch (was %s)", first.Cursor(), before[4].Cursor())
	}

	// The listener is back once it has this event, or a gap.
	if !testkit.WaitFor(10*time.Second, func() bool {
		live, gaps := h.snapshot(ch)
		return gaps > 0 || live[len(live)-1].Cursor() == first.Cursor()
	}) {
		live, _ := h.snapshot(ch)
		t.Fatalf("the listener heard nothing after the failover; it has %s", cursors(live))
	}
	t.Logf("listener back %v after the kill", time.Since(killed).Round(10*time.Millisecond))

	const after = 5
	appended := make([]store.Event, after)
	for i := range appended {
		appended[i] = appendAgain(i + 1)
		if want := (store.Cursor{Epoch: first.Epoch, Seq: first.Seq + uint64(i) + 1}); appended[i].Cursor() != want {
			t.Fatalf("append %d after the failover is %s, want %s", i+1, appended[i].Cursor(), want)
		}
	}
	if !testkit.WaitFor(10*time.Second, func() bool {
		live, _ := h.snapshot(ch)
		return live[len(live)-1].Cursor() == appended[after-1].Cursor()
	}) {
		live, _ := h.snapshot(ch)
		t.Fatalf("the listener did not get the appends made after the failover (%s); it has %s", cursors(appended), cursors(live))
	}
	time.Sleep(50 * time.Millisecond) // let a duplicate show itself
	live, gaps := h.snapshot(ch)
	if len(live) < 5+after {
		t.Fatalf("the listener has %s", cursors(live))
	}
	tail := live[len(live)-after:]
	for i, ev := range tail {
		if ev.Cursor() != appended[i].Cursor() || string(ev.Data) != string(appended[i].Data) {
			t.Fatalf("the listener's last %d events are %s, want %s", after, cursors(tail), cursors(appended))
		}
	}
	checkSeqs(t, live[:5], before[0].Epoch, 1)
	if gaps != 1 {
		t.Fatalf("the log started a new epoch (%s, was %s) and the listener was told of %d gaps, want 1", first.Cursor(), before[4].Cursor(), gaps)
	}
	// After the old epoch's events, the new epoch's, without a hole or a repeat.
	rest := live[5:]
	checkSeqs(t, rest, first.Epoch, rest[0].Seq)
	t.Logf("listener: %d events, %d gaps; the log went on at %s (was at %s)", len(live), gaps, first.Cursor(), before[4].Cursor())
	s.Unlisten(ch)
}

func cursors(evs []store.Event) string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Cursor().String()
	}
	return fmt.Sprint(out)
}
