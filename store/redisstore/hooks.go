package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
)

// HookQueue keeps one webhook endpoint's outgoing events in Redis, shared by every node of the
// deployment. Like Registry it is independent of Store. Its keys share one hash tag, so each
// script touches one cluster slot:
//
//	<prefix>{#hooks:<name>}:q  stream: the queued events (field "p"), read through the
//	                           consumer group "deliver"; acknowledged entries are deleted
//	<prefix>{#hooks:<name>}:d  zset: key → when its delayed payload is due (unix ms, Redis clock)
//	<prefix>{#hooks:<name>}:p  hash: key → the delayed payload
//	<prefix>{#hooks:<name>}:l  string: the consumer that delivers (the lease), expiring
//
// A stream with a consumer group gives the contract directly: XREADGROUP hands each entry to
// one consumer, the pending list remembers who holds what, and XAUTOCLAIM moves what a dead
// node held to a live one once it has been idle for the stale time. Delayed payloads move to
// the stream in a script that reads the time from Redis, so nodes with skewed clocks agree on
// when a channel's vacancy is due, and AddOrCancel's check-and-change is one script. The lease
// key lets one consumer deliver at a time, so events leave in the stream's order.
type HookQueue struct {
	client redis.UniversalClient
	keys   []string // q, d, p, l
	stale  time.Duration
	maxLen int
	group  atomic.Bool // the consumer group is known to exist
}

// HookQueueOptions configures a HookQueue.
type HookQueueOptions struct {
	// Client is the server connection, required; HookQueue never closes it.
	Client redis.UniversalClient
	// Prefix starts every key, as Options.Prefix does for Store. No braces.
	Prefix string
	// Name tells the endpoints of one prefix apart; no braces.
	Name string
	// Stale is how long a claim holds without Hold; default store.DefaultHookStale.
	Stale time.Duration
	// MaxLen bounds the stream (trimmed lazily, as XADD MAXLEN ~ does); default
	// store.DefaultHookMaxLen.
	MaxLen int
}

var _ store.HookQueue = (*HookQueue)(nil)

const hookGroup = "deliver"

