package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/herald-rt/herald/server"
	"github.com/herald-rt/herald/test/testkit"
)

// ---------------------------------------------------------------------------------------------
// The model

// stats builds a node's stats answer at second sec of a fixed clock, with these counters
// (publishes, publish_failures, deliveries, bytes_written, slow_disconnects, resyncs).
func stats(sec int, c ...int64) *nodeStats {
	st := &nodeStats{Time: clock(sec), Connections: map[string]int64{"sse": 2, "sse_multi": 1, "poll_socket": 0, "poll": 1}}
	ptrs := []**int64{&st.Publishes, &st.PublishFailures, &st.Deliveries, &st.BytesWritten, &st.SlowDisconnects, &st.Resyncs}
	for i, v := range c {
		*ptrs[i] = &v
	}
	return st
}

func clock(sec int) time.Time { return time.Date(2026, 12, 4, 20, 0, sec, 0, time.UTC) }

func node(id string, st *nodeStats) adminNode {
	return adminNode{ID: id, Addr: "127.0.0.1:80" + id, Started: clock(0), Connections: map[string]int64{"sse": 7}, Sockets: 7, Stats: st}
}

func refresh(d *deployment, sec int, nodes ...adminNode) {
	d.update(adminNodes{App: "1001", Time: clock(sec), Nodes: nodes}, adminChannels{})
}

// rateOf is n's rate of c, or -1 when it is unknown.
func rateOf(d *deployment, id string, c counter) float64 {
	for _, n := range d.Nodes {
		if n.ID == id {
			if n.Rates[c] == nil {
				return -1
			}
			return *n.Rates[c]
		}
	}
	panic("no node " + id)
}

func ids(d *deployment) string {
	var s []string
	for _, n := range d.Nodes {
		s = append(s, n.ID)
	}
	return strings.Join(s, ",")
}

// TestRatesFromTwoRefreshes: a rate is the counter's increase over the node's own clock
// between two refreshes; a node's first refresh has none; the header sums the nodes.
func TestRatesFromTwoRefreshes(t *testing.T) {
	d := &deployment{}
	refresh(d, 10, node("1", stats(10, 100, 1, 1000, 50_000, 0, 3)), node("2", stats(11, 0, 0, 0, 0, 0, 0)))
	for _, id := range []string{"1", "2"} {
		for c := range numCounters {
			if r := rateOf(d, id, c); r != -1 {
				t.Fatalf("first refresh: node %s has %s rate %v, want unknown", id, counterNames[c], r)
			}
		}
	}
	if tot := d.totals(); tot.Publishes != nil || tot.Deliveries != nil || tot.Nodes != 2 || tot.Connections != 8 {
		t.Fatalf("first refresh totals %+v", tot)
	}
	if v := d.view(0); !strings.Contains(v, "– publishes/s") || !strings.Contains(v, "2 nodes") {
		t.Fatalf("first refresh view:\n%s", v)
	}

	// Node 1's clock moves 2 s, node 2's 4 s: each is measured by its own.
	refresh(d, 11, node("1", stats(12, 150, 1, 2000, 70_000, 4, 3)), node("2", stats(15, 40, 0, 80, 0, 0, 1)))
	want := map[string][numCounters]float64{
		"1": {25, 0, 500, 10_000, 2, 0},
		"2": {10, 0, 20, 0, 0, 0.25},
	}
	for id, w := range want {
		for c := range numCounters {
			if r := rateOf(d, id, c); r != w[c] {
				t.Errorf("node %s %s rate = %v, want %v", id, counterNames[c], r, w[c])
			}
		}
	}
	tot := d.totals()
	if tot.Publishes == nil || *tot.Publishes != 35 || tot.Deliveries == nil || *tot.Deliveries != 520 {
		t.Fatalf("totals %+v, want 35 publishes/s and 520 deliveries/s", tot)
	}
	v := d.view(200)
	for _, s := range []string{"35.0 publishes/s", "520 deliveries/s", "2 nodes", "8 connections", "│ 1 "} {
		if !strings.Contains(v, s) {
			t.Errorf("view lacks %q:\n%s", s, v)
		}
	}
}

