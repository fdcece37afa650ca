package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/herald-rt/herald/store"
)

// Calls on a socket run on the node that holds it. Each operation is a small typed message
// and a handler (a socketOp); any node may be asked, and one not holding the socket sends the
// call over the app's Bus as bytes:
//
//	request  "<op> <socket id> <the call as JSON>"
//	answer   "<status><the JSON body the client gets>"   (status: three digits)
//
// The owner encodes the client's answer once; the node that asked writes it out as it came.
// The Bus carries bytes and knows nothing of the operations. A new operation joins by adding
// its message type, its handler and one line to socketOps.

// socketResult is a call's answer: an HTTP status and the JSON body for the client.
type socketResult struct {
	Status int
	Body   []byte
}

// socketOp is one kind of call: its name on the bus and how the owner runs it.
type socketOp[C any] struct {
	name string
	run  func(ss *session, ctx context.Context, call C) socketResult
}

// The calls. Their handlers are beside the features they serve.
type (
	subscribeCall struct {
		Channel string   `json:"channel"`
		Cursor  *string  `json:"cursor,omitempty"`
		Exclude []string `json:"exclude,omitempty"`
		// Member is the presence identity the receiving node verified (Pusher channel_data
		// or the call's token).
		Member *store.Member `json:"member,omitempty"`
		// BySocketToken asks the owner to authorize with the token the socket was opened
		// with, which only the owner knows.
		BySocketToken bool `json:"by_socket_token,omitempty"`
	}
	unsubscribeCall struct {
		Channel string `json:"channel"`
	}
	// refuseCall tells the socket that a subscription was refused, as Pusher clients expect.
	refuseCall struct {
		Channel string    `json:"channel"`
		Error   *apiError `json:"error"`
	}
	pollCall struct {
		Timeout time.Duration `json:"timeout"`
		Limit   int           `json:"limit"`
		Seq     *uint64       `json:"seq,omitempty"`
	}
	whisperCall struct {
		Channel string          `json:"channel"`
		Event   string          `json:"event"`
		Data    json.RawMessage `json:"data"`
	}
)

var (
	opSubscribe   = socketOp[subscribeCall]{"subscribe", (*session).subscribe}
	opUnsubscribe = socketOp[unsubscribeCall]{"unsubscribe", (*session).unsubscribe}
	opRefuse      = socketOp[refuseCall]{"refuse", (*session).refuse}
	opPoll        = socketOp[pollCall]{"poll", (*session).pollOnce}
	opWhisper     = socketOp[whisperCall]{"whisper", (*session).whisper}
)

// socketOps is the dispatch table of calls that arrive from other nodes.
var socketOps = map[string]func(ss *session, ctx context.Context, payload []byte) socketResult{
	opSubscribe.name:   opSubscribe.serve,
	opUnsubscribe.name: opUnsubscribe.serve,
	opRefuse.name:      opRefuse.serve,
	opPoll.name:        opPoll.serve,
	opWhisper.name:     opWhisper.serve,
	opSignin.name:      opSignin.serve,
}

// nodeOp is a call on a node as a whole rather than on one of its sockets; on the bus, the id
// after the operation's name is the node's own.
type nodeOp[C any] struct {
	name string
	run  func(api socketAPI, app *App, ctx context.Context, call C) socketResult
}

// nodeOps is the dispatch table of node-wide calls that arrive from other nodes.
var nodeOps = map[string]func(api socketAPI, app *App, ctx context.Context, payload []byte) socketResult{
	opTerminateUser.name: opTerminateUser.serve,
	opNodeStats.name:     opNodeStats.serve,
}

// serve decodes a node-wide call from another node and runs it.
func (op nodeOp[C]) serve(api socketAPI, app *App, ctx context.Context, payload []byte) socketResult {
	var call C
	if err := json.Unmarshal(payload, &call); err != nil {
		return resultOf(badRequest("bad_call", "unreadable "+op.name+" call"))
	}
	return op.run(api, app, ctx, call)
}

// remoteFailure is a node's answer that fails a call made on every node: the client gets it
// as it came.
type remoteFailure struct{ res socketResult }

func (f *remoteFailure) Error() string { return "node answered " + strconv.Itoa(f.res.Status) }

