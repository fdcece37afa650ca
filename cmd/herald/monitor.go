package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/lipgloss/table"
)

// herald monitor: a live terminal view of a whole deployment, its nodes and its busiest
// channels, read from the admin listener of any one node (which asks every node in the
// registry for its figures). Three parts:
//
//   - adminClient reads GET /admin/nodes and GET /admin/channels;
//   - deployment is the model: plain data, and the rates derived from two refreshes. It knows
//     no HTTP and no terminal, so its arithmetic is tested alone;
//   - the view renders a deployment with lipgloss, and monitorModel (bubbletea) schedules
//     refreshes and reads keys.

// topChannels is how many of the busiest channels the monitor asks for.
const topChannels = 10

func monitor(args []string) error { return runMonitor(args, os.Stdout) }

func runMonitor(args []string, stdout io.Writer) error {
	fs := newFlagSet("monitor", "herald monitor — a live view of a deployment's nodes and busiest channels, from any node's admin listener")
	admin := fs.StringEnv("admin", "HERALD_ADMIN_URL", "http://127.0.0.1:8082", "admin listener of any node of the deployment")
	tok := fs.StringEnv("token", "HERALD_ADMIN_TOKEN", "", "the admin token (serve's --admin-token); none sent when empty")
	app := fs.String("app", "", "the app to watch (default: the node's default app)")
	interval := fs.Duration("interval", time.Second, "time between refreshes")
	once := fs.Bool("once", false, "print one snapshot and exit; it fetches twice, one interval apart, so that rates exist")
	asJSON := fs.Bool("json", false, "with --once, print the snapshot as JSON")
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("monitor takes no arguments, got %q", fs.Args())
	}
	if *interval <= 0 {
		return fmt.Errorf("--interval must be positive, got %v", *interval)
	}
	if *asJSON && !*once {
		return errors.New("--json needs --once: the live view is for a terminal")
	}
	c := newAdminClient(*admin, *tok, *app)
	if !*once {
		return runMonitorTUI(c, *interval)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := sampleTwice(ctx, c, *interval)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(d.snapshot())
	}
	_, err = fmt.Fprintln(stdout, d.view(0))
	return err
}

// sampleTwice refreshes a new deployment twice, interval apart: the second refresh gives
// the rates.
func sampleTwice(ctx context.Context, c *adminClient, interval time.Duration) (*deployment, error) {
	d := &deployment{}
	for i := range 2 {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(interval):
			}
		}
		nodes, chans, err := c.fetch(ctx)
		if err != nil {
			return nil, err
		}
		d.update(nodes, chans)
	}
	return d, nil
}

// ---------------------------------------------------------------------------------------------
// The admin API, as the monitor reads it. Every field may be absent — a node of an older
// version says less — and is then zero, or nil where zero would be a lie (a counter, a ping).

// adminNodes is the answer of GET /admin/nodes.
type adminNodes struct {
	App   string      `json:"app"`
	Time  time.Time   `json:"time"`
	Nodes []adminNode `json:"nodes"`
}

// adminNode is one node: what it registered, and the figures it gave when asked just now.
type adminNode struct {
	ID          string           `json:"id"`
	Self        bool             `json:"self"`
	Addr        string           `json:"addr"`
	AdminAddr   string           `json:"admin_addr"`
	Version     string           `json:"version"`
	Hostname    string           `json:"hostname"`
	PID         int              `json:"pid"`
	Started     time.Time        `json:"started"`
	Draining    bool             `json:"draining"`
	Connections map[string]int64 `json:"connections"`
	Sockets     int              `json:"sockets"`
	Channels    int              `json:"channels"`
	Stats       *nodeStats       `json:"stats"` // nil: the node did not answer in time
}