// TestRestartHidesRates: a counter that went down means the node restarted and its counters
// began again: every rate of that refresh is unknown, and the next is measured from it.
func TestRestartHidesRates(t *testing.T) {
	d := &deployment{}
	refresh(d, 0, node("1", stats(0, 500, 0, 5000, 0, 0, 0)))
	refresh(d, 1, node("1", stats(1, 600, 0, 6000, 0, 0, 0)))
	if r := rateOf(d, "1", publishes); r != 100 {
		t.Fatalf("before the restart: %v publishes/s, want 100", r)
	}
	// Publishes went down, deliveries up (past their old value): neither rate can be trusted.
	refresh(d, 2, node("1", stats(2, 10, 0, 7000, 0, 0, 0)))
	for c := range numCounters {
		if r := rateOf(d, "1", c); r != -1 {
			t.Fatalf("after a counter went down: %s rate %v, want unknown", counterNames[c], r)
		}
	}
	if tot := d.totals(); tot.Publishes != nil {
		t.Fatalf("totals after the restart: %v publishes/s, want unknown", *tot.Publishes)
	}
	refresh(d, 3, node("1", stats(4, 30, 0, 7100, 0, 0, 0)))
	if r := rateOf(d, "1", publishes); r != 10 {
		t.Fatalf("the refresh after the restart: %v publishes/s, want 10", r)
	}

	// A changed start time is a restart too, whatever the counters did.
	n := node("1", stats(5, 40, 0, 7200, 0, 0, 0))
	n.Started = clock(5)
	refresh(d, 4, n)
	if r := rateOf(d, "1", publishes); r != -1 {
		t.Fatalf("after the start time changed: %v publishes/s, want unknown", r)
	}

	// A clock that did not move gives no rate rather than a division by zero.
	n = node("1", stats(5, 40, 0, 7200, 0, 0, 0))
	n.Started = clock(5)
	refresh(d, 5, n)
	if r := rateOf(d, "1", publishes); r != -1 {
		t.Fatalf("same stats time twice: %v publishes/s, want unknown", r)
	}
}

// TestNodesComeAndGo: a new node has no rates the refresh it appears; one gone from the
// registry leaves the table at once, and when it comes back it starts afresh. A node that did
// not answer in time stays, marked silent, and its next rate spans the silence.
func TestNodesComeAndGo(t *testing.T) {
	d := &deployment{}
	refresh(d, 0, node("1", stats(0, 0)))
	refresh(d, 1, node("1", stats(1, 10)), node("2", stats(1, 100)))
	if ids(d) != "1,2" || rateOf(d, "1", publishes) != 10 || rateOf(d, "2", publishes) != -1 {
		t.Fatalf("node 2 appearing: nodes %s, rates %v %v", ids(d), rateOf(d, "1", publishes), rateOf(d, "2", publishes))
	}
	refresh(d, 2, node("1", stats(2, 20)))
	if ids(d) != "1" || strings.Contains(d.view(0), "127.0.0.1:802") {
		t.Fatalf("node 2 gone: nodes %s, view:\n%s", ids(d), d.view(0))
	}
	refresh(d, 3, node("1", stats(3, 30)), node("2", stats(3, 300)))
	if r := rateOf(d, "2", publishes); r != -1 {
		t.Fatalf("node 2 back: %v publishes/s measured from before it left, want unknown", r)
	}

	// Node 2 silent for a refresh: registry figures, no rates; then measured across the gap.
	refresh(d, 4, node("1", stats(4, 40)), node("2", nil))
	n := d.Nodes[1]
	if n.Answered || n.Sockets != 7 || n.Connections["sse"] != 7 || rateOf(d, "2", publishes) != -1 || n.Counters[publishes] != nil {
		t.Fatalf("silent node: %+v", n)
	}
	if v := d.view(0); !strings.Contains(v, "silent") {
		t.Fatalf("a silent node is not shown as such:\n%s", v)
	}
	refresh(d, 5, node("1", stats(5, 50)), node("2", stats(5, 320)))
	if r := rateOf(d, "2", publishes); r != 10 {
		t.Fatalf("after the silence: %v publishes/s, want 10 (20 over 2 s)", r)
	}
}

// TestMissingFields: whatever a node leaves out — the counters not yet served, its stats
// altogether, even its registry figures — is unknown or zero, never a crash, in the view and
// in the snapshot.
func TestMissingFields(t *testing.T) {
	answers := []string{
		`{"nodes":[{"id":"1"}]}`,
		`{"app":"1001","time":"2026-12-04T20:00:00Z","nodes":[{"id":"1","stats":{"time":"2026-12-04T20:00:00Z"}}]}`,
		`{"app":"1001","time":"2026-12-04T20:00:01Z","nodes":[{"id":"1","stats":{"time":"2026-12-04T20:00:01Z","connections":{"sse":1},"sockets":1,"channels":1,"publishes":5,"store_ping_seconds":null}}]}`,
		`{"app":"1001","time":"2026-12-04T20:00:02Z","nodes":[{"id":"1","stats":{"time":"2026-12-04T20:00:02Z","publishes":9}},{"id":"2","stats":{}}]}`,
		`{}`,
	}
	d := &deployment{}
	for i, a := range answers {
		var nodes adminNodes
		if err := json.Unmarshal([]byte(a), &nodes); err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		d.update(nodes, adminChannels{})
		_ = d.view(80)
		_ = d.view(0)
		if _, err := json.Marshal(d.snapshot()); err != nil {
			t.Fatalf("answer %d: snapshot: %v", i, err)
		}
		if i == 3 {
			if r := rateOf(d, "1", publishes); r != 4 {
				t.Fatalf("publishes reported alone: rate %v, want 4", r)
			}
			if r := rateOf(d, "1", deliveries); r != -1 {
				t.Fatalf("deliveries never reported: rate %v, want unknown", r)
			}
			if d.Nodes[1].StatsTime != (time.Time{}) || rateOf(d, "2", publishes) != -1 {
				t.Fatalf("stats {}: %+v", d.Nodes[1])
			}
			s := d.snapshot()
			if s.Nodes[0].Counters["deliveries"] != nil || *s.Nodes[0].Counters["publishes"] != 9 || s.Nodes[0].StorePingSeconds != nil {
				t.Fatalf("snapshot of a partial node: %+v", s.Nodes[0])
			}
		}
	}
	if len(d.Nodes) != 0 || !strings.Contains(d.view(0), "0 nodes") {
		t.Fatalf("an empty answer: %d nodes, view:\n%s", len(d.Nodes), d.view(0))
	}
}

