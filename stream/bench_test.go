package stream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/stream"
)

// BenchmarkFanout measures publish → delivery through the engine alone: one channel, many
// sockets, each drained by its own goroutine as a transport would. ns/op is per publish;
// deliveries/s is reported.
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			st := memstore.New(memstore.Options{})
			h := stream.New(st, stream.Options{QueueSize: 4096})
			defer func() { h.Close(); st.Close() }()
			var wg sync.WaitGroup
			var delivered atomic.Int64
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for range subs {
				s, err := h.Open(ctx, stream.Request{Channels: []string{"c"}})
				if err != nil {
					b.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer s.Close()
					var buf []stream.Delivery
					var err error
					for ctx.Err() == nil {
						buf, err = s.Next(ctx, 64, time.Second, buf[:0])
						delivered.Add(int64(len(buf)))
						if err != nil && ctx.Err() == nil {
							b.Errorf("socket ended: %v", err)
							return
						}
					}
				}()
			}
			data := json.RawMessage(`{"text":"` + strings.Repeat("x", 150) + `"}`)
			b.ResetTimer()
			// Publish in rounds no larger than a queue, waiting for every delivery of a round,
			// so no socket lags and every publish counts.
			for done := 0; done < b.N; {
				round := min(b.N-done, 1024)
				for range round {
					if _, err := st.Append(context.Background(), store.AppendRequest{Channel: "c", Name: "MessageSent", Data: data}); err != nil {
						b.Fatal(err)
					}
				}
				done += round
				for delivered.Load() < int64(done*subs) {
					if b.Failed() {
						return
					}
					time.Sleep(50 * time.Microsecond)
				}
			}
			b.ReportMetric(float64(delivered.Load())/b.Elapsed().Seconds(), "deliveries/s")
			b.StopTimer()
			cancel()
			wg.Wait()
		})
	}
}

func BenchmarkNewMessage(b *testing.B) {
	ev := &store.Event{Channel: "private-conversation.1.2", Epoch: "k3j9x0qa", Seq: 42, Name: "MessageSent",
		Data: json.RawMessage(`{"text":"` + strings.Repeat("x", 150) + `"}`), Time: 1795676160119}
	b.ReportAllocs()
	for range b.N {
		stream.NewMessage(ev)
	}
}