// NewHookQueue returns a HookQueue. Like New, it does not contact Redis.
func NewHookQueue(opts HookQueueOptions) (*HookQueue, error) {
	if opts.Client == nil {
		return nil, errors.New("redisstore: hook queue needs a Client")
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.ContainsAny(prefix+opts.Name, "{}") {
		return nil, fmt.Errorf("redisstore: prefix or name %q contains a brace", prefix+opts.Name)
	}
	base := prefix + "{#hooks:" + opts.Name + "}:"
	q := &HookQueue{client: opts.Client, keys: []string{base + "q", base + "d", base + "p", base + "l"}, stale: opts.Stale, maxLen: opts.MaxLen}
	if q.stale <= 0 {
		q.stale = store.DefaultHookStale
	}
	if q.maxLen <= 0 {
		q.maxLen = store.DefaultHookMaxLen
	}
	return q, nil
}

// Add implements store.HookQueue.
func (q *HookQueue) Add(ctx context.Context, payloads ...[]byte) error {
	if len(payloads) == 0 {
		return nil
	}
	pipe := q.client.Pipeline()
	for _, p := range payloads {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: q.keys[0], MaxLen: int64(q.maxLen), Approx: true, Values: []any{"p", p}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return wrapErr(ctx, "hook add", err)
	}
	return nil
}

// AddAfter implements store.HookQueue.
func (q *HookQueue) AddAfter(ctx context.Context, key string, payload []byte, delay time.Duration) error {
	if _, err := evalOnce(ctx, q.client, hookDelayScript, hookDelayLua, q.keys, key, payload, max(delay.Milliseconds(), 0)); err != nil {
		return wrapErr(ctx, "hook add after", err)
	}
	return nil
}

// AddOrCancel implements store.HookQueue.
func (q *HookQueue) AddOrCancel(ctx context.Context, key string, payload []byte) (bool, error) {
	v, err := evalOnce(ctx, q.client, hookAddOrCancelScript, hookAddOrCancelLua, q.keys, key, payload, q.maxLen)
	if err != nil {
		return false, wrapErr(ctx, "hook add or cancel", err)
	}
	n, _ := v.(int64)
	return n == 1, nil
}

// promote moves the delayed payloads whose time came to the stream.
func (q *HookQueue) promote(ctx context.Context) error {
	if _, err := evalOnce(ctx, q.client, hookPromoteScript, hookPromoteLua, q.keys, q.maxLen); err != nil {
		return wrapErr(ctx, "hook promote", err)
	}
	return nil
}

// ensureGroup creates the consumer group (and the stream) unless it is known to exist. From
// "0": what was queued before any node read the queue is delivered too.
func (q *HookQueue) ensureGroup(ctx context.Context) error {
	if q.group.Load() {
		return nil
	}
	err := q.client.XGroupCreateMkStream(ctx, q.keys[0], hookGroup, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return wrapErr(ctx, "hook group", err)
	}
	q.group.Store(true)
	return nil
}

// hookPoll bounds one blocking read, so delayed payloads that come due are seen while a
// consumer waits.
const hookPoll = 500 * time.Millisecond

// blockFor is the BLOCK of a read that may wait left. Redis counts BLOCK in whole
// milliseconds and takes 0 as "forever", and go-redis truncates: under a millisecond left, a
// read would wait until the next entry came (or go-redis gave up ten seconds later with an
// i/o timeout), so it waits one millisecond instead.
func blockFor(left time.Duration) time.Duration {
	return max(min(left, hookPoll), time.Millisecond)
}

// Claim implements store.HookQueue.
func (q *HookQueue) Claim(ctx context.Context, consumer string, max int, wait time.Duration) ([]store.Hook, error) {
	if max <= 0 {
		return nil, nil
	}
	deadline := time.Now().Add(wait)
	for {
		if err := q.ensureGroup(ctx); err != nil {
			return nil, err
		}
		if err := q.promote(ctx); err != nil {
			return nil, err
		}
		lead, err := evalOnce(ctx, q.client, hookLeadScript, hookLeadLua, q.keys, consumer, q.stale.Milliseconds(), 1)
		if err != nil {
			return nil, wrapErr(ctx, "hook lease", err)
		}
		if n, _ := lead.(int64); n != 1 {
			// Another consumer delivers: wait a little, and ask again.
			left := time.Until(deadline)
			if left <= 0 {
				return nil, nil
			}
			t := time.NewTimer(min(left, hookPoll))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
			continue
		}
		msgs, _, err := q.client.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: q.keys[0], Group: hookGroup,
			Consumer: consumer, MinIdle: q.stale, Start: "0-0", Count: int64(max)}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			if q.lostGroup(err) {
				continue
			}
			return nil, wrapErr(ctx, "hook autoclaim", err)
		}
		out := hooksOf(msgs, nil)
		if len(out) < max {
			block := time.Duration(-1) // no BLOCK: return what there is
			if left := time.Until(deadline); len(out) == 0 && left > 0 {
				block = blockFor(left)
			}
			streams, err := q.client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: hookGroup, Consumer: consumer,
				Streams: []string{q.keys[0], ">"}, Count: int64(max - len(out)), Block: block}).Result()
			switch {
			case errors.Is(err, redis.Nil):
			case err != nil:
				if q.lostGroup(err) {
					continue
				}
				return nil, wrapErr(ctx, "hook read", err)
			default:
				for _, s := range streams {
					out = hooksOf(s.Messages, out)
				}
			}
		}
		if len(out) > 0 || !time.Now().Before(deadline) {
			return out, nil
		}
	}
}

// lostGroup reports an error that says the stream or its group is gone (every key was
// deleted): the group is made again on the next try.
func (q *HookQueue) lostGroup(err error) bool {
	if strings.HasPrefix(err.Error(), "NOGROUP") {
		q.group.Store(false)
		return true
	}
	return false
}

func hooksOf(msgs []redis.XMessage, out []store.Hook) []store.Hook {
	for _, m := range msgs {
		p, ok := m.Values["p"].(string)
		if !ok {
			continue // trimmed away while pending
		}
		out = append(out, store.Hook{ID: m.ID, Payload: []byte(p)})
	}
	return out
}

// Hold implements store.HookQueue.
func (q *HookQueue) Hold(ctx context.Context, consumer string, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := evalOnce(ctx, q.client, hookLeadScript, hookLeadLua, q.keys, consumer, q.stale.Milliseconds(), 0); err != nil {
		return wrapErr(ctx, "hook lease", err)
	}
	err := q.client.XClaimJustID(ctx, &redis.XClaimArgs{Stream: q.keys[0], Group: hookGroup, Consumer: consumer, Messages: ids}).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return wrapErr(ctx, "hook hold", err)
	}
	return nil
}

