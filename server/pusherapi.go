package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
	"github.com/herald-rt/herald/stream"
)

// The Pusher Channels HTTP API (/apps/{app_id}/…): what Laravel's pusher and reverb
// broadcasters, and Pusher's server libraries, call to publish. Every request is signed with
// the app's key and secret (authz.VerifyPusherRequest). Answers are Pusher's; errors are
// Herald's {"error":{"code","message"}}: 401 for a request that fails authentication (a code
// per cause), 413 for a body over the server's limit, 422 for a body that is not a valid
// event (as Reverb answers), 400 for bad query parameters, 404 for an unknown app.
//
// Decisions where Herald differs from a WebSocket server:
//
//   - An event's data is a JSON string, as Pusher has it. Herald stores the JSON value the
//     string holds when it is valid JSON — what pusher-js hands its listeners after its own
//     JSON.parse — and otherwise the string itself, as a JSON string.
//   - Every channel of a trigger gets one durable event (stored, resumable, replayable) with
//     the same name and data, appended in the order the channels are listed; socket_id is
//     kept with it, so that socket never gets it, live or replayed.
//   - Occupancy and subscription_count count the sockets of the node that answers: nodes do
//     not report their channels to each other. A presence channel also counts as occupied
//     while it has members on any node, and user_count and the users list come from the
//     shared presence store, so they are deployment-wide.
//   - terminate_connections closes the user's sockets on every node (see terminate).

// Pusher's limits on one request.
const (
	pusherMaxChannels = 100 // channels of one trigger
	pusherMaxBatch    = 10  // events of one batch trigger
)

// pusherClock is the clock auth_timestamp is checked against; tests replace it.
var pusherClock = time.Now

var errPusherDisabled = errorf(http.StatusNotFound, "pusher_api_disabled",
	"the Pusher HTTP API needs an app with an id, key and secret: start herald with --config or HERALD_APP_ID/HERALD_APP_KEY/HERALD_APP_SECRET")

// pusherRoutes mounts the Pusher HTTP API (/apps/{app_id}/…), which Laravel's pusher/reverb
// broadcaster calls.
func (p pusherAPI) routes(e *echo.Echo) {
	e.POST("/apps/:app_id/events", p.verified(p.events))
	e.POST("/apps/:app_id/batch_events", p.verified(p.batchEvents))
	e.GET("/apps/:app_id/channels", p.verified(p.channels))
	e.GET("/apps/:app_id/channels/:channel", p.verified(p.channel))
	e.GET("/apps/:app_id/channels/:channel/users", p.verified(p.users))
	e.POST("/apps/:app_id/users/:user_id/terminate_connections", p.verified(p.terminate))
}

// pusherAPI serves the Pusher HTTP API for the server's apps.
type pusherAPI struct{ *Server }

// pusherHandler serves a verified Pusher API request of app, whose body is body.
type pusherHandler func(c echo.Context, app *App, body []byte) error

// pusherAPI reads the body and verifies the request's signature before h runs.
func (p pusherAPI) verified(h pusherHandler) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "no-store")
		if p.cfg.Authz == nil {
			return errPusherDisabled
		}
		id := c.Param("app_id")
		app := p.apps.byID(id)
		if app == nil || app.Pusher == nil || p.cfg.Authz.App(id) == nil {
			return errorf(http.StatusNotFound, "unknown_app", "no app with this id is served here")
		}
		body, err := p.readBody(c)
		if err != nil {
			return err
		}
		req := c.Request()
		query := req.URL.Query()
		now := pusherClock()
		// Clients sign the path as they wrote it; most never escape it, so the raw path and
		// the decoded one are the same. When they differ (a user id with a space, say), either
		// is accepted.
		signer, err := p.cfg.Authz.VerifyPusherRequest(req.Method, req.URL.EscapedPath(), query, body, now)
		if errors.Is(err, authz.ErrBadSignature) && req.URL.Path != req.URL.EscapedPath() {
			signer, err = p.cfg.Authz.VerifyPusherRequest(req.Method, req.URL.Path, query, body, now)
		}
		if err != nil {
			return pusherAuthError(err)
		}
		if signer.ID != app.ID {
			return pusherAuthError(authz.ErrWrongApp)
		}
		return h(c, app, body)
	}
}

