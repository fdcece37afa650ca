package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
	"github.com/herald-rt/herald/stream"
)

// subscription is a validated, authorized subscribe request (stream or poll).
type subscription struct {
	req     stream.Request
	expires time.Time // the token's expiry; zero without a token
	claims  *Claims
	app     *App
}

// parseSubscribe validates the channels, the token and the cursor of a stream or poll.
// oneChannel selects the path's channel; otherwise ?channel= lists them, and a dynamic socket
// (one that will subscribe later) may start with none.
func (s *Server) parseSubscribe(c echo.Context, oneChannel, dynamic bool, cursor string) (subscription, error) {
	var sub subscription
	if oneChannel {
		name, err := channelParam(c)
		if err != nil {
			return sub, err
		}
		if err := subscribable(name); err != nil {
			return sub, err
		}
		sub.req.Channels = []string{name}
	} else {
		names := c.QueryParams()["channel"]
		if len(names) == 0 && !dynamic {
			return sub, badRequest("channel_required", "name at least one channel: ?channel=a&channel=b")
		}
		for _, name := range names {
			if err := channel.Valid(name); err != nil {
				return sub, errorf(http.StatusUnprocessableEntity, "invalid_channel", fmt.Sprintf("%q: %v", name, err))
			}
			if err := subscribable(name); err != nil {
				return sub, err
			}
		}
		slices.Sort(names)
		names = slices.Compact(names)
		if len(names) > channel.MaxPerSocket {
			return sub, badRequest("too_many_channels", fmt.Sprintf("at most %d channels per stream", channel.MaxPerSocket))
		}
		sub.req.Channels = names
		sub.req.Composite = true
		sub.req.Dynamic = dynamic
	}

	cl, err := s.claims(c)
	if err != nil {
		return sub, err
	}
	for _, name := range sub.req.Channels {
		if !channel.NeedsAuth(name) {
			continue
		}
		if cl == nil {
			return sub, errTokenMissing
		}
		if err := s.allow(cl, authz.Subscribe, name); err != nil {
			return sub, err
		}
	}
	if sub.app, err = s.apps.forToken(cl); err != nil {
		return sub, err
	}
	if err := s.checkOrigin(c, sub.app); err != nil {
		return sub, err
	}
	if cl != nil {
		sub.expires = s.cfg.Auth.Expiry(cl)
		sub.claims = cl
	}

	switch since := c.QueryParam("since"); since {
	case "":
	case "beginning":
		sub.req.FromBeginning = true
	default:
		return sub, badRequest("invalid_since", "since must be \"beginning\"")
	}
	if cursor != "" {
		if sub.req.Composite {
			pos, err := stream.ParseComposite(cursor, sub.req.Channels)
			if err != nil {
				return sub, badRequest("invalid_cursor", "the cursor is not one this stream's server sent (multi-channel cursors start with \"c\")")
			}
			sub.req.Positions = pos
		} else {
			pos, err := store.ParseCursor(cursor)
			if err != nil {
				return sub, badRequest("invalid_cursor", "the cursor is not one this channel's server sent")
			}
			sub.req.Positions = map[string]store.Cursor{sub.req.Channels[0]: pos}
		}
	}
	return sub, nil
}

// open opens the socket, mapping engine failures to API errors.
func (s *Server) open(ctx context.Context, sub subscription) (*stream.Socket, error) {
	sock, err := sub.app.Hub.Open(ctx, sub.req)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return nil, errorf(http.StatusServiceUnavailable, "canceled", "the request ended before the subscription was live")
	case errors.Is(err, context.DeadlineExceeded):
		return nil, errStoreUnavailable
	default:
		s.log.Warn().Err(err).Strs("channels", sub.req.Channels).Msg("subscribe failed")
		return nil, storeError(err)
	}
	return sock, nil
}