// TestLiveViewKeepsDataOnError: the bubbletea model shows the deployment; a failed refresh
// keeps the last data on screen with the error's code and message under it; q quits.
func TestLiveViewKeepsDataOnError(t *testing.T) {
	m := tea.Model(newMonitorModel(context.Background(), newAdminClient("127.0.0.1:1", "", ""), time.Second))
	if v := m.View(); !strings.Contains(v, "connecting to http://127.0.0.1:1") {
		t.Fatalf("before the first refresh:\n%s", v)
	}
	m, _ = m.Update(tea.WindowSizeMsg{Width: 200, Height: 50})
	m, _ = m.Update(refreshMsg{nodes: adminNodes{App: "1001", Time: clock(0), Nodes: []adminNode{node("1", stats(0, 1))}},
		channels: adminChannels{Total: 1, Channels: []adminChannel{{Name: "chat-1", Subscribers: 4, EventsPerSecond: 1.5}}}, at: time.Now()})
	v := m.View()
	for _, s := range []string{"127.0.0.1:801", "chat-1", "1.5", "updated "} {
		if !strings.Contains(v, s) {
			t.Fatalf("after a refresh the view lacks %q:\n%s", s, v)
		}
	}
	failure := fmt.Errorf("GET x: %w", answerError(401, []byte(`{"error":{"code":"admin_token_invalid","message":"this listener needs the admin token"}}`)))
	m, _ = m.Update(refreshMsg{err: failure, at: time.Now()})
	v = m.View()
	for _, s := range []string{"127.0.0.1:801", "chat-1", "refresh failed", "admin_token_invalid", "this listener needs the admin token", "showing the data of"} {
		if !strings.Contains(v, s) {
			t.Fatalf("after a failed refresh the view lacks %q:\n%s", s, v)
		}
	}
	for _, key := range []tea.KeyMsg{{Type: tea.KeyRunes, Runes: []rune{'q'}}, {Type: tea.KeyCtrlC}} {
		_, cmd := m.Update(key)
		if cmd == nil {
			t.Fatalf("%s: no command", key)
		}
		if _, ok := cmd().(tea.QuitMsg); !ok {
			t.Fatalf("%s does not quit", key)
		}
	}
	if _, cmd := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{'x'}}); cmd != nil {
		t.Fatal("x should do nothing")
	}
}

// ---------------------------------------------------------------------------------------------
// --once --json against canned admin answers

// fakeAdmin serves canned admin answers: nodes[i] for the i-th GET /admin/nodes (the last one
// from then on), and channels for every GET /admin/channels. It records each request.
type fakeAdmin struct {
	*httptest.Server
	mu       sync.Mutex
	nodes    []string
	channels string
	status   int // when not 0, every answer is this status with errBody
	errBody  string
	requests []*http.Request
	calls    int
}