// nodeStats are a node's live figures: its counts now, and counters since it started.
type nodeStats struct {
	Time             time.Time        `json:"time"` // the node's clock, which its rates are measured by
	Connections      map[string]int64 `json:"connections"`
	Sockets          *int             `json:"sockets"`
	Channels         *int             `json:"channels"`
	Publishes        *int64           `json:"publishes"`
	PublishFailures  *int64           `json:"publish_failures"`
	Deliveries       *int64           `json:"deliveries"`
	BytesWritten     *int64           `json:"bytes_written"`
	SlowDisconnects  *int64           `json:"slow_disconnects"`
	Resyncs          *int64           `json:"resyncs"`
	StorePingSeconds *float64         `json:"store_ping_seconds"` // nil: the ping failed
}

// counters lists the counters in counter order.
func (s *nodeStats) counters() [numCounters]*int64 {
	return [numCounters]*int64{s.Publishes, s.PublishFailures, s.Deliveries, s.BytesWritten, s.SlowDisconnects, s.Resyncs}
}

// adminChannels is the answer of GET /admin/channels?sort=subscribers.
type adminChannels struct {
	App      string         `json:"app"`
	Total    int            `json:"total"` // occupied channels, of which Channels are the busiest
	Channels []adminChannel `json:"channels"`
}

type adminChannel struct {
	Name            string  `json:"name"`
	Subscribers     int     `json:"subscribers"`
	EventsPerSecond float64 `json:"events_per_second"`
}

// adminError is an error answer of the admin API: {"error":{"code","message"}}, or whatever
// else came with a failing status (a proxy's page, say) as the message.
type adminError struct {
	Status  int
	Code    string
	Message string
}

func (e *adminError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Message, e.Status)
}

func answerError(status int, body []byte) *adminError {
	var answer struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &answer) == nil && answer.Error.Code != "" {
		return &adminError{Status: status, Code: answer.Error.Code, Message: answer.Error.Message}
	}
	msg := strings.Join(strings.Fields(string(body)), " ")
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &adminError{Status: status, Message: msg}
}

// adminClient reads the admin API of one node.
type adminClient struct {
	base, token, app string
	http             *http.Client
}

func newAdminClient(base, token, app string) *adminClient {
	if !strings.Contains(base, "://") {
		base = "http://" + base // as the registry's admin_addr gives it: host:port
	}
	// The bound covers GET /admin/nodes, which waits up to a second for each silent node.
	return &adminClient{base: strings.TrimRight(base, "/"), token: token, app: app, http: &http.Client{Timeout: 10 * time.Second}}
}

// fetch reads one refresh: every node with its figures, and the busiest channels.
func (c *adminClient) fetch(ctx context.Context) (adminNodes, adminChannels, error) {
	var nodes adminNodes
	var chans adminChannels
	q := url.Values{}
	if c.app != "" {
		q.Set("app", c.app)
	}
	if err := c.get(ctx, "/admin/nodes", q, &nodes); err != nil {
		return nodes, chans, err
	}
	q.Set("sort", "subscribers")
	q.Set("limit", strconv.Itoa(topChannels))
	if err := c.get(ctx, "/admin/channels", q, &chans); err != nil {
		return nodes, chans, err
	}
	return nodes, chans, nil
}

