package stream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/stream"
)

func TestDynamicSubscribeNoticeThenHistoryThenLive(t *testing.T) {
	h, st := newHub(t, store.Retention{}, stream.Options{})
	evs := publish(t, st, "room", 5, "")
	s := open(t, h, stream.Request{Dynamic: true})
	if s.Cursor() != "c" {
		t.Fatalf("empty dynamic socket cursor %q", s.Cursor())
	}
	from := evs[1].Cursor()
	if err := s.Subscribe(context.Background(), "room", &from, nil, json.RawMessage(`{"presence":{"count":0}}`)); err != nil {
		t.Fatal(err)
	}
	publish(t, st, "room", 2, "")
	ds := collect(t, s, 5)
	if ds[0].Control == nil || ds[0].Control.Event != "herald:subscription_succeeded" || ds[0].Control.Channel != "room" || string(ds[0].Control.Data) != `{"presence":{"count":0}}` {
		t.Fatalf("first delivery %+v, want the subscription notice", ds[0])
	}
	checkContiguous(t, seqs(ds), 3, 7)
	for _, d := range ds[1:] {
		if d.ID[0] != 'c' {
			t.Fatalf("dynamic socket id %q is not composite", d.ID)
		}
	}
	if !s.Unsubscribe("room") || s.Unsubscribe("room") {
		t.Fatal("Unsubscribe should report true once")
	}
	publish(t, st, "room", 1, "")
	quiet(t, s)
	if got := s.Channels(); len(got) != 0 {
		t.Fatalf("channels after unsubscribe: %v", got)
	}
}

func TestDynamicSubscribeLiveOnlyAndRepeat(t *testing.T) {
	h, st := newHub(t, store.Retention{}, stream.Options{})
	publish(t, st, "a", 3, "")
	s := open(t, h, stream.Request{Dynamic: true, Exclude: []string{"1.1"}})
	for range 2 {
		if err := s.Subscribe(context.Background(), "a", nil, []string{"2.2"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, st, "a", 1, "2.2")
	publish(t, st, "a", 1, "1.1")
	publish(t, st, "a", 1, "")
	ds := collect(t, s, 1) // events 4 and 5 come from excluded sockets
	if len(ds) != 3 || ds[0].Control == nil || ds[1].Control == nil {
		t.Fatalf("want two notices first, got %+v %+v", ds[0], ds[1])
	}
	checkContiguous(t, seqs(ds), 6, 6)
	fixed := open(t, h, stream.Request{Channels: []string{"x"}})
	if err := fixed.Subscribe(context.Background(), "y", nil, nil, nil); !errors.Is(err, stream.ErrNotDynamic) {
		t.Fatalf("Subscribe on a fixed socket: %v", err)
	}
	if h.Socket(s.ID()) != s || h.Socket("0.0") != nil {
		t.Fatal("socket lookup by id")
	}
}

func TestDynamicSubscriptionsWhileReading(t *testing.T) {
	h, st := newHub(t, store.Retention{MaxEvents: 10000}, stream.Options{QueueSize: 4096})
	s := open(t, h, stream.Request{Dynamic: true})
	const channels, each = 10, 50
	var wg sync.WaitGroup
	for i := range channels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := fmt.Sprintf("c%d", i)
			zero := store.Cursor{}
			if err := s.Subscribe(context.Background(), ch, &zero, nil, nil); err != nil {
				t.Error(err)
				return
			}
			publish(t, st, ch, each, "")
		}()
	}
	last := map[string]uint64{}
	notices := 0
	deadline := time.Now().Add(20 * time.Second)
	for total := 0; total < channels*each; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events after 20s", total, channels*each)
		}
		out, err := s.Next(context.Background(), 64, 50*time.Millisecond, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range out {
			switch {
			case d.Control != nil:
				notices++
			case d.Msg != nil:
				if d.Msg.Cursor.Seq != last[d.Msg.Channel]+1 {
					t.Fatalf("channel %s: seq %d after %d", d.Msg.Channel, d.Msg.Cursor.Seq, last[d.Msg.Channel])
				}
				last[d.Msg.Channel] = d.Msg.Cursor.Seq
				total++
			}
		}
	}
	wg.Wait()
	if notices != channels {
		t.Fatalf("%d notices, want %d", notices, channels)
	}
	pos, err := stream.ParseComposite(s.Cursor(), s.Channels())
	if err != nil || len(pos) != channels || pos["c3"].Seq != each {
		t.Fatalf("composite cursor %q: %v %v", s.Cursor(), pos, err)
	}
}
