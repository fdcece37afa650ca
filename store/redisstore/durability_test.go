package redisstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/test/testkit"
)

// startReplicated starts a master and one replica of it, in sync.
func startReplicated(t testing.TB) (master, replica *testkit.Redis) {
	t.Helper()
	needRedis(t)
	master, err := testkit.StartRedis("--repl-diskless-sync-delay", "0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(master.Close)
	replica, err = testkit.StartRedis("--replicaof", "127.0.0.1", strconv.Itoa(master.Port()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(replica.Close)
	// In sync once the master sees a write of its own confirmed.
	c := redis.NewClient(&redis.Options{Addr: master.Addr(), DisableIdentity: true})
	defer c.Close()
	if !testkit.WaitFor(10*time.Second, func() bool {
		pipe := c.Pipeline()
		pipe.Set(context.Background(), "sync-probe", "1", 0)
		n := pipe.Do(context.Background(), "wait", 1, 100)
		_, err := pipe.Exec(context.Background())
		return err == nil && n.Val() == int64(1)
	}) {
		t.Fatal("the replica did not sync")
	}
	return master, replica
}

// TestReplicatedDurability: with Replicas 1 an append is acknowledged only once the replica
// has it. A replica that cannot confirm (hung) turns the append into ErrNotReplicated — it is
// in the log all the same — and the retry with the same key, once the replica is back,
// appends nothing new and answers with the same event. Without any replica, nothing can be
// acknowledged as replicated.
func TestReplicatedDurability(t *testing.T) {
	t.Parallel()
	master, replica := startReplicated(t)
	s := newStore(t, redisstore.Options{URL: master.URL(), Replicas: 1, ReplicationTimeout: 300 * time.Millisecond})
	ch := "replicated"
	req := func(key string) store.AppendRequest {
		return store.AppendRequest{Channel: ch, Name: "E", Data: json.RawMessage(`{"k":"` + key + `"}`), IdempotencyKey: key}
	}
	// In sync, the replica confirms within the timeout — unless a loaded machine delays it
	// (1 CI run in many): then the retry with the same key is the contract's answer, and must
	// succeed without appending again.
	first, err := s.Append(testCtx(t), req("k1"))
	for i := 0; i < 5 && errors.Is(err, store.ErrNotReplicated); i++ {
		first, err = s.Append(testCtx(t), req("k1"))
	}
	if err != nil {
		t.Fatalf("append with the replica in sync: %v", err)
	}

	if err := replica.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Append(testCtx(t), req("k2"))
	took := time.Since(start)
	if !errors.Is(err, store.ErrNotReplicated) {
		replica.Signal(syscall.SIGCONT)
		t.Fatalf("append with the replica hung: %v, want ErrNotReplicated", err)
	}
	if took < 300*time.Millisecond {
		t.Errorf("ErrNotReplicated after %v, before the replication timeout", took)
	}
	page, err := s.Read(testCtx(t), ch, first.Event.Cursor(), 10)
	if err != nil || len(page.Events) != 1 {
		t.Fatalf("the unreplicated append is not in the log: %v %v", page.Events, err)
	}
	if err := replica.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	again, err := s.Append(testCtx(t), req("k2"))
	if err != nil || !again.Duplicate || again.Event.Cursor() != page.Events[0].Cursor() {
		t.Fatalf("the retry with the same key: %+v %v, want the logged event %s as a duplicate", again, err, page.Events[0].Cursor())
	}

	alone := newStore(t, redisstore.Options{URL: replica.URL(), Replicas: 1, ReplicationTimeout: 100 * time.Millisecond})
	if _, err := alone.Append(testCtx(t), req("k3")); err == nil {
		t.Fatal("a store whose server has no replica acknowledged a replicated append")
	}
}

// TestWritesRefused: a master that refuses writes (min-replicas-to-write with no replica, as
// a managed Redis may be set up) refuses the append script before running it. The append is
// store.ErrUnavailable — safe to retry, nothing appended — not an unknown outcome or an
// internal error, and the log is untouched.
func TestWritesRefused(t *testing.T) {
	t.Parallel()
	needRedis(t)
	rd, err := testkit.StartRedis("--min-replicas-to-write", "1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rd.Close)
	s := newStore(t, redisstore.Options{URL: rd.URL()})
	ch := "refused"
	_, err = s.Append(testCtx(t), store.AppendRequest{Channel: ch, Name: "E", Data: json.RawMessage(`1`), IdempotencyKey: "k1"})
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrUnconfirmed) {
		t.Fatalf("append refused with NOREPLICAS: %v, want ErrUnavailable only", err)
	}
	if _, err := testkit.RedisCommand(rd.Addr(), "CONFIG", "SET", "min-replicas-to-write", "0"); err != nil {
		t.Fatal(err)
	}
	res, err := s.Append(testCtx(t), store.AppendRequest{Channel: ch, Name: "E", Data: json.RawMessage(`1`), IdempotencyKey: "k1"})
	if err != nil || res.Duplicate || res.Event.Seq != 1 {
		t.Fatalf("the same append once writes are accepted: %+v, %v; want a new event, seq 1", res, err)
	}
}
