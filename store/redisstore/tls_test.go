package redisstore_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
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
	runContracts(t, func(t *testing.T) redis.UniversalClient { return client(t, rd.URL()) })
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
