package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/herald-rt/herald/test/testkit"
)

// Herald behind real proxies: the recipes of docs/deploy.md, read from the page byte for byte,
// run in Debian's nginx here (and Caddy and HAProxy in soak_proxy_test.go) with the real herald
// binary behind and real clients in front — the clientjs bundle in headless Chromium over HTTP/2,
// `curl -N`, and Go's HTTP/2 client. Each case also runs the recipe with the one change that
// breaks it the way real networks do (a buffering proxy, idle cuts, a stripped Last-Event-ID)
// and checks that no event is lost or repeated all the same. The cases run in parallel, each
// with its own herald and nginx; the idle-cut case's 30 s of sparse events sets the pace.

// recipeHost is the site name in the recipes. The test certificate is made for it, Chromium and
// the Go client resolve it to 127.0.0.1, curl is told to (--resolve).
const recipeHost = "rt.example.com"

func TestProxyNginx(t *testing.T) {
	t.Parallel() // most of its time is the idle-cut case's 30 s of waiting between events
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Fatal("this test needs nginx on PATH: apt-get install -y nginx (make test installs it)")
	}
	env := newProxyEnv(t)

	// 1. The recipe as written: frames unbuffered and in order over HTTP/2, the client on SSE.
	t.Run("recommended", func(t *testing.T) {
		t.Parallel()
		h := startHerald(t, heraldOpts{args: env.heraldArgs()})
		checkRecommended(t, env, startFront(t, env, nginxFront, h.Addr), h)
	})

	// 2. A proxy that buffers whatever the response says: the client must notice by itself and
	// fall back to long-poll, losing nothing published before, during or after the switch.
	t.Run("buffering", func(t *testing.T) {
		t.Parallel()
		h := startHerald(t, heraldOpts{args: env.heraldArgs()})
		f := startFront(t, env, nginxFront, h.Addr,
			[2]string{"proxy_buffering off;", "proxy_buffering on;\n        proxy_ignore_headers X-Accel-Buffering;"})
		checkBufferingFallback(t, env, f, h)
	})

	// 3. A proxy that cuts responses idle for 5 s, with a heartbeat too slow to keep them open.
	t.Run("idle-cut", func(t *testing.T) {
		t.Parallel()
		h := startHerald(t, heraldOpts{args: append(env.heraldArgs(), "--heartbeat", "60s")})
		f := startFront(t, env, nginxFront, h.Addr, [2]string{"proxy_read_timeout 60s;", "proxy_read_timeout 5s;"})
		checkIdleCuts(t, env, f, h)
	})

	// 4. A proxy that strips Last-Event-ID.
	t.Run("strip-last-event-id", func(t *testing.T) {
		t.Parallel()
		checkStrippedLastEventID(t, env)
	})

	// 5. Whose address Herald logs, with and without --trusted-proxies.
	t.Run("trusted-proxies", func(t *testing.T) {
		t.Parallel()
		checkTrustedProxies(t, env)
	})

	// 6. What caches are told, as it arrives through nginx.
	t.Run("cache-control", func(t *testing.T) {
		t.Parallel()
		h := startHerald(t, heraldOpts{args: env.heraldArgs()})
		checkCacheHeaders(t, env, startFront(t, env, nginxFront, h.Addr), h)
	})
}

// ---------------------------------------------------------------------------------------------
// The cases, shared with the Caddy and HAProxy soak tests.

// checkRecommended: Go's HTTP/2 client gets the stream's frames byte for byte and in order, with
// no compression even when asking for it; curl -N gets an event while the stream is still open
// (a buffering proxy would hold it until the stream ends); the clientjs client in Chromium
// connects once, on SSE over HTTP/2, and gets every event in order.
func checkRecommended(t *testing.T, env *proxyEnv, f *front, h *herald) {
	tok := h.Publisher(t)
	ch := uniqueChannel("proxy")
	e0 := h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 0})
	tab := env.openPage(t, f, ch, e0, 0)

	c := env.client(t, "")
	s := sseVia(t, c, f.base+eventsPath(ch), http.Header{"Accept-Encoding": {"gzip"}})
	if s.Resp.ProtoMajor != 2 {
		t.Errorf("%s: the stream came over %s, want HTTP/2", f.name, s.Resp.Proto)
	}
	if ce := s.Resp.Header.Get("Content-Encoding"); ce != "" {
		t.Errorf("%s: the stream came with Content-Encoding %q: streams must not be compressed", f.name, ce)
	}
	s.expectPreamble(t)
	ids := h.publishN(t, tok, ch, "Tick", 1, 20)
	for i, r := range s.mustEvents(t, 20, 15*time.Second) {
		if r.N != i+1 || r.LineID != ids[i] || r.Env.ID != ids[i] {
			t.Fatalf("%s: event %d: got n=%d id %s, want n=%d id %s", f.name, i, r.N, r.LineID, i+1, ids[i])
		}
	}
	s.Close()

	curlSeesEvent(t, env, f, h, tok, ch, 21)

	h.publishN(t, tok, ch, "Tick", 22, 19)
	st := env.waitEvents(t, tab, 40, 20*time.Second)
	st.expectSequence(t, f.name+" browser", 1, 40)
	if st.Connects != 1 || !slices.Equal(st.Transports, []string{"sse"}) || st.Transport != "sse" {
		t.Errorf("%s: the client must connect once and stay on SSE: connects %d, transports %v, now %q, states %v",
			f.name, st.Connects, st.Transports, st.Transport, st.States)
	}
	if len(st.Protocols) == 0 {
		t.Errorf("%s: the page saw no request to %s", f.name, f.base)
	}
	for _, p := range st.Protocols {
		if p != "h2" {
			t.Errorf("%s: the browser spoke %q to the proxy, want h2 (all: %v)", f.name, p, st.Protocols)
			break
		}
	}
}

