package test

import (
	"bufio"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/test/testkit"
)

// Hostile input from the outside: bodies that never arrive, bytes that are not text, numbers
// that overflow, headers past the limit. Each is refused with a clear answer, holds nothing for
// longer than its limit, and leaves the traffic beside it alone.

// readAnswer reads one HTTP answer from c within d.
func readAnswer(c net.Conn, d time.Duration) (*http.Response, []byte, error) {
	c.SetReadDeadline(time.Now().Add(d))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return resp, nil, err
	}
	// Whatever follows must be the end of the connection.
	if n, err := br.Read(make([]byte, 1)); n > 0 || err == nil {
		return resp, b, fmt.Errorf("the connection carried more bytes after the answer")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return resp, b, fmt.Errorf("the connection stayed open after the answer: %w", err)
	}
	return resp, b, nil
}

// goroutines reads the server's goroutine count from its pprof listener.
func goroutines(t *testing.T, debugAddr string) int {
	t.Helper()
	r := mustDo(t, "GET", "http://"+debugAddr+"/debug/pprof/goroutine?debug=1", nil, nil)
	first, _, _ := strings.Cut(string(r.Body), "\n")
	n, err := strconv.Atoi(strings.TrimPrefix(first, "goroutine profile: total "))
	if err != nil {
		t.Fatalf("goroutine count from %q: %v", first, err)
	}
	return n
}

// TestBodyDeadline: requests that declare a 60,000-byte body and send one byte hold nothing
// past --body-timeout. Without a token they are refused at once with 401 and the connection
// closed, instead of net/http draining the body first; with one, the body's deadline ends them
// with 408 body_timeout. Publishing and streaming on the same node go on meanwhile, and the
// server's goroutines come back to where they were.
func TestBodyDeadline(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--body-timeout", "1s"}})
	debug := strings.TrimPrefix(h.Admin, "http://") // the admin listener serves the profiler
	tok := h.Publisher(t)
	ch := uniqueChannel("body")
	s := mustSSE(t, h.Base+eventsPath(ch), nil)
	s.expectPreamble(t)
	testkit.WaitFor(5*time.Second, func() bool { _, err := do("GET", "http://"+debug+"/debug/pprof/", nil, nil); return err == nil })
	before := goroutines(t, debug)

	const each = 20
	type outcome struct {
		what   string
		status int
		body   string
		err    error
		took   time.Duration
	}
	results := make(chan outcome, 3*each)
	var wg sync.WaitGroup
	start := func(what, head string, trickle bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			c, err := net.DialTimeout("tcp", h.Addr, 5*time.Second)
			if err != nil {
				results <- outcome{what: what, err: err}
				return
			}
			defer c.Close()
			c.Write([]byte(head + "{"))
			if trickle {
				// One byte every 300 ms: never enough to finish, always enough to look alive.
				go func() {
					tick := time.NewTicker(300 * time.Millisecond)
					defer tick.Stop()
					for i := 0; i < 40; i++ {
						<-tick.C
						if _, err := c.Write([]byte(" ")); err != nil {
							return
						}
					}
				}()
			}
			resp, body, err := readAnswer(c, 15*time.Second)
			o := outcome{what: what, err: err, took: time.Since(t0), body: string(body)}
			if resp != nil {
				o.status = resp.StatusCode
			}
			results <- o
		}()
	}
	path := eventsPath(uniqueChannel("slow"))
	noToken := "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
	withToken := "POST " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
	tooBig := "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 600000\r\n\r\n"
	for i := 0; i < each; i++ {
		start("no token", noToken, false)
		start("token, trickling", withToken, true)
		start("over the size limit", tooBig, false)
	}

	// Normal traffic on the same node while those connections are held.
	ids := h.publishN(t, tok, ch, "Tick", 0, 20)
	got := s.mustEvents(t, 20, 10*time.Second)
	if strings.Join(ids, ",") != strings.Join(envIDs(got), ",") {
		t.Fatalf("events beside the slow bodies: published %v, received %v", ids, envIDs(got))
	}

	wg.Wait()
	close(results)
	for o := range results {
		want, code := http.StatusUnauthorized, "token_missing"
		switch o.what {
		case "token, trickling":
			want, code = http.StatusRequestTimeout, "body_timeout"
		case "over the size limit":
			want, code = http.StatusRequestEntityTooLarge, "payload_too_large"
		}
		if o.err != nil || o.status != want || !strings.Contains(o.body, `"code":"`+code+`"`) {
			t.Errorf("%s: want %d %s and the connection closed, got %d %s (%v)", o.what, want, code, o.status, o.body, o.err)
		}
		// The answer itself must not wait for the body (no token, too big); the timeout
		// bounds the rest. Generous bounds: these are limits, not speed measurements.
		if o.what != "token, trickling" && o.took > 5*time.Second {
			t.Errorf("%s: answered after %v: the refusal waited for the body", o.what, o.took)
		}
	}
	var after int
	if !testkit.WaitFor(10*time.Second, func() bool { after = goroutines(t, debug); return after <= before+2 }) {
		t.Errorf("goroutines: %d before the slow bodies, %d after they were cut off", before, after)
	}

	// A keep-alive connection whose body arrived may then wait longer than the body timeout:
	// the deadline ends with the body.
	c, err := net.DialTimeout("tcp", h.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := `{"event":"Tick","data":{"n":99}}`
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", eventsPath(ch), tok, len(body), body)
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("publish on a raw keep-alive connection: %v %v", resp, err)
	}
	var pr publishReply
	json.NewDecoder(resp.Body).Decode(&pr)
	resp.Body.Close()
	fmt.Fprintf(c, "GET %s?cursor=%s&timeout=3 HTTP/1.1\r\nHost: x\r\n\r\n", pollPath(ch), pr.ID)
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a 3 s long-poll after a body on the same connection (body timeout 1 s): %v %v", resp, err)
	}
	resp.Body.Close()
}

