package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// result holds the figures of one run. Pointers are null in the JSON line
// when the figure was not measured (no server pid, or not in this mode).
type result struct {
	Tool     string `json:"tool"`
	Scenario string `json:"scenario"`
	// Round is the run's round of -rounds (from 1), 0 when the command ran one round.
	Round int    `json:"round,omitempty"`
	Store string `json:"store,omitempty"`
	Mode  string `json:"mode"`
	Error string `json:"error,omitempty"`
	// Proto is what the subscribers spoke: h1, h1+tls, h2 or h2c; StreamsPerConn how many
	// HTTP/2 streams shared a connection.
	Proto          string `json:"proto,omitempty"`
	StreamsPerConn int    `json:"streams_per_conn,omitempty"`
	TCPConns       int64  `json:"tcp_conns"`     // subscriber TCP connections opened
	StreamsHTTP2   int64  `json:"streams_http2"` // streams whose response was HTTP/2

	ConnsRequested int               `json:"conns_requested"`
	ConnsReady     int64             `json:"conns_ready"`
	ConnsFailed    int64             `json:"conns_failed"`
	FailReasons    map[string]int    `json:"conns_failed_reasons,omitempty"`
	ConnsDropped   int64             `json:"conns_dropped"`
	DropReasons    map[string]int    `json:"conns_dropped_reasons,omitempty"`
	ConnsAliveEnd  int64             `json:"conns_alive_end"`
	ConnectS       float64           `json:"connect_s"`
	Channels       int               `json:"channels"`
	MsgSize        int               `json:"msg_size"`
	RateTarget     float64           `json:"rate_target"`
	PubWorkers     int               `json:"pub_workers"`
	Published      uint64            `json:"published"`
	PublishErrors  uint64            `json:"publish_errors"`
	PublishErrsBy  map[string]uint64 `json:"publish_errors_by,omitempty"`
	PublishSkipped uint64            `json:"publish_skipped"`
	PublishWindowS float64           `json:"publish_window_s"`
	PublishesPerS  float64           `json:"publishes_per_s"`
	PubP50         float64           `json:"publish_p50_ms"`
	PubP99         float64           `json:"publish_p99_ms"`
	PubMax         float64           `json:"publish_max_ms"`

	Expected    uint64  `json:"expected_deliveries"`
	Delivered   uint64  `json:"delivered"`
	Lost        uint64  `json:"lost"`
	Dup         uint64  `json:"dup"`
	OutOfOrder  uint64  `json:"out_of_order"`
	Gaps        uint64  `json:"gaps"`
	Misrouted   uint64  `json:"misrouted"`
	Stale       uint64  `json:"stale"`
	WrongEvent  uint64  `json:"wrong_event"`
	Uncounted   uint64  `json:"uncounted"`
	OtherEvents uint64  `json:"other_events"`
	Comments    uint64  `json:"comments"`
	Retries     uint64  `json:"retry_fields"`
	DeliveriesS float64 `json:"deliveries_per_s"`
	LatP50      float64 `json:"latency_p50_ms"`
	LatP90      float64 `json:"latency_p90_ms"`
	LatP99      float64 `json:"latency_p99_ms"`
	LatP999     float64 `json:"latency_p999_ms"`
	LatMax      float64 `json:"latency_max_ms"`
	LatMean     float64 `json:"latency_mean_ms"`

	ServerPID        int      `json:"server_pid,omitempty"`
	ServerRSSBefore  *int64   `json:"server_rss_before_kb"`
	ServerRSSIdle    *int64   `json:"server_rss_idle_kb"`
	ServerRSSEnd     *int64   `json:"server_rss_end_kb"`
	ServerHWMEnd     *int64   `json:"server_hwm_end_kb"`
	BytesPerConn     *float64 `json:"bytes_per_conn"`
	ServerCPUS       *float64 `json:"server_cpu_s"`
	DelivPerCPUS     *float64 `json:"deliveries_per_server_cpu_s"`
	PubPerCPUS       *float64 `json:"publishes_per_server_cpu_s"`
	RedisPID         int      `json:"redis_pid,omitempty"`
	RedisPIDs        []int    `json:"redis_pids,omitempty"` // a cluster's other servers, their CPU in RedisCPUS
	RedisCPUS        *float64 `json:"redis_cpu_s"`
	DelivPerTotalCPU *float64 `json:"deliveries_per_server_redis_cpu_s"`
	PubPerTotalCPU   *float64 `json:"publishes_per_server_redis_cpu_s"`

	// From the server's admin listener, per ready stream, after settle against before
	// connecting: Go heap in use, goroutine stacks, goroutines.
	ServerHeapPerConn       *float64 `json:"server_heap_bytes_per_conn"`
	ServerStackPerConn      *float64 `json:"server_stack_bytes_per_conn"`
	ServerGoroutinesPerConn *float64 `json:"server_goroutines_per_conn"`

	MeasuredS     float64  `json:"measured_s"`
	ClientCPUS    float64  `json:"client_cpu_s"`
	ClientRSSIdle *int64   `json:"client_rss_idle_kb"`
	ClientPerConn *float64 `json:"client_bytes_per_conn"`
	HostBusyPct   float64  `json:"host_cpu_busy_pct"`
	NofileLimit   uint64   `json:"nofile_limit,omitempty"`
	Command       string   `json:"command,omitempty"`
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

func roundP(v *float64, digits int) {
	if v != nil {
		*v = round(*v, digits)
	}
}

func fptr(v float64) *float64 { return &v }
func iptr(v int64) *int64     { return &v }

func (r *result) roundAll() {
	for _, v := range []*float64{&r.ConnectS, &r.PublishWindowS, &r.MeasuredS, &r.ClientCPUS,
		&r.PubP50, &r.PubP99, &r.PubMax, &r.LatP50, &r.LatP90, &r.LatP99, &r.LatP999, &r.LatMax, &r.LatMean} {
		*v = round(*v, 3)
	}
	for _, v := range []*float64{&r.PublishesPerS, &r.DeliveriesS, &r.HostBusyPct} {
		*v = round(*v, 1)
	}
	roundP(r.ServerCPUS, 3)
	roundP(r.ServerGoroutinesPerConn, 2)
	roundP(r.RedisCPUS, 3)
	for _, v := range []*float64{r.BytesPerConn, r.ServerHeapPerConn, r.ServerStackPerConn, r.ClientPerConn, r.DelivPerCPUS, r.PubPerCPUS, r.DelivPerTotalCPU, r.PubPerTotalCPU} {
		roundP(v, 0)
	}
}

// problems lists what a correct server never causes; -strict fails on it.
func (r *result) problems() []string {
	var p []string
	add := func(name string, n uint64) {
		if n > 0 {
			p = append(p, fmt.Sprintf("%s=%d", name, n))
		}
	}
	if r.Error != "" {
		p = append(p, "error="+r.Error)
	}
	add("conns_failed", uint64(r.ConnsFailed))
	add("conns_dropped", uint64(r.ConnsDropped))
	add("publish_errors", r.PublishErrors)
	add("lost", r.Lost)
	add("dup", r.Dup)
	add("out_of_order", r.OutOfOrder)
	add("misrouted", r.Misrouted)
	add("wrong_event", r.WrongEvent)
	if r.Mode != modeIdle && r.Published == 0 && r.Error == "" {
		p = append(p, "published=0")
	}
	return p
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func countList[V int | uint64](m map[string]V) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func mib(kb *int64) string {
	if kb == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(*kb)/1024)
}

// writeSummary prints one run's figures for a person.
func writeSummary(w io.Writer, r *result) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	title := r.Tool + " " + scenarioCell(r)
	if r.Store != "" {
		title += " [" + r.Store + "]"
	}
	p("== %s (%s)", title, r.Mode)
	if r.Error != "" {
		p("  error         %s", r.Error)
	}
	if r.Mode != modePublish {
		if r.Proto != "" && r.Proto != protoH1 {
			line := fmt.Sprintf("  protocol      %s over %d TCP connections", r.Proto, r.TCPConns)
			if r.StreamsPerConn > 0 {
				line += fmt.Sprintf(" (%d streams each); %d streams answered over HTTP/2", r.StreamsPerConn, r.StreamsHTTP2)
			}
			p("%s", line)
		}
		p("  connections   requested %d, ready %d, failed %d%s", r.ConnsRequested, r.ConnsReady, r.ConnsFailed, countList(r.FailReasons))
		p("                in %.2fs; alive at end %d, dropped by the server %d%s", r.ConnectS, r.ConnsAliveEnd, r.ConnsDropped, countList(r.DropReasons))
	}
	if r.Mode != modeIdle {
		p("  publish       %d accepted in %.2fs = %.1f/s (target %.0f/s, %d workers); %d errors%s; %d skipped",
			r.Published, r.PublishWindowS, r.PublishesPerS, r.RateTarget, r.PubWorkers, r.PublishErrors, countList(r.PublishErrsBy), r.PublishSkipped)
		p("                request ms p50 %.3f  p99 %.3f  max %.3f; payload %d bytes", r.PubP50, r.PubP99, r.PubMax, r.MsgSize)
	}
	if r.Mode == modeFanout {
		p("  delivery      expected %d, delivered %d: lost %d, dup %d, out of order %d (gaps seen %d), misrouted %d, wrong event %d",
			r.Expected, r.Delivered, r.Lost, r.Dup, r.OutOfOrder, r.Gaps, r.Misrouted, r.WrongEvent)
		p("                %.0f deliveries/s; not counted: %d stale, %d to late subscribers, %d other events, %d comments",
			r.DeliveriesS, r.Stale, r.Uncounted, r.OtherEvents, r.Comments)
		p("  latency ms    p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f",
			r.LatP50, r.LatP90, r.LatP99, r.LatP999, r.LatMax, r.LatMean)
	}
	if r.ServerPID > 0 {
		p("  server %-6d rss before %s, idle %s, end %s, peak %s", r.ServerPID,
			mib(r.ServerRSSBefore), mib(r.ServerRSSIdle), mib(r.ServerRSSEnd), mib(r.ServerHWMEnd))
		if r.BytesPerConn != nil {
			p("                %.0f bytes per idle connection", *r.BytesPerConn)
		}
		if r.ServerHeapPerConn != nil {
			p("                Go heap %.0f and goroutine stacks %.0f bytes, %.2f goroutines per connection",
				*r.ServerHeapPerConn, *r.ServerStackPerConn, *r.ServerGoroutinesPerConn)
		}
		if r.ServerCPUS != nil {
			line := fmt.Sprintf("                cpu %.2fs over %.2fs", *r.ServerCPUS, r.MeasuredS)
			if r.DelivPerCPUS != nil {
				line += fmt.Sprintf(", %.0f deliveries per server cpu-second", *r.DelivPerCPUS)
			}
			if r.PubPerCPUS != nil {
				line += fmt.Sprintf(", %.0f publishes per server cpu-second", *r.PubPerCPUS)
			}
			p("%s", line)
		}
	}
	if r.RedisCPUS != nil {
		pids := strconv.Itoa(r.RedisPID)
		for _, p := range r.RedisPIDs {
			pids += "+" + strconv.Itoa(p)
		}
		line := fmt.Sprintf("  redis %-7s cpu %.2fs", pids, *r.RedisCPUS)
		if r.DelivPerTotalCPU != nil {
			line += fmt.Sprintf(", %.0f deliveries per (server+redis) cpu-second", *r.DelivPerTotalCPU)
		}
		if r.PubPerTotalCPU != nil {
			line += fmt.Sprintf(", %.0f publishes per (server+redis) cpu-second", *r.PubPerTotalCPU)
		}
		p("%s", line)
	}
	line := fmt.Sprintf("  client        cpu %.2fs, rss idle %s", r.ClientCPUS, mib(r.ClientRSSIdle))
	if r.ClientPerConn != nil {
		line += fmt.Sprintf(", %.0f bytes per connection", *r.ClientPerConn)
	}
	p("%s; host cpu busy %.0f%%", line, r.HostBusyPct)
	if pr := r.problems(); len(pr) > 0 {
		p("  problems      %s", strings.Join(pr, ", "))
	}
}

