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

// Presence keeps the members of presence channels in Redis, so every node sees one member set
// and a node that dies without a word has its members leave after a TTL. It is independent of
// Store: it shares only a server and a key prefix with it.
//
// Each channel's members live under the channel's hash tag, next to its log, so every script
// touches one cluster slot:
//
//	<prefix>{<channel>}:p:s  zset: socket id → lease expiry (unix ms, Redis clock)
//	<prefix>{<channel>}:p:o  hash: socket id → its user id
//	<prefix>{<channel>}:p:u  hash: user id → the user's socket ids (a msgpack array)
//	<prefix>{<channel>}:p:i  hash: user id → user_info, byte for byte as the latest Join gave it
//
// Each operation is one Lua script reading the time from Redis (TIME), so nodes with skewed
// clocks agree on which leases ran out, and concurrent callers on different nodes cannot
// interleave. The user → sockets index (rather than a plain count) is what lets Join and
// Leave answer first and last from live leases alone, as Members does, while guaranteeing
// that Expire never reports a user a Join or Leave has already accounted for.
//
// Every write that grants or renews a lease also sets the four keys to expire 2×TTL later: a
// channel whose nodes all vanished disappears, but not before its last lease has run out and
// Expire had a full TTL to report the users. A channel whose last member leaves or expires is
// deleted at once.
type Presence struct {
	client     redis.UniversalClient
	prefix     string
	ttl        time.Duration
	ttlMs      string
	keyTTLMs   string
	maxMembers string // "0": no limit
}

// presenceBatch bounds how many leases one Expire or Refresh script handles, so a channel
// whose big node died does not block Redis in one long script; they loop over batches.
const presenceBatch = 500

// PresenceOptions configures a Presence.
type PresenceOptions struct {
	// Client is the server connection, required; Presence never closes it. Nodes of one
	// deployment share members by pointing at the same server with the same Prefix.
	Client redis.UniversalClient
	// Prefix starts every key, as Options.Prefix does for Store; usually the same, so one
	// prefix holds a deployment's keys. No braces. Default DefaultPrefix.
	Prefix string
	// TTL is how long a membership lasts without a Refresh. Default store.DefaultPresenceTTL.
	TTL time.Duration
	// MaxMembers is the most users a channel may have; more sockets of a user already there
	// are always accepted. Zero means store.DefaultMaxMembers, negative means no limit.
	MaxMembers int
}

var _ store.Presence = (*Presence)(nil)

// errSocketTaken: a socket id is already a member as another user. Socket ids are unique per
// connection and a connection authenticates once per channel, so this is a caller's bug;
// silently moving the socket would lose the old user's member_removed.
var errSocketTaken = errors.New("redisstore: socket already joined this presence channel as another user")

// NewPresence returns a Presence. Like New, it does not contact Redis.
func NewPresence(opts PresenceOptions) (*Presence, error) {
	if opts.Client == nil {
		return nil, errors.New("redisstore: presence needs a Client")
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("redisstore: prefix %q contains a brace", prefix)
	}
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = store.DefaultPresenceTTL
	}
	ttl = max(ttl.Round(time.Millisecond), time.Millisecond) // Redis keeps milliseconds
	limit := opts.MaxMembers
	switch {
	case limit == 0:
		limit = store.DefaultMaxMembers
	case limit < 0:
		limit = 0
	}
	return &Presence{
		client:     opts.Client,
		prefix:     prefix,
		ttl:        ttl,
		ttlMs:      strconv.FormatInt(ttl.Milliseconds(), 10),
		keyTTLMs:   strconv.FormatInt(2*ttl.Milliseconds(), 10),
		maxMembers: strconv.Itoa(limit),
	}, nil
}

// TTL is the lease length: the engine refreshes its sockets well within it (e.g. every TTL/3).
func (p *Presence) TTL() time.Duration { return p.ttl }

