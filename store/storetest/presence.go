package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/store"
)

// PresenceConfig is what a presence test asks of its backend.
type PresenceConfig struct {
	TTL        time.Duration // lease length; zero: the implementation's default
	MaxMembers int           // most users per channel; zero: the implementation's default
}

// PresenceFactory returns two store.Presence values on one fresh backend configured as
// asked: two nodes of a deployment, which must see one member set. An implementation with
// nothing to share (memory) returns the same value twice. Cleanup is the factory's.
type PresenceFactory func(t *testing.T, cfg PresenceConfig) (a, b store.Presence)

// presenceTTL is the first lease the expiry tests try (see leaseClock): short, to keep the
// suite quick.
const presenceTTL = 300 * time.Millisecond

// RunPresence runs the presence contract suite against the backends newPresence makes. The
// tests that wait for leases to run out run in parallel, so the suite takes about a second
// (longer on a loaded machine, where they retry with longer leases).
func RunPresence(t *testing.T, newPresence PresenceFactory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, newPresence PresenceFactory)
		slow bool
	}{
		{"FirstAndLastSocket", testPresenceFirstLast, false},
		{"MembersSortedOnePerUser", testPresenceMembers, false},
		{"LimitCountsUsers", testPresenceLimit, false},
		{"LeaveTwice", testPresenceLeaveTwice, false},
		{"RejoinSameSocket", testPresenceRejoin, false},
		{"SocketOfAnotherUser", testPresenceSocketTaken, false},
		{"ChannelsAreIndependent", testPresenceChannels, false},
		{"UserInfoRoundTrip", testPresenceUserInfo, false},
		{"ConcurrentJoinsAndLeaves", testPresenceConcurrent, false},
		{"ConcurrentJoinsAtLimit", testPresenceConcurrentLimit, false},
		{"InvalidArguments", testPresenceInvalid, false},
		{"CanceledContext", testPresenceCanceled, false},
		{"LeaseExpires", testPresenceLeaseExpires, true},
		{"ConcurrentExpireReturnsEachUserOnce", testPresenceConcurrentExpire, true},
		{"ExpiredLeaseAndRejoin", testPresenceExpiredRejoin, true},
		{"ExpiredLeaseAndLeave", testPresenceExpiredLeave, true},
		{"ExpiredUsersFreeTheirPlace", testPresenceExpiredLimit, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.slow {
				t.Parallel()
			}
			tc.fn(t, newPresence)
		})
	}
}

func info(s string) json.RawMessage { return json.RawMessage(s) }

func member(id, userInfo string) store.Member {
	m := store.Member{UserID: id}
	if userInfo != "" {
		m.UserInfo = info(userInfo)
	}
	return m
}

func join(t *testing.T, p store.Presence, ch, socket string, m store.Member, wantFirst bool) {
	t.Helper()
	first, err := p.Join(ctx(t), ch, socket, m)
	if err != nil {
		t.Fatalf("join %s as %s: %v", socket, m.UserID, err)
	}
	if first != wantFirst {
		t.Fatalf("join %s as %s: first=%v, want %v", socket, m.UserID, first, wantFirst)
	}
}

func leave(t *testing.T, p store.Presence, ch, socket, wantUser string, wantLast bool) store.Member {
	t.Helper()
	m, last, ok, err := p.Leave(ctx(t), ch, socket)
	if err != nil {
		t.Fatalf("leave %s: %v", socket, err)
	}
	if !ok || m.UserID != wantUser || last != wantLast {
		t.Fatalf("leave %s: user %q last=%v ok=%v, want user %q last=%v ok=true", socket, m.UserID, last, ok, wantUser, wantLast)
	}
	return m
}

// checkMembers asserts the channel's members are exactly want, in that order.
func checkMembers(t *testing.T, p store.Presence, ch string, want ...store.Member) {
	t.Helper()
	got, err := p.Members(ctx(t), ch)
	if err != nil {
		t.Fatalf("members: %v", err)
	}
	if !sameMembers(got, want) {
		t.Fatalf("members %s, want %s", showMembers(got), showMembers(want))
	}
}

func sameMembers(a, b []store.Member) bool {
	return slices.EqualFunc(a, b, func(x, y store.Member) bool {
		return x.UserID == y.UserID && string(x.UserInfo) == string(y.UserInfo)
	})
}

