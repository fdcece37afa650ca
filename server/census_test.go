package server

import (
	"testing"
	"time"
)

// TestAddrRate: an address opens a burst of a second's worth at once, then one per 1/rate
// seconds, and is told how long to wait; other addresses are not affected; idle addresses
// are forgotten.
func TestAddrRate(t *testing.T) {
	r := newAddrRate(2)
	now := time.Unix(1_700_000_000, 0)
	for i := range 2 {
		if _, ok := r.allow("10.0.0.1", now); !ok {
			t.Fatalf("connection %d of the burst refused", i)
		}
	}
	wait, ok := r.allow("10.0.0.1", now)
	if ok || wait != 1 {
		t.Fatalf("third at once: ok %v, retry after %d s; want refused, 1 s", ok, wait)
	}
	if _, ok := r.allow("10.0.0.2", now); !ok {
		t.Fatal("another address refused")
	}
	if _, ok := r.allow("10.0.0.1", now.Add(500*time.Millisecond)); !ok {
		t.Fatal("refused after half a second at 2 a second")
	}
	if _, ok := r.allow("10.0.0.1", now.Add(600*time.Millisecond)); ok {
		t.Fatal("two within a tenth of a second after the burst")
	}
	// Past a minute both buckets are full again: the sweep forgets them.
	r.allow("10.0.0.3", now.Add(2*time.Minute))
	if len(r.buckets) != 1 {
		t.Fatalf("%d addresses remembered after the sweep, want only the new one", len(r.buckets))
	}
	if newAddrRate(0) != nil {
		t.Fatal("rate 0 must mean no limit")
	}
	if _, ok := (*addrRate)(nil).allow("x", now); !ok {
		t.Fatal("no limit refused")
	}
}