// curlSeesEvent runs `curl -N` on a stream through the proxy, publishes event n once curl has
// the stream's first frames, and fails unless curl gets it while the stream is still open.
func curlSeesEvent(t *testing.T, env *proxyEnv, f *front, h *herald, tok, ch string, n int) {
	t.Helper()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("this test needs curl on PATH: apt-get install -y curl")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Asking for gzip makes a compressing proxy show itself: curl, without --compressed, prints
	// the compressed bytes, which are no SSE frames.
	cmd := exec.CommandContext(ctx, curl, "-sSN", "--http2", "--cacert", env.cert.certFile,
		"--resolve", fmt.Sprintf("%s:%d:127.0.0.1", recipeHost, f.srv.Port), "-H", "Accept-Encoding: gzip",
		f.base+eventsPath(ch))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start curl: %v", err)
	}
	frames := make(chan frame, 16)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		br := bufio.NewReader(out)
		for {
			fr, err := testkit.ReadFrame(br)
			if err != nil {
				return
			}
			select {
			case frames <- fr:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		cancel()
		<-ended
		_ = cmd.Wait()
	}()
	next := func(what string) frame {
		select {
		case fr := <-frames:
			return fr
		case <-ended:
			t.Fatalf("%s: curl -N: the stream ended before %s (curl: %s)", f.name, what, stderr.String())
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: curl -N: no %s within 10s: the proxy holds the stream back (curl: %s)", f.name, what, stderr.String())
		}
		return frame{}
	}
	if fr := next("retry frame"); !fr.HasRetry {
		t.Fatalf("%s: curl -N: first frame %q, want retry", f.name, fr.Raw)
	}
	if fr := next("herald:connected"); fr.Event != "herald:connected" {
		t.Fatalf("%s: curl -N: second frame %q, want herald:connected", f.name, fr.Raw)
	}
	id := h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": n})
	fr := next("event")
	r, err := eventFrame(fr)
	if err != nil || r.N != n || r.LineID != id {
		t.Fatalf("%s: curl -N: got %q (%v), want event n=%d id %s", f.name, fr.Raw, err, n, id)
	}
	select {
	case <-ended:
		t.Fatalf("%s: curl -N: the stream ended with its first event: it came from a buffer flushed at the end", f.name)
	default:
	}
}

// checkBufferingFallback publishes an event every 100 ms from before the page opens until 20
// events after the client reports long-poll, then checks the client got every one exactly once.
func checkBufferingFallback(t *testing.T, env *proxyEnv, f *front, h *herald) {
	tok := h.Publisher(t)
	ch := uniqueChannel("proxy-buffered")
	e0 := h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 0})
	start := time.Now()
	tab := env.openPage(t, f, ch, e0, 1500*time.Millisecond)
	n, atFallback := 0, 0
	var fellBack time.Duration
	for n < 400 && time.Since(start) < 40*time.Second {
		n++
		h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": n})
		time.Sleep(100 * time.Millisecond)
		if atFallback == 0 {
			if st := env.state(t, tab); st.Transport == "long-poll" {
				atFallback, fellBack = n, time.Since(start)
			}
		} else if n >= atFallback+20 {
			break
		}
	}
	if atFallback == 0 {
		t.Fatalf("%s: the client did not fall back to long-poll within %v; page: %+v", f.name, time.Since(start).Round(time.Second), env.state(t, tab))
	}
	st := env.waitEvents(t, tab, n, 30*time.Second)
	st.expectSequence(t, f.name+" browser", 1, n)
	if st.Transport != "long-poll" || slices.Contains(st.Transports, "sse") {
		t.Errorf("%s: behind a buffering proxy the client never sees herald:connected on SSE, yet: transports %v, now %q", f.name, st.Transports, st.Transport)
	}
	t.Logf("%s: the client fell back to long-poll %v after the page opened, with %d of %d events published by then; all %d received once, in order",
		f.name, fellBack.Round(100*time.Millisecond), atFallback, n, n)
}

