package redisstore

import (
	"context"
	"time"

	"github.com/herald-rt/herald/store"
)

// SuppressPublish makes s's appends publish no notice, as if pub/sub had lost them, so tests
// can check that live delivery refills them from the log.
func SuppressPublish(s *Store, on bool) { s.suppressPublish.Store(on) }

// AppendBatch sends reqs as one batch, as Append does when they were queued together,
// and returns each one's answer.
func AppendBatch(s *Store, reqs []store.AppendRequest) ([]store.AppendResult, []error) {
	ops := make([]*appendOp, len(reqs))
	for i, req := range reqs {
		ops[i] = s.newAppendOp(req)
	}
	s.runBatch(ops)
	res, errs := make([]store.AppendResult, len(ops)), make([]error, len(ops))
	for i, op := range ops {
		<-op.done
		res[i], errs[i] = op.res, op.err
	}
	return res, errs
}

// Lingering reports whether a sender of s's append queue is waiting for the linger to pass.
func Lingering(s *Store) bool {
	s.appends.mu.Lock()
	defer s.appends.mu.Unlock()
	return s.appends.wake != nil
}

// RememberCrowd makes s's append queue remember n appends pending at once, as if it had
// just seen them: a lone append then lingers.
func RememberCrowd(s *Store, n int64) {
	s.appends.mu.Lock()
	defer s.appends.mu.Unlock()
	s.appends.peak, s.appends.peakSince = n, time.Now()
}

// Queued is how many appends wait in s's queue, abandoned ones included.
func Queued(s *Store) int {
	s.appends.mu.Lock()
	defer s.appends.mu.Unlock()
	return len(s.appends.ops)
}

// RaceSenders queues req as Append does and then lets two senders take a slot in the same
// instant, as two callers can when both find a free slot before either lingers; it returns
// req's answer once a batch carries it.
func RaceSenders(s *Store, req store.AppendRequest) <-chan error {
	op := s.newAppendOp(req)
	q := &s.appends
	q.mu.Lock()
	q.add(op, time.Now())
	q.slots += 2
	q.mu.Unlock()
	for range 2 {
		go s.sendQueue(context.Background())
	}
	errc := make(chan error, 1)
	go func() {
		<-op.done
		q.pending.Add(-1)
		errc <- op.err
	}()
	return errc
}

// Slots is how many slots of s's append queue are held: batches in flight and the lingering
// sender.
func Slots(s *Store) int {
	s.appends.mu.Lock()
	defer s.appends.mu.Unlock()
	return s.appends.slots
}
