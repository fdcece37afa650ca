package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/herald-rt/herald/stream"
)

// The SSE writer is our own few lines on http.ResponseController rather than r3labs/sse's
// server: that server keeps an unbounded log, rewrites ids, rejects non-numeric Last-Event-IDs
// and stalls every subscriber behind a slow one (docs/architecture.md). Here the engine owns
// ordering and fan-out, and this loop only writes shared bytes, flushes, and stops on the
// first write error or a write that misses its deadline.

func (s *Server) channelStream(c echo.Context) error { return s.serveSSE(c, true) }
func (s *Server) multiStream(c echo.Context) error   { return s.serveSSE(c, false) }

// streamBatch bounds how many deliveries one write gathers.
const streamBatch = 64

func (s *Server) serveSSE(c echo.Context, oneChannel bool) error {
	start := time.Now() // the stream's log line measures from here: its whole life
	req := c.Request()
	cursor := req.Header.Get("Last-Event-ID")
	if q := c.QueryParam("last_event_id"); q != "" {
		cursor = q
	}
	sub, err := s.parseSubscribe(c, oneChannel, !oneChannel, cursor)
	if err != nil {
		return err
	}
	kind := transportSSEMulti
	if oneChannel {
		kind = transportSSE
	}
	if err := s.census.admit(sub.app, kind, c.RealIP()); err != nil {
		return err
	}
	sock, err := s.open(req.Context(), sub)
	if err != nil {
		s.census.leave(sub.app, kind)
		return err
	}
	st := &sseStream{srv: s, app: sub.app, sess: s.sessions.open(s, sub.app, sock, sub.claims, kind), sock: sock, oneChannel: oneChannel, expires: sub.expires,
		unnamed: c.QueryParam("format") == "message", kind: kind, shard: rand.Uint32()}

	w := c.Response()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("X-Accel-Buffering", "no")
	var gz *sseGzip // nil: the stream goes out as it is
	if s.cfg.SSECompression {
		h.Add(echo.HeaderVary, echo.HeaderAcceptEncoding)
		if enc, _ := parseAcceptEncoding(req.Header.Values(echo.HeaderAcceptEncoding)).choose(false); enc == codingGzip {
			h.Set(echo.HeaderContentEncoding, "gzip")
			gz = newSSEGzip()
		}
	}

	// On HTTP/1.x the stream leaves the handler: the connection is hijacked and served by a
	// fresh goroutine that keeps only the socket and the net.Conn. net/http's per-connection
	// read and write buffers and the handler's deep stack are freed, which is most of an idle
	// stream's memory (docs/benchmarks.md, S1). HTTP/2 streams cannot be hijacked and are
	// served in the handler.
	conn, hijacked, err := hijack(w, s.cfg.WriteTimeout)
	if err != nil {
		// The connection is taken but the client is gone: nothing more can be written.
		st.sess.close()
		return nil
	}
	if hijacked {
		// The access log line is written when the stream ends, with its real duration and size.
		c.Set(streamLogKey, true)
		entry := requestOf(c, start)
		cw := &connWriter{conn: conn, timeout: s.cfg.WriteTimeout, written: int64(w.Size)}
		_, cw.coalesce = conn.(*tls.Conn)
		if tc, ok := tcpConn(conn); ok && s.cfg.StreamSendBuffer > 0 {
			// The kernel would grow a stream's send buffer towards a client that reads
			// nothing, about a megabyte each; a stream needs far less, and a stuck one then
			// fills its queue and is cut off sooner.
			_ = tc.SetWriteBuffer(s.cfg.StreamSendBuffer)
		}
		sock.OnLag(func() {
			// The stream's goroutine may be blocked writing to this client: the write
			// fails now, not at the write timeout.
			st.cutOff.Store(true)
			_ = conn.SetWriteDeadline(time.Now())
		})
		s.streams.Add(2)
		go func() {
			defer s.streams.Done()
			defer conn.Close()
			st.ctx, st.out = context.Background(), gz.over(cw)
			st.run()
			gz.finish()
			if st.cutOff.Load() || st.reason == "too slow" || st.reason == "write timeout" {
				// A client cut off for not reading gets a reset rather than a FIN queued behind
				// the data it did not take: the kernel frees the connection's buffers at once
				// instead of holding them for a client that may never read again. It resumes
				// from the last event it did receive.
				if tc, ok := tcpConn(conn); ok {
					_ = tc.SetLinger(0)
				}
			}
			s.finished(entry, http.StatusOK, cw.written, st.reason)
		}()
		// One blocked read notices the client leaving at once rather than at the next
		// heartbeat's failed write, which takes a heartbeat or two (20–30 s of a dead
		// connection and goroutine held); presence and connection counts depend on it. Nothing
		// more is read from the client: its bytes, if any, are dropped.
		go func() {
			defer s.streams.Done()
			var b [1]byte
			for {
				if _, err := conn.Read(b[:]); err != nil {
					st.clientGone.Store(true)
					sock.Terminate() // the stream's goroutine closes it
					return
				}
			}
		}()
		return nil
	}
	w.WriteHeader(http.StatusOK)
	var rw http.ResponseWriter = w
	pw, parked := w.Writer.(*parkedWriter)
	if parked {
		rw = pw // echo's Response goes back to its pool with the context
	}
	rc := http.NewResponseController(rw)
	fw := &flushWriter{w: rw, rc: rc, timeout: s.cfg.WriteTimeout}
	sock.OnLag(func() {
		st.cutOff.Store(true)
		_ = rc.SetWriteDeadline(time.Now())
	})
	st.ctx, st.out = req.Context(), gz.over(fw)
	if !parked {
		st.run()
		gz.finish()
		return nil
	}
	c.Set(streamLogKey, true)
	entry := requestOf(c, start)
	pw.st = st
	pw.end = func() {
		gz.finish()
		s.finished(entry, http.StatusOK, fw.written, st.reason)
	}
	return nil
}

