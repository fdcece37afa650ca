package stream

import (
	"runtime"
	"testing"
	"time"
)

func msgs(n int) []*Message {
	out := make([]*Message, n)
	for i := range out {
		out[i] = &Message{Channel: "c"}
	}
	return out
}

// popAll takes every waiting message, as takeQueued does.
func popAll(q *queue) []*Message {
	var out []*Message
	q.mu.Lock()
	for q.n > 0 {
		out = append(out, q.popLocked())
	}
	q.mu.Unlock()
	return out
}

func TestQueueKeepsOrderAcrossGrowthAndWrap(t *testing.T) {
	q := newQueue(100)
	all := msgs(60)
	next := 0
	var got []*Message
	// Pushes and pops interleaved so the ring wraps before it grows, more than once.
	for _, burst := range []int{3, 1, 5, 2, 9, 17, 23} {
		for range burst {
			if !q.push(all[next]) {
				t.Fatalf("push %d refused with %d waiting", next, q.n)
			}
			next++
		}
		q.mu.Lock()
		for range (q.n + 1) / 2 {
			got = append(got, q.popLocked())
		}
		q.mu.Unlock()
	}
	got = append(got, popAll(&q)...)
	if len(got) != next {
		t.Fatalf("took %d messages of %d", len(got), next)
	}
	for i, m := range got {
		if m != all[i] {
			t.Fatalf("message %d out of order", i)
		}
	}
}

func TestQueueLimit(t *testing.T) {
	q := newQueue(5)
	all := msgs(7)
	for i := range 5 {
		if !q.push(all[i]) {
			t.Fatalf("push %d of 5 refused", i)
		}
	}
	if q.push(all[5]) {
		t.Fatal("a sixth message accepted by a queue of 5")
	}
	q.mu.Lock()
	first := q.popLocked()
	q.mu.Unlock()
	if first != all[0] || !q.push(all[6]) {
		t.Fatal("after one is taken, one more fits")
	}
	rest := popAll(&q)
	want := []*Message{all[1], all[2], all[3], all[4], all[6]}
	for i := range want {
		if rest[i] != want[i] {
			t.Fatalf("after the refusal, message %d is not the one pushed", i)
		}
	}
}

// An idle socket holds no ring; a burst's ring goes once drained, a small one stays.
func TestQueueRingLetGo(t *testing.T) {
	q := newQueue(256)
	if q.buf != nil {
		t.Fatal("a new queue holds a ring")
	}
	for _, m := range msgs(3) {
		q.push(m)
	}
	popAll(&q)
	if len(q.buf) == 0 || len(q.buf) > keptRing {
		t.Fatalf("a small ring of %d not kept after draining", len(q.buf))
	}
	for _, m := range msgs(200) {
		q.push(m)
	}
	popAll(&q)
	if q.buf != nil {
		t.Fatalf("a burst's ring of %d kept after draining", len(q.buf))
	}
	for _, m := range msgs(10) {
		q.push(m)
	}
	q.clear()
	if q.buf != nil || q.n != 0 || q.push(&Message{}) == false {
		t.Fatal("clear leaves a ring or a count behind")
	}
}

// A reader that finds the queue empty and then waits on ready is always woken by the next
// push: no message is left waiting while the reader sleeps.
func TestQueueNoLostWakeup(t *testing.T) {
	const n = 20000
	q := newQueue(n)
	all := msgs(n)
	done := make(chan []*Message)
	go func() {
		var got []*Message
		for len(got) < n {
			got = append(got, popAll(&q)...)
			if len(got) < n {
				<-q.ready
			}
		}
		done <- got
	}()
	for i, m := range all {
		q.push(m)
		if i%7 == 0 {
			runtime.Gosched() // let the reader empty the queue and wait
		}
	}
	select {
	case got := <-done:
		for i := range got {
			if got[i] != all[i] {
				t.Fatalf("message %d out of order", i)
			}
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the reader is still waiting with %d messages queued", q.n)
	}
}