func showMembers(ms []store.Member) string {
	s := "["
	for i, m := range ms {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%q:%s", m.UserID, m.UserInfo)
	}
	return s + "]"
}

func testPresenceFirstLast(t *testing.T, newPresence PresenceFactory) {
	a, b := newPresence(t, PresenceConfig{})
	ch := "presence-" + Channel(t)
	alice, bob := member("alice", `{"n":"A"}`), member("bob", `{"n":"B"}`)
	// Sockets of one user spread over both nodes still make one member.
	join(t, a, ch, "1.1", alice, true)
	join(t, b, ch, "2.1", alice, false)
	join(t, a, ch, "1.2", alice, false)
	join(t, b, ch, "2.2", bob, true)
	join(t, a, ch, "1.3", bob, false)
	checkMembers(t, a, ch, alice, bob)
	checkMembers(t, b, ch, alice, bob)

	leave(t, a, ch, "2.1", "alice", false) // any node may end any socket
	leave(t, b, ch, "1.1", "alice", false)
	if m := leave(t, a, ch, "1.2", "alice", true); string(m.UserInfo) != `{"n":"A"}` {
		t.Fatalf("leaving user's info %s, want %s", m.UserInfo, `{"n":"A"}`)
	}
	checkMembers(t, b, ch, bob)
	leave(t, b, ch, "1.3", "bob", false)
	leave(t, a, ch, "2.2", "bob", true)
	checkMembers(t, a, ch)
	checkMembers(t, b, ch)
	// An emptied channel starts over.
	join(t, b, ch, "2.3", bob, true)
}

func testPresenceMembers(t *testing.T, newPresence PresenceFactory) {
	a, b := newPresence(t, PresenceConfig{})
	ch := "presence-" + Channel(t)
	checkMembers(t, a, ch) // an unknown channel has no members
	ids := []string{"carol", "10", "Zed", "émile", "2", "alice", "bob"}
	for i, id := range ids {
		p := a
		if i%2 == 1 {
			p = b
		}
		join(t, p, ch, fmt.Sprintf("1.%d", i), member(id, fmt.Sprintf(`{"i":%d}`, i)), true)
	}
	// Another socket of alice with new info: still one alice, with the latest info.
	join(t, b, ch, "2.1", member("alice", `{"i":"latest"}`), false)
	// A user without info.
	join(t, a, ch, "2.2", member("dave", ""), true)
	want := []store.Member{ // byte order, as Go compares strings
		member("10", `{"i":1}`), member("2", `{"i":4}`), member("Zed", `{"i":2}`),
		member("alice", `{"i":"latest"}`), member("bob", `{"i":6}`), member("carol", `{"i":0}`),
		member("dave", ""), member("émile", `{"i":3}`),
	}
	checkMembers(t, a, ch, want...)
	checkMembers(t, b, ch, want...)
	// The latest info is what the last socket's Leave reports too.
	leave(t, a, ch, "1.5", "alice", false)
	if m := leave(t, a, ch, "2.1", "alice", true); string(m.UserInfo) != `{"i":"latest"}` {
		t.Fatalf("alice left with info %s, want the latest", m.UserInfo)
	}
}

func testPresenceLimit(t *testing.T, newPresence PresenceFactory) {
	a, b := newPresence(t, PresenceConfig{MaxMembers: 3})
	ch := "presence-" + Channel(t)
	join(t, a, ch, "1.1", member("u1", ""), true)
	join(t, b, ch, "2.1", member("u2", ""), true)
	join(t, a, ch, "1.2", member("u3", ""), true)
	for _, p := range []store.Presence{a, b} {
		if first, err := p.Join(ctx(t), ch, "2.9", member("u4", `{"x":1}`)); !errors.Is(err, store.ErrPresenceFull) || first {
			t.Fatalf("4th user: first=%v err=%v, want ErrPresenceFull", first, err)
		}
	}
	// The refused join changed nothing.
	checkMembers(t, a, ch, member("u1", ""), member("u2", ""), member("u3", ""))
	if _, _, ok, err := b.Leave(ctx(t), ch, "2.9"); ok || err != nil {
		t.Fatalf("leave of the refused socket: ok=%v err=%v, want nothing to leave", ok, err)
	}
	// More sockets of members already there do not count.
	join(t, b, ch, "2.2", member("u1", ""), false)
	join(t, a, ch, "1.3", member("u3", `{"v":2}`), false)
	checkMembers(t, b, ch, member("u1", ""), member("u2", ""), member("u3", `{"v":2}`))
	// A user that leaves frees its place.
	leave(t, a, ch, "2.1", "u2", true)
	join(t, b, ch, "2.9", member("u4", `{"x":1}`), true)
	checkMembers(t, a, ch, member("u1", ""), member("u3", `{"v":2}`), member("u4", `{"x":1}`))
}

