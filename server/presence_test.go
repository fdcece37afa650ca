package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/stream"
	"github.com/herald-rt/herald/test/testkit"
)

// presenceServer runs one app with a Pusher key/secret and a presence limit of 3 members.
func presenceServer(t *testing.T) (*httptest.Server, *authz.App) {
	t.Helper()
	cfg, err := authz.Parse([]byte(`
apps:
  - id: "42"
    key: app-key
    secret: app-secret-app-secret
    limits: {max_presence_members: 3}
`), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	auth, _ := NewAuthenticator(AuthConfig{Secret: testSecret})
	st := memstore.New(memstore.Options{})
	hub := stream.New(st, stream.Options{})
	app := &App{ID: "42", Hub: hub, Bus: st, Pusher: cfg.DefaultApp(),
		Presence: memstore.NewPresence(memstore.PresenceOptions{MaxMembers: 3})}
	srv := New(Config{Auth: auth, SocketSecret: DeriveSocketSecret(testSecret), Apps: []*App{app}, Authz: cfg}, zerolog.New(io.Discard))
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		srv.Shutdown(t.Context())
		ts.Close()
		hub.Close()
		st.Close()
	})
	return ts, cfg.DefaultApp()
}

type presenceData struct {
	Presence struct {
		Count int                        `json:"count"`
		IDs   []string                   `json:"ids"`
		Hash  map[string]json.RawMessage `json:"hash"`
	} `json:"presence"`
}

func (r *sseReader) expect(t *testing.T, event string) sseFrame {
	t.Helper()
	f := r.next(t)
	if f.event != event {
		t.Fatalf("got %+v, want event %s", f, event)
	}
	return f
}

func TestPresenceWithTokens(t *testing.T) {
	ts, _ := presenceServer(t)
	token := func(sub, info string) string {
		return mintClaims(t, map[string]any{"sub": sub, "herald.subscribe": []string{"presence-*"}, "herald.user_info": json.RawMessage(info)})
	}
	type client struct {
		st        *sseReader
		id, token string
		auth      string
	}
	join := func(cl client) apiReply {
		return call(t, "POST", ts.URL+"/v1/sockets/"+cl.id+"/subscriptions",
			map[string]string{socketTokenHeader: cl.token, "Authorization": "Bearer " + cl.auth}, `{"channel":"presence-room"}`)
	}
	leave := func(cl client) {
		if r := call(t, "DELETE", ts.URL+"/v1/sockets/"+cl.id+"/subscriptions/presence-room", map[string]string{socketTokenHeader: cl.token}, ""); r.status != 200 {
			t.Fatalf("leave: %d %s", r.status, r.body)
		}
	}
	newClient := func(auth string) client {
		st, id, tok := streamSocket(t, ts.URL)
		return client{st, id, tok, auth}
	}
	// The app's identity limits: user_info of at most 1 KB, user ids of at most 128 characters.
	big := newClient(token("u9", `{"bio":"`+strings.Repeat("x", 1100)+`"}`))
	expectError(t, "user_info over 1 KB", join(big), http.StatusRequestEntityTooLarge, "user_info_too_large")
	long := newClient(token(strings.Repeat("u", 129), `{}`))
	expectError(t, "user id over 128 characters", join(long), http.StatusBadRequest, "invalid_user_id")

	a := newClient(token("u1", `{"name":"Ann"}`))
	a2 := newClient(token("u1", `{"name":"Ann"}`)) // a second tab of the same user
	b := newClient(token("u2", `{"name":"Bob"}`))

	if r := join(a); r.status != 200 {
		t.Fatalf("join: %d %s", r.status, r.body)
	}
	var pd presenceData
	json.Unmarshal([]byte(a.st.expect(t, "herald:subscription_succeeded").data), &struct{ Data *presenceData }{&pd})
	if pd.Presence.Count != 1 || pd.Presence.IDs[0] != "u1" || string(pd.Presence.Hash["u1"]) != `{"name":"Ann"}` {
		t.Fatalf("first member's notice: %+v", pd)
	}
	join(b)
	b.st.expect(t, "herald:subscription_succeeded")
	if f := a.st.expect(t, "herald:member_added"); !strings.Contains(f.data, `"data":{"user_id":"u2","user_info":{"name":"Bob"}}`) || f.id != "" {
		t.Fatalf("member_added %+v", f)
	}
	// Whispers on a presence channel tell the receivers who sent them.
	if r := call(t, "POST", ts.URL+"/v1/channels/presence-room/whispers?socket_id="+a.id, map[string]string{socketTokenHeader: a.token}, `{"event":"client-typing","data":{}}`); r.status != 200 {
		t.Fatalf("whisper: %d %s", r.status, r.body)
	}
	if f := b.st.expect(t, "client-typing"); !strings.Contains(f.data, `"user_id":"u1"`) {
		t.Fatalf("presence whisper without the sender's user id: %+v", f)
	}
	join(a2) // same user: nobody hears of a new member
	a2.st.expect(t, "herald:subscription_succeeded")
	a.st.quiet(t)
	b.st.quiet(t)

	leave(a) // u1 still has a second socket
	b.st.quiet(t)
	leave(a2)
	if f := b.st.expect(t, "herald:member_removed"); !strings.Contains(f.data, `"data":{"user_id":"u1"}`) {
		t.Fatalf("member_removed %+v", f)
	}
	r := call(t, "GET", ts.URL+"/v1/channels/presence-room/members", map[string]string{"Authorization": "Bearer " + b.auth}, "")
	if r.status != 200 || !strings.Contains(r.body, `"count":1`) || !strings.Contains(r.body, `"user_id":"u2"`) || strings.Contains(r.body, "u1") {
		t.Fatalf("members: %d %s", r.status, r.body)
	}
	// Closing a socket ends its memberships too, as soon as the client is gone.
	b.st.cancel()
	var last string
	if !testkit.WaitFor(10*time.Second, func() bool {
		last = call(t, "GET", ts.URL+"/v1/channels/presence-room/members", map[string]string{"Authorization": "Bearer " + a.auth}, "").body
		return strings.Contains(last, `"count":0`)
	}) {
		t.Fatalf("members after the last socket closed: %s", last)
	}
}