// get calls GET path and decodes a 200 answer into out; any other answer is an *adminError.
func (c *adminClient) get(ctx context.Context, path string, q url.Values, out any) error {
	target := c.base + path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("--admin: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err // it names the method and the URL
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %w", target, answerError(resp.StatusCode, body))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: not an admin API answer: %w", target, err)
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// The model

// counter is one of a node's counters since it started, whose rates the monitor shows.
type counter int

const (
	publishes counter = iota
	publishFailures
	deliveries
	bytesWritten
	slowDisconnects
	resyncs
	numCounters
)

// counterNames name the counters as the admin API and --json do.
var counterNames = [numCounters]string{"publishes", "publish_failures", "deliveries", "bytes_written", "slow_disconnects", "resyncs"}

// sample is what a node's next rates are measured from: its counters at a time of its clock.
type sample struct {
	time     time.Time
	started  time.Time
	counters [numCounters]*int64
}

// nodeRow is one node as the monitor shows it: its latest figures and its rates.
type nodeRow struct {
	ID, Addr, AdminAddr, Version, Hostname string
	Self, Draining                         bool
	PID                                    int
	Started                                time.Time
	// Answered says the node gave its figures this refresh. Without them its counts are those
	// of its registry entry, and its counters and rates are unknown.
	Answered    bool
	StatsTime   time.Time
	Connections map[string]int64 // by transport
	Sockets     int
	Channels    int
	Counters    [numCounters]*int64
	Rates       [numCounters]*float64 // per second since the previous refresh; nil: unknown
	StorePing   *float64              // seconds
}

// connections is the node's total of open connections.
func (n nodeRow) connections() int64 {
	var sum int64
	for _, v := range n.Connections {
		sum += v
	}
	return sum
}

// deployment is the monitor's model: the latest view of the deployment, and each node's
// sample its next rates are measured from. It is plain data — no I/O, no terminal.
type deployment struct {
	App           string
	Time          time.Time // the admin API's clock at the latest refresh
	Nodes         []nodeRow // as the admin API orders them (by id)
	Channels      []adminChannel
	ChannelsTotal int
	samples       map[string]sample // by node id
}

// update takes one refresh. A node's rates are the increase of its counters since the
// previous refresh that it answered, divided by the time between the two by its own clock, so
// neither the monitor's timing nor clock skew between nodes distorts them. A node seen for the
// first time has no rates yet; a node gone from the registry leaves the view, and its sample
// is forgotten, so one that comes back starts afresh.
func (d *deployment) update(nodes adminNodes, chans adminChannels) {
	samples := make(map[string]sample, len(nodes.Nodes))
	rows := make([]nodeRow, 0, len(nodes.Nodes))
	for _, n := range nodes.Nodes {
		row := nodeRow{
			ID: n.ID, Addr: n.Addr, AdminAddr: n.AdminAddr, Version: n.Version, Hostname: n.Hostname,
			Self: n.Self, Draining: n.Draining, PID: n.PID, Started: n.Started,
			Connections: n.Connections, Sockets: n.Sockets, Channels: n.Channels,
		}
		prev, seen := d.samples[n.ID]
		if st := n.Stats; st != nil {
			row.Answered, row.StatsTime, row.StorePing = true, st.Time, st.StorePingSeconds
			// The figures given just now are fresher than the registry entry.
			if st.Connections != nil {
				row.Connections = st.Connections
			}
			if st.Sockets != nil {
				row.Sockets = *st.Sockets
			}
			if st.Channels != nil {
				row.Channels = *st.Channels
			}
			row.Counters = st.counters()
			cur := sample{time: st.Time, started: n.Started, counters: row.Counters}
			if seen {
				row.Rates = rates(prev, cur)
			}
			samples[n.ID] = cur
		} else if seen {
			samples[n.ID] = prev // counters only grow: the next rate spans the silence
		}
		rows = append(rows, row)
	}
	d.App, d.Time, d.Nodes, d.samples = nodes.App, nodes.Time, rows, samples
	d.Channels, d.ChannelsTotal = chans.Channels, chans.Total
}

// rates are the counters' increase per second from prev to cur. All are unknown when the
// node restarted in between — a counter went down, or its start time changed — or when its
// clock did not move forward; each one is unknown when either sample lacks it.
func rates(prev, cur sample) [numCounters]*float64 {
	var r [numCounters]*float64
	dt := cur.time.Sub(prev.time).Seconds()
	if prev.time.IsZero() || cur.time.IsZero() || dt <= 0 || !prev.started.Equal(cur.started) {
		return r
	}
	for c := range numCounters {
		if p, n := prev.counters[c], cur.counters[c]; p != nil && n != nil && *n < *p {
			return r
		}
	}
	for c := range numCounters {
		if p, n := prev.counters[c], cur.counters[c]; p != nil && n != nil {
			v := float64(*n-*p) / dt
			r[c] = &v
		}
	}
	return r
}

// totals are the deployment's figures summed over its nodes.
type totals struct {
	Nodes       int      `json:"nodes"`
	Connections int64    `json:"connections"`
	Publishes   *float64 `json:"publishes_per_second"`  // over the nodes with a rate; null when none has
	Deliveries  *float64 `json:"deliveries_per_second"` // likewise
}

func (d *deployment) totals() totals {
	t := totals{Nodes: len(d.Nodes), Publishes: d.sumRate(publishes), Deliveries: d.sumRate(deliveries)}
	for _, n := range d.Nodes {
		t.Connections += n.connections()
	}
	return t
}

// sumRate sums a rate over the nodes that have it; nil when none has.
func (d *deployment) sumRate(c counter) *float64 {
	var sum *float64
	for _, n := range d.Nodes {
		if r := n.Rates[c]; r != nil {
			if sum == nil {
				sum = new(float64)
			}
			*sum += *r
		}
	}
	return sum
}

// snapshot is what `herald monitor --once --json` prints:
//
//	app             the app watched
//	time            the admin API's clock at the second refresh
//	totals          nodes, connections (open, summed over the nodes), and
//	                publishes_per_second, deliveries_per_second summed over the nodes that
//	                have a rate (null when none has)
//	nodes[]         id, self (the node asked), addr, admin_addr, version, hostname, pid,
//	                started, draining;
//	                answered: whether the node gave its figures in time (when false, the
//	                counts below are its registry entry's and counters, rates and the ping
//	                are null);
//	                stats_time: the node's clock when it answered (null when it did not);
//	                connections (by transport: sse, sse_multi, poll_socket, poll), sockets,
//	                channels (those with a socket of this node);
//	                counters: publishes, publish_failures, deliveries, bytes_written,
//	                slow_disconnects, resyncs since the node started (null: not reported);
//	                rates: the same names, per second between the two refreshes (null: first
//	                seen, restarted, or not reported);
//	                store_ping_seconds: the store's round trip when asked (null: failed or
//	                not reported)
//	channels[]      the busiest occupied channels, most subscribers first: name,
//	                subscribers, events_per_second (over the last ten seconds)
//	channels_total  how many channels are occupied in all
type snapshot struct {
	App           string         `json:"app"`
	Time          time.Time      `json:"time"`
	Totals        totals         `json:"totals"`
	Nodes         []snapshotNode `json:"nodes"`
	Channels      []adminChannel `json:"channels"`
	ChannelsTotal int            `json:"channels_total"`
}

type snapshotNode struct {
	ID               string              `json:"id"`
	Self             bool                `json:"self"`
	Addr             string              `json:"addr"`
	AdminAddr        string              `json:"admin_addr"`
	Version          string              `json:"version"`
	Hostname         string              `json:"hostname"`
	PID              int                 `json:"pid"`
	Started          time.Time           `json:"started"`
	Draining         bool                `json:"draining"`
	Answered         bool                `json:"answered"`
	StatsTime        *time.Time          `json:"stats_time"`
	Connections      map[string]int64    `json:"connections"`
	Sockets          int                 `json:"sockets"`
	Channels         int                 `json:"channels"`
	Counters         map[string]*int64   `json:"counters"`
	Rates            map[string]*float64 `json:"rates"`
	StorePingSeconds *float64            `json:"store_ping_seconds"`
}

func (d *deployment) snapshot() snapshot {
	s := snapshot{App: d.App, Time: d.Time, Totals: d.totals(), Nodes: []snapshotNode{},
		Channels: append([]adminChannel{}, d.Channels...), ChannelsTotal: d.ChannelsTotal}
	for _, n := range d.Nodes {
		sn := snapshotNode{
			ID: n.ID, Self: n.Self, Addr: n.Addr, AdminAddr: n.AdminAddr, Version: n.Version, Hostname: n.Hostname,
			PID: n.PID, Started: n.Started, Draining: n.Draining, Answered: n.Answered,
			Connections: map[string]int64{}, Sockets: n.Sockets, Channels: n.Channels,
			Counters: map[string]*int64{}, Rates: map[string]*float64{}, StorePingSeconds: n.StorePing,
		}
		if n.Answered {
			t := n.StatsTime
			sn.StatsTime = &t
		}
		for k, v := range n.Connections {
			sn.Connections[k] = v
		}
		for c := range numCounters {
			sn.Counters[counterNames[c]] = n.Counters[c]
			sn.Rates[counterNames[c]] = n.Rates[c]
		}
		s.Nodes = append(s.Nodes, sn)
	}
	return s
}

// ---------------------------------------------------------------------------------------------
// The view

// unknown stands for a figure the monitor does not have.
const unknown = "–"

var (
	titleStyle  = lipgloss.NewStyle().Bold(true)
	dimStyle    = lipgloss.NewStyle().Faint(true)
	errorStyle  = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("9"))
	cellStyle   = lipgloss.NewStyle().Padding(0, 1)
	headerStyle = cellStyle.Bold(true)
)