// pusherAuthError maps a signature verification failure to its 401 answer. The wrapped
// errors carry details but never secrets.
func pusherAuthError(err error) error {
	var code string
	switch {
	case errors.Is(err, authz.ErrUnknownApp):
		code = "unknown_key"
	case errors.Is(err, authz.ErrTimestamp):
		code = "timestamp_expired"
	case errors.Is(err, authz.ErrBodyMD5):
		code = "body_md5_mismatch"
	case errors.Is(err, authz.ErrWrongApp):
		code = "wrong_app"
	case errors.Is(err, authz.ErrMissingParam):
		code = "invalid_auth_params"
	default:
		code = "invalid_signature"
	}
	return errorf(http.StatusUnauthorized, code, "Pusher request authentication failed: "+err.Error())
}

func unprocessable(code, message string) *apiError {
	return errorf(http.StatusUnprocessableEntity, code, message)
}

// pusherEvent is a trigger (POST /events) or one event of a batch, as sent.
type pusherEvent struct {
	Name     *string  `json:"name"`
	Data     *string  `json:"data"`
	Channel  *string  `json:"channel"`
	Channels []string `json:"channels"`
	SocketID *string  `json:"socket_id"`
	Info     *string  `json:"info"`
}

// pusherTrigger is a checked pusherEvent.
type pusherTrigger struct {
	name     string
	data     json.RawMessage
	channels []string
	socketID string
	info     pusherInfo
}

// pusherInfo is the set of info attributes asked for.
type pusherInfo struct{ userCount, subscriptionCount bool }

func (i pusherInfo) any() bool { return i.userCount || i.subscriptionCount }

// parsePusherInfo reads a comma-separated info list.
func parsePusherInfo(raw string) (pusherInfo, error) {
	var info pusherInfo
	for _, attr := range strings.Split(raw, ",") {
		switch strings.TrimSpace(attr) {
		case "":
		case "user_count":
			info.userCount = true
		case "subscription_count":
			info.subscriptionCount = true
		default:
			return info, fmt.Errorf("info attribute %q is not supported: use user_count and/or subscription_count", strings.TrimSpace(attr))
		}
	}
	return info, nil
}

// decodePusherBody decodes a JSON object body; unknown fields are ignored, as Pusher does.
func decodePusherBody(body []byte, v any, shape string) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return unprocessable("invalid_json", "the body must be a JSON object "+shape+": empty body")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return unprocessable("invalid_json", "the body must be a JSON object "+shape+": "+jsonProblem(err))
	}
	return nil
}

// check validates an event; batch events name exactly one channel.
func (ev *pusherEvent) check(batch bool) (pusherTrigger, error) {
	var t pusherTrigger
	if ev.Name == nil {
		return t, unprocessable("invalid_event", "name is required")
	}
	if err := stream.ValidEventName(*ev.Name); err != nil {
		return t, unprocessable("invalid_event", "name: "+err.Error())
	}
	t.name = *ev.Name
	if ev.Data == nil {
		return t, unprocessable("invalid_data", "data is required: a string, usually JSON text")
	}
	t.data = pusherData(*ev.Data)
	switch {
	case batch && ev.Channels != nil:
		return t, unprocessable("invalid_channel", "a batch event names one channel, with channel")
	case ev.Channel != nil && ev.Channels != nil:
		return t, unprocessable("invalid_channel", "give channel or channels, not both")
	case ev.Channel != nil:
		t.channels = []string{*ev.Channel}
	case len(ev.Channels) == 0:
		return t, unprocessable("invalid_channel", "channel (one name) or channels (a list of 1 to 100) is required")
	case len(ev.Channels) > pusherMaxChannels:
		return t, unprocessable("too_many_channels", fmt.Sprintf("at most %d channels per trigger", pusherMaxChannels))
	default:
		// A channel listed twice still gets the event once.
		t.channels = make([]string, 0, len(ev.Channels))
		for _, ch := range ev.Channels {
			if !slices.Contains(t.channels, ch) {
				t.channels = append(t.channels, ch)
			}
		}
	}
	for _, ch := range t.channels {
		if err := channel.Valid(ch); err != nil {
			return t, unprocessable("invalid_channel", fmt.Sprintf("%q: %v", ch, err))
		}
	}
	if ev.SocketID != nil && *ev.SocketID != "" {
		if !validSocketID(*ev.SocketID) {
			return t, unprocessable("invalid_socket_id", "socket_id must look like 1234.5678")
		}
		t.socketID = *ev.SocketID
	}
	if ev.Info != nil {
		info, err := parsePusherInfo(*ev.Info)
		if err != nil {
			return t, unprocessable("invalid_info", err.Error())
		}
		t.info = info
	}
	return t, nil
}

