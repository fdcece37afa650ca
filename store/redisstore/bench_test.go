package redisstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/test/testkit"
)

type nopHandler struct{ n atomic.Int64 }

func (h *nopHandler) HandleEvent(*store.Event)         { h.n.Add(1) }
func (h *nopHandler) HandleGap(string)                 {}
func (h *nopHandler) HandleEphemeral(*store.Ephemeral) {}

// benchAppend measures appends from many concurrent publishers spread over 64 channels, and
// reports throughput and latency percentiles, the figures the service's targets are set in.
func benchAppend(b *testing.B, listen bool) {
	benchAppendOn(b, newStore(b, redisstore.Options{}), listen, []*redis.Client{rawClient(b, "")})
}

// benchAppendOn runs benchAppend on s, and reports the Redis time per append the masters spent
// in the append script (INFO commandstats: wall time, which a busy machine inflates) and the
// CPU they spent in all (INFO cpu: the script, the connections, the replies).
func benchAppendOn(b *testing.B, s *redisstore.Store, listen bool, masters []*redis.Client) {
	channels := make([]string, 64)
	for i := range channels {
		channels[i] = fmt.Sprintf("bench.%d", i)
	}
	if listen {
		if _, err := s.Listen(context.Background(), &nopHandler{}, channels...); err != nil {
			b.Fatal(err)
		}
		defer s.Unlisten(channels...)
	}
	data := json.RawMessage(`{"user":{"id":42,"name":"Ada"},"text":"hello, world","at":"2025-01-01T00:00:00Z"}`)
	var (
		mu     sync.Mutex
		all    []time.Duration
		worker atomic.Int64
	)
	for _, m := range masters {
		if err := m.ConfigResetStat(context.Background()).Err(); err != nil {
			b.Fatal(err)
		}
	}
	cpu0, own0 := redisCPU(b, masters), processCPU()
	b.SetParallelism(16) // 32 publishers on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := int(worker.Add(1))
		lat := make([]time.Duration, 0, 4096)
		for i := 0; pb.Next(); i++ {
			start := time.Now()
			_, err := s.Append(context.Background(), store.AppendRequest{
				Channel: channels[(id*7+i)%len(channels)], Name: "MessageSent", Data: data, SocketID: "123.456",
			})
			if err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(start))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	b.StopTimer()
	reportLatency(b, all)
	b.ReportMetric((redisCPU(b, masters)-cpu0)*1e6/float64(b.N), "redis-cpu-us/append")
	b.ReportMetric((processCPU()-own0)*1e6/float64(b.N), "cpu-us/append")
	var usec, calls float64
	for _, m := range masters {
		stats, err := m.Info(context.Background(), "commandstats").Result()
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(stats, "\n") {
			for _, cmd := range []string{"cmdstat_evalsha:", "cmdstat_eval:"} {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
					for _, f := range strings.Split(rest, ",") {
						k, v, _ := strings.Cut(f, "=")
						n, _ := strconv.ParseFloat(v, 64)
						switch k {
						case "calls":
							calls += n
						case "usec":
							usec += n
						}
					}
				}
			}
		}
	}
	if calls > 0 {
		b.ReportMetric(usec/float64(b.N), "redis-script-us/append")
	}
}

// redisCPU is the CPU seconds the masters have used so far (INFO cpu, user and system).
func redisCPU(b *testing.B, masters []*redis.Client) float64 {
	var total float64
	for _, m := range masters {
		info, err := m.Info(context.Background(), "cpu").Result()
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
			if k == "used_cpu_user" || k == "used_cpu_sys" {
				n, _ := strconv.ParseFloat(v, 64)
				total += n
			}
		}
	}
	return total
}

// processCPU is this process's CPU time so far, in seconds: the store's side of an append
// (the benchmark's own loop included).
func processCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

func BenchmarkAppendParallel(b *testing.B) { benchAppend(b, false) }

// BenchmarkAppendParallelReplicated is BenchmarkAppendParallel with durability replicated: each
// batch waits for the replica (WAIT) before its appends are answered.
func BenchmarkAppendParallelReplicated(b *testing.B) {
	master, _ := startReplicated(b)
	s := newStore(b, redisstore.Options{URL: master.URL(), Replicas: 1})
	c := redis.NewClient(&redis.Options{Addr: master.Addr(), DisableIdentity: true})
	defer c.Close()
	benchAppendOn(b, s, false, []*redis.Client{c})
}

