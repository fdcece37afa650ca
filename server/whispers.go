package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
	"github.com/herald-rt/herald/stream"
)

// Whispers are client events (typing indicators): sent by a socket to the other subscribers of
// a channel, live only — never stored, never replayed, never back to the sender.

// Client-event modes, like Reverb's accept_client_events_from.
const (
	ClientEventsMembers = "members" // subscribers of private-/presence- channels (default)
	ClientEventsAll     = "all"     // subscribers of any channel
	ClientEventsNone    = "none"    // disabled
)

// whisperRequest is the body of POST /v1/channels/{channel}/whispers.
type whisperRequest struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

func (api socketAPI) whisper(c echo.Context) error {
	ch, err := channelParam(c)
	if err != nil {
		return err
	}
	sid := c.QueryParam("socket_id")
	if sid == "" {
		sid = c.Request().Header.Get("X-Herald-Socket-Id")
	}
	id, app, err := api.socketFromRequest(c, sid)
	if err != nil {
		return err
	}
	if channel.IsUser(ch) { // only the user's own sockets read it: nobody to whisper to
		return errorf(http.StatusForbidden, "client_events_not_allowed", "client events are not accepted on user channels")
	}
	mode := api.cfg.ClientEvents
	if app.Pusher != nil && app.Pusher.ClientEvents != "" {
		mode = string(app.Pusher.ClientEvents)
	}
	switch mode {
	case ClientEventsNone:
		return errorf(http.StatusForbidden, "client_events_disabled", "this server does not accept client events")
	case ClientEventsAll:
	default:
		if !channel.NeedsAuth(ch) {
			return errorf(http.StatusForbidden, "client_events_not_allowed", "client events are accepted on private- and presence- channels only")
		}
	}
	body, err := api.readBody(c)
	if err != nil {
		return err
	}
	var req whisperRequest
	if err := decodeStrict(body, &req); err != nil {
		return badRequest("invalid_json", "the body must be {\"event\":\"client-…\",\"data\":…}: "+jsonProblem(err))
	}
	if !strings.HasPrefix(req.Event, "client-") || stream.ValidEventName(req.Event) != nil {
		return badRequest("invalid_event", "client event names start with \"client-\" and are 1-200 printable characters")
	}
	call := whisperCall{Channel: ch, Event: req.Event, Data: compactJSON(req.Data)}
	return writeResult(c, opWhisper.call(c.Request().Context(), api, app, id, call))
}

// whisper runs on the node holding the socket, which knows its channels and its budget.
func (ss *session) whisper(ctx context.Context, call whisperCall) socketResult {
	res := ss.broadcastWhisper(ctx, call)
	ss.srv.cfg.Metrics.whisper(ss.app.ID, res)
	return res
}

func (ss *session) broadcastWhisper(ctx context.Context, call whisperCall) socketResult {
	s := ss.srv
	if !ss.sock.Has(call.Channel) {
		return resultOf(errorf(http.StatusForbidden, "not_subscribed", "the socket must be subscribed to "+call.Channel+" to send client events"))
	}
	rate := s.cfg.WhisperRate
	if ss.app.Pusher != nil && ss.app.Pusher.Limits.ClientEventsPerSecond > 0 {
		rate = float64(ss.app.Pusher.Limits.ClientEventsPerSecond)
	}
	if !ss.allowWhisper(rate, time.Now()) {
		return resultOf(errorf(http.StatusTooManyRequests, "rate_limited", "too many client events from this socket"))
	}
	b, ok := ss.app.Hub.Store().(store.Broadcaster)
	if !ok {
		return resultOf(errorf(http.StatusNotImplemented, "not_supported", "this store cannot broadcast"))
	}
	msg := store.Ephemeral{Channel: call.Channel, Name: call.Event, Data: call.Data, SocketID: ss.sock.ID()}
	if channel.IsPresence(call.Channel) {
		// Receivers learn who is typing: the identity the socket joined the channel with.
		if m, ok := ss.member(call.Channel); ok {
			msg.UserID = m.UserID
		}
	}
	if err := b.Broadcast(ctx, msg); err != nil {
		return resultOf(errStoreUnavailable)
	}
	if len(ss.app.Webhooks) > 0 {
		ss.srv.hook(ctx, ss.app, hookEvent{Name: authz.HookClientEvent, Channel: call.Channel, Event: call.Event,
			Data: string(call.Data), SocketID: msg.SocketID, UserID: msg.UserID})
	}
	return jsonResult(http.StatusOK, map[string]string{"channel": call.Channel, "event": call.Event})
}
