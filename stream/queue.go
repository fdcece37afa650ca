package stream

import "sync"

// queue holds a socket's live messages until Next takes them: a ring that grows while messages
// wait, up to limit, and is let go once a burst is drained. Most sockets are idle most of the
// time and hold no ring at all, where a channel of the same bound would hold limit pointers
// for the socket's whole life (2 KB at the default 256, on every socket).
type queue struct {
	mu    sync.Mutex
	buf   []*Message
	head  int // index of the oldest message in buf
	n     int // messages waiting
	limit int
	// ready has room for one signal: sent when the queue goes from empty to not empty and when
	// the socket's state changes (wake). The socket's reader waits on it alone.
	ready chan struct{}
}

// firstRing is the ring a socket gets with its first message; keptRing the largest one it
// keeps once drained, so a socket that takes events steadily does not reallocate.
const (
	firstRing = 4
	keptRing  = 32
)

func newQueue(limit int) queue {
	return queue{limit: limit, ready: make(chan struct{}, 1)}
}

// push adds m unless limit messages are waiting.
func (q *queue) push(m *Message) bool {
	q.mu.Lock()
	if q.n >= q.limit {
		q.mu.Unlock()
		return false
	}
	if q.n == len(q.buf) {
		q.grow()
	}
	i := q.head + q.n
	if i >= len(q.buf) {
		i -= len(q.buf)
	}
	q.buf[i] = m
	q.n++
	first := q.n == 1
	q.mu.Unlock()
	if first {
		// A reader that found the queue empty waits for this; one that has not taken the
		// earlier messages yet takes this one with them.
		q.signal()
	}
	return true
}

func (q *queue) grow() {
	size := min(max(2*len(q.buf), firstRing), q.limit)
	buf := make([]*Message, size)
	k := copy(buf, q.buf[q.head:])
	copy(buf[k:], q.buf[:q.head])
	q.buf, q.head = buf, 0
}

// signal makes a waiting reader look at the socket again.
func (q *queue) signal() {
	select {
	case q.ready <- struct{}{}:
	default: // one signal is already pending, which is enough
	}
}

// popLocked takes the oldest waiting message; q.mu is held and a message waits.
func (q *queue) popLocked() *Message {
	m := q.buf[q.head]
	q.buf[q.head] = nil
	if q.head++; q.head == len(q.buf) {
		q.head = 0
	}
	if q.n--; q.n == 0 {
		q.head = 0
		if len(q.buf) > keptRing {
			q.buf = nil // a burst's ring goes with the burst
		}
	}
	return m
}

// clear drops every waiting message and the ring.
func (q *queue) clear() {
	q.mu.Lock()
	q.buf, q.head, q.n = nil, 0, 0
	q.mu.Unlock()
}
