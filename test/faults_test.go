package test

// The fault matrix, short form: real herald processes and real redis-servers on loopback,
// broken the way production breaks them (a store killed with or without its disk, its pub/sub
// connections cut, a node killed or stopped under load, history trimmed under a subscriber
// that paused), while publishers and subscribers keep going. Each case counts, over every
// subscriber, what was acknowledged, delivered, lost, duplicated, reordered and resynced, and
// asserts what users rely on: nothing acknowledged is lost or repeated or reordered, and where
// the store really forgot, the subscriber is told (herald:resync) rather than skipped past.
// docs/reliability.md holds the figures; the full-size cases are in soak_test.go.

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-rt/herald/test/testkit"
)

// ---------------------------------------------------------------------------------------------
// Redis under test

// onRedis is a backend of the test's own, which it may kill, hang or cut without disturbing
// other tests; its nodes log warnings only, which is what fault runs look at.
func onRedis(rd *testkit.Redis) backend {
	return func(testing.TB) []string { return []string{"--redis-url", rd.URL(), "--log-level", "warn"} }
}

// ---------------------------------------------------------------------------------------------
// Publishing through faults

// ackedEvent is a publish the server acknowledged: 201, or 200 for a retried key.
type ackedEvent struct {
	N     int
	ID    string
	Event string
}

// faultPublisher publishes with an Idempotency-Key per event and retries through failures
// with the same key, moving to the next node after an error, as a careful client does. It
// records what was acknowledged and every answer on the way.
type faultPublisher struct {
	tok   string
	nodes []*herald
	pause time.Duration // between two events of one channel
	pad   string        // sent in every event's data, to make events as large as a case needs

	mu      sync.Mutex
	node    int
	acked   map[string][]ackedEvent // per channel, in the order acknowledged
	answers map[string]int          // "201", "200", "503 store_unavailable", "transport error", …
	// falseUnavailable lists keys answered store_unavailable ("nothing was appended") whose
	// retry then found the event appended (200): the answer was wrong.
	falseUnavailable []string
}

func newFaultPublisher(tok string, nodes ...*herald) *faultPublisher {
	return &faultPublisher{tok: tok, nodes: nodes, acked: map[string][]ackedEvent{}, answers: map[string]int{}}
}

// failures counts the answers that were neither 201 nor 200 so far.
func (p *faultPublisher) failures() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for answer, c := range p.answers {
		if answer != "201" && answer != "200" {
			n += c
		}
	}
	return n
}

// waitOutage waits until publishes have met the outage: a failed answer since before.
func waitOutage(t *testing.T, p *faultPublisher, before int) {
	t.Helper()
	if !testkit.WaitFor(15*time.Second, func() bool { return p.failures() > before }) {
		t.Fatal("no publish met the outage within 15 s")
	}
}

func (p *faultPublisher) count(answer string) {
	p.mu.Lock()
	p.answers[answer]++
	p.mu.Unlock()
}

func (p *faultPublisher) current() (int, *herald) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.node, p.nodes[p.node]
}

// failover moves to the next node unless another publisher already did.
func (p *faultPublisher) failover(from int) {
	p.mu.Lock()
	if p.node == from {
		p.node = (p.node + 1) % len(p.nodes)
	}
	p.mu.Unlock()
}

// publish sends event n on channel until it is acknowledged or the deadline passes.
func (p *faultPublisher) publish(ch, event string, n int, deadline time.Time) error {
	data := map[string]any{"n": n}
	if p.pad != "" {
		data["pad"] = p.pad
	}
	body, _ := json.Marshal(map[string]any{"event": event, "data": data})
	key := http.Header{"Idempotency-Key": {fmt.Sprintf("%s-%d", event, n)}}
	// saidNotAppended: an answer said this attempt appended nothing, and no earlier attempt's
	// answer left it open (a timeout or a lost answer may have appended the event, which a
	// later retry then rightly finds).
	saidNotAppended, mayHaveAppended := false, false
	for attempt := 1; ; attempt++ {
		if time.Now().After(deadline) {
			return fmt.Errorf("publish %s n=%d on %s: not acknowledged after %d attempts", event, n, ch, attempt-1)
		}
		idx, node := p.current()
		r, err := node.publishBody(p.tok, ch, body, key)
		switch {
		case err != nil:
			p.count("transport error")
			mayHaveAppended = true
			p.failover(idx)
			time.Sleep(20 * time.Millisecond)
		case r.Status == http.StatusCreated || r.Status == http.StatusOK:
			var pr publishReply
			if err := strictJSON(r.Body, &pr); err != nil || pr.ID == "" || pr.Channel != ch {
				return fmt.Errorf("publish %s n=%d on %s: bad answer %s", event, n, ch, r)
			}
			p.count(strconv.Itoa(r.Status))
			p.mu.Lock()
			if r.Status == http.StatusOK && saidNotAppended {
				p.falseUnavailable = append(p.falseUnavailable, key.Get("Idempotency-Key"))
			}
			p.acked[ch] = append(p.acked[ch], ackedEvent{N: n, ID: pr.ID, Event: event})
			p.mu.Unlock()
			return nil
		case r.Status == http.StatusServiceUnavailable:
			code := errorCode(r.Body)
			p.count("503 " + code)
			switch code {
			case "store_unavailable":
				saidNotAppended = saidNotAppended || !mayHaveAppended
			case "shutting_down", "over_capacity":
			default: // store_timeout, replication_timeout …: it may have been appended
				mayHaveAppended = true
			}
			if code == "shutting_down" {
				p.failover(idx)
			}
			time.Sleep(50 * time.Millisecond)
		default:
			return fmt.Errorf("publish %s n=%d on %s: unexpected answer %s", event, n, ch, r)
		}
	}
}