func newFakeAdmin(t *testing.T) *fakeAdmin {
	f := &fakeAdmin{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.requests = append(f.requests, r)
		if f.status != 0 {
			w.WriteHeader(f.status)
			io.WriteString(w, f.errBody)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/admin/nodes":
			io.WriteString(w, f.nodes[min(f.calls, len(f.nodes)-1)])
			f.calls++
		case "/admin/channels":
			io.WriteString(w, f.channels)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// answer sets what the fake answers from now on: the nodes answers and channels, or with
// status not 0, that status and errBody to every request.
func (f *fakeAdmin) answer(nodes []string, channels string, status int, errBody string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes, f.channels, f.status, f.errBody, f.calls = nodes, channels, status, errBody, 0
}

func (f *fakeAdmin) recorded() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.requests...)
}

const (
	cannedNodes1 = `{"app":"1001","time":"2026-12-04T20:00:10Z","nodes":[
	 {"id":"123","self":true,"expires":"2026-12-04T20:00:25Z","addr":"127.0.0.1:8081","admin_addr":"127.0.0.1:8082","version":"dev","hostname":"h","pid":42,
	  "started":"2026-12-04T20:00:00Z","draining":false,"connections":{"sse":1,"sse_multi":0,"poll_socket":0,"poll":0},"sockets":1,"channels":1,
	  "stats":{"time":"2026-12-04T20:00:10Z","connections":{"sse":1,"sse_multi":0,"poll_socket":0,"poll":0},"sockets":1,"channels":1,
	   "publishes":100,"publish_failures":0,"deliveries":1000,"bytes_written":10000,"slow_disconnects":0,"resyncs":2,"store_ping_seconds":0.00031}},
	 {"id":"456","self":false,"expires":"2026-12-04T20:00:25Z","addr":"127.0.0.1:9081","admin_addr":"127.0.0.1:9082","version":"dev","hostname":"h2","pid":43,
	  "started":"2026-12-04T20:00:05Z","draining":false,"connections":{"sse":0,"sse_multi":0,"poll_socket":0,"poll":0},"sockets":0,"channels":0,
	  "stats":{"time":"2026-12-04T20:00:10Z","connections":{"sse":0,"sse_multi":0,"poll_socket":0,"poll":0},"sockets":0,"channels":0}}]}`
	cannedNodes2 = `{"app":"1001","time":"2026-12-04T20:00:12Z","nodes":[
	 {"id":"123","self":true,"expires":"2026-12-04T20:00:27Z","addr":"127.0.0.1:8081","admin_addr":"127.0.0.1:8082","version":"dev","hostname":"h","pid":42,
	  "started":"2026-12-04T20:00:00Z","draining":false,"connections":{"sse":1,"sse_multi":0,"poll_socket":0,"poll":0},"sockets":1,"channels":1,
	  "stats":{"time":"2026-12-04T20:00:12Z","connections":{"sse":3,"sse_multi":1,"poll_socket":0,"poll":0},"sockets":4,"channels":2,
	   "publishes":150,"publish_failures":0,"deliveries":2000,"bytes_written":30000,"slow_disconnects":1,"resyncs":2,"store_ping_seconds":0.00031}},
	 {"id":"456","self":false,"expires":"2026-12-04T20:00:25Z","addr":"127.0.0.1:9081","admin_addr":"127.0.0.1:9082","version":"dev","hostname":"h2","pid":43,
	  "started":"2026-12-04T20:00:05Z","draining":true,"connections":{"sse":2,"sse_multi":0,"poll_socket":1,"poll":0},"sockets":3,"channels":1,
	  "stats":null}]}`
	cannedChannels = `{"app":"1001","total":2,"channels":[{"name":"chat-1","subscribers":4,"events_per_second":1.5},
	 {"name":"chat-2","subscribers":1,"events_per_second":0}],"next_cursor":""}`
)

// TestMonitorOnceJSON: --once --json fetches twice and prints the documented snapshot, with
// the rates of the second refresh; it sends the admin token and the app, and asks for the
// busiest channels.
func TestMonitorOnceJSON(t *testing.T) {
	f := newFakeAdmin(t)
	f.answer([]string{cannedNodes1, cannedNodes2}, cannedChannels, 0, "")
	var out bytes.Buffer
	err := runMonitor([]string{"--admin", f.URL, "--token", "T", "--app", "1001", "--interval", "10ms", "--once", "--json"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
	  "app": "1001",
	  "time": "2026-12-04T20:00:12Z",
	  "totals": {"nodes": 2, "connections": 7, "publishes_per_second": 25, "deliveries_per_second": 500},
	  "nodes": [
	    {"id": "123", "self": true, "addr": "127.0.0.1:8081", "admin_addr": "127.0.0.1:8082", "version": "dev",
	     "hostname": "h", "pid": 42, "started": "2026-12-04T20:00:00Z", "draining": false,
	     "answered": true, "stats_time": "2026-12-04T20:00:12Z",
	     "connections": {"sse": 3, "sse_multi": 1, "poll_socket": 0, "poll": 0}, "sockets": 4, "channels": 2,
	     "counters": {"publishes": 150, "publish_failures": 0, "deliveries": 2000, "bytes_written": 30000, "slow_disconnects": 1, "resyncs": 2},
	     "rates": {"publishes": 25, "publish_failures": 0, "deliveries": 500, "bytes_written": 10000, "slow_disconnects": 0.5, "resyncs": 0},
	     "store_ping_seconds": 0.00031},
	    {"id": "456", "self": false, "addr": "127.0.0.1:9081", "admin_addr": "127.0.0.1:9082", "version": "dev",
	     "hostname": "h2", "pid": 43, "started": "2026-12-04T20:00:05Z", "draining": true,
	     "answered": false, "stats_time": null,
	     "connections": {"sse": 2, "sse_multi": 0, "poll_socket": 1, "poll": 0}, "sockets": 3, "channels": 1,
	     "counters": {"publishes": null, "publish_failures": null, "deliveries": null, "bytes_written": null, "slow_disconnects": null, "resyncs": null},
	     "rates": {"publishes": null, "publish_failures": null, "deliveries": null, "bytes_written": null, "slow_disconnects": null, "resyncs": null},
	     "store_ping_seconds": null}
	  ],
	  "channels": [{"name": "chat-1", "subscribers": 4, "events_per_second": 1.5}, {"name": "chat-2", "subscribers": 1, "events_per_second": 0}],
	  "channels_total": 2
	}`
	var got, wantV any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out.String())
	}
	if err := json.Unmarshal([]byte(want), &wantV); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, wantV) {
		t.Fatalf("snapshot:\n%s\nwant:\n%s", out.String(), want)
	}

	reqs := f.recorded()
	var paths []string
	for _, r := range reqs {
		paths = append(paths, r.URL.Path)
		if a := r.Header.Get("Authorization"); a != "Bearer T" {
			t.Errorf("%s: Authorization %q, want Bearer T", r.URL, a)
		}
		if app := r.URL.Query().Get("app"); app != "1001" {
			t.Errorf("%s: app %q, want 1001", r.URL, app)
		}
		if r.URL.Path == "/admin/channels" && (r.URL.Query().Get("sort") != "subscribers" || r.URL.Query().Get("limit") != "10") {
			t.Errorf("%s: want the ten busiest channels", r.URL)
		}
	}
	if strings.Join(paths, " ") != "/admin/nodes /admin/channels /admin/nodes /admin/channels" {
		t.Fatalf("requests: %v, want two refreshes", paths)
	}
}

// TestMonitorSettingsFromEnvironment: --admin and --token come from HERALD_ADMIN_URL and
// HERALD_ADMIN_TOKEN; an empty token sends no Authorization header at all.
func TestMonitorSettingsFromEnvironment(t *testing.T) {
	f := newFakeAdmin(t)
	f.answer([]string{cannedNodes1}, cannedChannels, 0, "")
	t.Setenv("HERALD_ADMIN_URL", f.URL)
	t.Setenv("HERALD_ADMIN_TOKEN", "from-env")
	t.Setenv("HERALD_APP", "")
	if err := runMonitor([]string{"--once", "--interval", "1ms"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	reqs := f.recorded()
	if len(reqs) != 4 || reqs[0].Header.Get("Authorization") != "Bearer from-env" || reqs[0].URL.Query().Has("app") {
		t.Fatalf("from the environment: %d requests, first %v %q", len(reqs), reqs[0].URL, reqs[0].Header.Get("Authorization"))
	}
	var out bytes.Buffer
	if err := runMonitor([]string{"--token", "", "--once", "--interval", "1ms"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, r := range f.recorded()[4:] {
		if v, ok := r.Header["Authorization"]; ok {
			t.Fatalf("with an empty token: Authorization %q sent", v)
		}
	}
	// --once without --json prints the screen once, as text.
	if s := out.String(); !strings.Contains(s, "2 nodes") || !strings.Contains(s, "chat-1") || !strings.Contains(s, "127.0.0.1:9081") {
		t.Fatalf("--once:\n%s", s)
	}
}

// TestMonitorErrors: an error answer fails --once with its code and message; so does an
// answer that is not the admin API's, and bad flags.
func TestMonitorErrors(t *testing.T) {
	f := newFakeAdmin(t)
	f.answer(nil, "", http.StatusUnauthorized, `{"error":{"code":"admin_token_invalid","message":"this listener needs the admin token"}}`)
	var out bytes.Buffer
	err := runMonitor([]string{"--admin", f.URL, "--token", "wrong", "--once", "--json"}, &out)
	var ae *adminError
	if !errors.As(err, &ae) || ae.Status != 401 || ae.Code != "admin_token_invalid" ||
		!strings.Contains(err.Error(), "admin_token_invalid: this listener needs the admin token (HTTP 401)") {
		t.Fatalf("401: err = %v", err)
	}
	if out.Len() != 0 {
		t.Fatalf("401: printed %q", out.String())
	}

	f.answer(nil, "", http.StatusBadGateway, "<html>\n<b>bad gateway</b></html>")
	err = runMonitor([]string{"--admin", f.URL, "--once"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "HTTP 502: <html> <b>bad gateway</b></html>") {
		t.Fatalf("502 from a proxy: err = %v", err)
	}

	f.answer([]string{`<html>not json</html>`}, cannedChannels, 0, "")
	err = runMonitor([]string{"--admin", f.URL, "--once"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not an admin API answer") {
		t.Fatalf("not JSON: err = %v", err)
	}

	for _, args := range [][]string{{"--json"}, {"--interval", "0s", "--once"}, {"--once", "extra"}} {
		if err := runMonitor(args, io.Discard); err == nil {
			t.Errorf("%q: want an error", args)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// The binary, in a real terminal (tmux), against real nodes

// heraldBinary builds the herald binary once for the tests that run it.
var heraldBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "herald-monitor-test-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "herald")
	return bin, testkit.BuildWithoutRace(bin, "github.com/herald-rt/herald/cmd/herald")
})

var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func buildHerald(t *testing.T) string {
	t.Helper()
	bin, err := heraldBinary()
	if err != nil {
		t.Fatalf("build herald: %v", err)
	}
	return bin
}

// cleanEnv is this process's environment without any HERALD_* setting, plus extra.
func cleanEnv(extra ...string) []string {
	env := extra
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			env = append(env, kv)
		}
	}
	return env
}

const monitorAdminToken = "monitor-test-admin-token"

// heraldNode is one running `herald serve`.
type heraldNode struct {
	name, addr, admin string // admin: http://host:port of its admin listener
	cmd               *exec.Cmd
	logs              *testkit.LogBuffer
	done              chan struct{}
}

// startNode starts `herald serve` on free loopback ports with the admin token and waits, for
// up to 15 s, until it answers GET /v1/health.
func startNode(t *testing.T, bin, name string, secret []byte, args ...string) *heraldNode {
	t.Helper()
	var lastErr error
	for range 3 { // a free port may be taken by someone else before herald binds it
		n, err := tryStartNode(t, bin, name, secret, args)
		if err == nil {
			return n
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("%s did not start: %v", name, lastErr)
	return nil
}

func tryStartNode(t *testing.T, bin, name string, secret []byte, args []string) (*heraldNode, error) {
	ports := [2]int{}
	for i := range ports {
		p, err := testkit.FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	n := &heraldNode{name: name, addr: fmt.Sprintf("127.0.0.1:%d", ports[0]), admin: fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		logs: &testkit.LogBuffer{}, done: make(chan struct{})}
	n.cmd = exec.Command(bin, append([]string{"serve", "--addr", n.addr, "--admin-addr", strings.TrimPrefix(n.admin, "http://"),
		"--admin-token", monitorAdminToken}, args...)...)
	n.cmd.Env = cleanEnv("HERALD_JWT_SECRET=" + string(secret))
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		n.cmd.Process.Kill()
		<-n.done
		if t.Failed() {
			t.Logf("---- %s output ----\n%s", n.name, n.logs.String())
		}
	})
	healthy := testkit.WaitFor(15*time.Second, func() bool {
		select {
		case <-n.done:
			return true
		default:
		}
		resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + n.addr + "/v1/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	select {
	case <-n.done:
		return nil, fmt.Errorf("%s exited: %s", name, n.logs.String())
	default:
	}
	if !healthy {
		return nil, fmt.Errorf("%s: no healthy answer within 15 s: %s", name, n.logs.String())
	}
	return n, nil
}

// stop sends SIGTERM and waits up to 15 s for the process to exit.
func (n *heraldNode) stop(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("%s: SIGTERM: %v", n.name, err)
	}
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not exit within 15 s of SIGTERM", n.name)
	}
}

// terminal is a detached tmux session of fixed size on a tmux server of its own, which the
// test's end kills: it never touches the user's tmux.
type terminal struct {
	t      *testing.T
	socket string
	conf   string
	status string // the file the program's exit status is written to
}

// startTerminal runs argv in a new 200×50 tmux session. A shell runs it and writes its exit
// status to a file: tmux 3.3 sometimes leaves an exited pane's process unreaped, its status
// unknown. The pane stays after the program exits (remain-on-exit), so a failed test still
// sees its last screen.
func startTerminal(t *testing.T, argv ...string) *terminal {
	t.Helper()
	dir := t.TempDir()
	term := &terminal{t: t, socket: fmt.Sprintf("herald-monitor-test-%d-%d", os.Getpid(), time.Now().UnixNano()),
		conf: filepath.Join(dir, "tmux.conf"), status: filepath.Join(dir, "status")}
	if err := os.WriteFile(term.conf, []byte("set -g remain-on-exit on\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `"$@"; echo $? > "$0.tmp" && mv "$0.tmp" "$0"` // the file appears whole
	args := append([]string{"new-session", "-d", "-s", "monitor", "-x", "200", "-y", "50", "sh", "-c", script, term.status}, argv...)
	if out, err := term.tmux(args...); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	socketPath, _ := term.tmux("display-message", "-p", "#{socket_path}")
	t.Cleanup(func() {
		term.tmux("kill-server")
		if p := strings.TrimSpace(socketPath); filepath.Base(p) == term.socket {
			os.Remove(p) // tmux leaves it behind
		}
	})
	return term
}

func (term *terminal) tmux(args ...string) (string, error) {
	cmd := exec.Command("tmux", append([]string{"-L", term.socket, "-f", term.conf}, args...)...)
	cmd.Env = cleanEnv() // the server, started by this client, passes its environment on to the pane
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// screen is what the pane shows now, as text.
func (term *terminal) screen() string {
	out, err := term.tmux("capture-pane", "-p", "-t", "monitor")
	if err != nil {
		term.t.Fatalf("tmux capture-pane: %v: %s", err, out)
	}
	return out
}

// waitScreen captures the pane every 100 ms until ok accepts it, for up to 15 s.
func (term *terminal) waitScreen(what string, ok func(screen string) bool) string {
	term.t.Helper()
	var s string
	if !testkit.WaitFor(15*time.Second, func() bool {
		s = term.screen()
		if ok(s) {
			return true
		}
		time.Sleep(90 * time.Millisecond)
		return false
	}) {
		term.t.Fatalf("the monitor did not show %s within 15 s; the screen:\n%s", what, s)
	}
	return s
}

// quit presses q and waits up to 15 s for the program to exit, which must be with status 0.
func (term *terminal) quit() {
	term.t.Helper()
	if out, err := term.tmux("send-keys", "-t", "monitor", "q"); err != nil {
		term.t.Fatalf("tmux send-keys: %v: %s", err, out)
	}
	var status []byte
	if !testkit.WaitFor(15*time.Second, func() bool {
		var err error
		status, err = os.ReadFile(term.status)
		return err == nil
	}) {
		term.t.Fatalf("the monitor still runs 15 s after q; the screen:\n%s", term.screen())
	}
	if s := strings.TrimSpace(string(status)); s != "0" {
		term.t.Fatalf("the monitor exited with status %s; the screen:\n%s", s, term.screen())
	}
}

var (
	nodesRe     = regexp.MustCompile(`\b(\d+) nodes?\b`)
	publishesRe = regexp.MustCompile(`(\S+) publishes/s`)
	deliveryRe  = regexp.MustCompile(`(\S+) deliveries/s`)
)

// headerNumber is the figure re captures on the screen; ok is false when it is absent or
// not a number (unknown).
func headerNumber(screen string, re *regexp.Regexp) (float64, bool) {
	m := re.FindStringSubmatch(screen)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

func showsNodes(n int) func(string) bool {
	return func(s string) bool {
		v, ok := headerNumber(s, nodesRe)
		return ok && int(v) == n
	}
}

// tableRow is the cells of the first table line that contains key.
func tableRow(screen, key string) []string {
	for _, line := range strings.Split(screen, "\n") {
		if !strings.Contains(line, key) || !strings.Contains(line, "│") {
			continue
		}
		var cells []string
		for _, c := range strings.Split(line, "│") {
			if c = strings.TrimSpace(c); c != "" {
				cells = append(cells, c)
			}
		}
		return cells
	}
	return nil
}

func requireTmux(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not on PATH")
	}
}

func secretForTest() []byte {
	return []byte(fmt.Sprintf("monitor-test-secret-%d-0123456789abcdef", time.Now().UnixNano()))
}

// TestMonitorLiveOneNode: the live view of one real node in a real terminal shows the node,
// a subscriber's connection and channel, and the rates while events are published and
// delivered; q ends it with status 0.
func TestMonitorLiveOneNode(t *testing.T) {
	requireTmux(t)
	t.Parallel()
	bin := buildHerald(t)
	secret := secretForTest()
	n := startNode(t, bin, "node", secret)
	term := startTerminal(t, bin, "monitor", "--admin", n.admin, "--token", monitorAdminToken, "--interval", "500ms")
	term.waitScreen("the node, alone", func(s string) bool { return showsNodes(1)(s) && strings.Contains(s, n.addr) })

	m, err := server.NewMinter(secret, "")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.Mint(server.TokenSpec{Subject: "monitor-test", Subscribe: []string{"*"}, Publish: []string{"*"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	channel := fmt.Sprintf("monitor-%d", time.Now().UnixNano())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()

	// One SSE subscriber, reading everything, so that every publish is a delivery.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.addr+"/v1/channels/"+channel+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("subscribe: HTTP %d", resp.StatusCode)
	}
	var delivered atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data:") {
				delivered.Add(1)
			}
		}
	}()
	term.waitScreen("the subscriber's connection and channel", func(s string) bool {
		row := tableRow(s, channel)
		return strings.Contains(s, "1 connection ") && len(row) == 3 && row[1] == "1"
	})

	// Publish for as long as the check takes: a rate is measured between two refreshes, and
	// both must fall inside the burst.
	var published atomic.Int64
	publishErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		client := &http.Client{Timeout: 10 * time.Second}
		for i := 0; ctx.Err() == nil; i++ {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.addr+"/v1/channels/"+channel+"/events",
				strings.NewReader(fmt.Sprintf(`{"event":"Tick","data":{"n":%d}}`, i)))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					publishErr <- err
				}
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				publishErr <- fmt.Errorf("publish: HTTP %d", resp.StatusCode)
				return
			}
			published.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	}()

	if nodeReportsCounters(t, n) {
		term.waitScreen("non-zero publishes/s and deliveries/s", func(s string) bool {
			p, okp := headerNumber(s, publishesRe)
			d, okd := headerNumber(s, deliveryRe)
			row := tableRow(s, n.addr)
			return okp && p > 0 && okd && d > 0 && len(row) == len(nodeColumns) && row[11] != unknown && row[11] != "0"
		})
	} else {
		// This node's stats carry no counters yet (the server side is still to come): the
		// monitor must say it does not know rather than invent a rate, and the channel's rate,
		// which the admin API does serve, must show the burst.
		t.Log("the node reports no publish counters: checking the channel's events/s, and that publishes/s is unknown")
		s := term.waitScreen("the channel's non-zero events/s", func(s string) bool {
			row := tableRow(s, channel)
			if len(row) != 3 {
				return false
			}
			v, err := strconv.ParseFloat(row[2], 64)
			return err == nil && v > 0
		})
		if m := publishesRe.FindStringSubmatch(s); m == nil || m[1] != unknown {
			t.Fatalf("publishes/s without counters: %q, want %q; the screen:\n%s", m, unknown, s)
		}
	}
	cancel()
	wg.Wait()
	select {
	case err := <-publishErr:
		t.Fatal(err)
	default:
	}
	if published.Load() == 0 || delivered.Load() == 0 {
		t.Fatalf("published %d, delivered %d", published.Load(), delivered.Load())
	}
	term.quit()
}

// nodeReportsCounters tells whether n's admin API gives its publish counter.
func nodeReportsCounters(t *testing.T, n *heraldNode) bool {
	t.Helper()
	c := newAdminClient(n.admin, monitorAdminToken, "")
	nodes, _, err := c.fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(nodes.Nodes) == 1 && nodes.Nodes[0].Stats != nil && nodes.Nodes[0].Stats.Publishes != nil
}

// TestMonitorLiveNodesComeAndGo: two nodes on one Redis. The monitor, watching the first,
// shows the second as soon as it registers and drops it when it stops (SIGTERM deregisters
// it at once); q ends it with status 0.
func TestMonitorLiveNodesComeAndGo(t *testing.T) {
	requireTmux(t)
	t.Parallel()
	bin := buildHerald(t)
	redis, err := testkit.StartRedis()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(redis.Close)
	secret := secretForTest()
	args := []string{"--redis-url", redis.URL(), "--redis-prefix", fmt.Sprintf("monitor-test-%d:", time.Now().UnixNano()), "--node-ttl", "3s"}
	a := startNode(t, bin, "node A", secret, args...)
	term := startTerminal(t, bin, "monitor", "--admin", a.admin, "--token", monitorAdminToken, "--interval", "500ms")
	term.waitScreen("node A alone", func(s string) bool { return showsNodes(1)(s) && strings.Contains(s, a.addr) })

	b := startNode(t, bin, "node B", secret, args...)
	s := term.waitScreen("nodes A and B", func(s string) bool {
		return showsNodes(2)(s) && tableRow(s, a.addr) != nil && tableRow(s, b.addr) != nil
	})
	if row := tableRow(s, a.addr); len(row) == 0 || !strings.HasSuffix(row[0], " *") {
		t.Fatalf("node A, the node asked, is not marked: %q", row)
	}

	b.stop(t)
	term.waitScreen("node A alone again", func(s string) bool {
		return showsNodes(1)(s) && tableRow(s, a.addr) != nil && !strings.Contains(s, b.addr)
	})
	term.quit()
}

// TestMonitorBinaryFailsWithTheError: `herald monitor --once` with a wrong admin token
// exits non-zero with the error's code and message on stderr, and prints nothing else.
func TestMonitorBinaryFailsWithTheError(t *testing.T) {
	t.Parallel()
	bin := buildHerald(t)
	f := newFakeAdmin(t)
	f.answer(nil, "", http.StatusUnauthorized, `{"error":{"code":"admin_token_invalid","message":"this listener needs the admin token"}}`)
	cmd := exec.Command(bin, "monitor", "--admin", f.URL, "--token", "wrong", "--once", "--json")
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1", err)
	}
	if stdout.Len() != 0 || !strings.Contains(stderr.String(), "admin_token_invalid: this listener needs the admin token (HTTP 401)") {
		t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}
