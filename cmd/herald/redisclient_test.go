package main

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestParseSeeds(t *testing.T) {
	for _, c := range []struct {
		in, want, err string
		base          seedBase
		tls           bool
	}{
		{in: "127.0.0.1:7000,127.0.0.1:7001", want: "127.0.0.1:7000 127.0.0.1:7001"},
		{in: " a:1 , b:2 ,", want: "a:1 b:2"},
		{in: "rediss://herald:s3cret@a:1,b:2", want: "a:1 b:2", base: seedBase{user: "herald", password: "s3cret"}, tls: true},
		{in: "redis://:pw@a:1/3", want: "a:1", base: seedBase{password: "pw", db: 3}},
		{in: "[::1]:7000", want: "[::1]:7000"},
		{in: "", err: "no seed address"},
		{in: "a", err: `"a" is not host:port`},
		{in: "a:", err: `"a:" is not host:port`},
		{in: "a:1,redis://b:2", err: "only the first seed may be a URL"},
		{in: "http://a:1", err: "the scheme must be redis or rediss"},
		{in: "redis://a:1/zero", err: "the path must be a database number"},
		{in: "redis://a:1/-1", err: "the path must be a database number"},
	} {
		base, addrs, err := parseSeeds(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("parseSeeds(%q): error %v, want one saying %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || strings.Join(addrs, " ") != c.want || (base.tls != nil) != c.tls {
			t.Errorf("parseSeeds(%q) = %v, %v, %v; want %s (TLS %v)", c.in, base, addrs, err, c.want, c.tls)
			continue
		}
		base.tls = nil
		if base != c.base {
			t.Errorf("parseSeeds(%q): login %+v, want %+v", c.in, base, c.base)
		}
	}
}

func FuzzParseSeeds(f *testing.F) {
	for _, s := range []string{"a:1,b:2", "rediss://u:p@h:1/0,x:2", "redis://%zz@h:1", ":", ",,,", "redis://h:1/99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		_, addrs, err := parseSeeds(in)
		if err == nil && len(addrs) == 0 {
			t.Fatalf("parseSeeds(%q): no error and no address", in)
		}
		for _, a := range addrs {
			if strings.Contains(a, ",") || strings.Contains(a, "://") {
				t.Fatalf("parseSeeds(%q): address %q", in, a)
			}
		}
	})
}

// TestRedisTargetRefusals: settings that cannot work stop the node before it contacts Redis,
// with a message naming the flags.
func TestRedisTargetRefusals(t *testing.T) {
	for _, c := range []struct {
		target redisTarget
		want   string
	}{
		{redisTarget{url: "redis://a:1", cluster: "b:2"}, "alternatives: give one"},
		{redisTarget{cluster: "redis://a:1/2"}, "a Redis Cluster has only database 0"},
		{redisTarget{cluster: "nohost"}, "--redis-cluster"},
		{redisTarget{sentinels: "a:1"}, "needs --redis-master-name"},
		{redisTarget{url: "redis://a:1", masterName: "m"}, "go with --redis-sentinels"},
		{redisTarget{cluster: "a:1", tls: redisTLSFiles{ca: "ca.pem"}}, "need a rediss:// URL"},
		{redisTarget{url: "http://a:1"}, "--redis-url"},
	} {
		if _, err := c.target.newClient(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one saying %q", c.target, err, c.want)
		}
	}
	for _, c := range []struct {
		target redisTarget
		check  func(redis.UniversalClient) bool
	}{
		{redisTarget{cluster: "rediss://u:p@a:1,b:2"}, func(c redis.UniversalClient) bool {
			cc, ok := c.(*redis.ClusterClient)
			return ok && cc.Options().Username == "u" && cc.Options().TLSConfig != nil && len(cc.Options().Addrs) == 2
		}},
		{redisTarget{sentinels: "a:1,b:2", masterName: "m", sentinelPassword: "sp"}, func(c redis.UniversalClient) bool {
			_, ok := c.(*redis.Client)
			return ok
		}},
	} {
		c2, err := c.target.newClient()
		if err != nil || !c.check(c2) {
			t.Errorf("%+v: %T %v", c.target, c2, err)
		}
		if c2 != nil {
			c2.Close()
		}
	}
}

func TestReplicasFor(t *testing.T) {
	for _, c := range []struct {
		durability string
		onRedis    bool
		replicas   int
		err        string
	}{
		{"", false, 0, ""}, {"", true, 0, ""}, {"memory", false, 0, ""}, {"redis", true, 0, ""}, {"replicated", true, 1, ""},
		{"memory", true, 0, "does not go with a Redis option"},
		{"redis", false, 0, "needs Redis"}, {"replicated", false, 0, "needs Redis"},
		{"disk", true, 0, "want memory, redis or replicated"},
	} {
		n, err := replicasFor(c.durability, c.onRedis)
		if c.err == "" && (err != nil || n != c.replicas) || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("replicasFor(%q, %v) = %d, %v", c.durability, c.onRedis, n, err)
		}
	}
}
