package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/server"
	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/stream"
)

// backend is where the apps keep their data.
type backend struct {
	redis  redisTarget
	prefix string
	// durability is --durability ("" for the default of the store in use) and waitReplicas
	// bounds the wait of "replicated".
	durability   string
	waitReplicas time.Duration
	appendLinger time.Duration // --redis-append-linger: 0 sends every batch at once
	retention    store.Retention
	hub          stream.Options
	presenceTTL  time.Duration
	webhookStale time.Duration // how long a claimed webhook batch holds without its node
	log          zerolog.Logger
	metrics      *server.Metrics // nil: none
}

// loadAuthz reads the config file, or the HERALD_APP_* variables alone; nil when neither is set.
func loadAuthz(path string) (*authz.Config, error) {
	if path == "" && os.Getenv("HERALD_APP_ID") == "" && os.Getenv("HERALD_APP_KEY") == "" {
		return nil, nil
	}
	cfg, err := authz.Load(path, os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// openApps builds one hub, store, presence and registry per app, the hubs sharing one node id. Without a config there is one app,
// "default", keyed directly under the prefix; configured apps are keyed under prefix + id, so
// apps sharing a Redis never meet. close releases everything.
func openApps(ctx context.Context, b backend, cfg *authz.Config) (apps []*server.App, close func(), err error) {
	var closers []func()
	close = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			close()
		}
	}()
	type spec struct {
		id, prefix string
		pusher     *authz.App
	}
	specs := []spec{{id: "default", prefix: b.prefix}}
	if cfg != nil {
		specs = specs[:0]
		def := cfg.DefaultApp()
		ordered := append([]*authz.App{def}, cfg.Apps()...)
		seen := map[string]bool{}
		for _, a := range ordered {
			if a == nil || seen[a.ID] {
				continue
			}
			seen[a.ID] = true
			specs = append(specs, spec{id: a.ID, prefix: b.prefix + a.ID + ":", pusher: a})
		}
	}
	var client redis.UniversalClient
	if b.redis.enabled() {
		c, err := b.redis.newClient()
		if err != nil {
			return nil, close, err
		}
		if b.metrics != nil {
			c.AddHook(storeMetrics{b.metrics})
		}
		client = c
		closers = append(closers, func() { c.Close() })
		unreachable, refused := pingRedis(ctx, c)
		switch {
		case refused != nil:
			// Waiting would not help: say so now, in one line, rather than serve 503 forever.
			return nil, close, fmt.Errorf("%s refused this node: %w", b.redis.describe(), refused)
		case unreachable != nil:
			b.log.Warn().Err(unreachable).Str("redis", b.redis.describe()).Msg("Redis is not reachable yet; serving 503 until it is")
		}
	}
	b.hub.Node = stream.NewNodeID()
	for _, sp := range specs {
		maxMembers := authz.DefaultLimits().MaxPresenceMembers
		if sp.pusher != nil {
			maxMembers = sp.pusher.Limits.MaxPresenceMembers
		}
		durability := b.durability
		if sp.pusher != nil && sp.pusher.Durability != "" {
			durability = sp.pusher.Durability
		}
		replicas, err := replicasFor(durability, client != nil)
		if err != nil {
			return nil, close, fmt.Errorf("app %s: %w", sp.id, err)
		}
		var st store.Store
		var presence store.Presence
		var registry store.Registry
		if client == nil {
			mem := memstore.New(memstore.Options{Retention: b.retention})
			st, presence = mem, memstore.NewPresence(memstore.PresenceOptions{TTL: b.presenceTTL, MaxMembers: maxMembers})
			registry = memstore.NewRegistry(memstore.RegistryOptions{})
		} else {
			rs, err := redisstore.New(ctx, redisstore.Options{Client: client, Prefix: sp.prefix, Retention: b.retention, Logger: b.log,
				Replicas: replicas, ReplicationTimeout: b.waitReplicas, AppendLinger: cmp.Or(b.appendLinger, -1)})
			if err != nil {
				return nil, close, err
			}
			st = rs
			p, err := redisstore.NewPresence(redisstore.PresenceOptions{Client: client, Prefix: sp.prefix, TTL: b.presenceTTL, MaxMembers: maxMembers})
			if err != nil {
				rs.Close()
				return nil, close, err
			}
			presence = p
			r, err := redisstore.NewRegistry(redisstore.RegistryOptions{Client: client, Prefix: sp.prefix})
			if err != nil {
				rs.Close()
				return nil, close, err
			}
			registry = r
		}
		closers = append(closers, func() { st.Close() })
		hub := stream.New(st, b.hub)
		closers = append(closers, hub.Close)
		app := &server.App{ID: sp.id, Hub: hub, Presence: presence, Pusher: sp.pusher, Registry: registry}
		if sp.pusher != nil {
			for _, w := range sp.pusher.Webhooks {
				ep := server.WebhookEndpoint{Webhook: w}
				if client == nil {
					ep.Queue = memstore.NewHookQueue(memstore.HookQueueOptions{Stale: b.webhookStale})
				} else if ep.Queue, err = redisstore.NewHookQueue(redisstore.HookQueueOptions{Client: client, Prefix: sp.prefix,
					Name: hookQueueName(w.URL), Stale: b.webhookStale}); err != nil {
					return nil, close, err
				}
				app.Webhooks = append(app.Webhooks, ep)
			}
		}
		if bus, ok := st.(store.Bus); ok {
			app.Bus = bus
		}
		apps = append(apps, app)
	}
	return apps, close, nil
}

// hookQueueName names an endpoint's queue by its URL, so nodes agree on it without another
// setting and a changed URL starts a queue of its own.
func hookQueueName(url string) string {
	sum := sha256.Sum256([]byte(url))
	return hex.EncodeToString(sum[:8])
}

// replicasFor checks a durability level against the store in use and says how many replicas
// must confirm each append.
func replicasFor(durability string, onRedis bool) (int, error) {
	switch {
	case durability == "" || durability == "redis" && onRedis:
		return 0, nil
	case durability == "replicated" && onRedis:
		return 1, nil
	case durability == "memory" && !onRedis:
		return 0, nil
	case durability == "memory":
		return 0, errors.New("durability memory is the embedded store's: it does not go with a Redis option")
	case durability == "redis" || durability == "replicated":
		return 0, fmt.Errorf("durability %s needs Redis: set --redis-url, --redis-cluster or --redis-sentinels", durability)
	}
	return 0, fmt.Errorf("durability %q: want memory, redis or replicated", durability)
}