// Table cells: "–" where a figure does not apply to the mode.
func cellF(v *float64, format string) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf(format, *v)
}

func kiloCell(v *float64) string {
	if v == nil {
		return "–"
	}
	if math.Abs(*v) >= 10000 {
		return fmt.Sprintf("%.1fk", *v/1000)
	}
	return fmt.Sprintf("%.0f", *v)
}

// writeTable prints the figures of all runs as a markdown table.
func writeTable(w io.Writer, rows []*result) {
	fmt.Fprintln(w, "| scenario | store | tool | conns ready | bytes/idle conn | deliveries/server CPU-s | latency p50 / p99 ms | lost / dup / ooo | publishes/s | publish p50 / p99 ms | publishes/server CPU-s | server CPU s | redis CPU s |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		store := r.Store
		if store == "" {
			store = "–"
		}
		switch {
		case r.StreamsPerConn > 0:
			store += fmt.Sprintf(" (%s, %d streams/conn)", r.Proto, r.StreamsPerConn)
		case r.Proto != "" && r.Proto != protoH1:
			store += " (" + r.Proto + ")"
		}
		if r.Error != "" {
			msg := strings.Join(strings.Fields(strings.ReplaceAll(r.Error, "|", "/")), " ")
			fmt.Fprintf(w, "| %s | %s | %s | error: %s |  |  |  |  |  |  |  |  |  |\n", scenarioCell(r), store, r.Tool, msg)
			continue
		}
		conns, bpc, lat, loss := "–", "–", "–", "–"
		if r.Mode != modePublish {
			conns = fmt.Sprintf("%d/%d", r.ConnsReady, r.ConnsRequested)
			if r.BytesPerConn != nil {
				bpc = fmt.Sprintf("%.1f KB", *r.BytesPerConn/1000)
			}
		}
		if r.Mode == modeFanout {
			lat = fmt.Sprintf("%.1f / %.1f", r.LatP50, r.LatP99)
			loss = fmt.Sprintf("%d / %d / %d", r.Lost, r.Dup, r.OutOfOrder)
		}
		pubs, publat := "–", "–"
		if r.Mode != modeIdle {
			pubs = fmt.Sprintf("%.0f", r.PublishesPerS)
			publat = fmt.Sprintf("%.2f / %.2f", r.PubP50, r.PubP99)
		}
		pubCPU := kiloCell(r.PubPerCPUS)
		if r.PubPerTotalCPU != nil {
			pubCPU += " (" + kiloCell(r.PubPerTotalCPU) + " with redis)"
		}
		delCPU := kiloCell(r.DelivPerCPUS)
		if r.DelivPerTotalCPU != nil {
			delCPU += " (" + kiloCell(r.DelivPerTotalCPU) + " with redis)"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			scenarioCell(r), store, r.Tool, conns, bpc, delCPU, lat, loss, pubs, publat, pubCPU,
			cellF(r.ServerCPUS, "%.2f"), cellF(r.RedisCPUS, "%.2f"))
	}
}

