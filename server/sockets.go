package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
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

// SocketTokenHeader carries a socket's token on calls that act on the socket.
const SocketTokenHeader = "X-Herald-Socket-Token"

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
	errSocketToken     = errorf(http.StatusUnauthorized, "socket_token_invalid", "the "+SocketTokenHeader+" header does not match this socket")
	errBadSocketID     = badRequest("invalid_socket_id", "socket ids look like 1234.5678")
	errPollInProgress  = errorf(http.StatusConflict, "poll_in_progress", "another poll of this socket is still waiting")
	errTooManyChannels = badRequest("too_many_channels", fmt.Sprintf("at most %d channels per socket", channel.MaxPerSocket))
)

// pollSocket is a socket served by long-poll: it has no connection of its own, so it expires
// when its client stops polling.
type pollSocket struct {
	app      *App
	sock     *stream.Socket
	mu       sync.Mutex // one poll at a time
	lastSeen time.Time  // guarded by Server.pollMu
	// The last non-empty answer, kept until the client confirms it with seq, so an answer
	// lost on the way is sent again rather than lost.
	seq    uint64
	answer []byte
}

// openSocket is POST /v1/sockets: a long-poll socket.
func (s *Server) openSocket(c echo.Context) error {
	cl, err := s.claims(c)
	if err != nil {
		return err
	}
	app, err := s.appFor(cl)
	if err != nil {
		return err
	}
	sock, err := app.Hub.Open(c.Request().Context(), stream.Request{Dynamic: true})
	if err != nil {
		return storeError(err)
	}
	ps := &pollSocket{app: app, sock: sock}
	s.pollMu.Lock()
	ps.lastSeen = time.Now()
	s.pollSockets[sock.ID()] = ps
	s.pollMu.Unlock()
	s.rememberClaims(sock.ID(), cl)
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, map[string]string{
		"socket_id": sock.ID(), "socket_token": s.sockTokens.token(app.ID, sock.ID()), "cursor": sock.Cursor(),
	})
}

// expirePollSockets closes poll sockets nobody polled for the activity timeout.
func (s *Server) expirePollSockets(now time.Time) {
	var gone []*pollSocket
	s.pollMu.Lock()
	for id, ps := range s.pollSockets {
		if now.Sub(ps.lastSeen) <= s.cfg.SocketTimeout {
			continue
		}
		if !ps.mu.TryLock() {
			continue // a poll is waiting on it right now (polls may outlast the timeout)
		}
		ps.mu.Unlock()
		delete(s.pollSockets, id)
		gone = append(gone, ps)
	}
	s.pollMu.Unlock()
	for _, ps := range gone {
		s.closeSocket(ps.app, ps.sock)
	}
}

func (s *Server) closeSocket(app *App, sock *stream.Socket) {
	sock.Close()
	s.leaveAllPresence(app, sock.ID())
	s.whisperLimits.forget(sock.ID())
	s.claimsMu.Lock()
	delete(s.socketClaims, sock.ID())
	s.claimsMu.Unlock()
}

// rememberClaims keeps the token a socket was opened with: in JWT mode it authorizes the
// socket's later subscriptions when the call carries no token of its own.
func (s *Server) rememberClaims(socketID string, cl *Claims) {
	if cl == nil {
		return
	}
	s.claimsMu.Lock()
	s.socketClaims[socketID] = cl
	s.claimsMu.Unlock()
}

// socketCall is an operation on a socket, run on the node that holds it.
type socketCall struct {
	Op       string          `json:"op"` // subscribe, unsubscribe, poll, refuse
	SocketID string          `json:"socket_id"`
	Channel  string          `json:"channel,omitempty"`
	Cursor   *string         `json:"cursor,omitempty"`
	Exclude  []string        `json:"exclude,omitempty"`
	Notice   json.RawMessage `json:"notice,omitempty"`
	Timeout  time.Duration   `json:"timeout,omitempty"`
	Limit    int             `json:"limit,omitempty"`
	Seq      *uint64         `json:"seq,omitempty"`
	Error    *apiError       `json:"error,omitempty"`
	// Member is the presence identity the receiving node verified (Pusher channel_data or
	// the call's token).
	Member *store.Member `json:"member,omitempty"`
	// BySocketToken asks the owner to authorize with the token the socket was opened with,
	// which only the owner knows.
	BySocketToken bool   `json:"by_socket_token,omitempty"`
	Event         string `json:"event,omitempty"`
}