// streamHandler serves an HTTP/2 stream after echo's handler chain has returned. An HTTP/2
// stream cannot be hijacked: it lives on net/http's handler goroutine for as long as it is
// open. Waiting inside the chain (router, recovery, access log, body guard, the handler's own
// frame), that goroutine parks 3.3 KB deep and keeps an 8 KB stack; waiting here it parks
// about 1 KB deep, and the garbage collector halves its stack (docs/benchmarks.md, "HTTP/2
// and TLS"). Other requests pass straight through.
type streamHandler struct{ next http.Handler }

func (h streamHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 {
		h.next.ServeHTTP(w, r)
		return
	}
	pw := &parkedWriter{ResponseWriter: w}
	h.next.ServeHTTP(pw, r)
	if pw.st != nil {
		// Called from here and nowhere deeper: every frame between this one and the wait
		// counts (run's waits in its own frame).
		pw.st.run()
		pw.end()
	}
}

// parkedWriter is an HTTP/2 request's writer, through which a stream's handler leaves the rest
// of its work to streamHandler: run st, then end.
type parkedWriter struct {
	http.ResponseWriter
	st  *sseStream
	end func()
}

func (w *parkedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// hijack takes over an HTTP/1.x connection and writes the response head itself. The body is
// delimited by closing the connection, as an endless stream's must be without chunking. It
// reports false for a connection that cannot be hijacked (HTTP/2), and an error when the
// connection was taken but the head could not be written: it is closed then, and the response
// must not be written again.
func hijack(w *echo.Response, writeTimeout time.Duration) (net.Conn, bool, error) {
	if w.Committed || w.Writer == nil {
		return nil, false, nil
	}
	conn, rw, err := http.NewResponseController(w.Writer).Hijack()
	if err != nil {
		return nil, false, nil
	}
	rw.Reader, rw.Writer = nil, nil // drop net/http's buffers: nothing more is read, writes go straight out
	head := make([]byte, 0, 256)
	head = append(head, "HTTP/1.1 200 OK\r\n"...)
	for k, vs := range w.Header() {
		for _, v := range vs {
			head = append(head, k...)
			head = append(head, ": "...)
			head = append(head, v...)
			head = append(head, "\r\n"...)
		}
	}
	head = append(head, "Connection: close\r\n\r\n"...)
	_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	w.Committed, w.Status = true, http.StatusOK
	if _, err := conn.Write(head); err != nil {
		conn.Close()
		return nil, true, err
	}
	// A request body's deadline (guardBody) must not cut the stream, nor the read that
	// notices the client leaving.
	_ = conn.SetReadDeadline(time.Time{})
	w.Size = int64(len(head))
	return conn, true, nil
}

// frameWriter sends a batch of frames and makes sure they left the process.
type frameWriter interface {
	write(frames [][]byte) error
}

// connWriter writes to a hijacked connection with one writev per batch and no buffer of its
// own: the frames are the shared bytes of each message.
type connWriter struct {
	conn     net.Conn
	timeout  time.Duration
	deadline time.Time
	written  int64 // bytes sent, for the access log
	coalesce bool  // one Write per batch (TLS), not one writev
}

func (cw *connWriter) write(frames [][]byte) error {
	// The deadline rolls forward only once half of it is used up, which still cuts a stuck
	// client off within the timeout but spares a timer update per event.
	if now := time.Now(); cw.deadline.Sub(now) < cw.timeout/2 {
		cw.deadline = now.Add(cw.timeout)
		_ = cw.conn.SetWriteDeadline(cw.deadline)
	}
	if len(frames) == 1 {
		n, err := cw.conn.Write(frames[0])
		cw.written += int64(n)
		return err
	}
	if cw.coalesce {
		// A TLS connection has no writev: each frame would be a record and a system call.
		b := sseBufPool.Get().(*bytes.Buffer)
		for _, f := range frames {
			b.Write(f)
		}
		n, err := cw.conn.Write(b.Bytes())
		putSSEBuf(b)
		cw.written += int64(n)
		return err
	}
	bufs := net.Buffers(frames)
	n, err := bufs.WriteTo(cw.conn)
	cw.written += n
	return err
}

// flushWriter writes through net/http and flushes, for connections that cannot be hijacked.
type flushWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	written int64 // bytes sent, for the access log
}

