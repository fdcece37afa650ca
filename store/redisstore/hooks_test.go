package redisstore_test

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/store/storetest"
)

// hookPair returns two nodes' views of one endpoint's queue under prefix.
func hookPair(t *testing.T, prefix string, cfg storetest.HookConfig, newClient func(t *testing.T) redis.UniversalClient) (store.HookQueue, store.HookQueue) {
	t.Helper()
	var qs [2]store.HookQueue
	for i := range qs {
		q, err := redisstore.NewHookQueue(redisstore.HookQueueOptions{Client: newClient(t), Prefix: prefix, Name: "ep1", Stale: cfg.Stale, MaxLen: cfg.MaxLen})
		if err != nil {
			t.Fatal(err)
		}
		qs[i] = q
	}
	return qs[0], qs[1]
}

func TestHookQueueContract(t *testing.T) {
	needRedis(t)
	storetest.RunHookQueue(t, func(t *testing.T, cfg storetest.HookConfig) (store.HookQueue, store.HookQueue) {
		prefix := uniquePrefix()
		t.Cleanup(func() { deleteKeys(t, prefix) })
		return hookPair(t, prefix, cfg, func(t *testing.T) redis.UniversalClient { return rawClient(t, "") })
	})
}

// TestHookQueueKeys: every key of a queue shares one hash tag of its own (one cluster slot
// per script), and an acknowledged event leaves nothing in the stream.
func TestHookQueueKeys(t *testing.T) {
	needRedis(t)
	prefix := uniquePrefix()
	t.Cleanup(func() { deleteKeys(t, prefix) })
	a, _ := hookPair(t, prefix, storetest.HookConfig{}, func(t *testing.T) redis.UniversalClient { return rawClient(t, "") })
	ctx := testCtx(t)
	if err := a.Add(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := a.AddAfter(ctx, "k", []byte("later"), time.Hour); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, "")
	keys, err := raw.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("keys %v, want the stream, the due zset and the payload hash", keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix+"{#hooks:ep1}:") {
			t.Fatalf("key %q outside the queue's hash tag", k)
		}
	}
	hs, err := a.Claim(ctx, "n", 10, 0)
	if err != nil || len(hs) != 1 {
		t.Fatalf("claim: %v %v", hs, err)
	}
	if err := a.Ack(ctx, hs[0].ID); err != nil {
		t.Fatal(err)
	}
	if n := raw.XLen(ctx, prefix+"{#hooks:ep1}:q").Val(); n != 0 {
		t.Fatalf("%d entries left in the stream after the ack", n)
	}
}