// Release implements store.HookQueue: the lease goes if consumer holds it, and its pending
// entries are marked idle for the stale time (XCLAIM … IDLE), so the next consumer's
// XAUTOCLAIM takes them at once.
func (q *HookQueue) Release(ctx context.Context, consumer string) error {
	if _, err := evalOnce(ctx, q.client, hookReleaseScript, hookReleaseLua, q.keys, consumer); err != nil {
		return wrapErr(ctx, "hook release", err)
	}
	pending, err := q.client.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: q.keys[0], Group: hookGroup,
		Start: "-", End: "+", Count: int64(q.maxLen), Consumer: consumer}).Result()
	if err != nil {
		if q.lostGroup(err) {
			return nil // nothing pending: the queue is gone
		}
		return wrapErr(ctx, "hook release", err)
	}
	if len(pending) == 0 {
		return nil
	}
	ids := make([]any, 0, len(pending))
	for _, p := range pending {
		ids = append(ids, p.ID)
	}
	args := append([]any{"xclaim", q.keys[0], hookGroup, consumer, 0}, ids...)
	args = append(args, "idle", q.stale.Milliseconds(), "justid")
	if err := q.client.Do(ctx, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return wrapErr(ctx, "hook release", err)
	}
	return nil
}

// Ack implements store.HookQueue.
func (q *HookQueue) Ack(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	pipe := q.client.TxPipeline()
	pipe.XAck(ctx, q.keys[0], hookGroup, ids...)
	pipe.XDel(ctx, q.keys[0], ids...)
	if _, err := pipe.Exec(ctx); err != nil {
		return wrapErr(ctx, "hook ack", err)
	}
	return nil
}

// Len implements store.HookQueue.
func (q *HookQueue) Len(ctx context.Context) (int, error) {
	if err := q.promote(ctx); err != nil {
		return 0, err
	}
	n, err := q.client.XLen(ctx, q.keys[0]).Result()
	if err != nil {
		return 0, wrapErr(ctx, "hook len", err)
	}
	return int(n), nil
}

// hookLuaCommon starts every hook script: KEYS[1] the stream, KEYS[2] the due zset, KEYS[3]
// the delayed payloads; promote() moves what came due (up to 100 a call) to the stream.
const hookLuaCommon = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function promote(maxlen)
  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
  for _, k in ipairs(due) do
    local p = redis.call('HGET', KEYS[3], k)
    if p then redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'p', p) end
    redis.call('ZREM', KEYS[2], k)
    redis.call('HDEL', KEYS[3], k)
  end
end
`

// ARGV[1] maxlen.
const hookPromoteLua = hookLuaCommon + `
promote(ARGV[1])
return 0
`

// ARGV[1] key, ARGV[2] payload, ARGV[3] delay (ms).
const hookDelayLua = hookLuaCommon + `
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 0
`

// ARGV[1] key, ARGV[2] payload, ARGV[3] maxlen → 1 if queued, 0 if a delay was withdrawn (or
// the payload is empty: withdraw only).
// What came due is queued first: a vacancy whose time came can no longer be withdrawn.
const hookAddOrCancelLua = hookLuaCommon + `
promote(ARGV[3])
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  return 0
end
if ARGV[2] == '' then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'p', ARGV[2])
return 1
`

// hookLeadLua: KEYS[4] the lease; ARGV[1] consumer, ARGV[2] stale (ms), ARGV[3] 1 to take a
// free lease → 1 if consumer holds it (renewed), else 0.
const hookLeadLua = `
local cur = redis.call('GET', KEYS[4])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
  return 1
end
if not cur and ARGV[3] == '1' then
  redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`

// hookReleaseLua: KEYS[4] the lease; ARGV[1] consumer → 1 if it held the lease (now free).
const hookReleaseLua = `
if redis.call('GET', KEYS[4]) == ARGV[1] then
  redis.call('DEL', KEYS[4])
  return 1
end
return 0
`

var (
	hookReleaseScript     = redis.NewScript(hookReleaseLua)
	hookLeadScript        = redis.NewScript(hookLeadLua)
	hookPromoteScript     = redis.NewScript(hookPromoteLua)
	hookDelayScript       = redis.NewScript(hookDelayLua)
	hookAddOrCancelScript = redis.NewScript(hookAddOrCancelLua)
)
