package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
)

// appendPipelines is how many batches may be in flight at once, each on its own connection:
// with one, a slow link makes every batch wait a whole round trip behind the one before it;
// a few keep Redis busy while replies travel. Order is unaffected: a caller's appends are
// sequential, and Redis runs scripts one at a time.
const appendPipelines = 4

// maxBatch bounds how many appends share one pipeline, so one batch's replies stay small and a
// burst is answered in slices rather than all at the end.
const maxBatch = 256

// maxCallAppends bounds how many appends one script call carries: Redis runs a script without
// serving anyone else, so a call stays well under a millisecond.
const maxCallAppends = 64

// lingerBatch ends a linger once this many appends are queued. A script call's own cost,
// Herald's and Redis's together, is about 115 µs on the benchmark machine, an append's about
// 70: over 16 appends the call is a tenth of the cost, and holding appends for a larger call
// mostly adds latency. At 10,000 publishes/s from 32 clients, ending at 16 instead of when
// the linger ran out took the median publish from 2.8 to 1.7 ms and the p99 from 5.3 to
// 4.2 ms, for 5 to 13 % more CPU per publish (docs/benchmarks.md).
const lingerBatch = 16

// DefaultAppendLinger is Options.AppendLinger's default. Of 0.5, 1, 2 and 4 ms, 2 ms cost the
// least CPU per event at a few thousand publishes/s from many clients (S4 in
// docs/benchmarks.md: a tenth less than 0.5 ms, Redis's share a fifth less); it adds about a
// millisecond to the median delivery there, and nothing to a lone publisher's.
const DefaultAppendLinger = 2 * time.Millisecond

// An appendOp moves from queued to taken (a batch sends it) or to abandoned (its caller gave
// up first, so it must never be sent): whoever wins the compare-and-swap decides.
const (
	opQueued int32 = iota
	opTaken
	opAbandoned
)

type appendOp struct {
	req   store.AppendRequest
	keys  []string // this append's KEYS of the script
	argv  []any    // this append's 7 ARGV of the script
	state atomic.Int32
	done  chan struct{}
	res   store.AppendResult
	err   error
}

// appendQueue holds the appends not sent yet. No goroutine of its own sends them: a caller
// that finds a free slot (one of appendPipelines) sends the queue, its own append included,
// and waits for Redis in its own goroutine; what queued meanwhile leaves from a new goroutine
// when that answer comes, so the sender is answered at once.
//
// While appends come from several callers at once, the sender first lingers, until the
// oldest queued append has waited the linger, so that the appends of that interval share one
// pipeline and script call: a round trip's cost is mostly fixed — system calls and wake-ups
// on both sides, Redis's call setup — and at a busy node's rates batches of one or two spent
// most of both processes' CPU there (docs/benchmarks.md). "Several callers" is what the
// queue has seen: the linger ends early once as many appends are pending (queued or in
// flight) as were at most in the last second or two. Everyone appending at this rate is then
// waiting, and callers that append as fast as they are answered must not be held to one batch
// per linger; and a lone publisher, which never has two appends pending, is not held once the
// others are a second or two gone. It also ends once lingerBatch appends are queued. One
// sender lingers at a time; the others leave their appends to it.
type appendQueue struct {
	mu    sync.Mutex
	ops   []*appendOp
	slots int       // held by senders: batches in flight, and the lingering sender
	since time.Time // when the oldest queued append came
	// pending is counted by Append itself, so a caller is no longer counted when it appends
	// again; peak and prevPeak are its highest this second and the one before.
	pending        atomic.Int64
	peak, prevPeak int64
	peakSince      time.Time
	wake           chan struct{} // while a sender lingers: closed to end the linger
	closing        bool          // set by Close: nothing more is queued or sent
	idle           chan struct{} // closed when closing and no slot is held
}

