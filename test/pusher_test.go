package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/test/testkit"
)

// The Pusher HTTP API driven by the real `pusher` npm package (test/node/pusher-client.mjs):
// the signatures it makes — for requests and for channel authorization — are ones nobody on
// this project wrote.

// pusherApp is the app of a test's config file.
type pusherApp struct{ ID, Key, Secret string }

// writePusherConfig writes a herald config with one app into a temp dir.
func writePusherConfig(t *testing.T) (string, pusherApp) {
	t.Helper()
	app := pusherApp{ID: "e2e-" + randomSuffix(), Key: "key-" + randomSuffix(), Secret: string(randomSecret())}
	yaml := "apps:\n  - id: \"" + app.ID + "\"\n    key: " + app.Key + "\n    secret: \"" + app.Secret + "\"\n"
	path := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, app
}

// pusherOp is one operation of pusher-client.mjs.
type pusherOp map[string]any

// pusherResult is what pusher-client.mjs printed for one operation.
type pusherResult struct {
	Op     string          `json:"op"`
	OK     bool            `json:"ok"`
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body"`
	Error  string          `json:"error"`
	Result struct {
		Auth        string `json:"auth"`
		ChannelData string `json:"channel_data"`
	} `json:"result"`
}

func (r pusherResult) String() string {
	return r.Op + ": ok=" + map[bool]string{true: "true", false: "false"}[r.OK] + " " + string(r.Body) + " " + r.Error
}

// runPusherNode runs the ops with the pusher npm package against nodes (an op's "via" is an
// index into nodes) and returns one result per op.
func runPusherNode(t *testing.T, app pusherApp, nodes []*herald, ops ...pusherOp) []pusherResult {
	t.Helper()
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("this test needs Node.js (node on PATH): %v", err)
	}
	script, err := filepath.Abs(filepath.Join("node", "pusher-client.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("node", "node_modules", "pusher", "package.json")); err != nil {
		t.Fatalf("the pusher npm package is not installed: run `npm ci` in test/node (make test does when node_modules is missing): %v", err)
	}
	ports := make([]string, len(nodes))
	for i, n := range nodes {
		_, port, err := net.SplitHostPort(n.Addr)
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = port
	}
	arg, err := json.Marshal(map[string]any{"appId": app.ID, "key": app.Key, "secret": app.Secret, "ports": ports, "ops": ops})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, script, string(arg))
	cmd.Dir = filepath.Dir(script)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node pusher-client.mjs: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var out []pusherResult
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var r pusherResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("pusher-client.mjs printed %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	if len(out) != len(ops) {
		t.Fatalf("pusher-client.mjs answered %d of %d ops:\n%s\nstderr:\n%s", len(out), len(ops), stdout.String(), stderr.String())
	}
	return out
}

// expectPusherOK checks that an op got a 200 answer whose JSON equals want (compared as JSON).
func expectPusherOK(t *testing.T, what string, r pusherResult, want string) {
	t.Helper()
	if !r.OK || r.Status != http.StatusOK {
		t.Fatalf("%s: want 200, got %s", what, r)
	}
	if want != "" && !pusherJSONEqual(r.Body, []byte(want)) {
		t.Fatalf("%s: answer %s, want %s", what, r.Body, want)
	}
}

func pusherJSONEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}

// expectPusherEvents reads len(want) events and checks channel, event name and data, in order.
func expectPusherEvents(t *testing.T, s *sseStream, want [][3]string) {
	t.Helper()
	got := s.mustEvents(t, len(want), 20*time.Second)
	for i, g := range got {
		w := want[i]
		if g.Env.Channel != w[0] || g.Env.Event != w[1] || !pusherJSONEqual(g.Env.Data, []byte(w[2])) {
			t.Fatalf("%s: event %d is %s %s %s, want %s %s %s", s.URL, i, g.Env.Channel, g.Env.Event, g.Env.Data, w[0], w[1], w[2])
		}
	}
}

// pusherNotice reads the next non-heartbeat frame and checks it is the herald: notice event.
func pusherNotice(t *testing.T, s *sseStream, event string) frame {
	t.Helper()
	f := s.mustEvent(t, 10*time.Second)
	if f.Event != event || f.HasID {
		t.Fatalf("%s: want %s without an id, got %q", s.URL, event, f.Raw)
	}
	return f
}

