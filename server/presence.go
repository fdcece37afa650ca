package server

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
)

// Presence channels: the node holding a socket joins it to the channel's member set (in
// Redis, shared by every node), announces herald:member_added when the user's first socket
// joins and herald:member_removed after its last one leaves, and renews the memberships of its
// sockets; memberships of a node that died expire, and whichever node notices announces them.

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

// announce broadcasts a presence change to the channel's subscribers on every node, live
// only; except is a socket that must not get it.
func (a *App) announce(ctx context.Context, log zerolog.Logger, channel, event string, data json.RawMessage, except string) {
	b, ok := a.Hub.Store().(store.Broadcaster)
	if !ok {
		return
	}
	if err := b.Broadcast(ctx, store.Ephemeral{Channel: channel, Name: event, Data: data, SocketID: except}); err != nil {
		log.Warn().Err(err).Str("channel", channel).Str("event", event).Msg("presence announcement lost")
	}
}

// membersGone announces the members whose leases the presence store reaped.
func (s *Server) membersGone(ctx context.Context, app *App, ch string, gone []store.Member) {
	for _, m := range gone {
		data, _ := json.Marshal(map[string]string{"user_id": m.UserID})
		app.announce(ctx, s.log, ch, "herald:member_removed", data, "")
		s.hook(ctx, app, hookEvent{Name: authz.HookMemberRemoved, Channel: ch, UserID: m.UserID})
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
		for app, chans := range s.sessions.presence() {
			for ch, socks := range chans {
				if err := app.Presence.Refresh(ctx, ch, socks); err != nil {
					s.log.Warn().Err(err).Str("channel", ch).Msg("presence refresh failed")
				}
				gone, err := app.Presence.Expire(ctx, ch)
				if err != nil {
					continue
				}
				s.membersGone(ctx, app, ch, gone)
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
	app, err := s.apps.forToken(cl)
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
