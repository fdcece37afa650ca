package server

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/test/testkit"
)

func TestAcceptEncodingNegotiation(t *testing.T) {
	for _, tc := range []struct {
		lines    []string // nil: no header at all
		noBrotli bool
		want     coding
		refused  bool
	}{
		{lines: nil, want: codingIdentity},
		{lines: []string{""}, want: codingIdentity},
		{lines: []string{"gzip"}, want: codingGzip},
		{lines: []string{"br"}, want: codingBrotli},
		{lines: []string{"gzip, deflate, br, zstd"}, want: codingGzip},
		{lines: []string{"gzip;q=0.8, br;q=0.8"}, want: codingGzip},
		{lines: []string{"gzip;q=0.8, br"}, want: codingBrotli},
		{lines: []string{"br;q=0.5, gzip"}, want: codingGzip},
		{lines: []string{"GZip"}, want: codingGzip},
		{lines: []string{"x-gzip"}, want: codingGzip},
		{lines: []string{"deflate, compress, zstd"}, want: codingIdentity},
		{lines: []string{"*"}, want: codingGzip},
		{lines: []string{"*, gzip;q=0"}, want: codingBrotli},
		{lines: []string{"*;q=0.5, gzip"}, want: codingGzip},
		{lines: []string{"*, br;q=0"}, want: codingGzip},
		{lines: []string{"br;q=0, gzip;q=0"}, want: codingIdentity},
		{lines: []string{"gzip, gzip;q=0"}, want: codingIdentity},
		{lines: []string{"identity;q=0"}, want: codingIdentity, refused: true},
		{lines: []string{"identity;q=0, gzip"}, want: codingGzip, refused: true},
		{lines: []string{"*;q=0"}, want: codingIdentity, refused: true},
		{lines: []string{"*;q=0, identity"}, want: codingIdentity},
		{lines: []string{"*;q=0, gzip;q=0.1"}, want: codingGzip, refused: true},
		{lines: []string{"gzip;q=0.5, identity"}, want: codingIdentity},
		{lines: []string{"gzip, identity;q=0.5"}, want: codingGzip},
		{lines: []string{"gzip;q=1.0"}, want: codingGzip},
		{lines: []string{"gzip;q=1.001"}, want: codingIdentity},
		{lines: []string{"gzip;q=0.0001"}, want: codingIdentity},
		{lines: []string{"gzip;q=0.000"}, want: codingIdentity},
		{lines: []string{"gzip;q="}, want: codingIdentity},
		{lines: []string{"gzip;q=.5"}, want: codingIdentity},
		{lines: []string{"gzip;q=abc, br;q=0.1"}, want: codingBrotli},
		{lines: []string{"gzip ; Q=0.3 ,\tbr;q=0.2"}, want: codingGzip},
		{lines: []string{"gzip;level=1;q=0.4, br;q=0.3"}, want: codingGzip},
		{lines: []string{"gzip;q=0.3", "br;q=0.2"}, want: codingGzip},
		{lines: []string{"br", "br;q=0"}, want: codingIdentity},
		{lines: []string{",,, ;q=1, gzip"}, want: codingGzip},
		{lines: []string{"br"}, noBrotli: true, want: codingIdentity},
		{lines: []string{"br, gzip;q=0.1"}, noBrotli: true, want: codingGzip},
		{lines: []string{"*"}, noBrotli: true, want: codingGzip},
	} {
		c, refused := parseAcceptEncoding(tc.lines).choose(!tc.noBrotli)
		if c != tc.want || refused != tc.refused {
			t.Errorf("%q (brotli %v): %v, identity refused %v; want %v, %v", tc.lines, !tc.noBrotli, c, refused, tc.want, tc.refused)
		}
	}
}

// qValueGrammar is RFC 9110's qvalue.
var qValueGrammar = regexp.MustCompile(`^(0(\.[0-9]{0,3})?|1(\.0{0,3})?)$`)

