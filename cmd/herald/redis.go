package main

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
)

func openRedisStore(ctx context.Context, url, prefix string, ret store.Retention, log zerolog.Logger) (store.Store, error) {
	st, err := redisstore.New(ctx, redisstore.Options{URL: url, Prefix: prefix, Retention: ret, Logger: log})
	if err != nil {
		return nil, err
	}
	// Start even while Redis is still coming up: /v1/health answers 503 and publishes fail
	// with store_unavailable until it is reachable.
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := st.Ping(pctx); err != nil {
		log.Warn().Err(err).Msg("Redis is not reachable yet; serving 503 until it is")
	}
	return st, nil
}
