package server

import (
	"bufio"
	"context"
	"encoding/json"
	"github.com/herald-rt/herald/test/testkit"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// sseFrame is one SSE block as a client sees it.
type sseFrame struct{ id, event, data string }

// sseReader reads frames from a stream in the background.
type sseReader struct {
	frames chan sseFrame
	cancel context.CancelFunc
}

func openStream(t *testing.T, rawURL string) *sseReader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", rawURL, resp.StatusCode, body)
	}
	r := &sseReader{frames: make(chan sseFrame, 1000), cancel: cancel}
	go func() {
		defer resp.Body.Close()
		defer close(r.frames)
		sc := bufio.NewScanner(resp.Body)
		var f sseFrame
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				if f.event != "" || f.data != "" {
					r.frames <- f
				}
				f = sseFrame{}
				continue
			}
			k, v, _ := strings.Cut(line, ": ")
			switch k {
			case "id":
				f.id = v
			case "event":
				f.event = v
			case "data":
				f.data = v
			}
		}
	}()
	t.Cleanup(cancel)
	return r
}

func (r *sseReader) next(t *testing.T) sseFrame {
	t.Helper()
	select {
	case f, ok := <-r.frames:
		if !ok {
			t.Fatal("stream ended")
		}
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no frame within 10s")
	}
	return sseFrame{}
}

func (r *sseReader) quiet(t *testing.T) {
	t.Helper()
	select {
	case f := <-r.frames:
		t.Fatalf("unexpected frame %+v", f)
	case <-time.After(200 * time.Millisecond):
	}
}

type apiReply struct {
	status int
	body   string
}

func call(t *testing.T, method, rawURL string, header map[string]string, body string) apiReply {
	t.Helper()
	req, _ := http.NewRequest(method, rawURL, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return apiReply{resp.StatusCode, strings.TrimSpace(string(b))}
}

func expectError(t *testing.T, what string, r apiReply, status int, code string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string }
	}
	if r.status != status || json.Unmarshal([]byte(r.body), &e) != nil || e.Error.Code != code || e.Error.Message == "" {
		t.Fatalf("%s: got %d %s, want %d with code %s", what, r.status, r.body, status, code)
	}
}

func publishVia(t *testing.T, base, tok, channel, data string) string {
	t.Helper()
	r := call(t, "POST", base+"/v1/channels/"+channel+"/events", map[string]string{"Authorization": "Bearer " + tok}, `{"event":"Tick","data":`+data+`}`)
	if r.status != http.StatusCreated {
		t.Fatalf("publish: %d %s", r.status, r.body)
	}
	var p struct {
		ID string `json:"id"`
	}
	json.Unmarshal([]byte(r.body), &p)
	return p.ID
}