func FuzzAcceptEncoding(f *testing.F) {
	for _, s := range []string{"", "gzip", "br;q=0.5, gzip;q=0.5", "*;q=0", "identity;q=0, *", "x-gzip;q=1.000",
		"gzip;q=0.999;foo=bar", " BR ; Q = 0.1 ", "gzip,,br", "0.5", "1.000", "gzip;q=1.0001", "*;q=0.001, identity;q=0"} {
		f.Add(s, true)
	}
	upper := func(s string) string { // ASCII only: names are compared that way
		return strings.Map(func(r rune) rune {
			if 'a' <= r && r <= 'z' {
				return r - 'a' + 'A'
			}
			return r
		}, s)
	}
	f.Fuzz(func(t *testing.T, h string, brotliOK bool) {
		// The weight parser, against the grammar and a float reading.
		if q, ok := parseQValue(h); ok != qValueGrammar.MatchString(h) {
			t.Fatalf("parseQValue(%q) ok=%v, grammar says %v", h, ok, !ok)
		} else if ok {
			v, err := strconv.ParseFloat(h, 64)
			if err != nil || int(v*1000+0.5) != q || q < 0 || q > 1000 {
				t.Fatalf("parseQValue(%q) = %d", h, q)
			}
		}

		c, refused := parseAcceptEncoding([]string{h}).choose(brotliOK)
		if c2, refused2 := parseAcceptEncoding([]string{upper(h)}).choose(brotliOK); c2 != c || refused2 != refused {
			t.Fatalf("%q gives %v/%v, its upper case %v/%v", h, c, refused, c2, refused2)
		}
		if c == codingBrotli && !brotliOK {
			t.Fatalf("%q: brotli chosen where it is not offered", h)
		}
		lower := strings.ToLower(h)
		if c != codingIdentity && !strings.Contains(lower, "gzip") && !strings.Contains(lower, "br") && !strings.Contains(h, "*") {
			t.Fatalf("%q: %v chosen, which the header does not name", h, c)
		}
		if refused && !strings.Contains(lower, "q") {
			t.Fatalf("%q: identity refused without a weight", h)
		}
		// A refusal appended anywhere holds: the lowest weight of a coding wins.
		if c != codingIdentity {
			if c2, _ := parseAcceptEncoding([]string{h, c.String() + ";q=0"}).choose(brotliOK); c2 == c {
				t.Fatalf("%q + %s;q=0: still %v", h, c, c2)
			}
		}
		// Splitting the header over field lines changes nothing.
		if parts := strings.Split(h, ","); len(parts) > 1 {
			c2, refused2 := parseAcceptEncoding(parts).choose(brotliOK)
			if c2 != c || refused2 != refused {
				t.Fatalf("%q over %d lines: %v/%v, in one %v/%v", h, len(parts), c2, refused2, c, refused)
			}
		}
	})
}

// rawGet sends a GET (or HEAD) with the given Accept-Encoding and returns the answer with its
// body as it came over the wire: the client decodes nothing.
func rawGet(t *testing.T, method, rawURL, acceptEncoding string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, rawURL, nil)
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if method != http.MethodHead && resp.ContentLength >= 0 && resp.ContentLength != int64(len(body)) {
		t.Fatalf("Content-Length %d, body %d bytes", resp.ContentLength, len(body))
	}
	return resp, body
}

// decoded is body decoded by the answer's Content-Encoding.
func decoded(t *testing.T, resp *http.Response, body []byte) []byte {
	t.Helper()
	var r io.Reader
	switch ce := resp.Header.Get("Content-Encoding"); ce {
	case "":
		return body
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	default:
		t.Fatalf("Content-Encoding %q", ce)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", resp.Header.Get("Content-Encoding"), err)
	}
	return out
}

func hasVary(h http.Header) bool {
	for _, v := range h.Values("Vary") {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "Accept-Encoding") {
				return true
			}
		}
	}
	return false
}

