package server

import (
	"bytes"
	"crypto/subtle"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/server/console"
	"github.com/herald-rt/herald/store/channel"
)

// The debug console on the admin listener (docs/operations.md): a page, embedded in the binary,
// that opens a connection of its own through this node's /v1 routes and shows what the server
// does with it. A browser cannot send the admin token as a header when it loads a page, so
// GET /console?token= trades the token for the herald_admin cookie once and redirects to the
// page, which takes the token out of the address bar (and so out of the history, and out of any
// Referer). The admin listener writes no access log of its own; its /v1 routes are logged by
// the public API's, which redacts ?token=.

// consoleCSP allows the page nothing but its own files and calls to its own origin: no inline
// script or style, no other host, no frames, no form posted anywhere.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// devTokenTTL is how long a token minted for the console lives: enough for a debugging session.
const devTokenTTL = time.Hour

// consoleFiles are the page's files (server/console/static).
var consoleFiles = console.Files()

// consoleTypes are the content types of the console's files, fixed here rather than taken from
// the system's MIME table: with nosniff, a script must be served as JavaScript.
var consoleTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

var errConsoleToken = errorf(http.StatusUnauthorized, "admin_token_invalid", "the console needs the admin token: open /console?token=<admin token>")

// consoleLogin is GET /console?token=: it checks the admin token (once, in constant time), sets
// the console's cookie and redirects to the page. requireToken lets this route through, since
// the token comes in the query here. Without ?token= it redirects a browser that has the cookie
// of an earlier visit; with no admin token configured, every request.
func (api adminAPI) consoleLogin(c echo.Context) error {
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	tok := c.QueryParam("token")
	switch {
	case len(api.cfg.AdminToken) == 0:
		return c.Redirect(http.StatusSeeOther, "/console/")
	case tok == "":
		ck, err := c.Cookie(adminCookie)
		if err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(api.consoleCookieValue())) != 1 {
			return errConsoleToken
		}
		return c.Redirect(http.StatusSeeOther, "/console/")
	case subtle.ConstantTimeCompare([]byte(tok), []byte(api.cfg.AdminToken)) != 1:
		return errConsoleToken
	}
	c.SetCookie(&http.Cookie{
		Name:     adminCookie,
		Value:    api.consoleCookieValue(),
		Path:     "/",
		HttpOnly: true,                    // the page's script never needs it
		SameSite: http.SameSiteStrictMode, // no other site's page can make the browser use it
		Secure:   c.Request().TLS != nil,
	})
	return c.Redirect(http.StatusSeeOther, "/console/")
}

// consoleFile is GET /console/ and /console/{file}: the page's files, behind requireToken.
func (api adminAPI) consoleFile(c echo.Context) error {
	name := c.Param("*")
	if name == "" {
		name = "index.html"
	}
	data, err := fs.ReadFile(consoleFiles, name)
	ctype, known := consoleTypes[path.Ext(name)]
	if err != nil || !known {
		return errorf(http.StatusNotFound, "not_found", "the console has no file "+strconv.Quote(name))
	}
	h := c.Response().Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if name == "index.html" {
		h.Set("Cache-Control", "no-store")
	} else {
		// The files have no date to revalidate against: always fetch them, so a page never runs
		// with the script of an older binary.
		h.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(c.Response(), c.Request(), name, time.Time{}, bytes.NewReader(data))
	return nil
}

// devTokenRequest is the body of POST /admin/dev/token.
type devTokenRequest struct {
	// Channels the token may subscribe and publish to: names, not patterns.
	Channels []string `json:"channels"`
	// UserID is the token's subject, the user presence channels show; "console" by default.
	UserID string `json:"user_id"`
}

// devToken is POST /admin/dev/token, for the console of a `herald serve --dev` server only: a
// token valid for devTokenTTL that may subscribe and publish on the channels named. Any other
// server answers 404, as if the route did not exist.
func (api adminAPI) devToken(c echo.Context) error {
	if api.cfg.DevMinter == nil {
		return errorf(http.StatusNotFound, "not_found", "tokens are minted here only by herald serve --dev")
	}
	body, err := api.readBody(c)
	if err != nil {
		return err
	}
	var req devTokenRequest
	if err := decodeStrict(body, &req); err != nil {
		return badRequest("invalid_json", "the body must be {\"channels\":[…],\"user_id\":…}: "+jsonProblem(err))
	}
	switch {
	case len(req.Channels) == 0:
		return badRequest("channel_required", "name at least one channel")
	case len(req.Channels) > channel.MaxPerSocket:
		return badRequest("too_many_channels", "at most "+strconv.Itoa(channel.MaxPerSocket)+" channels")
	}
	for _, name := range req.Channels {
		if err := channel.Valid(name); err != nil {
			return errorf(http.StatusUnprocessableEntity, "invalid_channel", err.Error())
		}
	}
	if req.UserID == "" {
		req.UserID = "console"
	}
	if utf8.RuneCountInString(req.UserID) > authz.DefaultLimits().MaxUserIDLength {
		return badRequest("invalid_user_id", "user_id is over "+strconv.Itoa(authz.DefaultLimits().MaxUserIDLength)+" characters")
	}
	expires := time.Now().Add(devTokenTTL)
	tok, err := api.cfg.DevMinter.Mint(TokenSpec{Subject: req.UserID, Subscribe: req.Channels, Publish: req.Channels, TTL: devTokenTTL})
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, map[string]any{
		"token": tok, "user_id": req.UserID, "channels": req.Channels, "expires_at": expires.UTC().Truncate(time.Second),
	})
}
