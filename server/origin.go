package server

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/herald-rt/herald/store/channel"
)

// Origins: which pages' browsers may use an app's streams, polls and sockets. An app's
// allowed_origins decide for it (host patterns, as Reverb's); without them the deployment's
// --cors-origins do (full origins, or *). The check refuses a request whose Origin header names
// another site. A request without one is not a cross-site page's (browsers send Origin on every
// cross-origin request, and a same-origin EventSource sends none), and one from the page's own
// host is never refused.

var errOriginNotAllowed = errorf(http.StatusForbidden, "origin_not_allowed", "this page's origin may not use this app (allowed_origins, --cors-origins)")

// checkOrigin refuses a browser request for app from a page its origins do not include.
func (s *Server) checkOrigin(c echo.Context, app *App) error {
	req := c.Request()
	origin := req.Header.Get(echo.HeaderOrigin)
	if origin == "" || sameHost(origin, req.Host) {
		return nil
	}
	if app.Pusher != nil && app.Pusher.AllowedOrigins.Configured() {
		if app.Pusher.AllowedOrigins.Allows(origin) {
			return nil
		}
		return errOriginNotAllowed
	}
	if len(s.cfg.CORSOrigins) == 0 || s.deploymentAllows(origin) {
		// Nothing configured: the browser's same-origin policy keeps other sites from reading
		// the answers, as it always did.
		return nil
	}
	return errOriginNotAllowed
}

// deploymentAllows matches origin against --cors-origins: *, an origin, or a pattern such as
// https://*.example.com (* is any run of characters, as in echo's own CORS patterns).
func (s *Server) deploymentAllows(origin string) bool {
	for _, o := range s.cfg.CORSOrigins {
		if o == "*" || o == origin || (strings.Contains(o, "*") && channel.Match(strings.ToLower(o), strings.ToLower(origin))) {
			return true
		}
	}
	return false
}

// sameHost reports whether origin names the host (and port) the request was sent to.
func sameHost(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
}

// corsAllowed answers a CORS check, preflight included, before the request's app is known:
// an origin any app, or the deployment, allows. The request itself is then held to its own
// app's origins by checkOrigin.
func (s *Server) corsAllowed(origin string) bool {
	if s.deploymentAllows(origin) {
		return true
	}
	for _, a := range s.apps {
		if a.Pusher != nil && a.Pusher.AllowedOrigins.Allows(origin) {
			return true
		}
	}
	return false
}

// corsEnabled reports whether any origin besides the server's own is allowed, and
// corsAnyOrigin whether every one is (credentials are then never allowed).
func (s *Server) corsEnabled() bool {
	if len(s.cfg.CORSOrigins) > 0 {
		return true
	}
	for _, a := range s.apps {
		if a.Pusher != nil && a.Pusher.AllowedOrigins.Configured() {
			return true
		}
	}
	return false
}

func (s *Server) corsAnyOrigin() bool {
	if contains(s.cfg.CORSOrigins, "*") {
		return true
	}
	for _, a := range s.apps {
		if a.Pusher != nil && a.Pusher.AllowedOrigins.Any() {
			return true
		}
	}
	return false
}