// pusherData turns a Pusher event's data string into the stored JSON value: the JSON the
// string holds when it is valid JSON (compacted to one line), otherwise the string itself.
func pusherData(s string) json.RawMessage {
	if json.Valid([]byte(s)) {
		return compactJSON(json.RawMessage(s))
	}
	b, _ := json.Marshal(s)
	return b
}

// appendTriggers appends each trigger to each of its channels, in order. The appends are not
// cut short by a client that goes away: the store bounds its own round trips.
func (p pusherAPI) appendTriggers(c echo.Context, app *App, triggers []pusherTrigger) error {
	ctx := context.WithoutCancel(c.Request().Context())
	total, done := 0, 0
	for _, t := range triggers {
		total += len(t.channels)
	}
	for _, t := range triggers {
		for _, ch := range t.channels {
			start := time.Now()
			_, err := app.Hub.Store().Append(ctx, store.AppendRequest{Channel: ch, Name: t.name, Data: t.data, SocketID: t.socketID})
			p.cfg.Metrics.published(app, appendOutcome(err, false), time.Since(start))
			if errors.Is(err, store.ErrUnconfirmed) {
				p.log.Warn().Err(err).Str("app", app.ID).Str("channel", ch).Msg("Pusher API append unconfirmed")
				return errorf(http.StatusServiceUnavailable, "store_timeout",
					fmt.Sprintf("the event store did not confirm in time: of the %d events of this request the first %d were appended, the next may have been, the rest were not", total, done))
			}
			if errors.Is(err, store.ErrNotReplicated) {
				p.log.Warn().Err(err).Str("app", app.ID).Str("channel", ch).Msg("Pusher API append not replicated in time")
				return errorf(http.StatusServiceUnavailable, "replication_timeout",
					fmt.Sprintf("the Redis replica did not confirm in time: of the %d events of this request the first %d were appended, the last of them not yet replicated, and the rest were not appended", total, done+1))
			}
			if err != nil {
				p.log.Warn().Err(err).Str("app", app.ID).Str("channel", ch).Msg("Pusher API append failed")
				return errorf(http.StatusServiceUnavailable, "store_unavailable",
					fmt.Sprintf("the event store is unavailable: %d of the %d events of this request were appended (the first ones, in order)", done, total))
			}
			done++
		}
	}
	return nil
}

// channelInfo is the info Pusher reports of a channel.
type channelInfo struct {
	UserCount         *int `json:"user_count,omitempty"`
	SubscriptionCount *int `json:"subscription_count,omitempty"`
}

// channelInfo gathers the attributes asked for: user_count for presence channels only (from the
// shared presence store), subscription_count from the registry (every node's sockets).
func (p pusherAPI) channelInfo(ctx context.Context, app *App, ch string, want pusherInfo) (channelInfo, error) {
	var ci channelInfo
	if want.userCount && channel.IsPresence(ch) {
		n, err := p.userCount(ctx, app, ch)
		if err != nil {
			return ci, err
		}
		ci.UserCount = &n
	}
	if want.subscriptionCount {
		n, err := subscriptionCount(ctx, app, ch)
		if err != nil {
			return ci, err
		}
		ci.SubscriptionCount = &n
	}
	return ci, nil
}

// subscriptionCount is the number of sockets on channel, summed over the deployment's nodes.
func subscriptionCount(ctx context.Context, app *App, channel string) (int, error) {
	perNode, err := app.Registry.Subscriptions(ctx, channel)
	if err != nil {
		return 0, storeError(err)
	}
	n := 0
	for _, c := range perNode {
		n += c
	}
	return n, nil
}

