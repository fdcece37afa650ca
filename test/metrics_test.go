package test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// The metrics, read the way Prometheus reads them: after a known workload every counter says
// exactly what happened, and the exposition passes promtool's lint.

// scrape reads /metrics of h's admin listener into "name{labels}" → value, labels sorted by
// name as Prometheus writes them.
func scrape(t *testing.T, h *herald) (map[string]float64, []byte) {
	t.Helper()
	r := mustDo(t, "GET", h.Admin+"/metrics", bearerHeader(adminToken), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /metrics: %s", r)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, r.Body
}

// series names one series as the exposition writes it.
func series(name string, labels ...string) string {
	if len(labels) == 0 {
		return name
	}
	pairs := make([]string, 0, len(labels)/2)
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, labels[i]+`="`+labels[i+1]+`"`)
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// waitMetric scrapes until the series has want, then checks it stays there for a moment
// (a counter past want is a double count).
func waitMetric(t *testing.T, h *herald, s string, want float64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		m, _ := scrape(t, h)
		got, ok := m[s]
		if ok && got == want {
			break
		}
		if ok && got > want && !strings.Contains(s, "_bytes") {
			t.Fatalf("%s = %v, want %v", s, got, want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (present: %v), want %v", s, got, ok, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsAfterAKnownWorkload: two one-channel streams and one multiplexed stream on a
// channel, N publishes, a one-shot poll, refused requests, a closed stream — and every
// counter, gauge and byte count says exactly that. Then the exposition is linted.
func TestMetricsAfterAKnownWorkload(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--admin-token", adminToken, "--heartbeat", "60s"}})
	ch := uniqueChannel("metrics")
	app := "default"
	streams := []*sseStream{
		mustSSE(t, h.Base+eventsPath(ch), nil),
		mustSSE(t, h.Base+eventsPath(ch), nil),
		mustSSE(t, h.Base+"/v1/stream?"+url.Values{"channel": {ch, uniqueChannel("metrics-other")}}.Encode(), nil),
	}
	head := h.mustPoll(t, pollPath(ch), nil, "")
	const n = 25
	tok := h.Publisher(t)
	h.publishN(t, tok, ch, "E", 0, n)
	// Every stream reads the preamble and n events; the bytes it read are what was written.
	read := make([]int, len(streams))
	for i, s := range streams {
		events := 0
		for events < n {
			f, err := s.next(10 * time.Second)
			if err != nil {
				t.Fatalf("stream %d after %d events: %v", i, events, err)
			}
			read[i] += len(f.Raw)
			if f.HasID {
				events++
			}
		}
	}
	poll := h.mustPoll(t, pollPath(ch), url.Values{"cursor": {head.Cursor}, "limit": {"10"}}, "")
	if len(poll.Events) != 10 {
		t.Fatalf("poll: %d events, want 10", len(poll.Events))
	}
	for range 3 {
		expectAPIError(t, "publish without a token", mustDo(t, "POST", h.Base+eventsPath(ch), nil, strings.NewReader(`{"event":"E","data":1}`)), http.StatusUnauthorized, "token_missing")
	}

	waitMetric(t, h, series("herald_deliveries_total", "app", app, "transport", "sse"), 2*n)
	waitMetric(t, h, series("herald_deliveries_total", "app", app, "transport", "sse_multi"), n)
	waitMetric(t, h, series("herald_written_bytes_total", "app", app, "transport", "sse"), float64(read[0]+read[1]))
	waitMetric(t, h, series("herald_written_bytes_total", "app", app, "transport", "sse_multi"), float64(read[2]))
	m, text := scrape(t, h)
	want := map[string]float64{
		series("herald_publishes_total", "app", app, "outcome", "appended"):                                            n,
		series("herald_publish_append_seconds_count", "app", app):                                                      n,
		series("herald_connections", "app", app, "transport", "sse"):                                                   2,
		series("herald_connections", "app", app, "transport", "sse_multi"):                                             1,
		series("herald_connections", "app", app, "transport", "poll"):                                                  0,
		series("herald_connections_opened_total", "app", app, "transport", "sse"):                                      2,
		series("herald_connections_opened_total", "app", app, "transport", "poll"):                                     1,
		series("herald_connections_closed_total", "app", app, "transport", "poll"):                                     1,
		series("herald_deliveries_total", "app", app, "transport", "poll"):                                             10,
		series("herald_sockets", "app", app):                                                                           3,
		series("herald_subscriptions", "app", app):                                                                     4,
		series("herald_subscribed_channels", "app", app):                                                               2,
		series("herald_auth_refusals_total", "code", "token_missing"):                                                  3,
		series("herald_http_requests_total", "code", "201", "method", "POST", "route", "/v1/channels/:channel/events"): n,
		series("herald_http_requests_total", "code", "401", "method", "POST", "route", "/v1/channels/:channel/events"): 3,
		series("herald_http_requests_total", "code", "200", "method", "GET", "route", "/v1/channels/:channel/poll"):    2,
		series("herald_build_info", "version", "dev"):                                                                  1,
	}
	for s, v := range want {
		if got, ok := m[s]; !ok || got != v {
			t.Errorf("%s = %v (present: %v), want %v", s, got, ok, v)
		}
	}
	if m[series("herald_written_bytes_total", "app", app, "transport", "poll")] < 10 {
		t.Errorf("poll bytes written: %v", m[series("herald_written_bytes_total", "app", app, "transport", "poll")])
	}
	for _, s := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := m[s]; !ok {
			t.Errorf("%s missing: the Go and process collectors are not registered", s)
		}
	}
	// No label carries a channel name.
	if bytes.Contains(text, []byte(ch)) {
		t.Errorf("a channel name appears in the metrics")
	}

	// A stream that ends is counted closed, once.
	streams[0].Close()
	waitMetric(t, h, series("herald_connections_closed_total", "app", app, "transport", "sse"), 1)
	waitMetric(t, h, series("herald_connections", "app", app, "transport", "sse"), 1)
	for _, s := range streams[1:] {
		s.Close()
	}
	lint(t, text)
}

// lint checks the exposition with promtool when it is installed (make test installs it), and
// with client_golang's promlint otherwise.
func lint(t *testing.T, text []byte) {
	t.Helper()
	if path, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(path, "check", "metrics")
		cmd.Stdin = bytes.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool check metrics: %v\n%s", err, out)
		}
		return
	}
	problems, err := promlint.New(bytes.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// TestMetricsOff: with --metrics=false nothing is served at /metrics and the admin API's
// node stats carry no counters.
func TestMetricsOff(t *testing.T) {
	t.Parallel()
	h := startHerald(t, heraldOpts{args: []string{"--admin-token", adminToken, "--metrics=false"}})
	if r := mustDo(t, "GET", h.Admin+"/metrics", bearerHeader(adminToken), nil); r.Status != http.StatusNotFound {
		t.Fatalf("GET /metrics with --metrics=false: %s, want 404", r)
	}
	var nodes struct {
		Nodes []struct {
			Stats map[string]any `json:"stats"`
		} `json:"nodes"`
	}
	adminGet(t, h, "/admin/nodes", &nodes)
	if len(nodes.Nodes) != 1 || nodes.Nodes[0].Stats == nil {
		t.Fatalf("node stats with --metrics=false: %+v", nodes)
	}
	st := nodes.Nodes[0].Stats
	if ping, ok := st["store_ping_seconds"].(float64); !ok || ping <= 0 || st["deliveries"] != nil || st["publishes"] != nil {
		t.Fatalf("node stats with --metrics=false: %v, want no counters and a store ping", st)
	}
}

// TestMetricsAcrossNodesOnRedis: on Redis, the store's commands are timed, and a socket call
// answered by another node counts as a bus call on the node that sent it.
func TestMetricsAcrossNodesOnRedis(t *testing.T) {
	t.Parallel()
	a, b := startCluster(t, oneRedis, "--admin-token", adminToken)
	s := mustSSE(t, b.Base+"/v1/stream", nil)
	defer s.Close()
	hello := s.expectPreamble(t)
	ch := uniqueChannel("metrics-bus")
	// Subscribed through node A: a call to node B, which holds the socket.
	r := mustDo(t, "POST", a.Base+"/v1/sockets/"+hello.SocketID+"/subscriptions", socketHeader(hello.SocketToken), strings.NewReader(`{"channel":"`+ch+`"}`))
	if r.Status != http.StatusOK {
		t.Fatalf("subscribe through A: %s", r)
	}
	a.mustPublish(t, a.Publisher(t), ch, "E", 1)
	ma, text := scrape(t, a)
	if got := ma[series("herald_bus_calls_total", "op", "subscribe", "outcome", "answered")]; got != 1 {
		t.Errorf("A's answered subscribe calls: %v, want 1", got)
	}
	if got := ma[series("herald_store_command_seconds_count", "command", "pipeline:evalsha")]; got < 1 {
		t.Errorf("no append pipeline timed on A: %v", got)
	}
	if regexp.MustCompile(`herald_store_errors_total\{[^}]*\} [1-9]`).Match(text) {
		t.Errorf("store errors on a healthy Redis:\n%s", grepLines(text, "herald_store_errors_total"))
	}
	lint(t, text)
}

func grepLines(text []byte, s string) string {
	var b strings.Builder
	for _, l := range strings.Split(string(text), "\n") {
		if strings.Contains(l, s) {
			fmt.Fprintln(&b, l)
		}
	}
	return b.String()
}
