package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

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

// WhisperRequest is the body of POST /v1/channels/{channel}/whispers.
type WhisperRequest struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

func (s *Server) whisper(c echo.Context) error {
	ch, err := channelParam(c)
	if err != nil {
		return err
	}
	sid := c.QueryParam("socket_id")
	if sid == "" {
		sid = c.Request().Header.Get("X-Herald-Socket-Id")
	}
	id, app, err := s.socketFromRequest(c, sid)
	if err != nil {
		return err
	}
	mode := s.cfg.ClientEvents
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
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var req WhisperRequest
	if err := decodeStrict(body, &req); err != nil {
		return badRequest("invalid_json", "the body must be {\"event\":\"client-…\",\"data\":…}: "+jsonProblem(err))
	}
	if !strings.HasPrefix(req.Event, "client-") || stream.ValidEventName(req.Event) != nil {
		return badRequest("invalid_event", "client event names start with \"client-\" and are 1-200 printable characters")
	}
	data := compactJSON(req.Data)
	return writeResult(c, s.call(c.Request().Context(), app, socketCall{Op: "whisper", SocketID: id, Channel: ch, Event: req.Event, Notice: data}))
}

// whisperLocal runs on the node holding the socket, which knows its channels and its rate.
func (s *Server) whisperLocal(ctx context.Context, app *App, sock *stream.Socket, op socketCall) socketResult {
	if !sock.Has(op.Channel) {
		return resultOf(errorf(http.StatusForbidden, "not_subscribed", "the socket must be subscribed to "+op.Channel+" to send client events"))
	}
	rate := s.cfg.WhisperRate
	if app.Pusher != nil && app.Pusher.Limits.ClientEventsPerSecond > 0 {
		rate = float64(app.Pusher.Limits.ClientEventsPerSecond)
	}
	if !s.whisperLimits.allow(sock.ID(), rate, time.Now()) {
		return resultOf(errorf(http.StatusTooManyRequests, "rate_limited", "too many client events from this socket"))
	}
	b, ok := app.Hub.Store().(store.Broadcaster)
	if !ok {
		return resultOf(errorf(http.StatusNotImplemented, "not_supported", "this store cannot broadcast"))
	}
	msg := store.Ephemeral{Channel: op.Channel, Name: op.Event, Data: op.Notice, SocketID: sock.ID()}
	if channel.IsPresence(op.Channel) {
		// Receivers learn who is typing: the identity the socket joined the channel with.
		if m, ok := s.members.member(app, op.Channel, sock.ID()); ok {
			msg.UserID = m.UserID
		}
	}
	if err := b.Broadcast(ctx, msg); err != nil {
		return resultOf(errStoreUnavailable)
	}
	return jsonResult(http.StatusOK, map[string]string{"channel": op.Channel, "event": op.Event})
}

// rateLimits is a token bucket per socket: rate events a second, bursts of the same size.
type rateLimits struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func (r *rateLimits) allow(key string, rate float64, now time.Time) bool {
	if rate <= 0 {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.buckets == nil {
		r.buckets = make(map[string]*bucket)
	}
	b := r.buckets[key]
	if b == nil {
		b = &bucket{tokens: rate, last: now}
		r.buckets[key] = b
	}
	b.tokens = min(rate, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (r *rateLimits) forget(key string) {
	r.mu.Lock()
	delete(r.buckets, key)
	r.mu.Unlock()
}