// nodeColumn is a column of the nodes table. On a terminal too narrow for all of them, the
// columns of lowest keep are left out first, so what remains is whole and legible.
type nodeColumn struct {
	header string
	keep   int
	right  bool // numbers are right-aligned
	cell   func(n nodeRow, now time.Time) string
}

var nodeColumns = []nodeColumn{
	{"NODE", 9, false, func(n nodeRow, _ time.Time) string {
		if n.Self {
			return n.ID + " *"
		}
		return n.ID
	}},
	{"ADDR", 8, false, func(n nodeRow, _ time.Time) string { return n.Addr }},
	{"UP", 4, false, func(n nodeRow, now time.Time) string { return formatAge(n.Started, now) }},
	{"VERSION", 1, false, func(n nodeRow, _ time.Time) string { return n.Version }},
	{"STATE", 7, false, func(n nodeRow, _ time.Time) string { return nodeState(n) }},
	{"SSE", 6, true, func(n nodeRow, _ time.Time) string { return count(n.Connections["sse"]) }},
	{"MULTI", 5, true, func(n nodeRow, _ time.Time) string { return count(n.Connections["sse_multi"]) }},
	{"PSOCK", 5, true, func(n nodeRow, _ time.Time) string { return count(n.Connections["poll_socket"]) }},
	{"POLL", 5, true, func(n nodeRow, _ time.Time) string { return count(n.Connections["poll"]) }},
	{"SOCKETS", 3, true, func(n nodeRow, _ time.Time) string { return count(n.Sockets) }},
	{"CHANNELS", 3, true, func(n nodeRow, _ time.Time) string { return count(n.Channels) }},
	{"PUB/S", 9, true, func(n nodeRow, _ time.Time) string { return formatRate(n.Rates[publishes]) }},
	{"DELIV/S", 9, true, func(n nodeRow, _ time.Time) string { return formatRate(n.Rates[deliveries]) }},
	{"SLOW/S", 6, true, func(n nodeRow, _ time.Time) string { return formatRate(n.Rates[slowDisconnects]) }},
	{"RESYNCS", 2, true, func(n nodeRow, _ time.Time) string { return formatCounter(n.Counters[resyncs]) }},
	{"PING", 2, true, func(n nodeRow, _ time.Time) string { return formatPing(n.StorePing) }},
}

