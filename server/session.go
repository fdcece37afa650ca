package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/stream"
)

// A session is the server side of one socket: the engine's stream.Socket, the token it was
// opened with, its presence memberships, its whisper budget and, for a long-poll socket, its
// poll state. Everything the HTTP layer keeps about a socket lives here; it is created in one
// place (sessions.open) and ends in one place (session.close), whatever ends it — the
// client leaving, a poll socket nobody polls, terminate_connections, shutdown.
type session struct {
	srv  *Server
	app  *App
	sock *stream.Socket
	// claims is the token the socket was opened with (nil without one). In JWT mode it
	// authorizes the socket's later subscriptions when a call carries no token of its own.
	claims *Claims
	// poll is the state of a socket read by long-poll; nil for one read by a stream.
	poll *pollState
	// kind is the transport the census counts the session under; it was admitted before the
	// socket opened and leaves when the session closes.
	kind transport

	mu      sync.Mutex
	closed  bool
	members map[string]store.Member // presence channel → the identity the socket joined as
	user    string                  // the user the socket signed in as (users.go), or
	budget  bucket                  // client events this socket may still send
}

// pollState is what a long-poll socket keeps between polls: it has no connection of its own,
// so it expires when its client stops polling.
type pollState struct {
	mu       sync.Mutex   // one poll at a time
	lastSeen atomic.Int64 // unix nanoseconds of the last poll's start or end
	// The last non-empty answer, kept until the client confirms it with seq, so an answer lost
	// on the way is sent again rather than lost. Guarded by mu.
	seq    uint64
	answer []byte
}

func (p *pollState) touch(now time.Time) { p.lastSeen.Store(now.UnixNano()) }

// sessions are a node's sessions by socket id.
type sessions struct {
	mu   sync.Mutex
	byID map[string]*session
	// clock is when poll sockets were last polled and expire by: time.Now unless a test moves
	// it instead of sleeping.
	clock atomic.Pointer[func() time.Time]
}

func (r *sessions) now() time.Time {
	if f := r.clock.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

func (r *sessions) setClock(f func() time.Time) { r.clock.Store(&f) }

// open registers the session of a socket just opened on srv, whose connection the census
// admitted as kind.
func (r *sessions) open(srv *Server, app *App, sock *stream.Socket, claims *Claims, kind transport) *session {
	ss := &session{srv: srv, app: app, sock: sock, claims: claims, kind: kind}
	if kind == transportPollSocket {
		ss.poll = new(pollState)
		ss.poll.touch(r.now())
	}
	r.mu.Lock()
	if r.byID == nil {
		r.byID = make(map[string]*session)
	}
	r.byID[sock.ID()] = ss
	r.mu.Unlock()
	return ss
}

// get returns the open session of app with socket id, or nil.
func (r *sessions) get(app *App, id string) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ss := r.byID[id]; ss != nil && ss.app == app {
		return ss
	}
	return nil
}

// all lists the open sessions.
func (r *sessions) all() []*session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*session, 0, len(r.byID))
	for _, ss := range r.byID {
		out = append(out, ss)
	}
	return out
}

// close ends the session: its socket closes and its presence memberships end, with the
// member_removed announcements they call for. Closing twice is harmless.
func (ss *session) close() {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	ss.closed = true
	channels := make([]string, 0, len(ss.members))
	for ch := range ss.members {
		channels = append(channels, ch)
	}
	ss.mu.Unlock()

	r := &ss.srv.sessions
	r.mu.Lock()
	delete(r.byID, ss.sock.ID())
	r.mu.Unlock()
	ss.sock.Close()
	ss.srv.census.leave(ss.app, ss.kind)
	if len(channels) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, ch := range channels {
		ss.leave(ctx, ch)
	}
}

// terminate ends the session from outside its reader: a stream's goroutine or a poll closes it
// when its wait returns; a poll socket with no poll waiting is closed here.
func (ss *session) terminate() {
	ss.sock.Terminate()
	if ss.poll != nil {
		ss.poll.mu.Lock() // a poll that is waiting returns at once: its socket was terminated
		ss.close()
		ss.poll.mu.Unlock()
	}
}