// presenceKeys are KEYS[1..4] of every presence script, in the order presenceLuaCommon names
// them.
func (p *Presence) presenceKeys(channel string) []string {
	base := p.prefix + "{" + channel + "}:p:"
	return []string{base + "s", base + "o", base + "u", base + "i"}
}

// Join implements store.Presence.
//
// A lease that ran out counts as gone even before Expire reaps it, as it does for Members: a
// user whose only sockets have expired joins as first, and those expired sockets are dropped
// then, so no later Expire reports the user as left while it is here.
//
// A Join whose reply is lost is not resent (go-redis would, on a new connection): Redis may
// have run it, and the second run would answer first=false, losing the member_added. It fails
// with store.ErrUnavailable instead, and the socket is in an unknown state; the caller should
// Leave it before trying again.
func (p *Presence) Join(ctx context.Context, channel, socketID string, m store.Member) (bool, error) {
	if err := checkPresenceArgs(channel, socketID, m.UserID, true); err != nil {
		return false, err
	}
	v, err := evalOnce(ctx, p.client, joinScript, joinLua, p.presenceKeys(channel),
		socketID, m.UserID, string(m.UserInfo), p.ttlMs, p.maxMembers, p.keyTTLMs)
	if err != nil {
		return false, wrapErr(ctx, "presence join", err)
	}
	switch v {
	case int64(1):
		return true, nil
	case int64(0):
		return false, nil
	case int64(-1):
		return false, store.ErrPresenceFull
	case int64(-2):
		return false, errSocketTaken
	}
	return false, fmt.Errorf("redisstore: presence join: unexpected reply %v", v)
}

// Leave implements store.Presence. The user's other sockets whose lease ran out go with it:
// when no live one is left the user is reported as leaving here, and must not be again by
// Expire. Like Join, it is never resent after a lost reply.
func (p *Presence) Leave(ctx context.Context, channel, socketID string) (store.Member, bool, bool, error) {
	if err := checkPresenceArgs(channel, socketID, "", false); err != nil {
		return store.Member{}, false, false, err
	}
	v, err := evalOnce(ctx, p.client, leaveScript, leaveLua, p.presenceKeys(channel), socketID)
	if err != nil {
		return store.Member{}, false, false, wrapErr(ctx, "presence leave", err)
	}
	reply, ok := v.([]any)
	if !ok || (len(reply) != 0 && len(reply) != 3) {
		return store.Member{}, false, false, fmt.Errorf("redisstore: presence leave: unexpected reply %v", v)
	}
	if len(reply) == 0 {
		return store.Member{}, false, false, nil
	}
	m, err := parseMember(reply[0], reply[1])
	if err != nil {
		return store.Member{}, false, false, fmt.Errorf("redisstore: presence leave: %w", err)
	}
	return m, reply[2] == int64(1), true, nil
}

// Refresh implements store.Presence. Only live leases are renewed: one that ran out has ended
// (Members already hides it and Expire will report its user), so reviving it would bring the
// user back without a member_added. Renewing is idempotent, so go-redis may resend it.
func (p *Presence) Refresh(ctx context.Context, channel string, socketIDs []string) error {
	if err := checkChannel(channel); err != nil {
		return err
	}
	keys := p.presenceKeys(channel)
	for chunk := range slices.Chunk(socketIDs, presenceBatch) {
		args := make([]any, 0, 2+len(chunk))
		args = append(args, p.ttlMs, p.keyTTLMs)
		for _, id := range chunk {
			args = append(args, id)
		}
		if err := refreshScript.Run(ctx, p.client, keys, args...).Err(); err != nil {
			return wrapErr(ctx, "presence refresh", err)
		}
	}
	if len(socketIDs) == 0 {
		return ctx.Err()
	}
	return nil
}

