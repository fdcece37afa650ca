package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// chanInfo is what the subscribers and the publisher share about a channel.
type chanInfo struct {
	name    []byte
	nameStr string
	json    []byte    // the name as a JSON string
	targets []*target // by subscriber base
	subReqs [][]byte  // the whole subscribe request, by subscriber base
	pubURL  *url.URL
}

// runner is one run: the checked configuration and the shared state of the
// subscribers and the publisher.
type runner struct {
	cfg runConfig
	log io.Writer

	chans   []chanInfo
	subs    []subscriber
	dialers []*net.Dialer // [0]: no source address; [1+i]: from 127.0.0.(1+i)
	slots   chan struct{}
	wg      sync.WaitGroup
	bufPool sync.Pool

	readyEvent  []byte
	expectEvent []byte

	// HTTP/2 subscribers (-proto h2, h2c): the client, one connection per group of
	// StreamsPerConn streams, and the request header every stream sends.
	h2       *http2.Transport
	h2conns  []h2Conn
	h2Header http.Header
	nTCP     atomic.Int64 // subscriber TCP connections opened
	nHTTP2   atomic.Int64 // streams answered over HTTP/2

	nReady    atomic.Int64
	nFailed   atomic.Int64
	nDropped  atomic.Int64
	delivered atomic.Uint64
	stopping  atomic.Bool
	pubStart  atomic.Int64
	lat       *histogram
	pub       *publisher
	phase     atomic.Pointer[string]
}

// newRunner checks everything (every URL is parsed and must be loopback)
// before a single packet is sent.
func newRunner(cfg runConfig, log io.Writer) (*runner, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, log: log, lat: newHistogram(8)}
	if cfg.ReadyEvent != "" {
		r.readyEvent = []byte(cfg.ReadyEvent)
	}
	if cfg.ExpectEvent != "" {
		r.expectEvent = []byte(cfg.ExpectEvent)
	}
	base := strings.TrimRight(cfg.Base, "/")
	var subTs []*tmpl
	for _, b := range append([]string{cfg.Base}, cfg.SubBases...) {
		subT, err := parseTmpl("-sub-url", strings.ReplaceAll(cfg.SubURL, "{base}", strings.TrimRight(b, "/")), phChannel, phChannelQ)
		if err != nil {
			return nil, err
		}
		subTs = append(subTs, subT)
	}
	pubT, err := parseTmpl("-pub-url", strings.ReplaceAll(cfg.PubURL, "{base}", base), phChannel, phChannelQ)
	if err != nil {
		return nil, err
	}
	bodyT, err := parseTmpl("-pub-body", cfg.PubBody, phChannel, phChannelQ, phPayload)
	if err != nil {
		return nil, err
	}
	var subHdr strings.Builder
	h2Hdr := http.Header{"Accept": {"text/event-stream"}, "Cache-Control": {"no-cache"}, "User-Agent": {"heraldbench"}}
	for _, h := range cfg.SubHeaders {
		name, value, err := parseHeaderLine("-sub-header", h)
		if err != nil {
			return nil, err
		}
		subHdr.WriteString(name + ": " + value + "\r\n")
		h2Hdr.Add(name, value)
	}
	pubHdr := http.Header{}
	for _, h := range cfg.PubHeaders {
		name, value, err := parseHeaderLine("-pub-header", h)
		if err != nil {
			return nil, err
		}
		pubHdr.Add(name, value)
	}
	if cfg.Token != "" && pubHdr.Get("Authorization") == "" {
		pubHdr.Set("Authorization", "Bearer "+cfg.Token)
	}
	if pubHdr.Get("Content-Type") == "" {
		pubHdr.Set("Content-Type", "application/json")
	}
	if pubHdr.Get("User-Agent") == "" {
		pubHdr.Set("User-Agent", "heraldbench")
	}

	r.chans = make([]chanInfo, cfg.Channels)
	for c := range r.chans {
		name := cfg.ChannelPrefix + strconv.Itoa(c)
		if !validChannelName(name) {
			return nil, fmt.Errorf("channel name %q is not a valid Herald channel name ([A-Za-z0-9_-=@,.;], 1-164 bytes): change -channel-prefix", name)
		}
		ci := &r.chans[c]
		ci.name, ci.nameStr, ci.json = []byte(name), name, []byte(`"`+name+`"`)
		for _, subT := range subTs {
			if cfg.Mode == modePublish {
				break
			}
			t, err := parseTarget(string(subT.expand(nil, name, nil)))
			if err != nil {
				return nil, fmt.Errorf("-sub-url: %w", err)
			}
			if err := r.setTLS(t, "-sub-url"); err != nil {
				return nil, err
			}
			req := "GET " + t.u.RequestURI() + " HTTP/1.1\r\nHost: " + t.host +
				"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: heraldbench\r\n" +
				subHdr.String() + "\r\n"
			ci.targets, ci.subReqs = append(ci.targets, t), append(ci.subReqs, []byte(req))
		}
		if cfg.Mode != modeIdle {
			t, err := parseTarget(string(pubT.expand(nil, name, nil)))
			if err != nil {
				return nil, fmt.Errorf("-pub-url: %w", err)
			}
			if t.u.Scheme == "https" && cfg.RootCAs == nil {
				return nil, errors.New("-pub-url is https: give the certificate to trust with -tls-ca")
			}
			ci.pubURL = t.u // the publishers' dialer checks the address again
		}
	}
	if cfg.Mode != modeIdle {
		r.pub = newPublisher(r, bodyT, pubHdr)
	}
	if cfg.AdminURL != "" {
		if _, err := parseTarget(cfg.AdminURL); err != nil {
			return nil, fmt.Errorf("-server-admin: %w", err)
		}
	}
	if cfg.Mode != modePublish {
		mk := func(src net.IP) *net.Dialer {
			d := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: -1, Control: guardedControl}
			if src != nil {
				d.LocalAddr = &net.TCPAddr{IP: src}
			}
			return d
		}
		r.dialers = append(r.dialers, mk(nil))
		for i := 0; i < cfg.SrcIPs; i++ {
			r.dialers = append(r.dialers, mk(net.IPv4(127, 0, 0, byte(1+i))))
		}
		r.slots = make(chan struct{}, cfg.MaxPending)
		size := cfg.ReadBuf
		r.bufPool.New = func() any {
			b := make([]byte, size)
			return &b
		}
		if cfg.isH2() {
			r.h2 = &http2.Transport{
				AllowHTTP:          cfg.Proto == protoH2C,
				DisableCompression: true, // as the HTTP/1.1 request: no Accept-Encoding
			}
			r.h2conns = make([]h2Conn, (cfg.Conns+cfg.StreamsPerConn-1)/cfg.StreamsPerConn)
			r.h2Header = h2Hdr
		}
	}
	r.setPhase("starting")
	return r, nil
}

