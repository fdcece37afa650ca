package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
	"github.com/herald-rt/herald/stream"
)

// Sockets with dynamic subscriptions — what the JS adapter uses. A socket lives on the node
// that holds its connection (its id starts with that node's id); any node accepts the calls
// that act on it, checks the socket token itself (an HMAC of the id, so no shared state is
// needed) and reaches the owner over the store's Bus. No sticky sessions.

// socketAPI serves the calls that act on a socket — subscribe, unsubscribe, poll a long-poll
// socket, whisper — on any node: it checks the socket's token and the call's credentials, and
// the socket's node runs the call (calls.go).
type socketAPI struct{ *Server }

// socketTokenHeader carries a socket's token on calls that act on the socket.
const socketTokenHeader = "X-Herald-Socket-Token"

// socketTokens signs socket ids: a token proves its holder opened that socket.
type socketTokens struct{ key []byte }

// token signs the socket id together with its app, so a token also says which app a socket
// of another node belongs to.
func (t socketTokens) token(app, socketID string) string {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte("herald socket v1\x00"))
	m.Write([]byte(app))
	m.Write([]byte{0})
	m.Write([]byte(socketID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:24])
}

func (t socketTokens) valid(app, socketID, token string) bool {
	return len(t.key) > 0 && hmac.Equal([]byte(t.token(app, socketID)), []byte(token))
}

// DeriveSocketSecret turns a deployment secret (the JWT secret) into the socket-token key, so
// nodes sharing the first share the second without another setting.
func DeriveSocketSecret(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("herald socket tokens"))
	return m.Sum(nil)
}

// socketNode is the node part of a socket id.
func socketNode(id string) string {
	node, _, _ := strings.Cut(id, ".")
	return node
}

var (
	errSocketGone      = errorf(http.StatusNotFound, "socket_gone", "no node holds this socket any more: open a new one and subscribe again")
	errSocketToken     = errorf(http.StatusUnauthorized, "socket_token_invalid", "the "+socketTokenHeader+" header does not match this socket")
	errBadSocketID     = badRequest("invalid_socket_id", "socket ids look like 1234.5678")
	errPollInProgress  = errorf(http.StatusConflict, "poll_in_progress", "another poll of this socket is still waiting")
	errTooManyChannels = badRequest("too_many_channels", fmt.Sprintf("at most %d channels per socket", channel.MaxPerSocket))
)

// openSocket is POST /v1/sockets: a long-poll socket.
func (api socketAPI) openSocket(c echo.Context) error {
	cl, err := api.claims(c)
	if err != nil {
		return err
	}
	app, err := api.apps.forToken(cl)
	if err != nil {
		return err
	}
	if err := api.checkOrigin(c, app); err != nil {
		return err
	}
	if err := api.census.admit(app, transportPollSocket, c.RealIP()); err != nil {
		return err
	}
	sock, err := app.Hub.Open(c.Request().Context(), stream.Request{Dynamic: true, EnvelopesOnly: true})
	if err != nil {
		api.census.leave(app, transportPollSocket)
		return storeError(err)
	}
	api.sessions.open(api.Server, app, sock, cl, transportPollSocket)
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, map[string]string{
		"socket_id": sock.ID(), "socket_token": api.sockTokens.token(app.ID, sock.ID()), "cursor": sock.Cursor(),
	})
}

// socketFromRequest validates a socket id and its token, and finds the socket's app.
func (api socketAPI) socketFromRequest(c echo.Context, id string) (string, *App, error) {
	if !validSocketID(id) {
		return "", nil, errBadSocketID
	}
	tok := c.Request().Header.Get(socketTokenHeader)
	if tok == "" {
		tok = c.QueryParam("socket_token")
	}
	a := api.apps.ofSocket(api.sockTokens, id, tok)
	if a == nil {
		return "", nil, errSocketToken
	}
	if err := api.checkOrigin(c, a); err != nil {
		return "", nil, err
	}
	return id, a, nil
}