func testPresenceLeaveTwice(t *testing.T, newPresence PresenceFactory) {
	a, b := newPresence(t, PresenceConfig{})
	ch := "presence-" + Channel(t)
	join(t, a, ch, "1.1", member("u1", ""), true)
	join(t, a, ch, "1.2", member("u2", ""), true)
	leave(t, a, ch, "1.1", "u1", true)
	for _, c := range []struct{ ch, socket string }{{ch, "1.1"}, {ch, "9.9"}, {"presence-" + Channel(t), "1.1"}} {
		for _, p := range []store.Presence{a, b} {
			m, last, ok, err := p.Leave(ctx(t), c.ch, c.socket)
			if err != nil || ok || last || m.UserID != "" {
				t.Fatalf("leave %s of %s again: %+v last=%v ok=%v err=%v, want nothing", c.socket, c.ch, m, last, ok, err)
			}
		}
	}
	checkMembers(t, b, ch, member("u2", ""))
}

func testPresenceRejoin(t *testing.T, newPresence PresenceFactory) {
	a, b := newPresence(t, PresenceConfig{})
	ch := "presence-" + Channel(t)
	join(t, a, ch, "1.1", member("u1", `{"v":1}`), true)
	join(t, b, ch, "1.1", member("u1", `{"v":2}`), false)
	checkMembers(t, a, ch, member("u1", `{"v":2}`))
	// One socket joined twice is still one socket: its first Leave is the user's last.
	leave(t, a, ch, "1.1", "u1", true)
	checkMembers(t, b, ch)
}

func testPresenceSocketTaken(t *testing.T, newPresence PresenceFactory) {
	a, b := newPresence(t, PresenceConfig{})
	ch := "presence-" + Channel(t)
	join(t, a, ch, "1.1", member("u1", ""), true)
	if _, err := b.Join(ctx(t), ch, "1.1", member("u2", "")); err == nil {
		t.Fatal("a socket joined as a second user")
	}
	checkMembers(t, a, ch, member("u1", ""))
	leave(t, b, ch, "1.1", "u1", true)
}

func testPresenceChannels(t *testing.T, newPresence PresenceFactory) {
	a, b := newPresence(t, PresenceConfig{MaxMembers: 1})
	ch1, ch2 := "presence-"+Channel(t), "presence-"+Channel(t)
	join(t, a, ch1, "1.1", member("u1", `{"c":1}`), true)
	join(t, b, ch2, "1.1", member("u1", `{"c":2}`), true) // same socket and user elsewhere
	if _, err := a.Join(ctx(t), ch1, "1.2", member("u2", "")); !errors.Is(err, store.ErrPresenceFull) {
		t.Fatalf("second user of ch1 (limit 1): %v, want ErrPresenceFull", err)
	}
	checkMembers(t, a, ch1, member("u1", `{"c":1}`))
	checkMembers(t, a, ch2, member("u1", `{"c":2}`))
	leave(t, b, ch1, "1.1", "u1", true)
	checkMembers(t, b, ch1)
	checkMembers(t, b, ch2, member("u1", `{"c":2}`))
	join(t, a, ch1, "1.2", member("u2", ""), true)
	leave(t, a, ch2, "1.1", "u1", true)
}

func testPresenceUserInfo(t *testing.T, newPresence PresenceFactory) {
	a, b := newPresence(t, PresenceConfig{})
	ch := "presence-" + Channel(t)
	infos := []string{
		`{"name":"Zoë Ωmega 😀","tags":["a","b"],"nested":{"x":[1,2.5,{"y":null,"z":true}]}}`,
		`{ "spaced" : [ 1 , 2 ] ,"esc":"\u00e9\n\"q\"\\" }`, // not compact: kept as given
		`"just a string"`,
		`12345678901234567890`,
		fmt.Sprintf(`{"big":"%01000d"}`, 7), // Pusher's 1 KB of user info
	}
	var want []store.Member
	for i, s := range infos {
		m := member(fmt.Sprintf("user-%d", i), s)
		join(t, a, ch, fmt.Sprintf("1.%d", i), m, true)
		want = append(want, m)
	}
	checkMembers(t, b, ch, want...)
	for i, s := range infos {
		if m := leave(t, b, ch, fmt.Sprintf("1.%d", i), fmt.Sprintf("user-%d", i), true); string(m.UserInfo) != s {
			t.Fatalf("leave reports info %s, want %s", m.UserInfo, s)
		}
	}
}