// remoteWaiter is a call that may wait at the owner (a poll): the node that sent it waits that
// much longer for the answer.
type remoteWaiter interface{ remoteWait() time.Duration }

func (c pollCall) remoteWait() time.Duration { return c.Timeout }

// call runs the call on the socket's node: here, directly, or over the app's Bus.
func (op socketOp[C]) call(ctx context.Context, api socketAPI, app *App, socketID string, call C) socketResult {
	if node := socketNode(socketID); node != app.Hub.Node() {
		return api.remoteCall(ctx, app, node, op.name, socketID, call)
	}
	ss := api.sessions.get(app, socketID)
	if ss == nil {
		return resultOf(errSocketGone)
	}
	return op.run(ss, ctx, call)
}

// serve decodes a call from another node and runs it.
func (op socketOp[C]) serve(ss *session, ctx context.Context, payload []byte) socketResult {
	var call C
	if err := json.Unmarshal(payload, &call); err != nil {
		return resultOf(badRequest("bad_call", "unreadable "+op.name+" call"))
	}
	return op.run(ss, ctx, call)
}

// remoteCall sends a call to the node holding the socket and returns its answer.
func (api socketAPI) remoteCall(ctx context.Context, app *App, node, op, socketID string, call any) socketResult {
	if app.Bus == nil {
		return resultOf(errSocketGone)
	}
	payload, err := json.Marshal(call)
	if err != nil {
		return resultOf(errInternal)
	}
	req := make([]byte, 0, len(op)+len(socketID)+2+len(payload))
	req = append(append(append(append(append(req, op...), ' '), socketID...), ' '), payload...)
	wait := 10 * time.Second
	if w, ok := call.(remoteWaiter); ok {
		wait += w.remoteWait()
	}
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	raw, err := app.Bus.Request(rctx, node, req)
	switch {
	case errors.Is(err, store.ErrNoNode):
		api.cfg.Metrics.busCall(op, "no_node", time.Since(start))
		return resultOf(errSocketGone)
	case err != nil:
		api.cfg.Metrics.busCall(op, "failed", time.Since(start))
		api.log.Warn().Err(err).Str("node", node).Msg("socket call to another node failed")
		return resultOf(errStoreUnavailable)
	}
	status, err := strconv.Atoi(string(raw[:min(3, len(raw))]))
	if err != nil || status < 100 || status > 599 {
		api.cfg.Metrics.busCall(op, "bad_answer", time.Since(start))
		return resultOf(errorf(http.StatusBadGateway, "bad_node_answer", "the node holding the socket gave an unreadable answer"))
	}
	api.cfg.Metrics.busCall(op, "answered", time.Since(start))
	return socketResult{Status: status, Body: raw[3:]}
}

// serveBus answers the socket calls other nodes send to this node's hub of app.
func (api socketAPI) serveBus(ctx context.Context, app *App, req []byte) []byte {
	res := api.runRemote(ctx, app, req)
	return append(strconv.AppendInt(make([]byte, 0, 3+len(res.Body)), int64(res.Status), 10), res.Body...)
}

func (api socketAPI) runRemote(ctx context.Context, app *App, req []byte) socketResult {
	op, rest, ok1 := bytes.Cut(req, []byte(" "))
	socketID, payload, ok2 := bytes.Cut(rest, []byte(" "))
	serve := socketOps[string(op)]
	switch {
	case !ok1 || !ok2:
		return resultOf(badRequest("bad_call", "unreadable socket call"))
	case nodeOps[string(op)] != nil:
		return nodeOps[string(op)](api, app, ctx, payload)
	case serve == nil:
		return resultOf(badRequest("bad_call", "unknown socket operation "+strconv.Quote(string(op))))
	}
	ss := api.sessions.get(app, string(socketID))
	if ss == nil {
		return resultOf(errSocketGone)
	}
	return serve(ss, ctx, payload)
}

func resultOf(e *apiError) socketResult {
	body, _ := json.Marshal(map[string]*apiError{"error": e})
	return socketResult{Status: e.Status, Body: body}
}

func jsonResult(status int, v any) socketResult {
	body, _ := json.Marshal(v)
	return socketResult{Status: status, Body: body}
}

func writeResult(c echo.Context, res socketResult) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSONBlob(res.Status, res.Body)
}
