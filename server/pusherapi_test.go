package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/stream"
)

// The Pusher documentation's worked example of a signed request (pusher docs rest-api.md,
// recomputed in the reference notes; server/authz tests the same vector without HTTP).
const (
	docAppID     = "3"
	docKey       = "278d425bdf160c739803"
	docSecret    = "7ad3773142a6692b25b8"
	docTimestamp = 1353088179
	docBody      = `{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`
	docBodyMD5   = "ec365a775a4cd0599faeb73354201b6f"
	docSignature = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
)

// pusherServer runs apps "1" (the default), "2" and the documentation's app "3", each with
// its own hub, store and presence, and JWT auth with the test secret.
func pusherServer(t *testing.T) (*httptest.Server, map[string]*authz.App) {
	t.Helper()
	return pusherServerWith(t, `
apps:
  - id: "1"
    key: key-one
    secret: secret-one-secret-one
  - id: "2"
    key: key-two
    secret: secret-two-secret-two
  - id: "`+docAppID+`"
    key: `+docKey+`
    secret: `+docSecret+`
`)
}

// pusherServerWith serves the apps of a herald.yaml, each on its own memory store.
func pusherServerWith(t *testing.T, yaml string) (*httptest.Server, map[string]*authz.App) {
	t.Helper()
	cfg, err := authz.Parse([]byte(yaml), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	auth, _ := NewAuthenticator(AuthConfig{Secret: testSecret})
	var apps []*App
	for _, pa := range cfg.Apps() {
		st := memstore.New(memstore.Options{})
		hub := stream.New(st, stream.Options{})
		app := &App{ID: pa.ID, Hub: hub, Bus: st, Pusher: pa, Presence: memstore.NewPresence(memstore.PresenceOptions{})}
		for _, w := range pa.Webhooks {
			app.Webhooks = append(app.Webhooks, WebhookEndpoint{Webhook: w, Queue: memstore.NewHookQueue(memstore.HookQueueOptions{})})
		}
		apps = append(apps, app)
		t.Cleanup(func() {
			hub.Close()
			st.Close()
		})
	}
	srv := New(Config{Auth: auth, SocketSecret: DeriveSocketSecret(testSecret), Apps: apps, Authz: cfg, PollTimeout: time.Second}, zerolog.New(io.Discard))
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { // runs before the hubs and stores close
		srv.Shutdown(t.Context())
		ts.Close()
	})
	byID := map[string]*authz.App{}
	for _, pa := range cfg.Apps() {
		byID[pa.ID] = pa
	}
	return ts, byID
}

// pusherCall sends a Pusher API request signed by app. path is the path as signed; it is
// escaped for the request line.
func pusherCall(t *testing.T, ts *httptest.Server, app *authz.App, method, path string, query url.Values, body string) apiReply {
	t.Helper()
	q, err := app.SignRequest(method, path, query, []byte(body), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	u := &url.URL{Path: path, RawQuery: q.Encode()}
	return call(t, method, ts.URL+u.String(), map[string]string{"Content-Type": "application/json"}, body)
}

func expectPusherJSON(t *testing.T, what string, r apiReply, want string) {
	t.Helper()
	if r.status != http.StatusOK || r.body != want {
		t.Fatalf("%s: got %d %s, want 200 %s", what, r.status, r.body, want)
	}
}

// pusherHistory reads every retained event of channel — of the default app, or of the app of
// token — and returns their envelopes.
func pusherHistory(t *testing.T, base, channel, token string) []map[string]json.RawMessage {
	t.Helper()
	q := url.Values{"since": {"beginning"}, "timeout": {"0"}}
	if token != "" {
		q.Set("token", token)
	}
	r := call(t, "GET", base+"/v1/channels/"+channel+"/poll?"+q.Encode(), nil, "")
	var a struct {
		Events []map[string]json.RawMessage `json:"events"`
	}
	if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &a) != nil {
		t.Fatalf("poll %s: %d %s", channel, r.status, r.body)
	}
	return a.Events
}

func pusherEnvelope(t *testing.T, f sseFrame) map[string]json.RawMessage {
	t.Helper()
	var env map[string]json.RawMessage
	if err := json.Unmarshal([]byte(f.data), &env); err != nil {
		t.Fatalf("frame %+v: %v", f, err)
	}
	return env
}

