package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
	"github.com/herald-rt/herald/stream"
)

// PublishRequest is the body of POST /v1/channels/{channel}/events.
type PublishRequest struct {
	Event    string          `json:"event"`
	Data     json.RawMessage `json:"data"`
	SocketID string          `json:"socket_id,omitempty"`
}

// maxIdempotencyKeyLen bounds an Idempotency-Key header.
const maxIdempotencyKeyLen = 255

// parsePublish decodes and checks a publish body. The data is returned compacted to one line,
// so every stored envelope fits a single SSE `data:` line.
func parsePublish(body []byte) (PublishRequest, error) {
	req, ok := parsePublishFast(body)
	if !ok {
		req = PublishRequest{}
		if err := decodeStrict(body, &req); err != nil {
			return req, badRequest("invalid_json", "the body must be one JSON object {\"event\":…,\"data\":…}: "+jsonProblem(err))
		}
	}
	if err := stream.ValidEventName(req.Event); err != nil {
		return req, badRequest("invalid_event", err.Error())
	}
	if req.SocketID != "" && !validSocketID(req.SocketID) {
		return req, badRequest("invalid_socket_id", "socket_id must look like 1234.5678")
	}
	req.Data = compactJSON(req.Data)
	return req, nil
}

func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be a %s", typ.Field, typ.Type)
	case errors.Is(err, io.EOF):
		return "empty body"
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "json: ")
	return msg
}