// run publishes n = 0, 1, 2 … on ch until stop is closed, then the closing "Done" event.
func (p *faultPublisher) run(ch string, stop <-chan struct{}, deadline time.Time) error {
	for n := 0; ; n++ {
		select {
		case <-stop:
			return p.publish(ch, "Done", n, deadline)
		default:
		}
		if err := p.publish(ch, "Tick", n, deadline); err != nil {
			return err
		}
		if p.pause > 0 {
			time.Sleep(p.pause)
		}
	}
}

// runAll runs one publisher goroutine per channel and returns a function that stops them and
// reports the first error.
func (p *faultPublisher) runAll(channels []string, d time.Duration) (stop func() error) {
	done := make(chan struct{})
	errs := make(chan error, len(channels))
	deadline := time.Now().Add(d)
	for _, ch := range channels {
		go func() { errs <- p.run(ch, done, deadline) }()
	}
	return func() error {
		close(done)
		var first error
		for range channels {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	}
}

func (p *faultPublisher) ackedCopy() map[string][]ackedEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string][]ackedEvent, len(p.acked))
	for ch, evs := range p.acked {
		out[ch] = slices.Clone(evs)
	}
	return out
}

func (p *faultPublisher) answerSummary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]string, 0, len(p.answers))
	for k := range p.answers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: %d", k, p.answers[k])
	}
	return b.String()
}

func errorCode(body []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Code == "" {
		return "(no error code)"
	}
	return e.Error.Code
}

// ---------------------------------------------------------------------------------------------
// Subscribing through faults

// seenItem is one thing a subscriber received on one channel: an event, or a herald:resync.
type seenItem struct {
	Resync bool
	ID     string // the event's channel cursor
	N      int
	Event  string
}

// subRecord is everything one subscriber received, per channel, in order.
type subRecord struct {
	name       string
	channels   []string
	seen       map[string][]seenItem
	done       map[string]bool // the closing "Done" event arrived
	reconnects int
	// serverErrors counts 5xx answers other than 503 met on the way back (a reconnect or a
	// poll): a client retries them, but they are wrong answers, so the cases report them.
	serverErrors int
	err          error
}

func newSubRecord(name string, channels []string) *subRecord {
	return &subRecord{name: name, channels: channels, seen: map[string][]seenItem{}, done: map[string]bool{}}
}

func (r *subRecord) finished() bool { return len(r.done) == len(r.channels) }

func (r *subRecord) addEvent(env envelope) {
	n, _ := seqN(env.Data)
	r.seen[env.Channel] = append(r.seen[env.Channel], seenItem{ID: env.ID, N: n, Event: env.Event})
	if env.Event == "Done" {
		r.done[env.Channel] = true
	}
}

func (r *subRecord) addResync(rs resyncNotice) {
	for _, ch := range rs.Channels {
		r.seen[ch] = append(r.seen[ch], seenItem{Resync: true})
	}
}

// sseFollower is an SSE subscriber that behaves like EventSource: when its stream ends it
// reconnects with the last id it saw, trying the nodes in turn.
type sseFollower struct {
	rec    *subRecord
	nodes  []*herald
	node   int
	path   string
	s      *sseStream
	lastID string
}

// followSSE opens path on nodes[node]; the stream is live (herald:connected read) when it
// returns, so every event published afterwards is owed to it.
func followSSE(t *testing.T, name string, nodes []*herald, node int, path string, channels ...string) *sseFollower {
	t.Helper()
	s := mustSSE(t, nodes[node].Base+path, nil)
	hello := s.expectPreamble(t)
	return &sseFollower{rec: newSubRecord(name, channels), nodes: nodes, node: node, path: path, s: s, lastID: hello.Cursor}
}

// run reads until the "Done" event of every channel, for at most d.
func (f *sseFollower) run(d time.Duration) *subRecord { return f.runUntil(time.Now().Add(d)) }

func (f *sseFollower) runUntil(deadline time.Time) *subRecord {
	defer func() {
		if f.s != nil {
			f.s.Close()
		}
	}()
	for !f.rec.finished() {
		if f.s == nil {
			if err := f.reconnect(deadline); err != nil {
				f.rec.err = err
				return f.rec
			}
		}
		fr, err := f.s.nextEvent(time.Until(deadline))
		if errors.Is(err, errTimeout) {
			f.rec.err = fmt.Errorf("%s: stream still open without the end of every channel at the deadline", f.rec.name)
			return f.rec
		}
		if err != nil {
			f.s.Close()
			f.s = nil
			continue
		}
		if err := f.handle(fr); err != nil {
			f.rec.err = err
			return f.rec
		}
	}
	return f.rec
}

