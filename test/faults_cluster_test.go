package test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/test/testkit"
)

// The fault harness on Redis Cluster and Sentinel: the same publishers, followers and counts
// as on one Redis (faults_test.go), with a master killed or a slot moved under load.

// onCluster is a Redis Cluster of the test's own, which it may break.
func onCluster(c *testkit.RedisCluster) backend {
	return func(testing.TB) []string { return []string{"--redis-cluster", c.Seeds(), "--log-level", "warn"} }
}

func startPrivateCluster(t *testing.T) *testkit.RedisCluster {
	t.Helper()
	c, err := testkit.StartRedisCluster(3, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// onSentinel is a Sentinel set of the test's own, which it may break.
func onSentinel(rs *testkit.RedisSentinel) backend {
	return func(testing.TB) []string {
		return []string{"--redis-sentinels", strings.Join(rs.SentinelAddrs(), ","), "--redis-master-name", rs.Name,
			"--log-level", "warn"}
	}
}

func startPrivateSentinel(t *testing.T) *testkit.RedisSentinel {
	t.Helper()
	rs, err := testkit.StartRedisSentinel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Close)
	return rs
}

// clusterLoad is the load every cluster and Sentinel case runs: channels a and b published
// through node A (then B when A fails) and followed on both nodes (clusterFollowers).
type clusterLoad struct {
	pub  *faultPublisher
	stop func() error
	wait func() []*subRecord
}

// startClusterLoad starts it for at most d, and returns once 100 events of each channel are
// acknowledged.
func startClusterLoad(t *testing.T, nodes []*herald, a, b string, d time.Duration) *clusterLoad {
	t.Helper()
	l := &clusterLoad{wait: startFollowers(t, d, clusterFollowers(t, nodes, a, b)...)}
	l.pub = newFaultPublisher(nodes[0].Publisher(t), nodes[0], nodes[1])
	l.pub.pause = 2 * time.Millisecond
	l.stop = l.pub.runAll([]string{a, b}, d)
	waitAcked(t, l.pub, 2*100)
	return l
}

// end stops publishing, waits for every follower to reach the end, and counts (logging the
// counts under name, with note and the publish answers).
func (l *clusterLoad) end(t *testing.T, name, note string) (faultCounts, []*subRecord, map[string][]ackedEvent) {
	t.Helper()
	if err := l.stop(); err != nil {
		t.Fatal(err)
	}
	recs := l.wait()
	acked := l.pub.ackedCopy()
	return countAll(t, name, recs, acked, note+"answers: "+l.pub.answerSummary()), recs, acked
}

// clusterFollowers follows channels a and b on both nodes, by SSE and long-poll.
func clusterFollowers(t *testing.T, nodes []*herald, a, b string) []follower {
	multi := "/v1/stream?" + url.Values{"channel": {a, b}}.Encode()
	return []follower{
		followSSE(t, "A-sse-a", nodes, 0, eventsPath(a), a),
		followSSE(t, "B-sse-a", nodes, 1, eventsPath(a), a),
		followSSE(t, "A-sse-multi", nodes, 0, multi, a, b),
		followSSE(t, "B-sse-multi", nodes, 1, multi, a, b),
		followPoll(t, "A-poll-a", nodes, 0, pollPath(a), a),
		followPoll(t, "B-poll-multi", nodes, 1, "/v1/poll", a, b),
	}
}

// TestFaultClusterMasterKilled: the master serving a published, followed channel is SIGKILLed
// and its replica promoted. With --durability redis the failed master may have acknowledged
// events its replica never got: subscribers may be resynced, but nothing is lost silently,
// repeated or reordered. With replicated, every acknowledged event was on the replica: none
// is lost either, once the old master is back as the new one's replica (until then publishes
// are answered replication_timeout and retried with their keys).
func TestFaultClusterMasterKilled(t *testing.T) {
	t.Parallel()
	for _, durability := range []string{"redis", "replicated"} {
		t.Run(durability, func(t *testing.T) {
			t.Parallel()
			cl := startPrivateCluster(t)
			nodes := startNodes(t, onCluster(cl), 2, "--retry", "200ms", "--durability", durability)
			a, b := uniqueChannel("master-a"), uniqueChannel("master-b")
			load := startClusterLoad(t, nodes, a, b, 45*time.Second)
			pub := load.pub
			master, err := cl.MasterOf("{" + a + "}")
			if err != nil {
				t.Fatal(err)
			}
			failed := pub.failures()
			killed := time.Now()
			master.Stop()
			waitOutage(t, pub, failed)
			if durability == "replicated" {
				// The promoted replica has no replica of its own until the old master comes back
				// as one: until then every publish is answered replication_timeout, and retried.
				if err := cl.WaitHealthy(30 * time.Second); err != nil {
					t.Fatal(err)
				}
				if err := master.Start(); err != nil {
					t.Fatal(err)
				}
			}
			before := countAcked(pub.ackedCopy())
			waitAcked(t, pub, before+2*100)
			c, _, _ := load.end(t, "cluster-master-killed-"+durability,
				"serving again within "+time.Since(killed).Round(100*time.Millisecond).String()+"; ")
			if c.Lost != 0 || c.Duplicated != 0 || c.Reordered != 0 {
				t.Errorf("want nothing lost silently, duplicated or reordered: %s", c)
			}
			if durability == "replicated" && c.Announced != 0 {
				t.Errorf("replicated: %d acknowledged events announced lost by a resync, want none: %s", c.Announced, c)
			}
		})
	}
}

// TestFaultClusterReshard: the slots of both published channels move to other masters (keys
// migrated as redis-cli --cluster reshard does) while they are published and followed on two
// nodes: every subscriber gets every acknowledged event once, in order, with no resync.
func TestFaultClusterReshard(t *testing.T) {
	t.Parallel()
	cl := startPrivateCluster(t)
	nodes := startNodes(t, onCluster(cl), 2, "--retry", "200ms")
	a, b := uniqueChannel("reshard-a"), uniqueChannel("reshard-b")
	load := startClusterLoad(t, nodes, a, b, 30*time.Second)
	for _, ch := range []string{a, b} {
		moveToAnotherMaster(t, cl, ch)
		waitAcked(t, load.pub, countAcked(load.pub.ackedCopy())+2*50)
	}
	c, recs, acked := load.end(t, "cluster-reshard", "")
	expectExact(t, c, recs, acked)
}

// moveToAnotherMaster moves the slot of channel ch to a master other than its own.
func moveToAnotherMaster(t *testing.T, cl *testkit.RedisCluster, ch string) {
	t.Helper()
	from, err := cl.MasterOf("{" + ch + "}")
	if err != nil {
		t.Fatal(err)
	}
	masters, err := cl.Masters()
	if err != nil {
		t.Fatal(err)
	}
	for _, to := range masters {
		if to != from {
			if err := cl.MoveSlot("{"+ch+"}", to); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatal("no other master to move to")
}

// TestFaultSentinelFailover: the master under Sentinel is SIGKILLed and its replica promoted,
// with --durability replicated, and comes back as the new master's replica: nothing
// acknowledged is lost, repeated or reordered.
func TestFaultSentinelFailover(t *testing.T) {
	t.Parallel()
	rs := startPrivateSentinel(t)
	nodes := startNodes(t, onSentinel(rs), 2, "--retry", "200ms", "--durability", "replicated")
	a, b := uniqueChannel("sentinel-a"), uniqueChannel("sentinel-b")
	load := startClusterLoad(t, nodes, a, b, 45*time.Second)
	pub := load.pub
	failed := pub.failures()
	killed := time.Now()
	rs.Master.Stop()
	waitOutage(t, pub, failed)
	if _, err := rs.WaitFailover(rs.Master.Addr(), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	// The sentinels make the old master a replica of the new one once it is back; until then
	// no replica confirms anything.
	if err := rs.Master.Start(); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, pub, countAcked(pub.ackedCopy())+2*100)
	c, _, _ := load.end(t, "sentinel-failover-replicated",
		"serving again within "+time.Since(killed).Round(100*time.Millisecond).String()+"; ")
	if c.Lost != 0 || c.Duplicated != 0 || c.Reordered != 0 || c.Announced != 0 {
		t.Errorf("want nothing lost, duplicated or reordered: %s", c)
	}
}