func testPresenceConcurrent(t *testing.T, newPresence PresenceFactory) {
	a, b := newPresence(t, PresenceConfig{})
	ch := "presence-" + Channel(t)
	const sockets = 16
	var firsts, lasts, errs sync.Map
	var wg sync.WaitGroup
	for i := range sockets {
		p := []store.Presence{a, b}[i%2]
		wg.Go(func() {
			first, err := p.Join(ctx(t), ch, fmt.Sprintf("1.%d", i), member("u1", ""))
			if err != nil {
				errs.Store(i, err)
			}
			if first {
				firsts.Store(i, true)
			}
		})
	}
	wg.Wait()
	if n := mapLen(&errs); n > 0 {
		t.Fatalf("%d joins failed", n)
	}
	if n := mapLen(&firsts); n != 1 {
		t.Fatalf("%d concurrent joins of one user reported first, want 1", n)
	}
	for i := range sockets {
		p := []store.Presence{a, b}[i%2]
		wg.Go(func() {
			_, last, ok, err := p.Leave(ctx(t), ch, fmt.Sprintf("1.%d", i))
			if err != nil || !ok {
				errs.Store(i, fmt.Errorf("ok=%v err=%v", ok, err))
			}
			if last {
				lasts.Store(i, true)
			}
		})
	}
	wg.Wait()
	if n := mapLen(&errs); n > 0 {
		t.Fatalf("%d leaves failed", n)
	}
	if n := mapLen(&lasts); n != 1 {
		t.Fatalf("%d concurrent leaves of one user reported last, want 1", n)
	}
	checkMembers(t, a, ch)
}

func testPresenceConcurrentLimit(t *testing.T, newPresence PresenceFactory) {
	a, b := newPresence(t, PresenceConfig{MaxMembers: 5})
	ch := "presence-" + Channel(t)
	const users = 20
	var ok, full, other sync.Map
	var wg sync.WaitGroup
	for i := range users {
		p := []store.Presence{a, b}[i%2]
		wg.Go(func() {
			_, err := p.Join(ctx(t), ch, fmt.Sprintf("1.%d", i), member(fmt.Sprintf("u%02d", i), ""))
			switch {
			case err == nil:
				ok.Store(i, true)
			case errors.Is(err, store.ErrPresenceFull):
				full.Store(i, true)
			default:
				other.Store(i, err)
			}
		})
	}
	wg.Wait()
	if mapLen(&ok) != 5 || mapLen(&full) != users-5 || mapLen(&other) != 0 {
		t.Fatalf("%d joined, %d full, %d failed; want 5, %d, 0", mapLen(&ok), mapLen(&full), mapLen(&other), users-5)
	}
	ms, err := b.Members(ctx(t), ch)
	if err != nil || len(ms) != 5 {
		t.Fatalf("members %s (%v), want the 5 that joined", showMembers(ms), err)
	}
}

func mapLen(m *sync.Map) int {
	n := 0
	m.Range(func(any, any) bool { n++; return true })
	return n
}

func testPresenceInvalid(t *testing.T, newPresence PresenceFactory) {
	a, _ := newPresence(t, PresenceConfig{})
	ch := "presence-" + Channel(t)
	if _, err := a.Join(ctx(t), ch, "", member("u1", "")); err == nil {
		t.Error("join without a socket id succeeded")
	}
	if _, err := a.Join(ctx(t), ch, "1.1", member("", "")); err == nil {
		t.Error("join without a user id succeeded")
	}
	if _, err := a.Join(ctx(t), "", "1.1", member("u1", "")); err == nil {
		t.Error("join without a channel succeeded")
	}
	checkMembers(t, a, ch)
}