// idleGaps are the pauses between the sparse events of checkIdleCuts, about 30 s in all. A
// connection idle for 5 s is cut, so each gap over 5 s cuts one; a gap just over 5 s lands its
// event while the client is reconnecting, which only its cursor can recover.
var idleGaps = []time.Duration{6 * time.Second, 3 * time.Second, 5300 * time.Millisecond, 7 * time.Second,
	5300 * time.Millisecond, 3500 * time.Millisecond}

// checkIdleCuts publishes sparse events through a proxy that cuts idle responses and checks the
// client resumed after each cut with nothing lost or repeated. Fewer than 3 cuts prove nothing.
func checkIdleCuts(t *testing.T, env *proxyEnv, f *front, h *herald) {
	tok := h.Publisher(t)
	ch := uniqueChannel("proxy-idle")
	e0 := h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 0})
	tab := env.openPage(t, f, ch, e0, 0)
	env.waitPage(t, tab, "the client connected", 15*time.Second, func(s pageState) bool { return s.Connects > 0 })
	start := time.Now()
	n := 1
	h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": n})
	for _, gap := range idleGaps {
		time.Sleep(gap)
		n++
		h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": n})
	}
	st := env.waitEvents(t, tab, n, 20*time.Second)
	st.expectSequence(t, f.name+" browser", 1, n)
	cuts := f.cuts()
	if cuts < 3 || st.Connects-1 < 3 {
		t.Fatalf("%s: %d idle cuts by the proxy, %d reconnects by the client in %v: fewer than 3 prove nothing",
			f.name, cuts, st.Connects-1, time.Since(start).Round(time.Second))
	}
	for _, tr := range st.Transports {
		if tr != "sse" {
			t.Errorf("%s: a cut stream is no buffering proxy, yet the client went to %q (transports %v)", f.name, tr, st.Transports)
			break
		}
	}
	t.Logf("%s: %d idle cuts, %d reconnects in %v; %d events, none lost or repeated",
		f.name, cuts, st.Connects-1, time.Since(start).Round(time.Second), n)
}

// checkStrippedLastEventID runs nginx with the recipe plus `proxy_set_header Last-Event-ID "";`
// and our TCP proxy between nginx and Herald, which shows what reaches Herald and cuts.
func checkStrippedLastEventID(t *testing.T, env *proxyEnv) {
	h := startHerald(t, heraldOpts{args: env.heraldArgs()})
	tp := startProxy(t, h.Addr)
	const xff = "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
	f := startFront(t, env, nginxFront, tp.Addr(), [2]string{xff, xff + "\n    proxy_set_header Last-Event-ID \"\";"})
	c := env.client(t, "")
	tok := h.Publisher(t)
	ch := uniqueChannel("proxy-strip")
	e0 := h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 0})
	ids := append([]string{e0}, h.publishN(t, tok, ch, "Tick", 1, 5)...)

	// The header does not get through: the stream starts live, at the head, not at e0.
	s := sseVia(t, c, f.base+eventsPath(ch), lastEventHeader(e0))
	if got := s.expectPreamble(t).Cursor; got != ids[5] {
		t.Errorf("a stream asked to resume from %s by Last-Event-ID alone starts at %s, want the head %s (live only)", e0, got, ids[5])
	}
	s.Close()
	reqs := tp.Requests(eventsPath(ch))
	if len(reqs) == 0 {
		t.Fatal("no stream request reached herald")
	}
	for _, r := range reqs {
		if _, ok := r.Header["Last-Event-Id"]; ok {
			t.Fatalf("nginx passed Last-Event-ID %q on: this case tests nothing", r.Header.Get("Last-Event-ID"))
		}
	}

	// ?last_event_id= gets through: a stream resumes across a cut with nothing lost or repeated.
	s = sseVia(t, c, f.base+eventsPath(ch)+"?last_event_id="+url.QueryEscape(e0), nil)
	s.expectPreamble(t)
	first := s.mustEvents(t, 5, 10*time.Second)
	checkReceived(t, "?last_event_id= stream", first, 1, ids[1:])
	if tp.CutAll() == 0 {
		t.Fatal("no connection to cut")
	}
	if _, err := s.waitEnd(10 * time.Second); err != nil {
		t.Fatalf("the stream did not end within 10s of the cut")
	}
	s.Close()
	ids = append(ids, h.publishN(t, tok, ch, "Tick", 6, 5)...) // 6..10, while nobody listens
	s = sseVia(t, c, f.base+eventsPath(ch)+"?last_event_id="+url.QueryEscape(first[4].LineID), nil)
	s.expectPreamble(t)
	ids = append(ids, h.publishN(t, tok, ch, "Tick", 11, 2)...)
	checkReceived(t, "?last_event_id= stream after the cut", s.mustEvents(t, 7, 10*time.Second), 6, ids[6:])
	s.Close()

	// The clientjs client: a new socket after the cut, subscribed from the channel's cursor.
	tab := env.openPage(t, f, ch, ids[12], 0)
	h.publishN(t, tok, ch, "Tick", 13, 8)
	env.waitEvents(t, tab, 8, 15*time.Second)
	if tp.CutAll() == 0 {
		t.Fatal("no connection to cut")
	}
	h.publishN(t, tok, ch, "Tick", 21, 10) // at once: most of them while the client reconnects
	st := env.waitEvents(t, tab, 18, 20*time.Second)
	st.expectSequence(t, "clientjs after the cut", 13, 30)
	if st.Connects < 2 || slices.ContainsFunc(st.Transports, func(s string) bool { return s != "sse" }) {
		t.Errorf("the client must reconnect on SSE after the cut: connects %d, transports %v", st.Connects, st.Transports)
	}
}