func TestSocketSubscriptionsOnAStream(t *testing.T) {
	ts, _ := newTestServer(t, Config{})
	pub := mint(t, TokenSpec{Subject: "p", Publish: []string{"*"}, TTL: time.Hour})
	first := publishVia(t, ts.URL, pub, "room", `{"n":1}`)
	publishVia(t, ts.URL, pub, "room", `{"n":2}`)

	st := openStream(t, ts.URL+"/v1/stream")
	hello := st.next(t)
	var c struct {
		SocketID    string `json:"socket_id"`
		SocketToken string `json:"socket_token"`
		Cursor      string `json:"cursor"`
	}
	if hello.event != "herald:connected" || json.Unmarshal([]byte(hello.data), &c) != nil || c.SocketToken == "" || c.Cursor != "c" {
		t.Fatalf("connected frame %+v", hello)
	}
	subs := ts.URL + "/v1/sockets/" + c.SocketID + "/subscriptions"
	hdr := map[string]string{socketTokenHeader: c.SocketToken}

	r := call(t, "POST", subs, hdr, `{"channel":"room","cursor":"`+first+`"}`)
	if r.status != http.StatusOK {
		t.Fatalf("subscribe: %d %s", r.status, r.body)
	}
	if f := st.next(t); f.event != "herald:subscription_succeeded" || f.id != "" || !strings.Contains(f.data, `"channel":"room"`) {
		t.Fatalf("want the subscription notice first, got %+v", f)
	}
	if f := st.next(t); f.event != "Tick" || !strings.Contains(f.data, `"n":2`) || !strings.HasPrefix(f.id, "c.") {
		t.Fatalf("want the history after the cursor, got %+v", f)
	}
	publishVia(t, ts.URL, pub, "room", `{"n":3}`)
	if f := st.next(t); !strings.Contains(f.data, `"n":3`) {
		t.Fatalf("want the live event, got %+v", f)
	}

	// Refused: the call answers 401 and the socket hears of it.
	expectError(t, "private without a token", call(t, "POST", subs, hdr, `{"channel":"private-x"}`), http.StatusUnauthorized, "token_missing")
	if f := st.next(t); f.event != "herald:subscription_error" || !strings.Contains(f.data, `"channel":"private-x"`) || !strings.Contains(f.data, "token_missing") {
		t.Fatalf("want a subscription error on the socket, got %+v", f)
	}
	sub := mint(t, TokenSpec{Subject: "u", Subscribe: []string{"private-x"}, TTL: time.Hour})
	withTok := map[string]string{socketTokenHeader: c.SocketToken, "Authorization": "Bearer " + sub}
	if r := call(t, "POST", subs, withTok, `{"channel":"private-x"}`); r.status != http.StatusOK {
		t.Fatalf("private with a token: %d %s", r.status, r.body)
	}
	st.next(t) // its notice
	expectError(t, "not allowed", call(t, "POST", subs, withTok, `{"channel":"private-y"}`), http.StatusForbidden, "forbidden")
	st.next(t) // its error

	expectError(t, "wrong socket token", call(t, "POST", subs, map[string]string{socketTokenHeader: "nope"}, `{"channel":"room"}`), http.StatusUnauthorized, "socket_token_invalid")
	expectError(t, "bad body", call(t, "POST", subs, hdr, `{"channel":"room","extra":1}`), http.StatusBadRequest, "invalid_json")
	expectError(t, "bad channel", call(t, "POST", subs, hdr, `{"channel":"no spaces"}`), http.StatusUnprocessableEntity, "invalid_channel")
	expectError(t, "bad cursor", call(t, "POST", subs, hdr, `{"channel":"room","cursor":"zz"}`), http.StatusBadRequest, "invalid_cursor")
	gone := "1.1"
	expectError(t, "unknown socket", call(t, "POST", ts.URL+"/v1/sockets/"+gone+"/subscriptions",
		map[string]string{socketTokenHeader: socketTokens{DeriveSocketSecret(testSecret)}.token("default", gone)}, `{"channel":"room"}`), http.StatusNotFound, "socket_gone")

	if r := call(t, "DELETE", subs+"/room", hdr, ""); r.status != http.StatusOK {
		t.Fatalf("unsubscribe: %d %s", r.status, r.body)
	}
	expectError(t, "unsubscribe twice", call(t, "DELETE", subs+"/room", hdr, ""), http.StatusNotFound, "not_subscribed")
	publishVia(t, ts.URL, pub, "room", `{"n":4}`)
	st.quiet(t)
}

