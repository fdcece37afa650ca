package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// Subscriber states. The subscriber's goroutine moves it from subDialing to
// subOpen, subReady or subFailed; the runner moves subReady to subCounted
// when publishing starts, so that only subscribers that were ready by then
// are owed the messages.
const (
	subDialing int32 = iota
	subOpen          // response head accepted, waiting for the ready event
	subReady
	subCounted
	subFailed
)

// subscriber is one SSE connection and the goroutine that reads it. Its
// counters belong to that goroutine; the runner reads them after the
// goroutine has finished.
type subscriber struct {
	r        *runner
	idx      int32
	ch       int32
	state    atomic.Int32
	finished atomic.Bool
	conn     atomic.Pointer[net.TCPConn] // HTTP/1.1: the TCP connection, also under TLS

	// HTTP/2: the stream's request is cancelled by readyTimer when it is not ready in time.
	cancel     context.CancelFunc
	readyTimer *time.Timer
	timedOut   atomic.Bool

	released bool  // its connection slot was given back
	dropped  bool  // the stream ended before the tool closed it
	now      int64 // unix ns when the bytes being parsed were read
	reason   string

	parser sseParser
	body   bodyReader
	track  seqTracker

	events, others, comments, retries       uint32
	delivered, dup, late, jumps, ancient    uint32
	misrouted, stale, wrongEvent, uncounted uint32
}

// run connects, then reads until the connection ends or the runner closes
// it. Connecting is bounded by the connect timeout (dial, response head and
// ready event); reading ends when the runner closes the connection.
func (s *subscriber) run() {
	r := s.r
	defer func() {
		if s.readyTimer != nil {
			s.readyTimer.Stop()
			s.cancel()
		}
		s.releaseSlot()
		s.finished.Store(true)
		r.wg.Done()
	}()
	var stream io.Closer
	var done bool
	var err error
	if r.h2 != nil {
		body, oerr := s.openH2()
		if oerr != nil {
			s.fail(oerr.Error())
			return
		}
		stream = body
		done, err = s.readBody(body)
	} else {
		conn, ended, oerr := s.open()
		if oerr != nil {
			s.fail(oerr.Error())
			return
		}
		if ended {
			return
		}
		stream = conn
		done, err = s.readStream(conn)
	}
	stream.Close()
	if s.state.Load() == subOpen {
		switch {
		case isTimeout(err):
			s.fail("ready_timeout")
		default:
			s.fail("ended_before_ready_" + endReason(done, err))
		}
		return
	}
	if !r.stopping.Load() {
		s.dropped = true
		s.reason = endReason(done, err)
		r.nDropped.Add(1)
	}
}

// subError is a failure to connect, already named for the failure table.
type subError string

func (e subError) Error() string { return string(e) }

// open dials, sends the request and reads the response head. The bytes of
// the body that came with the head are parsed before it returns; ended
// reports that they already ended the stream, after the subscriber was ready.
func (s *subscriber) open() (rw net.Conn, ended bool, err error) {
	r := s.r
	ci := &r.chans[s.ch]
	b := (int(s.idx) / len(r.chans)) % len(ci.targets)
	d := r.dialers[0]
	if !ci.targets[b].ipv6 && len(r.dialers) > 1 {
		d = r.dialers[1+int(s.idx)%(len(r.dialers)-1)]
	}
	c, err := d.Dial("tcp", ci.targets[b].dial)
	if err != nil {
		return nil, false, subError(errReason("dial", err))
	}
	conn := c.(*net.TCPConn)
	s.conn.Store(conn)
	if r.stopping.Load() {
		conn.Close()
		return nil, false, subError("stopped")
	}
	r.nTCP.Add(1)
	_ = conn.SetDeadline(time.Now().Add(r.cfg.ConnectTimeout))
	rw = conn
	if t := ci.targets[b]; t.tls != nil {
		tc := tls.Client(conn, t.tls)
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, false, subError(errReason("tls", err))
		}
		rw = tc
	}
	if _, err := rw.Write(ci.subReqs[b]); err != nil {
		conn.Close()
		return nil, false, subError(errReason("write", err))
	}
	bp := r.bufPool.Get().(*[]byte)
	defer r.bufPool.Put(bp)
	buf := *bp
	n, headLen := 0, -1
	for headLen < 0 {
		if n == len(buf) {
			conn.Close()
			return nil, false, subError("response_head_too_large")
		}
		m, err := rw.Read(buf[n:])
		n += m
		headLen = findHeadEnd(buf[:n])
		if headLen < 0 && err != nil {
			conn.Close()
			return nil, false, subError(errReason("head", err))
		}
	}
	head, err := parseHead(buf[:headLen])
	switch {
	case err != nil:
		conn.Close()
		return nil, false, subError("bad_response_head")
	case head.status != 200:
		conn.Close()
		return nil, false, subError("http_" + strconv.Itoa(head.status))
	case !isEventStream(head.contentType):
		conn.Close()
		return nil, false, subError("not_event_stream")
	}
	_ = conn.SetWriteDeadline(time.Time{})
	s.body.init(head)
	s.state.Store(subOpen)
	if r.readyEvent == nil {
		s.becomeReady()
	}
	s.now = time.Now().UnixNano()
	if done, err := s.body.feed(buf[headLen:n], &s.parser, s); done || err != nil {
		conn.Close()
		if s.state.Load() == subOpen {
			return nil, false, subError("ended_before_ready_" + endReason(done, err))
		}
		// Ready, then ended at once: counts as dropped.
		if !r.stopping.Load() {
			s.dropped, s.reason = true, endReason(done, err)
			r.nDropped.Add(1)
		}
		return nil, true, nil
	}
	return rw, false, nil
}

