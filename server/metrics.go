package server

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herald-rt/herald/stream"
)

// Metrics are a node's Prometheus meters, served at /metrics on the admin listener
// (docs/operations.md lists each). Config.Metrics nil turns them all off: nothing is counted
// and /metrics answers 404.
//
// Counts the fan-out path adds to on every batch (deliveries, bytes written) are sharded
// counters read by the collector at scrape time, not Prometheus counters: one atomic on one
// shared cache line per write would cost the fan-out more than the 3 % budget
// (docs/benchmarks.md). Everything counted per request or per rare event uses client_golang's
// own types.
type Metrics struct {
	reg *prometheus.Registry

	publishes       *prometheus.CounterVec   // app, outcome
	appendSeconds   *prometheus.HistogramVec // app
	slowDisconnects *prometheus.CounterVec   // app, transport, reason
	busCalls        *prometheus.CounterVec   // op, outcome
	busSeconds      *prometheus.HistogramVec // op
	storeSeconds    *prometheus.HistogramVec // command
	storeErrors     *prometheus.CounterVec   // command
	presenceJoins   *prometheus.CounterVec   // app
	presenceLeaves  *prometheus.CounterVec   // app
	presenceMembers *prometheus.GaugeVec     // app
	whispers        *prometheus.CounterVec   // app
	whispersRefused *prometheus.CounterVec   // app, code
	authRefusals    *prometheus.CounterVec   // code
	hookEvents      *prometheus.CounterVec   // app, outcome
	hookRequests    *prometheus.CounterVec   // app, outcome
	hookSent        *prometheus.CounterVec   // app
	httpRequests    *prometheus.CounterVec   // route, method, code
	httpSeconds     *prometheus.HistogramVec // route
}

// NewMetrics returns a node's meters with the Go runtime's and the process's collectors.
// The server adds its per-app figures when it is built (New).
func NewMetrics(version string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{reg: reg}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		reg.MustRegister(v)
		return v
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
		reg.MustRegister(v)
		return v
	}
	// Appends and store commands take a fraction of a millisecond on a healthy Redis; the
	// buckets reach down there and up to the store's timeouts.
	fast := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	m.publishes = counter("herald_publishes_total", "Publish requests by outcome: appended, duplicate (an Idempotency-Key repeat), idempotency_conflict, store_unavailable (nothing appended), store_timeout (may have been appended).", "app", "outcome")
	m.appendSeconds = histogram("herald_publish_append_seconds", "Time from a publish request's parsed body to the store's answer, repeats included.", fast, "app")
	m.slowDisconnects = counter("herald_slow_disconnects_total", "Connections cut off because their client read too slowly: queue_overflow (the socket's queue filled) or write_timeout.", "app", "transport", "reason")
	m.busCalls = counter("herald_bus_calls_total", "Calls to a socket or node on another node, by outcome: answered, no_node, failed, bad_answer.", "op", "outcome")
	m.busSeconds = histogram("herald_bus_call_seconds", "Round trip of calls to other nodes (long-polls included: they wait).", prometheus.DefBuckets, "op")
	m.storeSeconds = histogram("herald_store_command_seconds", "Redis command round trips, by command; a pipeline counts once, as \"pipeline:\" and its first command.", fast, "command")
	m.storeErrors = counter("herald_store_errors_total", "Redis commands that failed, by command (a missing key or NOSCRIPT is not a failure).", "command")
	m.presenceJoins = counter("herald_presence_joins_total", "Presence channel joins by this node's sockets.", "app")
	m.presenceLeaves = counter("herald_presence_leaves_total", "Presence channel leaves by this node's sockets.", "app")
	m.presenceMembers = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "herald_presence_memberships", Help: "Presence memberships held by this node's sockets now."}, []string{"app"})
	reg.MustRegister(m.presenceMembers)
	m.whispers = counter("herald_whispers_total", "Client events (whispers) broadcast.", "app")
	m.whispersRefused = counter("herald_whispers_refused_total", "Client events refused on the socket's node, by error code (rate_limited, not_subscribed, …).", "app", "code")
	m.hookEvents = counter("herald_webhook_events_total", "Webhook events this node generated, by outcome: queued (in the store, for each endpoint that takes it), lost (the store refused it).", "app", "outcome")
	m.hookRequests = counter("herald_webhook_requests_total", "Webhook POSTs this node sent, by outcome: delivered (2xx) or failed (retried).", "app", "outcome")
	m.hookSent = counter("herald_webhook_delivered_events_total", "Webhook events in batches an endpoint took.", "app")
	m.authRefusals = counter("herald_auth_refusals_total", "Requests refused with 401 or 403, by error code.", "code")
	m.httpRequests = counter("herald_http_requests_total", "HTTP requests by route (the router's pattern), method and status code; a stream counts when it ends.", "route", "method", "code")
	m.httpSeconds = histogram("herald_http_request_duration_seconds", "HTTP request durations by route; streams and long-polls last as long as they are open or wait.", prometheus.DefBuckets, "route")
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "herald_build_info", Help: "Always 1; the version is a label.", ConstLabels: prometheus.Labels{"version": version}})
	build.Set(1)
	reg.MustRegister(build, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// ObserveStoreCommand records one store command (a Redis client hook calls it).
func (m *Metrics) ObserveStoreCommand(command string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.storeSeconds.WithLabelValues(command).Observe(d.Seconds())
	if err != nil {
		m.storeErrors.WithLabelValues(command).Inc()
	}
}

// registerApp gives the app its meters, and adds the figures the server and the app's hub
// keep themselves, read at scrape.
func (m *Metrics) registerApp(a *App) {
	a.meters = &appMeters{publishes: make(map[string]prometheus.Counter, len(publishOutcomes))}
	gauge := func(name, help string, labels prometheus.Labels, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f))
	}
	count := func(name, help string, labels prometheus.Labels, f func() float64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, f))
	}
	for t := range numTransports {
		l := prometheus.Labels{"app": a.ID, "transport": t.String()}
		gauge("herald_connections", "Open connections by transport: sse (one channel), sse_multi, poll_socket (a long-poll socket, between polls too), poll (a one-shot poll while it waits).", l,
			func() float64 { return float64(a.conns.by[t].Load()) })
		count("herald_connections_opened_total", "Connections admitted, by transport.", l, func() float64 { return float64(a.conns.opened[t].Load()) })
		count("herald_connections_closed_total", "Connections ended, by transport.", l, func() float64 { return float64(a.conns.closed[t].Load()) })
		count("herald_deliveries_total", "Events and notices handed to clients, by transport.", l, func() float64 { return float64(a.meters.deliveries[t].load()) })
		count("herald_written_bytes_total", "Bytes of events, notices and heartbeats written to clients, by transport (HTTP headers not included).", l, func() float64 { return float64(a.meters.bytes[t].load()) })
	}
	for limit, n := range map[string]*atomic.Uint64{"node": &a.conns.refusedNode, "app": &a.conns.refusedApp, "rate": &a.conns.refusedRate} {
		count("herald_connections_refused_total", "Connections refused: by the node's or the app's limit (503 over_capacity), or by the per-address rate (429 rate_limited).", prometheus.Labels{"app": a.ID, "limit": limit},
			func() float64 { return float64(n.Load()) })
	}
	m.reg.MustRegister(newHubCollector(a))
	// The per-request series of the app, looked up once here rather than by label on every
	// publish.
	a.meters.appendSeconds = m.appendSeconds.WithLabelValues(a.ID)
	for _, outcome := range publishOutcomes {
		a.meters.publishes[outcome] = m.publishes.WithLabelValues(a.ID, outcome)
	}
	m.presenceMembers.WithLabelValues(a.ID) // present from the start, at 0
}