func (fw *flushWriter) write(frames [][]byte) error {
	_ = fw.rc.SetWriteDeadline(time.Now().Add(fw.timeout))
	for _, f := range frames {
		n, err := fw.w.Write(f)
		fw.written += int64(n)
		if err != nil {
			return err
		}
	}
	if err := fw.rc.Flush(); err != nil {
		return err
	}
	// HTTP/2 resets a stream when its write deadline passes, written to or not: a deadline
	// left behind would end a stream that is merely quiet for longer than the timeout.
	_ = fw.rc.SetWriteDeadline(time.Time{})
	return nil
}

// sseStream is one SSE connection after its request was accepted. It holds no echo.Context,
// so it may outlive the handler.
type sseStream struct {
	srv        *Server
	app        *App
	sess       *session
	sock       *stream.Socket
	oneChannel bool
	// unnamed sends events, whispers and presence changes as unnamed frames (EventSource's
	// "message", whose data names the event), so a client can take every event without
	// knowing its name in advance; herald:* notices keep their names.
	unnamed bool
	expires time.Time
	reason  string // why the stream ended, for the access log
	// batch and frames are turn's, kept between turns so that a busy stream reuses them.
	batch  []stream.Delivery
	frames [][]byte
	// ctx ends the stream (the request's, and the token's expiry); out is where it goes.
	ctx    context.Context
	cancel context.CancelFunc
	out    frameWriter
	kind   transport
	shard  uint32 // this stream's cell in the app's sharded counters
	// clientGone is set when the client closed its end, before the socket is terminated.
	clientGone atomic.Bool
	// cutOff is set when the socket fell behind and its connection's writes were made to fail.
	cutOff atomic.Bool
}

var pingFrame = []byte(": ping\n\n")

// namedPingFrame is the heartbeat of format=message streams: a comment never reaches a
// browser's script, an event does, so a client can tell a silent stream from a dead one.
var namedPingFrame = []byte("event: herald:ping\ndata: {}\n\n")

// run serves the stream until it ends. While the stream is idle its goroutine waits in
// sock.Wait straight from here, with turn's frame and Next's already gone: on HTTP/2 that
// goroutine is net/http's handler goroutine, parked for hours, and its stack shrinks to half
// only when less than a quarter of it is in use (docs/benchmarks.md, HTTP/2).
func (st *sseStream) run() {
	defer st.close()
	if !st.begin() {
		return
	}
	for {
		ended, idle := st.turn()
		if ended {
			break
		}
		if idle {
			st.sock.Wait()
		}
	}
	st.countEnd()
}

func (st *sseStream) close() {
	if st.cancel != nil {
		st.cancel()
	}
	st.sess.close()
}

// countEnd counts a stream cut off for not reading.
func (st *sseStream) countEnd() {
	switch st.reason {
	case "too slow":
		st.srv.cfg.Metrics.slowDisconnect(st.app, st.kind, "queue_overflow")
	case "write timeout":
		st.srv.cfg.Metrics.slowDisconnect(st.app, st.kind, "write_timeout")
	}
}

// begin ends st.ctx at the token's expiry and sends the retry field and herald:connected.
func (st *sseStream) begin() bool {
	s, sock := st.srv, st.sock
	if !st.expires.IsZero() {
		st.ctx, st.cancel = context.WithDeadline(st.ctx, st.expires)
	}
	hello, _ := json.Marshal(struct {
		SocketID    string `json:"socket_id"`
		SocketToken string `json:"socket_token,omitempty"`
		Heartbeat   int    `json:"heartbeat"`
		Cursor      string `json:"cursor"`
	}{sock.ID(), s.sockTokens.token(st.app.ID, sock.ID()), int(s.cfg.Heartbeat / time.Second), sock.Cursor()})
	first := make([]byte, 0, 64+len(hello))
	first = append(first, "retry: "...)
	first = strconv.AppendInt(first, s.cfg.Retry.Milliseconds(), 10)
	first = append(first, "\n\nevent: herald:connected\ndata: "...)
	first = append(first, hello...)
	first = append(first, "\n\n"...)
	if st.out.write([][]byte{first}) != nil {
		return false
	}
	st.app.meters.delivered(st.kind, st.shard, 0, int64(len(first)))
	return true
}

