package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/herald-rt/herald/stream"
)

// The SSE writer is our own few lines on http.ResponseController rather than r3labs/sse's
// server: that server keeps an unbounded log, rewrites ids, rejects non-numeric Last-Event-IDs
// and stalls every subscriber behind a slow one (docs/architecture.md). Here the engine owns
// ordering and fan-out, and this loop only writes shared bytes, flushes, and stops on the
// first write error or a write that misses its deadline.

func (s *Server) channelStream(c echo.Context) error { return s.serveSSE(c, true) }
func (s *Server) multiStream(c echo.Context) error   { return s.serveSSE(c, false) }

// streamBatch bounds how many deliveries one write gathers.
const streamBatch = 64

func (s *Server) serveSSE(c echo.Context, oneChannel bool) error {
	req := c.Request()
	cursor := req.Header.Get("Last-Event-ID")
	if q := c.QueryParam("last_event_id"); q != "" {
		cursor = q
	}
	sub, err := s.parseSubscribe(c, oneChannel, cursor)
	if err != nil {
		return err
	}
	ctx := req.Context()
	if !sub.expires.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, sub.expires)
		defer cancel()
	}
	sock, err := s.open(ctx, sub)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return errTokenInvalid
		}
		return err
	}
	defer sock.Close()

	w := c.Response()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)

	buf := make([]byte, 0, 512)
	buf = append(buf, "retry: "...)
	buf = strconv.AppendInt(buf, s.cfg.Retry.Milliseconds(), 10)
	buf = append(buf, "\n\nevent: herald:connected\ndata: "...)
	hello, _ := json.Marshal(struct {
		SocketID  string `json:"socket_id"`
		Heartbeat int    `json:"heartbeat"`
		Cursor    string `json:"cursor"`
	}{sock.ID(), int(s.cfg.Heartbeat / time.Second), sock.Cursor()})
	buf = append(buf, hello...)
	buf = append(buf, "\n\n"...)
	if err := s.flushFrame(rc, w, buf); err != nil {
		return nil
	}

	var batch []stream.Delivery
	for {
		batch, err = sock.Next(ctx, streamBatch, s.cfg.Heartbeat, batch[:0])
		buf = buf[:0]
		for _, d := range batch {
			buf = appendDelivery(buf, d, oneChannel)
		}
		if err == nil && len(batch) == 0 {
			buf = append(buf, ": ping\n\n"...)
		}
		switch {
		case err == nil:
		case errors.Is(err, stream.ErrShutdown):
			buf = append(buf, "retry: "...)
			buf = strconv.AppendInt(buf, jitter(s.cfg.Retry).Milliseconds(), 10)
			buf = append(buf, "\n\n"...)
		case errors.Is(err, context.DeadlineExceeded) && req.Context().Err() == nil:
			buf = append(buf, "event: herald:error\ndata: {\"code\":\"token_expired\",\"message\":\"the token expired; reconnect with a fresh one\"}\n\n"...)
		}
		if len(buf) > 0 {
			if werr := s.flushFrame(rc, w, buf); werr != nil {
				return nil
			}
		}
		if err != nil {
			if errors.Is(err, stream.ErrLagged) {
				s.log.Info().Str("socket", sock.ID()).Msg("slow client disconnected; it resumes from its cursor")
			} else if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) &&
				!errors.Is(err, stream.ErrShutdown) {
				s.log.Warn().Err(err).Str("socket", sock.ID()).Msg("stream ended")
			}
			return nil
		}
		if cap(buf) > 64<<10 {
			buf = make([]byte, 0, 512) // do not keep a burst's buffer for the connection's life
		}
	}
}

// flushFrame writes b and flushes it under a rolling deadline, so a client that stops reading
// is cut off instead of holding the connection forever.
func (s *Server) flushFrame(rc *http.ResponseController, w http.ResponseWriter, b []byte) error {
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if _, err := w.Write(b); err != nil {
		return err
	}
	return rc.Flush()
}

// appendDelivery writes one delivery as SSE.
func appendDelivery(b []byte, d stream.Delivery, oneChannel bool) []byte {
	switch {
	case d.Resync != nil:
		data, _ := json.Marshal(d.Resync)
		b = append(b, "id: "...)
		b = append(b, d.ID...)
		b = append(b, "\nevent: herald:resync\ndata: "...)
		b = append(b, data...)
		return append(b, "\n\n"...)
	case oneChannel:
		return append(b, d.Msg.Frame()...)
	default:
		b = append(b, "id: "...)
		b = append(b, d.ID...)
		b = append(b, '\n')
		return append(b, d.Msg.Body()...)
	}
}