func testPresenceCanceled(t *testing.T, newPresence PresenceFactory) {
	a, _ := newPresence(t, PresenceConfig{})
	ch := "presence-" + Channel(t)
	join(t, a, ch, "1.1", member("u1", ""), true)
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Join(c, ch, "1.2", member("u2", "")); err == nil {
		t.Error("join with a canceled context succeeded")
	}
	if _, _, _, err := a.Leave(c, ch, "1.1"); err == nil {
		t.Error("leave with a canceled context succeeded")
	}
	if err := a.Refresh(c, ch, []string{"1.1"}); err == nil {
		t.Error("refresh with a canceled context succeeded")
	}
	if _, err := a.Expire(c, ch); err == nil {
		t.Error("expire with a canceled context succeeded")
	}
	if _, err := a.Members(c, ch); err == nil {
		t.Error("members with a canceled context succeeded")
	}
	checkMembers(t, a, ch, member("u1", ""))
}

// The lease tests assume two kinds of timing. That a lease not renewed for longer than the
// TTL has run out holds by construction: the tests sleep at least that long. That a lease
// renewed less than a TTL ago is still live is an upper bound on elapsed time, which a loaded
// machine (the race detector, parallel packages) can break. leaseClock checks each such
// assumption after the fact; when one did not hold the attempt proves nothing, so it is
// skipped and the scenario runs again with a longer TTL. A machine too slow for the longest
// one skips the test rather than fail it: nothing was learned about the store.
type leaseClock struct {
	t    *testing.T
	ttl  time.Duration
	last bool  // the final attempt
	slow *bool // set when the attempt was abandoned
}

// leaseAttempts bounds the retries: presenceTTL, ×4, ×16.
const leaseAttempts = 3

func runLeaseScenario(t *testing.T, newPresence PresenceFactory, cfg PresenceConfig,
	scenario func(c *leaseClock, a, b store.Presence)) {
	ttl := presenceTTL
	for attempt := 1; ; attempt++ {
		slow := false
		t.Run(fmt.Sprintf("TTL=%v", ttl), func(t *testing.T) {
			cfg.TTL = ttl
			a, b := newPresence(t, cfg)
			scenario(&leaseClock{t: t, ttl: ttl, last: attempt == leaseAttempts, slow: &slow}, a, b)
		})
		if !slow || attempt == leaseAttempts {
			return
		}
		ttl *= 4
	}
}

// within checks that a lease granted or renewed after mark is certainly still live: less
// than the TTL has passed, with a margin for the millisecond rounding of the store's clock.
func (c *leaseClock) within(mark time.Time) {
	c.t.Helper()
	if d := time.Since(mark); d >= c.ttl-c.ttl/8 {
		*c.slow = true
		if c.last {
			c.t.Skipf("%v passed where a lease of %v had to stay live: the machine is too slow to check leases", d, c.ttl)
		}
		c.t.Skipf("%v passed where a lease of %v had to stay live; trying a longer TTL", d, c.ttl)
	}
}

// pause sleeps long enough for every lease granted before it to run out.
func (c *leaseClock) pause() { time.Sleep(c.ttl + c.ttl/4) }

// join is join with a first answer that relies on a lease granted after mark.
func (c *leaseClock) join(p store.Presence, ch, socket string, m store.Member, wantFirst bool, mark time.Time) {
	c.t.Helper()
	first, err := p.Join(ctx(c.t), ch, socket, m)
	c.within(mark)
	if err != nil || first != wantFirst {
		c.t.Fatalf("join %s as %s: first=%v err=%v, want first=%v", socket, m.UserID, first, err, wantFirst)
	}
}

// members is checkMembers for members whose leases were granted or renewed after mark.
func (c *leaseClock) members(p store.Presence, ch string, mark time.Time, want ...store.Member) {
	c.t.Helper()
	got, err := p.Members(ctx(c.t), ch)
	c.within(mark)
	if err != nil {
		c.t.Fatalf("members: %v", err)
	}
	if !sameMembers(got, want) {
		c.t.Fatalf("members %s, want %s", showMembers(got), showMembers(want))
	}
}

// expire calls Expire, which must find live the leases granted or renewed after mark.
func (c *leaseClock) expire(p store.Presence, ch string, mark time.Time) []store.Member {
	c.t.Helper()
	ms, err := p.Expire(ctx(c.t), ch)
	c.within(mark)
	if err != nil {
		c.t.Fatalf("expire: %v", err)
	}
	return ms
}

