package memstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/herald-rt/herald/store"
)

// PresenceOptions configures a Presence. The zero value is usable.
type PresenceOptions struct {
	// TTL is how long a membership lasts without a Refresh. Default store.DefaultPresenceTTL.
	TTL time.Duration
	// MaxMembers is the most users a channel may have; more sockets of a user already there
	// are always accepted. Zero means store.DefaultMaxMembers, negative means no limit.
	MaxMembers int
	// Now is the clock; tests may replace it. Defaults to time.Now.
	Now func() time.Time
}

// Presence is the single-process store.Presence, the companion of Store: one process holds
// every socket, so its members are simply kept in memory. It still honours leases, so the
// engine treats it exactly like the Redis one (a socket whose refresh stops leaves after TTL).
// It starts no goroutine and needs no Close.
type Presence struct {
	ttl        time.Duration
	maxMembers int // <= 0: no limit
	now        func() time.Time

	mu       sync.Mutex // guards channels
	channels map[string]*presenceChannel
}

// presenceChannel is one channel's memberships. Every socket in leases belongs to exactly one
// user in users, and every user there has at least one socket: a user whose last socket goes
// is deleted at once, which is what makes "first" and "last" exact.
type presenceChannel struct {
	leases map[string]*presenceLease // by socket id
	users  map[string]*presenceUser  // by user id
}

type presenceLease struct {
	user    string
	expires time.Time // the lease is live while now is before this
}

type presenceUser struct {
	info    json.RawMessage // the latest Join's, nil when it gave none
	sockets map[string]struct{}
}

var _ store.Presence = (*Presence)(nil)

// errSocketTaken: a socket id is already a member as another user. Socket ids are unique per
// connection and a connection authenticates once per channel, so this is a caller's bug;
// silently moving the socket would lose the old user's member_removed.
var errSocketTaken = errors.New("memstore: socket already joined this presence channel as another user")

// NewPresence returns an empty Presence.
func NewPresence(opts PresenceOptions) *Presence {
	p := &Presence{
		ttl:        opts.TTL,
		maxMembers: opts.MaxMembers,
		now:        opts.Now,
		channels:   make(map[string]*presenceChannel),
	}
	if p.ttl <= 0 {
		p.ttl = store.DefaultPresenceTTL
	}
	if p.maxMembers == 0 {
		p.maxMembers = store.DefaultMaxMembers
	}
	if p.now == nil {
		p.now = time.Now
	}
	return p
}

// TTL is the lease length: the engine refreshes its sockets well within it (e.g. every TTL/3).
func (p *Presence) TTL() time.Duration { return p.ttl }

// Join implements store.Presence.
//
// A lease that ran out counts as gone even before Expire reaps it, as it does for Members: a
// user whose only sockets have expired joins as first, and those expired sockets are dropped
// then, so no later Expire reports the user as left while it is here.
func (p *Presence) Join(ctx context.Context, channel, socketID string, m store.Member) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := checkPresenceArgs(channel, socketID, m.UserID, true); err != nil {
		return false, err
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := p.channels[channel]
	if ch == nil {
		ch = &presenceChannel{leases: map[string]*presenceLease{}, users: map[string]*presenceUser{}}
	}
	if l, ok := ch.leases[socketID]; ok && l.user != m.UserID {
		return false, errSocketTaken
	}
	u := ch.users[m.UserID]
	first := u == nil || !ch.hasLive(u, now)
	if first && p.maxMembers > 0 && len(ch.users) >= p.maxMembers && ch.liveUsers(now) >= p.maxMembers {
		return false, store.ErrPresenceFull // nothing was changed yet
	}
	if u == nil {
		u = &presenceUser{sockets: map[string]struct{}{}}
		ch.users[m.UserID] = u
	} else {
		ch.dropExpired(u, now)
	}
	u.info = cloneRaw(m.UserInfo)
	u.sockets[socketID] = struct{}{}
	ch.leases[socketID] = &presenceLease{user: m.UserID, expires: now.Add(p.ttl)}
	p.channels[channel] = ch
	return first, nil
}