func TestPresenceWithPusherSignatures(t *testing.T) {
	ts, app := presenceServer(t)
	join := func(id, tok, auth, data string) apiReply {
		body, _ := json.Marshal(map[string]string{"channel": "presence-chat", "auth": auth, "channel_data": data})
		return call(t, "POST", ts.URL+"/v1/sockets/"+id+"/subscriptions", map[string]string{socketTokenHeader: tok}, string(body))
	}
	var ids, toks []string
	var readers []*sseReader
	for range 5 {
		st, id, tok := streamSocket(t, ts.URL)
		ids, toks, readers = append(ids, id), append(toks, tok), append(readers, st)
	}
	data := func(user string) string { return `{"user_id":"` + user + `","user_info":{"n":"` + user + `"}}` }
	if r := join(ids[0], toks[0], app.SignChannel(ids[0], "presence-chat", data("7")), data("7")); r.status != 200 {
		t.Fatalf("signed join: %d %s", r.status, r.body)
	}
	readers[0].expect(t, "herald:subscription_succeeded")

	expectError(t, "forged", join(ids[1], toks[1], "app-key:"+strings.Repeat("0", 64), data("8")), http.StatusUnauthorized, "invalid_signature")
	readers[1].expect(t, "herald:subscription_error")
	expectError(t, "another socket's signature", join(ids[1], toks[1], app.SignChannel(ids[0], "presence-chat", data("8")), data("8")), http.StatusUnauthorized, "invalid_signature")
	expectError(t, "tampered channel_data", join(ids[1], toks[1], app.SignChannel(ids[1], "presence-chat", data("8")), data("9")), http.StatusUnauthorized, "invalid_signature")

	// The app's identity limits (Pusher's defaults) hold for properly signed channel_data too.
	bigInfo := `{"user_id":"8","user_info":{"bio":"` + strings.Repeat("x", 1100) + `"}}`
	expectError(t, "user_info over 1 KB", join(ids[1], toks[1], app.SignChannel(ids[1], "presence-chat", bigInfo), bigInfo), http.StatusBadRequest, "invalid_channel_data")
	longID := data(strings.Repeat("u", 129))
	expectError(t, "user id over 128 characters", join(ids[1], toks[1], app.SignChannel(ids[1], "presence-chat", longID), longID), http.StatusBadRequest, "invalid_channel_data")

	for i, user := range []string{"8", "9"} {
		k := i + 1
		if r := join(ids[k], toks[k], app.SignChannel(ids[k], "presence-chat", data(user)), data(user)); r.status != 200 {
			t.Fatalf("join %s: %d %s", user, r.status, r.body)
		}
	}
	// The limit is 3 members: a fourth user is refused, another socket of a member is not.
	expectError(t, "over capacity", join(ids[3], toks[3], app.SignChannel(ids[3], "presence-chat", data("10")), data("10")), http.StatusForbidden, "presence_full")
	if r := join(ids[4], toks[4], app.SignChannel(ids[4], "presence-chat", data("7")), data("7")); r.status != 200 {
		t.Fatalf("second socket of member 7: %d %s", r.status, r.body)
	}
}

// mintClaims signs arbitrary claims with the test secret and a one-hour expiry.
func mintClaims(t *testing.T, claims map[string]any) string {
	t.Helper()
	claims["exp"] = time.Now().Add(time.Hour).Unix()
	tok, err := jwtSign(claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