// handle records one frame and remembers the id to resume from.
func (f *sseFollower) handle(fr frame) error {
	switch {
	case fr.CommentOnly() || fr.Event == "herald:connected" || fr.HasRetry && !fr.HasData:
	case fr.Event == "herald:resync":
		var rs resyncNotice
		if err := json.Unmarshal([]byte(fr.Data), &rs); err != nil {
			return fmt.Errorf("%s: resync data %q: %v", f.rec.name, fr.Data, err)
		}
		f.rec.addResync(rs)
	default:
		ev, err := eventFrame(fr)
		if err != nil {
			return fmt.Errorf("%s: %v", f.rec.name, err)
		}
		f.rec.addEvent(ev.Env)
	}
	if fr.HasID {
		f.lastID = fr.ID
	}
	return nil
}

// reconnect opens the stream again with the last id seen, on the same node or, when that one
// does not answer, the next.
func (f *sseFollower) reconnect(deadline time.Time) error {
	f.rec.reconnects++
	if f.rec.reconnects > 50 {
		return fmt.Errorf("%s: more than 50 reconnects", f.rec.name)
	}
	var last error
	for time.Now().Before(deadline) {
		s, err := openSSE(f.nodes[f.node].Base+f.path, lastEventHeader(f.lastID))
		if err == nil {
			f.s = s
			return nil
		}
		last = err
		var se *statusError
		if errors.As(err, &se) && se.r.Status >= 500 && se.r.Status != http.StatusServiceUnavailable {
			f.rec.serverErrors++
		}
		f.node = (f.node + 1) % len(f.nodes)
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: could not reconnect with Last-Event-ID %s: %v", f.rec.name, f.lastID, last)
}

// pausedFollower is a subscriber that stops reading for a while (a phone in a pocket, a
// background tab) on a connection with a small receive buffer. Once resumed it reads what its
// buffers still hold and, if the server cut it off meanwhile, reconnects with its last id.
type pausedFollower struct {
	raw    *testkit.RawSSE
	resume chan struct{}
	sse    *sseFollower // the same subscriber after a reconnect
	cut    bool         // the server ended the paused connection
}

func followPaused(t *testing.T, name string, nodes []*herald, node int, path string, channels ...string) *pausedFollower {
	t.Helper()
	raw, err := testkit.DialSSE(nodes[node].Addr, path, nil, 4096)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(raw.Close)
	raw.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := raw.ReadHead(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var hello connected
	for hello.Cursor == "" {
		f, err := raw.ReadFrame()
		if err != nil {
			t.Fatalf("%s: waiting for herald:connected: %v", name, err)
		}
		if f.Event == "herald:connected" {
			if err := json.Unmarshal([]byte(f.Data), &hello); err != nil || hello.Cursor == "" {
				t.Fatalf("%s: herald:connected %q", name, f.Data)
			}
		}
	}
	raw.Conn.SetReadDeadline(time.Time{})
	sse := &sseFollower{rec: newSubRecord(name, channels), nodes: nodes, node: node, path: path, lastID: hello.Cursor}
	return &pausedFollower{raw: raw, resume: make(chan struct{}), sse: sse}
}

func (f *pausedFollower) run(d time.Duration) *subRecord {
	deadline := time.Now().Add(d)
	select {
	case <-f.resume:
	case <-time.After(d):
		f.sse.rec.err = fmt.Errorf("%s: never resumed", f.sse.rec.name)
		return f.sse.rec
	}
	f.raw.Conn.SetReadDeadline(deadline)
	for !f.sse.rec.finished() {
		fr, err := f.raw.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				f.sse.rec.err = fmt.Errorf("%s: the paused connection neither ended nor finished", f.sse.rec.name)
				return f.sse.rec
			}
			f.cut = true
			break
		}
		if err := f.sse.handle(fr); err != nil {
			f.sse.rec.err = err
			return f.sse.rec
		}
	}
	f.raw.Close()
	return f.sse.runUntil(deadline)
}

// pollFollower is a long-poll chain that moves to the next node when one fails.
type pollFollower struct {
	rec    *subRecord
	nodes  []*herald
	node   int
	path   string
	q      url.Values // the channel parameters of /v1/poll
	cursor string
	// With resume set, the chain stops polling once it has taken pauseAt events, until resume
	// is closed: a client whose cursor ages while the log moves on.
	pauseAt int
	resume  chan struct{}
}

func followPoll(t *testing.T, name string, nodes []*herald, node int, path string, channels ...string) *pollFollower {
	t.Helper()
	q := url.Values{}
	if path == "/v1/poll" {
		q["channel"] = channels
	}
	head := nodes[node].mustPoll(t, path, q, "")
	return &pollFollower{rec: newSubRecord(name, channels), nodes: nodes, node: node, path: path, q: q, cursor: head.Cursor}
}

