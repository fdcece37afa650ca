package redisstore_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/store/storetest"
	"github.com/herald-rt/herald/test/testkit"
)

// TestContractsOverTLSWithACL: every store contract holds on a Redis reached over TLS (with a
// client certificate) as an ACL user, as managed Redis offerings are set up; and without the
// user's login, the same server refuses the store.
func TestContractsOverTLSWithACL(t *testing.T) {
	t.Parallel()
	rd, err := testkit.StartTLSRedis()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rd.Close)
	client := func(t *testing.T, rawURL string) *redis.Client {
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := rd.Certs.ClientTLS()
		if err != nil {
			t.Fatal(err)
		}
		cfg.ServerName = o.TLSConfig.ServerName
		o.TLSConfig = cfg
		o.DisableIdentity = true
		c := redis.NewClient(o)
		t.Cleanup(func() { c.Close() })
		return c
	}
	open := func(t *testing.T, prefix string, ret store.Retention) *redisstore.Store {
		s, err := redisstore.New(context.Background(), redisstore.Options{Client: client(t, rd.URL()), Prefix: prefix, Retention: ret})
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
				opts.Client = client(t, rd.URL())
				p, err := redisstore.NewPresence(opts)
				if err != nil {
					t.Fatal(err)
				}
				ps[i] = p
			}
			return ps[0], ps[1]
		})
	})
	t.Run("registry", func(t *testing.T) {
		storetest.RunRegistry(t, func(t *testing.T) (store.Registry, store.Registry) {
			prefix := uniquePrefix()
			var rs [2]store.Registry
			for i := range rs {
				r, err := redisstore.NewRegistry(redisstore.RegistryOptions{Client: client(t, rd.URL()), Prefix: prefix})
				if err != nil {
					t.Fatal(err)
				}
				rs[i] = r
			}
			return rs[0], rs[1]
		})
	})
	t.Run("without the user's login", func(t *testing.T) {
		anonymous := "rediss://127.0.0.1:" + strconv.Itoa(rd.TLSPort) + "/0"
		s, err := redisstore.New(context.Background(), redisstore.Options{Client: client(t, anonymous), Prefix: uniquePrefix()})
		if err == nil {
			defer s.Close()
			_, err = s.Append(context.Background(), store.AppendRequest{Channel: "c", Name: "E", Data: json.RawMessage(`1`)})
		}
		if err == nil {
			t.Fatal("the default user, which may only PING, appended an event")
		}
	})
}
