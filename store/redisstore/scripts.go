package redisstore

import "github.com/redis/go-redis/v9"

// luaFirstYoung is shared by both scripts. A channel's entries are contiguous sequences
// (trimming only ever removes the oldest) and their times never decrease, so the first entry
// young enough can be found by bisection: a handful of lookups even when a long idle period left
// a whole history behind the age limit. A missing entry counts as old.
const luaFirstYoung = `
local function seqOf(id)
  return tonumber(string.match(id, '^(%d+)'))
end

-- The smallest sequence in [lo, hi) whose entry is at least cutoff ms old, or hi if none is.
local function firstYoung(stream, lo, hi, cutoff)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local id = string.format('%d-0', mid)
    local e = redis.call('XRANGE', stream, id, id)[1]
    if e and tonumber(e[2][2]) >= cutoff then
      hi = mid
    else
      lo = mid + 1
    end
  end
  return lo
end

local function now()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
`

// appendLua appends a batch of events, each atomically: the idempotency check, the sequence,
// the epoch, both retention limits, the expiry of a forgotten channel, the idempotency record
// and the live notice, and a new epoch after a failover that may have lost appends. Doing it in
// one script is what lets the notice carry the sequence, and what guarantees no notice is
// published for an entry that does not exist yet. One call carries many appends because the
// call itself (its setup, the replication check, the round trip) cost more than the appends'
// own commands: one event per call spent two thirds of Redis's time outside them.
//
// On a cluster every key of one call must be in one slot, so a call there carries the appends
// of one channel only.
//
//	ARGV[1] number of appends, ARGV[2] max events, ARGV[3] max age (ms),
//	ARGV[4] idempotency TTL (ms), ARGV[5] housekeeping interval (ms),
//	ARGV[6] "1" when a WAIT for replicas follows;
//	then 7 per append: key count (2 or 3), epoch candidate, fingerprint, name, data, socket id,
//	notice channel (empty: publish nothing);
//	KEYS, per append in the same order: stream, meta, and the idempotency record with a key.
//
// It returns one reply per append: {'ok', epoch, seq, time}, {'dup', epoch, seq, time},
// {'conflict'}, or {'err', message} when a command of that append failed (the appends before
// and after it are unaffected).
const appendLua = luaFirstYoung + `
local maxEvents, maxAge, idemTTL = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local slack, waitFollows = tonumber(ARGV[5]), ARGV[6] == '1'
local t0 = now()
-- Which master history wrote a channel last. A replica promoted after its master failed has a
-- new replication id and keeps the old one as replid2; a channel last written under that old
-- id may have had appends acknowledged on the failed master that never reached this one, and
-- continuing its sequence would hand their ids to other events. So such a channel starts a new
-- epoch, and readers resync instead of silently missing or mixing events. A channel moved here
-- by resharding was written under some unrelated id and keeps its epoch.
local repl = redis.call('INFO', 'replication')
local replid = string.match(repl, 'master_replid:(%x+)')
local replid2 = string.match(repl, 'master_replid2:(%x+)')

local function appendOne(stream, meta, idem, candidate, fp, name, data, sid, notice)
  if idem then
    local rec = redis.call('GET', idem)
    if rec then
      local rfp, epoch, seq, t = string.match(rec, '^([^:]*):([^:]*):(%d+):(%d+)$')
      if rfp ~= fp then
        return {'conflict'}
      end
      if waitFollows then
        -- A write, so that the WAIT after this script covers the replication of the original
        -- append, which came before it in the master's replication stream.
        redis.call('PEXPIRE', idem, idemTTL)
      end
      return {'dup', epoch, seq, t}
    end
  end

  local t = t0
  local state = redis.call('HMGET', meta, 'e', 's', 't', 'x', 'r')
  local epoch, seq = state[1], 1
  if epoch and state[5] and state[5] ~= replid and state[5] == replid2 then
    epoch = nil
  end
  if epoch then
    seq = tonumber(state[2]) + 1
    -- Event times never go backwards, even if the server's clock does.
    local last = tonumber(state[3])
    if last and t < last then
      t = last
    end
  else
    -- A new incarnation: the epoch comes from the caller so it is random, and whatever is left
    -- of an earlier incarnation's stream (its meta expired first) must not mix with it.
    epoch = candidate
    redis.call('DEL', stream)
  end
  local ts = string.format('%d', t)
  local ss = string.format('%d', seq)

  -- Housekeeping (the age trim and the expiry refresh) runs at most once per slack ms per
  -- channel: on a busy channel it would otherwise be a third of every append's cost. The keys
  -- expire MaxAge + slack after it ran, so a channel is never forgotten before it has been
  -- idle for MaxAge, and at most slack later; reads filter by age themselves, so a lazier trim
  -- is invisible to them.
  local kept = tonumber(state[4])
  local housekeep = not kept or t - kept >= slack
  if state[5] ~= replid then
    redis.call('HSET', meta, 'r', replid)
  end
  if housekeep then
    redis.call('HSET', meta, 's', ss, 'e', epoch, 't', ts, 'x', ts)
    -- Age retention: peek at the oldest entry; only when it is too old look for the first
    -- young one and drop everything before it.
    local cutoff = t - maxAge
    local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    if first and tonumber(first[2][2]) < cutoff then
      local keep = firstYoung(stream, seqOf(first[1]) + 1, seq, cutoff)
      redis.call('XTRIM', stream, 'MINID', string.format('%d-0', keep))
    end
  else
    redis.call('HSET', meta, 's', ss, 'e', epoch, 't', ts)
  end

  redis.call('XADD', stream, 'MAXLEN', '~', maxEvents, ss .. '-0', 't', ts, 'n', name, 'd', data, 's', sid)
  if housekeep then
    redis.call('PEXPIRE', stream, maxAge + slack)
    redis.call('PEXPIRE', meta, maxAge + slack)
  end

  if idem then
    redis.call('SET', idem, fp .. ':' .. epoch .. ':' .. ss .. ':' .. ts, 'PX', idemTTL)
  end
  if notice ~= '' then
    redis.call('SPUBLISH', notice, epoch .. ':' .. ss .. ':' .. ts .. ':' .. #name .. ':' .. #sid .. ':' ..
      name .. sid .. data)
  end
  return {'ok', epoch, ss, ts}
end

local replies = {}
local k, a = 1, 7
for i = 1, tonumber(ARGV[1]) do
  local nkeys = tonumber(ARGV[a])
  local idem = nil
  if nkeys == 3 then
    idem = KEYS[k + 2]
  end
  local ok, reply = pcall(appendOne, KEYS[k], KEYS[k + 1], idem,
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
  if not ok then
    if type(reply) == 'table' and reply.err then
      reply = reply.err
    end
    reply = {'err', tostring(reply)}
  end
  replies[i] = reply
  k, a = k + nkeys, a + 7
end
return replies
`

var appendScript = redis.NewScript(appendLua)

// stateLua reads what store.PlanRead needs: a channel's epoch, head and oldest retained
// sequence, where entries past the age limit do not count whether or not an append has trimmed
// them yet. The entries themselves are read with a plain XRANGE in the same MULTI: passing
// them through Lua would cost Redis several times what the XRANGE does.
//
//	KEYS[1] stream, KEYS[2] meta
//	ARGV[1] max age (ms)
//
// It returns {epoch, head, oldest}; epoch is empty for an unknown channel, and oldest is
// head+1 when nothing is retained.
const stateLua = luaFirstYoung + `
local stream, meta = KEYS[1], KEYS[2]
local state = redis.call('HMGET', meta, 'e', 's')
if not state[1] then
  return {'', 0, 1}
end
local epoch, head = state[1], tonumber(state[2])
local oldest = head + 1
local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
if first then
  oldest = seqOf(first[1])
  local cutoff = now() - tonumber(ARGV[1])
  if tonumber(first[2][2]) < cutoff then
    oldest = firstYoung(stream, oldest + 1, head + 1, cutoff)
  end
end
return {epoch, head, oldest}
`

var stateScript = redis.NewScript(stateLua)
