package main

import (
	"context"
	"errors"

	"github.com/herald-rt/herald/store"
)

func openRedisStore(ctx context.Context, url, prefix string, ret store.Retention) (store.Store, error) {
	return nil, errors.New("the Redis store is not wired in yet")
}