// subscribeRequest is the body of POST /v1/sockets/{socket_id}/subscriptions.
type subscribeRequest struct {
	Channel          string   `json:"channel"`
	Auth             string   `json:"auth,omitempty"`
	ChannelData      string   `json:"channel_data,omitempty"`
	Cursor           string   `json:"cursor,omitempty"`
	ExcludeSocketIDs []string `json:"exclude_socket_ids,omitempty"`
}

// parseSubscribeBody decodes and checks a subscription body.
func parseSubscribeBody(body []byte) (subscribeRequest, error) {
	var req subscribeRequest
	if err := decodeStrict(body, &req); err != nil {
		return req, badRequest("invalid_json", "the body must be {\"channel\":…[,\"auth\",\"channel_data\",\"cursor\",\"exclude_socket_ids\"]}: "+jsonProblem(err))
	}
	if err := channel.Valid(req.Channel); err != nil {
		return req, errorf(http.StatusUnprocessableEntity, "invalid_channel", err.Error())
	}
	if err := subscribable(req.Channel); err != nil {
		return req, err
	}
	if req.Cursor != "" {
		if _, err := store.ParseCursor(req.Cursor); err != nil {
			return req, badRequest("invalid_cursor", "the cursor is not one this channel's server sent")
		}
	}
	if len(req.ExcludeSocketIDs) > 20 {
		return req, badRequest("invalid_exclude", "at most 20 exclude_socket_ids")
	}
	for _, id := range req.ExcludeSocketIDs {
		if !validSocketID(id) {
			return req, badRequest("invalid_exclude", "exclude_socket_ids must be socket ids like 1234.5678")
		}
	}
	return req, nil
}

// subscribeSocket is POST /v1/sockets/{socket_id}/subscriptions. This node verifies what the
// call carries — a Pusher signature or a token — and the socket's node applies it.
func (api socketAPI) subscribeSocket(c echo.Context) error {
	id, app, err := api.socketFromRequest(c, c.Param("socket_id"))
	if err != nil {
		return err
	}
	body, err := api.readBody(c)
	if err != nil {
		return err
	}
	req, err := parseSubscribeBody(body)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	call := subscribeCall{Channel: req.Channel, Exclude: req.ExcludeSocketIDs}
	if req.Cursor != "" {
		call.Cursor = &req.Cursor
	}
	if err := api.authorizeSocketSubscribe(c, app, id, req, &call); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden) {
			opRefuse.call(ctx, api, app, id, refuseCall{Channel: req.Channel, Error: ae})
		}
		return err
	}
	return writeResult(c, opSubscribe.call(ctx, api, app, id, call))
}

// authorizeSocketSubscribe checks the credentials a subscription call carries. Public
// channels need none. Private and presence channels take a Pusher signature from the app's
// own /broadcasting/auth, or a token on this call; with neither, the socket's node decides
// with the token the socket was opened with.
func (api socketAPI) authorizeSocketSubscribe(c echo.Context, app *App, socketID string, req subscribeRequest, call *subscribeCall) error {
	if !channel.NeedsAuth(req.Channel) {
		return nil
	}
	if req.Auth != "" {
		if app.Pusher == nil {
			return errorf(http.StatusUnauthorized, "signature_unavailable", "this app has no Pusher key and secret configured")
		}
		member, err := app.Pusher.VerifyChannelAuth(socketID, req.Channel, req.Auth, req.ChannelData)
		switch {
		case errors.Is(err, authz.ErrChannelData):
			return badRequest("invalid_channel_data", err.Error())
		case err != nil:
			return errorf(http.StatusUnauthorized, "invalid_signature", "the auth signature does not match this socket and channel")
		}
		if channel.IsPresence(req.Channel) {
			if member == nil {
				return badRequest("invalid_channel_data", "presence channels need channel_data with a user_id")
			}
			call.Member = &store.Member{UserID: member.UserID, UserInfo: member.UserInfo}
			return checkMember(app, *call.Member)
		}
		return nil
	}
	cl, err := api.callClaims(c, app)
	if err != nil {
		return err
	}
	if cl == nil {
		call.BySocketToken = true
		return nil
	}
	if err := api.allow(cl, authz.Subscribe, req.Channel); err != nil {
		return err
	}
	if channel.IsPresence(req.Channel) {
		m := identityFromClaims(cl)
		call.Member = &m
		return checkMember(app, m)
	}
	return nil
}