// refreshFor refreshes sockets on p every third of the TTL until the leases of everything
// joined before it have run out. Their leases, granted after mark, must survive each gap. It
// returns the mark of the last refresh.
func (c *leaseClock) refreshFor(p store.Presence, ch string, sockets []string, mark time.Time) time.Time {
	c.t.Helper()
	deadline := time.Now().Add(c.ttl + c.ttl/4)
	for {
		next := time.Now()
		if err := p.Refresh(ctx(c.t), ch, sockets); err != nil {
			c.t.Fatalf("refresh: %v", err)
		}
		c.within(mark)
		mark = next
		left := time.Until(deadline)
		if left <= 0 {
			return mark
		}
		time.Sleep(min(c.ttl/3, left))
	}
}

func testPresenceLeaseExpires(t *testing.T, newPresence PresenceFactory) {
	runLeaseScenario(t, newPresence, PresenceConfig{}, func(c *leaseClock, a, b store.Presence) {
		t := c.t
		ch := "presence-" + Channel(t)
		kept, dead := member("kept", `{"k":1}`), member("dead", `{"d":"😀"}`)
		// a keeps refreshing its sockets; b's node "dies" after joining.
		mark := time.Now()
		join(t, a, ch, "1.1", kept, true)
		c.join(b, ch, "2.1", kept, false, mark)
		join(t, b, ch, "2.2", dead, true)
		if got := c.expire(b, ch, mark); len(got) != 0 {
			t.Fatalf("expire before any lease ran out returned %s", showMembers(got))
		}
		mark = c.refreshFor(a, ch, []string{"1.1", "unknown"}, mark)
		// Past the TTL: the dead node's user is hidden already, before anyone calls Expire;
		// the kept user stays thanks to its refreshed socket, though its socket on b ran out.
		c.members(b, ch, mark, kept)
		// Refreshing a lease that ran out does not revive it.
		if err := b.Refresh(ctx(t), ch, []string{"2.1", "2.2"}); err != nil {
			t.Fatal(err)
		}
		c.members(a, ch, mark, kept)
		if got := c.expire(a, ch, mark); !sameMembers(got, []store.Member{dead}) {
			t.Fatalf("expire returned %s, want the dead user alone", showMembers(got))
		}
		if got := c.expire(b, ch, mark); len(got) != 0 {
			t.Fatalf("second expire returned %s again", showMembers(got))
		}
		// The reaped sockets are gone; the kept user's last socket is the refreshed one.
		if _, _, ok, err := a.Leave(ctx(t), ch, "2.2"); ok || err != nil {
			t.Fatalf("leave of an expired socket after expire: ok=%v err=%v", ok, err)
		}
		leave(t, b, ch, "1.1", "kept", true)
		checkMembers(t, a, ch)
	})
}

func testPresenceConcurrentExpire(t *testing.T, newPresence PresenceFactory) {
	runLeaseScenario(t, newPresence, PresenceConfig{}, func(c *leaseClock, a, b store.Presence) {
		t := c.t
		ch := "presence-" + Channel(t)
		const users = 30
		infos := map[string]string{}
		for i := range users {
			p := []store.Presence{a, b}[i%2]
			id := fmt.Sprintf("u%02d", i)
			infos[id] = fmt.Sprintf(`{"i":%d}`, i)
			mark := time.Now()
			join(t, p, ch, fmt.Sprintf("1.%d", i), member(id, infos[id]), true)
			if i%3 == 0 { // a second socket, which expires as well
				c.join(p, ch, fmt.Sprintf("2.%d", i), member(id, infos[id]), false, mark)
			}
		}
		mark := time.Now()
		join(t, a, ch, "3.1", member("survivor", ""), true)
		mark = c.refreshFor(a, ch, []string{"3.1"}, mark)

		const callers = 8
		results := make([][]store.Member, callers)
		errs := make([]error, callers)
		var wg sync.WaitGroup
		for i := range callers {
			p := []store.Presence{a, b}[i%2]
			wg.Go(func() { results[i], errs[i] = p.Expire(ctx(t), ch) })
		}
		wg.Wait()
		c.within(mark)
		seen := map[string]int{}
		for i := range callers {
			if errs[i] != nil {
				t.Fatalf("expire %d: %v", i, errs[i])
			}
			for _, m := range results[i] {
				seen[m.UserID]++
				if want := infos[m.UserID]; string(m.UserInfo) != want {
					t.Fatalf("expired %s with info %s, want %s", m.UserID, m.UserInfo, want)
				}
			}
			if !slices.IsSortedFunc(results[i], func(x, y store.Member) int {
				return strings.Compare(x.UserID, y.UserID)
			}) {
				t.Fatalf("expire %d returned %s, not ordered by user id", i, showMembers(results[i]))
			}
		}
		if len(seen) != users {
			t.Fatalf("expire returned %d distinct users, want %d: %v", len(seen), users, seen)
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("user %s returned by %d expire calls, want 1", id, n)
			}
		}
		c.members(b, ch, mark, member("survivor", ""))
	})
}

