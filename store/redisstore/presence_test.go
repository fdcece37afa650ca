package redisstore_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/store/storetest"
	"github.com/herald-rt/herald/test/testkit"
)

// newPresence returns a Presence on the test server with its own connection, as a node has.
func newPresence(t *testing.T, opts redisstore.PresenceOptions) *redisstore.Presence {
	t.Helper()
	if opts.Client == nil {
		opts.Client = rawClient(t, "")
	}
	p, err := redisstore.NewPresence(opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// presencePair returns two nodes sharing one fresh prefix, whose keys go at cleanup.
func presencePair(t *testing.T, cfg storetest.PresenceConfig) (string, *redisstore.Presence, *redisstore.Presence) {
	t.Helper()
	needRedis(t)
	prefix := uniquePrefix()
	t.Cleanup(func() { deleteKeys(t, prefix) })
	opts := redisstore.PresenceOptions{Prefix: prefix, TTL: cfg.TTL, MaxMembers: cfg.MaxMembers}
	return prefix, newPresence(t, opts), newPresence(t, opts)
}

func TestPresenceContract(t *testing.T) {
	needRedis(t)
	storetest.RunPresence(t, func(t *testing.T, cfg storetest.PresenceConfig) (store.Presence, store.Presence) {
		_, a, b := presencePair(t, cfg)
		return a, b
	})
}

// TestPresenceKeys checks the key layout: every key of a channel carries the channel's hash
// tag (one cluster slot per script), expires on its own a little after the leases, and goes
// as soon as the channel is empty.
func TestPresenceKeys(t *testing.T) {
	t.Parallel()
	prefix, a, _ := presencePair(t, storetest.PresenceConfig{TTL: 10 * time.Second})
	ctx := testCtx(t)
	raw := rawClient(t, "")
	ch := "presence-keys.1"
	for _, j := range []struct{ socket, user, info string }{{"1.1", "u1", `{"a":1}`}, {"1.2", "u1", ""}, {"1.3", "u2", `{}`}} {
		if _, err := a.Join(ctx, ch, j.socket, store.Member{UserID: j.user, UserInfo: []byte(j.info)}); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := raw.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	base := prefix + "{" + ch + "}:p:"
	if want := []string{base + "i", base + "o", base + "s", base + "u"}; !slices.Equal(keys, want) {
		t.Fatalf("keys %q, want %q", keys, want)
	}
	for _, k := range keys {
		ttl, err := raw.PTTL(ctx, k).Result()
		if err != nil || ttl <= 10*time.Second || ttl > 20*time.Second {
			t.Fatalf("key %s expires in %v (%v), want between TTL and 2×TTL", k, ttl, err)
		}
	}
	for _, s := range []string{"1.1", "1.2", "1.3"} {
		if _, _, _, err := a.Leave(ctx, ch, s); err != nil {
			t.Fatal(err)
		}
	}
	if keys, err := raw.Keys(ctx, prefix+"*").Result(); err != nil || len(keys) != 0 {
		t.Fatalf("keys left after everyone left: %q (%v)", keys, err)
	}
}

// TestPresenceNodesShareMembers: what one node's Join adds, another node's Members lists and
// its Leave removes, as two Herald processes pointed at one Redis would.
func TestPresenceNodesShareMembers(t *testing.T) {
	t.Parallel()
	_, a, b := presencePair(t, storetest.PresenceConfig{})
	ctx := testCtx(t)
	ch := "presence-shared"
	if first, err := a.Join(ctx, ch, "1.1", store.Member{UserID: "u1", UserInfo: []byte(`{"n":1}`)}); err != nil || !first {
		t.Fatalf("join on a: first=%v err=%v", first, err)
	}
	if first, err := b.Join(ctx, ch, "2.1", store.Member{UserID: "u1", UserInfo: []byte(`{"n":1}`)}); err != nil || first {
		t.Fatalf("join of the same user on b: first=%v err=%v, want first=false", first, err)
	}
	ms, err := b.Members(ctx, ch)
	if err != nil || len(ms) != 1 || ms[0].UserID != "u1" {
		t.Fatalf("members on b: %+v (%v)", ms, err)
	}
	if _, last, ok, err := b.Leave(ctx, ch, "1.1"); err != nil || !ok || last {
		t.Fatalf("b ends a's socket: last=%v ok=%v err=%v", last, ok, err)
	}
	if _, last, ok, err := a.Leave(ctx, ch, "2.1"); err != nil || !ok || !last {
		t.Fatalf("a ends b's socket: last=%v ok=%v err=%v", last, ok, err)
	}
}

// TestPresenceLostScripts: scripts flushed from the server (a restart, SCRIPT FLUSH) are
// loaded again, also for the operations that are never resent. SCRIPT FLUSH reaches every
// client of the server, so it runs only on the server this test binary started for itself:
// on a shared one it could break another package's test that relies on a loaded script.
func TestPresenceLostScripts(t *testing.T) {
	if os.Getenv("HERALD_TEST_REDIS_URL") != "" {
		t.Skip("the Redis server is shared (HERALD_TEST_REDIS_URL); not flushing its scripts")
	}
	_, a, _ := presencePair(t, storetest.PresenceConfig{})
	ctx := testCtx(t)
	raw := rawClient(t, "")
	ch := "presence-flush"
	steps := []func() error{
		func() error { _, err := a.Join(ctx, ch, "1.1", store.Member{UserID: "u1"}); return err },
		func() error { return a.Refresh(ctx, ch, []string{"1.1"}) },
		func() error { _, err := a.Members(ctx, ch); return err },
		func() error { _, err := a.Expire(ctx, ch); return err },
		func() error { _, _, _, err := a.Leave(ctx, ch, "1.1"); return err },
	}
	for i, step := range steps {
		if err := raw.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := step(); err != nil {
			t.Fatalf("step %d after SCRIPT FLUSH: %v", i, err)
		}
	}
}

// TestPresenceLostReplyIsNotRetried: a Join whose reply is lost fails rather than being sent
// again. go-redis would resend it on a new connection, and the second run, finding the socket
// there, would answer first=false: the caller would never announce the member.
func TestPresenceLostReplyIsNotRetried(t *testing.T) {
	t.Parallel()
	needRedis(t)
	o, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newProxy(t, o.Addr)
	// go-redis's default retries stay on: Presence must switch them off for Join.
	client := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: o.DB, ReadTimeout: 300 * time.Millisecond})
	t.Cleanup(func() { client.Close() })
	prefix, direct, _ := presencePair(t, storetest.PresenceConfig{})
	p := newPresence(t, redisstore.PresenceOptions{Client: client, Prefix: prefix})
	ctx := testCtx(t)
	ch := "presence-lost"
	// Loads the script (a muted NOSCRIPT would look like a lost reply), and opens the
	// connection that goes mute.
	if _, err := p.Join(ctx, ch, "1.0", store.Member{UserID: "u0"}); err != nil {
		t.Fatal(err)
	}
	proxy.MuteReplies()
	first, err := p.Join(ctx, ch, "1.1", store.Member{UserID: "u1"})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("join without a reply: first=%v err=%v, want ErrUnavailable", first, err)
	}
	// It did run, once.
	if _, last, ok, err := direct.Leave(ctx, ch, "1.1"); err != nil || !ok || !last {
		t.Fatalf("leave after the lost join: last=%v ok=%v err=%v", last, ok, err)
	}
}