// view renders the deployment for a terminal width columns wide (0: as wide as it takes).
func (d *deployment) view(width int) string {
	t := d.totals()
	header := joinWrapped(width, " · ",
		titleStyle.Render("herald monitor")+"  app "+d.App,
		plural(int64(t.Nodes), "node"),
		plural(t.Connections, "connection"),
		formatRate(t.Publishes)+" publishes/s",
		formatRate(t.Deliveries)+" deliveries/s",
		d.Time.Local().Format("15:04:05"),
	)
	legend := "connections: SSE one-channel streams, MULTI multi-channel streams, PSOCK long-poll sockets, POLL waiting polls · * the node asked"

	title := fmt.Sprintf("Busiest channels (%d of %d occupied)", len(d.Channels), d.ChannelsTotal)
	var channels string
	if len(d.Channels) == 0 {
		channels = dimStyle.Render("no channel has a subscriber")
	} else {
		var rows [][]string
		for _, c := range d.Channels {
			ev := c.EventsPerSecond
			rows = append(rows, []string{c.Name, count(c.Subscribers), formatRate(&ev)})
		}
		channels = fitWidth(newTable([]string{"CHANNEL", "SUBSCRIBERS", "EVENTS/S"}, []bool{false, true, true}, rows).String(), width)
	}
	return strings.Join([]string{header, "", titleStyle.Render("Nodes"), d.nodesTable(width),
		wrapWidth(dimStyle.Render(legend), width), "", titleStyle.Render(title), channels}, "\n")
}