// scenarioCell names a row's scenario, with its round when the command ran several.
func scenarioCell(r *result) string {
	if r.Round > 0 {
		return fmt.Sprintf("%s #%d", r.Scenario, r.Round)
	}
	return r.Scenario
}

// goal is one of the Redis path's goals (docs/benchmarks.md, "The Redis path"), checked from
// the rows of one run: a ratio of Herald on Redis to another row of the same scenario, or a
// bound on one of its figures.
type goal struct {
	scenario string
	// rate, when set, is the only publish rate the goal is stated at (S5's p99 at 10k/s).
	rate  float64
	what  string
	other string // the store compared against; empty for a bound on the Redis row alone
	// figure reads the figure from a row; nil when the row lacks it.
	figure func(r *result) *float64
	min    float64 // the ratio, or the figure, must be at least this ...
	max    float64 // ... or, when max is set, at most this
}

var redisPathGoals = []goal{
	{scenario: "S4", what: "deliveries per CPU-s (with Redis's) vs the minimal server", other: storeMinimal,
		figure: deliveriesPerCPU, min: 0.67},
	{scenario: "S4", what: "deliveries per CPU-s (with Redis's) vs Herald on memory", other: "memory",
		figure: deliveriesPerCPU, min: 0.75},
	{scenario: "S5", rate: 20000, what: "publishes/s vs the minimal server", other: storeMinimal,
		figure: func(r *result) *float64 { return &r.PublishesPerS }, min: 0.9},
	{scenario: "S5", rate: 20000, what: "publishes per CPU-s (with Redis's) vs the minimal server", other: storeMinimal,
		figure: publishesPerCPU, min: 0.6},
	// The goals as the issue first states them, against the peer itself, when -centrifugo
	// ran it: Redis's CPU counted on both sides.
	{scenario: "S4", what: "deliveries per CPU-s (with Redis's) vs Centrifugo on Redis (with Redis's)", other: storeCentrifugoRedis,
		figure: deliveriesPerCPU, min: 1.5},
	{scenario: "S5", rate: 20000, what: "publishes per CPU-s (with Redis's) vs Centrifugo on Redis (with Redis's)", other: storeCentrifugoRedis,
		figure: publishesPerCPU, min: 1.5},
	{scenario: "S5", rate: 10000, what: "publish p99 (ms) at 10k/s",
		figure: func(r *result) *float64 { return &r.PubP99 }, max: 5},
}

