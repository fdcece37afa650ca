package memstore_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T, ret store.Retention) store.Store {
		s := memstore.New(memstore.Options{Retention: ret})
		t.Cleanup(func() { s.Close() })
		return s
	})
}
