package main

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/server"
)

// storeMetrics is a go-redis hook that times every command for the server's metrics. It sits
// here, where both are known, so that neither the server nor the store knows the other.
type storeMetrics struct{ m *server.Metrics }

func (h storeMetrics) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h storeMetrics) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		h.m.ObserveStoreCommand(strings.ToLower(cmd.Name()), time.Since(start), failure(err))
		return err
	}
}

func (h storeMetrics) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		name := "pipeline"
		if len(cmds) > 0 {
			// The store's pipelines carry one kind of command each (appends, reads).
			name = "pipeline:" + strings.ToLower(cmds[0].Name())
		}
		h.m.ObserveStoreCommand(name, time.Since(start), failure(err))
		return err
	}
}

// failure is err unless it is part of the normal flow: a missing key is an answer, and
// NOSCRIPT makes the store send a script's source once per connection.
func failure(err error) error {
	if errors.Is(err, redis.Nil) || redis.HasErrorPrefix(err, "NOSCRIPT") {
		return nil
	}
	return err
}
