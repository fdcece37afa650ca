// Package redisstore is the Redis Streams store: Herald's ordered per-channel log kept in Redis,
// so every Herald node pointed at the same server shares history and live events.
//
// It owns the key layout, the Lua scripts that append and read atomically, the batching of
// concurrent appends into pipelines, and the sharded pub/sub (one connection per Redis master)
// that turns appends into live events, with per-channel continuity (lost notices are refilled
// from the stream). It works on one Redis, on Redis behind Sentinel and on Redis Cluster. It
// knows nothing of sockets, subscribers, HTTP or the wire format: package stream builds on
// store.Store alone, and package storetest holds the contract this package passes.
//
// Keys of one channel share a Redis Cluster hash tag, so each script touches a single slot:
//
//	<prefix>{<channel>}:s        the stream; entry IDs are <seq>-0; fields t (ms), n, d, s
//	<prefix>{<channel>}:m        hash: s (last seq), e (epoch), t (last event time, ms),
//	                             x (when retention was last enforced, ms), r (the replication
//	                             id of the master that appended last)
//	<prefix>{<channel>}:i:<key>  an idempotency record "<fingerprint>:<epoch>:<seq>:<time>"
//	<prefix>{<channel>}:n        the shard channel that carries each new event whole
//
// The stream and the meta hash expire once the channel has been idle for MaxAge (give or take
// the housekeeping interval, at most a second), so an idle channel is forgotten entirely and
// starts a new epoch; idempotency records live on for their own TTL.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
)

// DefaultPrefix starts every key when Options.Prefix is empty.
const DefaultPrefix = "herald:"

// Options configures a Store.
type Options struct {
	// URL locates the server (redis://, rediss:// or unix://, go-redis ParseURL syntax, e.g.
	// "redis://localhost:6379/0?dial_timeout=1s"). Used when Client is nil; Close closes the
	// client made from it.
	URL string
	// Client, when set, is used as is and left open by Close: a *redis.Client (one Redis, or
	// one behind Sentinel from redis.NewFailoverClient) or a *redis.ClusterClient.
	Client redis.UniversalClient
	// Prefix starts every key and pub/sub channel name; it must not contain braces, which
	// would move the cluster hash tag. Default DefaultPrefix.
	Prefix string
	// Retention bounds each channel's history; zero fields take the store defaults.
	Retention store.Retention
	// PingInterval is how long the pub/sub connection may stay silent before it is probed;
	// a probe unanswered for another interval means the connection is dead and is replaced.
	// Default 5s.
	PingInterval time.Duration
	// Replicas is how many replicas must confirm an append before it is acknowledged (WAIT
	// after the append, on the same connection); zero acknowledges once the master ran it.
	// An append they do not confirm within ReplicationTimeout fails with
	// store.ErrNotReplicated.
	Replicas int
	// ReplicationTimeout bounds the wait for Replicas. Default 1s.
	ReplicationTimeout time.Duration
	// AppendLinger is how long a batch of appends may wait for more while appends come from
	// several callers at once: those of one interval share a script call and a round trip,
	// which costs both Herald and Redis far less than one each. The wait ends early once every
	// append recently pending at once is waiting again, so a lone caller's appends do not
	// wait (once any others are a second or two gone), and once 16 appends are queued.
	// Default DefaultAppendLinger; negative sends every batch at once.
	AppendLinger time.Duration
	// Logger receives what the background loops cannot return to a caller. The zero value
	// discards.
	Logger zerolog.Logger
}