func (p pusherAPI) userCount(ctx context.Context, app *App, channel string) (int, error) {
	if app.Presence == nil {
		return 0, nil
	}
	members, err := app.Presence.Members(ctx, channel)
	if err != nil {
		return 0, errStoreUnavailable
	}
	return len(members), nil
}

// pusherEvents is POST /apps/{app_id}/events: {"name","data","channel"|"channels",
// "socket_id"?,"info"?} → {} or {"channels":{"<name>":{"user_count","subscription_count"}}}.
func (p pusherAPI) events(c echo.Context, app *App, body []byte) error {
	var ev pusherEvent
	if err := decodePusherBody(body, &ev, `{"name","data","channel" or "channels"}`); err != nil {
		return err
	}
	t, err := ev.check(false)
	if err != nil {
		return err
	}
	if err := p.appendTriggers(c, app, []pusherTrigger{t}); err != nil {
		return err
	}
	if !t.info.any() {
		return c.JSON(http.StatusOK, struct{}{})
	}
	out := make(map[string]channelInfo, len(t.channels))
	for _, ch := range t.channels {
		ci, err := p.channelInfo(c.Request().Context(), app, ch, t.info)
		if err != nil {
			return err
		}
		out[ch] = ci
	}
	return c.JSON(http.StatusOK, map[string]any{"channels": out})
}

// pusherBatchEvents is POST /apps/{app_id}/batch_events: {"batch":[{"name","data","channel",
// "socket_id"?,"info"?},…]} with 1 to 10 events → {}, or {"batch":[{…info…},{},…]} (one entry
// per event, in order) when any event asked for info. Every event is checked before any is
// appended.
func (p pusherAPI) batchEvents(c echo.Context, app *App, body []byte) error {
	var req struct {
		Batch []pusherEvent `json:"batch"`
	}
	if err := decodePusherBody(body, &req, `{"batch":[…]}`); err != nil {
		return err
	}
	switch n := len(req.Batch); {
	case n == 0:
		return unprocessable("invalid_batch", fmt.Sprintf("batch must hold 1 to %d events", pusherMaxBatch))
	case n > pusherMaxBatch:
		return unprocessable("batch_too_large", fmt.Sprintf("batch holds %d events; at most %d per request", n, pusherMaxBatch))
	}
	triggers := make([]pusherTrigger, len(req.Batch))
	anyInfo := false
	for i := range req.Batch {
		t, err := req.Batch[i].check(true)
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				return unprocessable(ae.Code, fmt.Sprintf("batch[%d]: %s", i, ae.Message))
			}
			return err
		}
		triggers[i] = t
		anyInfo = anyInfo || t.info.any()
	}
	if err := p.appendTriggers(c, app, triggers); err != nil {
		return err
	}
	if !anyInfo {
		return c.JSON(http.StatusOK, struct{}{})
	}
	out := make([]channelInfo, len(triggers))
	for i, t := range triggers {
		ci, err := p.channelInfo(c.Request().Context(), app, t.channels[0], t.info)
		if err != nil {
			return err
		}
		out[i] = ci
	}
	return c.JSON(http.StatusOK, map[string]any{"batch": out})
}

// pusherQueryInfo reads the info query parameter of the GET endpoints.
func pusherQueryInfo(c echo.Context) (pusherInfo, error) {
	info, err := parsePusherInfo(c.QueryParam("info"))
	if err != nil {
		return info, badRequest("invalid_info", err.Error())
	}
	return info, nil
}

// pusherChannels is GET /apps/{app_id}/channels?filter_by_prefix=&info=: the occupied
// channels → {"channels":{"<name>":{}}}. Occupied means that sockets of any node subscribe to
// the channel (the registry's view). user_count needs filter_by_prefix=presence-, as with
// Pusher.
func (p pusherAPI) channels(c echo.Context, app *App, _ []byte) error {
	prefix := c.QueryParam("filter_by_prefix")
	info, err := pusherQueryInfo(c)
	if err != nil {
		return err
	}
	if info.userCount && !strings.HasPrefix(prefix, "presence-") {
		return badRequest("invalid_info", "info=user_count needs filter_by_prefix=presence-")
	}
	ctx := c.Request().Context()
	occupied, err := app.Registry.Occupied(ctx, prefix)
	if err != nil {
		return storeError(err)
	}
	out := make(map[string]channelInfo, len(occupied))
	for ch, n := range occupied {
		if channel.IsUser(ch) && !strings.HasPrefix(prefix, "#") {
			continue // signed-in sockets, not channels anyone subscribed to: listed only when asked for
		}
		var ci channelInfo
		if info.subscriptionCount {
			ci.SubscriptionCount = &n
		}
		if info.userCount && channel.IsPresence(ch) {
			users, err := p.userCount(ctx, app, ch)
			if err != nil {
				return err
			}
			ci.UserCount = &users
		}
		out[ch] = ci
	}
	return c.JSON(http.StatusOK, map[string]any{"channels": out})
}

