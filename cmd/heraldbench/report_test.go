package main

import (
	"strings"
	"testing"
)

func TestWriteGoals(t *testing.T) {
	row := func(tool, scenario, store string, rate float64) *result {
		return &result{Tool: tool, Scenario: scenario, Store: store, Proto: protoH1, RateTarget: rate}
	}
	s4mem, s4redis, s4min := row("heraldbench", "S4", "memory", 2000), row("heraldbench", "S4", "redis", 2000), row("heraldbench", "S4", storeMinimal, 2000)
	s4mem.DelivPerCPUS = fptr(20000)
	s4redis.DelivPerCPUS, s4redis.DelivPerTotalCPU = fptr(17000), fptr(14000) // Redis's CPU counts
	s4min.DelivPerCPUS = fptr(20000)
	// ssebench's row of the minimal server must not stand in for heraldbench's.
	s4sse := row("ssebench", "S4", storeMinimal, 2000)
	s4sse.DelivPerCPUS = fptr(1000)

	s5redis, s5min := row("heraldbench", "S5", "redis", 20000), row("heraldbench", "S5", storeMinimal, 20000)
	s5redis.PublishesPerS, s5redis.PubPerCPUS, s5redis.PubPerTotalCPU = 18500, fptr(30000), fptr(16000)
	s5min.PublishesPerS, s5min.PubPerCPUS = 20000, fptr(25000)

	// Centrifugo on Redis: Redis's CPU counts on both sides of the ratio.
	s4cf, s5cf := row("heraldbench", "S4", storeCentrifugoRedis, 2000), row("heraldbench", "S5", storeCentrifugoRedis, 20000)
	s4cf.DelivPerCPUS, s4cf.DelivPerTotalCPU = fptr(12000), fptr(10000)
	s5cf.PubPerCPUS, s5cf.PubPerTotalCPU = fptr(15000), fptr(12000)

	slow := row("heraldbench", "S5", "redis", 10000)
	slow.PubP99 = 6.5

	var b strings.Builder
	writeGoals(&b, []*result{s4sse, s4mem, s4redis, s4min, s5redis, s5min, s4cf, s5cf, slow})
	want := []string{
		"| deliveries per CPU-s (with Redis's) vs the minimal server | S4 | 0.70 | ≥ 0.67 | yes |",
		"| deliveries per CPU-s (with Redis's) vs Herald on memory | S4 | 0.70 | ≥ 0.75 | no |",
		"| publishes/s vs the minimal server | S5 | 0.93 | ≥ 0.90 | yes |",
		"| publishes per CPU-s (with Redis's) vs the minimal server | S5 | 0.64 | ≥ 0.60 | yes |",
		"| deliveries per CPU-s (with Redis's) vs Centrifugo on Redis (with Redis's) | S4 | 1.40 | ≥ 1.50 | no |",
		"| publishes per CPU-s (with Redis's) vs Centrifugo on Redis (with Redis's) | S5 | 1.33 | ≥ 1.50 | no |",
		"| publish p99 (ms) at 10k/s | S5 | 6.50 | ≤ 5.00 | no |",
	}
	got := b.String()
	for _, line := range want {
		if !strings.Contains(got, line+"\n") {
			t.Errorf("missing %q in:\n%s", line, got)
		}
	}
	if n := strings.Count(got, "\n|"); n != 2+len(want) {
		t.Errorf("%d table lines, want a header, a rule and %d goals:\n%s", n, len(want), got)
	}

	// Without the rows a goal compares, nothing is claimed about it.
	b.Reset()
	writeGoals(&b, []*result{s4redis, s5min, s4sse})
	if b.Len() != 0 {
		t.Errorf("goals printed without their rows:\n%s", b.String())
	}
	// A failed run is no evidence either way.
	failed := *s4min
	failed.Error = "server exited"
	b.Reset()
	writeGoals(&b, []*result{s4redis, &failed})
	if b.Len() != 0 {
		t.Errorf("goal checked against a failed run:\n%s", b.String())
	}

	// With rounds, each ratio is taken within its round and the goal judged on their median:
	// a round whose Redis row failed counts for nothing, and no row pairs with another round's.
	var rows []*result
	for i, f := range []struct{ mem, redis float64 }{{20000, 15000}, {26000, 15600}, {20000, 16000}, {18000, 9000}} {
		mem, redis := row("heraldbench", "S4", "memory", 2000), row("heraldbench", "S4", "redis", 2000)
		mem.Round, redis.Round = i+1, i+1
		mem.DelivPerCPUS, redis.DelivPerCPUS, redis.DelivPerTotalCPU = fptr(f.mem), fptr(f.redis*1.2), fptr(f.redis)
		if i == 3 {
			redis.Error = "server exited"
		}
		rows = append(rows, mem, redis)
	}
	b.Reset()
	writeGoals(&b, rows)
	if line := "| deliveries per CPU-s (with Redis's) vs Herald on memory | S4 | 0.75 (median of 3: 0.75, 0.60, 0.80) | ≥ 0.75 | yes |"; !strings.Contains(b.String(), line+"\n") {
		t.Errorf("missing %q in:\n%s", line, b.String())
	}
	var table strings.Builder
	writeTable(&table, rows[:2])
	if !strings.Contains(table.String(), "| S4 #1 | memory |") {
		t.Errorf("the table does not name the round:\n%s", table.String())
	}
}
