package redisstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/store/storetest"
	"github.com/herald-rt/herald/test/testkit"
)

// startCluster starts a Redis Cluster of 3 masters with a replica each for t.
func startCluster(t *testing.T) *testkit.RedisCluster {
	t.Helper()
	needRedis(t)
	c, err := testkit.StartRedisCluster(3, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// clusterClient is a client of c, as a Herald node makes one from --redis-cluster.
func clusterClient(t testing.TB, c *testkit.RedisCluster) *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), DisableIdentity: true, DialTimeout: time.Second})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestContractsOnCluster: every store contract holds on a Redis Cluster of three masters,
// where a deployment's channels, nodes and reply channels spread over every shard.
func TestContractsOnCluster(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	runContracts(t, func(t *testing.T) redis.UniversalClient { return clusterClient(t, c) })
	// With each append confirmed by its master's replica: the WAIT goes on the master's own
	// connection, right after the appends it covers.
	t.Run("store, replicated", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T, ret store.Retention) store.Store {
			s, err := redisstore.New(context.Background(), redisstore.Options{Client: clusterClient(t, c), Prefix: uniquePrefix(),
				Retention: ret, Replicas: 1, ReplicationTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		})
	})
}

// clusterStore is a store on its own client of c, with its log in logs.
func clusterStore(t *testing.T, c *testkit.RedisCluster, prefix string, logs *testkit.LogBuffer) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(context.Background(), redisstore.Options{Client: clusterClient(t, c), Prefix: prefix,
		Logger: zerolog.New(logs).With().Timestamp().Logger(), PingInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// appendRetrying appends with an idempotency key, retrying what the store reports as
// unavailable or unconfirmed until deadline, as a careful publisher does through a fault.
func appendRetrying(t *testing.T, s store.Store, req store.AppendRequest, deadline time.Time) store.Event {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := s.Append(ctx, req)
		cancel()
		if err == nil {
			return res.Event
		}
		if !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, store.ErrUnconfirmed) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("append %s: %v", req.IdempotencyKey, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("append %s: still failing at the deadline: %v", req.IdempotencyKey, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterSlotMove: a channel's slot moves to another master (its keys migrated, as
// redis-cli --cluster reshard does) while it is appended to and listened to. Appends go on
// (retried with their keys through TRYAGAIN), the listener follows the shard channel to the
// new master, and every event arrives once, in order, in one epoch, with no gap reported.
func TestClusterSlotMove(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	prefix := uniquePrefix()
	var listenLogs, appendLogs testkit.LogBuffer
	listener := clusterStore(t, c, prefix, &listenLogs)
	appender := clusterStore(t, c, prefix, &appendLogs)
	ch := "moving.channel"
	h := newRecorder()
	if _, err := listener.Listen(testCtx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	from, err := c.MasterOf("{" + ch + "}")
	if err != nil {
		t.Fatal(err)
	}
	masters, err := c.Masters()
	if err != nil {
		t.Fatal(err)
	}
	to := masters[0]
	if to == from {
		to = masters[1]
	}

	const total = 300
	deadline := time.Now().Add(30 * time.Second)
	done := make(chan []store.Event)
	go func() {
		evs := make([]store.Event, 0, total)
		for i := range total {
			evs = append(evs, appendRetrying(t, appender, store.AppendRequest{Channel: ch, Name: "Tick",
				Data: json.RawMessage(strconv.Itoa(i + 1)), IdempotencyKey: "k" + strconv.Itoa(i)}, deadline))
			time.Sleep(time.Millisecond)
		}
		done <- evs
	}()
	time.Sleep(100 * time.Millisecond)
	if err := c.MoveSlot("{"+ch+"}", to); err != nil {
		t.Fatal(err)
	}
	appended := <-done
	if now, err := c.MasterOf("{" + ch + "}"); err != nil || now != to {
		t.Fatalf("the slot is on %v (%v), want %v", now, err, to)
	}
	checkSeqs(t, appended, appended[0].Epoch, 1)
	evs := h.wait(t, ch, total, 15*time.Second)
	checkSeqs(t, evs, appended[0].Epoch, 1)
	if _, gaps := h.snapshot(ch); gaps != 0 {
		t.Fatalf("%d gaps reported for a slot that moved with all its keys", gaps)
	}
	if !strings.Contains(listenLogs.String(), "slot moved") {
		t.Fatalf("the listener never followed the moved slot; log:\n%s", listenLogs.String())
	}
}

// TestClusterFailoverStartsNewEpoch: the master serving a channel is killed and its replica
// takes over. Appends resume once the replica is promoted, in a new epoch — the old master may
// have acknowledged appends the replica never got, whose ids must not be handed out again —
// the listener is told of the gap once, and then gets the new epoch's events live, in order.
func TestClusterFailoverStartsNewEpoch(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	prefix := uniquePrefix()
	var logs testkit.LogBuffer
	s := clusterStore(t, c, prefix, &logs)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("store log:\n%s", logs.String())
		}
	})
	ch := "failing.over"
	h := newRecorder()
	if _, err := s.Listen(testCtx(t), h, ch); err != nil {
		t.Fatal(err)
	}
	before := appendN(t, s, ch, 20)
	h.wait(t, ch, 20, 5*time.Second)
	master, err := c.MasterOf("{" + ch + "}")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cli(master.Addr(), "wait", "1", "2000"); err != nil { // the replica has it all
		t.Fatal(err)
	}
	killed := time.Now()
	master.Stop()
	deadline := killed.Add(30 * time.Second)
	first := appendRetrying(t, s, store.AppendRequest{Channel: ch, Name: "Tick", Data: json.RawMessage(`0`), IdempotencyKey: "after-0"}, deadline)
	t.Logf("appends resumed %v after the master was killed", time.Since(killed).Round(10*time.Millisecond))
	if first.Epoch == before[0].Epoch || first.Seq != 1 {
		t.Fatalf("first append after the failover is %s, want seq 1 of a new epoch (the old one was %s)", first.Cursor(), before[0].Epoch)
	}
	if !testkit.WaitFor(15*time.Second, func() bool { _, gaps := h.snapshot(ch); return gaps > 0 }) {
		t.Fatal("the listener was not told that the log started over")
	}
	t.Logf("the listener was told %v after the master was killed", time.Since(killed).Round(10*time.Millisecond))
	after := []store.Event{first}
	for i := 1; i <= 10; i++ {
		after = append(after, appendRetrying(t, s, store.AppendRequest{Channel: ch, Name: "Tick",
			Data: json.RawMessage(strconv.Itoa(i)), IdempotencyKey: "after-" + strconv.Itoa(i)}, deadline))
	}
	checkSeqs(t, after, first.Epoch, 1)
	// The first event of the new epoch is delivered live or is behind the gap, depending on
	// whether the subscription was back before it was appended; the ten after it are live.
	if !testkit.WaitFor(15*time.Second, func() bool {
		evs, _ := h.snapshot(ch)
		return len(evs) > 0 && evs[len(evs)-1].Seq == 11 && evs[len(evs)-1].Epoch == first.Epoch
	}) {
		evs, _ := h.snapshot(ch)
		t.Fatalf("the new epoch's events did not arrive; %d events, the last %s", len(evs), evs[len(evs)-1].Cursor())
	}
	evs, gaps := h.snapshot(ch)
	checkSeqs(t, evs[:20], before[0].Epoch, 1)
	fresh := evs[20:]
	checkSeqs(t, fresh, first.Epoch, 12-uint64(len(fresh)))
	if len(fresh) < 10 || gaps != 1 {
		t.Fatalf("after the failover: %d events and %d gaps, want at least 10 events and exactly 1 gap", len(fresh), gaps)
	}
}

// TestClusterReadsWithoutScripts: a master whose script cache is empty (restarted, or a
// replica just promoted) serves reads while another master is down and not yet replaced. The
// read is sent again with the script's source; a SCRIPT LOAD first would go to every node the
// client knows, and fail on the one that is down, so reads of healthy shards would fail for
// as long as the failover takes.
func TestClusterReadsWithoutScripts(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	s := clusterStore(t, c, uniquePrefix(), &testkit.LogBuffer{})
	ch := "no.scripts"
	want := appendN(t, s, ch, 3)
	master, err := c.MasterOf("{" + ch + "}")
	if err != nil {
		t.Fatal(err)
	}
	masters, err := c.Masters()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range masters {
		if m != master {
			m.Stop()
			break
		}
	}
	for _, n := range c.Nodes {
		if n.Running() {
			if _, err := c.Cli(n.Addr(), "script", "flush"); err != nil {
				t.Fatal(err)
			}
		}
	}
	page, err := s.Read(testCtx(t), ch, store.Beginning, 10)
	if err != nil {
		t.Fatalf("read with the scripts flushed and another master down: %v", err)
	}
	checkSeqs(t, page.Events, want[0].Epoch, 1)
	if len(page.Events) != 3 {
		t.Fatalf("read %d events, want 3", len(page.Events))
	}
}