// validSocketID checks Pusher's socket id form, digits.digits.
func validSocketID(id string) bool {
	dot := strings.IndexByte(id, '.')
	if dot <= 0 || dot == len(id)-1 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; i != dot && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func badRequest(code, message string) *apiError {
	return errorf(http.StatusBadRequest, code, message)
}

// channelParam returns the validated :channel path parameter.
func channelParam(c echo.Context) (string, error) {
	raw := c.Param("channel")
	name, err := url.PathUnescape(raw)
	if err != nil {
		name = raw
	}
	if err := channel.Valid(name); err != nil {
		return "", errorf(http.StatusUnprocessableEntity, "invalid_channel", err.Error())
	}
	return name, nil
}

// claims returns the verified token of the request, or nil when it carries none.
func (s *Server) claims(c echo.Context) (*Claims, error) {
	token := requestToken(c)
	if token == "" {
		return nil, nil
	}
	if s.cfg.Auth == nil {
		return nil, errTokenInvalid
	}
	cl, err := s.cfg.Auth.Verify(token)
	if err != nil {
		return nil, errTokenInvalid
	}
	return cl, nil
}

func requestToken(c echo.Context) string {
	if tok := bearer(c.Request().Header.Get("Authorization")); tok != "" {
		return tok
	}
	return c.QueryParam("token")
}

// authorizePublish decides a publish and returns the app it goes to. A backend's server API
// key (from the config file) is checked first; otherwise the JWT's herald.publish patterns
// and every channel rule that matches must allow it.
func (s *Server) authorizePublish(c echo.Context, channel string) (*App, error) {
	if s.cfg.Authz != nil {
		if key, ok := s.cfg.Authz.APIKey(bearer(c.Request().Header.Get("Authorization"))); ok {
			if !key.CanPublish(channel) {
				return nil, errorf(http.StatusForbidden, "forbidden", "the API key may not publish to "+channel)
			}
			if key.App != "" {
				if a := s.apps.byID(key.App); a != nil {
					return a, nil
				}
				return nil, errorf(http.StatusForbidden, "unknown_app", "the API key's app is not served here")
			}
			return s.apps.def(), nil
		}
	}
	cl, err := s.claims(c)
	if err != nil {
		return nil, err
	}
	if cl == nil {
		return nil, errTokenMissing
	}
	if err := s.allow(cl, authz.Publish, channel); err != nil {
		return nil, err
	}
	return s.apps.forToken(cl)
}

// allow applies a token's patterns and the channel rules to one action on one channel.
func (s *Server) allow(cl *Claims, action authz.Action, channel string) error {
	verb := "subscribe to "
	if action == authz.Publish {
		verb = "publish to "
	}
	if s.cfg.Authz != nil {
		if ok, reason := s.cfg.Authz.Rules.Allow(action, channel, cl.Raw); !ok {
			return errorf(http.StatusForbidden, "forbidden", "the token may not "+verb+channel+": "+reason)
		}
		return nil
	}
	granted := cl.CanSubscribe(channel)
	if action == authz.Publish {
		granted = cl.CanPublish(channel)
	}
	if !granted {
		return errorf(http.StatusForbidden, "forbidden", "the token may not "+verb+channel)
	}
	return nil
}

func (s *Server) publish(c echo.Context) error {
	channel, err := channelParam(c)
	if err != nil {
		return err
	}
	app, err := s.authorizePublish(c, channel)
	if err != nil {
		return err
	}
	key := c.Request().Header.Get("Idempotency-Key")
	if len(key) > maxIdempotencyKeyLen || !printableASCII(key) {
		return badRequest("invalid_idempotency_key", "Idempotency-Key must be 1-255 printable ASCII characters")
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	req, err := parsePublish(body)
	if err != nil {
		return err
	}
	return s.appendAndAnswer(c, app, store.AppendRequest{
		Channel: channel, Name: req.Event, Data: req.Data, SocketID: req.SocketID, IdempotencyKey: key,
	})
}

func (s *Server) appendAndAnswer(c echo.Context, app *App, req store.AppendRequest) error {
	// The append must not be cut short by a client that goes away mid-request: either it
	// happens and is acknowledged, or the client retries with its Idempotency-Key. The store
	// bounds its own round trips.
	ctx := context.WithoutCancel(c.Request().Context())
	start := time.Now()
	res, err := app.Hub.Store().Append(ctx, req)
	if errors.Is(err, store.ErrUnconfirmed) && req.IdempotencyKey != "" {
		// The first attempt may have landed. Its key settles it: the repeat answers with the
		// event when it did, and appends it now when it did not — at most once either way.
		// Whatever the repeat's own outcome, the first attempt's stays unknown if it fails.
		s.log.Warn().Err(err).Str("channel", req.Channel).Msg("append unconfirmed; repeating it with its Idempotency-Key")
		if res, err = app.Hub.Store().Append(ctx, req); err == nil {
			res.Duplicate = false // this request's event, whichever attempt appended it
		} else if !errors.Is(err, store.ErrIdempotencyConflict) {
			err = fmt.Errorf("%w (and the repeat: %w)", store.ErrUnconfirmed, err)
		}
	}
	s.cfg.Metrics.published(app, appendOutcome(err, res.Duplicate), time.Since(start))
	switch {
	case errors.Is(err, store.ErrIdempotencyConflict):
		return errIdempotencyReused
	case err != nil:
		s.log.Warn().Err(err).Str("channel", req.Channel).Msg("append failed")
		return storeError(err)
	}
	status := http.StatusCreated
	if res.Duplicate {
		status = http.StatusOK
	}
	// Cursor and channel are plain ASCII of known safe characters: no JSON escaping needed.
	id := res.Event.Cursor().String()
	b := make([]byte, 0, 24+len(id)+len(req.Channel))
	b = append(b, `{"id":"`...)
	b = append(b, id...)
	b = append(b, `","channel":"`...)
	b = append(b, req.Channel...)
	b = append(b, "\"}\n"...)
	return c.JSONBlob(status, b)
}

// appendOutcome names an append's outcome for the metrics.
func appendOutcome(err error, duplicate bool) string {
	switch {
	case err == nil && duplicate:
		return "duplicate"
	case err == nil:
		return "appended"
	case errors.Is(err, store.ErrIdempotencyConflict):
		return "idempotency_conflict"
	case errors.Is(err, store.ErrUnconfirmed):
		return "store_timeout"
	case errors.Is(err, store.ErrNotReplicated):
		return "replication_timeout"
	}
	return "store_unavailable"
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// testMessage is POST /v1/test: publishes a TestMessage, the hook the users' apps had at
// /api/websocket/test.
func (s *Server) testMessage(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var req struct {
		Channel string          `json:"channel"`
		Message json.RawMessage `json:"message"`
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			return badRequest("invalid_json", "the body must be {\"channel\":…,\"message\":…}: "+jsonProblem(err))
		}
	}
	if req.Channel == "" {
		req.Channel = "test"
	}
	if err := channel.Valid(req.Channel); err != nil {
		return errorf(http.StatusUnprocessableEntity, "invalid_channel", err.Error())
	}
	app, err := s.authorizePublish(c, req.Channel)
	if err != nil {
		return err
	}
	msg := req.Message
	if len(msg) == 0 {
		msg = json.RawMessage(`"Hello from Herald"`)
	}
	data, err := json.Marshal(map[string]any{"message": msg, "sent_at": time.Now().UTC().Format(time.RFC3339Nano)})
	if err != nil {
		return badRequest("invalid_json", "message is not valid JSON")
	}
	return s.appendAndAnswer(c, app, store.AppendRequest{Channel: req.Channel, Name: "TestMessage", Data: data})
}

func (s *Server) health(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	c.Response().Header().Set("Cache-Control", "no-store")
	kind := s.apps.def().Hub.Store().Kind()
	for _, a := range s.apps {
		if err := a.Hub.Store().Ping(ctx); err != nil {
			return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "store": kind})
		}
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ok", "store": kind})
}

// ready is GET /v1/ready, for load balancers: 503 while the node drains or while its store
// cannot be reached, so that no new client is sent where it would be refused.
func (s *Server) ready(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	if s.census.draining.Load() {
		c.Response().Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds()))
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "draining"})
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	for _, a := range s.apps {
		if err := a.Hub.Store().Ping(ctx); err != nil {
			return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
		}
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) config(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{
		"version":   s.cfg.Version,
		"protocol":  "herald.v1",
		"store":     s.apps.def().Hub.Store().Kind(),
		"heartbeat": int(s.cfg.Heartbeat / time.Second),
		"retry_ms":  s.cfg.Retry.Milliseconds(),
		"transports": []string{
			"sse", "long-poll",
		},
		"endpoints": map[string]string{
			"publish":        "/v1/channels/{channel}/events",
			"channel_stream": "/v1/channels/{channel}/events",
			"stream":         "/v1/stream?channel={channel}",
			"channel_poll":   "/v1/channels/{channel}/poll",
			"poll":           "/v1/poll?channel={channel}",
			"health":         "/v1/health",
			"test":           "/v1/test",
		},
		"limits": map[string]any{
			"max_channels_per_stream": channel.MaxPerSocket,
			"max_channel_name":        channel.MaxLen,
			"max_event_name":          stream.MaxEventNameLen,
			"max_body_bytes":          s.cfg.MaxBodyBytes,
			"poll_timeout_default":    int(s.cfg.PollTimeout / time.Second),
			"poll_timeout_max":        int(s.cfg.PollTimeoutMax / time.Second),
			"poll_limit_default":      s.cfg.PollLimit,
			"poll_limit_max":          s.cfg.PollLimitMax,
			"history_size":            s.cfg.HistorySize,
		},
	})
}