// Append implements store.Store. A caller's own appends keep their order because each waits
// for the previous one's answer.
func (s *Store) Append(ctx context.Context, req store.AppendRequest) (store.AppendResult, error) {
	if s.closed.Load() {
		return store.AppendResult{}, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return store.AppendResult{}, err
	}
	if err := checkChannel(req.Channel); err != nil {
		return store.AppendResult{}, err
	}
	op := s.newAppendOp(req)
	q := &s.appends
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return store.AppendResult{}, store.ErrClosed
	}
	crowd := q.add(op, time.Now())
	defer q.pending.Add(-1)
	send := false
	switch {
	case q.wake != nil:
		if q.lingerOver(crowd) {
			close(q.wake)
			q.wake = nil
		}
	case q.slots < appendPipelines:
		q.slots++
		send = true
	}
	q.mu.Unlock()
	if send {
		s.sendQueue(ctx)
	}
	select {
	case <-op.done:
		return op.res, op.err
	case <-ctx.Done():
		if op.state.CompareAndSwap(opQueued, opAbandoned) {
			return store.AppendResult{}, ctx.Err()
		}
	}
	// Already sent: only Redis's answer says whether it was appended, so wait for it.
	<-op.done
	return op.res, op.err
}

// sendQueue sends what is queued as one batch, with a slot its caller took, after lingering
// while fewer appends are pending than recently were. ctx is the caller's: when it ends
// during the linger, the caller is answered at once (Append abandons its append) and the
// linger goes on in a goroutine of its own for the appends of others it holds.
func (s *Store) sendQueue(ctx context.Context) {
	q := &s.appends
	q.mu.Lock()
	if now := time.Now(); !q.lingerOver(q.notePending(now)) {
		if until := q.since.Add(s.linger); until.After(now) {
			if q.wake != nil {
				// Another sender took a slot in the same instant and lingers already: it
				// sends these appends too when its linger ends.
				q.release()
				q.mu.Unlock()
				return
			}
			wake := make(chan struct{})
			q.wake = wake
			q.mu.Unlock()
			s.lingerThenSend(ctx, wake, until)
			return
		}
	}
	s.sendLocked()
}

// lingerThenSend waits until the linger ends — its time runs out, wake is closed, or the
// store closes — and then sends the queue, or hands both to a new goroutine if ctx ends first.
func (s *Store) lingerThenSend(ctx context.Context, wake chan struct{}, until time.Time) {
	t := time.NewTimer(time.Until(until))
	select {
	case <-t.C:
	case <-wake:
	case <-s.done: // the queue then fails, not sent
	case <-ctx.Done():
		t.Stop()
		go s.lingerThenSend(context.Background(), wake, until) // keeps the slot
		return
	}
	t.Stop()
	q := &s.appends
	q.mu.Lock()
	if q.wake == wake {
		q.wake = nil
	}
	s.sendLocked()
}

// sendLocked sends what is queued as one batch with the slot its caller holds, and then
// either passes the slot to a goroutine for what queued meanwhile or gives it back. q.mu is
// held on entry and released.
func (s *Store) sendLocked() {
	q := &s.appends
	if q.closing || s.closed.Load() || len(q.ops) == 0 {
		q.release()
		q.mu.Unlock()
		return
	}
	batch := q.take()
	q.mu.Unlock()

	s.runBatch(batch)

	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.ops) > 0 && !q.closing && q.wake == nil {
		go s.sendQueue(context.Background()) // keeps the slot
		return
	}
	q.release()
}

// add queues op and counts it pending until its caller uncounts it, and returns the crowd
// notePending reports. q.mu is held.
func (q *appendQueue) add(op *appendOp, now time.Time) (crowd int64) {
	if len(q.ops) == 0 {
		q.since = now
	}
	q.ops = append(q.ops, op)
	q.pending.Add(1)
	return q.notePending(now)
}

// lingerOver reports whether a linger is over before its time: every append recently pending at
// once (crowd of them) is waiting again, or lingerBatch appends are queued. q.mu is held.
func (q *appendQueue) lingerOver(crowd int64) bool {
	return q.pending.Load() >= crowd || len(q.ops) >= lingerBatch
}

// notePending records how many appends are pending now and returns the most that were in
// the last one to two seconds. q.mu is held.
func (q *appendQueue) notePending(now time.Time) int64 {
	if now.Sub(q.peakSince) >= time.Second {
		q.prevPeak, q.peak, q.peakSince = q.peak, 0, now
	}
	q.peak = max(q.peak, q.pending.Load())
	return max(q.peak, q.prevPeak)
}

