package stream_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/stream"
	"github.com/herald-rt/herald/test/testkit"
)

// The engine's guarantees must hold on the store that has real network hops between an
// append and its live notice: HERALD_TEST_REDIS_URL (make test), or a redis-server of its own.
func redisHub(t *testing.T, opts stream.Options) (*stream.Hub, store.Store) {
	t.Helper()
	url, err := testkit.SharedRedisURL()
	if err != nil {
		t.Fatal(err)
	}
	st, err := redisstore.New(context.Background(), redisstore.Options{
		URL: url, Prefix: fmt.Sprintf("streamtest:%d:", time.Now().UnixNano()), Retention: store.Retention{MaxEvents: 10000},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := stream.New(st, opts)
	t.Cleanup(func() { h.Close(); st.Close() })
	return h, st
}

func TestRedisResumeWhilePublishing(t *testing.T) {
	h, st := redisHub(t, stream.Options{ReadBatch: 50, QueueSize: 64})
	const total = 2000
	// A live subscriber from the start and resuming ones opened while publishing: all must see
	// exactly their rest, in order, across lag disconnects.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		checkContiguous(t, collectResuming(t, h, "c", store.Cursor{}, total), 1, total)
	}()
	time.Sleep(50 * time.Millisecond)
	var mu sync.Mutex
	var cursors []store.Cursor
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := range total {
			evs := publish(t, st, "c", 1, "")
			if len(evs) == 0 {
				return
			}
			if i%100 == 0 {
				mu.Lock()
				cursors = append(cursors, evs[0].Cursor())
				mu.Unlock()
			}
		}
	}()
	for range 8 {
		time.Sleep(30 * time.Millisecond)
		mu.Lock()
		var from store.Cursor
		if len(cursors) > 0 {
			from = cursors[len(cursors)-1]
		}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			checkContiguous(t, collectResuming(t, h, "c", from, total), from.Seq+1, total)
		}()
	}
	<-pubDone
	wg.Wait()
}

func TestRedisMultiChannelSocketKeepsPerChannelOrder(t *testing.T) {
	h, st := redisHub(t, stream.Options{QueueSize: 4096})
	s := open(t, h, stream.Request{Channels: []string{"a", "b", "c"}})
	var wg sync.WaitGroup
	for _, ch := range []string{"a", "b", "c"} {
		wg.Add(1)
		go func() { defer wg.Done(); publish(t, st, ch, 200, "") }()
	}
	wg.Wait()
	last := map[string]uint64{}
	for _, d := range collect(t, s, 600) {
		if d.Msg == nil {
			continue
		}
		if d.Msg.Cursor.Seq != last[d.Msg.Channel]+1 {
			t.Fatalf("channel %s: seq %d after %d", d.Msg.Channel, d.Msg.Cursor.Seq, last[d.Msg.Channel])
		}
		last[d.Msg.Channel] = d.Msg.Cursor.Seq
	}
}