// hubCollector reports an app's hub figures, read once per scrape (Hub.Counters walks the
// hub's channels).
type hubCollector struct {
	hub                                       *stream.Hub
	sockets, channels, subscriptions, resyncs *prometheus.Desc
	gaps                                      *prometheus.Desc
}

func newHubCollector(a *App) hubCollector {
	app := prometheus.Labels{"app": a.ID}
	return hubCollector{
		hub:           a.Hub,
		sockets:       prometheus.NewDesc("herald_sockets", "Open sockets (streams and long-poll sockets) on this node.", nil, app),
		channels:      prometheus.NewDesc("herald_subscribed_channels", "Channels with at least one socket on this node.", nil, app),
		subscriptions: prometheus.NewDesc("herald_subscriptions", "Socket subscriptions on this node (a socket on three channels counts three).", nil, app),
		resyncs: prometheus.NewDesc("herald_resyncs_total", "Clients told to resync because the history they asked for had expired (herald:resync, reason history_expired).",
			nil, prometheus.Labels{"app": a.ID, "reason": "history_expired"}),
		gaps: prometheus.NewDesc("herald_gaps_refilled_total", "Times a channel's live notifications lost continuity (a store or pub/sub outage) and its sockets caught up from the log.", nil, app),
	}
}

func (c hubCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sockets
	ch <- c.channels
	ch <- c.subscriptions
	ch <- c.resyncs
	ch <- c.gaps
}

func (c hubCollector) Collect(ch chan<- prometheus.Metric) {
	hc := c.hub.Counters()
	ch <- prometheus.MustNewConstMetric(c.sockets, prometheus.GaugeValue, float64(hc.Sockets))
	ch <- prometheus.MustNewConstMetric(c.channels, prometheus.GaugeValue, float64(hc.Channels))
	ch <- prometheus.MustNewConstMetric(c.subscriptions, prometheus.GaugeValue, float64(hc.Subscriptions))
	ch <- prometheus.MustNewConstMetric(c.resyncs, prometheus.CounterValue, float64(hc.HistoryExpired))
	ch <- prometheus.MustNewConstMetric(c.gaps, prometheus.CounterValue, float64(hc.Gaps))
}

