package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
)

// Presence channels: the node holding a socket joins it to the channel's member set (in
// Redis, shared by every node), announces herald:member_added when the user's first socket
// joins and herald:member_removed after its last one leaves, and renews the memberships of its
// sockets; memberships of a node that died expire, and whichever node notices announces them.

// memberships are this node's presence members, by app, channel and socket.
type memberships struct {
	mu sync.Mutex
	by map[*App]map[string]map[string]store.Member // app → channel → socket → member
}

func (m *memberships) add(app *App, channel, socketID string, member store.Member) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.by == nil {
		m.by = make(map[*App]map[string]map[string]store.Member)
	}
	chans := m.by[app]
	if chans == nil {
		chans = make(map[string]map[string]store.Member)
		m.by[app] = chans
	}
	socks := chans[channel]
	if socks == nil {
		socks = make(map[string]store.Member)
		chans[channel] = socks
	}
	socks[socketID] = member
}

// remove forgets one membership and reports whether there was one.
func (m *memberships) remove(app *App, channel, socketID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	socks := m.by[app][channel]
	if _, ok := socks[socketID]; !ok {
		return false
	}
	delete(socks, socketID)
	if len(socks) == 0 {
		delete(m.by[app], channel)
	}
	return true
}

// member returns the presence identity a socket joined channel with.
func (m *memberships) member(app *App, channel, socketID string) (store.Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mem, ok := m.by[app][channel][socketID]
	return mem, ok
}

// ofSocket lists the presence channels a socket is a member of.
func (m *memberships) ofSocket(app *App, socketID string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for ch, socks := range m.by[app] {
		if _, ok := socks[socketID]; ok {
			out = append(out, ch)
		}
	}
	return out
}

// snapshot lists, per app and channel, the sockets this node holds.
func (m *memberships) snapshot() map[*App]map[string][]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[*App]map[string][]string, len(m.by))
	for app, chans := range m.by {
		out[app] = make(map[string][]string, len(chans))
		for ch, socks := range chans {
			for id := range socks {
				out[app][ch] = append(out[app][ch], id)
			}
		}
	}
	return out
}

func limitsOf(app *App) authz.Limits {
	if app.Pusher != nil {
		return app.Pusher.Limits
	}
	return authz.DefaultLimits()
}

// checkMember applies the app's limits to a presence identity.
func checkMember(app *App, m store.Member) error {
	lim := limitsOf(app)
	if m.UserID == "" || utf8.RuneCountInString(m.UserID) > lim.MaxUserIDLength {
		return badRequest("invalid_user_id", "presence channels need a user id of 1 to the app's limit of characters")
	}
	if len(m.UserInfo) > lim.MaxUserInfoBytes {
		return errorf(http.StatusRequestEntityTooLarge, "user_info_too_large", "user_info is over the app's limit")
	}
	return nil
}

// presenceNotice is the subscription notice of a presence channel, in Pusher's shape.
func presenceNotice(members []store.Member) json.RawMessage {
	ids := make([]string, 0, len(members))
	hash := make(map[string]json.RawMessage, len(members))
	for _, m := range members {
		ids = append(ids, m.UserID)
		info := m.UserInfo
		if len(info) == 0 {
			info = json.RawMessage("null")
		}
		hash[m.UserID] = info
	}
	out, _ := json.Marshal(map[string]any{"presence": map[string]any{"count": len(members), "ids": ids, "hash": hash}})
	return out
}

