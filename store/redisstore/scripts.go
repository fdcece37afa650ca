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

// appendLua appends one event atomically: the idempotency check, the sequence, the epoch,
// both retention limits, the expiry of a forgotten channel, the idempotency record and the
// live notice, and a new epoch after a failover that may have lost appends. Doing it in one
// script is what lets the notice carry the sequence, and what guarantees no notice is published
// for an entry that does not exist yet.
//
//	KEYS[1] stream, KEYS[2] meta, KEYS[3] idempotency record (only with a key)
//	ARGV[1] epoch candidate, ARGV[2] max events, ARGV[3] max age (ms),
//	ARGV[4] idempotency TTL (ms), ARGV[5] fingerprint, ARGV[6] name, ARGV[7] data,
//	ARGV[8] socket id, ARGV[9] notice channel (empty: publish nothing),
//	ARGV[10] housekeeping interval (ms), ARGV[11] "1" when a WAIT for replicas follows
//
// It returns {'ok', epoch, seq, time}, {'dup', epoch, seq, time} or {'conflict'}.
const appendLua = luaFirstYoung + `
local stream, meta = KEYS[1], KEYS[2]
if KEYS[3] then
  local rec = redis.call('GET', KEYS[3])
  if rec then
    local fp, epoch, seq, t = string.match(rec, '^([^:]*):([^:]*):(%d+):(%d+)$')
    if fp ~= ARGV[5] then
      return {'conflict'}
    end
    if ARGV[11] == '1' then
      -- A write, so that the WAIT after this script covers the replication of the original
      -- append, which came before it in the master's replication stream.
      redis.call('PEXPIRE', KEYS[3], ARGV[4])
    end
    return {'dup', epoch, seq, t}
  end
end

local t = now()
local state = redis.call('HMGET', meta, 'e', 's', 't', 'x', 'r')
local epoch, seq = state[1], 1
-- Which master history wrote this channel last. A replica promoted after its master failed
-- has a new replication id and keeps the old one as replid2; a channel last written under
-- that old id may have had appends acknowledged on the failed master that never reached this
-- one, and continuing its sequence would hand their ids to other events. So such a channel
-- starts a new epoch, and readers resync instead of silently missing or mixing events. A
-- channel moved here by resharding was written under some unrelated id and keeps its epoch.
local repl = redis.call('INFO', 'replication')
local replid = string.match(repl, 'master_replid:(%x+)')
if epoch and state[5] and state[5] ~= replid and state[5] == string.match(repl, 'master_replid2:(%x+)') then
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
  epoch = ARGV[1]
  redis.call('DEL', stream)
end
local ts = string.format('%d', t)
local ss = string.format('%d', seq)

-- Housekeeping (the age trim and the expiry refresh) runs at most once per slack ms per
-- channel: on a busy channel it would otherwise be a third of every append's cost. The keys
-- expire MaxAge + slack after it ran, so a channel is never forgotten before it has been idle
-- for MaxAge, and at most slack later; reads filter by age themselves, so a lazier trim is
-- invisible to them.
local maxAge, slack = tonumber(ARGV[3]), tonumber(ARGV[10])
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

redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], ss .. '-0',
  't', ts, 'n', ARGV[6], 'd', ARGV[7], 's', ARGV[8])
if housekeep then
  redis.call('PEXPIRE', stream, maxAge + slack)
  redis.call('PEXPIRE', meta, maxAge + slack)
end

if KEYS[3] then
  redis.call('SET', KEYS[3], ARGV[5] .. ':' .. epoch .. ':' .. ss .. ':' .. ts, 'PX', ARGV[4])
end
if ARGV[9] ~= '' then
  local name, sid = ARGV[6], ARGV[8]
  redis.call('SPUBLISH', ARGV[9], epoch .. ':' .. ss .. ':' .. ts .. ':' .. #name .. ':' .. #sid .. ':' ..
    name .. sid .. ARGV[7])
end
return {'ok', epoch, ss, ts}
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