// waitSubscriptions waits until node answers the Pusher API's subscription_count of channel
// with want: the registry hears of a subscription just after it happens.
func waitSubscriptions(t *testing.T, node *herald, app pusherApp, channel string, want int) {
	t.Helper()
	var last reply
	if !testkit.WaitFor(10*time.Second, func() bool {
		path, hdr := pusherSignedQuery(app, "GET", "/apps/"+app.ID+"/channels/"+channel, url.Values{"info": {"subscription_count"}}, nil)
		last = mustDo(t, "GET", node.Base+path, hdr, nil)
		var got struct {
			SubscriptionCount int `json:"subscription_count"`
		}
		return last.Status == http.StatusOK && json.Unmarshal(last.Body, &got) == nil && got.SubscriptionCount == want
	}) {
		t.Fatalf("subscription_count of %s on %s: last answer %s, want %d", channel, node.Base, last, want)
	}
}

// TestPusherNodeLibrary: a backend using the pusher npm package publishes through node A of a
// two-node deployment — single and multiple channels, toOthers, batches, info, channel
// queries — and subscribers on node B get every event in order; channel authorizations the
// package signs let a Herald socket join private and presence channels; terminating the
// user's connections ends its stream.
func TestPusherNodeLibrary(t *testing.T) {
	t.Parallel()
	cfgPath, app := writePusherConfig(t)
	a, b := startCluster(t, oneRedis, "--config", cfgPath)
	nodes := []*herald{a, b}
	orders, news := uniqueChannel("orders"), uniqueChannel("news")
	priv, pres := "private-"+uniqueChannel("account"), "presence-"+uniqueChannel("room")

	onB := mustSSE(t, b.Base+"/v1/stream?"+url.Values{"channel": {orders, news}}.Encode(), nil)
	onB.expectPreamble(t)
	onA := mustSSE(t, a.Base+"/v1/stream?"+url.Values{"channel": {orders}}.Encode(), nil)
	excluded := onA.expectPreamble(t)
	dyn := mustSSE(t, b.Base+"/v1/stream", nil) // subscribes later, with the package's signatures
	sock := dyn.expectPreamble(t)
	// Each node writes its counts to the shared registry just after its sockets subscribe.
	waitSubscriptions(t, a, app, orders, 2)
	waitSubscriptions(t, a, app, news, 1)

	res := runPusherNode(t, app, nodes,
		pusherOp{"op": "trigger", "channels": orders, "event": "OrderShipped", "data": map[string]any{"id": 1}},
		pusherOp{"op": "trigger", "channels": []string{orders, news}, "event": "Multi", "data": map[string]any{"n": 2}},
		pusherOp{"op": "trigger", "channels": orders, "event": "ToOthers", "data": map[string]any{"n": 3}, "params": map[string]any{"socket_id": excluded.SocketID}},
		pusherOp{"op": "trigger", "channels": orders, "event": "Text", "data": "plain text"},
		pusherOp{"op": "triggerBatch", "batch": []map[string]any{
			{"channel": orders, "name": "B1", "data": map[string]any{"b": 1}},
			{"channel": news, "name": "B2", "data": map[string]any{"b": 2}, "socket_id": sock.SocketID},
			{"channel": news, "name": "B3", "data": map[string]any{"b": 3}, "info": "subscription_count"},
		}},
		pusherOp{"op": "trigger", "channels": orders, "event": "Info", "data": map[string]any{"n": 5}, "params": map[string]any{"info": "subscription_count"}},
		pusherOp{"op": "get", "via": 1, "path": "/channels"},
		pusherOp{"op": "get", "via": 0, "path": "/channels"},
		pusherOp{"op": "get", "via": 1, "path": "/channels/" + orders, "params": map[string]any{"info": "subscription_count"}},
		pusherOp{"op": "authorizeChannel", "socketId": sock.SocketID, "channel": priv},
		pusherOp{"op": "authorizeChannel", "socketId": sock.SocketID, "channel": pres, "presenceData": map[string]any{"user_id": "7", "user_info": map[string]any{"name": "Ann"}}},
		pusherOp{"op": "trigger", "channels": orders, "event": "Forged", "data": map[string]any{}, "secret": "not-the-app-secret"},
	)
	for i, want := range []string{`{}`, `{}`, `{}`, `{}`, `{"batch":[{},{},{"subscription_count":1}]}`} {
		expectPusherOK(t, res[i].Op, res[i], want)
	}
	// Counts are the deployment's, whichever node answers: A holds one subscriber of orders,
	// B the other and news's.
	expectPusherOK(t, "trigger with info on node A", res[5], `{"channels":{"`+orders+`":{"subscription_count":2}}}`)
	expectPusherOK(t, "channels on node B", res[6], `{"channels":{"`+orders+`":{},"`+news+`":{}}}`)
	expectPusherOK(t, "channels on node A", res[7], `{"channels":{"`+orders+`":{},"`+news+`":{}}}`)
	expectPusherOK(t, "one channel on node B", res[8], `{"occupied":true,"subscription_count":2}`)
	if r := res[11]; r.OK || r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), "invalid_signature") {
		t.Fatalf("a request signed with another secret: want 401 invalid_signature, got %s (status %d)", r, r.Status)
	}

	// Node B's subscriber gets everything published through node A, in order; socket_id
	// keeps an event from that one socket only.
	expectPusherEvents(t, onB, [][3]string{
		{orders, "OrderShipped", `{"id":1}`},
		{orders, "Multi", `{"n":2}`},
		{news, "Multi", `{"n":2}`},
		{orders, "ToOthers", `{"n":3}`},
		{orders, "Text", `"plain text"`},
		{orders, "B1", `{"b":1}`},
		{news, "B2", `{"b":2}`},
		{news, "B3", `{"b":3}`},
		{orders, "Info", `{"n":5}`},
	})
	onB.expectQuiet(t, 200*time.Millisecond)
	expectPusherEvents(t, onA, [][3]string{
		{orders, "OrderShipped", `{"id":1}`},
		{orders, "Multi", `{"n":2}`},
		{orders, "Text", `"plain text"`},
		{orders, "B1", `{"b":1}`},
		{orders, "Info", `{"n":5}`},
	})
	onA.expectQuiet(t, 200*time.Millisecond)

	// The package's channel authorizations subscribe B's socket, through node A.
	subscribe := func(body map[string]string) reply {
		t.Helper()
		raw, _ := json.Marshal(body)
		hdr := http.Header{"Content-Type": {"application/json"}, "X-Herald-Socket-Token": {sock.SocketToken}}
		return mustDo(t, "POST", a.Base+"/v1/sockets/"+sock.SocketID+"/subscriptions", hdr, bytes.NewReader(raw))
	}
	privAuth, presAuth := res[9].Result, res[10].Result
	if !strings.HasPrefix(privAuth.Auth, app.Key+":") || privAuth.ChannelData != "" || presAuth.ChannelData == "" {
		t.Fatalf("authorizeChannel results: %+v %+v", privAuth, presAuth)
	}
	if r := subscribe(map[string]string{"channel": priv, "auth": privAuth.Auth}); r.Status != http.StatusOK {
		t.Fatalf("subscribe %s with the package's signature: %s", priv, r)
	}
	pusherNotice(t, dyn, "herald:subscription_succeeded")
	if r := subscribe(map[string]string{"channel": pres, "auth": presAuth.Auth, "channel_data": presAuth.ChannelData}); r.Status != http.StatusOK {
		t.Fatalf("subscribe %s with the package's signature: %s", pres, r)
	}
	if f := pusherNotice(t, dyn, "herald:subscription_succeeded"); !strings.Contains(f.Data, `"ids":["7"]`) || !strings.Contains(f.Data, `"name":"Ann"`) {
		t.Fatalf("presence notice: %s", f.Data)
	}
	forged := privAuth.Auth[:len(privAuth.Auth)-1] + map[bool]string{true: "1", false: "0"}[strings.HasSuffix(privAuth.Auth, "0")]
	expectAPIError(t, "a tampered signature", subscribe(map[string]string{"channel": "private-other", "auth": forged}), http.StatusUnauthorized, "invalid_signature")
	pusherNotice(t, dyn, "herald:subscription_error")
	waitSubscriptions(t, a, app, pres, 1)

	res = runPusherNode(t, app, nodes,
		pusherOp{"op": "trigger", "channels": priv, "event": "Secret", "data": map[string]any{"s": 1}},
		pusherOp{"op": "trigger", "channels": []string{pres, priv}, "event": "Hello", "data": map[string]any{"h": 1}},
		pusherOp{"op": "get", "via": 0, "path": "/channels/" + pres + "/users"},
		pusherOp{"op": "get", "via": 1, "path": "/channels", "params": map[string]any{"filter_by_prefix": "presence-", "info": "user_count"}},
		pusherOp{"op": "get", "via": 0, "path": "/channels/" + pres, "params": map[string]any{"info": "user_count,subscription_count"}},
	)
	expectPusherOK(t, "trigger private", res[0], `{}`)
	expectPusherOK(t, "trigger presence and private", res[1], `{}`)
	// Presence is shared: node A knows B's member.
	expectPusherOK(t, "users on node A", res[2], `{"users":[{"id":"7"}]}`)
	expectPusherOK(t, "presence channels on node B", res[3], `{"channels":{"`+pres+`":{"user_count":1}}}`)
	expectPusherOK(t, "presence channel on node A", res[4], `{"occupied":true,"user_count":1,"subscription_count":1}`)
	expectPusherEvents(t, dyn, [][3]string{
		{priv, "Secret", `{"s":1}`},
		{pres, "Hello", `{"h":1}`},
		{priv, "Hello", `{"h":1}`},
	})

	// terminate_connections, sent to node A, ends the user's stream on node B.
	res = runPusherNode(t, app, nodes, pusherOp{"op": "terminateUserConnections", "via": 0, "userId": "7"})
	expectPusherOK(t, "terminate user 7", res[0], `{}`)
	if _, err := dyn.waitEnd(10 * time.Second); err != nil {
		t.Fatalf("the terminated user's stream did not end: %v", err)
	}
	onB.expectQuiet(t, 100*time.Millisecond) // other users' streams go on
	res = runPusherNode(t, app, nodes, pusherOp{"op": "get", "via": 0, "path": "/channels/" + pres + "/users"})
	expectPusherOK(t, "users after terminating", res[0], `{"users":[]}`)
}

