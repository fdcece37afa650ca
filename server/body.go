package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
)

// Request bodies are read against a deadline. net/http has a ReadTimeout for the whole
// request, but it also bounds how long the connection may wait afterwards, which would cut
// every long-poll and stream short; so the deadline is set here, only while a body is due,
// and cleared the moment the body is complete. A client that declares a body and then
// trickles it (or never sends it) is cut off within --body-timeout, whether or not the handler
// ever reads the body.

var (
	errBodyTimeout   = errorf(http.StatusRequestTimeout, "body_timeout", "the request body did not arrive in time")
	errNotUTF8       = badRequest("invalid_json", "the body is not valid UTF-8 (JSON text must be)")
	errLoneSurrogate = badRequest("invalid_json", "the body has a \\u escape of an unpaired UTF-16 surrogate, which is not text")
)

// guardBody refuses a declared body over the limit at once and starts the body's deadline.
func (s *Server) guardBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if req.ContentLength == 0 || req.Body == nil || req.Body == http.NoBody {
			return next(c)
		}
		if req.ContentLength > s.cfg.MaxBodyBytes {
			return errPayloadTooLarge
		}
		dl := readDeadliner(c)
		if dl == nil || dl.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)) != nil {
			return next(c) // a transport without deadlines (a test recorder): nothing to guard
		}
		req.Body = &timedBody{ReadCloser: req.Body, dl: dl}
		return next(c)
	}
}

// timedBody clears the connection's read deadline once the whole body is in, so that the
// connection may then wait as long as the request needs. A request is served by one goroutine,
// which is the only reader of its body.
type timedBody struct {
	io.ReadCloser
	dl       deadliner
	complete bool
}

// deadliner sets a connection's read deadline: net/http's response writers (HTTP/1 and 2) do.
type deadliner interface{ SetReadDeadline(time.Time) error }

// readDeadliner finds the request's connection deadline setter, without the allocation of an
// http.ResponseController on every request.
func readDeadliner(c echo.Context) deadliner {
	if dl, ok := c.Response().Writer.(deadliner); ok {
		return dl
	}
	return http.NewResponseController(c.Response())
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.complete {
		b.complete = true
		_ = b.dl.SetReadDeadline(time.Time{})
	}
	return n, err
}

// unreadBody reports whether the request declared a body that was not read to its end.
func unreadBody(c echo.Context) bool {
	req := c.Request()
	if req.ContentLength == 0 || req.Body == nil || req.Body == http.NoBody {
		return false
	}
	b, ok := req.Body.(*timedBody)
	return !ok || !b.complete
}

// closeInsteadOfDraining makes an answer sent before the body was read the connection's last:
// net/http would otherwise read the rest of the body before sending it, for as long as the
// client takes.
//
// After the answer net/http still reads what remains of a body under 256 KB, and discards it;
// linger bounds that read. It must not be cut short: closing a socket with unread data in it
// resets the connection, and a client still sending its body then loses the answer as well
// (a 70 KB publish refused with 413 got "connection reset by peer" in 8 runs of 200). A body
// of 256 KB or more is not read at all, and net/http half-closes and waits instead.
func closeInsteadOfDraining(c echo.Context, linger time.Duration) {
	c.Response().Header().Set("Connection", "close")
	if dl := readDeadliner(c); dl != nil {
		_ = dl.SetReadDeadline(time.Now().Add(linger))
	}
}

// refusedBodyLinger bounds how long the body of a refused request is read and discarded after
// the answer, so that the client reads the answer rather than a reset (closeInsteadOfDraining).
const refusedBodyLinger = 2 * time.Second

// readBody reads the request body up to the configured limit and checks it is UTF-8, as JSON
// text must be (RFC 8259): encoding/json would otherwise turn invalid bytes in names into U+FFFD
// and pass them through raw inside data.
func (s *Server) readBody(c echo.Context) ([]byte, error) {
	req := c.Request()
	if req.ContentLength > s.cfg.MaxBodyBytes {
		return nil, errPayloadTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), req.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return nil, errPayloadTooLarge
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, errBodyTimeout
		}
		return nil, badRequest("bad_body", "could not read the request body")
	}
	if !utf8.Valid(body) {
		return nil, errNotUTF8
	}
	if loneSurrogate(body) {
		return nil, errLoneSurrogate
	}
	return body, nil
}

// decodeStrict decodes body, one JSON object, into v. Unknown fields and anything after the
// object are refused, so a typo in a field name never passes silently.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the object")
	}
	return nil
}

// compactJSON returns a JSON value that a decoder has already validated as one line: null when
// absent, and without insignificant whitespace, so it fits a single SSE data: line.
func compactJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("null")
	}
	if !bytes.ContainsAny(raw, " \t\r\n") {
		return raw
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return raw // not reached for validated JSON; the caller's decoder would have refused it
	}
	return buf.Bytes()
}

// loneSurrogate reports whether a JSON text has a \u escape of a UTF-16 surrogate that is not
// half of a pair. Such a string is not text (I-JSON, RFC 7493, forbids it), and encoding/json
// would decode it to U+FFFD, silently changing a name. Malformed escapes are left to the JSON
// decoder, which refuses them.
func loneSurrogate(b []byte) bool {
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !inString {
			inString = c == '"'
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			r, ok := unicodeEscape(b, i)
			if !ok {
				i++ // a one-character escape (or a malformed one): skip the escaped byte
				continue
			}
			i += 5
			switch {
			case r >= 0xDC00 && r < 0xE000:
				return true // a low surrogate with no high one before it
			case r >= 0xD800 && r < 0xDC00:
				low, ok := unicodeEscape(b, i+1)
				if !ok || low < 0xDC00 || low >= 0xE000 {
					return true
				}
				i += 6
			}
		}
	}
	return false
}

// unicodeEscape decodes the \uXXXX escape that starts at b[i].
func unicodeEscape(b []byte, i int) (rune, bool) {
	if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range b[i+2 : i+6] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}