// checkReceived checks events are n = from, from+1, … with the given ids.
func checkReceived(t *testing.T, what string, got []received, from int, ids []string) {
	t.Helper()
	for i, r := range got {
		if r.N != from+i || r.LineID != ids[i] {
			t.Fatalf("%s: event %d: got n=%d id %s, want n=%d id %s", what, i, r.N, r.LineID, from+i, ids[i])
		}
	}
}

// checkTrustedProxies sends a request through nginx from 127.0.0.3 with a forged
// X-Forwarded-For, so that nginx (on 127.0.0.1), the client (127.0.0.3) and the forgery each
// name a different address, and reads which one Herald's access log calls the client.
func checkTrustedProxies(t *testing.T, env *proxyEnv) {
	const forged = "203.0.113.7"
	c := env.client(t, "127.0.0.3")
	for _, tc := range []struct {
		name, trusted, want string
	}{
		{"nginx trusted", "127.0.0.1", "127.0.0.3"},
		{"nginx and the client trusted", "127.0.0.1,127.0.0.3", forged},
		{"another proxy trusted", "10.0.0.1", "127.0.0.1"},
		{"nothing trusted", "", "127.0.0.1"},
	} {
		args := env.heraldArgs()
		if tc.trusted != "" {
			args = append(args, "--trusted-proxies", tc.trusted)
		}
		h := startHerald(t, heraldOpts{args: args})
		f := startFront(t, env, nginxFront, h.Addr)
		path := pollPath(uniqueChannel("proxy-xff"))
		r, err := proxyDo(c, http.MethodGet, f.base+path, http.Header{"X-Forwarded-For": {forged}})
		if err != nil || r.Status != http.StatusOK {
			t.Fatalf("%s: GET %s: %v %v", tc.name, path, r, err)
		}
		var remote string
		if !testkit.WaitFor(5*time.Second, func() bool { remote = accessLogRemote(h, path); return remote != "" }) {
			t.Fatalf("%s: no access log line for %s", tc.name, path)
		}
		if remote != tc.want {
			t.Errorf("%s (--trusted-proxies %q): herald logged the client as %s, want %s", tc.name, tc.trusted, remote, tc.want)
		}
	}
}