// BenchmarkAppendParallelCluster is BenchmarkAppendParallel on a Redis Cluster of three
// masters (each with a replica), all on this machine.
func BenchmarkAppendParallelCluster(b *testing.B) {
	needRedis(b)
	c, err := testkit.StartRedisCluster(3, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	cc := clusterClient(b, c)
	s, err := redisstore.New(context.Background(), redisstore.Options{Client: cc, Prefix: uniquePrefix()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var masters []*redis.Client
	ms, err := c.Masters()
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range ms {
		mc := redis.NewClient(&redis.Options{Addr: m.Addr(), DisableIdentity: true})
		defer mc.Close()
		masters = append(masters, mc)
	}
	benchAppendOn(b, s, false, masters)
}

// BenchmarkAppendParallelRTT is BenchmarkAppendParallel over a slower network: a proxy holds
// every chunk at least 250 µs each way (timer granularity makes it more: a few milliseconds of
// round trip on a small VM). Loopback hides what a round trip costs; here how many pipelines
// are in flight at once shows.
func BenchmarkAppendParallelRTT(b *testing.B) {
	needRedis(b)
	u, err := url.Parse(redisURL)
	if err != nil {
		b.Fatal(err)
	}
	u.Host = delayProxy(b, u.Host, 250*time.Microsecond)
	benchAppendOn(b, newStore(b, redisstore.Options{URL: u.String()}), false, []*redis.Client{rawClient(b, "")})
}

// delayProxy forwards loopback TCP connections to target, holding every chunk for d in each
// direction, in order. It returns its address; it stops when the benchmark ends.
func delayProxy(b *testing.B, target string, d time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			go delayCopy(up, c, d)
			go delayCopy(c, up, d)
		}
	}()
	return ln.Addr().String()
}

func delayCopy(dst, src net.Conn, d time.Duration) {
	type chunk struct {
		due time.Time
		b   []byte
	}
	chunks := make(chan chunk, 4096)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- chunk{time.Now().Add(d), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	defer dst.Close()
	for c := range chunks {
		time.Sleep(time.Until(c.due))
		if _, err := dst.Write(c.b); err != nil {
			return
		}
	}
}

// BenchmarkAppendParallelListened adds the live path: the store listens to every channel, so
// Redis also sends each notice and the loop decodes and delivers it.
func BenchmarkAppendParallelListened(b *testing.B) { benchAppend(b, true) }

// BenchmarkRead reads a 50-event page after a cursor in a 1000-event history, the catch-up of
// a reconnecting subscriber.
func BenchmarkRead(b *testing.B) {
	s := newStore(b, redisstore.Options{})
	evs := appendN(b, s, "bench.read", 1000)
	after := evs[949].Cursor()
	var (
		mu  sync.Mutex
		all []time.Duration
	)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		lat := make([]time.Duration, 0, 4096)
		for pb.Next() {
			start := time.Now()
			page, err := s.Read(context.Background(), "bench.read", after, 50)
			if err != nil || len(page.Events) != 50 {
				b.Errorf("read: %d events, %v", len(page.Events), err)
				return
			}
			lat = append(lat, time.Since(start))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	b.StopTimer()
	reportLatency(b, all)
}

// BenchmarkRedisMemory measures what Herald's data costs Redis (used_memory, on a server of
// its own): per channel holding one event, per further retained event, and per idempotency
// record, at 10,000 channels × 100 events of the benchmark's 80-byte payload. Run it once:
// go test -run '^$' -bench RedisMemory -benchtime 1x ./store/redisstore
func BenchmarkRedisMemory(b *testing.B) {
	needRedis(b)
	// HERALD_BENCH_REDIS_ARGS: redis-server settings to compare, e.g. "--stream-node-max-bytes 1024".
	rd, err := testkit.StartRedis(strings.Fields(os.Getenv("HERALD_BENCH_REDIS_ARGS"))...)
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	s := newStore(b, redisstore.Options{URL: rd.URL(), Retention: store.Retention{MaxEvents: 1000}})
	c := redis.NewClient(&redis.Options{Addr: rd.Addr(), DisableIdentity: true})
	defer c.Close()
	used := func() float64 {
		info, err := c.Info(context.Background(), "memory").Result()
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
				n, _ := strconv.ParseFloat(v, 64)
				return n
			}
		}
		b.Fatal("no used_memory in INFO memory")
		return 0
	}
	const channels, events = 10000, 100
	data := json.RawMessage(`{"user":{"id":42,"name":"Ada"},"text":"hello, world","at":"2025-01-01T00:00:00Z"}`)
	appendAll := func(round int, withKey bool) {
		var wg sync.WaitGroup
		for w := range 32 {
			wg.Go(func() {
				for ch := w; ch < channels; ch += 32 {
					req := store.AppendRequest{Channel: fmt.Sprintf("mem.%d", ch), Name: "MessageSent", Data: data}
					if withKey {
						req.IdempotencyKey = fmt.Sprintf("key-%d-%d", ch, round)
					}
					if _, err := s.Append(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	b.ResetTimer()
	for range b.N {
		m0 := used()
		appendAll(0, false)
		m1 := used()
		for round := 1; round < events; round++ {
			appendAll(round, false)
		}
		m2 := used()
		appendAll(events, true)
		m3 := used()
		perEvent := (m2 - m1) / float64(channels*(events-1))
		b.ReportMetric((m1-m0)/channels, "B/channel")
		b.ReportMetric(perEvent, "B/event")
		b.ReportMetric((m3-m2)/channels-perEvent, "B/idempotency-record")
		b.ReportMetric(m2/(1<<20), "MiB-total")
	}
}