// nodesTable renders the nodes with as many columns as fit in width.
func (d *deployment) nodesTable(width int) string {
	var out string
	for keep := 0; keep <= 9; keep++ {
		var headers []string
		var right []bool
		var cols []nodeColumn
		for _, c := range nodeColumns {
			if c.keep >= keep {
				headers, right, cols = append(headers, c.header), append(right, c.right), append(cols, c)
			}
		}
		rows := make([][]string, 0, len(d.Nodes))
		for _, n := range d.Nodes {
			row := make([]string, len(cols))
			for i, c := range cols {
				row[i] = c.cell(n, d.Time)
			}
			rows = append(rows, row)
		}
		out = newTable(headers, right, rows).String()
		if width <= 0 || lipgloss.Width(out) <= width {
			break
		}
	}
	return fitWidth(out, width)
}

// newTable renders rows under headers, the columns marked right aligned right.
func newTable(headers []string, right []bool, rows [][]string) *table.Table {
	return table.New().
		Border(lipgloss.NormalBorder()).
		BorderStyle(dimStyle).
		Headers(headers...).
		Rows(rows...).
		StyleFunc(func(row, col int) lipgloss.Style {
			s := cellStyle
			if row == table.HeaderRow {
				s = headerStyle
			}
			if right[col] {
				s = s.Align(lipgloss.Right)
			}
			return s
		})
}

// joinWrapped joins items with sep, breaking the line between two items rather than inside
// one where the line would be wider than width (0: no limit).
func joinWrapped(width int, sep string, items ...string) string {
	var b strings.Builder
	line := 0
	for i, it := range items {
		w := lipgloss.Width(it)
		switch {
		case i == 0:
		case width > 0 && line+lipgloss.Width(sep)+w > width:
			b.WriteString("\n")
			line = 0
		default:
			b.WriteString(sep)
			line += lipgloss.Width(sep)
		}
		b.WriteString(it)
		line += w
	}
	return b.String()
}

// wrapWidth wraps the lines of s that are wider than width (0: no limit) at spaces.
func wrapWidth(s string, width int) string {
	if width <= 0 || lipgloss.Width(s) <= width {
		return s
	}
	return lipgloss.NewStyle().Width(width).Render(s)
}

// fitWidth cuts the lines of s that are wider than width (0: no limit).
func fitWidth(s string, width int) string {
	if width <= 0 {
		return s
	}
	return lipgloss.NewStyle().MaxWidth(width).Render(s)
}

func nodeState(n nodeRow) string {
	var s []string
	if n.Draining {
		s = append(s, "draining")
	}
	if !n.Answered {
		s = append(s, "silent")
	}
	if len(s) == 0 {
		return "serving"
	}
	return strings.Join(s, ", ")
}