var someWords = strings.Fields("the event was sent to every socket of the channel and each one read it once in order " +
	"after its cursor while the node kept a bounded queue for slow readers who fell behind")

// jsonBody is n bytes of JSON text that compresses about as well as chat messages do.
func jsonBody(n int) []byte {
	b := []byte(`{"text":"`)
	for i := 0; len(b) < n-2; i++ {
		b = append(b, someWords[i*7919%10007%len(someWords)]...)
		b = strconv.AppendInt(append(b, ' '), int64(i*31%97), 10)
		b = append(b, ' ')
	}
	return append(b[:n-2], `"}`...)
}

// compressEcho serves the middleware alone over a few handlers that answer in every way the
// API does.
func compressEcho(t *testing.T, minBytes int) *httptest.Server {
	e := echo.New()
	e.HideBanner = true
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, DisablePrintStack: true}))
	e.Use(compressMiddleware(minBytes))
	e.GET("/body/:n", func(c echo.Context) error {
		n, _ := strconv.Atoi(c.Param("n"))
		return c.JSONBlob(http.StatusOK, jsonBody(n))
	})
	e.GET("/chunks/:n", func(c echo.Context) error { // n bytes in writes of 100
		n, _ := strconv.Atoi(c.Param("n"))
		body := jsonBody(n)
		c.Response().Header().Set("Content-Type", "application/json")
		c.Response().WriteHeader(http.StatusAccepted)
		for len(body) > 0 {
			k := min(100, len(body))
			if _, err := c.Response().Write(body[:k]); err != nil {
				return err
			}
			body = body[k:]
		}
		return nil
	})
	e.GET("/length/:n", func(c echo.Context) error { // a handler that states its length
		n, _ := strconv.Atoi(c.Param("n"))
		c.Response().Header().Set("Content-Length", strconv.Itoa(n))
		return c.Blob(http.StatusOK, "application/json", jsonBody(n))
	})
	e.GET("/flush/:a/:b", func(c echo.Context) error { // a bytes, a flush, b bytes
		a, _ := strconv.Atoi(c.Param("a"))
		b, _ := strconv.Atoi(c.Param("b"))
		body := jsonBody(a + b)
		c.Response().Write(body[:a])
		c.Response().Flush()
		c.Response().Write(body[a:])
		return nil
	})
	e.GET("/error/:n", func(c echo.Context) error {
		n, _ := strconv.Atoi(c.Param("n"))
		return echo.NewHTTPError(http.StatusBadRequest, string(jsonBody(n)))
	})
	e.GET("/status/:code", func(c echo.Context) error {
		code, _ := strconv.Atoi(c.Param("code"))
		c.Response().Header().Set("ETag", `"v1"`)
		return c.NoContent(code)
	})
	e.HEAD("/body/:n", func(c echo.Context) error {
		n, _ := strconv.Atoi(c.Param("n"))
		c.Response().Header().Set("Content-Length", strconv.Itoa(n))
		return c.NoContent(http.StatusOK)
	})
	e.GET("/panic/:n", func(c echo.Context) error {
		n, _ := strconv.Atoi(c.Param("n"))
		c.Response().Write(jsonBody(n))
		panic("handler failed")
	})
	ts := httptest.NewServer(e)
	t.Cleanup(ts.Close)
	return ts
}