func TestPollSocket(t *testing.T) {
	ts, srv := newTestServer(t, Config{PollTimeout: time.Second, SocketTimeout: 1500 * time.Millisecond})
	pub := mint(t, TokenSpec{Subject: "p", Publish: []string{"*"}, TTL: time.Hour})
	r := call(t, "POST", ts.URL+"/v1/sockets", nil, "")
	var sk struct {
		SocketID    string `json:"socket_id"`
		SocketToken string `json:"socket_token"`
		Cursor      string `json:"cursor"`
	}
	if r.status != http.StatusCreated || json.Unmarshal([]byte(r.body), &sk) != nil || sk.SocketToken == "" {
		t.Fatalf("open socket: %d %s", r.status, r.body)
	}
	hdr := map[string]string{socketTokenHeader: sk.SocketToken}
	if r := call(t, "POST", ts.URL+"/v1/sockets/"+sk.SocketID+"/subscriptions", hdr, `{"channel":"room"}`); r.status != http.StatusOK {
		t.Fatalf("subscribe: %d %s", r.status, r.body)
	}
	type answer struct {
		Events []json.RawMessage `json:"events"`
		Cursor string            `json:"cursor"`
		Seq    uint64            `json:"seq"`
	}
	poll := func(seq string) (answer, string) {
		q := url.Values{"socket_id": {sk.SocketID}, "timeout": {"1"}}
		if seq != "" {
			q.Set("seq", seq)
		}
		r := call(t, "GET", ts.URL+"/v1/poll?"+q.Encode(), hdr, "")
		var a answer
		if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &a) != nil {
			t.Fatalf("poll: %d %s", r.status, r.body)
		}
		return a, r.body
	}
	a, _ := poll("")
	if len(a.Events) != 1 || !strings.Contains(string(a.Events[0]), `"event":"herald:subscription_succeeded"`) || a.Seq != 1 {
		t.Fatalf("first poll: %+v", a)
	}
	publishVia(t, ts.URL, pub, "room", `{"n":1}`)
	b, raw := poll("1")
	if len(b.Events) != 1 || !strings.Contains(string(b.Events[0]), `"n":1`) || b.Seq != 2 || b.Cursor == a.Cursor {
		t.Fatalf("second poll: %+v", b)
	}
	// The client lost that answer and confirms only seq 1: it gets the same answer again.
	if _, again := poll("1"); again != raw {
		t.Fatalf("lost answer not repeated:\n%s\n%s", again, raw)
	}
	empty, _ := poll("2")
	if len(empty.Events) != 0 || empty.Seq != 2 || empty.Cursor != b.Cursor {
		t.Fatalf("poll with nothing new: %+v", empty)
	}
	// Nobody polls for longer than the socket timeout: the socket is gone.
	later := time.Now().Add(2500 * time.Millisecond)
	srv.sessions.setClock(func() time.Time { return later })
	if !testkit.WaitFor(10*time.Second, func() bool { return srv.sessions.get(srv.apps.def(), sk.SocketID) == nil }) {
		t.Fatal("the unpolled socket was not expired")
	}
	q := url.Values{"socket_id": {sk.SocketID}, "timeout": {"0"}}
	expectError(t, "expired socket", call(t, "GET", ts.URL+"/v1/poll?"+q.Encode(), hdr, ""), http.StatusNotFound, "socket_gone")
}

// streamSocket opens /v1/stream and returns the reader, socket id and token.
func streamSocket(t *testing.T, base string) (*sseReader, string, string) {
	t.Helper()
	st := openStream(t, base+"/v1/stream")
	var c struct {
		SocketID    string `json:"socket_id"`
		SocketToken string `json:"socket_token"`
	}
	if f := st.next(t); json.Unmarshal([]byte(f.data), &c) != nil {
		t.Fatalf("connected frame %+v", f)
	}
	return st, c.SocketID, c.SocketToken
}

func TestWhispers(t *testing.T) {
	ts, _ := newTestServer(t, Config{WhisperRate: 5})
	tok := mint(t, TokenSpec{Subject: "u1", Subscribe: []string{"private-*", "presence-*"}, TTL: time.Hour})
	auth := map[string]string{"Authorization": "Bearer " + tok}
	type member struct {
		st        *sseReader
		id, token string
	}
	var ms []member
	for range 3 {
		st, id, token := streamSocket(t, ts.URL)
		ms = append(ms, member{st, id, token})
	}
	for _, m := range ms[:2] {
		hdr := map[string]string{socketTokenHeader: m.token, "Authorization": auth["Authorization"]}
		if r := call(t, "POST", ts.URL+"/v1/sockets/"+m.id+"/subscriptions", hdr, `{"channel":"private-chat"}`); r.status != http.StatusOK {
			t.Fatalf("subscribe: %d %s", r.status, r.body)
		}
		m.st.next(t) // notice
	}
	whisper := func(m member, channel, body string) apiReply {
		return call(t, "POST", ts.URL+"/v1/channels/"+channel+"/whispers?socket_id="+m.id, map[string]string{socketTokenHeader: m.token}, body)
	}
	if r := whisper(ms[0], "private-chat", `{"event":"client-typing","data":{"typing":true}}`); r.status != http.StatusOK {
		t.Fatalf("whisper: %d %s", r.status, r.body)
	}
	f := ms[1].st.next(t)
	if f.event != "client-typing" || f.id != "" || f.data != `{"channel":"private-chat","event":"client-typing","data":{"typing":true}}` {
		t.Fatalf("receiver got %+v", f)
	}
	ms[0].st.quiet(t) // never back to the sender
	expectError(t, "not subscribed", whisper(ms[2], "private-chat", `{"event":"client-x"}`), http.StatusForbidden, "not_subscribed")
	expectError(t, "public channel", whisper(ms[0], "chat", `{"event":"client-x"}`), http.StatusForbidden, "client_events_not_allowed")
	expectError(t, "no client- prefix", whisper(ms[0], "private-chat", `{"event":"typing"}`), http.StatusBadRequest, "invalid_event")
	expectError(t, "bad token", call(t, "POST", ts.URL+"/v1/channels/private-chat/whispers?socket_id="+ms[0].id, map[string]string{socketTokenHeader: "x"}, `{"event":"client-x"}`), http.StatusUnauthorized, "socket_token_invalid")
	limited := 0
	for range 10 {
		if r := whisper(ms[0], "private-chat", `{"event":"client-typing"}`); r.status == http.StatusTooManyRequests {
			expectError(t, "rate", r, http.StatusTooManyRequests, "rate_limited")
			limited++
		}
	}
	if limited == 0 {
		t.Fatal("10 whispers at once with a rate of 5/s: none refused")
	}
}