// accessLogRemote is the "remote" of herald's access log line for path, or "".
func accessLogRemote(h *herald, path string) string {
	for _, line := range strings.Split(h.logs.String(), "\n") {
		var l struct {
			Message, Path, Remote string
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Message == "request" && l.Path == path {
			return l.Remote
		}
	}
	return ""
}

// checkCacheHeaders: through the proxy, streams must forbid serving from a cache, polls and
// socket calls (answers and errors alike) must forbid storing, and every answer to the page's
// origin must say it varies by Origin.
func checkCacheHeaders(t *testing.T, env *proxyEnv, f *front, h *herald) {
	c := env.client(t, "")
	origin := env.page.URL
	hdr := http.Header{"Origin": {origin}}
	tok := h.Publisher(t)
	ch := uniqueChannel("proxy-cache")
	e0 := h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 0})

	check := func(what string, got http.Header, want string) {
		t.Helper()
		varies := func(header string) bool {
			return slices.ContainsFunc(got.Values("Vary"), func(v string) bool {
				return slices.ContainsFunc(strings.Split(v, ","), func(f string) bool { return strings.EqualFold(strings.TrimSpace(f), header) })
			})
		}
		cc := got.Get("Cache-Control")
		directives := map[string]bool{}
		for _, d := range strings.Split(cc, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(strings.ToLower(d)), "=")
			directives[name] = true
		}
		if !directives[want] || directives["public"] || directives["max-age"] || directives["s-maxage"] {
			t.Errorf("%s: Cache-Control %q, want %s and nothing that allows caching", what, cc, want)
		}
		if got.Get("Access-Control-Allow-Origin") != origin {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", what, got.Get("Access-Control-Allow-Origin"), origin)
		}
		if !varies("Origin") {
			t.Errorf("%s: an answer for origin %s must carry Vary: Origin, got %q", what, origin, got.Values("Vary"))
		}
		// Herald compresses what is not a stream when the client accepts it, so a cache
		// would have to keep the codings apart.
		if want == "no-store" && !varies("Accept-Encoding") {
			t.Errorf("%s: Vary %q lacks Accept-Encoding", what, got.Values("Vary"))
		}
		for _, k := range []string{"Expires", "ETag", "Last-Modified"} {
			if v := got.Get(k); v != "" {
				t.Errorf("%s: %s: %s would let a cache keep it", what, k, v)
			}
		}
	}

	for _, p := range []string{eventsPath(ch), "/v1/stream?channel=" + url.QueryEscape(ch)} {
		s := sseVia(t, c, f.base+p, hdr)
		check("stream "+p, s.Resp.Header, "no-cache")
		s.Close()
	}
	get := func(what, method, p string, h http.Header, wantStatus int) reply {
		t.Helper()
		r, err := proxyDo(c, method, f.base+p, h)
		if err != nil || r.Status != wantStatus {
			t.Fatalf("%s: %s %s: want %d, got %v %v", what, method, p, wantStatus, r, err)
		}
		check(what, r.Header, "no-store")
		return r
	}
	get("channel poll, no cursor", http.MethodGet, pollPath(ch), hdr, http.StatusOK)
	get("channel poll that waited", http.MethodGet, pollPath(ch)+"?timeout=1&cursor="+url.QueryEscape(e0), hdr, http.StatusOK)
	get("channel poll refused", http.MethodGet, pollPath(ch)+"?timeout=999", hdr, http.StatusBadRequest)
	// A poll answer Herald compresses (over --compress-min-bytes) keeps its headers too.
	pad := strings.Repeat("x", 200)
	for i := 1; i <= 10; i++ {
		h.mustPublish(t, tok, ch, "Tick", map[string]any{"n": i, "pad": pad})
	}
	gz := get("compressed channel poll", http.MethodGet, pollPath(ch)+"?since=beginning",
		http.Header{"Origin": {origin}, "Accept-Encoding": {"gzip"}}, http.StatusOK)
	if ce := gz.Header.Get("Content-Encoding"); ce != "gzip" {
		t.Errorf("a %d-byte poll answer asked for with gzip came with Content-Encoding %q, want gzip (--compress-min-bytes defaults to 1024)", len(gz.Body), ce)
	}
	get("multi-channel poll", http.MethodGet, "/v1/poll?channel="+url.QueryEscape(ch), hdr, http.StatusOK)
	r := get("long-poll socket", http.MethodPost, "/v1/sockets", hdr, http.StatusCreated)
	var sock struct {
		SocketID    string `json:"socket_id"`
		SocketToken string `json:"socket_token"`
	}
	if err := json.Unmarshal(r.Body, &sock); err != nil || sock.SocketID == "" {
		t.Fatalf("POST /v1/sockets: %s", r.Body)
	}
	sh := http.Header{"Origin": {origin}, "X-Herald-Socket-Token": {sock.SocketToken}}
	get("socket poll", http.MethodGet, "/v1/poll?timeout=1&socket_id="+url.QueryEscape(sock.SocketID), sh, http.StatusOK)
}

// ---------------------------------------------------------------------------------------------
// The proxies

// frontKind is one proxy program and how its recipe is put on loopback.
type frontKind struct {
	name   string
	listen [2]string // the recipe's listening line, and what the test puts instead (%d: the port)
	// upstream is the recipe's address of Herald, and what the test puts instead (%s: host:port).
	upstream [2]string
	certs    func(c siteCert) [][2]string // the recipe's certificate files, and the test's
	around   string                       // what the test's config has around the recipe
	start    func(conf func(port int) string) (*testkit.ProxyServer, error)
	cutLog   *regexp.Regexp // a line the proxy logs when it cuts an idle response
}

var nginxFront = frontKind{
	name:     "nginx",
	listen:   [2]string{"listen 443 ssl http2;", "listen 127.0.0.1:%d ssl http2;"},
	upstream: [2]string{"server 127.0.0.1:8081;", "server %s;"},
	certs: func(c siteCert) [][2]string {
		return [][2]string{{"/etc/nginx/tls/rt.example.com.crt", c.certFile}, {"/etc/nginx/tls/rt.example.com.key", c.keyFile}}
	},
	// A global config that compresses every text type, as some do: the recipe must undo it for
	// streams.
	around: "    gzip on;\n    gzip_types text/event-stream;\n\n",
	start:  testkit.StartNginx,
	cutLog: regexp.MustCompile(`upstream timed out`),
}

