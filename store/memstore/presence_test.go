package memstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/store/storetest"
)

func TestPresenceContract(t *testing.T) {
	storetest.RunPresence(t, func(t *testing.T, cfg storetest.PresenceConfig) (store.Presence, store.Presence) {
		p := memstore.NewPresence(memstore.PresenceOptions{TTL: cfg.TTL, MaxMembers: cfg.MaxMembers})
		return p, p // one process: the second "node" is the same member set
	})
}

// TestPresenceClock drives leases with a fake clock, checking the boundary exactly: a lease
// is live strictly before its expiry.
func TestPresenceClock(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	p := memstore.NewPresence(memstore.PresenceOptions{TTL: 10 * time.Second, Now: func() time.Time { return now }})
	ctx := context.Background()
	if p.TTL() != 10*time.Second {
		t.Fatalf("TTL %v", p.TTL())
	}
	if _, err := p.Join(ctx, "presence-c", "1.1", store.Member{UserID: "u1"}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(9 * time.Second)
	if err := p.Refresh(ctx, "presence-c", []string{"1.1"}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(10*time.Second - time.Nanosecond) // just before the refreshed expiry
	if ms, _ := p.Members(ctx, "presence-c"); len(ms) != 1 {
		t.Fatalf("members just before expiry: %v", ms)
	}
	if gone, _ := p.Expire(ctx, "presence-c"); len(gone) != 0 {
		t.Fatalf("expired early: %v", gone)
	}
	now = now.Add(time.Nanosecond)
	if ms, _ := p.Members(ctx, "presence-c"); len(ms) != 0 {
		t.Fatalf("members at expiry: %v", ms)
	}
	if gone, _ := p.Expire(ctx, "presence-c"); len(gone) != 1 || gone[0].UserID != "u1" {
		t.Fatalf("expire at expiry: %v", gone)
	}
}

func TestPresenceDefaults(t *testing.T) {
	p := memstore.NewPresence(memstore.PresenceOptions{})
	if p.TTL() != store.DefaultPresenceTTL {
		t.Fatalf("TTL %v", p.TTL())
	}
	ctx := context.Background()
	for i := range store.DefaultMaxMembers {
		if _, err := p.Join(ctx, "presence-c", fmt.Sprintf("1.%d", i), store.Member{UserID: fmt.Sprint(i)}); err != nil {
			t.Fatalf("user %d: %v", i+1, err)
		}
	}
	if _, err := p.Join(ctx, "presence-c", "2.1", store.Member{UserID: "one too many"}); !errors.Is(err, store.ErrPresenceFull) {
		t.Fatalf("user %d: %v, want ErrPresenceFull", store.DefaultMaxMembers+1, err)
	}
	unlimited := memstore.NewPresence(memstore.PresenceOptions{MaxMembers: -1})
	for i := range 2 * store.DefaultMaxMembers {
		if _, err := unlimited.Join(ctx, "presence-c", fmt.Sprintf("1.%d", i), store.Member{UserID: fmt.Sprint(i)}); err != nil {
			t.Fatalf("unlimited, user %d: %v", i+1, err)
		}
	}
}