// Store is a store.Store on Redis. Create it with New.
type Store struct {
	client    redis.UniversalClient
	single    *redis.Client        // client, unless it is a cluster's
	cluster   *redis.ClusterClient // client, for Redis Cluster
	ownClient bool
	prefix    string
	// Script arguments that never change, formatted once.
	maxEvents, maxAgeMs, idemTTLMs, housekeepMs string
	pingInterval                                time.Duration
	replicas                                    int
	waitMs, waitFlag                            string
	log                                         zerolog.Logger

	ctx    context.Context // canceled by Close; the background work's context
	cancel context.CancelFunc
	closed atomic.Bool
	done   chan struct{} // closed by Close

	appends appendQueue   // append.go
	linger  time.Duration // Options.AppendLinger

	handler atomic.Pointer[store.Handler]

	// subMu orders pub/sub commands with the state they reflect, so SSUBSCRIBE, SUNSUBSCRIBE
	// and the marker PINGs reach Redis in the order the state changed (shard.go).
	subMu    sync.Mutex
	links    map[*redis.Client]*link // by master; guarded by subMu
	loopDone chan struct{}           // set with the first link; guarded by subMu
	inbox    chan delivery           // the links' readers to the receive loop
	readers  sync.WaitGroup

	mu      sync.Mutex // guards chans, subs, waiting, marker and every sub's fields
	chans   map[string]*listened
	subs    map[string]*sub   // by shard channel
	waiting map[*sub]struct{} // routed, not confirmed yet
	marker  uint64

	suppressPublish atomic.Bool // test hook: appends publish no notice

	live liveState // the bus (live.go)
}

var _ store.Store = (*Store)(nil)

// New returns a Store. It does not contact Redis, so a service can start while Redis is
// still coming up; Ping reports whether it is reachable, and until it is every call fails
// with an error wrapping store.ErrUnavailable.
func New(ctx context.Context, opts Options) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("redisstore: prefix %q contains a brace", prefix)
	}
	client, own := opts.Client, false
	if client == nil {
		if opts.URL == "" {
			return nil, errors.New("redisstore: neither URL nor Client is set")
		}
		o, err := redis.ParseURL(opts.URL)
		if err != nil {
			return nil, fmt.Errorf("redisstore: %w", err)
		}
		client, own = redis.NewClient(o), true
	}
	single, _ := client.(*redis.Client)
	cluster, _ := client.(*redis.ClusterClient)
	if single == nil && cluster == nil {
		return nil, fmt.Errorf("redisstore: a %T is not supported; use a *redis.Client or a *redis.ClusterClient", client)
	}
	ret := opts.Retention.WithDefaults()
	ping := opts.PingInterval
	if ping <= 0 {
		ping = 5 * time.Second
	}
	if opts.Replicas < 0 {
		return nil, fmt.Errorf("redisstore: %d replicas", opts.Replicas)
	}
	waitFor := opts.ReplicationTimeout
	if waitFor <= 0 {
		waitFor = time.Second
	}
	linger := opts.AppendLinger
	switch {
	case linger == 0:
		linger = DefaultAppendLinger
	case linger < 0:
		linger = 0
	}
	waitFlag := "0"
	if opts.Replicas > 0 {
		waitFlag = "1"
	}
	bg, cancel := context.WithCancel(context.Background())
	s := &Store{
		client:       client,
		single:       single,
		cluster:      cluster,
		ownClient:    own,
		prefix:       prefix,
		maxEvents:    strconv.Itoa(ret.MaxEvents),
		maxAgeMs:     strconv.FormatInt(max(ret.MaxAge.Milliseconds(), 1), 10),
		idemTTLMs:    strconv.FormatInt(max(ret.IdempotencyTTL.Milliseconds(), 1), 10),
		housekeepMs:  strconv.FormatInt(housekeepInterval(ret.MaxAge).Milliseconds(), 10),
		pingInterval: ping,
		replicas:     opts.Replicas,
		waitMs:       strconv.FormatInt(max(waitFor.Milliseconds(), 1), 10),
		waitFlag:     waitFlag,
		log:          opts.Logger,
		ctx:          bg,
		cancel:       cancel,
		done:         make(chan struct{}),
		appends:      appendQueue{idle: make(chan struct{})},
		linger:       linger,
		chans:        make(map[string]*listened),
		subs:         make(map[string]*sub),
		waiting:      make(map[*sub]struct{}),
		links:        make(map[*redis.Client]*link),
		inbox:        make(chan delivery, 256),
	}
	return s, nil
}