func (f *pollFollower) run(d time.Duration) *subRecord {
	deadline := time.Now().Add(d)
	for polls := 0; !f.rec.finished(); polls++ {
		if time.Now().After(deadline) || polls > 100000 {
			f.rec.err = fmt.Errorf("%s: without the end of every channel after %v and %d polls", f.rec.name, d, polls)
			return f.rec
		}
		limit := "1000"
		if f.resume != nil {
			if f.taken() >= f.pauseAt {
				select {
				case <-f.resume:
				case <-time.After(time.Until(deadline)):
				}
				f.resume = nil
				continue
			}
			limit = "1"
		}
		q := url.Values{"cursor": {f.cursor}, "limit": {limit}, "timeout": {"2"}}
		for k, v := range f.q {
			q[k] = v
		}
		a, r, err := f.nodes[f.node].poll(f.path, q, "")
		if err != nil {
			if r.Status != 0 && r.Status < 500 {
				f.rec.err = fmt.Errorf("%s: %v", f.rec.name, err)
				return f.rec
			}
			if r.Status >= 500 && r.Status != http.StatusServiceUnavailable {
				f.rec.serverErrors++
			}
			f.rec.reconnects++
			f.node = (f.node + 1) % len(f.nodes)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for _, rs := range a.Resync {
			f.rec.addResync(rs)
		}
		for _, raw := range a.Events {
			env, err := parseEnvelope(raw)
			if err != nil {
				f.rec.err = fmt.Errorf("%s: %v", f.rec.name, err)
				return f.rec
			}
			f.rec.addEvent(env)
		}
		f.cursor = a.Cursor
	}
	return f.rec
}

func (f *pollFollower) taken() int {
	n := 0
	for _, items := range f.rec.seen {
		n += len(items)
	}
	return n
}

// ---------------------------------------------------------------------------------------------
// Counting

// faultCounts is what a fault case reports, summed over its subscribers.
type faultCounts struct {
	Subscribers  int `json:"subscribers"`
	Acknowledged int `json:"acknowledged"` // distinct events answered 201 (or 200 on a retry), over all channels
	Delivered    int `json:"delivered"`    // acknowledged events received, summed over subscribers
	Lost         int `json:"lost"`         // acknowledged, owed to a subscriber, never received, and no herald:resync said so
	Duplicated   int `json:"duplicated"`   // received again: the same id, or the same publish under a second id
	Reordered    int `json:"reordered"`    // received after a later event of its channel
	Resynced     int `json:"resynced"`     // herald:resync notices received
	// Announced is what resyncs covered: acknowledged events a subscriber was told it would not
	// get (the store forgot them).
	Announced int `json:"announced"`
	// Unacknowledged counts events received that no answer acknowledged: appended, but the
	// publisher never heard so (its retry then got the same id, or the store forgot them both).
	Unacknowledged int `json:"unacknowledged"`
}

func (c faultCounts) String() string {
	b, _ := json.Marshal(c)
	return string(b)
}

type position struct {
	epoch string
	seq   uint64
}

func parsePosition(id string) (position, bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return position{}, false
	}
	seq, err := strconv.ParseUint(id[i+1:], 10, 64)
	return position{id[:i], seq}, err == nil
}

// skipRange is the stretch of a channel's log a subscriber passed over, from after `from` to
// before `to`.
type skipRange struct{ from, to position }

func (r skipRange) covers(p position) bool {
	if r.from.epoch == r.to.epoch {
		return p.epoch == r.from.epoch && p.seq > r.from.seq && p.seq < r.to.seq
	}
	return p.epoch == r.from.epoch && p.seq > r.from.seq || p.epoch == r.to.epoch && p.seq < r.to.seq ||
		p.epoch != r.from.epoch && p.epoch != r.to.epoch
}

// tally adds what rec received to c. A subscriber is owed every acknowledged event of its
// channels (it was live before the first publish): each channel's events must follow one
// another by sequence, and a jump is allowed only right after a herald:resync.
func (c *faultCounts) tally(rec *subRecord, acked map[string][]ackedEvent) {
	c.Subscribers++
	for _, ch := range rec.channels {
		byID := map[string]ackedEvent{}
		for _, a := range acked[ch] {
			byID[a.ID] = a
		}
		got := map[string]bool{}
		epochOfN := map[int]string{}
		var announced, silent []skipRange
		prev := position{} // a fresh channel: the first event is seq 1
		resynced := false
		for _, it := range rec.seen[ch] {
			if it.Resync {
				c.Resynced++
				resynced = true
				continue
			}
			pos, ok := parsePosition(it.ID)
			if !ok || got[it.ID] {
				c.Duplicated++
				continue
			}
			got[it.ID] = true
			if a, ok := byID[it.ID]; !ok {
				c.Unacknowledged++
			} else if a.Event != "Done" {
				c.Delivered++
			}
			switch {
			case pos.epoch == prev.epoch && pos.seq == prev.seq+1 || prev == (position{}) && pos.seq == 1:
			case resynced:
				announced = append(announced, skipRange{prev, pos})
			case pos.epoch == prev.epoch && pos.seq <= prev.seq:
				c.Reordered++ // delivered, late
				continue
			default:
				silent = append(silent, skipRange{prev, pos})
			}
			resynced = false
			prev = pos
			// The same publish under two ids in one epoch was appended twice.
			if e, ok := epochOfN[it.N]; ok && e == pos.epoch && it.Event != "Done" {
				c.Duplicated++
			}
			epochOfN[it.N] = pos.epoch
		}
		for _, a := range acked[ch] {
			if got[a.ID] || a.Event == "Done" {
				continue
			}
			pos, _ := parsePosition(a.ID)
			if slices.ContainsFunc(announced, func(r skipRange) bool { return r.covers(pos) }) &&
				!slices.ContainsFunc(silent, func(r skipRange) bool { return r.covers(pos) }) {
				c.Announced++
			} else {
				c.Lost++
			}
		}
	}
}