func TestCompressThreshold(t *testing.T) {
	ts := compressEcho(t, 1024)
	for _, tc := range []struct {
		path, accept string
		wantStatus   int
		wantCoding   string
		wantBody     []byte
	}{
		{"/body/100", "gzip, br", 200, "", jsonBody(100)},
		{"/body/1023", "gzip, br", 200, "", jsonBody(1023)},
		{"/body/1024", "gzip, br", 200, "gzip", jsonBody(1024)},
		{"/body/1024", "gzip;q=0.9, br", 200, "br", jsonBody(1024)},
		{"/body/1024", "gzip", 200, "gzip", jsonBody(1024)},
		{"/body/50000", "br;q=0.9, gzip", 200, "gzip", jsonBody(50000)},
		{"/body/50000", "", 200, "", jsonBody(50000)},
		{"/body/50000", "identity", 200, "", jsonBody(50000)},
		{"/body/50000", "gzip;q=0, br;q=0", 200, "", jsonBody(50000)},
		{"/body/10", "identity;q=0, gzip", 200, "gzip", jsonBody(10)},
		{"/chunks/1000", "gzip", 202, "", jsonBody(1000)},
		{"/chunks/5000", "gzip", 202, "gzip", jsonBody(5000)},
		{"/chunks/5000", "br", 202, "br", jsonBody(5000)},
		{"/length/5000", "gzip", 200, "gzip", jsonBody(5000)},
		{"/length/500", "gzip", 200, "", jsonBody(500)},
		{"/flush/100/5000", "gzip", 200, "", jsonBody(5100)},
		{"/flush/2000/5000", "br", 200, "br", jsonBody(7000)},
		{"/error/3000", "gzip", 400, "gzip", nil},
		{"/error/10", "gzip", 400, "", nil},
		{"/panic/10", "gzip", 500, "", nil},
	} {
		resp, raw := rawGet(t, http.MethodGet, ts.URL+tc.path, tc.accept)
		what := tc.path + " with Accept-Encoding " + strconv.Quote(tc.accept)
		if resp.StatusCode != tc.wantStatus {
			t.Errorf("%s: status %d, want %d", what, resp.StatusCode, tc.wantStatus)
		}
		if got := resp.Header.Get("Content-Encoding"); got != tc.wantCoding {
			t.Errorf("%s: Content-Encoding %q, want %q", what, got, tc.wantCoding)
		}
		if !hasVary(resp.Header) {
			t.Errorf("%s: no Vary: Accept-Encoding (%q)", what, resp.Header.Values("Vary"))
		}
		body := decoded(t, resp, raw)
		switch {
		case tc.wantBody != nil && !bytes.Equal(bytes.TrimSuffix(body, []byte("\n")), tc.wantBody):
			t.Errorf("%s: decoded body of %d bytes differs from the %d sent", what, len(body), len(tc.wantBody))
		case tc.wantBody == nil && !json.Valid(body):
			t.Errorf("%s: error body is not JSON: %.100q", what, body)
		}
		if tc.wantCoding != "" && len(body) >= 1024 && len(raw) >= len(body)/2 {
			t.Errorf("%s: %d bytes on the wire for %d", what, len(raw), len(body))
		}
	}
}

func TestCompressLeavesBodilessAnswersAlone(t *testing.T) {
	ts := compressEcho(t, 1)
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/status/204", 204},
		{http.MethodGet, "/status/304", 304},
		{http.MethodGet, "/status/200", 200},
		{http.MethodHead, "/body/5000", 200},
	} {
		resp, raw := rawGet(t, tc.method, ts.URL+tc.path, "gzip, br")
		what := tc.method + " " + tc.path
		if resp.StatusCode != tc.status || len(raw) != 0 {
			t.Errorf("%s: %d with %d bytes, want %d and none", what, resp.StatusCode, len(raw), tc.status)
		}
		if ce := resp.Header.Get("Content-Encoding"); ce != "" {
			t.Errorf("%s: Content-Encoding %q", what, ce)
		}
		if !hasVary(resp.Header) {
			t.Errorf("%s: no Vary: Accept-Encoding", what)
		}
	}
	// A HEAD answer keeps the length its handler stated.
	if resp, _ := rawGet(t, http.MethodHead, ts.URL+"/body/5000", "gzip"); resp.ContentLength != 5000 {
		t.Errorf("HEAD: Content-Length %d, want 5000", resp.ContentLength)
	}
	if resp, _ := rawGet(t, http.MethodGet, ts.URL+"/status/304", "gzip"); resp.Header.Get("ETag") != `"v1"` {
		t.Errorf("304: ETag %q", resp.Header.Get("ETag"))
	}
}

