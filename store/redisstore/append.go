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

// An appendOp moves from queued to taken (the batcher sends it) or to abandoned (its caller
// gave up first, so it must never be sent): whoever wins the compare-and-swap decides.
const (
	opQueued int32 = iota
	opTaken
	opAbandoned
)

type appendOp struct {
	req   store.AppendRequest
	args  []any // the EVALSHA command; args[1] is the script's SHA
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
	op := &appendOp{req: req, args: s.appendArgs(req), done: make(chan struct{})}
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

// appendArgs builds the script call in the caller's goroutine, keeping the batcher's share of
// the work small.
func (s *Store) appendArgs(req store.AppendRequest) []any {
	nkeys, fp := 2, ""
	if req.IdempotencyKey != "" {
		nkeys, fp = 3, store.Fingerprint(req)
	}
	notice := s.noticeChannel(req.Channel)
	if s.suppressPublish.Load() {
		notice = ""
	}
	args := make([]any, 0, 3+nkeys+10)
	args = append(args, "evalsha", appendScript.Hash(), nkeys, s.key(req.Channel, "s"), s.key(req.Channel, "m"))
	if nkeys == 3 {
		args = append(args, s.key(req.Channel, "i:"+req.IdempotencyKey))
	}
	return append(args, store.NewEpoch(), s.maxEvents, s.maxAgeMs, s.idemTTLMs, fp,
		req.Name, []byte(req.Data), req.SocketID, notice, s.housekeepMs, s.waitFlag) // []byte: go-redis sends it as is, no copy
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
		cmds, waits := s.execAppends(live, withSource)
		var retry []*appendOp
		moving := false
		for i, op := range live {
			err := cmds[i].Err()
			switch {
			case err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT"):
				retry, withSource = append(retry, op), true
			case isMoving(err) && time.Now().Before(deadline):
				retry, moving = append(retry, op), true
			default:
				s.finish(op, cmds[i], waits[i])
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

// execAppends sends ops, with EVAL instead of EVALSHA when the script must be (re)loaded. It
// returns each op's command and, when replicas must confirm, the WAIT that follows it on the
// same connection.
func (s *Store) execAppends(ops []*appendOp, withSource bool) ([]*redis.Cmd, []*redis.IntCmd) {
	cmds := make([]*redis.Cmd, len(ops))
	waits := make([]*redis.IntCmd, len(ops))
	for i, op := range ops {
		args := op.args
		if withSource {
			args = append([]any{"eval", appendLua}, args[2:]...)
		}
		cmds[i] = redis.NewCmd(s.ctx, args...)
	}
	if s.replicas == 0 {
		pipe := s.client.Pipeline()
		for _, cmd := range cmds {
			_ = pipe.Process(s.ctx, noRetryCmd{cmd})
		}
		_, _ = pipe.Exec(s.ctx) // each command carries its own error
		return cmds, waits
	}
	// WAIT counts what replicas acknowledged of its own connection's writes, so each master's
	// appends and their WAIT share one pipeline on one connection (a cluster pipeline would
	// send a keyless WAIT to any node).
	groups := make(map[*redis.Client][]int)
	for i, op := range ops {
		c, err := s.masterFor(s.key(op.req.Channel, "s"))
		if err != nil {
			cmds[i].SetErr(err)
			continue
		}
		groups[c] = append(groups[c], i)
	}
	for c, idx := range groups {
		pipe := c.Pipeline()
		for _, i := range idx {
			_ = pipe.Process(s.ctx, noRetryCmd{cmds[i]})
		}
		wait := redis.NewIntCmd(s.ctx, "wait", s.replicas, s.waitMs)
		_ = pipe.Process(s.ctx, noRetryIntCmd{wait})
		_, _ = pipe.Exec(s.ctx)
		for _, i := range idx {
			waits[i] = wait
		}
	}
	return cmds, waits
}

// finish turns the script's reply (and the replicas' count, when one was asked for) into op's
// answer and wakes its caller.
func (s *Store) finish(op *appendOp, cmd *redis.Cmd, wait *redis.IntCmd) {
	defer close(op.done)
	defer func() {
		if op.err != nil || wait == nil {
			return
		}
		if n, err := wait.Result(); err != nil || n < int64(s.replicas) {
			op.err = fmt.Errorf("redisstore: append: %w: %d of %d replicas confirmed within %s ms (%v)",
				store.ErrNotReplicated, n, s.replicas, s.waitMs, err)
		}
	}()
	v, err := cmd.Result()
	if err != nil {
		op.err = s.appendErr(err)
		return
	}
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
