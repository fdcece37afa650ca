package server

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
)

// apiError is every error the API answers with: {"error":{"code":"…","message":"…"}}.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// RetryAfter, in seconds, is sent as the Retry-After header when set.
	RetryAfter int `json:"-"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, message string) *apiError {
	return &apiError{Status: status, Code: code, Message: message}
}

// Errors used in several places. Every code is in errorCodes.
var (
	errTokenMissing       = errorf(http.StatusUnauthorized, "token_missing", "this request needs a token: Authorization: Bearer <JWT> or ?token=")
	errTokenInvalid       = errorf(http.StatusUnauthorized, "token_invalid", "the token is invalid or expired")
	errStoreUnavailable   = errorf(http.StatusServiceUnavailable, "store_unavailable", "the event store is unavailable; nothing was appended, retrying with the same Idempotency-Key is safe")
	errReplicationTimeout = errorf(http.StatusServiceUnavailable, "replication_timeout", "appended, not yet replicated: the Redis replica did not confirm it in time; retry with the same Idempotency-Key, which appends nothing new and waits for the replica again")
	errStoreTimeout       = errorf(http.StatusServiceUnavailable, "store_timeout", "the event store did not confirm the append in time: it may have been appended; retry with the same Idempotency-Key, which appends it at most once")
	errShuttingDown       = errorf(http.StatusServiceUnavailable, "shutting_down", "the server is shutting down; reconnect")
	errPayloadTooLarge    = errorf(http.StatusRequestEntityTooLarge, "payload_too_large", "the request body is over the limit")
	errIdempotencyReused  = errorf(http.StatusConflict, "idempotency_conflict", "this Idempotency-Key was used with a different request")
	errInternal           = errorf(http.StatusInternalServerError, "internal", "internal server error")
)

// apiErrorOf is err as the API answers it: an *apiError as it is, a store failure as its 503,
// anything else a 500 that hides internals. It never returns nil for a non-nil err.
func apiErrorOf(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	if errors.As(storeError(err), &ae) {
		return ae
	}
	return errInternal
}

// writeError is the Echo error handler: API errors as they are, Echo's own (404, 405, 413 …)
// mapped to the same JSON shape, anything else a 500 that hides internals.
func (s *Server) writeError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var ae *apiError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &he):
		ae = errorf(he.Code, codeForStatus(he.Code), http.StatusText(he.Code))
		if msg, ok := he.Message.(string); ok && msg != "" {
			ae.Message = msg
		}
	default:
		s.log.Error().Err(err).Str("path", c.Path()).Msg("internal error")
		ae = errInternal
	}
	s.cfg.Metrics.refused(ae)
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	if ae.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	if unreadBody(c) {
		closeInsteadOfDraining(c, min(refusedBodyLinger, s.cfg.BodyTimeout))
	}
	if c.Request().Method == http.MethodHead {
		c.NoContent(ae.Status)
		return
	}
	c.JSON(ae.Status, map[string]*apiError{"error": ae})
}

// codeForStatus names the errors Echo raises itself (an unknown route, a wrong method).
func codeForStatus(status int) string {
	switch status {
	case http.StatusNotFound:
		return "not_found"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusRequestEntityTooLarge:
		return "payload_too_large"
	}
	if status >= 500 {
		return "internal"
	}
	return "bad_request"
}

// errorCodes is every error code the API answers with, by status: the wire contract. The
// error tables of docs/protocol.md state exactly these (TestErrorCodesMatchProtocol), and every
// code the server's source can answer with is one of them (TestErrorCodesAreListed). A code
// may come with more than one status: invalid_json is 400 on the v1 API and 422 on the Pusher
// API for JSON that is not a valid event, as Reverb answers.
var errorCodes = map[int][]string{
	http.StatusBadRequest: {"invalid_json", "invalid_event", "invalid_socket_id", "invalid_idempotency_key",
		"invalid_cursor", "invalid_since", "invalid_timeout", "invalid_limit", "invalid_seq", "invalid_exclude",
		"invalid_channel_data", "invalid_user_id", "invalid_user_data", "invalid_info", "channel_required", "too_many_channels",
		"not_presence", "bad_body", "bad_call", "bad_request", "invalid_sort"},
	http.StatusUnauthorized: {"token_missing", "token_invalid", "socket_token_invalid", "invalid_signature",
		"signature_unavailable", "unknown_key", "timestamp_expired", "body_md5_mismatch", "wrong_app",
		"invalid_auth_params", "admin_token_invalid"},
	http.StatusForbidden: {"forbidden", "unknown_app", "app_mismatch", "origin_not_allowed", "presence_full", "not_subscribed",
		"client_events_not_allowed", "client_events_disabled", "user_channel", "no_subject"},
	http.StatusNotFound:              {"not_found", "socket_gone", "not_subscribed", "unknown_app", "pusher_api_disabled"},
	http.StatusMethodNotAllowed:      {"method_not_allowed"},
	http.StatusRequestTimeout:        {"body_timeout"},
	http.StatusConflict:              {"idempotency_conflict", "poll_in_progress", "not_a_poll_socket", "already_signed_in"},
	http.StatusRequestEntityTooLarge: {"payload_too_large", "user_info_too_large"},
	http.StatusUnprocessableEntity: {"invalid_channel", "invalid_json", "invalid_event", "invalid_data",
		"too_many_channels", "invalid_socket_id", "invalid_info", "invalid_batch", "batch_too_large"},
	http.StatusTooManyRequests:     {"rate_limited"},
	http.StatusInternalServerError: {"internal"},
	http.StatusNotImplemented:      {"not_supported", "presence_unavailable"},
	http.StatusBadGateway:          {"bad_node_answer"},
	http.StatusServiceUnavailable: {"store_unavailable", "store_timeout", "replication_timeout", "shutting_down", "canceled",
		"over_capacity"},
}
