package memstore_test

import (
	"testing"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/store/storetest"
)

func TestRegistryContract(t *testing.T) {
	storetest.RunRegistry(t, func(t *testing.T) (store.Registry, store.Registry) {
		r := memstore.NewRegistry(memstore.RegistryOptions{})
		return r, r // one process: the second "node" sees the same registry
	})
}