// Expire implements store.Presence. Each script run reaps up to presenceBatch leases atomically
// and returns the users it left without sockets, so concurrent callers on any nodes split the
// expired users between them and none is returned twice. A reply lost in transit is not
// resent (the second run would find nothing), so those users go unreported: the price of
// at-most-once. When a later batch fails, the users of the earlier ones are still returned,
// without error; the next Expire carries on. Users come back ordered by id.
func (p *Presence) Expire(ctx context.Context, channel string) ([]store.Member, error) {
	if err := checkChannel(channel); err != nil {
		return nil, err
	}
	keys := p.presenceKeys(channel)
	var gone []store.Member
	for {
		v, err := evalOnce(ctx, p.client, expireScript, expireLua, keys, presenceBatch)
		if err != nil {
			if len(gone) > 0 {
				break
			}
			return nil, wrapErr(ctx, "presence expire", err)
		}
		reply, ok := v.([]any)
		if !ok || len(reply)%2 != 1 {
			return gone, fmt.Errorf("redisstore: presence expire: unexpected reply %v", v)
		}
		ms, err := parseMembers(reply[1:])
		if err != nil {
			return gone, fmt.Errorf("redisstore: presence expire: %w", err)
		}
		gone = append(gone, ms...)
		if reply[0] != int64(1) {
			break
		}
	}
	sortMembers(gone)
	return gone, nil
}

// Members implements store.Presence.
func (p *Presence) Members(ctx context.Context, channel string) ([]store.Member, error) {
	if err := checkChannel(channel); err != nil {
		return nil, err
	}
	v, err := membersScript.Run(ctx, p.client, p.presenceKeys(channel)).Result()
	if err != nil {
		return nil, wrapErr(ctx, "presence members", err)
	}
	reply, ok := v.([]any)
	if !ok || len(reply)%2 != 0 {
		return nil, fmt.Errorf("redisstore: presence members: unexpected reply %v", v)
	}
	ms, err := parseMembers(reply)
	if err != nil {
		return nil, fmt.Errorf("redisstore: presence members: %w", err)
	}
	// Sorted here, not in Lua, whose string order follows the server's locale.
	sortMembers(ms)
	return ms, nil
}

// evalOnce runs a script that must not run twice for one call, with go-redis's resending
// switched off (see noRetryCmd). A NOSCRIPT answer means it did not run, so it is sent again
// with its source.
func evalOnce(ctx context.Context, client redis.UniversalClient, s *redis.Script, src string, keys []string, args ...any) (any, error) {
	v, err := eval(ctx, client, "evalsha", s.Hash(), keys, args)
	if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
		v, err = eval(ctx, client, "eval", src, keys, args)
	}
	return v, err
}

func eval(ctx context.Context, client redis.UniversalClient, verb, script string, keys []string, args []any) (any, error) {
	cmdArgs := make([]any, 0, 3+len(keys)+len(args))
	cmdArgs = append(cmdArgs, verb, script, len(keys))
	for _, k := range keys {
		cmdArgs = append(cmdArgs, k)
	}
	cmdArgs = append(cmdArgs, args...)
	cmd := redis.NewCmd(ctx, cmdArgs...)
	_ = client.Process(ctx, noRetryCmd{cmd})
	return cmd.Result()
}

// wrapErr names the operation and classifies err as Store.wrapErr does: the caller's own
// cancellation stays what it is, and anything that says Redis could not serve the request
// wraps store.ErrUnavailable.
func wrapErr(ctx context.Context, op string, err error) error {
	switch {
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		return fmt.Errorf("redisstore: %s: %w", op, err)
	case unavailable(err):
		return fmt.Errorf("redisstore: %s: %w: %w", op, store.ErrUnavailable, err)
	default:
		return fmt.Errorf("redisstore: %s: %w", op, err)
	}
}

