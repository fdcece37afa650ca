package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
)

// Registry keeps the deployment's nodes and their sockets' per-channel counts in Redis. It is
// independent of Store, like Presence: it shares only a server and a key prefix with it.
//
// Every key sits under one hash tag, so each script touches one cluster slot (no channel is
// named "#nodes": '#' only starts user channels, so the tag never meets a channel's):
//
//	<prefix>{#nodes}:z       zset: node id → lease expiry (unix ms, Redis clock)
//	<prefix>{#nodes}:i       hash: node id → the node's info, as it gave it
//	<prefix>{#nodes}:c:<id>  hash: channel → the node's socket count there
//
// Each operation is one Lua script that reads the time from Redis (TIME), so nodes with skewed
// clocks agree on whose lease ran out. Writes first remove the nodes past their lease, then
// apply their own change, and report every channel whose deployment-wide occupancy changed:
// a channel is occupied while any live node has a count for it. Nothing here expires by
// itself: a deployment whose nodes all died leaves its entries until the next node
// registers and removes them, reporting their channels vacated then.
type Registry struct {
	client redis.UniversalClient
	keys   []string // KEYS of every script: the zset and the info hash
	counts string   // the count hashes' key, less the node id
}

// RegistryOptions configures a Registry.
type RegistryOptions struct {
	// Client is the server connection, required; Registry never closes it.
	Client redis.UniversalClient
	// Prefix starts every key, as Options.Prefix does for Store. No braces. Default
	// DefaultPrefix.
	Prefix string
}

var _ store.Registry = (*Registry)(nil)

// registryBatch bounds the channels one SetSubscriptions script writes, so a node sending
// all its counts at once does not hold Redis in one long script.
const registryBatch = 500

// NewRegistry returns a Registry. Like New, it does not contact Redis.
func NewRegistry(opts RegistryOptions) (*Registry, error) {
	if opts.Client == nil {
		return nil, errors.New("redisstore: registry needs a Client")
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("redisstore: prefix %q contains a brace", prefix)
	}
	base := prefix + "{#nodes}:"
	return &Registry{client: opts.Client, keys: []string{base + "z", base + "i"}, counts: base + "c:"}, nil
}

// Register implements store.Registry.
func (r *Registry) Register(ctx context.Context, id string, info json.RawMessage, ttl time.Duration) (bool, []store.Occupancy, error) {
	if id == "" {
		return false, nil, errors.New("redisstore: empty node id")
	}
	if ttl <= 0 {
		ttl = store.DefaultNodeTTL
	}
	ttlMs := max(ttl.Milliseconds(), 1)
	v, err := evalOnce(ctx, r.client, registerScript, registerLua, r.keys, r.counts, id, string(info), ttlMs)
	if err != nil {
		return false, nil, wrapErr(ctx, "register", err)
	}
	status, changes, err := parseRegistryReply(v)
	if err != nil {
		return false, nil, fmt.Errorf("redisstore: register: %w", err)
	}
	return status == 1, changes, nil
}

// Deregister implements store.Registry.
func (r *Registry) Deregister(ctx context.Context, id string) ([]store.Occupancy, error) {
	v, err := evalOnce(ctx, r.client, deregisterScript, deregisterLua, r.keys, r.counts, id)
	if err != nil {
		return nil, wrapErr(ctx, "deregister", err)
	}
	_, changes, err := parseRegistryReply(v)
	if err != nil {
		return nil, fmt.Errorf("redisstore: deregister: %w", err)
	}
	return changes, nil
}

// SetSubscriptions implements store.Registry. Many channels go in batches, each its own
// script; the changes of those that ran are returned even when a later one fails.
func (r *Registry) SetSubscriptions(ctx context.Context, id string, counts map[string]int) ([]store.Occupancy, error) {
	names := make([]string, 0, len(counts))
	for ch := range counts {
		names = append(names, ch)
	}
	slices.Sort(names)
	var all []store.Occupancy
	for len(names) > 0 {
		batch := names[:min(len(names), registryBatch)]
		names = names[len(batch):]
		args := make([]any, 0, 2+2*len(batch))
		args = append(args, r.counts, id)
		for _, ch := range batch {
			args = append(args, ch, max(counts[ch], 0))
		}
		v, err := evalOnce(ctx, r.client, setSubscriptionsScript, setSubscriptionsLua, r.keys, args...)
		if err != nil {
			return all, wrapErr(ctx, "set subscriptions", err)
		}
		status, changes, err := parseRegistryReply(v)
		all = append(all, changes...)
		switch {
		case err != nil:
			return all, fmt.Errorf("redisstore: set subscriptions: %w", err)
		case status < 0:
			return all, fmt.Errorf("redisstore: set subscriptions of node %q: %w", id, store.ErrNoNode)
		}
	}
	return all, nil
}