// socketResult is a socketCall's answer: an HTTP status and JSON body.
type socketResult struct {
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body"`
}

// call runs op on the socket's node: here, or over the app's Bus.
func (s *Server) call(ctx context.Context, app *App, op socketCall) socketResult {
	if node := socketNode(op.SocketID); node != app.Hub.Node() {
		if app.Bus == nil {
			return resultOf(errSocketGone)
		}
		req, _ := json.Marshal(op)
		wait := 10*time.Second + op.Timeout
		rctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		raw, err := app.Bus.Request(rctx, node, req)
		var res socketResult
		switch {
		case errors.Is(err, store.ErrNoNode):
			return resultOf(errSocketGone)
		case err != nil:
			s.log.Warn().Err(err).Str("node", node).Msg("socket call to another node failed")
			return resultOf(errStoreUnavailable)
		case json.Unmarshal(raw, &res) != nil:
			return resultOf(errorf(http.StatusBadGateway, "bad_node_answer", "the node holding the socket gave an unreadable answer"))
		}
		return res
	}
	return s.runLocal(ctx, app, op)
}

// serveBus answers socket calls other nodes send to this node's hub of app.
func (s *Server) serveBus(ctx context.Context, app *App, req []byte) []byte {
	var op socketCall
	var res socketResult
	if err := json.Unmarshal(req, &op); err != nil {
		res = resultOf(badRequest("bad_call", "unreadable socket call"))
	} else {
		res = s.runLocal(ctx, app, op)
	}
	out, _ := json.Marshal(res)
	return out
}

func resultOf(e *apiError) socketResult {
	body, _ := json.Marshal(map[string]*apiError{"error": e})
	return socketResult{Status: e.Status, Body: body}
}

func jsonResult(status int, v any) socketResult {
	body, _ := json.Marshal(v)
	return socketResult{Status: status, Body: body}
}

// runLocal runs op on a socket of this node.
func (s *Server) runLocal(ctx context.Context, app *App, op socketCall) socketResult {
	sock := app.Hub.Socket(op.SocketID)
	if sock == nil {
		return resultOf(errSocketGone)
	}
	switch op.Op {
	case "subscribe":
		return s.subscribeLocal(ctx, app, sock, op)
	case "unsubscribe":
		if !sock.Unsubscribe(op.Channel) {
			return resultOf(errorf(http.StatusNotFound, "not_subscribed", "the socket is not subscribed to "+op.Channel))
		}
		if channel.IsPresence(op.Channel) {
			s.leavePresence(ctx, app, op.Channel, op.SocketID)
		}
		return jsonResult(http.StatusOK, map[string]string{"socket_id": op.SocketID, "channel": op.Channel})
	case "refuse":
		data, _ := json.Marshal(op.Error)
		sock.Refuse(op.Channel, data)
		return jsonResult(http.StatusOK, map[string]string{})
	case "poll":
		return s.pollSocketLocal(ctx, sock, op)
	case "whisper":
		return s.whisperLocal(ctx, app, sock, op)
	}
	return resultOf(badRequest("bad_call", "unknown socket operation "+strconv.Quote(op.Op)))
}

// socketFromRequest validates a socket id and its token, and finds the socket's app.
func (s *Server) socketFromRequest(c echo.Context, id string) (string, *App, error) {
	if !ValidSocketID(id) {
		return "", nil, errBadSocketID
	}
	tok := c.Request().Header.Get(SocketTokenHeader)
	if tok == "" {
		tok = c.QueryParam("socket_token")
	}
	for _, a := range s.cfg.Apps {
		if s.sockTokens.valid(a.ID, id, tok) {
			return id, a, nil
		}
	}
	return "", nil, errSocketToken
}

// SubscribeRequest is the body of POST /v1/sockets/{socket_id}/subscriptions.
type SubscribeRequest struct {
	Channel          string   `json:"channel"`
	Auth             string   `json:"auth,omitempty"`
	ChannelData      string   `json:"channel_data,omitempty"`
	Cursor           string   `json:"cursor,omitempty"`
	ExcludeSocketIDs []string `json:"exclude_socket_ids,omitempty"`
}

