package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
)

// appendPipelines is how many batches may be in flight at once, each on its own connection:
// with one, appends wait a whole round trip behind the batch before them and Redis idles
// while replies travel; a few keep it busy. Order is unaffected: a caller's appends are
// sequential, and Redis runs scripts one at a time.
const appendPipelines = 4

// maxBatch bounds how many appends share one pipeline, so one batch's replies stay small and a
// burst is answered in slices rather than all at the end.
const maxBatch = 256

// maxCallAppends bounds how many appends one script call carries: Redis runs a script without
// serving anyone else, so a call stays well under a millisecond.
const maxCallAppends = 64

// An appendOp moves from queued to taken (the batcher sends it) or to abandoned (its caller
// gave up first, so it must never be sent): whoever wins the compare-and-swap decides.
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

// Append implements store.Store. Concurrent appends are coalesced: each of a few batchers sends
// whatever is queued as one pipeline, so one round trip carries many appends. A caller's own appends keep their order because each waits for the
// previous one's answer.
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
	op := &appendOp{req: req, done: make(chan struct{})}
	op.keys, op.argv = s.appendArgs(req)
	select {
	case s.ops <- op:
	case <-ctx.Done():
		return store.AppendResult{}, ctx.Err()
	case <-s.done:
		return store.AppendResult{}, store.ErrClosed
	}
	select {
	case <-op.done:
		return op.res, op.err
	case <-ctx.Done():
		if op.state.CompareAndSwap(opQueued, opAbandoned) {
			return store.AppendResult{}, ctx.Err()
		}
	case <-s.batcherDone:
		if op.state.CompareAndSwap(opQueued, opAbandoned) {
			return store.AppendResult{}, store.ErrClosed
		}
	}
	// Already sent: only Redis's answer says whether it was appended, so wait for it.
	<-op.done
	return op.res, op.err
}

// appendArgs builds an append's share of a script call in the caller's goroutine, keeping
// the batcher's share of the work small.
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

func (s *Store) batchLoop() {
	batch := make([]*appendOp, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case op := <-s.ops:
			batch = append(batch, op)
		case <-s.done:
			s.drainOps()
			return
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case op := <-s.ops:
				batch = append(batch, op)
			default:
				break fill
			}
		}
		s.runBatch(batch)
	}
}

// drainOps fails what is still queued when the store closes.
func (s *Store) drainOps() {
	for {
		select {
		case op := <-s.ops:
			if op.state.CompareAndSwap(opQueued, opTaken) {
				op.err = store.ErrClosed
				close(op.done)
			}
		default:
			return
		}
	}
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