// pusherChannel is GET /apps/{app_id}/channels/{channel}?info=user_count,subscription_count →
// {"occupied":bool[,"user_count":n][,"subscription_count":n]}.
func (p pusherAPI) channel(c echo.Context, app *App, _ []byte) error {
	ch, err := channelParam(c)
	if err != nil {
		return err
	}
	info, err := pusherQueryInfo(c)
	if err != nil {
		return err
	}
	if info.userCount && !channel.IsPresence(ch) {
		return badRequest("invalid_info", "user_count is only available for presence- channels")
	}
	ctx := c.Request().Context()
	subs, err := subscriptionCount(ctx, app, ch)
	if err != nil {
		return err
	}
	out := struct {
		Occupied bool `json:"occupied"`
		channelInfo
	}{Occupied: subs > 0}
	if info.subscriptionCount {
		out.SubscriptionCount = &subs
	}
	if channel.IsPresence(ch) && (info.userCount || !out.Occupied) {
		n, err := p.userCount(ctx, app, ch)
		if err != nil {
			return err
		}
		if info.userCount {
			out.UserCount = &n
		}
		out.Occupied = out.Occupied || n > 0
	}
	return c.JSON(http.StatusOK, out)
}

// pusherUsers is GET /apps/{app_id}/channels/{channel}/users → {"users":[{"id":"…"},…]}, for
// presence channels only.
func (p pusherAPI) users(c echo.Context, app *App, _ []byte) error {
	ch, err := channelParam(c)
	if err != nil {
		return err
	}
	if !channel.IsPresence(ch) {
		return badRequest("not_presence", "only presence- channels have users")
	}
	type user struct {
		ID string `json:"id"`
	}
	users := []user{}
	if app.Presence != nil {
		members, err := app.Presence.Members(c.Request().Context(), ch)
		if err != nil {
			return errStoreUnavailable
		}
		for _, m := range members {
			users = append(users, user{ID: m.UserID})
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"users": users})
}

// pusherTerminate is POST /apps/{app_id}/users/{user_id}/terminate_connections → {}. It closes
// the user's sockets on every node of the deployment (a node-wide call to each node in the
// registry): presence members with that user id, and sockets opened with a token whose sub is
// that user. An SSE client (EventSource) reconnects by itself; to keep a user out, also stop
// authorizing it.
func (p pusherAPI) terminate(c echo.Context, app *App, body []byte) error {
	raw := c.Param("user_id")
	userID, err := url.PathUnescape(raw)
	if err != nil {
		userID = raw
	}
	if userID == "" || !utf8.ValidString(userID) || utf8.RuneCountInString(userID) > limitsOf(app).MaxUserIDLength {
		return badRequest("invalid_user_id", "the user id must be 1 to the app's limit of characters")
	}
	if len(bytes.TrimSpace(body)) > 0 {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
			return unprocessable("invalid_json", "the body must be empty or a JSON object ({})")
		}
	}
	answers, err := everyNode(c.Request().Context(), socketAPI{p.Server}, app, opTerminateUser, terminateUserCall{UserID: userID})
	var failed *remoteFailure
	if errors.As(err, &failed) {
		return writeResult(c, failed.res)
	}
	if err != nil {
		return err
	}
	n := 0
	for _, a := range answers {
		var t terminatedAnswer
		if json.Unmarshal(a.Body, &t) == nil {
			n += t.Sockets
		}
	}
	p.log.Info().Str("app", app.ID).Int("sockets", n).Int("nodes", len(answers)).Msg("terminated a user's connections")
	return c.JSON(http.StatusOK, struct{}{})
}