// take removes up to maxBatch queued appends, oldest first. q.mu is held.
func (q *appendQueue) take() []*appendOp {
	n := min(len(q.ops), maxBatch)
	batch := make([]*appendOp, n)
	copy(batch, q.ops)
	rest := copy(q.ops, q.ops[n:])
	clear(q.ops[rest:])
	q.ops = q.ops[:rest]
	return batch
}

// release gives a slot back. q.mu is held.
func (q *appendQueue) release() {
	q.slots--
	if q.slots == 0 && q.closing {
		close(q.idle)
	}
}

// closeAppends fails what is still queued and waits for the batches in flight: what Redis ran
// is reported as done.
func (s *Store) closeAppends() {
	q := &s.appends
	q.mu.Lock()
	q.closing = true
	for _, op := range q.ops {
		if op.state.CompareAndSwap(opQueued, opTaken) {
			op.err = store.ErrClosed
			close(op.done)
		}
	}
	q.ops = nil
	wait := q.slots > 0
	q.mu.Unlock()
	if wait {
		<-q.idle
	}
}

// newAppendOp returns req as a queued append, its script arguments built.
func (s *Store) newAppendOp(req store.AppendRequest) *appendOp {
	op := &appendOp{req: req, done: make(chan struct{})}
	op.keys, op.argv = s.appendArgs(req)
	return op
}

// appendArgs builds an append's share of a script call in the caller's goroutine, before it
// queues, keeping the sender's share of the work small.
func (s *Store) appendArgs(req store.AppendRequest) ([]string, []any) {
	keys := make([]string, 2, 3)
	keys[0], keys[1] = s.key(req.Channel, "s"), s.key(req.Channel, "m")
	fp := ""
	if req.IdempotencyKey != "" {
		keys, fp = append(keys, s.key(req.Channel, "i:"+req.IdempotencyKey)), store.Fingerprint(req)
	}
	notice := s.noticeChannel(req.Channel)
	if s.suppressPublish.Load() {
		notice = ""
	}
	// []byte: go-redis sends it as is, no copy.
	return keys, []any{len(keys), store.NewEpoch(), fp, req.Name, []byte(req.Data), req.SocketID, notice}
}

func (s *Store) runBatch(batch []*appendOp) {
	live := batch[:0] // filtering in place: batch is not used afterwards
	for _, op := range batch {
		if op.state.CompareAndSwap(opQueued, opTaken) {
			live = append(live, op)
		}
	}
	// Rounds: what Redis refused without running it — an unloaded script, or a slot in the
	// middle of moving (TRYAGAIN, or a redirect a master's own connection cannot follow) — is
	// sent again, the latter for a bounded time.
	deadline := time.Now().Add(movingPatience)
	withSource := false
	for len(live) > 0 {
		var retry []*appendOp
		moving := false
		for _, call := range s.execAppends(live, withSource) {
			err := call.cmd.Err()
			switch {
			case err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT"):
				retry, withSource = append(retry, call.ops...), true
			case isMoving(err) && time.Now().Before(deadline):
				retry, moving = append(retry, call.ops...), true
			default:
				s.finish(call)
			}
		}
		live = retry
		if moving {
			if s.cluster != nil {
				s.cluster.ReloadState(s.ctx)
			}
			if !s.sleep(movingPause) {
				for _, op := range live {
					op.err = store.ErrClosed
					close(op.done)
				}
				return
			}
		}
	}
}

const (
	// movingPatience bounds how long an append waits for its channel's slot to finish moving
	// to another master (a reshard moves a slot's keys in a few milliseconds).
	movingPatience = 2 * time.Second
	movingPause    = 20 * time.Millisecond
)

// isMoving reports a refusal that means the command did not run because its slot is moving.
func isMoving(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	return strings.HasPrefix(msg, "TRYAGAIN") || strings.HasPrefix(msg, "MOVED ") || strings.HasPrefix(msg, "ASK ")
}