func plural[N int | int64](n N, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func count[N int | int64](n N) string { return strconv.FormatInt(int64(n), 10) }

func formatCounter(n *int64) string {
	if n == nil {
		return unknown
	}
	return strconv.FormatInt(*n, 10)
}

// formatRate gives two significant decimals to small rates, so a slow trickle does not read 0.
func formatRate(r *float64) string {
	switch {
	case r == nil:
		return unknown
	case *r == 0:
		return "0"
	case *r < 1:
		return strconv.FormatFloat(*r, 'f', 2, 64)
	case *r < 100:
		return strconv.FormatFloat(*r, 'f', 1, 64)
	default:
		return strconv.FormatFloat(*r, 'f', 0, 64)
	}
}

func formatPing(seconds *float64) string {
	if seconds == nil {
		return unknown
	}
	ms := *seconds * 1000
	switch {
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
	case ms < 1000:
		return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
	default:
		return strconv.FormatFloat(*seconds, 'f', 2, 64) + "s"
	}
}

// formatAge is how long ago started was at now, in its two largest units.
func formatAge(started, now time.Time) string {
	if started.IsZero() || now.IsZero() {
		return unknown
	}
	d := max(now.Sub(started), 0).Truncate(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

// ---------------------------------------------------------------------------------------------
// The live view

func runMonitorTUI(c *adminClient, interval time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // a refresh still under way when the user quits ends with the program
	_, err := tea.NewProgram(newMonitorModel(ctx, c, interval), tea.WithAltScreen()).Run()
	if errors.Is(err, tea.ErrInterrupted) {
		return nil // SIGINT from outside the terminal: a request to stop like q
	}
	return err
}

// monitorModel is the bubbletea program: it refreshes the deployment every interval and
// keeps the latest data on screen when a refresh fails, with the error under it.
type monitorModel struct {
	ctx      context.Context
	client   *adminClient
	interval time.Duration
	d        *deployment // shared by the copies bubbletea makes; only Update changes it
	width    int
	fetching bool      // a refresh is under way: ticks meanwhile start none
	updated  time.Time // when the latest refresh succeeded; zero before the first
	err      error     // why the latest refresh failed; nil when it succeeded
	failed   time.Time
}

// tickMsg is the interval falling due; refreshMsg a refresh's outcome.
type (
	tickMsg    time.Time
	refreshMsg struct {
		nodes    adminNodes
		channels adminChannels
		err      error
		at       time.Time
	}
)

func newMonitorModel(ctx context.Context, c *adminClient, interval time.Duration) monitorModel {
	return monitorModel{ctx: ctx, client: c, interval: interval, d: &deployment{}, fetching: true}
}

func (m monitorModel) Init() tea.Cmd { return tea.Batch(m.refresh(), m.tick()) }

func (m monitorModel) tick() tea.Cmd {
	return tea.Tick(m.interval, func(t time.Time) tea.Msg { return tickMsg(t) })
}

func (m monitorModel) refresh() tea.Cmd {
	return func() tea.Msg {
		nodes, chans, err := m.client.fetch(m.ctx)
		return refreshMsg{nodes: nodes, channels: chans, err: err, at: time.Now()}
	}
}

func (m monitorModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.KeyMsg:
		switch msg.String() {
		case "q", "ctrl+c":
			return m, tea.Quit
		}
	case tea.WindowSizeMsg:
		m.width = msg.Width
	case tickMsg:
		// Ticks keep their own cadence; a refresh slower than the interval skips a beat
		// rather than piling up.
		if m.fetching {
			return m, m.tick()
		}
		m.fetching = true
		return m, tea.Batch(m.refresh(), m.tick())
	case refreshMsg:
		m.fetching = false
		if msg.err != nil {
			m.err, m.failed = msg.err, msg.at
			return m, nil
		}
		m.d.update(msg.nodes, msg.channels)
		m.err, m.updated = nil, msg.at
	}
	return m, nil
}

func (m monitorModel) View() string {
	var b strings.Builder
	if !m.updated.IsZero() {
		b.WriteString(m.d.view(m.width))
		b.WriteString("\n\n")
	}
	// A long error wraps rather than being cut.
	switch {
	case m.err != nil:
		line := errorStyle.Render(fmt.Sprintf("refresh failed at %s: %v", m.failed.Format("15:04:05"), m.err))
		if !m.updated.IsZero() {
			line += dimStyle.Render(" — showing the data of " + m.updated.Format("15:04:05"))
		}
		b.WriteString(wrapWidth(line, m.width))
	case m.updated.IsZero():
		b.WriteString(wrapWidth(dimStyle.Render("connecting to "+m.client.base+" …"), m.width))
	default:
		b.WriteString(wrapWidth(dimStyle.Render(fmt.Sprintf("updated %s from %s · every %v · q quits",
			m.updated.Format("15:04:05"), m.client.base, m.interval)), m.width))
	}
	return b.String()
}