// front is one proxy process in front of one herald.
type front struct {
	name string
	kind frontKind
	srv  *testkit.ProxyServer
	base string // https://rt.example.com:PORT
}

// cuts counts the idle cuts in the proxy's log.
func (f *front) cuts() int { return len(f.kind.cutLog.FindAllString(f.srv.Logs(), -1)) }

// startFront starts the proxy with its recipe from docs/deploy.md in front of upstream
// (host:port), after the edits (old → new, each old found exactly once) that turn it into the
// case's variant. The proxy's logs go to the test log if the test failed.
func startFront(t *testing.T, env *proxyEnv, k frontKind, upstream string, edits ...[2]string) *front {
	t.Helper()
	conf := recipe(t, k.name)
	conf = edit(t, conf, k.upstream[0], fmt.Sprintf(k.upstream[1], upstream))
	for _, e := range k.certs(env.cert) {
		conf = edit(t, conf, e[0], e[1])
	}
	for _, e := range edits {
		conf = edit(t, conf, e[0], e[1])
	}
	edit(t, conf, k.listen[0], "") // found exactly once; the port is known only at the start
	srv, err := k.start(func(port int) string {
		return k.around + strings.Replace(conf, k.listen[0], fmt.Sprintf(k.listen[1], port), 1)
	})
	if err != nil {
		t.Fatalf("%s: %v", k.name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- %s (in front of %s) ----\n%s\n---- end of %s ----", k.name, upstream, srv.Logs(), k.name)
		}
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return &front{name: k.name, kind: k, srv: srv, base: fmt.Sprintf("https://%s:%d", recipeHost, srv.Port)}
}

// recipe returns the config block that docs/deploy.md marks with <!-- recipe:name -->: the
// fenced block on the lines after the marker, byte for byte.
func recipe(t testing.TB, name string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "deploy.md"))
	if err != nil {
		t.Fatalf("the recipes: %v", err)
	}
	marker := "\n<!-- recipe:" + name + " -->\n"
	_, after, ok := strings.Cut(string(doc), marker)
	if !ok || strings.Count(string(doc), marker) != 1 {
		t.Fatalf("docs/deploy.md must mark exactly one block with <!-- recipe:%s -->", name)
	}
	fence, body, ok := strings.Cut(after, "\n")
	if !ok || !strings.HasPrefix(fence, "```") {
		t.Fatalf("docs/deploy.md: <!-- recipe:%s --> must be followed by a ``` block", name)
	}
	body, _, ok = strings.Cut(body, "\n```\n")
	if !ok {
		t.Fatalf("docs/deploy.md: the recipe:%s block does not end", name)
	}
	return body + "\n"
}

// edit replaces old, which must occur exactly once in conf: a recipe that changed under the
// test fails it rather than being run unchanged.
func edit(t testing.TB, conf, old, new string) string {
	t.Helper()
	if n := strings.Count(conf, old); n != 1 {
		t.Fatalf("the recipe must contain %q exactly once, found %d times:\n%s", old, n, conf)
	}
	return strings.Replace(conf, old, new, 1)
}

// ---------------------------------------------------------------------------------------------
// The environment the cases share: a certificate, the page and its bundle, and one Chromium.

type proxyEnv struct {
	cert    siteCert
	page    *httptest.Server // the app: its page and the clientjs bundle, on another origin
	browser context.Context  // Chromium; each page opens in a tab of its own
}

func (e *proxyEnv) heraldArgs() []string { return []string{"--cors-origins", e.page.URL} }

// newProxyEnv makes the certificate, builds the clientjs bundle, serves the page and starts
// Chromium, which trusts the certificate (by its key, through a flag) and resolves recipeHost to
// 127.0.0.1. Everything stops when the test and its subtests are done.
func newProxyEnv(t *testing.T) *proxyEnv {
	t.Helper()
	env := &proxyEnv{cert: newSiteCert(t)}
	bundle := buildClientBundle(t)
	env.page = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write([]byte(proxyPage))
		case "/herald.min.js":
			w.Header().Set("Content-Type", "text/javascript")
			w.Write(bundle)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(env.page.Close)

	chromium := chromiumPath(t)
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("host-resolver-rules", "MAP "+recipeHost+" 127.0.0.1"),
		chromedp.Flag("ignore-certificate-errors-spki-list", env.cert.spki),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
	)
	browser, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		allocCancel()
	})
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("chromium (%s) did not start: %v", chromium, err)
	}
	env.browser = browser
	return env
}