// callClaims is the token a call on a socket carries, checked to be for the socket's app; nil
// when it carries none, and the socket's node then decides with openingClaims.
func (api socketAPI) callClaims(c echo.Context, app *App) (*Claims, error) {
	cl, err := api.claims(c)
	if err != nil || cl == nil {
		return nil, err
	}
	if err := api.apps.check(cl, app); err != nil {
		return nil, err
	}
	return cl, nil
}

// openingClaims is the token the socket was opened with, for a call that carries no
// credentials of its own: errTokenMissing when there was none or it has expired.
func (ss *session) openingClaims() (*Claims, error) {
	cl := ss.claims
	if cl == nil || time.Now().After(ss.srv.cfg.Auth.Expiry(cl)) {
		return nil, errTokenMissing
	}
	if err := ss.srv.apps.check(cl, ss.app); err != nil {
		return nil, err
	}
	return cl, nil
}

// subscribeLocal applies a subscription on the socket's own node.
func (ss *session) subscribe(ctx context.Context, call subscribeCall) socketResult {
	s := ss.srv
	refuse := func(e *apiError) socketResult {
		data, _ := json.Marshal(e)
		ss.sock.Refuse(call.Channel, data)
		return resultOf(e)
	}
	if call.BySocketToken {
		cl, err := ss.openingClaims()
		if err != nil {
			return refuse(apiErrorOf(err))
		}
		if err := s.allow(cl, authz.Subscribe, call.Channel); err != nil {
			return refuse(apiErrorOf(err))
		}
		if channel.IsPresence(call.Channel) {
			m := identityFromClaims(cl)
			if err := checkMember(ss.app, m); err != nil {
				return refuse(apiErrorOf(err))
			}
			call.Member = &m
		}
	}
	var cur *store.Cursor
	if call.Cursor != nil {
		c, err := store.ParseCursor(*call.Cursor)
		if err != nil {
			return resultOf(badRequest("invalid_cursor", "the cursor is not one this channel's server sent"))
		}
		cur = &c
	}
	presence := channel.IsPresence(call.Channel)
	var notice json.RawMessage
	if presence {
		if call.Member == nil {
			return refuse(badRequest("invalid_channel_data", "presence channels need a user identity"))
		}
		n, err := ss.join(ctx, call.Channel, *call.Member)
		if err != nil {
			return refuse(apiErrorOf(err))
		}
		notice = n
	}
	err := ss.sock.Subscribe(ctx, call.Channel, cur, call.Exclude, notice)
	if err != nil && presence {
		ss.leave(context.WithoutCancel(ctx), call.Channel)
	}
	if err != nil {
		return ss.subscribeFailed(err, call.Channel)
	}
	return jsonResult(http.StatusOK, map[string]string{"socket_id": ss.sock.ID(), "channel": call.Channel})
}

// subscribeFailed is the answer to a subscription the engine refused.
func (ss *session) subscribeFailed(err error, ch string) socketResult {
	switch {
	case errors.Is(err, stream.ErrTooManyChannels):
		return resultOf(errTooManyChannels)
	case errors.Is(err, stream.ErrClosed), errors.Is(err, stream.ErrLagged), errors.Is(err, stream.ErrShutdown):
		return resultOf(errSocketGone)
	default:
		ss.srv.log.Warn().Err(err).Str("channel", ch).Msg("subscribe failed")
		return resultOf(errStoreUnavailable)
	}
}

