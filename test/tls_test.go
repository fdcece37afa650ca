package test

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/herald-rt/herald/test/testkit"
)

// HTTPS, HTTP/2 and h2c end to end: the same streams, polls and publishes over each protocol,
// a stuck HTTP/2 stream cut off without stalling the streams that share its connection, and
// the certificate reloaded under open streams.

// h2Client speaks HTTP/2 over TLS to a herald started with tls: true. Each stream's receive
// window is kept small so a stream whose body nobody reads fills it quickly.
func h2Client(t testing.TB) *http.Client {
	t.Helper()
	cfg, err := testCerts.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certificates = nil
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, DisableCompression: true,
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// h2cClient speaks HTTP/2 without TLS (prior knowledge) and nothing else.
func h2cClient(t testing.TB) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// countingConns wraps a client so it counts the connections it dials.
func countingConns(c *http.Client, n *atomic.Int32) *http.Client {
	rt := c.Transport
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			if !i.Reused {
				n.Add(1)
			}
		}}
		return rt.RoundTrip(r.WithContext(httptrace.WithClientTrace(r.Context(), trace)))
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// expectInOrder checks that events carry n = from, from+1, … with the published ids.
func expectInOrder(t testing.TB, what string, got []received, ids []string, from int) {
	t.Helper()
	for i, r := range got {
		if r.N != from+i || r.LineID != ids[i] {
			t.Fatalf("%s: event %d is n=%d id=%s, want n=%d id=%s", what, i, r.N, r.LineID, from+i, ids[i])
		}
	}
}

