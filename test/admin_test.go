package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The admin listener and the node registry, seen from outside: which nodes are live, where a
// channel's subscribers are, what a dead or departed node leaves behind (nothing), and the
// connection limits.

const adminToken = "admin-token-for-the-e2e-tests"

// adminGet calls the admin listener of h with the admin token and decodes a 200 answer.
func adminGet(t *testing.T, h *herald, path string, out any) {
	t.Helper()
	r := mustDo(t, "GET", h.Admin+path, bearerHeader(adminToken), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s on %s: %s", path, h.name, r)
	}
	if err := json.Unmarshal(r.Body, out); err != nil {
		t.Fatalf("GET %s on %s: %v in %s", path, h.name, err, r.Body)
	}
}

type adminNodesAnswer struct {
	Nodes []struct {
		ID          string           `json:"id"`
		Self        bool             `json:"self"`
		Addr        string           `json:"addr"`
		AdminAddr   string           `json:"admin_addr"`
		PID         int              `json:"pid"`
		Connections map[string]int64 `json:"connections"`
		Stats       *struct {
			Connections map[string]int64 `json:"connections"`
			Sockets     int              `json:"sockets"`
			Channels    int              `json:"channels"`
		} `json:"stats"`
	} `json:"nodes"`
}

// addrs lists the API addresses of the live nodes.
func (a adminNodesAnswer) addrs() []string {
	var out []string
	for _, n := range a.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

type adminChannelAnswer struct {
	Name        string         `json:"name"`
	Head        string         `json:"head"`
	Retained    int            `json:"retained"`
	Subscribers int            `json:"subscribers"`
	ByNode      map[string]int `json:"subscribers_by_node"`
}

// waitAdmin calls path on h until ok accepts the answer, or fails the test after 20 s.
func waitAdmin[T any](t *testing.T, h *herald, path, what string, ok func(T) bool) T {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var v T
		adminGet(t, h, path, &v)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %+v after 20 s", what, v)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAdminNeedsItsToken: with an admin token set, every admin route refuses a request
// without it or with another token, and the public API's tokens do not open it.
func TestAdminNeedsItsToken(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--admin-token", adminToken}})
	for _, path := range []string{"/admin/nodes", "/admin/channels", "/admin/channels/x", "/debug/pprof/", "/console", "/console/", "/admin/dev/token"} {
		expectAPIError(t, path+" without a token", mustDo(t, "GET", h.Admin+path, nil, nil), http.StatusUnauthorized, "admin_token_invalid")
		expectAPIError(t, path+" with another token", mustDo(t, "GET", h.Admin+path, bearerHeader(adminToken+"x"), nil), http.StatusUnauthorized, "admin_token_invalid")
		expectAPIError(t, path+" with a publisher JWT", mustDo(t, "GET", h.Admin+path, bearerHeader(h.Publisher(t)), nil), http.StatusUnauthorized, "admin_token_invalid")
	}
	// The admin routes are not on the public listener at all.
	if r := mustDo(t, "GET", h.Base+"/admin/nodes", bearerHeader(adminToken), nil); r.Status != http.StatusNotFound {
		t.Fatalf("GET /admin/nodes on the public listener: %s, want 404", r)
	}
	var nodes adminNodesAnswer
	adminGet(t, h, "/admin/nodes", &nodes)
	if len(nodes.Nodes) != 1 || !nodes.Nodes[0].Self || nodes.Nodes[0].Addr != h.Addr || nodes.Nodes[0].Stats == nil {
		t.Fatalf("one node with the memory store: got %+v", nodes)
	}
	expectAPIError(t, "bad sort", mustDo(t, "GET", h.Admin+"/admin/channels?sort=size", bearerHeader(adminToken), nil), http.StatusBadRequest, "invalid_sort")
	expectAPIError(t, "unknown app", mustDo(t, "GET", h.Admin+"/admin/nodes?app=nope", bearerHeader(adminToken), nil), http.StatusNotFound, "unknown_app")
}

// TestRegistryAcrossNodes: three nodes on one Redis. Every node's admin API lists all three
// and where each channel's subscribers are; a node that stops gracefully leaves the registry
// at once, long before its lease would run out; a killed node's entry and its channel counts
// vanish when its short lease expires.
func TestRegistryAcrossNodes(t *testing.T) {
	t.Parallel()
	redis := testRedis(t)
	prefix := fmt.Sprintf("herald-e2e-registry-%s:", randomSuffix())
	secret := randomSecret()
	node := func(name, ttl string) *herald {
		return startHerald(t, heraldOpts{name: name, secret: secret, args: []string{
			"--redis-url", redis, "--redis-prefix", prefix, "--admin-token", adminToken, "--node-ttl", ttl, "--drain-period", "1s"}})
	}
	// A's and B's leases are long: a departure seen within the test is a deregistration.
	a, b := node("node-A", "2m"), node("node-B", "2m")
	c := node("node-C", "2s")
	all := waitAdmin(t, a, "/admin/nodes", "three nodes", func(v adminNodesAnswer) bool { return len(v.Nodes) == 3 })
	for _, n := range all.Nodes {
		if n.Stats == nil || n.PID == 0 || n.AdminAddr == "" {
			t.Fatalf("node %s: no live stats, pid or admin address in %+v", n.ID, n)
		}
	}

	ch, other := uniqueChannel("reg"), uniqueChannel("reg-other")
	streams := []*sseStream{
		mustSSE(t, a.Base+eventsPath(ch), nil),
		mustSSE(t, b.Base+eventsPath(ch), nil),
		mustSSE(t, b.Base+"/v1/stream?"+url.Values{"channel": {ch, other}}.Encode(), nil),
		mustSSE(t, c.Base+eventsPath(ch), nil),
		mustSSE(t, c.Base+eventsPath(other), nil),
	}
	defer func() {
		for _, s := range streams {
			s.Close()
		}
	}()
	tok := a.Publisher(t)
	a.publishN(t, tok, ch, "E", 0, 3)
	byAddr := map[string]string{}
	for _, n := range all.Nodes {
		byAddr[n.Addr] = n.ID
	}
	info := waitAdmin(t, b, "/admin/channels/"+url.PathEscape(ch), "four subscribers of "+ch, func(v adminChannelAnswer) bool { return v.Subscribers == 4 })
	want := map[string]int{byAddr[a.Addr]: 1, byAddr[b.Addr]: 2, byAddr[c.Addr]: 1}
	if fmt.Sprint(info.ByNode) != fmt.Sprint(want) || info.Retained != 3 || info.Head == "" {
		t.Fatalf("%s: got %+v, want subscribers_by_node %v, retained 3 and a head", ch, info, want)
	}
	type channelsAnswer struct {
		Total    int `json:"total"`
		Channels []struct {
			Name        string `json:"name"`
			Subscribers int    `json:"subscribers"`
		} `json:"channels"`
		NextCursor string `json:"next_cursor"`
	}
	list := waitAdmin(t, a, "/admin/channels?sort=subscribers&prefix=reg", "two occupied channels", func(v channelsAnswer) bool {
		return v.Total == 2 && len(v.Channels) == 2 && v.Channels[0].Subscribers == 4 && v.Channels[1].Subscribers == 2
	})
	if list.Channels[0].Name != ch || list.Channels[1].Name != other {
		t.Fatalf("busiest first: got %+v", list)
	}
	page := waitAdmin(t, a, "/admin/channels?prefix=reg&limit=1", "a page of one", func(v channelsAnswer) bool { return v.Total == 2 })
	rest := waitAdmin(t, a, "/admin/channels?prefix=reg&limit=1&cursor="+url.QueryEscape(page.NextCursor), "the next page", func(v channelsAnswer) bool { return true })
	if len(page.Channels) != 1 || len(rest.Channels) != 1 || page.Channels[0].Name >= rest.Channels[0].Name || rest.NextCursor != "" {
		t.Fatalf("pages by name: %+v then %+v", page, rest)
	}

	// Graceful: B deregisters as its drain starts; its two streams leave ch's count.
	b.Signal(syscall.SIGTERM)
	waitAdmin(t, a, "/admin/nodes", "B gone at once", func(v adminNodesAnswer) bool { return len(v.Nodes) == 2 })
	if _, exited := b.WaitExit(15 * time.Second); !exited {
		t.Fatal("node B did not exit on SIGTERM")
	}
	waitAdmin(t, a, "/admin/channels/"+url.PathEscape(ch), "B's subscribers gone", func(v adminChannelAnswer) bool {
		return v.Subscribers == 2 && v.ByNode[byAddr[b.Addr]] == 0
	})

	// Killed: C's entry and counts stay until its 2 s lease runs out, then vanish.
	c.Kill()
	left := waitAdmin(t, a, "/admin/nodes", "C expired", func(v adminNodesAnswer) bool { return len(v.Nodes) == 1 })
	if left.Nodes[0].Addr != a.Addr || !left.Nodes[0].Self {
		t.Fatalf("the node left: %+v, want A", left)
	}
	waitAdmin(t, a, "/admin/channels/"+url.PathEscape(ch), "C's subscribers gone", func(v adminChannelAnswer) bool {
		return v.Subscribers == 1 && v.ByNode[byAddr[a.Addr]] == 1 && len(v.ByNode) == 1
	})
	waitAdmin(t, a, "/admin/channels?prefix=reg", "only ch occupied", func(v channelsAnswer) bool {
		return v.Total == 1 && len(v.Channels) == 1 && v.Channels[0].Name == ch
	})
}

// TestConnectionLimits: the node's --max-connections and an app's limits.max_connections
// refuse the connection over the limit with 503 over_capacity and a Retry-After, count
// streams and waiting polls alike, and admit again once a connection closes.
func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(cfg, []byte(`
default_app: "1001"
apps:
  - id: "1001"
    key: inbox-key
    secret: inbox-secret-inbox-secret
  - id: "1002"
    key: small-key
    secret: small-secret-small-secret
    limits:
      max_connections: 1
`), 0o600); err != nil {
		t.Fatal(err)
	}
	h := startHerald(t, heraldOpts{args: []string{"--config", cfg, "--max-connections", "3", "--admin-token", adminToken}})
	expectOverCapacity := func(what string, r reply) {
		t.Helper()
		expectAPIError(t, what, r, http.StatusServiceUnavailable, "over_capacity")
		if s, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || s < 2 || s > 5 {
			t.Fatalf("%s: Retry-After %q, want 2 to 5 seconds", what, r.Header.Get("Retry-After"))
		}
	}

	// App 1002 allows one connection.
	small := appToken(t, h.Secret, "1002", "u")
	first := mustSSE(t, h.Base+eventsPath(uniqueChannel("small")), bearerHeader(small))
	_, err := openSSE(h.Base+eventsPath(uniqueChannel("small")), bearerHeader(small))
	var refused *statusError
	if !errors.As(err, &refused) {
		t.Fatalf("second stream of app 1002: %v, want a refusal", err)
	}
	expectOverCapacity("second stream of app 1002", refused.r)

	// The node allows three: 1002's one, and two of the default app (a stream, a waiting poll).
	ch := uniqueChannel("limit")
	second := mustSSE(t, h.Base+eventsPath(ch), nil)
	head := h.mustPoll(t, pollPath(ch), nil, "")
	waiting := pollInFlight(t, h, pollPath(ch), url.Values{"cursor": {head.Cursor}, "timeout": {"20"}})
	waitAdmin(t, h, "/admin/nodes?app=1001", "a stream and a waiting poll counted", func(v adminNodesAnswer) bool {
		return len(v.Nodes) == 1 && v.Nodes[0].Stats != nil && v.Nodes[0].Stats.Connections["sse"] == 1 && v.Nodes[0].Stats.Connections["poll"] == 1
	})
	_, err = openSSE(h.Base+eventsPath(ch), nil)
	if !errors.As(err, &refused) {
		t.Fatalf("fourth connection: %v, want a refusal", err)
	}
	expectOverCapacity("fourth connection on the node", refused.r)
	r := mustDo(t, "GET", h.Base+pollPath(ch)+"?cursor="+url.QueryEscape(head.Cursor)+"&timeout=1", nil, nil)
	expectOverCapacity("a poll over the node's limit", r)

	// The waiting poll answers (an event), and its place is free again.
	h.mustPublish(t, h.Publisher(t), ch, "E", 1)
	if res := <-waiting; res.err != nil || len(res.a.Events) != 1 {
		t.Fatalf("waiting poll: %+v", res)
	}
	third := waitOpenSSE(t, h.Base+eventsPath(ch), nil)
	first.Close()
	fourth := waitOpenSSE(t, h.Base+eventsPath(uniqueChannel("small")), bearerHeader(small))
	for _, s := range []*sseStream{second, third, fourth} {
		s.Close()
	}
}

// waitOpenSSE opens a stream, retrying while the server is still counting a connection that
// just closed.
func waitOpenSSE(t *testing.T, rawURL string, header http.Header) *sseStream {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := openSSE(rawURL, header)
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s not admitted after 10 s: %v", rawURL, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConnRate: with --max-conn-rate, one address opening connections faster than the rate
// is refused with 429 rate_limited and a Retry-After, and counted in the metrics.
func TestConnRate(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--max-conn-rate", "2", "--admin-token", adminToken}})
	ch := uniqueChannel("rate")
	head := h.mustPoll(t, pollPath(ch), nil, "") // a head poll opens no connection
	q := "?timeout=0&cursor=" + url.QueryEscape(head.Cursor)
	var refused reply
	for i := 0; i < 10; i++ { // a burst of two is allowed; ten at once cannot all be
		r := mustDo(t, "GET", h.Base+pollPath(ch)+q, nil, nil)
		if r.Status != http.StatusOK {
			refused = r
			break
		}
	}
	expectAPIError(t, "polls faster than the rate", refused, http.StatusTooManyRequests, "rate_limited")
	if s, err := strconv.Atoi(refused.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q", refused.Header.Get("Retry-After"))
	}
	m, _ := scrape(t, h)
	if got := m[series("herald_connections_refused_total", "app", "default", "limit", "rate")]; got != 1 {
		t.Fatalf("refused by rate: %v, want 1", got)
	}
}