func (r *runner) setPhase(p string) { r.phase.Store(&p) }

// setTLS checks that a subscribe URL's scheme is the one -proto and -tls ask for, and gives
// an https target its TLS settings: ALPN offers h2 alone for HTTP/2 and http/1.1 alone for
// HTTP/1.1, so the server cannot pick another protocol than the one measured.
func (r *runner) setTLS(t *target, flag string) error {
	cfg := &r.cfg
	switch {
	case cfg.useTLS() && t.u.Scheme != "https":
		return fmt.Errorf("%s: %s needs https:// URLs", flag, cfg.protoLabel())
	case !cfg.useTLS() && t.u.Scheme == "https":
		return fmt.Errorf("%s: an https:// URL needs -tls (HTTP/1.1) or -proto h2", flag)
	case !cfg.useTLS():
		return nil
	case cfg.RootCAs == nil:
		return fmt.Errorf("%s is https: give the certificate to trust with -tls-ca", flag)
	}
	alpn := "http/1.1"
	if cfg.isH2() {
		alpn = "h2"
	}
	t.tls = clientTLS(cfg.RootCAs, t.u.Hostname(), alpn)
	return nil
}

// connectAll opens the connections at the ramp rate, at most MaxPending
// attempts in flight, and waits until each is ready or has failed. Both
// steps are bounded in time.
func (r *runner) connectAll() {
	cfg := &r.cfg
	n := cfg.Conns
	r.subs = make([]subscriber, n)
	for i := range r.subs {
		r.subs[i].r, r.subs[i].idx, r.subs[i].ch = r, int32(i), int32(i%cfg.Channels)
	}
	start := time.Now()
	rampFor := time.Duration(float64(n) / cfg.RampRate * float64(time.Second))
	giveUp := time.NewTimer(rampFor + 2*cfg.ConnectTimeout + 5*time.Second)
	defer giveUp.Stop()
	launched := 0
ramp:
	for i := range r.subs {
		due := start.Add(time.Duration(float64(i) / cfg.RampRate * float64(time.Second)))
		if d := time.Until(due); d > time.Millisecond {
			time.Sleep(d)
		}
		select {
		case r.slots <- struct{}{}:
		case <-giveUp.C:
			break ramp
		}
		r.wg.Add(1)
		go r.subs[i].run()
		launched++
	}
	for i := launched; i < n; i++ {
		s := &r.subs[i]
		s.reason = "not_started_ramp_timeout"
		s.state.Store(subFailed)
		s.finished.Store(true)
		r.nFailed.Add(1)
	}
	// Every attempt ends within its connect timeout (dial, head, ready).
	wait := time.Now().Add(2*cfg.ConnectTimeout + 2*time.Second)
	for r.nReady.Load()+r.nFailed.Load() < int64(n) && time.Now().Before(wait) {
		time.Sleep(10 * time.Millisecond)
	}
}

