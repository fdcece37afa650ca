package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// pubBacklog is how many messages a publish worker may fall behind its
// schedule before it skips the oldest ones (counted as skipped).
const pubBacklog = 256

// publisher sends numbered messages at a fixed total rate from keep-alive
// HTTP workers. Each channel belongs to one worker (channel c to worker
// c % workers), and a worker sends one request at a time, so the messages
// of a channel leave in order and any reordering a subscriber sees is the
// server's.
type publisher struct {
	r       *runner
	body    *tmpl
	workers []*pubWorker
	seq     []uint64        // last number used per channel, written only by its worker
	okByCh  []atomic.Uint64 // accepted (2xx) per channel
	errs    atomic.Uint64
	skipped atomic.Uint64
	hist    *histogram
	window  time.Duration
	padding []byte
}

type pubWorker struct {
	p      *publisher
	idx    int
	chans  []int
	client *http.Client
	header http.Header
	errs   map[string]uint64
	buf    []byte
}

// guardedDial is the publishers' and health checks' dialer: loopback only.
func guardedDial(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: guardedControl}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		a, err := loopbackAddr(addr)
		if err != nil {
			return nil, err
		}
		return d.DialContext(ctx, "tcp", a)
	}
}

// newLoopbackClient returns an HTTP/1.1 client that dials loopback only,
// ignores proxies from the environment and follows no redirects. For https
// URLs it trusts roots only, and still speaks HTTP/1.1: a transport with its
// own dialer and TLS settings does not try HTTP/2.
func newLoopbackClient(timeout time.Duration, idle int, roots *x509.CertPool) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			Proxy:                 nil,
			DialContext:           guardedDial(timeout),
			MaxIdleConns:          idle,
			MaxIdleConnsPerHost:   idle,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: timeout,
			DisableCompression:    true,
		},
		Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func newPublisher(r *runner, body *tmpl, header http.Header) *publisher {
	cfg := &r.cfg
	p := &publisher{
		r:       r,
		body:    body,
		seq:     make([]uint64, cfg.Channels),
		okByCh:  make([]atomic.Uint64, cfg.Channels),
		hist:    newHistogram(4),
		padding: bytes.Repeat([]byte{'x'}, 1024),
	}
	for i := 0; i < cfg.PubWorkers; i++ {
		w := &pubWorker{
			p:      p,
			idx:    i,
			client: newLoopbackClient(cfg.PubTimeout, 2, cfg.RootCAs),
			header: header.Clone(),
			errs:   map[string]uint64{},
		}
		for c := i; c < cfg.Channels; c += cfg.PubWorkers {
			w.chans = append(w.chans, c)
		}
		p.workers = append(p.workers, w)
	}
	return p
}

// run publishes for d and returns when every worker is done: at most one
// request timeout after the window ends.
func (p *publisher) run(d time.Duration) {
	start := time.Now()
	end := start.Add(d)
	p.r.pubStart.Store(start.UnixNano())
	var wg sync.WaitGroup
	for _, w := range p.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(start, end)
		}()
	}
	wg.Wait()
	p.window = max(time.Since(start), d)
	for _, w := range p.workers {
		w.client.CloseIdleConnections()
	}
}

// run sends this worker's share of the rate: its channels in turn, evenly
// spaced, the workers' schedules offset from each other. A worker that falls
// more than pubBacklog messages behind skips the oldest; what is still due
// when the window ends is skipped too.
func (w *pubWorker) run(start, end time.Time) {
	p := w.p
	cfg := &p.r.cfg
	k := len(w.chans)
	if k == 0 {
		return
	}
	interval := time.Duration(float64(time.Second) * float64(cfg.Channels) / (cfg.Rate * float64(k)))
	interval = max(interval, time.Nanosecond)
	first := start.Add(interval * time.Duration(w.idx) / time.Duration(len(p.workers)))
	total := 0
	if span := end.Sub(first); span > 0 {
		total = int((span + interval - 1) / interval)
	}
	j := 0
	for j < total {
		now := time.Now()
		if !now.Before(end) {
			break
		}
		if wait := first.Add(time.Duration(j) * interval).Sub(now); wait > 0 {
			time.Sleep(min(wait, end.Sub(now)))
			continue
		}
		due := min(int(now.Sub(first)/interval)+1, total)
		if behind := due - j; behind > pubBacklog {
			p.skipped.Add(uint64(behind - pubBacklog))
			j += behind - pubBacklog
		}
		w.publish(w.chans[j%k])
		j++
	}
	if j < total {
		p.skipped.Add(uint64(total - j))
	}
}

// publish sends one message on channel c.
func (w *pubWorker) publish(c int) {
	p := w.p
	r := p.r
	ci := &r.chans[c]
	seq := p.seq[c] + 1
	t0 := time.Now()
	w.buf = p.appendPayload(w.buf[:0], ci.json, seq, t0.UnixNano())
	body := p.body.expand(make([]byte, 0, len(w.buf)+64), ci.nameStr, w.buf)
	req := &http.Request{
		Method:        http.MethodPost,
		URL:           ci.pubURL,
		Header:        w.header,
		Host:          ci.pubURL.Host,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		GetBody: func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(body)), nil
		},
	}
	resp, err := w.client.Do(req)
	if err != nil {
		// The server may have taken it: the number is used up, so a
		// subscriber that never sees it shows a gap, not a silent loss.
		p.seq[c] = seq
		w.errs[errReason("publish", err)]++
		p.errs.Add(1)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	lat := time.Since(t0)
	if resp.StatusCode/100 != 2 {
		// Refused: the number is used again for the next message.
		w.errs["http_"+strconv.Itoa(resp.StatusCode)]++
		p.errs.Add(1)
		return
	}
	p.seq[c] = seq
	p.okByCh[c].Add(1)
	p.hist.record(w.idx, lat.Microseconds())
}

// appendPayload writes {"seq":N,"ch":"<channel>","t":<unix ns>,"pad":"xx…"},
// padded with x so that the object is MsgSize bytes when it can be.
func (p *publisher) appendPayload(dst, chJSON []byte, seq uint64, t int64) []byte {
	start := len(dst)
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"ch":`...)
	dst = append(dst, chJSON...)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, `,"pad":"`...)
	for pad := p.r.cfg.MsgSize - (len(dst) - start) - 2; pad > 0; {
		n := min(pad, len(p.padding))
		dst = append(dst, p.padding[:n]...)
		pad -= n
	}
	return append(dst, `"}`...)
}

func (p *publisher) published() uint64 {
	var n uint64
	for i := range p.okByCh {
		n += p.okByCh[i].Load()
	}
	return n
}

func (p *publisher) errorsByReason() map[string]uint64 {
	out := map[string]uint64{}
	for _, w := range p.workers {
		for k, v := range w.errs {
			out[k] += v
		}
	}
	return out
}