// belongsTo reports whether the session is userID's: opened with a token of that subject,
// signed in as that user, or a presence member as that user.
func (ss *session) belongsTo(userID string) bool {
	if ss.claims != nil && ss.claims.Subject == userID {
		return true
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.user == userID {
		return true
	}
	for _, m := range ss.members {
		if m.UserID == userID {
			return true
		}
	}
	return false
}

// join makes the socket a member of a presence channel as member, announces a new user, and
// returns the subscription notice (the member list).
func (ss *session) join(ctx context.Context, channel string, member store.Member) (json.RawMessage, error) {
	app, id := ss.app, ss.sock.ID()
	if app.Presence == nil {
		return nil, errorf(http.StatusNotImplemented, "presence_unavailable", "this server keeps no presence")
	}
	first, err := app.Presence.Join(ctx, channel, id, member)
	switch {
	case errors.Is(err, store.ErrPresenceFull):
		return nil, errorf(http.StatusForbidden, "presence_full", "the presence channel has the most members allowed")
	case err != nil:
		return nil, errStoreUnavailable
	}
	ss.mu.Lock()
	if ss.closed {
		// The socket ended while the store was joining it: undo, quietly, as the others
		// never heard of this membership.
		ss.mu.Unlock()
		_, _, _, _ = app.Presence.Leave(context.WithoutCancel(ctx), channel, id)
		return nil, errSocketGone
	}
	if ss.members == nil {
		ss.members = make(map[string]store.Member)
	}
	ss.members[channel] = member
	ss.mu.Unlock()
	ss.srv.cfg.Metrics.presenceJoined(app.ID)
	if first {
		data, _ := json.Marshal(member)
		app.announce(ctx, ss.srv.log, channel, "herald:member_added", data, id)
		ss.srv.hook(ctx, app, hookEvent{Name: authz.HookMemberAdded, Channel: channel, UserID: member.UserID})
	}
	members, err := app.Presence.Members(ctx, channel)
	if err != nil {
		return nil, errStoreUnavailable
	}
	return presenceNotice(members), nil
}

// leave ends the socket's membership of a presence channel and announces a user that left.
func (ss *session) leave(ctx context.Context, channel string) {
	ss.mu.Lock()
	_, ok := ss.members[channel]
	delete(ss.members, channel)
	ss.mu.Unlock()
	if !ok {
		return
	}
	ss.srv.cfg.Metrics.presenceLeft(ss.app.ID)
	m, last, ok, err := ss.app.Presence.Leave(ctx, channel, ss.sock.ID())
	if err != nil {
		ss.srv.log.Warn().Err(err).Str("channel", channel).Msg("presence leave failed; the membership will expire")
		return
	}
	if ok && last {
		data, _ := json.Marshal(map[string]string{"user_id": m.UserID})
		ss.app.announce(ctx, ss.srv.log, channel, "herald:member_removed", data, "")
		ss.srv.hook(ctx, ss.app, hookEvent{Name: authz.HookMemberRemoved, Channel: channel, UserID: m.UserID})
	}
}

// member returns the identity the socket joined a presence channel as.
func (ss *session) member(channel string) (store.Member, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	m, ok := ss.members[channel]
	return m, ok
}

// presenceChannels lists the presence channels the socket is a member of.
func (ss *session) presenceChannels() []string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]string, 0, len(ss.members))
	for ch := range ss.members {
		out = append(out, ch)
	}
	return out
}

// allowWhisper takes one client event from the socket's budget: rate a second, in bursts of
// the same size. A rate of 0 or less means no limit.
func (ss *session) allowWhisper(rate float64, now time.Time) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.budget.take(rate, now)
}

// bucket is a token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) take(rate float64, now time.Time) bool {
	if rate <= 0 {
		return true
	}
	if b.last.IsZero() {
		b.tokens, b.last = rate, now
	}
	b.tokens = min(rate, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// presence lists, per app and presence channel, the sockets of this node that are members.
func (r *sessions) presence() map[*App]map[string][]string {
	out := make(map[*App]map[string][]string)
	for _, ss := range r.all() {
		for _, ch := range ss.presenceChannels() {
			if out[ss.app] == nil {
				out[ss.app] = make(map[string][]string)
			}
			out[ss.app][ch] = append(out[ss.app][ch], ss.sock.ID())
		}
	}
	return out
}

// terminateUser ends the sessions of app on this node that belong to userID and returns how
// many it ended.
func (r *sessions) terminateUser(app *App, userID string) int {
	n := 0
	for _, ss := range r.all() {
		if ss.app == app && ss.belongsTo(userID) {
			ss.terminate()
			n++
		}
	}
	return n
}

// expire closes poll sockets nobody polled for timeout.
func (r *sessions) expire(now time.Time, timeout time.Duration) {
	for _, ss := range r.all() {
		if ss.poll == nil || now.Sub(time.Unix(0, ss.poll.lastSeen.Load())) <= timeout {
			continue
		}
		if !ss.poll.mu.TryLock() {
			continue // a poll is waiting on it right now (polls may outlast the timeout)
		}
		ss.close()
		ss.poll.mu.Unlock()
	}
}