// parseMembers reads the flat user, info, user, info… of a script reply.
func parseMembers(flat []any) ([]store.Member, error) {
	if len(flat) == 0 {
		return nil, nil
	}
	ms := make([]store.Member, 0, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		m, err := parseMember(flat[i], flat[i+1])
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// parseMember reads a user id and its info, which is nil (a missing field) when the user
// joined without any.
func parseMember(user, userInfo any) (store.Member, error) {
	id, ok := user.(string)
	if !ok || id == "" {
		return store.Member{}, fmt.Errorf("bad user id %v", user)
	}
	m := store.Member{UserID: id}
	switch v := userInfo.(type) {
	case nil:
	case string:
		if v != "" {
			m.UserInfo = json.RawMessage(v)
		}
	default:
		return store.Member{}, fmt.Errorf("bad user info %v", userInfo)
	}
	return m, nil
}

func sortMembers(ms []store.Member) {
	slices.SortFunc(ms, func(a, b store.Member) int { return strings.Compare(a.UserID, b.UserID) })
}

func checkPresenceArgs(channel, socketID, userID string, join bool) error {
	if err := checkChannel(channel); err != nil {
		return err
	}
	switch {
	case socketID == "":
		return fmt.Errorf("redisstore: presence %s: empty socket id", channel)
	case join && userID == "":
		return fmt.Errorf("redisstore: presence %s: empty user id", channel)
	}
	return nil
}

// presenceLuaCommon is the prelude of every presence script: the keys (see Presence) and the
// helpers that keep them consistent. A lease is live while its expiry is after now, in Redis
// milliseconds; the user → sockets index lists every socket of the user that still has a
// lease, live or not yet reaped, and a user with none is not in it.
const presenceLuaCommon = `
local leases, owners, userSockets, infos = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local function now()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end

local function ms(n)
  return string.format('%d', n)
end

local function socketsOf(user)
  local packed = redis.call('HGET', userSockets, user)
  if not packed then
    return {}
  end
  return cmsgpack.unpack(packed)
end

local function setSockets(user, list)
  if #list == 0 then
    redis.call('HDEL', userSockets, user)
  else
    redis.call('HSET', userSockets, user, cmsgpack.pack(list))
  end
end

local function isLive(socket, t)
  local exp = redis.call('ZSCORE', leases, socket)
  return exp and tonumber(exp) > t
end

local function dropSocket(socket)
  redis.call('ZREM', leases, socket)
  redis.call('HDEL', owners, socket)
end

-- A channel without members goes at once rather than at its keys' expiry.
local function dropIfEmpty()
  if redis.call('HLEN', userSockets) == 0 then
    redis.call('DEL', leases, owners, userSockets, infos)
  end
end

local function extend(keyTTL)
  for i = 1, 4 do
    redis.call('PEXPIRE', KEYS[i], keyTTL)
  end
end
`

// joinLua adds a socket's membership.
//
//	ARGV[1] socket id, ARGV[2] user id, ARGV[3] user info ('' for none), ARGV[4] TTL (ms),
//	ARGV[5] max members (0: no limit), ARGV[6] key TTL (ms)
//
// It returns 1 (the user's first live socket), 0 (it had one already), -1 (the channel is
// full; nothing changed) or -2 (the socket is another user's; nothing changed).
const joinLua = presenceLuaCommon + `
local socket, user, userInfo = ARGV[1], ARGV[2], ARGV[3]
local maxMembers = tonumber(ARGV[5])
local t = now()
local owner = redis.call('HGET', owners, socket)
if owner and owner ~= user then
  return -2
end
local live, dead = {}, {}
for _, s in ipairs(socketsOf(user)) do
  if isLive(s, t) then
    live[#live + 1] = s
  else
    dead[#dead + 1] = s
  end
end
local first = #live == 0
-- Only users with a live lease hold a place. Counting them walks the live leases, so it is
-- done only when the index, which also holds users not reaped yet, says the channel is full.
if first and maxMembers > 0 and redis.call('HLEN', userSockets) >= maxMembers then
  local seen, n = {}, 0
  for _, s in ipairs(redis.call('ZRANGEBYSCORE', leases, '(' .. ms(t), '+inf')) do
    local u = redis.call('HGET', owners, s)
    if u and not seen[u] then
      seen[u] = true
      n = n + 1
      if n >= maxMembers then
        return -1
      end
    end
  end
end
for _, s in ipairs(dead) do
  dropSocket(s)
end
local known = false
for _, s in ipairs(live) do
  if s == socket then
    known = true
  end
end
if not known then
  live[#live + 1] = socket
end
setSockets(user, live)
redis.call('ZADD', leases, ms(t + tonumber(ARGV[4])), socket)
redis.call('HSET', owners, socket, user)
if userInfo == '' then
  redis.call('HDEL', infos, user)
else
  redis.call('HSET', infos, user, userInfo)
end
extend(ARGV[6])
if first then
  return 1
end
return 0
`

// leaveLua ends a socket's membership, and those of its user's sockets whose lease ran out.
//
//	ARGV[1] socket id
//
// It returns {} for an unknown socket, else {user, info or nil, 1 if the user has no live
// socket left else 0}.
const leaveLua = presenceLuaCommon + `
local socket = ARGV[1]
local t = now()
local user = redis.call('HGET', owners, socket)
if not user then
  return {}
end
local live = {}
for _, s in ipairs(socketsOf(user)) do
  if s ~= socket then
    if isLive(s, t) then
      live[#live + 1] = s
    else
      dropSocket(s)
    end
  end
end
dropSocket(socket)
setSockets(user, live)
local userInfo = redis.call('HGET', infos, user)
local last = 0
if #live == 0 then
  redis.call('HDEL', infos, user)
  last = 1
end
dropIfEmpty()
return {user, userInfo, last}
`

// refreshLua renews the live leases among the given sockets.
//
//	ARGV[1] TTL (ms), ARGV[2] key TTL (ms), ARGV[3…] socket ids
//
// It returns how many leases it renewed.
const refreshLua = presenceLuaCommon + `
local t = now()
local expiry = ms(t + tonumber(ARGV[1]))
local n = 0
for i = 3, #ARGV do
  if isLive(ARGV[i], t) then
    redis.call('ZADD', leases, 'XX', expiry, ARGV[i])
    n = n + 1
  end
end
if n > 0 then
  extend(ARGV[2])
end
return n
`

// expireLua reaps up to ARGV[1] leases that ran out.
//
// It returns {more, user, info or nil, …}: more is 1 when the batch was full (there may be
// more to reap), and the users are those left with no socket.
const expireLua = presenceLuaCommon + `
local limit = tonumber(ARGV[1])
local t = now()
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', ms(t), 'LIMIT', 0, limit)
local touched, order = {}, {}
for _, s in ipairs(expired) do
  local user = redis.call('HGET', owners, s)
  dropSocket(s)
  if user and not touched[user] then
    touched[user] = true
    order[#order + 1] = user
  end
end
local out = {0}
if #expired == limit then
  out[1] = 1
end
for _, user in ipairs(order) do
  -- What is left of the user's sockets: live ones, or expired ones beyond this batch.
  local kept = {}
  for _, s in ipairs(socketsOf(user)) do
    if redis.call('ZSCORE', leases, s) then
      kept[#kept + 1] = s
    end
  end
  setSockets(user, kept)
  if #kept == 0 then
    out[#out + 1] = user
    out[#out + 1] = redis.call('HGET', infos, user)
    redis.call('HDEL', infos, user)
  end
end
dropIfEmpty()
return out
`

// membersLua lists the users with a live lease.
//
// It returns {user, info or nil, …}, unordered.
const membersLua = presenceLuaCommon + `
local t = now()
local seen, out = {}, {}
for _, s in ipairs(redis.call('ZRANGEBYSCORE', leases, '(' .. ms(t), '+inf')) do
  local user = redis.call('HGET', owners, s)
  if user and not seen[user] then
    seen[user] = true
    out[#out + 1] = user
    out[#out + 1] = redis.call('HGET', infos, user)
  end
end
return out
`

var (
	joinScript    = redis.NewScript(joinLua)
	leaveScript   = redis.NewScript(leaveLua)
	refreshScript = redis.NewScript(refreshLua)
	expireScript  = redis.NewScript(expireLua)
	membersScript = redis.NewScript(membersLua)
)