func countAcked(acked map[string][]ackedEvent) int {
	n := 0
	for _, evs := range acked {
		for _, a := range evs {
			if a.Event != "Done" {
				n++
			}
		}
	}
	return n
}

// follower is a subscriber that reads until the closing event of each of its channels.
type follower interface {
	run(d time.Duration) *subRecord
}

// startFollowers runs every follower in the background, at most d, from now on: like real
// clients, they read while the faults happen. wait returns their records; a follower that
// failed fails the test.
func startFollowers(t *testing.T, d time.Duration, followers ...follower) (wait func() []*subRecord) {
	recs := make([]*subRecord, len(followers))
	var wg sync.WaitGroup
	for i, f := range followers {
		wg.Go(func() { recs[i] = f.run(d) })
	}
	return func() []*subRecord {
		t.Helper()
		wg.Wait()
		for _, r := range recs {
			if r.err != nil {
				t.Errorf("subscriber %s: %v", r.name, r.err)
			}
		}
		return recs
	}
}

// countAll tallies every record and logs the case's figures as one FAULT line.
func countAll(t *testing.T, name string, recs []*subRecord, acked map[string][]ackedEvent, extra string) faultCounts {
	t.Helper()
	c := faultCounts{Acknowledged: countAcked(acked)}
	reconnects, serverErrors := 0, 0
	for _, r := range recs {
		c.tally(r, acked)
		reconnects += r.reconnects
		serverErrors += r.serverErrors
	}
	t.Logf("FAULT %s %s reconnects=%d server_errors=%d %s", name, c, reconnects, serverErrors, extra)
	return c
}

// expectExact is the contract of a store that keeps what it acknowledged: every subscriber got
// every acknowledged event of its channels once, in order, with no resync.
func expectExact(t *testing.T, c faultCounts, recs []*subRecord, acked map[string][]ackedEvent) {
	t.Helper()
	if c.Lost != 0 || c.Duplicated != 0 || c.Reordered != 0 || c.Resynced != 0 || c.Announced != 0 || c.Unacknowledged != 0 {
		t.Errorf("want nothing lost, duplicated, reordered, resynced or left unacknowledged: %s", c)
	}
	want := 0
	for _, r := range recs {
		for _, ch := range r.channels {
			want += countAcked(map[string][]ackedEvent{ch: acked[ch]})
		}
	}
	if c.Delivered != want {
		t.Errorf("delivered %d, want %d: every acknowledged event to each subscriber of its channel", c.Delivered, want)
	}
}

// ---------------------------------------------------------------------------------------------
// A bare SSE client

// ---------------------------------------------------------------------------------------------
// The cases

// TestFaultRedisRestartNoPersistence: Redis keeps nothing on disk and is SIGKILLed under load,
// then restarted empty. Subscribers of every kind stay or come back; each either continues with
// the events of the new log after a herald:resync, or continues exactly — never past a silent
// gap. Publishers retry with their Idempotency-Key until acknowledged.
func TestFaultRedisRestartNoPersistence(t *testing.T) {
	t.Parallel()
	rd := startPrivateRedis(t)
	nodes := startNodes(t, onRedis(rd), 1)
	h := nodes[0]
	a, b := uniqueChannel("reset-a"), uniqueChannel("reset-b")
	var followers []follower
	for i := 0; i < 3; i++ {
		followers = append(followers, followSSE(t, fmt.Sprintf("sse-a-%d", i), nodes, 0, eventsPath(a), a))
	}
	followers = append(followers,
		followSSE(t, "sse-multi", nodes, 0, "/v1/stream?"+url.Values{"channel": {a, b}}.Encode(), a, b),
		followPoll(t, "poll-a", nodes, 0, pollPath(a), a),
		followPoll(t, "poll-multi", nodes, 0, "/v1/poll", a, b))

	wait := startFollowers(t, 30*time.Second, followers...)
	pub := newFaultPublisher(h.Publisher(t), h)
	pub.pause = 2 * time.Millisecond
	stop := pub.runAll([]string{a, b}, 30*time.Second)
	waitAcked(t, pub, 2*100)
	failed := pub.failures()
	rd.Stop()
	waitOutage(t, pub, failed)
	restart(t, rd)
	before := countAcked(pub.ackedCopy())
	waitAcked(t, pub, before+2*100)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	recs := wait()
	acked := pub.ackedCopy()
	c := countAll(t, "redis-restart-no-persistence", recs, acked, "answers: "+pub.answerSummary())
	if c.Lost != 0 || c.Duplicated != 0 || c.Reordered != 0 {
		t.Errorf("want nothing lost silently, duplicated or reordered: %s", c)
	}
	// Every subscriber ends on the new log: all of it, in order, after a resync.
	for _, r := range recs {
		for _, ch := range r.channels {
			newEpoch := newestEpoch(acked[ch])
			var tail []string
			resynced := false
			for _, it := range r.seen[ch] {
				if it.Resync {
					resynced = true
					continue
				}
				if p, _ := parsePosition(it.ID); p.epoch == newEpoch {
					tail = append(tail, it.ID)
				}
			}
			if !resynced {
				t.Errorf("%s on %s: no herald:resync although the store lost its log", r.name, ch)
			}
			if want := idsInEpoch(acked[ch], newEpoch); !slices.Equal(tail, want) {
				t.Errorf("%s on %s: got %d events of the new log, want all %d acknowledged, in order", r.name, ch, len(tail), len(want))
			}
		}
	}
}