// expectPusherEvent reads the next frame and checks its event name, channel and data.
func (r *sseReader) expectPusherEvent(t *testing.T, event, channel, data string) sseFrame {
	t.Helper()
	f := r.expect(t, event)
	env := pusherEnvelope(t, f)
	if f.id == "" || string(env["channel"]) != `"`+channel+`"` || string(env["data"]) != data {
		t.Fatalf("got %+v, want %s on %s with data %s", f, event, channel, data)
	}
	return f
}

// expectPusherEnd waits for the server to end the stream.
func (r *sseReader) expectPusherEnd(t *testing.T) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-r.frames:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the stream did not end within 10s")
		}
	}
}

func pusherSubscribe(t *testing.T, base, id, token, body string) {
	t.Helper()
	if r := call(t, "POST", base+"/v1/sockets/"+id+"/subscriptions", map[string]string{socketTokenHeader: token}, body); r.status != http.StatusOK {
		t.Fatalf("subscribe %s: %d %s", body, r.status, r.body)
	}
}

func TestPusherPublishedExample(t *testing.T) {
	ts, _ := pusherServer(t)
	defer func() { pusherClock = time.Now }()
	q := url.Values{
		"auth_key": {docKey}, "auth_timestamp": {fmt.Sprint(docTimestamp)}, "auth_version": {"1.0"},
		"body_md5": {docBodyMD5}, "auth_signature": {docSignature},
	}
	post := func() apiReply {
		return call(t, "POST", ts.URL+"/apps/"+docAppID+"/events?"+q.Encode(), map[string]string{"Content-Type": "application/json"}, docBody)
	}
	pusherClock = func() time.Time { return time.Unix(docTimestamp+601, 0) }
	expectError(t, "the example 601 s later", post(), http.StatusUnauthorized, "timestamp_expired")

	pusherClock = func() time.Time { return time.Unix(docTimestamp+30, 0) }
	expectPusherJSON(t, "the documented request", post(), `{}`)

	// The event went to app 3 only, with the data string's JSON as its data.
	tok := mintClaims(t, map[string]any{"sub": "reader", "app": docAppID, "herald.subscribe": []string{"*"}})
	evs := pusherHistory(t, ts.URL, "project-3", tok)
	if len(evs) != 1 || string(evs[0]["event"]) != `"foo"` || string(evs[0]["data"]) != `{"some":"data"}` || len(evs[0]["id"]) < 3 {
		t.Fatalf("app 3's project-3: %v", evs)
	}
	if evs := pusherHistory(t, ts.URL, "project-3", ""); len(evs) != 0 {
		t.Fatalf("the default app's project-3 got app 3's event: %v", evs)
	}
}