// TestPresenceExpireInBatches: Expire reaps a big backlog in several scripts, and a user whose
// sockets fall in different batches is reported once, by the batch that takes its last one.
// The joins must all happen within one TTL, which a loaded machine may not manage: then the
// attempt is repeated with a longer TTL.
func TestPresenceExpireInBatches(t *testing.T) {
	t.Parallel()
	for _, ttl := range []time.Duration{500 * time.Millisecond, 2 * time.Second, 8 * time.Second} {
		if expireInBatches(t, ttl) {
			return
		}
		t.Logf("joining took longer than a %v lease; trying a longer one", ttl)
	}
	t.Skip("the machine is too slow to check leases")
}

// expireInBatches reports false when the machine was too slow for ttl to tell anything.
func expireInBatches(t *testing.T, ttl time.Duration) bool {
	_, a, b := presencePair(t, storetest.PresenceConfig{TTL: ttl, MaxMembers: -1})
	ctx := testCtx(t)
	ch := "presence-batches"
	const users = 550 // two sockets each: more than two batches of leases
	start := time.Now()
	for pass := range 2 {
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := w; i < users; i += 4 {
					m := store.Member{UserID: fmt.Sprintf("u%03d", i), UserInfo: []byte(fmt.Sprintf(`{"i":%d}`, i))}
					if _, err := a.Join(ctx, ch, fmt.Sprintf("%d.%d", pass, i), m); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		time.Sleep(5 * time.Millisecond) // the second sockets expire strictly later
	}
	lastJoin := time.Now()
	if lastJoin.Sub(start) > ttl*3/4 {
		return false // first sockets ran out during the second pass
	}
	// Every lease has run out once the last one has: a quarter lease after it.
	testkit.WaitFor(2*ttl, func() bool { return time.Since(lastJoin) > ttl+ttl/4 })
	gone, err := b.Expire(ctx, ch)
	if time.Since(lastJoin) > 2*ttl-ttl/4 {
		return false // the channel's keys may have expired before Expire ran
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != users {
		t.Fatalf("expire returned %d users, want %d", len(gone), users)
	}
	for i, m := range gone {
		if want := fmt.Sprintf("u%03d", i); m.UserID != want || string(m.UserInfo) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("expired user %d is %s %s, want %s", i, m.UserID, m.UserInfo, want)
		}
	}
	if ms, err := a.Members(ctx, ch); err != nil || len(ms) != 0 {
		t.Fatalf("members after expiry: %d (%v)", len(ms), err)
	}
	return true
}

func TestPresenceUnavailable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	client := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, DialerRetries: 1, MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	p := newPresence(t, redisstore.PresenceOptions{Client: client})
	ctx := testCtx(t)
	checks := map[string]error{}
	_, checks["join"] = p.Join(ctx, "presence-down", "1.1", store.Member{UserID: "u1"})
	_, _, _, checks["leave"] = p.Leave(ctx, "presence-down", "1.1")
	checks["refresh"] = p.Refresh(ctx, "presence-down", []string{"1.1"})
	_, checks["expire"] = p.Expire(ctx, "presence-down")
	_, checks["members"] = p.Members(ctx, "presence-down")
	for op, err := range checks {
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable", op, err)
		}
	}
}

