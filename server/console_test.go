package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/server/console"
	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/stream"
	"github.com/herald-rt/herald/test/testkit"
)

const testAdminToken = "admin-token-for-the-console-tests"

// newConsoleServer serves cfg's admin listener, and returns it with the server.
func newConsoleServer(t *testing.T, cfg Config) (*httptest.Server, *Server) {
	t.Helper()
	_, srv := newTestServer(t, cfg)
	admin := httptest.NewServer(srv.AdminHandler())
	t.Cleanup(admin.Close)
	return admin, srv
}

// noRedirects is a client that shows redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

type consoleReply struct {
	status int
	header http.Header
	body   []byte
}

func consoleDo(t *testing.T, method, url string, ck *http.Cookie, body string) consoleReply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if ck != nil {
		req.AddCookie(ck)
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return consoleReply{resp.StatusCode, resp.Header, b}
}

// wantError checks an answer is status with exactly {"error":{"code":code,"message":…}}.
func wantError(t *testing.T, what string, r consoleReply, status int, code string) {
	t.Helper()
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if r.status != status || json.Unmarshal(r.body, &body) != nil || body.Error.Code != code || body.Error.Message == "" {
		t.Errorf("%s: want %d %s as JSON, got %d %s", what, status, code, r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want JSON", what, ct)
	}
}

// TestConsoleLogin: /console?token= needs the admin token and trades it for a cookie that then
// opens the page, its files and the admin API; nothing else does.
func TestConsoleLogin(t *testing.T) {
	admin, srv := newConsoleServer(t, Config{AdminToken: testAdminToken})

	wantError(t, "no token", consoleDo(t, "GET", admin.URL+"/console", nil, ""), http.StatusUnauthorized, "admin_token_invalid")
	wantError(t, "wrong token", consoleDo(t, "GET", admin.URL+"/console?token=nope", nil, ""), http.StatusUnauthorized, "admin_token_invalid")
	wantError(t, "a longer token", consoleDo(t, "GET", admin.URL+"/console?token="+testAdminToken+"x", nil, ""), http.StatusUnauthorized, "admin_token_invalid")
	wantError(t, "the page without the cookie", consoleDo(t, "GET", admin.URL+"/console/", nil, ""), http.StatusUnauthorized, "admin_token_invalid")
	wantError(t, "a file without the cookie", consoleDo(t, "GET", admin.URL+"/console/console.js", nil, ""), http.StatusUnauthorized, "admin_token_invalid")
	forged := &http.Cookie{Name: adminCookie, Value: testAdminToken}
	wantError(t, "the token itself as the cookie", consoleDo(t, "GET", admin.URL+"/console/", forged, ""), http.StatusUnauthorized, "admin_token_invalid")

	r := consoleDo(t, "GET", admin.URL+"/console?token="+testAdminToken, nil, "")
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/console/" {
		t.Fatalf("right token: want 303 to /console/, got %d %q %s", r.status, r.header.Get("Location"), r.body)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("the redirect with the cookie: Cache-Control %q, want no-store", cc)
	}
	cookies := (&http.Response{Header: r.header}).Cookies()
	if len(cookies) != 1 {
		t.Fatalf("want one cookie, got %v", r.header["Set-Cookie"])
	}
	ck := cookies[0]
	if ck.Name != adminCookie || ck.Value != (adminAPI{srv}).consoleCookieValue() || !ck.HttpOnly ||
		ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Secure {
		t.Fatalf("cookie %q: want herald_admin=<HMAC>, HttpOnly, SameSite=Strict, Path=/, not Secure on plain HTTP", r.header.Get("Set-Cookie"))
	}
	if strings.Contains(r.header.Get("Set-Cookie"), testAdminToken) {
		t.Fatal("the cookie holds the admin token itself")
	}

	page := consoleDo(t, "GET", admin.URL+"/console/", ck, "")
	if page.status != http.StatusOK || !bytes.Contains(page.body, []byte(`<script src="console.js"`)) {
		t.Fatalf("the page with the cookie: %d %.200s", page.status, page.body)
	}
	h := page.header
	if h.Get("Content-Type") != "text/html; charset=utf-8" || h.Get("Cache-Control") != "no-store" || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("index.html headers: %v", h)
	}
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP %q allows inline or eval", csp)
	}
	for file, ctype := range map[string]string{
		"index.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
		"console.css": "text/css; charset=utf-8", "herald.min.js": "text/javascript; charset=utf-8", "favicon.svg": "image/svg+xml",
	} {
		r := consoleDo(t, "GET", admin.URL+"/console/"+file, ck, "")
		if r.status != http.StatusOK || r.header.Get("Content-Type") != ctype || len(r.body) == 0 ||
			r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("Content-Security-Policy") != consoleCSP {
			t.Errorf("GET /console/%s: %d %v", file, r.status, r.header)
		}
	}
	wantError(t, "an unknown file", consoleDo(t, "GET", admin.URL+"/console/nope.js", ck, ""), http.StatusNotFound, "not_found")
	wantError(t, "a path out of the folder", consoleDo(t, "GET", admin.URL+"/console/../admin.go", ck, ""), http.StatusNotFound, "not_found")

	// The cookie opens the admin API too, and /console itself without a token.
	if r := consoleDo(t, "GET", admin.URL+"/admin/nodes", ck, ""); r.status != http.StatusOK {
		t.Errorf("/admin/nodes with the cookie: %d %s", r.status, r.body)
	}
	if r := consoleDo(t, "GET", admin.URL+"/v1/health", ck, ""); r.status != http.StatusOK {
		t.Errorf("/v1/health with the cookie: %d %s", r.status, r.body)
	}
	if r := consoleDo(t, "GET", admin.URL+"/console", ck, ""); r.status != http.StatusSeeOther || r.header.Get("Set-Cookie") != "" {
		t.Errorf("/console with the cookie and no token: want a plain 303, got %d %v", r.status, r.header)
	}
	wantError(t, "/admin/nodes without it", consoleDo(t, "GET", admin.URL+"/admin/nodes", nil, ""), http.StatusUnauthorized, "admin_token_invalid")
}

