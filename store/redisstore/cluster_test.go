package redisstore_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
}