func TestPresenceRejectsBracedNames(t *testing.T) {
	needRedis(t)
	client := rawClient(t, "")
	if _, err := redisstore.NewPresence(redisstore.PresenceOptions{Client: client, Prefix: "a{b}:"}); err == nil {
		t.Fatal("a prefix with braces was accepted")
	}
	if _, err := redisstore.NewPresence(redisstore.PresenceOptions{}); err == nil {
		t.Fatal("a presence without a client was accepted")
	}
	p := newPresence(t, redisstore.PresenceOptions{Client: client, Prefix: uniquePrefix()})
	ctx := testCtx(t)
	if _, err := p.Join(ctx, "presence-a{b}", "1.1", store.Member{UserID: "u1"}); err == nil || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("join of a braced channel: %v, want a refusal", err)
	}
	if _, err := p.Members(ctx, "presence-}"); err == nil || !strings.Contains(err.Error(), "cannot be stored") {
		t.Fatalf("members of a braced channel: %v, want a refusal", err)
	}
}

func TestPresenceDefaults(t *testing.T) {
	needRedis(t)
	p := newPresence(t, redisstore.PresenceOptions{Client: rawClient(t, "")})
	if p.TTL() != store.DefaultPresenceTTL {
		t.Fatalf("TTL %v, want %v", p.TTL(), store.DefaultPresenceTTL)
	}
}