// newestEpoch is the epoch of the last acknowledged event.
func newestEpoch(acked []ackedEvent) string {
	if len(acked) == 0 {
		return ""
	}
	p, _ := parsePosition(acked[len(acked)-1].ID)
	return p.epoch
}

func idsInEpoch(acked []ackedEvent, epoch string) []string {
	var out []string
	for _, a := range acked {
		if p, _ := parsePosition(a.ID); p.epoch == epoch {
			out = append(out, a.ID)
		}
	}
	return out
}

// waitAcked waits until the publisher has n acknowledged events in all.
func waitAcked(t *testing.T, p *faultPublisher, n int) {
	t.Helper()
	if !testkit.WaitFor(20*time.Second, func() bool { return countAcked(p.ackedCopy()) >= n }) {
		t.Fatalf("publishers reached %d acknowledged events of %d within 20s (answers: %s)", countAcked(p.ackedCopy()), n, p.answerSummary())
	}
}

// TestFaultRedisRestartAppendfsyncAlways: Redis writes every command to its append-only file
// before answering (appendfsync always) and is SIGKILLed under load, then restarted from that
// file. Nothing acknowledged may be lost: every subscriber gets every acknowledged event once,
// in order, with no resync, and the publishers' retries with the same Idempotency-Key never
// append an event twice.
func TestFaultRedisRestartAppendfsyncAlways(t *testing.T) {
	t.Parallel()
	rd := startPrivateRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	nodes := startNodes(t, onRedis(rd), 1)
	h := nodes[0]
	a, b := uniqueChannel("aof-a"), uniqueChannel("aof-b")
	followers := []follower{
		followSSE(t, "sse-a-1", nodes, 0, eventsPath(a), a),
		followSSE(t, "sse-a-2", nodes, 0, eventsPath(a), a),
		followSSE(t, "sse-b", nodes, 0, eventsPath(b), b),
		followSSE(t, "sse-multi", nodes, 0, "/v1/stream?"+url.Values{"channel": {a, b}}.Encode(), a, b),
		followPoll(t, "poll-a", nodes, 0, pollPath(a), a),
		followPoll(t, "poll-multi", nodes, 0, "/v1/poll", a, b),
	}
	wait := startFollowers(t, 30*time.Second, followers...)
	pub := newFaultPublisher(h.Publisher(t), h)
	pub.pause = 2 * time.Millisecond
	stop := pub.runAll([]string{a, b}, 30*time.Second)
	for kill := 0; kill < 2; kill++ {
		waitAcked(t, pub, countAcked(pub.ackedCopy())+2*100)
		failed := pub.failures()
		rd.Stop()
		waitOutage(t, pub, failed)
		restart(t, rd)
	}
	waitAcked(t, pub, countAcked(pub.ackedCopy())+2*100)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	recs := wait()
	acked := pub.ackedCopy()
	c := countAll(t, "redis-restart-appendfsync-always", recs, acked,
		fmt.Sprintf("answers: %s; store_unavailable later found appended: %d", pub.answerSummary(), len(pub.falseUnavailable)))
	expectExact(t, c, recs, acked)
	// An append in flight at the SIGKILL may have run: the answer must not say it did not.
	if n := len(pub.falseUnavailable); n > 0 {
		t.Errorf("%d answers said store_unavailable (nothing appended) for events that were appended: %v", n, pub.falseUnavailable)
	}
	// While Redis loads its file, reads are refused (LOADING, EXECABORT): 503, never 500.
	for _, r := range recs {
		if r.serverErrors > 0 {
			t.Errorf("%s: %d answers were 5xx other than 503 while Redis restarted", r.name, r.serverErrors)
		}
	}
}

