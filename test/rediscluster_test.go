package test

import (
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/test/testkit"
)

// The multi-node tests again, with the nodes on a Redis Cluster of three masters (each with a
// replica) instead of one Redis: channels, node bus channels and presence then live on
// different shards, and every cross-node path goes through sharded pub/sub.

var sharedCluster struct {
	once sync.Once
	c    *testkit.RedisCluster
	err  error
}

// onRedisCluster is the test binary's shared Redis Cluster, started on first use; tests keep
// apart by key prefix. stopSharedCluster ends it.
func onRedisCluster(t testing.TB) []string {
	t.Helper()
	sharedCluster.once.Do(func() { sharedCluster.c, sharedCluster.err = testkit.StartRedisCluster(3, 1) })
	if sharedCluster.err != nil {
		t.Fatal(sharedCluster.err)
	}
	return []string{"--redis-cluster", sharedCluster.c.Seeds()}
}

func stopSharedCluster() {
	if sharedCluster.c != nil {
		sharedCluster.c.Close()
	}
}

// TestOnRedisCluster: publishing, streaming, resuming, long-polling, socket calls, whispers
// and presence across two nodes, as on one Redis.
func TestOnRedisCluster(t *testing.T) {
	t.Parallel()
	for name, run := range map[string]func(*testing.T, backend){
		"PublishOtherNode":         clusterPublishOtherNode,
		"PollContinuesOnOtherNode": clusterPollContinuesOnOtherNode,
		"StreamResumeOnOtherNode":  clusterStreamResumeOnOtherNode,
		"SocketCallsReachTheOwner": clusterSocketCallsReachTheOwner,
		"PollSocketOnEitherNode":   clusterPollSocketOnEitherNode,
		"Presence":                 clusterPresence,
		"Whispers":                 clusterWhispers,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			run(t, onRedisCluster)
		})
	}
}

// TestThreeNodesOnRedisCluster: three nodes, each publishing to channels that land on
// different shards, each streaming all of them: every subscriber gets every channel's events
// once, in the order they were acknowledged.
func TestThreeNodesOnRedisCluster(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, onRedisCluster, 3)
	tok := nodes[0].Publisher(t)
	channels := []string{uniqueChannel("three-a"), uniqueChannel("three-b"), uniqueChannel("three-c"), uniqueChannel("three-d")}
	var subs []*sseStream
	for _, n := range nodes {
		s := mustSSE(t, n.Base+"/v1/stream?"+url.Values{"channel": channels}.Encode(), nil)
		s.expectPreamble(t)
		subs = append(subs, s)
	}
	const each = 40
	want := make(map[string][]string)
	for i := range each * len(channels) {
		ch := channels[i%len(channels)]
		id := nodes[i%len(nodes)].mustPublish(t, tok, ch, "Tick", map[string]int{"n": i / len(channels)})
		want[ch] = append(want[ch], id)
	}
	for k, s := range subs {
		got := make(map[string][]string)
		for _, ev := range s.mustEvents(t, each*len(channels), 30*time.Second) {
			got[ev.Env.Channel] = append(got[ev.Env.Channel], ev.Env.ID)
		}
		for _, ch := range channels {
			if len(got[ch]) != each {
				t.Fatalf("subscriber on %s: %d events of %s, want %d", nodes[k].name, len(got[ch]), ch, each)
			}
			for j := range got[ch] {
				if got[ch][j] != want[ch][j] {
					t.Fatalf("subscriber on %s: event %d of %s is %s, want %s", nodes[k].name, j, ch, got[ch][j], want[ch][j])
				}
			}
		}
		s.expectQuiet(t, 100*time.Millisecond)
	}
}
