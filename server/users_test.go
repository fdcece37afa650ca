package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestUserSignin: a socket signs in with the app's user authentication signature (or its
// token's sub) and gets what the Pusher API's sendToUser publishes to that user — on every
// socket of the user, in order, resumable — and nobody else does; no socket subscribes to a
// user channel by name; terminate_connections ends the signed-in sockets.
func TestUserSignin(t *testing.T) {
	ts, apps := pusherServer(t)
	app := apps["1"]
	signin := func(id, tok, userData, extra string) apiReply {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"auth": app.SignUser(id, userData), "user_data": userData})
		if extra != "" {
			body = []byte(strings.TrimSuffix(string(body), "}") + "," + extra + "}")
		}
		return call(t, "POST", ts.URL+"/v1/sockets/"+id+"/signin", map[string]string{socketTokenHeader: tok}, string(body))
	}
	sendToUser := func(user, event, data string) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"name": event, "channels": []string{"#server-to-user-" + user}, "data": data})
		expectPusherJSON(t, "sendToUser", pusherCall(t, ts, app, "POST", "/apps/1/events", nil, string(body)), `{}`)
	}

	tab1, id1, tok1 := streamSocket(t, ts.URL)
	tab2, id2, tok2 := streamSocket(t, ts.URL)
	other, id3, tok3 := streamSocket(t, ts.URL)
	const ann = `{"id":"7","user_info":{"name":"Ann"}}`
	if r := signin(id1, tok1, ann, ""); r.status != http.StatusOK || r.body != `{"channel":"#server-to-user-7","socket_id":"`+id1+`","user_id":"7"}` {
		t.Fatalf("signin: %d %s", r.status, r.body)
	}
	if r := signin(id2, tok2, ann, ""); r.status != http.StatusOK {
		t.Fatalf("signin tab 2: %d %s", r.status, r.body)
	}
	if r := signin(id3, tok3, `{"id":8}`, ""); r.status != http.StatusOK || !strings.Contains(r.body, `"user_id":"8"`) {
		t.Fatalf("signin with a numeric id: %d %s", r.status, r.body)
	}
	for _, st := range []*sseReader{tab1, tab2, other} {
		st.expect(t, "herald:subscription_succeeded")
	}
	sendToUser("7", "order-shipped", `{"n":1}`)
	sendToUser("7", "order-shipped", `{"n":2}`)
	var last sseFrame
	for _, st := range []*sseReader{tab1, tab2} {
		st.expectPusherEvent(t, "order-shipped", "#server-to-user-7", `{"n":1}`)
		last = st.expectPusherEvent(t, "order-shipped", "#server-to-user-7", `{"n":2}`)
	}
	other.quiet(t)

	// The channel list leaves user channels out unless asked for them by prefix.
	expectPusherJSON(t, "channels", pusherCall(t, ts, app, "GET", "/apps/1/channels", nil, ""), `{"channels":{}}`)
	expectPusherJSON(t, "user channels", pusherCall(t, ts, app, "GET", "/apps/1/channels", url.Values{"filter_by_prefix": {"#server-to-user-7"}}, ""),
		`{"channels":{"#server-to-user-7":{}}}`)

	// Signing in again as the same user only repeats the notice; as another user it is refused.
	if r := signin(id1, tok1, ann, ""); r.status != http.StatusOK {
		t.Fatalf("signin again: %d %s", r.status, r.body)
	}
	tab1.expect(t, "herald:subscription_succeeded")
	expectError(t, "another user", signin(id1, tok1, `{"id":"9"}`, ""), http.StatusConflict, "already_signed_in")

	// A new socket resumes the user channel from the last event's cursor, as a reconnect does.
	sendToUser("7", "order-shipped", `{"n":3}`)
	tab3, id4, tok4 := streamSocket(t, ts.URL)
	cursor := string(pusherEnvelope(t, last)["id"]) // the event's own id, as the client keeps it
	if r := signin(id4, tok4, ann, `"cursor":`+cursor); r.status != http.StatusOK {
		t.Fatalf("signin with a cursor: %d %s", r.status, r.body)
	}
	tab3.expect(t, "herald:subscription_succeeded")
	tab3.expectPusherEvent(t, "order-shipped", "#server-to-user-7", `{"n":3}`)

	// Refusals, with the exact error.
	expectError(t, "forged", call(t, "POST", ts.URL+"/v1/sockets/"+id3+"/signin", map[string]string{socketTokenHeader: tok3},
		`{"auth":"`+app.SignUser(id1, ann)+`","user_data":`+strconvQuote(ann)+`}`), http.StatusUnauthorized, "invalid_signature")
	expectError(t, "bad user_data", signin(id3, tok3, `{"name":"no id"}`, ""), http.StatusBadRequest, "invalid_user_data")
	expectError(t, "an id no channel can hold", signin(id3, tok3, `{"id":"ann smith"}`, ""), http.StatusBadRequest, "invalid_user_data")
	expectError(t, "no credentials", call(t, "POST", ts.URL+"/v1/sockets/"+id3+"/signin", map[string]string{socketTokenHeader: tok3}, `{}`), http.StatusUnauthorized, "token_missing")
	expectError(t, "unknown field", call(t, "POST", ts.URL+"/v1/sockets/"+id3+"/signin", map[string]string{socketTokenHeader: tok3}, `{"user":"7"}`), http.StatusBadRequest, "invalid_json")
	expectError(t, "subscribe by name", call(t, "POST", ts.URL+"/v1/sockets/"+id3+"/subscriptions", map[string]string{socketTokenHeader: tok3},
		`{"channel":"#server-to-user-7"}`), http.StatusForbidden, "user_channel")
	expectError(t, "a stream of it", call(t, "GET", ts.URL+"/v1/stream?channel="+url.QueryEscape("#server-to-user-7"), nil, ""), http.StatusForbidden, "user_channel")
	expectError(t, "a stream of its path", call(t, "GET", ts.URL+"/v1/channels/%23server-to-user-7/events", nil, ""), http.StatusForbidden, "user_channel")
	expectError(t, "whisper to it", call(t, "POST", ts.URL+"/v1/channels/%23server-to-user-7/whispers?socket_id="+id1, map[string]string{socketTokenHeader: tok1},
		`{"event":"client-x","data":{}}`), http.StatusForbidden, "client_events_not_allowed")
	other.quiet(t)

	// With a token: the socket signs in as the token's sub.
	jwt := mintClaims(t, map[string]any{"sub": "8", "herald.subscribe": []string{"*"}})
	js := openStream(t, ts.URL+"/v1/stream?token="+jwt)
	var hello struct {
		SocketID    string `json:"socket_id"`
		SocketToken string `json:"socket_token"`
	}
	json.Unmarshal([]byte(js.next(t).data), &hello)
	if r := call(t, "POST", ts.URL+"/v1/sockets/"+hello.SocketID+"/signin", map[string]string{socketTokenHeader: hello.SocketToken}, `{}`); r.status != http.StatusOK || !strings.Contains(r.body, `"user_id":"8"`) {
		t.Fatalf("signin by the socket's token: %d %s", r.status, r.body)
	}
	js.expect(t, "herald:subscription_succeeded")
	sendToUser("8", "hello", `"eight"`)
	js.expectPusherEvent(t, "hello", "#server-to-user-8", `"eight"`)
	other.expectPusherEvent(t, "hello", "#server-to-user-8", `"eight"`)
	noSub := mintClaims(t, map[string]any{"herald.subscribe": []string{"*"}})
	expectError(t, "a token without sub", call(t, "POST", ts.URL+"/v1/sockets/"+id3+"/signin", map[string]string{socketTokenHeader: tok3, "Authorization": "Bearer " + noSub}, `{}`), http.StatusForbidden, "no_subject")

	// terminate_connections ends every socket signed in as the user.
	expectPusherJSON(t, "terminate 7", pusherCall(t, ts, app, "POST", "/apps/1/users/7/terminate_connections", nil, `{}`), `{}`)
	tab1.expectPusherEnd(t)
	tab2.expectPusherEnd(t)
	tab3.expectPusherEnd(t)
	other.quiet(t)
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
