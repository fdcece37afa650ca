package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
)

// tail is one consistent view of a channel: its state and a page of its entries.
type tail struct {
	epoch  string // "" for a channel with no log
	head   uint64
	oldest uint64 // head+1 when nothing is retained
	events []store.Event
}

func (t *tail) headCursor() store.Cursor {
	if t.head == 0 || t.epoch == "" {
		return store.Cursor{}
	}
	return store.Cursor{Epoch: t.epoch, Seq: t.head}
}

// fromFirst asks readTails for the page that starts at the stream's first entry, aged or not.
const fromFirst = -1

// Read implements store.Store. The page is read together with the state PlanRead judges it
// by, starting where PlanRead usually decides (at the cursor, or at the first entry for a
// reader without one), so a read is one round trip unless the cursor turns out to be expired
// or foreign, or aged entries crowd the page.
func (s *Store) Read(ctx context.Context, channel string, after store.Cursor, limit int) (store.Page, error) {
	if s.closed.Load() {
		return store.Page{}, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return store.Page{}, err
	}
	if err := checkChannel(channel); err != nil {
		return store.Page{}, err
	}
	limit = max(limit, 0)
	start := int64(fromFirst)
	if after != store.Beginning && after.Epoch != "" && after.Seq > 0 && after.Seq <= math.MaxInt64 {
		start = int64(after.Seq)
	}
	for attempt := 0; ; attempt++ {
		tails, err := s.readTails(ctx, []string{channel}, []int64{start}, limit)
		if err != nil {
			return store.Page{}, s.wrapErr(ctx, "read", err)
		}
		t := &tails[0]
		head := t.headCursor()
		from, expired := store.PlanRead(after, head, t.oldest)
		page := store.Page{Head: head, Expired: expired}
		// Entries up to from are before the plan: aged, trimmed meanwhile, or the cursor's own.
		events := t.events
		for len(events) > 0 && events[0].Seq <= from {
			events = events[1:]
		}
		served := int64(from) == start || // read exactly where the plan starts
			(start == fromFirst && (len(events) == len(t.events) || len(t.events) < limit)) // nothing dropped, or the page reached the end
		// The state can move between two reads (appends trim, a channel starts over); after a
		// few tries the newest answer is close enough to the plan to be served.
		if served || head.Seq == 0 || limit == 0 || attempt == 3 {
			if len(events) > 0 {
				page.Events = events
			}
			return page, nil
		}
		start = int64(from)
	}
}

func (s *Store) readKeys(channel string) []string {
	return []string{s.key(channel, "s"), s.key(channel, "m")}
}