// deliveriesPerCPU is a row's deliveries per CPU-second, Redis's CPU included when it ran on
// Redis.
func deliveriesPerCPU(r *result) *float64 {
	if r.DelivPerTotalCPU != nil {
		return r.DelivPerTotalCPU
	}
	return r.DelivPerCPUS
}

func publishesPerCPU(r *result) *float64 {
	if r.PubPerTotalCPU != nil {
		return r.PubPerTotalCPU
	}
	return r.PubPerCPUS
}

// writeGoals prints, for every goal the run has the rows to check, its figure and whether it
// holds. Only heraldbench's own runs count, so that both sides of a ratio were measured alike.
// With several rounds a ratio is taken within each round (its rows ran one after the other)
// and the goal is judged on the median of the rounds, each round's figure listed beside it.
func writeGoals(w io.Writer, rows []*result) {
	find := func(scenario, store string, rate float64, round int) *result {
		for _, r := range rows {
			if r.Tool == "heraldbench" && r.Scenario == scenario && r.Store == store && r.Error == "" &&
				r.Proto == protoH1 && r.Round == round && (rate == 0 || r.RateTarget == rate) {
				return r
			}
		}
		return nil
	}
	var rounds []int
	for _, r := range rows {
		if !slices.Contains(rounds, r.Round) {
			rounds = append(rounds, r.Round)
		}
	}
	slices.Sort(rounds)
	header := false
	for _, g := range redisPathGoals {
		var figures []float64
		for _, round := range rounds {
			if v := g.check(find, round); v != nil {
				figures = append(figures, *v)
			}
		}
		if len(figures) == 0 {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\n| goal of the Redis path (docs/benchmarks.md) | scenario | figure | goal | met |")
			fmt.Fprintln(w, "|---|---|---|---|---|")
			header = true
		}
		v := median(figures)
		bound, met := fmt.Sprintf("≥ %.2f", g.min), v >= g.min
		if g.max != 0 {
			bound, met = fmt.Sprintf("≤ %.2f", g.max), v <= g.max
		}
		verdict := "no"
		if met {
			verdict = "yes"
		}
		figure := fmt.Sprintf("%.2f", v)
		if len(figures) > 1 {
			each := make([]string, len(figures))
			for i, f := range figures {
				each[i] = fmt.Sprintf("%.2f", f)
			}
			figure += fmt.Sprintf(" (median of %d: %s)", len(figures), strings.Join(each, ", "))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", g.what, g.scenario, figure, bound, verdict)
	}
}

// check returns the goal's figure in one round, or nil when the round lacks a row it needs.
func (g goal) check(find func(scenario, store string, rate float64, round int) *result, round int) *float64 {
	redis := find(g.scenario, "redis", g.rate, round)
	if redis == nil {
		return nil
	}
	v := g.figure(redis)
	if g.other == "" || v == nil {
		return v
	}
	o := find(g.scenario, g.other, redis.RateTarget, round)
	if o == nil {
		return nil
	}
	if ov := g.figure(o); ov != nil && *ov != 0 {
		return fptr(*v / *ov)
	}
	return nil
}

// median of a non-empty list; the mean of the middle two for an even count.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
