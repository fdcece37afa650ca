package main

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// Latency histogram in microseconds, log-linear: values below 2*hSub have a
// bucket each; above that every power of two is split into hSub equal
// buckets, so a bucket is at most 1/64 (1.6 %) of its values wide and a
// quantile, reported at the bucket's middle, is within 0.8 % of the truth.
// Values are capped at 2^hTopBits-1 us (about 19 hours).
const (
	hSubBits = 6
	hSub     = 1 << hSubBits
	hTopBits = 36
	hBuckets = 2*hSub + (hTopBits-hSubBits-1)*hSub
	hMaxVal  = 1<<hTopBits - 1
)

func bucketOf(v uint64) int {
	if v > hMaxVal {
		v = hMaxVal
	}
	if v < 2*hSub {
		return int(v)
	}
	shift := bits.Len64(v) - 1 - hSubBits // >= 1
	return 2*hSub + (shift-1)*hSub + int(v>>uint(shift)) - hSub
}

// bucketBounds returns the smallest and the largest value of bucket i.
func bucketBounds(i int) (lo, hi uint64) {
	if i < 2*hSub {
		return uint64(i), uint64(i)
	}
	shift := uint((i-2*hSub)/hSub + 1)
	m := uint64((i-2*hSub)%hSub + hSub)
	return m << shift, (m+1)<<shift - 1
}

// histShard is one part of a histogram; goroutines are spread over shards
// so that they seldom write to the same cache lines.
type histShard struct {
	counts [hBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Uint64
	_      [64]byte
}

// histogram is safe for concurrent use: record is a few atomic adds, and
// the memory does not grow with the number of connections.
type histogram struct {
	shards []histShard
}

func newHistogram(shards int) *histogram {
	return &histogram{shards: make([]histShard, max(1, shards))}
}

// record adds one value (microseconds; negative counts as 0) in shard k.
func (h *histogram) record(k int, us int64) {
	if us < 0 {
		us = 0
	}
	v := uint64(us)
	s := &h.shards[k%len(h.shards)]
	s.counts[bucketOf(v)].Add(1)
	s.n.Add(1)
	s.sum.Add(v)
	for {
		m := s.max.Load()
		if v <= m || s.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// histSnapshot is a merged, read-only copy of a histogram.
type histSnapshot struct {
	counts [hBuckets]uint64
	n, sum uint64
	max    uint64
}

func (h *histogram) snapshot() *histSnapshot {
	out := &histSnapshot{}
	for i := range h.shards {
		s := &h.shards[i]
		for b := range s.counts {
			out.counts[b] += s.counts[b].Load()
		}
		out.n += s.n.Load()
		out.sum += s.sum.Load()
		out.max = max(out.max, s.max.Load())
	}
	return out
}

// quantile returns the value (microseconds) at quantile q in [0, 1].
func (s *histSnapshot) quantile(q float64) uint64 {
	if s.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range s.counts {
		if seen += c; seen >= rank {
			lo, hi := bucketBounds(i)
			return min(lo+(hi-lo)/2, s.max)
		}
	}
	return s.max
}

func (s *histSnapshot) mean() float64 {
	if s.n == 0 {
		return 0
	}
	return float64(s.sum) / float64(s.n)
}