// ParseSubscribe decodes and checks a subscription body.
func ParseSubscribe(body []byte) (SubscribeRequest, error) {
	var req SubscribeRequest
	if err := decodeStrict(body, &req); err != nil {
		return req, badRequest("invalid_json", "the body must be {\"channel\":…[,\"auth\",\"channel_data\",\"cursor\",\"exclude_socket_ids\"]}: "+jsonProblem(err))
	}
	if err := channel.Valid(req.Channel); err != nil {
		return req, errorf(http.StatusUnprocessableEntity, "invalid_channel", err.Error())
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
		if !ValidSocketID(id) {
			return req, badRequest("invalid_exclude", "exclude_socket_ids must be socket ids like 1234.5678")
		}
	}
	return req, nil
}

// subscribeSocket is POST /v1/sockets/{socket_id}/subscriptions. This node verifies what the
// call carries — a Pusher signature or a token — and the socket's node applies it.
func (s *Server) subscribeSocket(c echo.Context) error {
	id, app, err := s.socketFromRequest(c, c.Param("socket_id"))
	if err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	req, err := ParseSubscribe(body)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	op := socketCall{Op: "subscribe", SocketID: id, Channel: req.Channel, Exclude: req.ExcludeSocketIDs}
	if req.Cursor != "" {
		op.Cursor = &req.Cursor
	}
	if err := s.authorizeSocketSubscribe(c, app, id, req, &op); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden) {
			// The socket hears of it too, as Pusher clients expect.
			s.call(ctx, app, socketCall{Op: "refuse", SocketID: id, Channel: req.Channel, Error: ae})
		}
		return err
	}
	return writeResult(c, s.call(ctx, app, op))
}

// authorizeSocketSubscribe checks the credentials a subscription call carries. Public
// channels need none. Private and presence channels take a Pusher signature from the app's
// own /broadcasting/auth, or a token on this call; with neither, the socket's node decides
// with the token the socket was opened with.
func (s *Server) authorizeSocketSubscribe(c echo.Context, app *App, socketID string, req SubscribeRequest, op *socketCall) error {
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
			op.Member = &store.Member{UserID: member.UserID, UserInfo: member.UserInfo}
			return checkMember(app, *op.Member)
		}
		return nil
	}
	cl, err := s.claims(c)
	if err != nil {
		return err
	}
	if cl == nil {
		op.BySocketToken = true
		return nil
	}
	if err := s.checkApp(cl, app); err != nil {
		return err
	}
	if err := s.allow(cl, authz.Subscribe, req.Channel); err != nil {
		return err
	}
	if channel.IsPresence(req.Channel) {
		m := identityFromClaims(cl)
		op.Member = &m
		return checkMember(app, m)
	}
	return nil
}

// subscribeLocal applies a subscription on the socket's own node.
func (s *Server) subscribeLocal(ctx context.Context, app *App, sock *stream.Socket, op socketCall) socketResult {
	refuse := func(e *apiError) socketResult {
		data, _ := json.Marshal(e)
		sock.Refuse(op.Channel, data)
		return resultOf(e)
	}
	if op.BySocketToken {
		s.claimsMu.Lock()
		cl := s.socketClaims[op.SocketID]
		s.claimsMu.Unlock()
		if cl == nil || time.Now().After(s.cfg.Auth.Expiry(cl)) {
			return refuse(errTokenMissing)
		}
		if err := s.checkApp(cl, app); err != nil {
			return refuse(apiErrorOf(err))
		}
		if err := s.allow(cl, authz.Subscribe, op.Channel); err != nil {
			return refuse(apiErrorOf(err))
		}
		if channel.IsPresence(op.Channel) {
			m := identityFromClaims(cl)
			if err := checkMember(app, m); err != nil {
				return refuse(apiErrorOf(err))
			}
			op.Member = &m
		}
	}
	var cur *store.Cursor
	if op.Cursor != nil {
		c, err := store.ParseCursor(*op.Cursor)
		if err != nil {
			return resultOf(badRequest("invalid_cursor", "the cursor is not one this channel's server sent"))
		}
		cur = &c
	}
	var notice json.RawMessage
	if channel.IsPresence(op.Channel) {
		if op.Member == nil {
			return refuse(badRequest("invalid_channel_data", "presence channels need a user identity"))
		}
		n, err := s.joinPresence(ctx, app, op.Channel, op.SocketID, *op.Member)
		if err != nil {
			return refuse(apiErrorOf(err))
		}
		notice = n
	}
	err := sock.Subscribe(ctx, op.Channel, cur, op.Exclude, notice)
	if err != nil && channel.IsPresence(op.Channel) {
		s.leavePresence(context.WithoutCancel(ctx), app, op.Channel, op.SocketID)
	}
	switch {
	case err == nil:
		return jsonResult(http.StatusOK, map[string]string{"socket_id": op.SocketID, "channel": op.Channel})
	case errors.Is(err, stream.ErrTooManyChannels):
		return resultOf(errTooManyChannels)
	case errors.Is(err, stream.ErrClosed), errors.Is(err, stream.ErrLagged), errors.Is(err, stream.ErrShutdown):
		return resultOf(errSocketGone)
	default:
		s.log.Warn().Err(err).Str("channel", op.Channel).Msg("subscribe failed")
		return resultOf(errStoreUnavailable)
	}
}