// TestFaultPubSubKilled: each node's pub/sub connection, which carries live events, is killed
// again and again (CLIENT KILL TYPE pubsub) while events are published on both nodes. Each
// node notices, reconnects and fills the gap from the log: subscribers on both nodes get every
// event, once, in order, and no resync.
func TestFaultPubSubKilled(t *testing.T) {
	t.Parallel()
	rd := startPrivateRedis(t)
	nodes := startNodes(t, onRedis(rd), 2)
	na, nb := nodes[0], nodes[1]
	a, b := uniqueChannel("pubsub-a"), uniqueChannel("pubsub-b")
	multi := "/v1/stream?" + url.Values{"channel": {a, b}}.Encode()
	followers := []follower{
		followSSE(t, "A-sse-a", nodes, 0, eventsPath(a), a),
		followSSE(t, "B-sse-a", nodes, 1, eventsPath(a), a),
		followSSE(t, "A-sse-multi", nodes, 0, multi, a, b),
		followSSE(t, "B-sse-multi", nodes, 1, multi, a, b),
		followPoll(t, "B-poll-multi", nodes, 1, "/v1/poll", a, b),
	}
	wait := startFollowers(t, 30*time.Second, followers...)
	pubA := newFaultPublisher(na.Publisher(t), na)
	pubB := newFaultPublisher(na.Publisher(t), nb)
	pubA.pause, pubB.pause = 2*time.Millisecond, 2*time.Millisecond
	stopA := pubA.runAll([]string{a}, 30*time.Second)
	stopB := pubB.runAll([]string{b}, 30*time.Second)
	waitAcked(t, pubA, 50)
	killed := 0
	for i := 0; i < 10; i++ {
		reply, err := testkit.RedisCommand(rd.Addr(), "CLIENT", "KILL", "TYPE", "pubsub")
		if err != nil {
			t.Fatalf("CLIENT KILL TYPE pubsub: %v", err)
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(reply, ":"))
		killed += n
		// Traffic between two kills: some events acknowledged on each node since this one.
		waitAcked(t, pubA, countAcked(pubA.ackedCopy())+10)
		waitAcked(t, pubB, countAcked(pubB.ackedCopy())+10)
	}
	if err := errors.Join(stopA(), stopB()); err != nil {
		t.Fatal(err)
	}
	recs := wait()
	acked := pubA.ackedCopy()
	maps.Copy(acked, pubB.ackedCopy())
	c := countAll(t, "pubsub-killed", recs, acked, fmt.Sprintf("pub/sub connections killed: %d", killed))
	if killed < 10 {
		t.Errorf("killed %d pub/sub connections in 10 rounds: the nodes did not reconnect between rounds", killed)
	}
	expectExact(t, c, recs, acked)
}

// TestFaultNodeDeathUnderLoad: two nodes on one Redis; node A dies (SIGKILL) or is stopped
// (SIGTERM) while it serves subscribers and takes publishes. Its subscribers resume on node B
// with their last id, its publishers retry there with the same Idempotency-Key: nothing is
// lost, repeated or reordered, and no resync is needed.
func TestFaultNodeDeathUnderLoad(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			// SIGTERM drains A over 2 s: its pollers are refused there (503) and move too.
			nodes := startNodes(t, onRedis(startPrivateRedis(t)), 2, "--retry", "200ms", "--drain-period", "2s")
			na, nb := nodes[0], nodes[1]
			a, b := uniqueChannel("death-a"), uniqueChannel("death-b")
			multi := "/v1/stream?" + url.Values{"channel": {a, b}}.Encode()
			followers := []follower{
				followSSE(t, "A-sse-a-1", nodes, 0, eventsPath(a), a),
				followSSE(t, "A-sse-a-2", nodes, 0, eventsPath(a), a),
				followSSE(t, "A-sse-b", nodes, 0, eventsPath(b), b),
				followSSE(t, "A-sse-multi", nodes, 0, multi, a, b),
				followPoll(t, "A-poll-a", nodes, 0, pollPath(a), a),
				followPoll(t, "A-poll-multi", nodes, 0, "/v1/poll", a, b),
				followSSE(t, "B-sse-multi", nodes, 1, multi, a, b),
			}
			wait := startFollowers(t, 30*time.Second, followers...)
			pub := newFaultPublisher(na.Publisher(t), na, nb)
			pub.pause = 2 * time.Millisecond
			stop := pub.runAll([]string{a, b}, 30*time.Second)
			waitAcked(t, pub, 2*100)
			if sig == syscall.SIGKILL {
				na.Kill()
			} else {
				na.Signal(sig)
				if code, exited := na.WaitExit(15 * time.Second); !exited || code != 0 {
					t.Errorf("node A after SIGTERM: exited %v with code %d, want 0", exited, code)
				}
			}
			waitAcked(t, pub, countAcked(pub.ackedCopy())+2*100)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			recs := wait()
			acked := pub.ackedCopy()
			c := countAll(t, "node-"+strings.ToLower(sig.String()), recs, acked, "answers: "+pub.answerSummary())
			expectExact(t, c, recs, acked)
			for _, r := range recs[:6] {
				if r.reconnects == 0 {
					t.Errorf("%s: never moved off node A", r.name)
				}
			}
		})
	}
}