func TestPusherEventsToOthersAndResume(t *testing.T) {
	ts, apps := pusherServer(t)
	app := apps["1"]
	post := func(body string) apiReply {
		t.Helper()
		return pusherCall(t, ts, app, "POST", "/apps/1/events", nil, body)
	}
	a, aID, aTok := streamSocket(t, ts.URL)
	b, bID, bTok := streamSocket(t, ts.URL)
	pusherSubscribe(t, ts.URL, aID, aTok, `{"channel":"chat"}`)
	pusherSubscribe(t, ts.URL, bID, bTok, `{"channel":"chat"}`)
	a.expect(t, "herald:subscription_succeeded")
	b.expect(t, "herald:subscription_succeeded")

	expectPusherJSON(t, "opening", post(`{"name":"Opened","data":"{}","channel":"chat"}`), `{}`)
	opening := pusherEnvelope(t, a.expectPusherEvent(t, "Opened", "chat", `{}`))
	b.expectPusherEvent(t, "Opened", "chat", `{}`)

	// toOthers: the socket named by socket_id does not get the event; the others do.
	expectPusherJSON(t, "toOthers", post(`{"name":"Said","data":"{\"text\":\"hi\"}","channel":"chat","socket_id":"`+aID+`"}`), `{}`)
	b.expectPusherEvent(t, "Said", "chat", `{"text":"hi"}`)
	expectPusherJSON(t, "to all", post(`{"name":"Said","data":"{\"text\":\"all\"}","channel":"chat"}`), `{}`)
	a.expectPusherEvent(t, "Said", "chat", `{"text":"all"}`) // the first thing a gets after Opened
	b.expectPusherEvent(t, "Said", "chat", `{"text":"all"}`)

	// The events are durable: history shows them with ids, in order.
	evs := pusherHistory(t, ts.URL, "chat", "")
	if len(evs) != 3 || string(evs[1]["data"]) != `{"text":"hi"}` || string(evs[2]["data"]) != `{"text":"all"}` {
		t.Fatalf("history: %v", evs)
	}
	for _, e := range evs {
		if len(e["id"]) < 3 {
			t.Fatalf("event without an id: %v", e)
		}
	}

	// Replayed history skips the excluded socket's event too: a client resuming after Opened
	// that names socket a as its earlier socket gets only the second Said.
	var cursor string
	json.Unmarshal(opening["id"], &cursor)
	c, cID, cTok := streamSocket(t, ts.URL)
	pusherSubscribe(t, ts.URL, cID, cTok, `{"channel":"chat","cursor":"`+cursor+`","exclude_socket_ids":["`+aID+`"]}`)
	c.expect(t, "herald:subscription_succeeded")
	c.expectPusherEvent(t, "Said", "chat", `{"text":"all"}`)
	c.quiet(t)
	d, dID, dTok := streamSocket(t, ts.URL)
	pusherSubscribe(t, ts.URL, dID, dTok, `{"channel":"chat","cursor":"`+cursor+`"}`)
	d.expect(t, "herald:subscription_succeeded")
	d.expectPusherEvent(t, "Said", "chat", `{"text":"hi"}`)
	d.expectPusherEvent(t, "Said", "chat", `{"text":"all"}`)
	a.quiet(t)
}

func TestPusherEventsChannelsAndData(t *testing.T) {
	ts, apps := pusherServer(t)
	post := func(body string) apiReply {
		t.Helper()
		return pusherCall(t, ts, apps["1"], "POST", "/apps/1/events", nil, body)
	}
	st := openStream(t, ts.URL+"/v1/stream?channel=alpha&channel=beta")
	st.expect(t, "herald:connected")

	// channels: one durable event per channel, in the order listed; a repeated name once.
	expectPusherJSON(t, "two channels", post(`{"name":"Multi","data":"{\"n\":1}","channels":["beta","alpha","beta"]}`), `{}`)
	st.expectPusherEvent(t, "Multi", "beta", `{"n":1}`)
	st.expectPusherEvent(t, "Multi", "alpha", `{"n":1}`)
	st.quiet(t)

	// data is a string: its JSON value when it holds JSON, else the string.
	for _, c := range []struct{ data, want string }{
		{`"{\n  \"a\": [1, 2]\n}"`, `{"a":[1,2]}`},
		{`"plain text"`, `"plain text"`},
		{`"42"`, `42`},
		{`"\"quoted\""`, `"quoted"`},
		{`""`, `""`},
		{`"{broken"`, `"{broken"`},
		{`"line\nbreak"`, `"line\nbreak"`},
	} {
		expectPusherJSON(t, "data "+c.data, post(`{"name":"Data","data":`+c.data+`,"channel":"alpha"}`), `{}`)
		st.expectPusherEvent(t, "Data", "alpha", c.want)
	}

	// info: user_count for presence channels (deployment-wide), subscription_count of this node.
	expectPusherJSON(t, "info", post(`{"name":"Info","data":"{}","channels":["alpha","presence-room"],"info":"user_count,subscription_count"}`),
		`{"channels":{"alpha":{"subscription_count":1},"presence-room":{"user_count":0,"subscription_count":0}}}`)
	expectPusherJSON(t, "info subscription_count", post(`{"name":"Info","data":"{}","channel":"beta","info":"subscription_count"}`),
		`{"channels":{"beta":{"subscription_count":1}}}`)
}

