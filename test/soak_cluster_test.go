//go:build soak

package test

import (
	"testing"
	"time"

	"github.com/herald-rt/herald/test/testkit"
)

// The Redis Cluster and Sentinel faults of faults_cluster_test.go, again and again for minutes
// (HERALD_SOAK_CLUSTER, 2 minutes a case by default) under one publishing and following run:
// a fault every few seconds, each one waited out before the next.
//
//   - TestSoakClusterFaults: on a 3-master cluster with one replica each, rounds alternate
//     between moving both channels' slots to other masters and SIGKILLing the master of one of
//     them (restarted as its successor's replica), with --durability replicated (nothing
//     acknowledged lost, not even announced) and redis (resyncs allowed, silent loss not).
//   - TestSoakSentinelFailovers: the Sentinel set's master SIGKILLed round after round, with
//     replicated; the old master comes back as the replica each time.

// soakClusterRounds bounds every case: at most this many faults, whatever the duration.
const soakClusterRounds = 40

func TestSoakClusterFaults(t *testing.T) {
	d := soakDuration(t, "HERALD_SOAK_CLUSTER", 2*time.Minute)
	for _, durability := range []string{"replicated", "redis"} {
		t.Run(durability, func(t *testing.T) {
			cl := startPrivateCluster(t)
			nodes := startNodes(t, onCluster(cl), 2, "--retry", "200ms", "--durability", durability)
			a, b := uniqueChannel("soak-cl-a"), uniqueChannel("soak-cl-b")
			// Generous bounds: the loop below stops at d (or its round limit), and the last
			// fault may take up to a minute to wait out.
			load := startClusterLoad(t, nodes, a, b, d+2*time.Minute)
			pub := load.pub
			start := time.Now()
			kills, moves := 0, 0
			var slowest time.Duration
			for round := 0; round < soakClusterRounds && time.Since(start) < d; round++ {
				if round%2 == 0 {
					for _, ch := range []string{a, b} {
						moveToAnotherMaster(t, cl, ch)
						moves++
					}
				} else {
					took := killClusterMaster(t, cl, pub, a)
					slowest = max(slowest, took)
					kills++
				}
				waitAcked(t, pub, countAcked(pub.ackedCopy())+2*50)
			}
			c, _, _ := load.end(t, "soak-cluster-"+durability, "")
			soakReport(t, "cluster-faults-"+durability, map[string]any{
				"seconds": time.Since(start).Round(time.Second).Seconds(), "master_kills": kills, "slot_moves": moves,
				"slowest_recovery_s": slowest.Round(100 * time.Millisecond).Seconds(),
				"acknowledged":       c.Acknowledged, "delivered": c.Delivered, "lost": c.Lost, "duplicated": c.Duplicated,
				"reordered": c.Reordered, "resynced": c.Resynced, "announced": c.Announced,
			})
			if c.Lost != 0 || c.Duplicated != 0 || c.Reordered != 0 {
				t.Errorf("want nothing lost silently, duplicated or reordered: %s", c)
			}
			if durability == "replicated" && c.Announced != 0 {
				t.Errorf("replicated: %d acknowledged events announced lost by a resync, want none: %s", c.Announced, c)
			}
		})
	}
}

// killClusterMaster SIGKILLs the master of channel ch, waits until publishing works again
// on its promoted replica, restarts it (it rejoins as that replica's replica) and waits until
// the cluster is healthy with it in sync. It returns the time from the kill to the first
// acknowledged publish after it.
func killClusterMaster(t *testing.T, cl *testkit.RedisCluster, pub *faultPublisher, ch string) time.Duration {
	t.Helper()
	master, err := cl.MasterOf("{" + ch + "}")
	if err != nil {
		t.Fatal(err)
	}
	failed := pub.failures()
	killed := time.Now()
	master.Stop()
	waitOutage(t, pub, failed)
	if err := cl.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	// With replicated nothing is acknowledged until the old master is back as a replica, so
	// "serving again" is measured after the restart for both levels alike.
	if err := master.Start(); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, pub, countAcked(pub.ackedCopy())+1)
	took := time.Since(killed)
	if err := cl.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	return took
}

func TestSoakSentinelFailovers(t *testing.T) {
	d := soakDuration(t, "HERALD_SOAK_CLUSTER", 2*time.Minute)
	rs := startPrivateSentinel(t)
	nodes := startNodes(t, onSentinel(rs), 2, "--retry", "200ms", "--durability", "replicated")
	a, b := uniqueChannel("soak-sn-a"), uniqueChannel("soak-sn-b")
	load := startClusterLoad(t, nodes, a, b, d+2*time.Minute)
	pub := load.pub
	start := time.Now()
	kills := 0
	var slowest time.Duration
	for round := 0; round < soakClusterRounds && time.Since(start) < d; round++ {
		addr, err := rs.CurrentMaster()
		if err != nil {
			t.Fatal(err)
		}
		master := rs.Master
		if rs.Replica.Addr() == addr {
			master = rs.Replica
		} else if master.Addr() != addr {
			t.Fatalf("the sentinels report master %s, neither %s nor %s", addr, rs.Master.Addr(), rs.Replica.Addr())
		}
		failed := pub.failures()
		killed := time.Now()
		master.Stop()
		waitOutage(t, pub, failed)
		if _, err := rs.WaitFailover(addr, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := master.Start(); err != nil {
			t.Fatal(err)
		}
		waitAcked(t, pub, countAcked(pub.ackedCopy())+1)
		slowest = max(slowest, time.Since(killed))
		kills++
		// The next kill waits until the old master is back as a replica in sync, or the
		// sentinels would have nothing to promote.
		if !testkit.WaitFor(30*time.Second, func() bool { return replicaInSync(master.Addr()) }) {
			for _, sn := range rs.Sentinels {
				t.Logf("sentinel %s:\n%s", sn.Addr(), sn.LogTail(40))
			}
			t.Fatalf("%s not back as a replica in sync within 30 s; its log:\n%s", master.Addr(), master.LogTail(30))
		}
		// A sentinel does not fail the same master over again within twice its failover
		// timeout (5 s in the test kit): the next kill waits that out, as an operator would.
		if wait := 10*time.Second - time.Since(killed); wait > 0 {
			time.Sleep(wait)
		}
		waitAcked(t, pub, countAcked(pub.ackedCopy())+2*50)
	}
	c, _, _ := load.end(t, "soak-sentinel-replicated", "")
	soakReport(t, "sentinel-failovers-replicated", map[string]any{
		"seconds": time.Since(start).Round(time.Second).Seconds(), "master_kills": kills,
		"slowest_recovery_s": slowest.Round(100 * time.Millisecond).Seconds(),
		"acknowledged":       c.Acknowledged, "delivered": c.Delivered, "lost": c.Lost, "duplicated": c.Duplicated,
		"reordered": c.Reordered, "resynced": c.Resynced, "announced": c.Announced,
	})
	if c.Lost != 0 || c.Duplicated != 0 || c.Reordered != 0 || c.Announced != 0 {
		t.Errorf("want nothing lost, duplicated or reordered: %s", c)
	}
}