// Nodes implements store.Registry.
func (r *Registry) Nodes(ctx context.Context) ([]store.Node, error) {
	v, err := nodesScript.Run(ctx, r.client, r.keys).Result()
	if err != nil {
		return nil, wrapErr(ctx, "nodes", err)
	}
	flat, ok := v.([]any)
	if !ok || len(flat)%3 != 0 {
		return nil, fmt.Errorf("redisstore: nodes: unexpected reply %T", v)
	}
	out := make([]store.Node, 0, len(flat)/3)
	for i := 0; i < len(flat); i += 3 {
		id, _ := flat[i].(string)
		ms, err := strconv.ParseInt(fmt.Sprint(flat[i+1]), 10, 64)
		if id == "" || err != nil {
			return nil, fmt.Errorf("redisstore: nodes: bad entry %v %v", flat[i], flat[i+1])
		}
		n := store.Node{ID: id, Expires: time.UnixMilli(ms)}
		if s, ok := flat[i+2].(string); ok && s != "" {
			n.Info = json.RawMessage(s)
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b store.Node) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Subscriptions implements store.Registry.
func (r *Registry) Subscriptions(ctx context.Context, channel string) (map[string]int, error) {
	v, err := subscriptionsScript.Run(ctx, r.client, r.keys, r.counts, channel).Result()
	if err != nil {
		return nil, wrapErr(ctx, "subscriptions", err)
	}
	return parseCounts(v)
}

// Occupied implements store.Registry.
func (r *Registry) Occupied(ctx context.Context, prefix string) (map[string]int, error) {
	v, err := occupiedScript.Run(ctx, r.client, r.keys, r.counts, prefix).Result()
	if err != nil {
		return nil, wrapErr(ctx, "occupied", err)
	}
	return parseCounts(v)
}

// parseRegistryReply reads {status, {channel, 0|1, …}}.
func parseRegistryReply(v any) (int64, []store.Occupancy, error) {
	reply, ok := v.([]any)
	if !ok || len(reply) != 2 {
		return 0, nil, fmt.Errorf("unexpected reply %v", v)
	}
	status, ok := reply[0].(int64)
	flat, ok2 := reply[1].([]any)
	if !ok || !ok2 || len(flat)%2 != 0 {
		return 0, nil, fmt.Errorf("unexpected reply %v", v)
	}
	var changes []store.Occupancy
	for i := 0; i < len(flat); i += 2 {
		ch, _ := flat[i].(string)
		occ, _ := flat[i+1].(int64)
		changes = append(changes, store.Occupancy{Channel: ch, Occupied: occ == 1})
	}
	return status, changes, nil
}

// parseCounts reads {name, count, …}.
func parseCounts(v any) (map[string]int, error) {
	flat, ok := v.([]any)
	if !ok || len(flat)%2 != 0 {
		return nil, fmt.Errorf("redisstore: unexpected reply %T", v)
	}
	out := make(map[string]int, len(flat)/2)
	for i := 0; i < len(flat); i += 2 {
		name, _ := flat[i].(string)
		n, err := strconv.Atoi(fmt.Sprint(flat[i+1]))
		if err != nil {
			return nil, fmt.Errorf("redisstore: bad count %v", flat[i+1])
		}
		out[name] = n
	}
	return out, nil
}

// registryLuaCommon starts every registry script: KEYS[1] is the lease zset, KEYS[2] the info
// hash, ARGV[1] the count hashes' key less the node id. It reads the clock, lists the live
// nodes, and defines how a node is removed; changes collects the flat channel, 0|1 reply.
const registryLuaCommon = `
local z, info, cpre = KEYS[1], KEYS[2], ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local changes = {}

local function live_nodes()
  return redis.call('ZRANGEBYSCORE', z, '(' .. now, '+inf')
end

-- occupied_elsewhere: whether a live node other than except has a count for ch.
local function occupied_elsewhere(live, ch, except)
  for _, id in ipairs(live) do
    if id ~= except and redis.call('HEXISTS', cpre .. id, ch) == 1 then
      return true
    end
  end
  return false
end

local function remove_node(live, id)
  local chans = redis.call('HKEYS', cpre .. id)
  redis.call('DEL', cpre .. id)
  redis.call('HDEL', info, id)
  redis.call('ZREM', z, id)
  table.sort(chans)
  for _, ch in ipairs(chans) do
    if not occupied_elsewhere(live, ch, id) then
      table.insert(changes, ch)
      table.insert(changes, 0)
    end
  end
end

local function expire_dead(live)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now)) do
    remove_node(live, id)
  end
end
`

// registerLua: ARGV[2] node id, ARGV[3] info, ARGV[4] lease (ms) → {1 if fresh else 0, changes}.
const registerLua = registryLuaCommon + `
local live = live_nodes()
expire_dead(live)
local id = ARGV[2]
local fresh = 0
if not redis.call('ZSCORE', z, id) then
  fresh = 1
  redis.call('DEL', cpre .. id)
end
redis.call('ZADD', z, now + tonumber(ARGV[4]), id)
redis.call('HSET', info, id, ARGV[3])
return {fresh, changes}
`

// deregisterLua: ARGV[2] node id → {0, changes}.
const deregisterLua = registryLuaCommon + `
local live = live_nodes()
expire_dead(live)
if redis.call('ZSCORE', z, ARGV[2]) then
  remove_node(live, ARGV[2])
end
return {0, changes}
`

// setSubscriptionsLua: ARGV[2] node id, then channel, count pairs → {0 | -1 (no such node),
// changes}.
const setSubscriptionsLua = registryLuaCommon + `
local live = live_nodes()
expire_dead(live)
local id = ARGV[2]
if not redis.call('ZSCORE', z, id) then
  return {-1, changes}
end
local key = cpre .. id
for i = 3, #ARGV, 2 do
  local ch, n = ARGV[i], tonumber(ARGV[i + 1])
  local had = redis.call('HEXISTS', key, ch) == 1
  if n > 0 then
    redis.call('HSET', key, ch, n)
    if not had and not occupied_elsewhere(live, ch, id) then
      table.insert(changes, ch)
      table.insert(changes, 1)
    end
  elseif had then
    redis.call('HDEL', key, ch)
    if not occupied_elsewhere(live, ch, id) then
      table.insert(changes, ch)
      table.insert(changes, 0)
    end
  end
end
return {0, changes}
`

// nodesLua → {id, expiry ms, info, …} of the live nodes.
const nodesLua = registryLuaCommon + `
local out = {}
for _, id in ipairs(live_nodes()) do
  table.insert(out, id)
  table.insert(out, redis.call('ZSCORE', z, id))
  table.insert(out, redis.call('HGET', info, id) or '')
end
return out
`

// subscriptionsLua: ARGV[2] channel → {node id, count, …} over the live nodes.
const subscriptionsLua = registryLuaCommon + `
local out = {}
for _, id in ipairs(live_nodes()) do
  local n = redis.call('HGET', cpre .. id, ARGV[2])
  if n then
    table.insert(out, id)
    table.insert(out, n)
  end
end
return out
`

// occupiedLua: ARGV[2] prefix → {channel, count summed over the live nodes, …}.
const occupiedLua = registryLuaCommon + `
local prefix = ARGV[2]
local sums, order = {}, {}
for _, id in ipairs(live_nodes()) do
  local flat = redis.call('HGETALL', cpre .. id)
  for i = 1, #flat, 2 do
    local ch = flat[i]
    if string.sub(ch, 1, #prefix) == prefix then
      if not sums[ch] then
        sums[ch] = 0
        table.insert(order, ch)
      end
      sums[ch] = sums[ch] + tonumber(flat[i + 1])
    end
  end
end
local out = {}
for _, ch in ipairs(order) do
  table.insert(out, ch)
  table.insert(out, sums[ch])
end
return out
`

var (
	registerScript         = redis.NewScript(registerLua)
	deregisterScript       = redis.NewScript(deregisterLua)
	setSubscriptionsScript = redis.NewScript(setSubscriptionsLua)
	nodesScript            = redis.NewScript(nodesLua)
	subscriptionsScript    = redis.NewScript(subscriptionsLua)
	occupiedScript         = redis.NewScript(occupiedLua)
)