// unsubscribeSocket is DELETE /v1/sockets/{socket_id}/subscriptions/{channel}.
func (s *Server) unsubscribeSocket(c echo.Context) error {
	id, app, err := s.socketFromRequest(c, c.Param("socket_id"))
	if err != nil {
		return err
	}
	channel, err := channelParam(c)
	if err != nil {
		return err
	}
	return writeResult(c, s.call(c.Request().Context(), app, socketCall{Op: "unsubscribe", SocketID: id, Channel: channel}))
}

func writeResult(c echo.Context, res socketResult) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSONBlob(res.Status, res.Body)
}

// pollSocketRequest serves GET /v1/poll?socket_id=… on any node.
func (s *Server) pollSocketRequest(c echo.Context) error {
	id, app, err := s.socketFromRequest(c, c.QueryParam("socket_id"))
	if err != nil {
		return err
	}
	timeout, err := s.durationParam(c, "timeout", s.cfg.PollTimeout, s.cfg.PollTimeoutMax)
	if err != nil {
		return err
	}
	limit, err := intParam(c, "limit", s.cfg.PollLimit, s.cfg.PollLimitMax)
	if err != nil {
		return err
	}
	op := socketCall{Op: "poll", SocketID: id, Timeout: timeout, Limit: limit}
	if raw := c.QueryParam("seq"); raw != "" {
		n, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			return badRequest("invalid_seq", "seq must be the seq of the last answer received")
		}
		op.Seq = &n
	}
	return writeResult(c, s.call(c.Request().Context(), app, op))
}

// socketPollAnswer is a poll answer of a socket: events and notices in order, the socket's
// composite cursor, and seq to confirm with on the next poll.
type socketPollAnswer struct {
	Events []json.RawMessage `json:"events"`
	Cursor string            `json:"cursor"`
	Seq    uint64            `json:"seq"`
	Resync []*stream.Resync  `json:"resync,omitempty"`
}

func (s *Server) pollSocketLocal(ctx context.Context, sock *stream.Socket, op socketCall) socketResult {
	s.pollMu.Lock()
	ps := s.pollSockets[sock.ID()]
	if ps != nil {
		ps.lastSeen = time.Now()
	}
	s.pollMu.Unlock()
	if ps == nil {
		return resultOf(errorf(http.StatusConflict, "not_a_poll_socket", "this socket has a stream; read it there"))
	}
	if !ps.mu.TryLock() {
		return resultOf(errPollInProgress)
	}
	defer ps.mu.Unlock()
	defer func() {
		s.pollMu.Lock()
		ps.lastSeen = time.Now()
		s.pollMu.Unlock()
	}()
	if op.Seq != nil && ps.answer != nil && *op.Seq+1 == ps.seq {
		return socketResult{Status: http.StatusOK, Body: ps.answer} // the last answer was lost
	}
	batch, err := sock.Next(ctx, op.Limit, op.Timeout, nil)
	if err != nil && len(batch) == 0 {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return resultOf(errorf(http.StatusServiceUnavailable, "canceled", "the poll ended early"))
		}
		return resultOf(errSocketGone)
	}
	ans := socketPollAnswer{Events: []json.RawMessage{}, Seq: ps.seq}
	for _, d := range batch {
		switch {
		case d.Resync != nil:
			ans.Resync = append(ans.Resync, d.Resync)
		case d.Control != nil:
			raw, _ := json.Marshal(d.Control)
			ans.Events = append(ans.Events, raw)
		default:
			ans.Events = append(ans.Events, d.Msg.Envelope())
		}
	}
	ans.Cursor = sock.Cursor()
	if len(batch) > 0 {
		ps.seq++
		ans.Seq = ps.seq
	}
	res := jsonResult(http.StatusOK, ans)
	if len(batch) > 0 {
		ps.answer = res.Body
	}
	return res
}
