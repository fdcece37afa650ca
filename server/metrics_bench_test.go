package server

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkShardedCounter: adds from every P at once, each goroutine on its own cell as a
// stream is.
func BenchmarkShardedCounter(b *testing.B) {
	var c shardedCounter
	b.RunParallel(func(pb *testing.PB) {
		shard := rand.Uint32()
		for pb.Next() {
			c.add(shard, 1)
		}
	})
}