// TestCompressSkipsExactlyTheStreams: the middleware leaves the SSE routes alone, and only
// them, as the router has them.
func TestCompressSkipsExactlyTheStreams(t *testing.T) {
	_, srv := newTestServer(t, Config{})
	streams := 0
	for _, r := range srv.echo.Routes() {
		isStream := strings.HasSuffix(r.Name, ".channelStream-fm") || strings.HasSuffix(r.Name, ".multiStream-fm")
		if isStream {
			streams++
		}
		if compressSkips(r.Method, r.Path) != isStream {
			t.Errorf("%s %s (%s): skipped %v", r.Method, r.Path, r.Name, !isStream)
		}
	}
	if streams != 2 {
		t.Fatalf("%d stream routes, want 2", streams)
	}
}

// appendEvents appends n events of about size bytes of data to channel ch.
func appendEvents(t testing.TB, srv *Server, ch string, n, size int) {
	t.Helper()
	st := srv.apps.byID("default").Hub.Store()
	for i := range n {
		data, _ := json.Marshal(map[string]any{"n": i, "text": string(jsonBody(size))[9 : size-2]})
		if _, err := st.Append(context.Background(), store.AppendRequest{Channel: ch, Name: "Tick", Data: data}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPollAnswerCompressed(t *testing.T) {
	ts, srv := newTestServer(t, Config{})
	appendEvents(t, srv, "hist", 20, 200)
	u := ts.URL + "/v1/channels/hist/poll?since=beginning&timeout=0"
	resp, plain := rawGet(t, http.MethodGet, u, "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "" || len(plain) < 4000 || !json.Valid(plain) {
		t.Fatalf("plain poll: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Encoding"), len(plain))
	}
	for _, coding := range []string{"gzip", "br"} {
		resp, raw := rawGet(t, http.MethodGet, u, coding)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != coding || !hasVary(resp.Header) {
			t.Fatalf("%s poll: %d, Content-Encoding %q, Vary %q", coding, resp.StatusCode, resp.Header.Get("Content-Encoding"), resp.Header.Values("Vary"))
		}
		if got := decoded(t, resp, raw); !bytes.Equal(got, plain) {
			t.Fatalf("%s poll decodes to\n%s\nwant\n%s", coding, got, plain)
		}
		if len(raw) >= len(plain)/2 {
			t.Errorf("%s poll: %d bytes for %d", coding, len(raw), len(plain))
		}
	}
	// The head-only answer is small: sent as it is, still with Vary.
	resp, raw := rawGet(t, http.MethodGet, ts.URL+"/v1/channels/hist/poll", "gzip, br")
	if resp.Header.Get("Content-Encoding") != "" || !hasVary(resp.Header) || !json.Valid(raw) {
		t.Fatalf("head poll: Content-Encoding %q, Vary %q, body %s", resp.Header.Get("Content-Encoding"), resp.Header.Values("Vary"), raw)
	}
}

// TestWaitingPollCompressed: a poll that waits for its event is answered compressed once the
// event comes; nothing is sent before it.
func TestWaitingPollCompressed(t *testing.T) {
	ts, srv := newTestServer(t, Config{})
	var head struct{ Cursor string }
	if r := call(t, "GET", ts.URL+"/v1/poll?channel=wait", nil, ""); json.Unmarshal([]byte(r.body), &head) != nil {
		t.Fatalf("head: %d %s", r.status, r.body)
	}
	type answer struct {
		resp *http.Response
		raw  []byte
	}
	got := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/v1/poll?channel=wait&timeout=30&cursor="+url.QueryEscape(head.Cursor), nil)
		req.Header.Set("Accept-Encoding", "gzip")
		client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
		defer client.CloseIdleConnections()
		resp, err := client.Do(req)
		if err != nil {
			got <- answer{}
			return
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		got <- answer{resp, raw}
	}()
	// The poll is counted before it waits. (Were the event appended before its socket opened,
	// the poll's cursor would still find it in the log.)
	if !testkit.WaitFor(10*time.Second, func() bool { return srv.census.node.by[transportPoll].Load() > 0 }) {
		t.Fatal("the poll never arrived")
	}
	appendEvents(t, srv, "wait", 1, 3000)
	a := <-got
	if a.resp == nil || a.resp.StatusCode != http.StatusOK || a.resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("waiting poll: %+v", a.resp)
	}
	var ans struct {
		Events []struct{ Data struct{ N int } }
	}
	if err := json.Unmarshal(decoded(t, a.resp, a.raw), &ans); err != nil || len(ans.Events) != 1 {
		t.Fatalf("waiting poll: %v, %d events", err, len(ans.Events))
	}
}

// frameStream reads a stream's SSE frames, each with the blank line that ends it, exactly as
// they were written: after gzip decoding when the stream is compressed.
type frameStream struct {
	resp   *http.Response
	frames chan string
	err    chan error // the reader's end: nil for a clean end of the body
}

func openFrames(t *testing.T, client *http.Client, rawURL, acceptEncoding string) *frameStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	req.Header.Set("Accept-Encoding", acceptEncoding)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", rawURL, resp.StatusCode)
	}
	fs := &frameStream{resp: resp, frames: make(chan string, 100), err: make(chan error, 1)}
	go func() {
		defer resp.Body.Close()
		defer close(fs.frames)
		var body io.Reader = resp.Body
		if resp.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				fs.err <- err
				return
			}
			body = zr
		}
		br := bufio.NewReader(body)
		var frame strings.Builder
		for {
			line, err := br.ReadString('\n')
			frame.WriteString(line)
			if line == "\n" {
				fs.frames <- frame.String()
				frame.Reset()
			}
			if err != nil {
				if err == io.EOF && frame.Len() == 0 {
					err = nil
				}
				fs.err <- err
				return
			}
		}
	}()
	return fs
}