// TestConsoleWithoutAdminToken: with no admin token configured, /console just redirects.
func TestConsoleWithoutAdminToken(t *testing.T) {
	admin, _ := newConsoleServer(t, Config{})
	r := consoleDo(t, "GET", admin.URL+"/console", nil, "")
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/console/" || r.header.Get("Set-Cookie") != "" {
		t.Fatalf("want a 303 to /console/ and no cookie, got %d %v", r.status, r.header)
	}
	if r := consoleDo(t, "GET", admin.URL+"/console/", nil, ""); r.status != http.StatusOK {
		t.Fatalf("the page: %d %s", r.status, r.body)
	}
}

// TestConsoleDevToken: POST /admin/dev/token is 404 unless the server has a minter (--dev),
// and then mints a token for exactly the channels asked for.
func TestConsoleDevToken(t *testing.T) {
	ck := func(srv *Server) *http.Cookie {
		return &http.Cookie{Name: adminCookie, Value: (adminAPI{srv}).consoleCookieValue()}
	}
	admin, srv := newConsoleServer(t, Config{AdminToken: testAdminToken})
	wantError(t, "without --dev", consoleDo(t, "POST", admin.URL+"/admin/dev/token", ck(srv), `{"channels":["demo"]}`), http.StatusNotFound, "not_found")

	m, err := NewMinter(testSecret, "")
	if err != nil {
		t.Fatal(err)
	}
	admin, srv = newConsoleServer(t, Config{AdminToken: testAdminToken, DevMinter: m})
	wantError(t, "without the cookie", consoleDo(t, "POST", admin.URL+"/admin/dev/token", nil, `{"channels":["demo"]}`), http.StatusUnauthorized, "admin_token_invalid")
	for _, c := range []struct {
		body, code string
		status     int
	}{
		{`{"channels":[]}`, "channel_required", http.StatusBadRequest},
		{`{"channel":"demo"}`, "invalid_json", http.StatusBadRequest},
		{`{"channels":["a b"]}`, "invalid_channel", http.StatusUnprocessableEntity},
		{`{"channels":["private-*"]}`, "invalid_channel", http.StatusUnprocessableEntity},
		{`{"channels":["demo"],"user_id":"` + strings.Repeat("u", 129) + `"}`, "invalid_user_id", http.StatusBadRequest},
	} {
		wantError(t, c.body, consoleDo(t, "POST", admin.URL+"/admin/dev/token", ck(srv), c.body), c.status, c.code)
	}
	r := consoleDo(t, "POST", admin.URL+"/admin/dev/token", ck(srv), `{"channels":["demo","presence-room.1"],"user_id":"ann"}`)
	var got struct {
		Token, UserID string
		Channels      []string
	}
	if r.status != http.StatusOK || json.Unmarshal(r.body, &got) != nil {
		t.Fatalf("mint: %d %s", r.status, r.body)
	}
	cl, err := srv.cfg.Auth.Verify(got.Token)
	if err != nil {
		t.Fatalf("the minted token does not verify: %v", err)
	}
	want := []string{"demo", "presence-room.1"}
	if cl.Subject != "ann" || !slices.Equal(cl.Subscribe, want) || !slices.Equal(cl.Publish, want) || !cl.CanPublish("presence-room.1") || cl.CanSubscribe("other") {
		t.Fatalf("claims %+v, want sub ann and exactly %v", cl, want)
	}
	if left := cl.ExpiresAt.Sub(cl.IssuedAt.Time); left != devTokenTTL {
		t.Errorf("the token lives %v, want %v", left, devTokenTTL)
	}
}