// publishOutcomes are the outcome labels of herald_publishes_total (appendOutcome).
var publishOutcomes = []string{"appended", "duplicate", "idempotency_conflict", "store_unavailable", "store_timeout", "replication_timeout"}

// appMeters are an app's own counts, which GET /admin/nodes reports as the node's stats;
// nil when metrics are off.
type appMeters struct {
	deliveries, bytes [numTransports]shardedCounter
	// Per request, not per delivery: plain atomics.
	published, publishFailed, slowDisconnects atomic.Uint64
	// The app's series of herald_publishes_total by outcome, and of the append histogram.
	publishes     map[string]prometheus.Counter
	appendSeconds prometheus.Observer
}

// delivered counts one batch written to a client. shard spreads connections over the
// counters' cells.
func (am *appMeters) delivered(t transport, shard uint32, events int, bytes int64) {
	if am == nil {
		return
	}
	if events > 0 {
		am.deliveries[t].add(shard, uint64(events))
	}
	if bytes > 0 {
		am.bytes[t].add(shard, uint64(bytes))
	}
}

// counterCells is how many cells a shardedCounter spreads its adds over: enough that the
// writers running at once (at most GOMAXPROCS) rarely share one.
const counterCells = 64

// shardedCounter is a counter for adds from many goroutines at once: each add goes to one
// cell, on a cache line of its own, chosen by the caller's shard; a read sums the cells.
type shardedCounter struct {
	cells [counterCells]struct {
		n atomic.Uint64
		_ [56]byte // pads the cell to a 64-byte cache line
	}
}

func (c *shardedCounter) add(shard uint32, n uint64) { c.cells[shard%counterCells].n.Add(n) }

func (c *shardedCounter) load() uint64 {
	var sum uint64
	for i := range c.cells {
		sum += c.cells[i].n.Load()
	}
	return sum
}

// Observations from the request paths; each is a no-op when metrics are off.

func (m *Metrics) published(app *App, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	app.meters.publishes[outcome].Inc()
	app.meters.appendSeconds.Observe(d.Seconds())
	if outcome == "appended" || outcome == "duplicate" {
		app.meters.published.Add(1)
	} else {
		app.meters.publishFailed.Add(1)
	}
}

func (m *Metrics) slowDisconnect(app *App, t transport, reason string) {
	if m != nil {
		m.slowDisconnects.WithLabelValues(app.ID, t.String(), reason).Inc()
		app.meters.slowDisconnects.Add(1)
	}
}

func (m *Metrics) busCall(op, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.busCalls.WithLabelValues(op, outcome).Inc()
	m.busSeconds.WithLabelValues(op).Observe(d.Seconds())
}

func (m *Metrics) webhookEvent(app, outcome string) {
	if m != nil {
		m.hookEvents.WithLabelValues(app, outcome).Inc()
	}
}

func (m *Metrics) webhookRequest(app, outcome string, events int) {
	if m == nil {
		return
	}
	m.hookRequests.WithLabelValues(app, outcome).Inc()
	if outcome == "delivered" {
		m.hookSent.WithLabelValues(app).Add(float64(events))
	}
}

func (m *Metrics) presenceJoined(app string) {
	if m != nil {
		m.presenceJoins.WithLabelValues(app).Inc()
		m.presenceMembers.WithLabelValues(app).Inc()
	}
}

func (m *Metrics) presenceLeft(app string) {
	if m != nil {
		m.presenceLeaves.WithLabelValues(app).Inc()
		m.presenceMembers.WithLabelValues(app).Dec()
	}
}

func (m *Metrics) whisper(app string, res socketResult) {
	if m == nil {
		return
	}
	if res.Status == http.StatusOK {
		m.whispers.WithLabelValues(app).Inc()
		return
	}
	m.whispersRefused.WithLabelValues(app, resultCode(res)).Inc()
}

// resultCode is the error code of a refused call's answer.
func resultCode(res socketResult) string {
	var e struct{ Error struct{ Code string } }
	if json.Unmarshal(res.Body, &e) != nil || e.Error.Code == "" {
		return "unknown"
	}
	return e.Error.Code
}

func (m *Metrics) refused(ae *apiError) {
	if m != nil && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden) {
		m.authRefusals.WithLabelValues(ae.Code).Inc()
	}
}

// request counts one finished HTTP request; route is the router's pattern ("" for a path no
// route matched, counted as "unmatched" so that scanners cannot grow the label set).
func (m *Metrics) request(route, method string, status int, d time.Duration) {
	if m == nil {
		return
	}
	if route == "" {
		route = "unmatched"
	}
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodDelete, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodPatch:
	default:
		method = "other"
	}
	m.httpRequests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.httpSeconds.WithLabelValues(route).Observe(d.Seconds())
}
