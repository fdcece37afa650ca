package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-rt/herald/test/testkit"
)

// heraldBin is the herald binary TestMain built for this run.
var heraldBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv("HERALD_STORM_CLIENT") != "" {
		return m.Run() // a client process of the reconnect storm (soak_test.go): no server to build
	}
	dir, err := os.MkdirTemp("", "herald-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	heraldBin = filepath.Join(dir, "herald")
	if err := testkit.BuildWithoutRace(heraldBin, "github.com/herald-rt/herald/cmd/herald"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: could not build the herald binary:", err)
		return 1
	}
	defer testkit.StopSharedRedis()
	defer stopSharedCluster()
	if testCerts, err = testkit.NewCerts(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: test certificates:", err)
		return 1
	}
	// The shared clients trust the test CA, so every helper works against a herald started
	// with tls: true (over HTTP/1.1: a custom TLS config turns Go's automatic HTTP/2 off).
	client, err := testCerts.ClientTLS()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: test certificates:", err)
		return 1
	}
	client.Certificates = nil
	apiClient.Transport.(*http.Transport).TLSClientConfig = client
	streamTransport.TLSClientConfig = client
	return m.Run()
}

// testCerts are a throwaway CA and a certificate for 127.0.0.1 it signed, made by TestMain;
// a herald started with tls: true serves that certificate.
var testCerts testkit.Certs

// ---------------------------------------------------------------------------------------------
// The herald process

// herald is one running `herald serve`.
type herald struct {
	t      testing.TB
	name   string
	Base   string // http://127.0.0.1:PORT (https:// with tls)
	Addr   string
	Admin  string // the admin listener, http://127.0.0.1:PORT
	Secret []byte
	cmd    *exec.Cmd
	logs   *testkit.LogBuffer
	done   chan struct{} // closed when the process has exited
	waitEr error
}

type heraldOpts struct {
	name   string   // for logs; "herald" by default
	secret []byte   // JWT secret; random by default
	addr   string   // listen address; a free loopback port by default
	args   []string // extra `serve` flags
	tls    bool     // serve testCerts' certificate: https:// on both listeners
	env    []string // extra environment variables, KEY=value
}

// randomSecret returns a fresh HS256 secret of 48 bytes (as hex text).
func randomSecret() []byte {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return []byte(hex.EncodeToString(b))
}

func randomSuffix() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	port, err := testkit.FreePort()
	if err != nil {
		t.Fatalf("no free loopback port: %v", err)
	}
	return port
}

// startHerald starts `herald serve` and waits until GET /v1/health answers 200. The process is
// killed when the test ends, and its output goes to the test log if the test failed.
func startHerald(t testing.TB, o heraldOpts) *herald {
	t.Helper()
	if o.secret == nil {
		o.secret = randomSecret()
	}
	if o.name == "" {
		o.name = "herald"
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr := o.addr
		if addr == "" {
			addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		}
		h, err := tryStartHerald(t, o, addr, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
		if err == nil {
			return h
		}
		lastErr = err
		if o.addr != "" || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("%s did not start: %v", o.name, lastErr)
	return nil
}

func tryStartHerald(t testing.TB, o heraldOpts, addr, adminAddr string) (*herald, error) {
	scheme := "http://"
	args := []string{"serve", "--addr", addr, "--admin-addr", adminAddr}
	if o.tls {
		scheme = "https://"
		args = append(args, "--tls-cert", testCerts.ServerCert, "--tls-key", testCerts.ServerKey)
	}
	h := &herald{t: t, name: o.name, Addr: addr, Base: scheme + addr, Admin: scheme + adminAddr, Secret: o.secret,
		logs: &testkit.LogBuffer{}, done: make(chan struct{})}
	args = append(args, o.args...)
	h.cmd = exec.Command(heraldBin, args...)
	// The child gets none of this machine's HERALD_* settings, only what the test passes.
	env := append([]string{"HERALD_JWT_SECRET=" + string(o.secret)}, o.env...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			env = append(env, kv)
		}
	}
	h.cmd.Env = env
	h.cmd.Stdout, h.cmd.Stderr = h.logs, h.logs
	if err := h.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", heraldBin, err)
	}
	go func() {
		h.waitEr = h.cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		h.Kill()
		if t.Failed() {
			t.Logf("---- %s (%s %s) output ----\n%s\n---- end of %s output ----", h.name, addr, strings.Join(o.args, " "), h.logs.String(), h.name)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-h.done:
			return nil, fmt.Errorf("%s exited before it was ready (%v):\n%s", h.name, h.waitEr, h.logs.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.Base+"/v1/health", nil)
		resp, err := apiClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		cancel()
		if err == nil && resp.StatusCode == http.StatusOK {
			return h, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.Kill()
	return nil, fmt.Errorf("%s: GET /v1/health did not answer 200 within 20s:\n%s", h.name, h.logs.String())
}

// Kill stops the process at once (SIGKILL) and waits for it.
func (h *herald) Kill() {
	select {
	case <-h.done:
		return
	default:
	}
	_ = h.cmd.Process.Kill()
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		h.t.Errorf("%s: did not exit 10s after SIGKILL", h.name)
	}
}

// Signal sends sig to the process.
func (h *herald) Signal(sig os.Signal) {
	h.t.Helper()
	if err := h.cmd.Process.Signal(sig); err != nil {
		h.t.Fatalf("%s: signal %v: %v", h.name, sig, err)
	}
}

// WaitExit waits up to d for the process to exit and returns its exit code.
func (h *herald) WaitExit(d time.Duration) (code int, exited bool) {
	select {
	case <-h.done:
	case <-time.After(d):
		return 0, false
	}
	if h.waitEr == nil {
		return 0, true
	}
	var ee *exec.ExitError
	if errors.As(h.waitEr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), true
		}
		return ee.ExitCode(), true
	}
	return -1, true
}