// TestConsoleTokenNotLogged: the admin token in /console?token= reaches no log line, nor does a
// JWT in the query of the console's /v1 calls (the public API's access log redacts it).
func TestConsoleTokenNotLogged(t *testing.T) {
	var logs testkit.LogBuffer
	auth, err := NewAuthenticator(AuthConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	st := memstore.New(memstore.Options{})
	hub := stream.New(st, stream.Options{})
	t.Cleanup(func() { hub.Close(); st.Close() })
	srv := New(Config{Auth: auth, SocketSecret: DeriveSocketSecret(testSecret), AdminToken: testAdminToken,
		Apps: []*App{{ID: "default", Hub: hub, Bus: st}}}, zerolog.New(&logs))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	admin := httptest.NewServer(srv.AdminHandler())
	t.Cleanup(admin.Close)

	jwt := mint(t, TokenSpec{Subject: "u", Subscribe: []string{"*"}, TTL: time.Hour})
	r := consoleDo(t, "GET", admin.URL+"/console?token="+testAdminToken, nil, "")
	ck := (&http.Response{Header: r.header}).Cookies()
	if r.status != http.StatusSeeOther || len(ck) != 1 {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	consoleDo(t, "GET", admin.URL+"/console?token=wrong-"+testAdminToken, nil, "")
	if r := consoleDo(t, "GET", admin.URL+"/v1/channels/demo/poll?token="+jwt, ck[0], ""); r.status != http.StatusOK {
		t.Fatalf("a poll with ?token= through the admin listener: %d %s", r.status, r.body)
	}
	out := logs.String()
	if !strings.Contains(out, "token=REDACTED") {
		t.Errorf("the /v1 call was not logged with its token redacted:\n%s", out)
	}
	for _, secret := range []string{testAdminToken, jwt} {
		if strings.Contains(out, secret) {
			t.Errorf("a token reached the log:\n%s", out)
		}
	}
}

// TestConsoleFilesAreStrict: the page has no inline script, handler or style, which the CSP
// would refuse, and loads nothing from elsewhere.
func TestConsoleFilesAreStrict(t *testing.T) {
	html, err := fs.ReadFile(console.Files(), "index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAll(html, -1) {
		if !bytes.Contains(tag, []byte(` src="`)) {
			t.Errorf("index.html: %s is an inline script", tag)
		}
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script[^>]*>[^<]+</script>`),        // a script with a body
		regexp.MustCompile(`\son[a-z]+\s*=`),                     // an inline handler
		regexp.MustCompile(`\sstyle\s*=|<style`),                 // inline style
		regexp.MustCompile(`(?:src|href)\s*=\s*"(?:https?:)?//`), // another host
	} {
		if m := bad.Find(html); m != nil {
			t.Errorf("index.html: %q is refused by the console's CSP", m)
		}
	}
	for _, name := range []string{"console.js", "console.css", "herald.min.js", "favicon.svg"} {
		if b, err := fs.ReadFile(console.Files(), name); err != nil || len(b) == 0 {
			t.Errorf("%s: missing or empty (%v)", name, err)
		}
	}
}