// joinPresence joins socketID to channel as member and announces a new user. It returns the
// subscription notice.
func (s *Server) joinPresence(ctx context.Context, app *App, channel, socketID string, member store.Member) (json.RawMessage, error) {
	if app.Presence == nil {
		return nil, errorf(http.StatusNotImplemented, "presence_unavailable", "this server keeps no presence")
	}
	first, err := app.Presence.Join(ctx, channel, socketID, member)
	switch {
	case errors.Is(err, store.ErrPresenceFull):
		return nil, errorf(http.StatusForbidden, "presence_full", "the presence channel has the most members allowed")
	case err != nil:
		return nil, errStoreUnavailable
	}
	s.members.add(app, channel, socketID, member)
	if first {
		data, _ := json.Marshal(member)
		s.announce(ctx, app, channel, "herald:member_added", data, socketID)
	}
	members, err := app.Presence.Members(ctx, channel)
	if err != nil {
		return nil, errStoreUnavailable
	}
	return presenceNotice(members), nil
}

// leavePresence ends a socket's membership and announces a user that left.
func (s *Server) leavePresence(ctx context.Context, app *App, channel, socketID string) {
	if !s.members.remove(app, channel, socketID) {
		return
	}
	m, last, ok, err := app.Presence.Leave(ctx, channel, socketID)
	if err != nil {
		s.log.Warn().Err(err).Str("channel", channel).Msg("presence leave failed; the membership will expire")
		return
	}
	if ok && last {
		data, _ := json.Marshal(map[string]string{"user_id": m.UserID})
		s.announce(ctx, app, channel, "herald:member_removed", data, "")
	}
}

func (s *Server) announce(ctx context.Context, app *App, channel, event string, data json.RawMessage, except string) {
	b, ok := app.Hub.Store().(store.Broadcaster)
	if !ok {
		return
	}
	if err := b.Broadcast(ctx, store.Ephemeral{Channel: channel, Name: event, Data: data, SocketID: except}); err != nil {
		s.log.Warn().Err(err).Str("channel", channel).Str("event", event).Msg("presence announcement lost")
	}
}

// leaveAllPresence ends every membership of a closing socket.
func (s *Server) leaveAllPresence(app *App, socketID string) {
	chans := s.members.ofSocket(app, socketID)
	if len(chans) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, ch := range chans {
		s.leavePresence(ctx, app, ch, socketID)
	}
}

// presenceLoop renews this node's memberships and announces members whose lease ran out
// (a node that died), every third of the lease.
func (s *Server) presenceLoop() {
	defer s.janitor.Done()
	t := time.NewTicker(max(s.cfg.PresenceTTL/3, 20*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stopCtx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.stopCtx, s.cfg.PresenceTTL/3)
		for app, chans := range s.members.snapshot() {
			for ch, socks := range chans {
				if err := app.Presence.Refresh(ctx, ch, socks); err != nil {
					s.log.Warn().Err(err).Str("channel", ch).Msg("presence refresh failed")
				}
				gone, err := app.Presence.Expire(ctx, ch)
				if err != nil {
					continue
				}
				for _, m := range gone {
					data, _ := json.Marshal(map[string]string{"user_id": m.UserID})
					s.announce(ctx, app, ch, "herald:member_removed", data, "")
				}
			}
		}
		cancel()
	}
}

// channelMembers is GET /v1/channels/{channel}/members.
func (s *Server) channelMembers(c echo.Context) error {
	ch, err := channelParam(c)
	if err != nil {
		return err
	}
	if !channel.IsPresence(ch) {
		return errorf(http.StatusBadRequest, "not_presence", "only presence- channels have members")
	}
	cl, err := s.claims(c)
	if err != nil {
		return err
	}
	if cl == nil {
		return errTokenMissing
	}
	if err := s.allow(cl, authz.Subscribe, ch); err != nil {
		return err
	}
	app, err := s.appFor(cl)
	if err != nil {
		return err
	}
	members, err := app.Presence.Members(c.Request().Context(), ch)
	if err != nil {
		return errStoreUnavailable
	}
	if members == nil {
		members = []store.Member{}
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, map[string]any{"channel": ch, "count": len(members), "members": members})
}

// identityFromClaims is a JWT user's presence identity: sub and herald.user_info.
func identityFromClaims(cl *Claims) store.Member {
	return store.Member{UserID: cl.Subject, UserInfo: cl.UserInfo}
}