// TestFaultTrimUnderPausedSubscriber: subscribers stop reading (an SSE connection with a small
// receive buffer, a long-poll chain that stops polling) while far more events than
// --history-size are published. When they come back the events they missed are gone: each
// gets herald:resync and then everything still retained, in order — never a silent skip — while
// a subscriber that kept reading got everything.
func TestFaultTrimUnderPausedSubscriber(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, onRedis(startPrivateRedis(t)), 1, "--history-size", "10", "--queue-size", "64")
	h := nodes[0]
	ch := uniqueChannel("paused")
	pausedSSE := followPaused(t, "paused-sse", nodes, 0, eventsPath(ch), ch)
	pausedPoll := followPoll(t, "paused-poll", nodes, 0, pollPath(ch), ch)
	pausedPoll.pauseAt, pausedPoll.resume = 3, make(chan struct{})
	reader := followSSE(t, "reading-sse", nodes, 0, eventsPath(ch), ch)
	wait := startFollowers(t, 30*time.Second, pausedSSE, pausedPoll, reader)

	pub := newFaultPublisher(h.Publisher(t), h)
	// The kernel lets a connection's send buffer grow to about 1 MB even towards a reader that
	// takes nothing (tcp_wmem autotuning), and the node queues --queue-size events more before
	// it drops the subscriber: 300 events of 16 KB are well past both.
	pub.pad = strings.Repeat("x", 16000)
	stop := pub.runAll([]string{ch}, 30*time.Second)
	waitAcked(t, pub, 300)
	close(pausedSSE.resume)
	close(pausedPoll.resume)
	waitAcked(t, pub, 350)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	recs := wait()
	acked := pub.ackedCopy()
	c := countAll(t, "trim-under-paused-subscribers", recs, acked, "")
	if c.Lost != 0 || c.Duplicated != 0 || c.Reordered != 0 || c.Unacknowledged != 0 {
		t.Errorf("want nothing lost silently, duplicated or reordered: %s", c)
	}
	if !pausedSSE.cut {
		t.Errorf("the paused SSE subscriber was never cut off: its buffers held 300 events of 16 KB")
	}
	for _, r := range recs[:2] {
		if !slices.ContainsFunc(r.seen[ch], func(it seenItem) bool { return it.Resync }) {
			t.Errorf("%s: no herald:resync after a pause longer than the history", r.name)
		}
	}
	if rc := recs[2]; rc.reconnects == 0 && slices.ContainsFunc(rc.seen[ch], func(it seenItem) bool { return it.Resync }) {
		t.Errorf("the subscriber that kept reading got a resync without ever being dropped")
	}
}

// TestFaultCountsCatchFaults: the counting the fault cases rely on sees each fault it must
// see. Without it, a case could pass by counting nothing.
func TestFaultCountsCatchFaults(t *testing.T) {
	t.Parallel()
	acked := map[string][]ackedEvent{"c": {
		{N: 0, ID: "e1-1", Event: "Tick"}, {N: 1, ID: "e1-2", Event: "Tick"}, {N: 2, ID: "e1-3", Event: "Tick"},
		{N: 3, ID: "e1-4", Event: "Tick"}, {N: 4, ID: "e2-1", Event: "Tick"}, {N: 5, ID: "e2-2", Event: "Done"},
	}}
	ev := func(id string, n int) seenItem { return seenItem{ID: id, N: n, Event: "Tick"} }
	done := seenItem{ID: "e2-2", N: 5, Event: "Done"}
	resync := seenItem{Resync: true}
	for _, tc := range []struct {
		name string
		seen []seenItem
		want faultCounts
	}{
		{"exact", []seenItem{ev("e1-1", 0), ev("e1-2", 1), ev("e1-3", 2), ev("e1-4", 3), resync, ev("e2-1", 4), done},
			faultCounts{Delivered: 5, Resynced: 1}},
		{"silent gap", []seenItem{ev("e1-1", 0), ev("e1-3", 2), ev("e1-4", 3), resync, ev("e2-1", 4), done},
			faultCounts{Delivered: 4, Lost: 1, Resynced: 1}},
		{"silent new epoch", []seenItem{ev("e1-1", 0), ev("e1-2", 1), ev("e2-1", 4), done},
			faultCounts{Delivered: 3, Lost: 2}},
		{"announced", []seenItem{ev("e1-1", 0), resync, ev("e2-1", 4), done},
			faultCounts{Delivered: 2, Resynced: 1, Announced: 3}},
		{"duplicate id", []seenItem{ev("e1-1", 0), ev("e1-2", 1), ev("e1-2", 1), ev("e1-3", 2), ev("e1-4", 3), resync, ev("e2-1", 4), done},
			faultCounts{Delivered: 5, Duplicated: 1, Resynced: 1}},
		{"appended twice", []seenItem{ev("e1-1", 0), ev("e1-2", 1), ev("e1-3", 1), ev("e1-4", 3), resync, ev("e2-1", 4), done},
			faultCounts{Delivered: 5, Duplicated: 1, Resynced: 1}},
		{"reordered", []seenItem{ev("e1-1", 0), ev("e1-3", 2), ev("e1-2", 1), ev("e1-4", 3), resync, ev("e2-1", 4), done},
			faultCounts{Delivered: 5, Reordered: 1, Resynced: 1}},
		{"unacknowledged", []seenItem{ev("e1-1", 0), ev("e1-2", 1), ev("e1-3", 2), ev("e1-4", 3), ev("e1-5", 9), resync, ev("e2-1", 4), done},
			faultCounts{Delivered: 5, Unacknowledged: 1, Resynced: 1}},
	} {
		rec := newSubRecord(tc.name, []string{"c"})
		rec.seen["c"] = tc.seen
		var got faultCounts
		got.tally(rec, acked)
		tc.want.Subscribers = 1
		if got != tc.want {
			t.Errorf("%s: counted %s, want %s", tc.name, got, tc.want)
		}
	}
}
