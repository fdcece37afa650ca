package memstore_test

import (
	"testing"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/store/storetest"
)

func TestHookQueueContract(t *testing.T) {
	storetest.RunHookQueue(t, func(t *testing.T, cfg storetest.HookConfig) (store.HookQueue, store.HookQueue) {
		q := memstore.NewHookQueue(memstore.HookQueueOptions{Stale: cfg.Stale, MaxLen: cfg.MaxLen})
		return q, q
	})
}