// testPresenceExpiredRejoin: a user whose every lease ran out is not a member any more, even
// before Expire reaps it, so its next socket joins as first; then it has not left, and Expire
// must not say it did.
func testPresenceExpiredRejoin(t *testing.T, newPresence PresenceFactory) {
	runLeaseScenario(t, newPresence, PresenceConfig{}, func(c *leaseClock, a, b store.Presence) {
		t := c.t
		ch := "presence-" + Channel(t)
		join(t, b, ch, "2.1", member("u1", `{"v":1}`), true)
		join(t, b, ch, "2.2", member("u2", ""), true) // rejoins with the same socket
		c.pause()
		checkMembers(t, a, ch)
		mark := time.Now()
		join(t, a, ch, "1.1", member("u1", `{"v":2}`), true)
		join(t, a, ch, "2.2", member("u2", ""), true)
		c.members(b, ch, mark, member("u1", `{"v":2}`), member("u2", ""))
		if got := c.expire(b, ch, mark); len(got) != 0 {
			t.Fatalf("expire returned %s, users that came back", showMembers(got))
		}
		if _, _, ok, _ := b.Leave(ctx(t), ch, "2.1"); ok {
			t.Fatal("u1's expired socket was still there after it rejoined")
		}
		leave(t, b, ch, "1.1", "u1", true)
		leave(t, a, ch, "2.2", "u2", true)
	})
}

// testPresenceExpiredLeave: when the last live socket of a user leaves, the user is reported
// leaving then, and not again by Expire for its sockets whose lease ran out.
func testPresenceExpiredLeave(t *testing.T, newPresence PresenceFactory) {
	runLeaseScenario(t, newPresence, PresenceConfig{}, func(c *leaseClock, a, b store.Presence) {
		t := c.t
		ch := "presence-" + Channel(t)
		mark := time.Now()
		join(t, b, ch, "2.1", member("u1", ""), true) // b dies
		c.join(a, ch, "1.1", member("u1", ""), false, mark)
		join(t, b, ch, "2.2", member("u2", ""), true) // b dies; its socket leaves late
		mark = c.refreshFor(a, ch, []string{"1.1"}, mark)
		c.members(a, ch, mark, member("u1", ""))
		leave(t, a, ch, "1.1", "u1", true)
		leave(t, a, ch, "2.2", "u2", true) // the late leave of an expired socket still reports it
		if got := expire(t, b, ch); len(got) != 0 {
			t.Fatalf("expire returned %s, users already reported leaving", showMembers(got))
		}
		checkMembers(t, b, ch)
	})
}

// testPresenceExpiredLimit: users whose leases ran out do not hold places under the limit,
// even before Expire reaps them.
func testPresenceExpiredLimit(t *testing.T, newPresence PresenceFactory) {
	runLeaseScenario(t, newPresence, PresenceConfig{MaxMembers: 2}, func(c *leaseClock, a, b store.Presence) {
		t := c.t
		ch := "presence-" + Channel(t)
		mark := time.Now()
		join(t, a, ch, "1.1", member("live", ""), true)
		join(t, b, ch, "2.1", member("dead", `{"d":1}`), true)
		mark = c.refreshFor(a, ch, []string{"1.1"}, mark)
		join(t, a, ch, "1.2", member("new", ""), true)
		_, err := a.Join(ctx(t), ch, "1.3", member("newer", ""))
		c.within(mark)
		if !errors.Is(err, store.ErrPresenceFull) {
			t.Fatalf("third live user: %v, want ErrPresenceFull", err)
		}
		if got := c.expire(b, ch, mark); !sameMembers(got, []store.Member{member("dead", `{"d":1}`)}) {
			t.Fatalf("expire returned %s, want the dead user", showMembers(got))
		}
		c.members(b, ch, mark, member("live", ""), member("new", ""))
	})
}

func expire(t *testing.T, p store.Presence, ch string) []store.Member {
	t.Helper()
	ms, err := p.Expire(ctx(t), ch)
	if err != nil {
		t.Fatalf("expire: %v", err)
	}
	return ms
}