// TestPusherCountsAfterANodeDies: the Pusher API's channel queries count every node's
// subscribers, and a node that dies (SIGKILL) stops being counted when its lease runs out:
// subscription_count drops to what is left, and a channel only it held leaves the list.
func TestPusherCountsAfterANodeDies(t *testing.T) {
	t.Parallel()
	cfgPath, app := writePusherConfig(t)
	redis := testRedis(t)
	prefix := "herald-e2e-pusher-death-" + randomSuffix() + ":"
	secret := randomSecret()
	node := func(name, ttl string) *herald {
		return startHerald(t, heraldOpts{name: name, secret: secret, args: []string{
			"--config", cfgPath, "--redis-url", redis, "--redis-prefix", prefix, "--node-ttl", ttl}})
	}
	a, b := node("node-A", "2m"), node("node-B", "2s")
	shared, onlyB := uniqueChannel("shared"), uniqueChannel("only-b")
	for _, s := range []*sseStream{
		mustSSE(t, a.Base+eventsPath(shared), nil),
		mustSSE(t, b.Base+eventsPath(shared), nil),
		mustSSE(t, b.Base+"/v1/stream?"+url.Values{"channel": {shared, onlyB}}.Encode(), nil),
	} {
		defer s.Close()
	}
	waitSubscriptions(t, a, app, shared, 3)
	waitSubscriptions(t, a, app, onlyB, 1)
	listed := func() string {
		path, hdr := pusherSignedQuery(app, "GET", "/apps/"+app.ID+"/channels", url.Values{"info": {"subscription_count"}}, nil)
		return string(mustDo(t, "GET", a.Base+path, hdr, nil).Body)
	}
	if l := listed(); !strings.Contains(l, `"`+shared+`":{"subscription_count":3}`) || !strings.Contains(l, `"`+onlyB+`":{"subscription_count":1}`) {
		t.Fatalf("channels listed by A: %s", l)
	}
	b.Kill()
	waitSubscriptions(t, a, app, shared, 1)
	waitSubscriptions(t, a, app, onlyB, 0)
	if l := listed(); strings.Contains(l, onlyB) || !strings.Contains(l, `"`+shared+`":{"subscription_count":1}`) {
		t.Fatalf("channels listed by A after B died: %s", l)
	}
}