// pusherSigned is a Pusher HTTP API request signed as the Pusher libraries sign it.
func pusherSigned(app pusherApp, method, path string, body []byte) (string, http.Header) {
	return pusherSignedQuery(app, method, path, nil, body)
}

// pusherSignedQuery is pusherSigned with query parameters of the request's own (info=…).
func pusherSignedQuery(app pusherApp, method, path string, params url.Values, body []byte) (string, http.Header) {
	q := url.Values{}
	for k, v := range params {
		q[k] = v
	}
	q.Set("auth_key", app.Key)
	q.Set("auth_timestamp", strconv.FormatInt(time.Now().Unix(), 10))
	q.Set("auth_version", "1.0")
	if len(body) > 0 {
		sum := md5.Sum(body)
		q.Set("body_md5", hex.EncodeToString(sum[:]))
	}
	mac := hmac.New(sha256.New, []byte(app.Secret))
	mac.Write([]byte(method + "\n" + path + "\n" + q.Encode()))
	q.Set("auth_signature", hex.EncodeToString(mac.Sum(nil)))
	return path + "?" + q.Encode(), http.Header{"Content-Type": {"application/json"}}
}

// TestInvalidUTF8Refused: JSON bodies that are not UTF-8 text — raw 0xFF bytes, or \u escapes
// of unpaired surrogates that encoding/json would turn into U+FFFD — are refused with
// 400 invalid_json on every route that takes JSON, and nothing reaches a subscriber.
func TestInvalidUTF8Refused(t *testing.T) {
	t.Parallel()
	cfg, app := writePusherConfig(t)
	h := startHerald(t, heraldOpts{args: []string{"--config", cfg, "--client-events", "all"}})
	tok := tokenClaims(t, h.Secret, map[string]any{"sub": "u", "app": app.ID, "exp": time.Now().Add(time.Hour).Unix(),
		"herald.subscribe": []string{"*"}, "herald.publish": []string{"*"}})
	ch := uniqueChannel("private-utf8")
	s := mustSSE(t, h.Base+"/v1/stream?token="+tok, nil)
	hello := s.expectPreamble(t)
	sockHdr := socketHeader(hello.SocketToken)
	if r := mustDo(t, "POST", h.Base+"/v1/sockets/"+hello.SocketID+"/subscriptions", sockHdr, strings.NewReader(`{"channel":"`+ch+`"}`)); r.Status != 200 {
		t.Fatalf("subscribe: %s", r)
	}
	if f := s.mustEvent(t, 10*time.Second); f.Event != "herald:subscription_succeeded" {
		t.Fatalf("want the subscription notice, got %q", f.Raw)
	}
	jsonHdr := bearerHeader(tok)
	jsonHdr.Set("Content-Type", "application/json")
	for _, bad := range []struct{ what, body string }{
		{"raw invalid bytes", "{\"event\":\"\xff\xfe\",\"data\":\"\xff\"}"},
		{"invalid bytes in data only", "{\"event\":\"Ok\",\"data\":\"\xc3\x28\"}"},
		{"lone high surrogate in a name", `{"event":"\ud800","data":1}`},
		{"lone low surrogate in data", `{"event":"Ok","data":"\udc00"}`},
	} {
		for _, route := range []struct {
			name, method, path string
			header             http.Header
			body               string
		}{
			{"publish", "POST", eventsPath(ch), jsonHdr, bad.body},
			{"test", "POST", "/v1/test", jsonHdr, strings.Replace(bad.body, `"event"`, `"channel":"`+ch+`","message"`, 1)},
			{"whisper", "POST", "/v1/channels/" + ch + "/whispers?socket_id=" + hello.SocketID, sockHdr, strings.Replace(bad.body, `"event":"`, `"event":"client-`, 1)},
			{"subscription", "POST", "/v1/sockets/" + hello.SocketID + "/subscriptions", sockHdr, strings.Replace(bad.body, `"event"`, `"channel":"`+ch+`","auth"`, 1)},
		} {
			r := mustDo(t, route.method, h.Base+route.path, route.header, strings.NewReader(route.body))
			expectAPIError(t, bad.what+" → "+route.name, r, http.StatusBadRequest, "invalid_json")
		}
		// The Pusher HTTP API, signed over the very same bytes.
		for _, p := range []struct{ path, body string }{
			{"/apps/" + app.ID + "/events", strings.Replace(bad.body, `"event"`, `"channel":"`+ch+`","name"`, 1)},
			{"/apps/" + app.ID + "/batch_events", `{"batch":[` + strings.Replace(bad.body, `"event"`, `"channel":"`+ch+`","name"`, 1) + `]}`},
		} {
			u, hdr := pusherSigned(app, "POST", p.path, []byte(p.body))
			expectAPIError(t, bad.what+" → Pusher "+p.path, mustDo(t, "POST", h.Base+u, hdr, strings.NewReader(p.body)), http.StatusBadRequest, "invalid_json")
		}
	}
	s.expectQuiet(t, 300*time.Millisecond)
	// Valid text, also outside ASCII and as escapes of a proper pair, goes through unchanged.
	r := mustDo(t, "POST", h.Base+eventsPath(ch), jsonHdr, strings.NewReader(`{"event":"Grüße","data":"\ud83d\ude00 é"}`))
	if r.Status != http.StatusCreated {
		t.Fatalf("valid UTF-8: %s", r)
	}
	f := s.mustEvent(t, 10*time.Second)
	if !strings.Contains(f.Data, `"event":"Grüße","data":"\ud83d\ude00 é"`) {
		t.Fatalf("valid text changed on the way: %q", f.Raw)
	}
}