// readTails reads, for each channel, its state and up to limit entries after afters[i] (or
// from its first entry, for fromFirst), in one MULTI so each page agrees with its state: a log
// that started over between two separate reads would otherwise pass new entries off under the
// old epoch. It is one round trip; the loop uses it to catch up many channels at once, so keep
// the channels few (catchUpChannels) — the MULTI holds Redis for all of them.
//
// A MULTI cannot span cluster slots, so on a cluster each channel is its own MULTI, sent at
// once.
func (s *Store) readTails(ctx context.Context, channels []string, afters []int64, limit int) ([]tail, error) {
	if s.cluster != nil && len(channels) > 1 {
		tails := make([]tail, len(channels))
		errs := make([]error, len(channels))
		var wg sync.WaitGroup
		for i := range channels {
			wg.Go(func() {
				var t []tail
				if t, errs[i] = s.readTails(ctx, channels[i:i+1], afters[i:i+1], limit); errs[i] == nil {
					tails[i] = t[0]
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		return tails, nil
	}
	run := func(withSource bool) ([]*redis.Cmd, []*redis.Cmd, error) {
		pipe := s.client.TxPipeline()
		states := make([]*redis.Cmd, len(channels))
		pages := make([]*redis.Cmd, len(channels))
		for i, ch := range channels {
			keys := s.readKeys(ch)
			if withSource {
				states[i] = stateScript.Eval(ctx, pipe, keys, s.maxAgeMs)
			} else {
				states[i] = stateScript.EvalSha(ctx, pipe, keys, s.maxAgeMs)
			}
			if limit > 0 {
				start := "-"
				if afters[i] != fromFirst {
					start = "(" + strconv.FormatInt(afters[i], 10) + "-0"
				}
				pages[i] = redis.NewCmd(ctx, "xrange", keys[0], start, "+", "count", limit)
				_ = pipe.Process(ctx, pages[i])
			}
		}
		_, err := pipe.Exec(ctx)
		return states, pages, err
	}
	states, pages, err := run(false)
	if err != nil && strings.Contains(err.Error(), "NOSCRIPT") {
		// The server lacks the script: one that restarted, or a replica just promoted. The
		// source goes with the retry rather than a SCRIPT LOAD first, which on a cluster
		// reaches the masters of a topology that may be stale during a failover. Read-only,
		// so running the transaction again is harmless.
		states, pages, err = run(true)
	}
	if err != nil {
		return nil, err
	}
	tails := make([]tail, len(channels))
	for i := range channels {
		var page any
		if pages[i] != nil {
			page = pages[i].Val()
		}
		if tails[i], err = parseTail(channels[i], states[i].Val(), page); err != nil {
			return nil, err
		}
	}
	return tails, nil
}

func parseTail(channel string, state, page any) (tail, error) {
	reply, ok := state.([]any)
	if !ok || len(reply) != 3 {
		return tail{}, fmt.Errorf("unexpected state reply %v", state)
	}
	var t tail
	t.epoch, _ = reply[0].(string)
	var err error
	if t.head, err = toUint(reply[1]); err != nil {
		return tail{}, err
	}
	if t.oldest, err = toUint(reply[2]); err != nil {
		return tail{}, err
	}
	entries, _ := page.([]any)
	if len(entries) > 0 && t.epoch != "" {
		t.events = make([]store.Event, len(entries))
		for i, e := range entries {
			if t.events[i], err = parseEntry(channel, t.epoch, e); err != nil {
				return tail{}, err
			}
		}
	}
	return t, nil
}

// parseEntry decodes one stream entry: [id, [field, value, ...]].
func parseEntry(channel, epoch string, v any) (store.Event, error) {
	e, ok := v.([]any)
	if !ok || len(e) != 2 {
		return store.Event{}, fmt.Errorf("unexpected stream entry %v", v)
	}
	id, _ := e[0].(string)
	seqText, _, _ := strings.Cut(id, "-")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil {
		return store.Event{}, fmt.Errorf("stream entry id %q: %w", id, err)
	}
	ev := store.Event{Channel: channel, Epoch: epoch, Seq: seq}
	fields, _ := e[1].([]any)
	for i := 0; i+1 < len(fields); i += 2 {
		name, _ := fields[i].(string)
		value, _ := fields[i+1].(string)
		switch name {
		case "t":
			ev.Time, _ = strconv.ParseInt(value, 10, 64)
		case "n":
			ev.Name = value
		case "d":
			ev.Data = json.RawMessage(value)
		case "s":
			ev.SocketID = value
		}
	}
	return ev, nil
}

// Heads implements store.Store, with one pipeline for all the channels.
func (s *Store) Heads(ctx context.Context, channels []string) ([]store.Cursor, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	heads := make([]store.Cursor, len(channels))
	if len(channels) == 0 {
		return heads, nil
	}
	for _, ch := range channels {
		if err := checkChannel(ch); err != nil {
			return nil, err
		}
	}
	got, err := s.readHeads(ctx, channels)
	if err != nil {
		return nil, s.wrapErr(ctx, "heads", err)
	}
	return got, nil
}

func (s *Store) readHeads(ctx context.Context, channels []string) ([]store.Cursor, error) {
	pipe := s.client.Pipeline()
	cmds := make([]*redis.SliceCmd, len(channels))
	for i, ch := range channels {
		cmds[i] = pipe.HMGet(ctx, s.key(ch, "m"), "e", "s")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	heads := make([]store.Cursor, len(channels))
	for i, cmd := range cmds {
		vals := cmd.Val()
		epoch, _ := vals[0].(string)
		seqText, _ := vals[1].(string)
		if epoch == "" || seqText == "" {
			continue
		}
		seq, err := strconv.ParseUint(seqText, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("channel %s: sequence %q: %w", channels[i], seqText, err)
		}
		heads[i] = store.Cursor{Epoch: epoch, Seq: seq}
	}
	return heads, nil
}

// Stats implements store.Store. One script reads the channel's meta hash and finds, by binary
// search over the sequence (entry ids are <seq>-0, contiguous from the oldest retained one),
// the first event appended at or after since: O(log n) lookups however busy the channel.
func (s *Store) Stats(ctx context.Context, ch string, since time.Time) (store.ChannelStats, error) {
	if s.closed.Load() {
		return store.ChannelStats{}, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return store.ChannelStats{}, err
	}
	if err := checkChannel(ch); err != nil {
		return store.ChannelStats{}, err
	}
	v, err := statsScript.Run(ctx, s.client, []string{s.key(ch, "s"), s.key(ch, "m")}, since.UnixMilli()).Result()
	if err != nil {
		return store.ChannelStats{}, s.wrapErr(ctx, "stats", err)
	}
	f, ok := v.([]any)
	if !ok || len(f) != 7 {
		return store.ChannelStats{}, fmt.Errorf("redisstore: stats: unexpected reply %v", v)
	}
	var n [6]int64
	for i := range n {
		n[i], _ = f[i+1].(int64)
	}
	epoch, _ := f[0].(string)
	st := store.ChannelStats{Retained: int(n[1]), Oldest: uint64(n[2]), Recent: int(n[5])}
	if n[0] > 0 {
		st.Head = store.Cursor{Epoch: epoch, Seq: uint64(n[0])}
	}
	if st.Retained > 0 {
		st.OldestTime, st.NewestTime = time.UnixMilli(n[3]), time.UnixMilli(n[4])
	}
	return st, nil
}

// statsLua: KEYS[1] the stream, KEYS[2] the meta hash, ARGV[1] since (ms) → {epoch, head seq,
// retained, oldest seq, oldest time, newest time, events at or after since}.
const statsLua = `
local meta = redis.call('HMGET', KEYS[2], 'e', 's')
local head = tonumber(meta[2] or '0') or 0
local len = redis.call('XLEN', KEYS[1])
if len == 0 then
  return {meta[1] or '', head, 0, 0, 0, 0, 0}
end
local function at(seq)
  local e = redis.call('XRANGE', KEYS[1], seq .. '-0', seq .. '-0')
  if #e == 0 then return nil end
  local f = e[1][2]
  for i = 1, #f, 2 do
    if f[i] == 't' then return tonumber(f[i + 1]) end
  end
  return nil
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
local oldest = tonumber(string.match(first[1], '^(%d+)'))
local newest = tonumber(string.match(last[1], '^(%d+)'))
local oldestT, newestT = at(oldest), at(newest)
local since = tonumber(ARGV[1])
local recent = 0
if newestT and newestT >= since then
  -- the smallest seq in [oldest, newest] appended at or after since
  local lo, hi = oldest, newest
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local t = at(mid)
    if t and t >= since then hi = mid else lo = mid + 1 end
  end
  recent = newest - lo + 1
end
return {meta[1] or '', head, len, oldest, oldestT or 0, newestT or 0, recent}
`

var statsScript = redis.NewScript(statsLua)
