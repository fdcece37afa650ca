package redisstore_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/store/storetest"
)

// registryPair returns two nodes' registries sharing one fresh prefix, whose keys go at
// cleanup.
func registryPair(t *testing.T) (string, *redisstore.Registry, *redisstore.Registry) {
	t.Helper()
	needRedis(t)
	prefix := uniquePrefix()
	t.Cleanup(func() { deleteKeys(t, prefix) })
	var rs [2]*redisstore.Registry
	for i := range rs {
		r, err := redisstore.NewRegistry(redisstore.RegistryOptions{Client: rawClient(t, ""), Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		rs[i] = r
	}
	return prefix, rs[0], rs[1]
}

func TestRegistryContract(t *testing.T) {
	needRedis(t)
	storetest.RunRegistry(t, func(t *testing.T) (store.Registry, store.Registry) {
		_, a, b := registryPair(t)
		return a, b
	})
}

// TestRegistryKeys checks the key layout: every key shares one hash tag that no channel's can
// equal (one cluster slot per script), and a deregistered node leaves nothing behind.
func TestRegistryKeys(t *testing.T) {
	t.Parallel()
	prefix, a, _ := registryPair(t)
	ctx := testCtx(t)
	raw := rawClient(t, "")
	if _, _, err := a.Register(ctx, "n1", json.RawMessage(`{}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetSubscriptions(ctx, "n1", map[string]int{"ch": 1}); err != nil {
		t.Fatal(err)
	}
	keys, err := raw.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("keys %v, want the lease zset, the info hash and one count hash", keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix+"{#nodes}:") {
			t.Fatalf("key %q is not under the registry's hash tag", k)
		}
	}
	if _, err := a.Deregister(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	keys, err = raw.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Fatalf("keys left after the only node deregistered: %v", keys)
	}
}