// ---------------------------------------------------------------------------------------------
// Tokens

// tokenClaims mints a HS256 token with these claims, signed with secret.
func tokenClaims(t testing.TB, secret []byte, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		t.Fatalf("sign token: %v", err)
	}
	return s
}

// Token mints a token for this server: subject sub, the given channel patterns, valid for ttl.
func (h *herald) Token(t testing.TB, sub string, subscribe, publish []string, ttl time.Duration) string {
	t.Helper()
	return tokenClaims(t, h.Secret, jwt.MapClaims{
		"sub":              sub,
		"iat":              time.Now().Unix(),
		"exp":              time.Now().Add(ttl).Unix(),
		"herald.subscribe": orEmpty(subscribe),
		"herald.publish":   orEmpty(publish),
	})
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Publisher is a token that may publish (and subscribe) anywhere.
func (h *herald) Publisher(t testing.TB) string {
	t.Helper()
	return h.Token(t, "publisher", []string{"*"}, []string{"*"}, time.Hour)
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP

// apiClient is for requests that end: keep-alive on, no transparent gzip (we check raw bytes).
var apiClient = &http.Client{
	Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        128,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// streamTransport carries SSE streams, each on its own connection.
var streamTransport = &http.Transport{
	Proxy:              nil,
	DisableCompression: true,
	DisableKeepAlives:  true,
}

// reply is a finished HTTP exchange.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r reply) String() string {
	return fmt.Sprintf("%d %s", r.Status, bytes.TrimSpace(r.Body))
}

// do sends a request with a 30 s bound and returns the whole answer.
func do(method, rawURL string, header http.Header, body io.Reader) (reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, rawURL, body)
	if err != nil {
		return reply{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: read body: %w", method, rawURL, err)
	}
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

func mustDo(t testing.TB, method, rawURL string, header http.Header, body io.Reader) reply {
	t.Helper()
	r, err := do(method, rawURL, header, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	return r
}

func bearerHeader(tok string) http.Header {
	h := http.Header{}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	return h
}

func eventsPath(channel string) string { return "/v1/channels/" + url.PathEscape(channel) + "/events" }
func pollPath(channel string) string   { return "/v1/channels/" + url.PathEscape(channel) + "/poll" }

// publishReply is the body of a successful publish.
type publishReply struct {
	ID      string `json:"id"`
	Channel string `json:"channel"`
}

// publishBody sends one publish with a raw JSON body.
func (h *herald) publishBody(tok, channel string, body []byte, header http.Header) (reply, error) {
	hdr := bearerHeader(tok)
	hdr.Set("Content-Type", "application/json")
	for k, v := range header {
		hdr[k] = v
	}
	return do(http.MethodPost, h.Base+eventsPath(channel), hdr, bytes.NewReader(body))
}

// publish publishes event with data (any JSON value) and returns the event id. It returns an
// error unless the server answered 201 with {"id","channel"}; safe from any goroutine.
func (h *herald) publish(tok, channel, event string, data any) (string, error) {
	body, err := json.Marshal(map[string]any{"event": event, "data": data})
	if err != nil {
		return "", err
	}
	r, err := h.publishBody(tok, channel, body, nil)
	if err != nil {
		return "", err
	}
	if r.Status != http.StatusCreated {
		return "", fmt.Errorf("publish to %s: want 201, got %s", channel, r)
	}
	var pr publishReply
	if err := strictJSON(r.Body, &pr); err != nil {
		return "", fmt.Errorf("publish to %s: answer %s: %w", channel, r.Body, err)
	}
	if pr.ID == "" || pr.Channel != channel {
		return "", fmt.Errorf("publish to %s: bad answer %s", channel, r.Body)
	}
	return pr.ID, nil
}

func (h *herald) mustPublish(t testing.TB, tok, channel, event string, data any) string {
	t.Helper()
	id, err := h.publish(tok, channel, event, data)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// publishN publishes n events {"n":i} named event on channel, one after the other on one
// keep-alive connection, and returns their ids.
func (h *herald) publishN(t testing.TB, tok, channel, event string, from, n int) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for i := from; i < from+n; i++ {
		ids = append(ids, h.mustPublish(t, tok, channel, event, map[string]int{"n": i}))
	}
	return ids
}

// strictJSON decodes one JSON value, refusing unknown fields and trailing data.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// expectAPIError checks an error answer: the status, a JSON content type and a body of exactly
// {"error":{"code":wantCode,"message":"<non-empty>"}}.
func expectAPIError(t testing.TB, what string, r reply, wantStatus int, wantCode string) {
	t.Helper()
	if r.Status != wantStatus {
		t.Errorf("%s: want status %d (%s), got %s", what, wantStatus, wantCode, r)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		t.Errorf("%s: want Content-Type application/json, got %q (body %s)", what, r.Header.Get("Content-Type"), r.Body)
	}
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &outer); err != nil || len(outer) != 1 || outer["error"] == nil {
		t.Errorf("%s: body is not exactly {\"error\":{…}}: %s", what, r.Body)
		return
	}
	var inner map[string]any
	if err := json.Unmarshal(outer["error"], &inner); err != nil || len(inner) != 2 {
		t.Errorf("%s: error object is not exactly {\"code\",\"message\"}: %s", what, r.Body)
		return
	}
	code, _ := inner["code"].(string)
	msg, _ := inner["message"].(string)
	if code != wantCode {
		t.Errorf("%s: want error code %q, got %q (body %s)", what, wantCode, code, r.Body)
	}
	if strings.TrimSpace(msg) == "" {
		t.Errorf("%s: empty error message: %s", what, r.Body)
	}
}

// ---------------------------------------------------------------------------------------------
// Envelopes and poll answers

// envelope is the JSON of every event.
type envelope struct {
	ID      string          `json:"id"`
	Channel string          `json:"channel"`
	Event   string          `json:"event"`
	Data    json.RawMessage `json:"data"`
	TS      int64           `json:"ts"`
}

// parseEnvelope decodes an envelope and checks it has exactly the five fields of the spec.
func parseEnvelope(raw []byte) (envelope, error) {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return envelope{}, fmt.Errorf("envelope is not a JSON object: %w: %s", err, raw)
	}
	for _, k := range []string{"id", "channel", "event", "data", "ts"} {
		if _, ok := keys[k]; !ok {
			return envelope{}, fmt.Errorf("envelope lacks %q: %s", k, raw)
		}
	}
	if len(keys) != 5 {
		return envelope{}, fmt.Errorf("envelope has fields beyond id/channel/event/data/ts: %s", raw)
	}
	var e envelope
	if err := json.Unmarshal(raw, &e); err != nil {
		return envelope{}, fmt.Errorf("envelope fields have wrong types: %w: %s", err, raw)
	}
	return e, nil
}

// seqN extracts n from data {"n":n}.
func seqN(data json.RawMessage) (int, error) {
	var v struct {
		N *int `json:"n"`
	}
	if err := json.Unmarshal(data, &v); err != nil || v.N == nil {
		return 0, fmt.Errorf("data is not {\"n\":…}: %s", data)
	}
	return *v.N, nil
}

type resyncNotice struct {
	Channels      []string `json:"channels"`
	Reason        string   `json:"reason"`
	Cursor        string   `json:"cursor"`
	ChannelCursor string   `json:"channel_cursor"` // the channel's own position after the resync
}

type pollAnswer struct {
	Events []json.RawMessage `json:"events"`
	Cursor string            `json:"cursor"`
	Resync []resyncNotice    `json:"resync"`
}

// poll sends one long-poll; path is pollPath(ch) or "/v1/poll".
func (h *herald) poll(path string, q url.Values, tok string) (pollAnswer, reply, error) {
	u := h.Base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	r, err := do(http.MethodGet, u, bearerHeader(tok), nil)
	if err != nil {
		return pollAnswer{}, r, err
	}
	if r.Status != http.StatusOK {
		return pollAnswer{}, r, fmt.Errorf("GET %s: want 200, got %s", u, r)
	}
	var a pollAnswer
	if err := strictJSON(r.Body, &a); err != nil {
		return a, r, fmt.Errorf("GET %s: answer is not {events,cursor[,resync]}: %w: %s", u, err, r.Body)
	}
	if a.Events == nil || a.Cursor == "" {
		return a, r, fmt.Errorf("GET %s: answer lacks events or cursor: %s", u, r.Body)
	}
	return a, r, nil
}

func (h *herald) mustPoll(t testing.TB, path string, q url.Values, tok string) pollAnswer {
	t.Helper()
	a, _, err := h.poll(path, q, tok)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// pollInFlight sends a long-poll to h through a proxy of its own and returns once the request
// has reached the server — a poll that is waiting, without sleeping and hoping it is. The
// answer comes on the channel.
func pollInFlight(t testing.TB, h *herald, path string, q url.Values) <-chan pollResult {
	t.Helper()
	proxy := startProxy(t, h.Addr)
	out := make(chan pollResult, 1)
	go func() {
		st := time.Now()
		a, r, err := (&herald{t: t, Base: proxy.Base()}).poll(path, q, "")
		out <- pollResult{a, r, err, time.Since(st)}
	}()
	if !testkit.WaitFor(10*time.Second, func() bool { return len(proxy.Requests(path)) > 0 }) {
		t.Fatalf("the poll of %s did not reach the server within 10s", path)
	}
	return out
}

// pollResult is the outcome of a poll sent by pollInFlight.
type pollResult struct {
	a   pollAnswer
	r   reply
	err error
	d   time.Duration
}

// ---------------------------------------------------------------------------------------------
// Our SSE client: net/http and a line parser that keeps each frame's raw bytes.

// frame is one SSE block with its exact bytes.
type frame = testkit.Frame

var errTimeout = errors.New("timed out")

// sseStream is one open SSE response, read in the background into an unbounded list so the
// test never slows the server down.
type sseStream struct {
	URL    string
	Resp   *http.Response
	cancel context.CancelFunc

	mu     sync.Mutex
	frames []frame
	ended  bool
	err    error // why reading ended: io.EOF for a clean end of the response
	sig    chan struct{}
	done   chan struct{}
	pos    int // next frame for next()
}

// statusError is a stream request the server refused.
type statusError struct{ r reply }

func (e *statusError) Error() string { return "stream refused: " + e.r.String() }

// openSSE opens an SSE stream. A non-200 answer is returned as a *statusError.
func openSSE(rawURL string, header http.Header) (*sseStream, error) {
	return openSSEWith(&http.Client{Transport: streamTransport}, rawURL, header)
}

// openSSEWith opens an SSE stream through client (an HTTP/2 one, say).
func openSSEWith(client *http.Client, rawURL string, header http.Header) (*sseStream, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header[k] = v
	}
	// Bound the time to the response headers; the body then streams without a limit.
	timer := time.AfterFunc(15*time.Second, cancel)
	resp, err := client.Do(req)
	timer.Stop()
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		cancel()
		return nil, &statusError{reply{Status: resp.StatusCode, Header: resp.Header, Body: b}}
	}
	s := &sseStream{URL: rawURL, Resp: resp, cancel: cancel, sig: make(chan struct{}, 1), done: make(chan struct{})}
	go s.read()
	return s, nil
}

// mustSSE opens a stream, fails the test unless it is a 200, and closes it at the end.
func mustSSE(t testing.TB, rawURL string, header http.Header) *sseStream {
	t.Helper()
	s, err := openSSE(rawURL, header)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	t.Cleanup(s.Close)
	return s
}

func (s *sseStream) read() {
	defer close(s.done)
	br := bufio.NewReaderSize(s.Resp.Body, 64<<10)
	for {
		f, err := testkit.ReadFrame(br)
		if err != nil {
			s.finish(err)
			return
		}
		s.push(f)
	}
}

func (s *sseStream) push(f frame) {
	s.mu.Lock()
	s.frames = append(s.frames, f)
	s.mu.Unlock()
	select {
	case s.sig <- struct{}{}:
	default:
	}
}

func (s *sseStream) finish(err error) {
	s.mu.Lock()
	s.ended, s.err = true, err
	s.mu.Unlock()
	select {
	case s.sig <- struct{}{}:
	default:
	}
}

// Close ends the stream from the client side.
func (s *sseStream) Close() {
	s.cancel()
	s.Resp.Body.Close()
	<-s.done
}

// next returns the next frame, waiting up to d. At the end of the response it returns the
// read error (io.EOF for a clean end).
func (s *sseStream) next(d time.Duration) (frame, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.pos < len(s.frames) {
			f := s.frames[s.pos]
			s.pos++
			s.mu.Unlock()
			return f, nil
		}
		ended, err := s.ended, s.err
		s.mu.Unlock()
		if ended {
			return frame{}, err
		}
		select {
		case <-s.sig:
		case <-timer.C:
			return frame{}, errTimeout
		}
	}
}