// buildClientBundle builds clientjs's <script> bundle (window.Herald) with the esbuild that
// clientjs's npm packages carry, as clientjs/test/browser.test.js does.
func buildClientBundle(t *testing.T) []byte {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "clientjs"))
	if err != nil {
		t.Fatal(err)
	}
	esbuild := filepath.Join(dir, "node_modules", ".bin", "esbuild")
	if _, err := os.Stat(esbuild); err != nil {
		t.Fatalf("this test builds the clientjs bundle with %s: run `npm ci` in clientjs (make test does)", esbuild)
	}
	out := filepath.Join(t.TempDir(), "herald.min.js")
	cmd := exec.Command(esbuild, "src/browser.js", "--bundle", "--minify", "--format=iife", "--global-name=Herald",
		"--outfile="+out, "--log-level=warning")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("esbuild: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// proxyPage runs the standalone clientjs client on one channel, from a cursor, and keeps what it
// sees in window.log; window.state() returns it as JSON.
const proxyPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>herald behind a proxy</title></head><body>
<script src="/herald.min.js"></script>
<script>
const q = new URLSearchParams(location.search);
const host = q.get('host');
const log = window.log = {events: [], raw: [], connects: 0, transports: [], states: [], errors: []};
const h = window.h = new Herald.Herald({host, namespace: false, connectTimeout: +(q.get('connect_timeout') || 5000)});
// Every event the client handles, before it drops those it already has: a duplicate the server
// sent shows here even though no listener sees it.
const frame = h.frame.bind(h);
h.frame = (type, d) => { if (d && d.id && d.channel) log.raw.push(d.id); return frame(type, d); };
h.onConnectionChange(s => {
  log.states.push(s);
  if (s === 'connected') { log.connects++; log.transports.push(h.transport()); }
});
const ch = h.channel(q.get('channel'));
ch.cursor = q.get('cursor') || undefined; // before the first socket subscribes it
ch.listenToAll((event, data, meta) => log.events.push({event, n: data && data.n, id: meta.id}));
ch.error(e => log.errors.push(JSON.stringify(e)));
window.state = () => JSON.stringify({...log, transport: h.transport() || ''});
</script></body></html>`

// pageState is window.state() of a proxyPage.
type pageState struct {
	Events []struct {
		Event string `json:"event"`
		N     int    `json:"n"`
		ID    string `json:"id"`
	} `json:"events"`
	Raw        []string `json:"raw"`
	Connects   int      `json:"connects"`
	Transports []string `json:"transports"`
	States     []string `json:"states"`
	Errors     []string `json:"errors"`
	Transport  string   `json:"transport"`
	Protocols  []string `json:"-"` // of the answers from the front, as Chromium reports them
}

// browserTab is a page in a tab of its own.
type browserTab struct {
	ctx  context.Context
	base string

	mu        sync.Mutex
	protocols []string
}

// expectSequence checks the page got events n = from..to, each once, in order, and handled
// each once (no duplicate reached the client either).
func (s pageState) expectSequence(t *testing.T, what string, from, to int) {
	t.Helper()
	ns := make([]int, len(s.Events))
	for i, e := range s.Events {
		ns[i] = e.N
	}
	if err := exactSequence(ns, from, to); err != nil {
		t.Errorf("%s: %v", what, err)
	}
	seen := map[string]bool{}
	for _, id := range s.Raw {
		if seen[id] {
			t.Errorf("%s: event %s reached the client twice (the client dropped the repeat)", what, id)
		}
		seen[id] = true
	}
	if len(s.Errors) > 0 {
		t.Errorf("%s: the channel reported errors: %v", what, s.Errors)
	}
}

// exactSequence reports how ns differs from from, from+1, …, to.
func exactSequence(ns []int, from, to int) error {
	var missing, dup []int
	count := map[int]int{}
	for _, n := range ns {
		count[n]++
	}
	for n := from; n <= to; n++ {
		if count[n] == 0 {
			missing = append(missing, n)
		}
	}
	for n, c := range count {
		if c > 1 || n < from || n > to {
			dup = append(dup, n)
		}
	}
	slices.Sort(dup)
	if len(missing) > 0 || len(dup) > 0 {
		return fmt.Errorf("want %d..%d once each: missing %v, repeated or unexpected %v (got %v)", from, to, missing, dup, ns)
	}
	for i, n := range ns {
		if n != from+i {
			return fmt.Errorf("out of order at %d: got %v", i, ns)
		}
	}
	return nil
}

// openPage opens the page in a new tab: the client connects to the front's base URL and follows
// ch from cursor. connectTimeout 0 keeps the client's default.
func (e *proxyEnv) openPage(t *testing.T, f *front, ch, cursor string, connectTimeout time.Duration) *browserTab {
	t.Helper()
	tabCtx, cancel := chromedp.NewContext(e.browser)
	t.Cleanup(cancel)
	tab := &browserTab{ctx: tabCtx, base: f.base}
	q := url.Values{"host": {f.base}, "channel": {ch}, "cursor": {cursor}}
	if connectTimeout > 0 {
		q.Set("connect_timeout", strconv.Itoa(int(connectTimeout.Milliseconds())))
	}
	// The tab lives as long as the context of its first run: no timeout on that one.
	if err := chromedp.Do(tabCtx); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	// Which protocol each answer from the front came over: a cross-origin page cannot read
	// that itself (Resource Timing hides it without Timing-Allow-Origin).
	err := chromedp.Listen(tabCtx, func(ev any) {
		if r, ok := ev.(*network.EventResponseReceived); ok && r.Response != nil && strings.HasPrefix(r.Response.URL, tab.base) {
			tab.mu.Lock()
			tab.protocols = append(tab.protocols, r.Response.Protocol)
			tab.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancelNav := context.WithTimeout(tabCtx, 20*time.Second)
	defer cancelNav()
	if err := chromedp.Do(ctx, chromedp.Navigate(e.page.URL+"/?"+q.Encode())); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	return tab
}

// state reads the page's state.
func (e *proxyEnv) state(t *testing.T, tab *browserTab) pageState {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, 5*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string]("window.state()"))
	if err != nil {
		t.Fatalf("read the page: %v", err)
	}
	var s pageState
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatalf("page state %s: %v", raw, err)
	}
	tab.mu.Lock()
	s.Protocols = slices.Clone(tab.protocols)
	tab.mu.Unlock()
	return s
}

// waitPage waits up to d for cond to hold on the page's state.
func (e *proxyEnv) waitPage(t *testing.T, tab *browserTab, what string, d time.Duration, cond func(pageState) bool) pageState {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		s := e.state(t, tab)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; page: %+v", d, what, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitEvents waits for the page to have n events, then a moment longer so a repeat or an extra
// event would show.
func (e *proxyEnv) waitEvents(t *testing.T, tab *browserTab, n int, d time.Duration) pageState {
	t.Helper()
	e.waitPage(t, tab, strconv.Itoa(n)+" events", d, func(s pageState) bool { return len(s.Events) >= n })
	time.Sleep(300 * time.Millisecond)
	return e.state(t, tab)
}

// ---------------------------------------------------------------------------------------------
// Go's client through the proxies

// client is an HTTP/2 client that reaches recipeHost on 127.0.0.1 (from localIP, if given),
// trusts the test certificate, and leaves compressed answers compressed.
func (e *proxyEnv) client(t *testing.T, localIP string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil || host != recipeHost {
				return nil, fmt.Errorf("this client reaches %s only, not %s", recipeHost, addr)
			}
			return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		},
		TLSClientConfig:    &tls.Config{RootCAs: e.cert.pool},
		ForceAttemptHTTP2:  true,
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// proxyDo sends a request with a 30 s bound and returns the whole answer.
func proxyDo(c *http.Client, method, rawURL string, header http.Header) (reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		return reply{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// sseVia opens a stream with client c (the harness's sseStream, on another transport), fails
// the test unless it is a 200, and closes it at the end.
func sseVia(t *testing.T, c *http.Client, rawURL string, header http.Header) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header[k] = v
	}
	timer := time.AfterFunc(15*time.Second, cancel) // to the response head; the body is unbounded
	resp, err := c.Do(req)
	timer.Stop()
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %d %s", rawURL, resp.StatusCode, b)
	}
	s := &sseStream{URL: rawURL, Resp: resp, cancel: cancel, sig: make(chan struct{}, 1), done: make(chan struct{})}
	go s.read()
	t.Cleanup(s.Close)
	return s
}

// ---------------------------------------------------------------------------------------------
// The certificate

// siteCert is a self-signed certificate for recipeHost and 127.0.0.1, in the files the proxies
// read, with what the clients need to trust it and nothing else.
type siteCert struct {
	certFile, keyFile string
	bundleFile        string // the certificate, then its key (HAProxy)
	pool              *x509.CertPool
	spki              string // base64 SHA-256 of its public key, for Chromium's flag
}

func newSiteCert(t *testing.T) siteCert {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: recipeHost},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		// Its own issuer, so each client can take it as the one root it trusts.
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{recipeHost}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	c := siteCert{certFile: filepath.Join(dir, "site.crt"), keyFile: filepath.Join(dir, "site.key"),
		bundleFile: filepath.Join(dir, "site.pem"), pool: x509.NewCertPool()}
	for path, data := range map[string][]byte{c.certFile: certPEM, c.keyFile: keyPEM, c.bundleFile: append(slices.Clone(certPEM), keyPEM...)} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.pool.AddCert(cert)
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	c.spki = base64.StdEncoding.EncodeToString(sum[:])
	return c
}