// housekeepInterval is how often an append to a busy channel also enforces the age limit and
// refreshes the expiry: short next to MaxAge, so a channel is forgotten at most that much late.
func housekeepInterval(maxAge time.Duration) time.Duration {
	return max(min(maxAge/64, time.Second), time.Millisecond)
}

// Kind implements store.Store.
func (s *Store) Kind() string { return "redis" }

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := s.client.Ping(ctx).Err(); err != nil {
		return s.wrapErr(ctx, "ping", err)
	}
	return nil
}

// Close implements store.Store. Appends already sent to Redis are answered first; those still
// queued fail with store.ErrClosed.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.done)
	s.closeAppends()
	s.cancel()
	s.closeLinks() // shard.go: ends the readers
	s.subMu.Lock()
	loopDone := s.loopDone
	s.subMu.Unlock()
	if loopDone != nil {
		<-loopDone
	}
	s.closeLive() // live.go: after the loop, so no bus handler starts any more
	if s.ownClient {
		return s.client.Close()
	}
	return nil
}

func (s *Store) key(channel, suffix string) string {
	return s.prefix + "{" + channel + "}:" + suffix
}

func (s *Store) noticeChannel(channel string) string { return s.key(channel, "n") }

// channelOfNotice is the inverse of noticeChannel.
func (s *Store) channelOfNotice(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, s.prefix+"{")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "}:n")
}

// checkChannel rejects names outside the channel syntax, which among other things keeps braces
// out: a brace in a name would move its keys' Cluster hash tag.
func checkChannel(name string) error {
	if err := channel.Valid(name); err != nil {
		return fmt.Errorf("redisstore: channel name %q cannot be stored: %w", name, err)
	}
	return nil
}

// wrapErr names the operation and classifies err: the caller's own cancellation stays what it
// is, a closed store is store.ErrClosed, and anything that says Redis could not serve the
// request wraps store.ErrUnavailable.
func (s *Store) wrapErr(ctx context.Context, op string, err error) error {
	switch {
	case s.closed.Load() && (errors.Is(err, redis.ErrClosed) || errors.Is(err, context.Canceled)):
		return fmt.Errorf("redisstore: %s: %w", op, store.ErrClosed)
	case ctx != nil && ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		return fmt.Errorf("redisstore: %s: %w", op, err)
	case unavailable(err):
		return fmt.Errorf("redisstore: %s: %w: %w", op, store.ErrUnavailable, err)
	default:
		return fmt.Errorf("redisstore: %s: %w", op, err)
	}
}

// unavailable reports whether err means Redis could not serve the request (as opposed to
// refusing it), so the caller may retry later.
func unavailable(err error) bool {
	var rerr redis.Error
	if errors.As(err, &rerr) {
		// EXECABORT: a MULTI whose queued commands were refused (LOADING while Redis reads its
		// append-only file, say), so none of it ran. MOVED and ASK reach here when a slot's new
		// master is not known yet (a master's own connection cannot follow them, and an append
		// stops waiting for a moving slot after a while); NOREPLICAS and MISCONF are a master
		// refusing writes (min-replicas-to-write, a failed RDB save).
		for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "MOVED ", "ASK ", "READONLY",
			"BUSY", "OOM", "EXECABORT", "NOREPLICAS", "MISCONF"} {
			if strings.HasPrefix(rerr.Error(), p) {
				return true
			}
		}
		return false
	}
	var nerr net.Error
	return errors.As(err, &nerr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrPoolExhausted) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, redis.ErrClosed) || errors.Is(err, net.ErrClosed) || isConnErr(err)
}

// isConnErr catches transport failures go-redis reports without a typed error.
func isConnErr(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "connection refused") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "broken pipe") || strings.Contains(msg, "no such host")
}