// turn sends what the socket has now, or a heartbeat when one is due. idle: nothing was due,
// wait for the socket; ended: the stream is over and st.reason says why.
func (st *sseStream) turn() (ended, idle bool) {
	s := st.srv
	batch, done, err := st.sock.TryNext(st.ctx, streamBatch, s.cfg.Heartbeat, st.batch[:0])
	st.batch = batch
	if !done {
		return false, true
	}
	frames := st.frames[:0]
	for _, d := range batch {
		frames = appendDelivery(frames, d, st.oneChannel, st.unnamed)
	}
	if err == nil && len(batch) == 0 {
		if st.unnamed {
			frames = append(frames, namedPingFrame)
		} else {
			frames = append(frames, pingFrame)
		}
	}
	reason := "client gone"
	switch {
	case err == nil:
	case errors.Is(err, stream.ErrShutdown):
		reason = "shutdown"
		retry := make([]byte, 0, 24)
		retry = append(retry, "retry: "...)
		wait := jitter(s.cfg.Retry)
		if s.census.draining.Load() {
			wait = s.cfg.Retry // the drain already spread the ends over its period
		}
		retry = strconv.AppendInt(retry, wait.Milliseconds(), 10)
		frames = append(frames, append(retry, "\n\n"...))
	case errors.Is(err, context.DeadlineExceeded):
		reason = "token expired"
		frames = append(frames, tokenExpiredFrame)
	case errors.Is(err, stream.ErrLagged):
		reason = "too slow"
	case errors.Is(err, stream.ErrClosed) && st.clientGone.Load(),
		errors.Is(err, context.Canceled): // an HTTP/2 stream's client reset it or left
		reason = "client gone"
	case errors.Is(err, stream.ErrClosed):
		reason = "terminated"
	default:
		reason = err.Error()
	}
	if len(frames) > 0 {
		size := 0
		if st.app.meters != nil {
			for _, f := range frames { // before the write: net.Buffers consumes frames
				size += len(f)
			}
		}
		werr := st.out.write(frames)
		clear(frames) // an idle stream keeps no event alive
		st.frames = frames[:0]
		if werr != nil {
			switch {
			case st.cutOff.Load():
				reason = "too slow"
			case errors.Is(werr, os.ErrDeadlineExceeded):
				reason = "write timeout"
			}
			st.reason = reason
			return true, false
		}
		st.app.meters.delivered(st.kind, st.shard, len(batch), int64(size))
	}
	if err != nil {
		st.reason = reason
		return true, false
	}
	clear(st.batch)
	return false, false
}

var tokenExpiredFrame = []byte("event: herald:error\ndata: {\"code\":\"token_expired\",\"message\":\"the token expired; reconnect with a fresh one\"}\n\n")

// appendDelivery adds one delivery's frame pieces. Event bytes are the message's shared bytes;
// only a composite id line is written per connection.
func appendDelivery(frames [][]byte, d stream.Delivery, oneChannel, unnamed bool) [][]byte {
	switch {
	case d.Resync != nil:
		data, _ := json.Marshal(d.Resync)
		b := make([]byte, 0, len(d.ID)+len(data)+40)
		b = append(b, "id: "...)
		b = append(b, d.ID...)
		b = append(b, "\nevent: herald:resync\ndata: "...)
		b = append(b, data...)
		return append(frames, append(b, "\n\n"...))
	case d.Control != nil:
		data, _ := json.Marshal(d.Control)
		b := make([]byte, 0, len(d.Control.Event)+len(data)+20)
		b = append(b, "event: "...)
		b = append(b, d.Control.Event...)
		b = append(b, "\ndata: "...)
		b = append(b, data...)
		return append(frames, append(b, "\n\n"...))
	case unnamed && d.Msg.Ephemeral():
		return append(frames, d.Msg.DataLine())
	case unnamed:
		id := make([]byte, 0, len(d.ID)+5)
		id = append(id, "id: "...)
		id = append(id, d.ID...)
		return append(frames, append(id, '\n'), d.Msg.DataLine())
	case oneChannel, d.Msg.Ephemeral():
		// Ephemeral frames carry no id line: the stream's position stays at the last event.
		return append(frames, d.Msg.Frame())
	default:
		id := make([]byte, 0, len(d.ID)+5)
		id = append(id, "id: "...)
		id = append(id, d.ID...)
		return append(frames, append(id, '\n'), d.Msg.Body())
	}
}