func (fs *frameStream) next(t *testing.T) string {
	t.Helper()
	select {
	case f, ok := <-fs.frames:
		if !ok {
			t.Fatalf("stream ended: %v", <-fs.err)
		}
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no frame within 10s")
	}
	return ""
}

// hello reads a stream's first two frames, retry and herald:connected.
func (fs *frameStream) hello(t *testing.T) {
	t.Helper()
	if f := fs.next(t); !strings.HasPrefix(f, "retry: ") {
		t.Fatalf("first frame %q", f)
	}
	if f := fs.next(t); !strings.HasPrefix(f, "event: herald:connected\ndata: {") {
		t.Fatalf("second frame %q", f)
	}
}

// TestSSECompression: with SSECompression on, a stream that accepts gzip decodes to exactly the
// frames of a plain one, and each event can be read as soon as it is sent — the next one is
// published only after it was read — on the hijacked HTTP/1.1 path and on HTTP/2 alike.
func TestSSECompression(t *testing.T) {
	ts, _ := newTestServer(t, Config{SSECompression: true})
	h2 := httptest.NewUnstartedServer(ts.Config.Handler)
	h2.EnableHTTP2 = true
	h2.StartTLS()
	t.Cleanup(h2.Close)
	tok := mint(t, TokenSpec{Subject: "u", Publish: []string{"*"}, TTL: time.Hour})

	for _, path := range []string{"/v1/channels/news/events", "/v1/stream?channel=news&channel=other"} {
		plain := openFrames(t, http.DefaultClient, ts.URL+path, "identity")
		h1 := openFrames(t, http.DefaultClient, ts.URL+path, "br;q=1, gzip;q=0.5")
		h2s := openFrames(t, h2.Client(), h2.URL+path, "gzip")
		if h2s.resp.ProtoMajor != 2 {
			t.Fatalf("HTTP/%d, want 2", h2s.resp.ProtoMajor)
		}
		if ce := plain.resp.Header.Get("Content-Encoding"); ce != "" || !hasVary(plain.resp.Header) {
			t.Fatalf("plain stream: Content-Encoding %q, Vary %q", ce, plain.resp.Header.Values("Vary"))
		}
		for name, fs := range map[string]*frameStream{"HTTP/1.1": h1, "HTTP/2": h2s} {
			if ce := fs.resp.Header.Get("Content-Encoding"); ce != "gzip" || !hasVary(fs.resp.Header) {
				t.Fatalf("%s: Content-Encoding %q, Vary %q", name, ce, fs.resp.Header.Values("Vary"))
			}
		}
		for _, fs := range []*frameStream{plain, h1, h2s} {
			fs.hello(t)
		}
		for i := range 5 {
			publishVia(t, ts.URL, tok, "news", fmt.Sprintf(`{"n":%d,"text":%q}`, i, strings.Repeat("news ", i*40)))
			want := plain.next(t)
			if !strings.Contains(want, fmt.Sprintf(`"n":%d`, i)) {
				t.Fatalf("plain frame %d: %q", i, want)
			}
			for name, fs := range map[string]*frameStream{"HTTP/1.1": h1, "HTTP/2": h2s} {
				if got := fs.next(t); got != want {
					t.Fatalf("%s %s frame %d:\n%q\nwant\n%q", path, name, i, got, want)
				}
			}
		}
	}
}