// TestNumbersDoNotOverflow: timeouts that overflow a Duration when multiplied are refused like
// any other out-of-range value, on channel polls and socket polls alike.
func TestNumbersDoNotOverflow(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{})
	ch := uniqueChannel("num")
	sock := mustDo(t, "POST", h.Base+"/v1/sockets", nil, nil)
	var opened struct {
		SocketID    string `json:"socket_id"`
		SocketToken string `json:"socket_token"`
	}
	if err := json.Unmarshal(sock.Body, &opened); err != nil || sock.Status != http.StatusCreated {
		t.Fatalf("open a poll socket: %s", sock)
	}
	for _, v := range []string{"9223372036854775807", "18446744074", "9223372037", "99999999", "61", "-1", "1e3", "0x10"} {
		expectAPIError(t, "channel poll timeout="+v, mustDo(t, "GET", h.Base+pollPath(ch)+"?timeout="+v, nil, nil), http.StatusBadRequest, "invalid_timeout")
		expectAPIError(t, "socket poll timeout="+v, mustDo(t, "GET", h.Base+"/v1/poll?socket_id="+opened.SocketID+"&timeout="+v, socketHeader(opened.SocketToken), nil), http.StatusBadRequest, "invalid_timeout")
	}
	for _, v := range []string{"9223372036854775808", "18446744073709551617", "0", "1001"} {
		expectAPIError(t, "limit="+v, mustDo(t, "GET", h.Base+pollPath(ch)+"?limit="+v, nil, nil), http.StatusBadRequest, "invalid_limit")
	}
	expectAPIError(t, "seq past uint64", mustDo(t, "GET", h.Base+"/v1/poll?socket_id="+opened.SocketID+"&seq=18446744073709551616", socketHeader(opened.SocketToken), nil), http.StatusBadRequest, "invalid_seq")
	if r := mustDo(t, "GET", h.Base+pollPath(ch)+"?timeout=0", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("timeout=0: %s", r)
	}
}

