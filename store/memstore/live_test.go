package memstore_test

import (
	"testing"

	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/store/storetest"
)

// The memory store is a single node: both "nodes" of the suites are the same Store.
func newNode(t *testing.T) *memstore.Store {
	s := memstore.New(memstore.Options{})
	t.Cleanup(func() { s.Close() })
	return s
}

func TestBroadcastContract(t *testing.T) {
	storetest.RunBroadcast(t, func(t *testing.T) (a, b storetest.BroadcastStore) {
		s := newNode(t)
		return s, s
	})
}

func TestBusContract(t *testing.T) {
	storetest.RunBus(t, func(t *testing.T) (a, b storetest.BusStore) {
		s := newNode(t)
		return s, s
	})
}