// refuseLocal tells the socket a subscription was refused.
func (ss *session) refuse(_ context.Context, call refuseCall) socketResult {
	data, _ := json.Marshal(call.Error)
	ss.sock.Refuse(call.Channel, data)
	return jsonResult(http.StatusOK, struct{}{})
}

// unsubscribeSocket is DELETE /v1/sockets/{socket_id}/subscriptions/{channel}.
func (api socketAPI) unsubscribeSocket(c echo.Context) error {
	id, app, err := api.socketFromRequest(c, c.Param("socket_id"))
	if err != nil {
		return err
	}
	ch, err := channelParam(c)
	if err != nil {
		return err
	}
	return writeResult(c, opUnsubscribe.call(c.Request().Context(), api, app, id, unsubscribeCall{Channel: ch}))
}

func (ss *session) unsubscribe(ctx context.Context, call unsubscribeCall) socketResult {
	if !ss.sock.Unsubscribe(call.Channel) {
		return resultOf(errorf(http.StatusNotFound, "not_subscribed", "the socket is not subscribed to "+call.Channel))
	}
	if channel.IsPresence(call.Channel) {
		ss.leave(ctx, call.Channel)
	}
	return jsonResult(http.StatusOK, map[string]string{"socket_id": ss.sock.ID(), "channel": call.Channel})
}

// pollSocketRequest serves GET /v1/poll?socket_id=… on any node.
func (api socketAPI) pollSocketRequest(c echo.Context) error {
	id, app, err := api.socketFromRequest(c, c.QueryParam("socket_id"))
	if err != nil {
		return err
	}
	timeout, err := durationParam(c, "timeout", api.cfg.PollTimeout, api.cfg.PollTimeoutMax)
	if err != nil {
		return err
	}
	limit, err := intParam(c, "limit", api.cfg.PollLimit, api.cfg.PollLimitMax)
	if err != nil {
		return err
	}
	call := pollCall{Timeout: timeout, Limit: limit}
	if raw := c.QueryParam("seq"); raw != "" {
		n, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			return badRequest("invalid_seq", "seq must be the seq of the last answer received")
		}
		call.Seq = &n
	}
	return writeResult(c, opPoll.call(c.Request().Context(), api, app, id, call))
}

// pollLocal answers a poll of a long-poll socket on its own node: events and notices in order,
// the socket's composite cursor, and seq to confirm with on the next poll.
func (ss *session) pollOnce(ctx context.Context, call pollCall) socketResult {
	ps := ss.poll
	if ps == nil {
		return resultOf(errorf(http.StatusConflict, "not_a_poll_socket", "this socket has a stream; read it there"))
	}
	ps.touch(ss.srv.sessions.now())
	if !ps.mu.TryLock() {
		return resultOf(errPollInProgress)
	}
	defer ps.mu.Unlock()
	defer func() { ps.touch(ss.srv.sessions.now()) }()
	if call.Seq != nil && ps.answer != nil && *call.Seq+1 == ps.seq {
		return socketResult{Status: http.StatusOK, Body: ps.answer} // the last answer was lost
	}
	batch, err := ss.sock.Next(ctx, call.Limit, call.Timeout, nil)
	if errors.Is(err, stream.ErrLagged) {
		ss.srv.cfg.Metrics.slowDisconnect(ss.app, transportPollSocket, "queue_overflow")
	}
	if err != nil && len(batch) == 0 {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return resultOf(errorf(http.StatusServiceUnavailable, "canceled", "the poll ended early"))
		}
		return resultOf(errSocketGone)
	}
	seq := ps.seq
	if len(batch) > 0 {
		ps.seq++
		seq = ps.seq
	}
	body := appendPollAnswer(nil, batch, ss.sock.Cursor(), &seq)
	if len(batch) > 0 {
		ps.answer = body
	}
	ss.app.meters.delivered(transportPollSocket, rand.Uint32(), len(batch), int64(len(body)))
	return socketResult{Status: http.StatusOK, Body: body}
}