// sleep waits d unless the store closes first.
func (s *Store) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// noRetryCmd stops go-redis from resending a pipeline after a transport error: Redis may
// already have run the scripts, and running them twice would append twice. A failed batch is
// reported as store.ErrUnconfirmed instead (appendErr), which callers settle by retrying with
// their idempotency keys.
type noRetryCmd struct{ *redis.Cmd }

func (noRetryCmd) NoRetry() bool { return true }

type noRetryIntCmd struct{ *redis.IntCmd }

func (noRetryIntCmd) NoRetry() bool { return true }

// An appendCall is one script call: the appends it carries, its command, and the WAIT that
// follows it on the same connection when replicas must confirm.
type appendCall struct {
	ops  []*appendOp
	cmd  *redis.Cmd
	wait *redis.IntCmd
}

// appendCalls splits ops into script calls: on one server as few as maxCallAppends allows, in
// their order; on a cluster one channel's appends per call (its keys share a slot), in their
// order within the channel.
func (s *Store) appendCalls(ops []*appendOp, withSource bool) []*appendCall {
	var groups [][]*appendOp
	if s.cluster == nil {
		for len(ops) > 0 {
			n := min(len(ops), maxCallAppends)
			groups, ops = append(groups, ops[:n:n]), ops[n:]
		}
	} else {
		at := make(map[string]int)
		for _, op := range ops {
			i, ok := at[op.req.Channel]
			if !ok || len(groups[i]) == maxCallAppends {
				i = len(groups)
				at[op.req.Channel] = i
				groups = append(groups, nil)
			}
			groups[i] = append(groups[i], op)
		}
	}
	calls := make([]*appendCall, len(groups))
	for i, g := range groups {
		nkeys := 0
		for _, op := range g {
			nkeys += len(op.keys)
		}
		args := make([]any, 0, 3+nkeys+6+7*len(g))
		if withSource {
			args = append(args, "eval", appendLua, nkeys)
		} else {
			args = append(args, "evalsha", appendScript.Hash(), nkeys)
		}
		for _, op := range g {
			for _, k := range op.keys {
				args = append(args, k)
			}
		}
		args = append(args, len(g), s.maxEvents, s.maxAgeMs, s.idemTTLMs, s.housekeepMs, s.waitFlag)
		for _, op := range g {
			args = append(args, op.argv...)
		}
		calls[i] = &appendCall{ops: g, cmd: redis.NewCmd(s.ctx, args...)}
	}
	return calls
}

// execAppends sends ops as script calls, with EVAL instead of EVALSHA when the script must be
// (re)loaded, and returns the calls with their answers.
func (s *Store) execAppends(ops []*appendOp, withSource bool) []*appendCall {
	calls := s.appendCalls(ops, withSource)
	if s.replicas == 0 {
		pipe := s.client.Pipeline()
		for _, c := range calls {
			_ = pipe.Process(s.ctx, noRetryCmd{c.cmd})
		}
		_, _ = pipe.Exec(s.ctx) // each command carries its own error
		return calls
	}
	// WAIT counts what replicas acknowledged of its own connection's writes, so each master's
	// calls and their WAIT share one pipeline on one connection (a cluster pipeline would
	// send a keyless WAIT to any node).
	groups := make(map[*redis.Client][]*appendCall)
	for _, c := range calls {
		m, err := s.masterFor(c.ops[0].keys[0])
		if err != nil {
			c.cmd.SetErr(err)
			continue
		}
		groups[m] = append(groups[m], c)
	}
	for m, group := range groups {
		pipe := m.Pipeline()
		for _, c := range group {
			_ = pipe.Process(s.ctx, noRetryCmd{c.cmd})
		}
		wait := redis.NewIntCmd(s.ctx, "wait", s.replicas, s.waitMs)
		_ = pipe.Process(s.ctx, noRetryIntCmd{wait})
		_, _ = pipe.Exec(s.ctx)
		for _, c := range group {
			c.wait = wait
		}
	}
	return calls
}