// Leave implements store.Presence. The user's other sockets whose lease ran out go with it:
// when no live one is left the user is reported as leaving here, and must not be again by
// Expire.
func (p *Presence) Leave(ctx context.Context, channel, socketID string) (store.Member, bool, bool, error) {
	if err := ctx.Err(); err != nil {
		return store.Member{}, false, false, err
	}
	if err := checkPresenceArgs(channel, socketID, "", false); err != nil {
		return store.Member{}, false, false, err
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := p.channels[channel]
	if ch == nil {
		return store.Member{}, false, false, nil
	}
	l, ok := ch.leases[socketID]
	if !ok {
		return store.Member{}, false, false, nil
	}
	u := ch.users[l.user]
	m := store.Member{UserID: l.user, UserInfo: cloneRaw(u.info)}
	delete(ch.leases, socketID)
	delete(u.sockets, socketID)
	ch.dropExpired(u, now)
	last := len(u.sockets) == 0
	if last {
		delete(ch.users, l.user)
		if len(ch.users) == 0 {
			delete(p.channels, channel)
		}
	}
	return m, last, true, nil
}

// Refresh implements store.Presence. Only live leases are renewed: one that ran out has ended
// (Members already hides it and Expire will report its user), so reviving it would bring the
// user back without a member_added.
func (p *Presence) Refresh(ctx context.Context, channel string, socketIDs []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if channel == "" {
		return errors.New("memstore: presence: empty channel name")
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := p.channels[channel]
	if ch == nil {
		return nil
	}
	for _, id := range socketIDs {
		if l, ok := ch.leases[id]; ok && now.Before(l.expires) {
			l.expires = now.Add(p.ttl)
		}
	}
	return nil
}

// Expire implements store.Presence. The lock makes each reap atomic, so concurrent callers
// split the expired users between them and none is returned twice. Users come back ordered
// by id.
func (p *Presence) Expire(ctx context.Context, channel string) ([]store.Member, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if channel == "" {
		return nil, errors.New("memstore: presence: empty channel name")
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := p.channels[channel]
	if ch == nil {
		return nil, nil
	}
	var gone []store.Member
	for id, l := range ch.leases {
		if now.Before(l.expires) {
			continue
		}
		delete(ch.leases, id)
		u := ch.users[l.user]
		delete(u.sockets, id)
		if len(u.sockets) == 0 {
			delete(ch.users, l.user)
			gone = append(gone, store.Member{UserID: l.user, UserInfo: cloneRaw(u.info)})
		}
	}
	if len(ch.users) == 0 {
		delete(p.channels, channel)
	}
	sortMembers(gone)
	return gone, nil
}

// Members implements store.Presence.
func (p *Presence) Members(ctx context.Context, channel string) ([]store.Member, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if channel == "" {
		return nil, errors.New("memstore: presence: empty channel name")
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := p.channels[channel]
	if ch == nil {
		return nil, nil
	}
	var ms []store.Member
	for id, u := range ch.users {
		if ch.hasLive(u, now) {
			ms = append(ms, store.Member{UserID: id, UserInfo: cloneRaw(u.info)})
		}
	}
	sortMembers(ms)
	return ms, nil
}

// hasLive reports whether u has a socket whose lease has not run out.
func (c *presenceChannel) hasLive(u *presenceUser, now time.Time) bool {
	for id := range u.sockets {
		if now.Before(c.leases[id].expires) {
			return true
		}
	}
	return false
}

// liveUsers counts the users with a live lease: those a new user competes with for a place.
// It walks every user, so Join calls it only when the channel is at the limit counting users
// whose leases ran out but are not reaped yet.
func (c *presenceChannel) liveUsers(now time.Time) int {
	n := 0
	for _, u := range c.users {
		if c.hasLive(u, now) {
			n++
		}
	}
	return n
}

// dropExpired removes u's sockets whose lease ran out. The caller is about to report u's
// state (first or last) from its live sockets alone, so Expire must not report it again.
func (c *presenceChannel) dropExpired(u *presenceUser, now time.Time) {
	for id := range u.sockets {
		if !now.Before(c.leases[id].expires) {
			delete(u.sockets, id)
			delete(c.leases, id)
		}
	}
}

func sortMembers(ms []store.Member) {
	slices.SortFunc(ms, func(a, b store.Member) int { return strings.Compare(a.UserID, b.UserID) })
}

// cloneRaw copies user info across the lock boundary, so neither the caller's buffer nor the
// value handed out aliases what is kept. Empty info is nil, to vanish under omitempty.
func cloneRaw(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return append(json.RawMessage(nil), b...)
}

func checkPresenceArgs(channel, socketID, userID string, join bool) error {
	switch {
	case channel == "":
		return errors.New("memstore: presence: empty channel name")
	case socketID == "":
		return fmt.Errorf("memstore: presence %s: empty socket id", channel)
	case join && userID == "":
		return fmt.Errorf("memstore: presence %s: empty user id", channel)
	}
	return nil
}