func TestUnnamedFormat(t *testing.T) {
	ts, _ := newTestServer(t, Config{Heartbeat: time.Second})
	pub := mint(t, TokenSpec{Subject: "p", Publish: []string{"*"}, TTL: time.Hour})
	st := openStream(t, ts.URL+"/v1/stream?channel=room&format=message")
	if f := st.next(t); f.event != "herald:connected" {
		t.Fatalf("notices keep their names: %+v", f)
	}
	id := publishVia(t, ts.URL, pub, "room", `{"n":1}`)
	f := st.next(t)
	if f.event != "" || !strings.HasPrefix(f.id, "c.") || !strings.Contains(f.data, `"event":"Tick"`) || !strings.Contains(f.data, `"id":"`+id+`"`) {
		t.Fatalf("want an unnamed frame whose data names the event, got %+v", f)
	}
	// Heartbeats are events a script can see, not comments.
	if f := st.next(t); f.event != "herald:ping" || f.data != "{}" || f.id != "" {
		t.Fatalf("want a herald:ping heartbeat, got %+v", f)
	}
}

func TestPollLongerThanSocketTimeout(t *testing.T) {
	ts, srv := newTestServer(t, Config{PollTimeout: time.Second, PollTimeoutMax: 4 * time.Second, SocketTimeout: time.Second})
	pub := mint(t, TokenSpec{Subject: "p", Publish: []string{"*"}, TTL: time.Hour})
	r := call(t, "POST", ts.URL+"/v1/sockets", nil, "")
	var sk struct {
		SocketID    string `json:"socket_id"`
		SocketToken string `json:"socket_token"`
	}
	if err := json.Unmarshal([]byte(r.body), &sk); err != nil || r.status != http.StatusCreated {
		t.Fatalf("open socket: %d %s", r.status, r.body)
	}
	hdr := map[string]string{socketTokenHeader: sk.SocketToken}
	if r := call(t, "POST", ts.URL+"/v1/sockets/"+sk.SocketID+"/subscriptions", hdr, `{"channel":"room"}`); r.status != 200 {
		t.Fatalf("subscribe: %d %s", r.status, r.body)
	}
	first := call(t, "GET", ts.URL+"/v1/poll?socket_id="+sk.SocketID+"&timeout=0", hdr, "") // the notice
	if first.status != 200 {
		t.Fatalf("first poll: %d %s", first.status, first.body)
	}
	go func() {
		// Once the poll waits, the clock jumps past the socket timeout and the janitor runs:
		// the socket must not expire under its poll. Then the event comes.
		ss := srv.sessions.get(srv.apps.def(), sk.SocketID)
		testkit.WaitFor(5*time.Second, func() bool {
			if !ss.poll.mu.TryLock() {
				return true
			}
			ss.poll.mu.Unlock()
			return false
		})
		later := time.Now().Add(2500 * time.Millisecond)
		srv.sessions.setClock(func() time.Time { return later })
		srv.sessions.expire(later, srv.cfg.SocketTimeout)
		publishVia(t, ts.URL, pub, "room", `{"late":true}`)
	}()
	r = call(t, "GET", ts.URL+"/v1/poll?socket_id="+sk.SocketID+"&timeout=4&seq=1", hdr, "")
	if r.status != 200 || !strings.Contains(r.body, `"late":true`) {
		t.Fatalf("long poll: %d %s", r.status, r.body)
	}
}