func TestPusherRequestErrors(t *testing.T) {
	ts, apps := pusherServer(t)
	app := apps["1"]
	const good = `{"name":"E","data":"{}","channel":"errs"}`
	post := func(body string) apiReply {
		t.Helper()
		return pusherCall(t, ts, app, "POST", "/apps/1/events", nil, body)
	}
	raw := func(path string, q url.Values, body string) apiReply {
		t.Helper()
		return call(t, "POST", ts.URL+path+"?"+q.Encode(), map[string]string{"Content-Type": "application/json"}, body)
	}
	signed := func(a *authz.App, path, body string, at time.Time) url.Values {
		t.Helper()
		q, err := a.SignRequest("POST", path, nil, []byte(body), at)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	other, err := authz.Parse([]byte("apps:\n  - {id: \"1\", key: key-one, secret: not-the-secret}\n  - {id: \"9\", key: nobody, secret: s}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}

	// Authentication: 401 with a code per cause.
	expectError(t, "unsigned", raw("/apps/1/events", nil, good), http.StatusUnauthorized, "invalid_auth_params")
	expectError(t, "unknown key", raw("/apps/1/events", signed(other.App("9"), "/apps/1/events", good, time.Now()), good), http.StatusUnauthorized, "unknown_key")
	expectError(t, "wrong secret", raw("/apps/1/events", signed(other.App("1"), "/apps/1/events", good, time.Now()), good), http.StatusUnauthorized, "invalid_signature")
	expectError(t, "old timestamp", raw("/apps/1/events", signed(app, "/apps/1/events", good, time.Now().Add(-11*time.Minute)), good), http.StatusUnauthorized, "timestamp_expired")
	expectError(t, "body changed after signing", raw("/apps/1/events", signed(app, "/apps/1/events", good, time.Now()), strings.Replace(good, "errs", "errz", 1)), http.StatusUnauthorized, "body_md5_mismatch")
	expectError(t, "another app's key", raw("/apps/1/events", signed(apps["2"], "/apps/1/events", good, time.Now()), good), http.StatusUnauthorized, "wrong_app")
	expectError(t, "signed for another path", raw("/apps/1/events", signed(app, "/apps/1/batch_events", good, time.Now()), good), http.StatusUnauthorized, "invalid_signature")
	q := signed(app, "/apps/1/events", good, time.Now())
	q.Set("extra", "added after signing")
	expectError(t, "parameter added after signing", raw("/apps/1/events", q, good), http.StatusUnauthorized, "invalid_signature")
	expectError(t, "unknown app id", raw("/apps/99/events", signed(app, "/apps/99/events", good, time.Now()), good), http.StatusNotFound, "unknown_app")

	// Too large: 413 before anything else, and the client, still sending its body, reads it
	// rather than a reset connection (closeInsteadOfDraining).
	big := `{"name":"E","channel":"errs","data":"` + strings.Repeat("x", 70<<10) + `"}`
	expectError(t, "over the body limit", raw("/apps/1/events", signed(app, "/apps/1/events", big, time.Now()), big), http.StatusRequestEntityTooLarge, "payload_too_large")

	// Bad bodies: 422.
	many := make([]string, 101)
	for i := range many {
		many[i] = fmt.Sprintf("c%d", i)
	}
	manyJSON, _ := json.Marshal(many)
	for _, c := range []struct{ what, body, code string }{
		{"empty", ``, "invalid_json"},
		{"not JSON", `name=E`, "invalid_json"},
		{"an array", `[]`, "invalid_json"},
		{"trailing data", good + `{}`, "invalid_json"},
		{"no name", `{"data":"{}","channel":"errs"}`, "invalid_event"},
		{"name not a string", `{"name":1,"data":"{}","channel":"errs"}`, "invalid_json"},
		{"reserved name", `{"name":"herald:x","data":"{}","channel":"errs"}`, "invalid_event"},
		{"no data", `{"name":"E","channel":"errs"}`, "invalid_data"},
		{"data not a string", `{"name":"E","data":{"a":1},"channel":"errs"}`, "invalid_json"},
		{"no channel", `{"name":"E","data":"{}"}`, "invalid_channel"},
		{"empty channels", `{"name":"E","data":"{}","channels":[]}`, "invalid_channel"},
		{"channel and channels", `{"name":"E","data":"{}","channel":"errs","channels":["errs"]}`, "invalid_channel"},
		{"bad channel name", `{"name":"E","data":"{}","channels":["errs","a b"]}`, "invalid_channel"},
		{"# outside a user channel", `{"name":"E","data":"{}","channel":"#nodes"}`, "invalid_channel"}, // #server-to-user-1 is sendToUser's
		{"user channel of no user", `{"name":"E","data":"{}","channel":"#server-to-user-"}`, "invalid_channel"},
		{"101 channels", `{"name":"E","data":"{}","channels":` + string(manyJSON) + `}`, "too_many_channels"},
		{"bad socket_id", `{"name":"E","data":"{}","channel":"errs","socket_id":"abc"}`, "invalid_socket_id"},
		{"unknown info", `{"name":"E","data":"{}","channel":"errs","info":"cache"}`, "invalid_info"},
	} {
		expectError(t, c.what, post(c.body), http.StatusUnprocessableEntity, c.code)
	}
	if evs := pusherHistory(t, ts.URL, "errs", ""); len(evs) != 0 {
		t.Fatalf("refused requests appended events: %v", evs)
	}
	// Unknown fields are ignored and an empty socket_id is none, as with Pusher.
	expectPusherJSON(t, "extra field", post(`{"name":"E","data":"{}","channel":"errs","socket_id":"","extra":true}`), `{}`)
	if evs := pusherHistory(t, ts.URL, "errs", ""); len(evs) != 1 {
		t.Fatalf("history after one good request: %v", evs)
	}
}

func TestPusherAPIDisabledWithoutApps(t *testing.T) {
	ts, _ := newTestServer(t, Config{})
	r := call(t, "POST", ts.URL+"/apps/1/events?auth_key=k", nil, `{}`)
	expectError(t, "no apps configured", r, http.StatusNotFound, "pusher_api_disabled")
	expectError(t, "GET channels", call(t, "GET", ts.URL+"/apps/1/channels", nil, ""), http.StatusNotFound, "pusher_api_disabled")
}

func TestPusherBatchEvents(t *testing.T) {
	ts, apps := pusherServer(t)
	post := func(body string) apiReply {
		t.Helper()
		return pusherCall(t, ts, apps["1"], "POST", "/apps/1/batch_events", nil, body)
	}
	st, id, tok := streamSocket(t, ts.URL)
	pusherSubscribe(t, ts.URL, id, tok, `{"channel":"bx"}`)
	st.expect(t, "herald:subscription_succeeded")
	pusherSubscribe(t, ts.URL, id, tok, `{"channel":"by"}`)
	st.expect(t, "herald:subscription_succeeded")

	expectPusherJSON(t, "batch", post(`{"batch":[
		{"name":"B1","data":"{\"n\":1}","channel":"bx"},
		{"name":"B2","data":"{\"n\":2}","channel":"by"},
		{"name":"B3","data":"{\"n\":3}","channel":"bx"}]}`), `{}`)
	st.expectPusherEvent(t, "B1", "bx", `{"n":1}`)
	st.expectPusherEvent(t, "B2", "by", `{"n":2}`)
	st.expectPusherEvent(t, "B3", "bx", `{"n":3}`)

	// info answers one entry per event; socket_id excludes that socket.
	expectPusherJSON(t, "batch with info", post(`{"batch":[
		{"name":"B4","data":"4","channel":"bx","info":"subscription_count"},
		{"name":"B5","data":"5","channel":"by","socket_id":"`+id+`"},
		{"name":"B6","data":"6","channel":"presence-none","info":"user_count"}]}`),
		`{"batch":[{"subscription_count":1},{},{"user_count":0}]}`)
	st.expectPusherEvent(t, "B4", "bx", `4`)
	st.quiet(t)

	eleven := `{"batch":[` + strings.TrimSuffix(strings.Repeat(`{"name":"E","data":"{}","channel":"bx"},`, 11), ",") + `]}`
	for _, c := range []struct{ what, body, code string }{
		{"11 events", eleven, "batch_too_large"},
		{"empty batch", `{"batch":[]}`, "invalid_batch"},
		{"no batch", `{}`, "invalid_batch"},
		{"batch not a list", `{"batch":{}}`, "invalid_json"},
		{"channels in a batch event", `{"batch":[{"name":"E","data":"{}","channels":["bx"]}]}`, "invalid_channel"},
		{"second event bad", `{"batch":[{"name":"E","data":"{}","channel":"bx"},{"name":"E","data":"{}","channel":"b y"}]}`, "invalid_channel"},
		{"second event without data", `{"batch":[{"name":"E","data":"{}","channel":"bx"},{"name":"E","channel":"bx"}]}`, "invalid_data"},
	} {
		expectError(t, c.what, post(c.body), http.StatusUnprocessableEntity, c.code)
	}
	st.quiet(t) // a refused batch appends nothing, not even its valid events
	if evs := pusherHistory(t, ts.URL, "bx", ""); len(evs) != 3 {
		t.Fatalf("bx history: %v", evs)
	}
}

func TestPusherChannelQueries(t *testing.T) {
	ts, apps := pusherServer(t)
	app := apps["1"]
	get := func(path string, q url.Values) apiReply {
		t.Helper()
		return pusherCall(t, ts, app, "GET", path, q, "")
	}
	expectPusherJSON(t, "no channels yet", get("/apps/1/channels", nil), `{"channels":{}}`)

	pub := openStream(t, ts.URL+"/v1/channels/chat/events")
	pub.expect(t, "herald:connected")
	st, id, tok := streamSocket(t, ts.URL)
	data := `{"user_id":"7","user_info":{"name":"Ann"}}`
	body, _ := json.Marshal(map[string]string{"channel": "presence-lobby", "auth": app.SignChannel(id, "presence-lobby", data), "channel_data": data})
	pusherSubscribe(t, ts.URL, id, tok, string(body))
	st.expect(t, "herald:subscription_succeeded")
	st2, id2, tok2 := streamSocket(t, ts.URL) // the same user in a second tab
	body, _ = json.Marshal(map[string]string{"channel": "presence-lobby", "auth": app.SignChannel(id2, "presence-lobby", data), "channel_data": data})
	pusherSubscribe(t, ts.URL, id2, tok2, string(body))
	st2.expect(t, "herald:subscription_succeeded")

	expectPusherJSON(t, "channels", get("/apps/1/channels", nil), `{"channels":{"chat":{},"presence-lobby":{}}}`)
	expectPusherJSON(t, "by prefix", get("/apps/1/channels", url.Values{"filter_by_prefix": {"presence-"}}), `{"channels":{"presence-lobby":{}}}`)
	expectPusherJSON(t, "user_count", get("/apps/1/channels", url.Values{"filter_by_prefix": {"presence-"}, "info": {"user_count"}}), `{"channels":{"presence-lobby":{"user_count":1}}}`)
	expectPusherJSON(t, "subscription_count", get("/apps/1/channels", url.Values{"info": {"subscription_count"}}),
		`{"channels":{"chat":{"subscription_count":1},"presence-lobby":{"subscription_count":2}}}`)
	expectError(t, "user_count without the presence- filter", get("/apps/1/channels", url.Values{"info": {"user_count"}}), http.StatusBadRequest, "invalid_info")
	expectError(t, "unknown info", get("/apps/1/channels", url.Values{"info": {"cache"}}), http.StatusBadRequest, "invalid_info")
	expectPusherJSON(t, "app 2 has none", pusherCall(t, ts, apps["2"], "GET", "/apps/2/channels", nil, ""), `{"channels":{}}`)

	expectPusherJSON(t, "one channel", get("/apps/1/channels/chat", nil), `{"occupied":true}`)
	expectPusherJSON(t, "one channel with info", get("/apps/1/channels/chat", url.Values{"info": {"subscription_count"}}), `{"occupied":true,"subscription_count":1}`)
	expectPusherJSON(t, "an empty channel", get("/apps/1/channels/nobody-here", url.Values{"info": {"subscription_count"}}), `{"occupied":false,"subscription_count":0}`)
	expectPusherJSON(t, "presence channel", get("/apps/1/channels/presence-lobby", url.Values{"info": {"user_count,subscription_count"}}),
		`{"occupied":true,"user_count":1,"subscription_count":2}`)
	expectError(t, "user_count of a public channel", get("/apps/1/channels/chat", url.Values{"info": {"user_count"}}), http.StatusBadRequest, "invalid_info")
	expectError(t, "bad channel name", get("/apps/1/channels/a b", nil), http.StatusUnprocessableEntity, "invalid_channel")

	expectPusherJSON(t, "users", get("/apps/1/channels/presence-lobby/users", nil), `{"users":[{"id":"7"}]}`)
	expectPusherJSON(t, "users of an empty presence channel", get("/apps/1/channels/presence-empty/users", nil), `{"users":[]}`)
	expectError(t, "users of a public channel", get("/apps/1/channels/chat/users", nil), http.StatusBadRequest, "not_presence")
}

func TestPusherTerminateConnections(t *testing.T) {
	ts, apps := pusherServer(t)
	app := apps["1"]
	join := func(user string) (*sseReader, string) {
		t.Helper()
		st, id, tok := streamSocket(t, ts.URL)
		data := `{"user_id":"` + user + `"}`
		body, _ := json.Marshal(map[string]string{"channel": "presence-room", "auth": app.SignChannel(id, "presence-room", data), "channel_data": data})
		pusherSubscribe(t, ts.URL, id, tok, string(body))
		st.expect(t, "herald:subscription_succeeded")
		return st, id
	}
	a1, _ := join("7")
	a2, _ := join("7")
	b, _ := join("8")
	ann, _ := join("Ann Smith")
	for _, st := range []*sseReader{a1, a1, a2, a2, b} { // 8 and Ann Smith joined after 7
		st.expect(t, "herald:member_added")
	}
	// Sockets opened with a token whose sub is the user: a stream and a long-poll socket.
	jwt := mintClaims(t, map[string]any{"sub": "7", "herald.subscribe": []string{"*"}})
	js := openStream(t, ts.URL+"/v1/stream?channel=news&token="+jwt)
	js.expect(t, "herald:connected")
	r := call(t, "POST", ts.URL+"/v1/sockets", map[string]string{"Authorization": "Bearer " + jwt}, "")
	var ps struct {
		SocketID    string `json:"socket_id"`
		SocketToken string `json:"socket_token"`
	}
	if r.status != http.StatusCreated || json.Unmarshal([]byte(r.body), &ps) != nil {
		t.Fatalf("open poll socket: %d %s", r.status, r.body)
	}

	// Another app's user 7 is someone else.
	expectPusherJSON(t, "app 2", pusherCall(t, ts, apps["2"], "POST", "/apps/2/users/7/terminate_connections", nil, `{}`), `{}`)
	a1.quiet(t)

	expectPusherJSON(t, "terminate 7", pusherCall(t, ts, app, "POST", "/apps/1/users/7/terminate_connections", nil, `{}`), `{}`)
	a1.expectPusherEnd(t)
	a2.expectPusherEnd(t)
	js.expectPusherEnd(t)
	q := url.Values{"socket_id": {ps.SocketID}, "timeout": {"0"}}
	expectError(t, "terminated poll socket", call(t, "GET", ts.URL+"/v1/poll?"+q.Encode(), map[string]string{socketTokenHeader: ps.SocketToken}, ""), http.StatusNotFound, "socket_gone")
	if f := b.expect(t, "herald:member_removed"); !strings.Contains(f.data, `"user_id":"7"`) {
		t.Fatalf("member_removed %+v", f)
	}
	expectPusherJSON(t, "users left", pusherCall(t, ts, app, "GET", "/apps/1/channels/presence-room/users", nil, ""), `{"users":[{"id":"8"},{"id":"Ann Smith"}]}`)

	// A user id that the request line escapes: signed as written, sent escaped.
	expectPusherJSON(t, "terminate Ann Smith", pusherCall(t, ts, app, "POST", "/apps/1/users/Ann Smith/terminate_connections", nil, `{}`), `{}`)
	ann.expectPusherEnd(t)
	b.expect(t, "herald:member_removed")
	b.quiet(t) // user 8 is still connected

	expectError(t, "bad body", pusherCall(t, ts, app, "POST", "/apps/1/users/8/terminate_connections", nil, `[1]`), http.StatusUnprocessableEntity, "invalid_json")
	expectError(t, "too long a user id", pusherCall(t, ts, app, "POST", "/apps/1/users/"+strings.Repeat("u", 129)+"/terminate_connections", nil, `{}`), http.StatusBadRequest, "invalid_user_id")
	b.quiet(t)
}
