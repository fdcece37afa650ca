package redisstore_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/store/storetest"
)

// runContracts runs every store contract — the log, live delivery, broadcast, the bus,
// presence and the registry — on stores whose clients newClient makes, one per store, as
// separate nodes of one deployment would have.
func runContracts(t *testing.T, newClient func(t *testing.T) redis.UniversalClient) {
	open := func(t *testing.T, prefix string, ret store.Retention) *redisstore.Store {
		s, err := redisstore.New(context.Background(), redisstore.Options{Client: newClient(t), Prefix: prefix, Retention: ret})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	t.Run("store", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T, ret store.Retention) store.Store { return open(t, uniquePrefix(), ret) })
	})
	t.Run("live", func(t *testing.T) {
		two := func(t *testing.T) (a, b *redisstore.Store) {
			p := uniquePrefix()
			return open(t, p, store.Retention{}), open(t, p, store.Retention{})
		}
		storetest.RunBroadcast(t, func(t *testing.T) (a, b storetest.BroadcastStore) { return two(t) })
		storetest.RunBus(t, func(t *testing.T) (a, b storetest.BusStore) { return two(t) })
	})
	t.Run("presence", func(t *testing.T) {
		storetest.RunPresence(t, func(t *testing.T, cfg storetest.PresenceConfig) (store.Presence, store.Presence) {
			opts := redisstore.PresenceOptions{Prefix: uniquePrefix(), TTL: cfg.TTL, MaxMembers: cfg.MaxMembers}
			var ps [2]store.Presence
			for i := range ps {
				opts.Client = newClient(t)
				p, err := redisstore.NewPresence(opts)
				if err != nil {
					t.Fatal(err)
				}
				ps[i] = p
			}
			return ps[0], ps[1]
		})
	})
	t.Run("hooks", func(t *testing.T) {
		storetest.RunHookQueue(t, func(t *testing.T, cfg storetest.HookConfig) (store.HookQueue, store.HookQueue) {
			return hookPair(t, uniquePrefix(), cfg, newClient)
		})
	})
	t.Run("registry", func(t *testing.T) {
		storetest.RunRegistry(t, func(t *testing.T) (store.Registry, store.Registry) {
			prefix := uniquePrefix()
			var rs [2]store.Registry
			for i := range rs {
				r, err := redisstore.NewRegistry(redisstore.RegistryOptions{Client: newClient(t), Prefix: prefix})
				if err != nil {
					t.Fatal(err)
				}
				rs[i] = r
			}
			return rs[0], rs[1]
		})
	})
}