// finish turns a call's reply (and the replicas' count, when one was asked for) into each of
// its appends' answers and wakes their callers.
func (s *Store) finish(call *appendCall) {
	v, err := call.cmd.Result()
	if err != nil {
		err = s.appendErr(err)
	}
	replies, _ := v.([]any)
	if err == nil && len(replies) != len(call.ops) {
		err = fmt.Errorf("redisstore: append: unexpected reply %v", v)
	}
	var notReplicated error
	if call.wait != nil {
		if n, werr := call.wait.Result(); werr != nil || n < int64(s.replicas) {
			notReplicated = fmt.Errorf("redisstore: append: %w: %d of %d replicas confirmed within %s ms (%v)",
				store.ErrNotReplicated, n, s.replicas, s.waitMs, werr)
		}
	}
	for i, op := range call.ops {
		if op.err = err; err == nil {
			s.settle(op, replies[i])
		}
		if op.err == nil && notReplicated != nil {
			op.err = notReplicated
		}
		close(op.done)
	}
}

// settle reads one append's reply out of its call's.
func (s *Store) settle(op *appendOp, v any) {
	reply, ok := v.([]any)
	if !ok || len(reply) == 0 {
		op.err = fmt.Errorf("redisstore: append: unexpected reply %v", v)
		return
	}
	status, _ := reply[0].(string)
	switch {
	case status == "conflict":
		op.err = store.ErrIdempotencyConflict
		return
	case status == "err" && len(reply) == 2:
		msg, _ := reply[1].(string)
		op.err = s.appendErr(scriptError(msg))
		return
	case (status == "ok" || status == "dup") && len(reply) == 4:
	default:
		op.err = fmt.Errorf("redisstore: append: unexpected reply %v", v)
		return
	}
	epoch, _ := reply[1].(string)
	seq, err1 := toUint(reply[2])
	t, err2 := toUint(reply[3])
	if err := errors.Join(err1, err2); err != nil {
		op.err = fmt.Errorf("redisstore: append: %w", err)
		return
	}
	op.res = store.AppendResult{
		Event: store.Event{
			Channel:  op.req.Channel,
			Epoch:    epoch,
			Seq:      seq,
			Name:     op.req.Name,
			Data:     op.req.Data, // the caller's bytes: appended, not copied again
			Time:     int64(t),
			SocketID: op.req.SocketID,
		},
		Duplicate: status == "dup",
	}
}

// scriptError is a Redis error one append of a call met, reported in its reply rather than
// as the call's: it reads as the redis.Error it was, so it is classified the same way.
type scriptError string

func (e scriptError) Error() string { return string(e) }
func (scriptError) RedisError()     {}

// appendErr classifies a failed append by what its error proves. Only a failure that shows the
// script never ran is store.ErrUnavailable: no connection to send it on, or Redis refusing it
// before running it. Any other failure came after the command may have left — a timeout while
// Redis was hung, a connection lost before the answer — and is store.ErrUnconfirmed: Redis may
// have run it, or may still run it from its input buffer.
func (s *Store) appendErr(err error) error {
	var rerr redis.Error
	var nerr *net.OpError
	switch {
	case s.closed.Load() && errors.Is(err, redis.ErrClosed):
		return fmt.Errorf("redisstore: append: %w", store.ErrClosed)
	case errors.As(err, &rerr):
		// Redis answered: a refusal (LOADING, BUSY, OOM …) means the script did not run.
		return s.wrapErr(nil, "append", err)
	case errors.As(err, &nerr) && nerr.Op == "dial",
		errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrPoolExhausted), errors.Is(err, redis.ErrClosed):
		return fmt.Errorf("redisstore: append: %w: %w", store.ErrUnavailable, err)
	default:
		return fmt.Errorf("redisstore: append: %w: %w", store.ErrUnconfirmed, err)
	}
}

// toUint reads a number from a script reply, where it may come as an integer or a string.
func toUint(v any) (uint64, error) {
	switch n := v.(type) {
	case int64:
		if n < 0 {
			return 0, fmt.Errorf("negative number %d", n)
		}
		return uint64(n), nil
	case string:
		return strconv.ParseUint(n, 10, 64)
	default:
		return 0, fmt.Errorf("unexpected %T %v in a reply", v, v)
	}
}
