package server

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/herald-rt/herald/stream"
)

// Long-poll: the fallback for clients and proxies that cannot hold a stream. Each poll is a
// short-lived socket on the same engine, so it gets the same history/live merge; the cursor it
// answers with is all the state there is, so any node can serve the next poll.

func (s *Server) channelPoll(c echo.Context) error { return s.servePoll(c, true) }
func (s *Server) multiPoll(c echo.Context) error {
	if c.QueryParam("socket_id") != "" {
		return socketAPI{s}.pollSocketRequest(c)
	}
	return s.servePoll(c, false)
}

// appendPollAnswer writes a poll's answer, {"events":[…],"cursor":"…"[,"seq":n][,"resync":[…]]},
// from the deliveries' stored envelopes as they are: no event is decoded or encoded again.
// Notices (subscription notices, whispers, presence) come in the events list, in order;
// resyncs, which are positions rather than events, in their own list.
func appendPollAnswer(b []byte, batch []stream.Delivery, cursor string, seq *uint64) []byte {
	b = append(b, `{"events":[`...)
	var resync []*stream.Resync
	n := 0
	for _, d := range batch {
		if d.Resync != nil {
			resync = append(resync, d.Resync)
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		if d.Control != nil {
			raw, _ := json.Marshal(d.Control)
			b = append(b, raw...)
			continue
		}
		b = append(b, d.Msg.Envelope()...)
	}
	cur, _ := json.Marshal(cursor)
	b = append(append(b, `],"cursor":`...), cur...)
	if seq != nil {
		b = strconv.AppendUint(append(b, `,"seq":`...), *seq, 10)
	}
	if len(resync) > 0 {
		raw, _ := json.Marshal(resync)
		b = append(append(b, `,"resync":`...), raw...)
	}
	return append(b, "}\n"...)
}

func (s *Server) servePoll(c echo.Context, oneChannel bool) error {
	timeout, err := durationParam(c, "timeout", s.cfg.PollTimeout, s.cfg.PollTimeoutMax)
	if err != nil {
		return err
	}
	limit, err := intParam(c, "limit", s.cfg.PollLimit, s.cfg.PollLimitMax)
	if err != nil {
		return err
	}
	cursor := c.QueryParam("cursor")
	sub, err := s.parseSubscribe(c, oneChannel, false, cursor)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	c.Response().Header().Set("Cache-Control", "no-store")
	if cursor == "" && !sub.req.FromBeginning {
		// Where "now" is needs only the heads, not a socket.
		heads, err := sub.app.Hub.Store().Heads(ctx, sub.req.Channels)
		switch {
		case ctx.Err() != nil:
			return nil // the client left
		case err != nil:
			return storeError(err)
		}
		return c.JSONBlob(http.StatusOK, appendPollAnswer(nil, nil, stream.HeadCursor(sub.req.Channels, heads, sub.req.Composite), nil))
	}
	if !sub.expires.IsZero() {
		if until := time.Until(sub.expires); until < timeout {
			timeout = max(until, 0)
		}
	}
	sub.req.EnvelopesOnly = true
	if err := s.census.admit(sub.app, transportPoll, c.RealIP()); err != nil {
		return err
	}
	defer s.census.leave(sub.app, transportPoll)
	sock, err := s.open(ctx, sub)
	if err != nil {
		return err
	}
	defer sock.Close()
	batch, err := sock.Next(ctx, limit, timeout, nil)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil // the client left
		}
		// A one-shot socket lags only when a burst (say the refill after a store outage)
		// overflows its queue before this one read: nothing is lost, the cursor stops before
		// what was dropped and the next poll reads it from the log.
		if len(batch) == 0 && !errors.Is(err, stream.ErrLagged) {
			return storeError(err)
		}
	}
	body := appendPollAnswer(nil, batch, sock.Cursor(), nil)
	sub.app.meters.delivered(transportPoll, rand.Uint32(), len(batch), int64(len(body)))
	return c.JSONBlob(http.StatusOK, body)
}

func durationParam(c echo.Context, name string, def, limit time.Duration) (time.Duration, error) {
	raw := c.QueryParam(name)
	if raw == "" {
		return def, nil
	}
	d, ok := parseSeconds(raw, limit)
	if !ok {
		return 0, badRequest("invalid_"+name, name+" must be whole seconds from 0 to "+strconv.Itoa(int(limit/time.Second)))
	}
	return d, nil
}

// parseSeconds reads whole seconds from 0 to limit. The range is checked on the number before
// it becomes a Duration: 9223372037 seconds, times 10⁹, would wrap around to a small one.
func parseSeconds(raw string, limit time.Duration) (time.Duration, bool) {
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n < 0 || n > int64(limit/time.Second) {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

func intParam(c echo.Context, name string, def, limit int) (int, error) {
	raw := c.QueryParam(name)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > limit {
		return 0, badRequest("invalid_"+name, name+" must be from 1 to "+strconv.Itoa(limit))
	}
	return n, nil
}