// stopAll closes every connection and waits, within a bound, for the
// subscriber goroutines to end.
func (r *runner) stopAll() {
	r.stopping.Store(true)
	for i := range r.subs {
		if c := r.subs[i].conn.Load(); c != nil {
			c.Close()
		}
	}
	r.closeH2()
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(r.cfg.ConnectTimeout + 5*time.Second):
		fmt.Fprintln(r.log, "heraldbench: warning: some subscriber goroutines did not end; their figures are left out")
	}
}

// startProgress prints a status line every cfg.Progress until stopped.
func (r *runner) startProgress() (stop func()) {
	if r.cfg.Progress <= 0 {
		return func() {}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		t := time.NewTicker(r.cfg.Progress)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				line := fmt.Sprintf("[%s %5.1fs] %-10s ready=%d failed=%d dropped=%d", r.cfg.Scenario,
					time.Since(start).Seconds(), *r.phase.Load(), r.nReady.Load(), r.nFailed.Load(), r.nDropped.Load())
				if r.pub != nil {
					line += fmt.Sprintf(" published=%d", r.pub.published())
				}
				if r.cfg.Mode == modeFanout {
					line += fmt.Sprintf(" delivered=%d", r.delivered.Load())
				}
				fmt.Fprintln(r.log, line)
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// sample is a reading of one process: memory in KiB, CPU in seconds.
type sample struct {
	ok       bool
	rss, hwm int64
	cpu      float64
	cpuOK    bool
}

func readProc(pid int) (s sample) {
	if pid > 0 {
		if rss, hwm, err := procMem(pid); err == nil {
			s.ok, s.rss, s.hwm = true, rss, hwm
		}
		if c, err := procCPU(pid); err == nil {
			s.cpu, s.cpuOK = c, true
		}
	}
	return s
}

// readProcs is readProc of the first process with the CPU of the others added (a cluster's
// redis-servers, a deployment's nodes); cpuOK only when every one was read.
func readProcs(pids []int) sample {
	s := readProc(pids[0])
	for _, pid := range pids[1:] {
		p := readProc(pid)
		s.cpu += p.cpu
		s.cpuOK = s.cpuOK && p.cpuOK
	}
	return s
}

// runOnce carries out one run: connect, settle, publish or hold, drain,
// measure, close.
func runOnce(cfg runConfig, log io.Writer) (*result, error) {
	r, err := newRunner(cfg, log)
	if err != nil {
		return nil, err
	}
	res := &result{
		Tool:       "heraldbench",
		Scenario:   cfg.Scenario,
		Mode:       cfg.Mode,
		Channels:   cfg.Channels,
		ServerPID:  cfg.ServerPID,
		RedisPID:   cfg.RedisPID,
		RedisPIDs:  cfg.RedisPIDs,
		PubWorkers: cfg.PubWorkers,
		Proto:      cfg.protoLabel(),
	}
	if cfg.isH2() {
		res.StreamsPerConn = cfg.StreamsPerConn
	}
	if cfg.ServerPID > 0 {
		if _, _, err := procMem(cfg.ServerPID); err != nil {
			return nil, fmt.Errorf("-server-pid %d: %w", cfg.ServerPID, err)
		}
	}
	if cfg.Mode != modePublish {
		res.ConnsRequested = cfg.Conns
		need := uint64(cfg.Conns) + uint64(2*cfg.PubWorkers) + 64
		soft, _ := raiseNofile(need)
		res.NofileLimit = soft
		if soft > 0 && soft < need {
			fmt.Fprintf(log, "heraldbench: warning: open-file limit %d is below the %d this run needs; connections past it fail\n", soft, need)
		}
	}
	if cfg.Mode != modeIdle {
		res.RateTarget = cfg.Rate
		res.MsgSize = len(r.pub.appendPayload(nil, r.chans[0].json, 1, time.Now().UnixNano()))
	}
	stopProgress := r.startProgress()
	defer stopProgress()
	self := os.Getpid()

	var admin *http.Client
	var memBefore goMem
	if cfg.AdminURL != "" && cfg.Mode != modePublish {
		admin = adminClient(&cfg)
		var err error
		if memBefore, err = readGoMem(admin, cfg.AdminURL); err != nil {
			fmt.Fprintln(log, "heraldbench: note: no Go heap figures from the server's admin listener:", err)
			admin = nil
		}
	}
	srvBefore := readProc(cfg.ServerPID)
	cliBefore := readProc(self)
	if cfg.Mode != modePublish {
		r.setPhase("connecting")
		t0 := time.Now()
		r.connectAll()
		res.ConnectS = time.Since(t0).Seconds()
		// Give back what connecting used, so the idle figures show
		// what holding the connections costs.
		runtime.GC()
		debug.FreeOSMemory()
		r.setPhase("settling")
		time.Sleep(cfg.Settle)
	}
	srvIdle := readProc(cfg.ServerPID)
	cliIdle := readProc(self)
	var memIdle goMem
	if admin != nil {
		// After the RSS reading: the collection this asks the server for must not change it.
		var err error
		if memIdle, err = readGoMem(admin, cfg.AdminURL); err != nil {
			fmt.Fprintln(log, "heraldbench: note: no Go heap figures after settle:", err)
		}
		if cfg.ProfileDir != "" {
			name := fmt.Sprintf("%s-%s-%d-pid%d", cfg.Scenario, cfg.protoLabel(), cfg.StreamsPerConn, cfg.ServerPID)
			if err := saveProfiles(admin, cfg.AdminURL, cfg.ProfileDir, name); err != nil {
				fmt.Fprintln(log, "heraldbench: warning: server profiles:", err)
			}
		}
	}

	// The subscribers ready now are the ones owed every message.
	counted := make([]uint64, cfg.Channels)
	for i := range r.subs {
		s := &r.subs[i]
		if s.state.CompareAndSwap(subReady, subCounted) {
			counted[s.ch]++
		}
	}
	redisPIDs := append([]int{cfg.RedisPID}, cfg.RedisPIDs...)
	serverPIDs := append([]int{cfg.ServerPID}, cfg.ServerPIDs...)
	srv0, redis0, cli0 := readProcs(serverPIDs), readProcs(redisPIDs), readProc(self)
	busy0, total0, hostErr := hostCPU()
	windowStart := time.Now()

	expected := func() uint64 {
		var e uint64
		for c := range counted {
			e += r.pub.okByCh[c].Load() * counted[c]
		}
		return e
	}
	switch cfg.Mode {
	case modeIdle:
		r.setPhase("holding")
		time.Sleep(cfg.Duration)
	default:
		r.setPhase("publishing")
		r.pub.run(cfg.Duration)
		if cfg.Mode == modeFanout {
			r.setPhase("draining")
			want := expected()
			end := time.Now().Add(cfg.Drain)
			for r.delivered.Load() < want && time.Now().Before(end) {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	res.MeasuredS = time.Since(windowStart).Seconds()
	srv1, redis1, cli1 := readProcs(serverPIDs), readProcs(redisPIDs), readProc(self)
	busy1, total1, _ := hostCPU()
	res.ConnsAliveEnd = r.nReady.Load() - r.nDropped.Load()

	r.setPhase("closing")
	r.stopAll()

	// Subscribers' figures.
	var others, comments, retries uint64
	res.FailReasons, res.DropReasons = map[string]int{}, map[string]int{}
	for i := range r.subs {
		s := &r.subs[i]
		if !s.finished.Load() {
			res.FailReasons["unfinished"]++
			continue
		}
		if s.state.Load() == subFailed {
			res.FailReasons[s.reason]++
			continue
		}
		res.ConnsReady++
		if s.dropped {
			res.DropReasons[s.reason]++
		}
		res.Delivered += uint64(s.delivered)
		res.Dup += uint64(s.dup)
		res.OutOfOrder += uint64(s.late) + uint64(s.ancient)
		res.Gaps += uint64(s.jumps)
		res.Misrouted += uint64(s.misrouted)
		res.Stale += uint64(s.stale)
		res.WrongEvent += uint64(s.wrongEvent)
		res.Uncounted += uint64(s.uncounted)
		others += uint64(s.others)
		comments += uint64(s.comments)
		retries += uint64(s.retries)
	}
	res.OtherEvents, res.Comments, res.Retries = others, comments, retries
	res.ConnsDropped = r.nDropped.Load()
	res.TCPConns, res.StreamsHTTP2 = r.nTCP.Load(), r.nHTTP2.Load()
	if cfg.Mode != modePublish {
		res.ConnsFailed = int64(cfg.Conns) - res.ConnsReady
	}
	lat := r.lat.snapshot()
	ms := func(us uint64) float64 { return float64(us) / 1000 }
	res.LatP50, res.LatP90, res.LatP99 = ms(lat.quantile(0.5)), ms(lat.quantile(0.9)), ms(lat.quantile(0.99))
	res.LatP999, res.LatMax, res.LatMean = ms(lat.quantile(0.999)), ms(lat.max), lat.mean()/1000

	// Publisher's figures.
	if r.pub != nil {
		ph := r.pub.hist.snapshot()
		res.Published = r.pub.published()
		res.PublishErrors = r.pub.errs.Load()
		res.PublishErrsBy = r.pub.errorsByReason()
		res.PublishSkipped = r.pub.skipped.Load()
		res.PublishWindowS = r.pub.window.Seconds()
		res.PublishesPerS = float64(res.Published) / res.PublishWindowS
		res.PubP50, res.PubP99, res.PubMax = ms(ph.quantile(0.5)), ms(ph.quantile(0.99)), ms(ph.max)
		if cfg.Mode == modeFanout {
			res.Expected = expected()
			if res.Expected > res.Delivered {
				res.Lost = res.Expected - res.Delivered
			}
			res.DeliveriesS = float64(res.Delivered) / res.PublishWindowS
		}
	}

	// Memory and CPU.
	if srvBefore.ok {
		res.ServerRSSBefore = iptr(srvBefore.rss)
	}
	if srvIdle.ok && cfg.Mode != modePublish {
		res.ServerRSSIdle = iptr(srvIdle.rss)
		if srvBefore.ok && res.ConnsReady > 0 {
			res.BytesPerConn = fptr(float64(srvIdle.rss-srvBefore.rss) * 1024 / float64(res.ConnsReady))
		}
	}
	if srv1.ok {
		res.ServerRSSEnd, res.ServerHWMEnd = iptr(srv1.rss), iptr(srv1.hwm)
	}
	if memBefore.ok && memIdle.ok && res.ConnsReady > 0 {
		n := float64(res.ConnsReady)
		res.ServerHeapPerConn = fptr(float64(memIdle.heapInuse-memBefore.heapInuse) / n)
		res.ServerStackPerConn = fptr(float64(memIdle.stackInuse-memBefore.stackInuse) / n)
		res.ServerGoroutinesPerConn = fptr(float64(memIdle.goroutines-memBefore.goroutines) / n)
	}
	if srv0.cpuOK && srv1.cpuOK {
		c := srv1.cpu - srv0.cpu
		res.ServerCPUS = fptr(c)
		if c > 0 && cfg.Mode == modeFanout {
			res.DelivPerCPUS = fptr(float64(res.Delivered) / c)
		}
		if c > 0 && cfg.Mode == modePublish {
			res.PubPerCPUS = fptr(float64(res.Published) / c)
		}
		if redis0.cpuOK && redis1.cpuOK {
			rc := redis1.cpu - redis0.cpu
			res.RedisCPUS = fptr(rc)
			if c+rc > 0 && cfg.Mode == modeFanout {
				res.DelivPerTotalCPU = fptr(float64(res.Delivered) / (c + rc))
			}
			if c+rc > 0 && cfg.Mode == modePublish {
				res.PubPerTotalCPU = fptr(float64(res.Published) / (c + rc))
			}
		}
	}
	if cli0.cpuOK && cli1.cpuOK {
		res.ClientCPUS = cli1.cpu - cli0.cpu
	}
	if cliIdle.ok && cfg.Mode != modePublish {
		res.ClientRSSIdle = iptr(cliIdle.rss)
		if cliBefore.ok && res.ConnsReady > 0 {
			res.ClientPerConn = fptr(float64(cliIdle.rss-cliBefore.rss) * 1024 / float64(res.ConnsReady))
		}
	}
	if hostErr == nil && total1 > total0 {
		res.HostBusyPct = 100 * float64(busy1-busy0) / float64(total1-total0)
	}
	if len(res.FailReasons) == 0 {
		res.FailReasons = nil
	}
	if len(res.DropReasons) == 0 {
		res.DropReasons = nil
	}
	res.roundAll()
	return res, nil
}