// becomeReady marks the subscriber ready: from now on it is owed messages.
func (s *subscriber) becomeReady() {
	if !s.state.CompareAndSwap(subOpen, subReady) {
		return
	}
	if conn := s.conn.Load(); conn != nil {
		_ = conn.SetReadDeadline(time.Time{})
	}
	if s.readyTimer != nil {
		s.readyTimer.Stop()
	}
	s.r.nReady.Add(1)
	s.releaseSlot()
}

func (s *subscriber) fail(reason string) {
	s.reason = reason
	s.state.Store(subFailed)
	s.r.nFailed.Add(1)
	s.releaseSlot()
}

// releaseSlot lets the ramp start another connection attempt.
func (s *subscriber) releaseSlot() {
	if !s.released {
		s.released = true
		<-s.r.slots
	}
}

// feedBody passes bytes read from the connection on, and reports whether the
// stream ended.
func (s *subscriber) feedBody(b []byte) (bool, error) {
	s.now = time.Now().UnixNano()
	return s.body.feed(b, &s.parser, s)
}

// readStream reads the connection until the stream ends, it fails, or the
// runner closes it. readRaw is the cheap path on Linux for plain TCP; the
// loop here is the portable one, and the one for TLS.
func (s *subscriber) readStream(conn net.Conn) (done bool, err error) {
	if tc, ok := conn.(*net.TCPConn); ok {
		if handled, done, err := readRaw(tc, s); handled {
			return done, err
		}
	}
	buf := make([]byte, s.r.cfg.ReadBuf)
	for !s.r.stopping.Load() {
		n, err := conn.Read(buf)
		if n > 0 {
			if done, ferr := s.feedBody(buf[:n]); done || ferr != nil {
				return done, ferr
			}
		}
		if err != nil {
			return false, err
		}
	}
	return false, net.ErrClosed
}

// The event-stream sink.

func (s *subscriber) sseComment([]byte) { s.comments++ }
func (s *subscriber) sseRetry(int64)    { s.retries++ }

func (s *subscriber) sseEvent(name, id, data []byte) {
	s.events++
	r := s.r
	st := s.state.Load()
	if st == subOpen && r.readyEvent != nil && bytes.Equal(name, r.readyEvent) {
		s.becomeReady()
		return
	}
	var p payloadRef
	if !scanPayload(data, &p) {
		s.others++
		return
	}
	start := r.pubStart.Load()
	if start == 0 || p.t < start {
		s.stale++ // not from this run's publishing (a replay of history)
		return
	}
	if !bytes.Equal(p.ch, r.chans[s.ch].name) {
		s.misrouted++
		return
	}
	if st != subCounted {
		s.uncounted++ // it became ready after publishing began: nothing owed
		return
	}
	if r.expectEvent != nil && !bytes.Equal(name, r.expectEvent) {
		s.wrongEvent++
	}
	switch s.track.add(p.seq) {
	case seqDup:
		s.dup++
		return
	case seqJump:
		s.jumps++
	case seqLate:
		s.late++
	case seqAncient:
		s.ancient++
	}
	s.delivered++
	r.delivered.Add(1)
	r.lat.record(int(s.idx), (s.now-p.t)/1000)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// errReason names an error briefly, for the failure tables.
func errReason(stage string, err error) string {
	switch {
	case err == nil:
		return stage + "_ok"
	case errors.Is(err, errNotLoopback):
		return stage + "_not_loopback"
	case isTimeout(err):
		return stage + "_timeout"
	case isRefused(err):
		return stage + "_refused"
	case isReset(err):
		return stage + "_reset"
	case isTooManyFiles(err):
		return stage + "_too_many_open_files"
	case isNoPorts(err):
		return stage + "_no_free_ports"
	case errors.Is(err, errBadChunked), errors.Is(err, errLineTooLong):
		return stage + "_protocol_error"
	case errors.Is(err, net.ErrClosed):
		return stage + "_closed"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return stage + "_eof"
	}
	return stage + "_error"
}

// endReason names why a stream ended.
func endReason(done bool, err error) string {
	if done && err == nil {
		return "server_ended_stream"
	}
	return errReason("read", err)
}