// nextEvent is next without heartbeat (comment-only) frames.
func (s *sseStream) nextEvent(d time.Duration) (frame, error) {
	deadline := time.Now().Add(d)
	for {
		f, err := s.next(time.Until(deadline))
		if err != nil || !f.CommentOnly() {
			return f, err
		}
	}
}

func (s *sseStream) mustEvent(t testing.TB, d time.Duration) frame {
	t.Helper()
	f, err := s.nextEvent(d)
	if err != nil {
		t.Fatalf("%s: waiting for an event frame: %v", s.URL, err)
	}
	return f
}

// waitEnd waits up to d for the response to end and returns the frames not yet taken.
func (s *sseStream) waitEnd(d time.Duration) ([]frame, error) {
	select {
	case <-s.done:
	case <-time.After(d):
		return nil, errTimeout
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rest := slices.Clone(s.frames[s.pos:])
	s.pos = len(s.frames)
	return rest, nil
}

// connected is the data of the herald:connected frame.
type connected struct {
	SocketID    string `json:"socket_id"`
	SocketToken string `json:"socket_token"` // proves ownership on /v1/sockets/{id} calls
	Heartbeat   int    `json:"heartbeat"`
	Cursor      string `json:"cursor"`
}

var socketIDRe = regexp.MustCompile(`^\d+\.\d+$`)

// expectPreamble checks the first frames of every stream: `retry: <ms>` alone, then
// `event: herald:connected` without an id line, and returns the connected data.
func (s *sseStream) expectPreamble(t testing.TB) connected {
	t.Helper()
	f, err := s.next(10 * time.Second)
	if err != nil {
		t.Fatalf("%s: waiting for the retry frame: %v", s.URL, err)
	}
	if !f.HasRetry || f.HasID || f.HasData || f.Event != "" || len(f.Comments) > 0 {
		t.Fatalf("%s: first frame must be `retry: <ms>` alone, got %q", s.URL, f.Raw)
	}
	if ms, err := strconv.Atoi(f.Retry); err != nil || ms <= 0 || f.Raw != "retry: "+f.Retry+"\n\n" {
		t.Fatalf("%s: bad retry frame %q", s.URL, f.Raw)
	}
	f, err = s.next(10 * time.Second)
	if err != nil {
		t.Fatalf("%s: waiting for herald:connected: %v", s.URL, err)
	}
	if f.Event != "herald:connected" || f.HasID || !f.HasData || f.Raw != "event: herald:connected\ndata: "+f.Data+"\n\n" {
		t.Fatalf("%s: second frame must be `event: herald:connected` + one data line and no id, got %q", s.URL, f.Raw)
	}
	var c connected
	if err := strictJSON([]byte(f.Data), &c); err != nil {
		t.Fatalf("%s: herald:connected data %s: %v", s.URL, f.Data, err)
	}
	if !socketIDRe.MatchString(c.SocketID) || c.Heartbeat <= 0 || c.Cursor == "" || len(c.SocketToken) < 20 {
		t.Fatalf("%s: bad herald:connected data %s", s.URL, f.Data)
	}
	return c
}

// received is one event as a subscriber saw it.
type received struct {
	LineID string // the SSE id line
	Env    envelope
	N      int
	Raw    string
}

// eventFrame checks an event frame's exact shape ("id: …\nevent: …\ndata: <envelope>\n\n") and
// decodes it.
func eventFrame(f frame) (received, error) {
	if !f.HasID || f.Event == "" || !f.HasData {
		return received{}, fmt.Errorf("not an event frame: %q", f.Raw)
	}
	if want := "id: " + f.ID + "\nevent: " + f.Event + "\ndata: " + f.Data + "\n\n"; f.Raw != want {
		return received{}, fmt.Errorf("event frame is not exactly id/event/data lines: %q", f.Raw)
	}
	env, err := parseEnvelope([]byte(f.Data))
	if err != nil {
		return received{}, err
	}
	if env.Event != f.Event {
		return received{}, fmt.Errorf("event line %q differs from envelope event %q", f.Event, env.Event)
	}
	n, _ := seqN(env.Data)
	return received{LineID: f.ID, Env: env, N: n, Raw: f.Raw}, nil
}

// mustEvents reads n event frames (herald:* frames are an error).
func (s *sseStream) mustEvents(t testing.TB, n int, d time.Duration) []received {
	t.Helper()
	deadline := time.Now().Add(d)
	out := make([]received, 0, n)
	for len(out) < n {
		f, err := s.nextEvent(time.Until(deadline))
		if err != nil {
			t.Fatalf("%s: got %d of %d events: %v", s.URL, len(out), n, err)
		}
		r, err := eventFrame(f)
		if err != nil {
			t.Fatalf("%s: event %d: %v", s.URL, len(out), err)
		}
		if strings.HasPrefix(r.Env.Event, "herald:") {
			t.Fatalf("%s: unexpected %s frame after %d events: %q", s.URL, r.Env.Event, len(out), f.Raw)
		}
		out = append(out, r)
	}
	return out
}

// expectQuiet checks that no event frame arrives within d (heartbeats are fine).
func (s *sseStream) expectQuiet(t testing.TB, d time.Duration) {
	t.Helper()
	f, err := s.nextEvent(d)
	if err == nil {
		t.Fatalf("%s: want no further event, got %q", s.URL, f.Raw)
	}
	if !errors.Is(err, errTimeout) {
		t.Fatalf("%s: stream ended: %v", s.URL, err)
	}
}

// lastEventHeader is a Last-Event-ID header.
func lastEventHeader(id string) http.Header {
	h := http.Header{}
	h.Set("Last-Event-ID", id)
	return h
}

// ---------------------------------------------------------------------------------------------
// A loopback TCP proxy that can cut or mute the connections it carries (testkit.Proxy).

func startProxy(t testing.TB, targetAddr string) *testkit.Proxy {
	t.Helper()
	p, err := testkit.StartProxy(targetAddr)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// ---------------------------------------------------------------------------------------------
// Redis for the multi-node tests

// testRedis returns the URL of the Redis the tests share: HERALD_TEST_REDIS_URL, or an
// ephemeral redis-server started on a free loopback port.
func testRedis(t testing.TB) string {
	t.Helper()
	u, err := testkit.SharedRedisURL()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// startPrivateRedis starts a redis-server this test alone owns, so it can kill, hang and
// restart it; args are extra redis-server options.
func startPrivateRedis(t testing.TB, args ...string) *testkit.Redis {
	t.Helper()
	r, err := testkit.StartRedis(args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// restart starts a private Redis again after it was stopped.
func restart(t testing.TB, r *testkit.Redis) {
	t.Helper()
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------------------------
// Small helpers

// uniqueChannel returns a channel name unique to this run.
func uniqueChannel(prefix string) string { return prefix + "-" + randomSuffix() }