func TestTLSAndHTTP2(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{tls: true, args: []string{"--write-timeout", "2s", "--queue-size", "64", "--heartbeat", "1s"}})
	tok := h.Publisher(t)
	ch := uniqueChannel("tls")
	path := eventsPath(ch)

	var dials atomic.Int32
	h2 := countingConns(h2Client(t), &dials)
	// Three HTTP/2 streams and one HTTP/1.1 stream (hijacked, over TLS) on the same channel.
	var streams []*sseStream
	for range 3 {
		s, err := openSSEWith(h2, h.Base+path, nil)
		if err != nil {
			t.Fatalf("HTTP/2 stream: %v", err)
		}
		t.Cleanup(s.Close)
		if s.Resp.ProtoMajor != 2 {
			t.Fatalf("stream over %s, want HTTP/2 (ALPN h2)", s.Resp.Proto)
		}
		s.expectPreamble(t)
		streams = append(streams, s)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("three HTTP/2 streams used %d connections, want 1", n)
	}
	h1 := mustSSE(t, h.Base+path, nil)
	if h1.Resp.ProtoMajor != 1 || h1.Resp.TLS == nil {
		t.Fatalf("HTTP/1.1 stream over %s (TLS %v)", h1.Resp.Proto, h1.Resp.TLS != nil)
	}
	h1.expectPreamble(t)
	streams = append(streams, h1)

	ids := h.publishN(t, tok, ch, "Tick", 0, 29)
	// The 30th is published over HTTP/2 too.
	req, _ := http.NewRequest(http.MethodPost, h.Base+path, strings.NewReader(`{"event":"Tick","data":{"n":29}}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h2.Do(req)
	if err != nil {
		t.Fatalf("publish over HTTP/2: %v", err)
	}
	var pub struct {
		ID      string `json:"id"`
		Channel string `json:"channel"`
	}
	if err := decodeJSONBody(resp, &pub); err != nil || resp.StatusCode != http.StatusCreated || resp.ProtoMajor != 2 {
		t.Fatalf("publish over %s: %d %v", resp.Proto, resp.StatusCode, err)
	}
	resp.Body.Close()
	ids = append(ids, pub.ID)
	for i, s := range streams {
		expectInOrder(t, "stream "+string(rune('A'+i)), s.mustEvents(t, 30, 10*time.Second), ids, 0)
	}

	t.Run("heartbeat over HTTP/2", func(t *testing.T) {
		f, err := streams[0].next(5 * time.Second)
		if err != nil || !f.CommentOnly() {
			t.Fatalf("want a heartbeat comment on an idle HTTP/2 stream, got %q, %v", f.Raw, err)
		}
	})

	t.Run("the admin listener on the same certificate", func(t *testing.T) {
		if !strings.HasPrefix(h.Admin, "https://") {
			t.Fatalf("admin listener at %s", h.Admin)
		}
		r := mustDo(t, http.MethodGet, h.Admin+"/admin/nodes", nil, nil) // trusts only the test CA
		if r.Status != http.StatusOK {
			t.Fatalf("GET /admin/nodes over TLS: %s", r)
		}
	})

	// The README's lines: curl --http2 -N to subscribe, curl --http2 -X POST to publish.
	t.Run("curl --http2", func(t *testing.T) {
		curl, err := exec.LookPath("curl")
		if err != nil {
			t.Fatal("this test needs curl: apt-get install curl (make test installs it)")
		}
		ch := uniqueChannel("tls-curl")
		sub := exec.Command(curl, "--http2", "-N", "-sS", "--cacert", testCerts.CA, "--max-time", "3",
			"-w", "\nhttp_version=%{http_version}\n", h.Base+eventsPath(ch))
		out := &testkit.LogBuffer{} // curl's output is copied in by another goroutine
		sub.Stdout, sub.Stderr = out, out
		if err := sub.Start(); err != nil {
			t.Fatal(err)
		}
		defer sub.Process.Kill()
		if !testkit.WaitFor(5*time.Second, func() bool { return strings.Contains(out.String(), "herald:connected") }) {
			t.Fatalf("curl --http2 -N: no herald:connected: %q", out.String())
		}
		pubOut, err := exec.Command(curl, "--http2", "-sS", "--cacert", testCerts.CA, "-X", "POST", h.Base+eventsPath(ch),
			"-H", "Authorization: Bearer "+tok, "-H", "Content-Type: application/json",
			"-d", `{"event":"MessageSent","data":{"text":"hello"}}`, "-w", "\nhttp_version=%{http_version}").CombinedOutput()
		if err != nil || !strings.Contains(string(pubOut), `"channel":"`+ch+`"`) || !strings.Contains(string(pubOut), "http_version=2") {
			t.Fatalf("curl --http2 -X POST: %v: %s", err, pubOut)
		}
		sub.Wait() // --max-time ends it
		got := out.String()
		if !strings.Contains(got, "event: MessageSent\n") || !strings.Contains(got, `"text":"hello"`) || !strings.Contains(got, "http_version=2") {
			t.Fatalf("curl --http2 -N did not show the event over HTTP/2: %q", got)
		}
	})

	t.Run("resume over HTTP/2 from Last-Event-ID", func(t *testing.T) {
		s, err := openSSEWith(h2, h.Base+path, lastEventHeader(ids[19]))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.expectPreamble(t)
		expectInOrder(t, "resumed", s.mustEvents(t, 10, 10*time.Second), ids[20:], 20)
	})

	t.Run("long-poll over HTTP/2", func(t *testing.T) {
		q := url.Values{"since": {"beginning"}}
		req, _ := http.NewRequest(http.MethodGet, h.Base+pollPath(ch)+"?"+q.Encode(), nil)
		resp, err := h2.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ans pollAnswer
		if err := decodeJSONBody(resp, &ans); err != nil || resp.ProtoMajor != 2 {
			t.Fatalf("poll over %s: %v", resp.Proto, err)
		}
		if len(ans.Events) != 30 {
			t.Fatalf("poll over HTTP/2 returned %d events, want the 30 published", len(ans.Events))
		}
		for i, raw := range ans.Events {
			if env, err := parseEnvelope(raw); err != nil || env.ID != ids[i] {
				t.Fatalf("poll over HTTP/2: event %d is %s, want id %s", i, raw, ids[i])
			}
		}
	})

	// A stream whose reader stops fills its HTTP/2 window; the server's writes to it then block,
	// and it must be cut off (queue limit or write deadline) while a stream on the same
	// connection keeps receiving everything: HTTP/2 streams share a connection, not a fate.
	t.Run("a stuck stream does not stall its connection", func(t *testing.T) {
		ch := uniqueChannel("tls-stuck")
		// Nothing reads the stuck stream's body until the end.
		stuck, err := h2.Get(h.Base + eventsPath(ch))
		if err != nil || stuck.StatusCode != http.StatusOK {
			t.Fatalf("stuck stream: %v", err)
		}
		defer stuck.Body.Close()
		live, err := openSSEWith(h2, h.Base+eventsPath(ch), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		live.expectPreamble(t)
		if n := dials.Load(); n != 1 {
			t.Fatalf("the streams used %d connections, want 1", n)
		}
		// 400 events of 2 KB: far more than a 64 KB window and a 64-event queue hold.
		pad := strings.Repeat("x", 2000)
		var want []string
		for i := range 400 {
			want = append(want, h.mustPublish(t, tok, ch, "Tick", map[string]any{"n": i, "pad": pad}))
		}
		expectInOrder(t, "the live stream beside a stuck one", live.mustEvents(t, 400, 30*time.Second), want, 0)
		// The stuck stream ends once read: cut off, not resumed where it stalled.
		done := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, stuck.Body)
			done <- err
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("the stuck stream was not cut off")
		}
	})
}

func TestH2C(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--h2c"}})
	tok := h.Publisher(t)
	ch := uniqueChannel("h2c")
	s, err := openSSEWith(h2cClient(t), h.Base+eventsPath(ch), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if s.Resp.ProtoMajor != 2 {
		t.Fatalf("--h2c stream over %s, want HTTP/2", s.Resp.Proto)
	}
	s.expectPreamble(t)
	ids := h.publishN(t, tok, ch, "Tick", 0, 10) // the harness publishes over HTTP/1.1: both served
	expectInOrder(t, "h2c", s.mustEvents(t, 10, 10*time.Second), ids, 0)

	// Without --h2c, a prior-knowledge HTTP/2 client is refused: nothing is served by accident.
	plain := startHerald(t, heraldOpts{})
	if resp, err := h2cClient(t).Get(plain.Base + "/v1/health"); err == nil {
		resp.Body.Close()
		t.Fatalf("a server without --h2c answered HTTP/2 prior knowledge (%s)", resp.Proto)
	}
}

// servedCert is the leaf certificate a TLS handshake with addr presents.
func servedCert(t testing.TB, addr string) []byte {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // the test compares the bytes itself
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Raw
}

func pemCert(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	return block.Bytes
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A renewed certificate is served from the next handshake on, after SIGHUP, without ending
// the streams already open; a broken one is refused and the previous one kept.
func TestTLSCertificateReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	copyFile(t, testCerts.ServerCert, certFile)
	copyFile(t, testCerts.ServerKey, keyFile)
	h := startHerald(t, heraldOpts{tls: true, args: []string{"--tls-cert", certFile, "--tls-key", keyFile}})
	if got := servedCert(t, h.Addr); !bytes.Equal(got, pemCert(t, testCerts.ServerCert)) {
		t.Fatalf("herald does not serve --tls-cert")
	}
	tok := h.Publisher(t)
	ch := uniqueChannel("reload")
	s := mustSSE(t, h.Base+eventsPath(ch), nil)
	s.expectPreamble(t)

	renewed, err := testkit.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, renewed.ServerCert, certFile)
	copyFile(t, renewed.ServerKey, keyFile)
	h.Signal(syscall.SIGHUP)
	if !testkit.WaitFor(5*time.Second, func() bool { return bytes.Equal(servedCert(t, h.Addr), pemCert(t, renewed.ServerCert)) }) {
		t.Fatalf("after SIGHUP herald still serves the old certificate:\n%s", h.logs.String())
	}
	ids := h.publishN(t, tok, ch, "Tick", 0, 5)
	expectInOrder(t, "a stream opened before the reload", s.mustEvents(t, 5, 10*time.Second), ids, 0)

	// A half-written renewal: the key no longer matches. Refused, the renewed one stays.
	copyFile(t, testCerts.ServerKey, keyFile)
	h.Signal(syscall.SIGHUP)
	if !testkit.WaitFor(5*time.Second, func() bool { return strings.Contains(h.logs.String(), "cannot reload the certificate") }) {
		t.Fatalf("a certificate and key that do not match were not reported:\n%s", h.logs.String())
	}
	if !bytes.Equal(servedCert(t, h.Addr), pemCert(t, renewed.ServerCert)) {
		t.Fatalf("a failed reload changed the certificate served")
	}
	mustDo(t, http.MethodGet, h.Base+"/v1/health", nil, nil)
}

// Without TLS a SIGHUP (a service manager's reload) is logged and changes nothing: its
// default action would have ended herald and every stream with it.
func TestHangupWithoutTLS(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{})
	ch := uniqueChannel("hup")
	s := mustSSE(t, h.Base+eventsPath(ch), nil)
	s.expectPreamble(t)
	h.Signal(syscall.SIGHUP)
	if !testkit.WaitFor(5*time.Second, func() bool { return strings.Contains(h.logs.String(), "SIGHUP: nothing to reload") }) {
		t.Fatalf("SIGHUP without --tls-cert was not logged:\n%s", h.logs.String())
	}
	ids := h.publishN(t, h.Publisher(t), ch, "Tick", 0, 3)
	expectInOrder(t, "a stream opened before the SIGHUP", s.mustEvents(t, 3, 10*time.Second), ids, 0)
}

// Bad TLS flags stop herald at once with a line that says what is wrong.
func TestTLSFlagErrors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "none.pem")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", testCerts.ServerCert}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", missing, "--tls-key", testCerts.ServerKey}, "tls certificate: open " + missing},
		{[]string{"--tls-cert", testCerts.ServerCert, "--tls-key", testCerts.CA}, "tls certificate " + testCerts.ServerCert},
	} {
		cmd := exec.Command(heraldBin, append([]string{"serve", "--addr", "127.0.0.1:0", "--admin-addr", "", "--jwt-secret", string(randomSecret())}, c.args...)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("herald serve %s: exit %v, output %q; want a failure saying %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}
}

// decodeJSONBody decodes a JSON response body strictly.
func decodeJSONBody(resp *http.Response, v any) error {
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		return err
	}
	return strictJSON(b.Bytes(), v)
}

// --sse-compression end to end: a client that accepts gzip gets a gzip stream on the hijacked
// HTTP/1.1 path and on HTTP/2, each event readable as it is sent; long-poll answers over the
// threshold come compressed without the flag.
func TestCompressionEndToEnd(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{tls: true, args: []string{"--sse-compression"}})
	tok := h.Publisher(t)
	ch := uniqueChannel("gzip")
	gz := func(c *http.Client) *http.Client {
		tr := c.Transport.(*http.Transport).Clone()
		tr.DisableCompression = false // Go asks for gzip and decodes it as it arrives
		return &http.Client{Transport: tr}
	}
	h1Client := &http.Client{Transport: streamTransport}
	var streams []*sseStream
	for _, c := range []*http.Client{gz(h1Client), gz(h2Client(t))} {
		s, err := openSSEWith(c, h.Base+eventsPath(ch), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		if !s.Resp.Uncompressed {
			t.Fatalf("%s stream with Accept-Encoding: gzip was not gzip-encoded", s.Resp.Proto)
		}
		s.expectPreamble(t)
		streams = append(streams, s)
	}
	// One event at a time: each must arrive before the next is published (a flush per batch).
	var ids []string
	for i := range 5 {
		ids = append(ids, h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": i}))
		for _, s := range streams {
			expectInOrder(t, s.Resp.Proto+" gzip stream", s.mustEvents(t, 1, 10*time.Second), ids[i:], i)
		}
	}
	// Without Accept-Encoding the stream stays plain.
	plain := mustSSE(t, h.Base+eventsPath(ch), nil)
	if plain.Resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("a stream for a client that did not ask for gzip is %q", plain.Resp.Header.Get("Content-Encoding"))
	}

	for range 20 { // 25 events: a poll answer well over 1 KiB
		ids = append(ids, h.mustPublish(t, tok, ch, "Tick", map[string]string{"text": strings.Repeat("hello ", 10)}))
	}
	req, _ := http.NewRequest(http.MethodGet, h.Base+pollPath(ch)+"?since=beginning", nil)
	resp, err := gz(h2Client(t)).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ans pollAnswer
	if err := decodeJSONBody(resp, &ans); err != nil || !resp.Uncompressed || len(ans.Events) != len(ids) {
		t.Fatalf("poll with Accept-Encoding: gzip: compressed %v, %d events, %v", resp.Uncompressed, len(ans.Events), err)
	}
	resp.Body.Close()
}

// On HTTP/2 a write deadline that passes resets the stream even when nothing is being
// written: a stream quiet for longer than --write-timeout (heartbeats further apart) must
// still be open for the next event.
func TestHTTP2QuietStreamOutlivesWriteTimeout(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{tls: true, args: []string{"--write-timeout", "1s", "--heartbeat", "30s"}})
	ch := uniqueChannel("h2-quiet")
	s, err := openSSEWith(h2Client(t), h.Base+eventsPath(ch), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.expectPreamble(t)
	s.expectQuiet(t, 2500*time.Millisecond) // fails if the stream ends meanwhile
	ids := h.publishN(t, h.Publisher(t), ch, "Tick", 0, 1)
	expectInOrder(t, "after a quiet spell", s.mustEvents(t, 1, 10*time.Second), ids, 0)
}

// An idle HTTP/2 stream lives on net/http's handler goroutine, which it cannot leave. Herald
// serves it after echo's handler chain has returned, so the goroutine waits in a shallow frame
// and the garbage collector halves its stack to 4 KB; waiting anywhere deeper (inside the
// chain, or under one more frame of its own) keeps 8 KB, which is a third of what an idle
// HTTP/2 stream costs (docs/benchmarks.md). This guards that: what one more frame would undo.
func TestHTTP2IdleStreamStack(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{tls: true})
	stacks := func() int64 {
		t.Helper()
		var last int64
		for range 3 { // a stack is halved once per collection: 16 KB needs two to reach 4
			r := mustDo(t, http.MethodGet, h.Admin+"/debug/pprof/heap?debug=1&gc=1", nil, nil)
			_, rest, ok := strings.Cut(string(r.Body), "\n# Stack = ")
			if !ok {
				t.Fatalf("no stack figure in the heap profile: %.200s", r.Body)
			}
			n, err := strconv.ParseInt(rest[:strings.IndexByte(rest, ' ')], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			last = n
		}
		return last
	}
	before := stacks()
	const n = 200
	client := h2Client(t)
	ch := uniqueChannel("h2-stack")
	for range n {
		s, err := openSSEWith(client, h.Base+eventsPath(ch), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		s.expectPreamble(t)
	}
	perStream := (stacks() - before) / n
	t.Logf("goroutine stack per idle HTTP/2 stream: %d bytes", perStream)
	if perStream > 6<<10 {
		t.Fatalf("an idle HTTP/2 stream holds %d bytes of goroutine stack, want about 4 KB: its handler goroutine waits too deep to shrink", perStream)
	}
}