// TestHeaderLimit: --max-header-bytes sets the largest request head. Over it net/http answers
// 431 before any handler runs — text/plain, the documented exception to the JSON errors — and a
// head under it is served.
func TestHeaderLimit(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--max-header-bytes", "4096"}})
	get := func(headerBytes int) reply {
		hdr := http.Header{"X-Padding": {strings.Repeat("p", headerBytes)}}
		return mustDo(t, "GET", h.Base+"/v1/health", hdr, nil)
	}
	if r := get(1024); r.Status != http.StatusOK {
		t.Fatalf("a 1 KiB header under a 4 KiB limit: %s", r)
	}
	r := get(16 << 10)
	if r.Status != http.StatusRequestHeaderFieldsTooLarge || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("a 16 KiB header over a 4 KiB limit: want 431 text/plain, got %s (%s)", r, r.Header.Get("Content-Type"))
	}
	// Malformed requests net/http refuses itself, also text/plain (docs/protocol.md lists them).
	for _, raw := range []string{
		"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /v1/health HTTP/1.1\r\n\r\n",
		"POST /v1/test HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"POST /v1/test HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
	} {
		c, err := net.DialTimeout("tcp", h.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(raw))
		resp, _, err := readAnswer(c, 10*time.Second)
		c.Close()
		if err != nil || resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("%q: want 400 text/plain and the connection closed, got %v (%v)", raw, resp, err)
		}
	}
	// The default is 64 KiB.
	d := startHerald(t, heraldOpts{})
	hdr := http.Header{"X-Padding": {strings.Repeat("p", 32<<10)}}
	if r := mustDo(t, "GET", d.Base+"/v1/health", hdr, nil); r.Status != http.StatusOK {
		t.Fatalf("a 32 KiB header under the default limit: %s", r)
	}
	hdr = http.Header{"X-Padding": {strings.Repeat("p", 80<<10)}}
	if r := mustDo(t, "GET", d.Base+"/v1/health", hdr, nil); r.Status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("an 80 KiB header over the default limit: %s", r)
	}
}

// TestStreamEndNoticedAndLogged: a one-channel stream whose client goes away is noticed at
// once, not at the next heartbeat, and its access log line is written then, with the stream's
// real duration and bytes — on HTTP/1.1 (a hijacked connection) and on HTTP/2 (a stream
// served after echo's handler chain returned) alike.
func TestStreamEndNoticedAndLogged(t *testing.T) {
	t.Parallel()
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			h2 := proto == "HTTP/2.0"
			h := startHerald(t, heraldOpts{tls: h2, args: []string{"--heartbeat", "1s"}})
			ch := uniqueChannel("gone")
			client := &http.Client{Transport: streamTransport}
			if h2 {
				client = h2Client(t)
			}
			ss, err := openSSEWith(client, h.Base+eventsPath(ch), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(ss.Close)
			if ss.Resp.Proto != proto {
				t.Fatalf("stream over %s, want %s", ss.Resp.Proto, proto)
			}
			ss.expectPreamble(t)
			tok := h.Publisher(t)
			h.mustPublish(t, tok, ch, "Tick", map[string]int{"n": 1})
			ss.mustEvents(t, 1, 10*time.Second)
			// A heartbeat proves the stream has lived at least a second: its log must say so.
			if f, err := ss.next(10 * time.Second); err != nil || !f.CommentOnly() {
				t.Fatalf("want a heartbeat, got %q (%v)", f.Raw, err)
			}
			ss.Close()
			closed := time.Now()
			var line map[string]any
			found := testkit.WaitFor(10*time.Second, func() bool {
				for _, l := range strings.Split(h.logs.String(), "\n") {
					var m map[string]any
					if json.Unmarshal([]byte(l), &m) != nil || m["message"] != "request" || m["method"] != "GET" || m["path"] != eventsPath(ch) {
						continue
					}
					line = m
					return true
				}
				return false
			})
			if !found {
				t.Fatalf("no access log line for the stream within 10 s of its client leaving:\n%s", h.logs.String())
			}
			if noticed := time.Since(closed); noticed > 5*time.Second {
				t.Errorf("the stream's end was logged %v after its client left", noticed)
			}
			dur, _ := line["duration"].(float64) // zerolog writes milliseconds
			sent, _ := line["bytes"].(float64)
			if dur < 1000 || sent < 100 || line["status"] != float64(200) || line["reason"] != "client gone" {
				t.Errorf("the stream's log line must carry its lifetime (≥ 1 s), bytes sent and why it ended: %v", line)
			}
		})
	}
}