// TestSSECompressionHeartbeatAndEnd: heartbeats are flushed like events, and a stream that
// ends (here at its token's expiry) ends its gzip member, CRC and length checked by the reader.
func TestSSECompressionHeartbeatAndEnd(t *testing.T) {
	ts, _ := newTestServer(t, Config{SSECompression: true, Heartbeat: time.Second})
	tok := mint(t, TokenSpec{Subject: "u", Subscribe: []string{"private-*"}, TTL: 2 * time.Second})
	fs := openFrames(t, http.DefaultClient, ts.URL+"/v1/channels/private-a/events?token="+tok, "gzip")
	if fs.resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", fs.resp.Header.Get("Content-Encoding"))
	}
	fs.hello(t)
	if f := fs.next(t); f != ": ping\n\n" {
		t.Fatalf("frame %q, want the heartbeat", f)
	}
	var last string
	for f := range fs.frames {
		last = f
	}
	if err := <-fs.err; err != nil {
		t.Fatalf("compressed stream did not end cleanly: %v", err)
	}
	if last != string(tokenExpiredFrame) {
		t.Fatalf("last frame %q", last)
	}
}

// TestSSECompressionOff: by default a stream is never compressed, whatever the client accepts.
func TestSSECompressionOff(t *testing.T) {
	ts, _ := newTestServer(t, Config{})
	fs := openFrames(t, http.DefaultClient, ts.URL+"/v1/channels/x/events", "gzip, br")
	if ce := fs.resp.Header.Get("Content-Encoding"); ce != "" {
		t.Fatalf("Content-Encoding %q", ce)
	}
	fs.hello(t)
}

func TestSSEGzipDictionary(t *testing.T) {
	z := newSSEGzip()
	var want []byte
	for _, n := range []int{10, sseDictBytes - 5, 3, sseDictBytes + 100, 1, 0, 700} {
		b := bytes.Repeat([]byte{byte('a' + n%26)}, n)
		z.remember(b)
		want = append(want, b...)
		if len(want) > sseDictBytes {
			want = want[len(want)-sseDictBytes:]
		}
		if !bytes.Equal(z.dict, want) || cap(z.dict) != sseDictBytes {
			t.Fatalf("after %d bytes: dictionary of %d bytes (cap %d), want the last %d", n, len(z.dict), cap(z.dict), len(want))
		}
	}
}
