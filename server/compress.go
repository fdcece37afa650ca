package server

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/labstack/echo/v4"
)

// Response compression for everything but the streams: long-poll answers, the socket and
// Pusher APIs, /v1/config, errors. A body is held until it reaches the threshold, so the many
// small answers (a publish's 201, most errors, an empty poll) go out as they are: compressing
// them would cost CPU and a pooled writer for a few bytes, or make them larger. Streams are not
// wrapped at all: they flush every frame, hijack their connection (which bypasses any
// ResponseWriter wrapper), and compress themselves when asked (compress_sse.go).

// coding is a content coding the server can answer with.
type coding uint8

const (
	codingIdentity coding = iota
	codingGzip
	codingBrotli
)

func (c coding) String() string {
	switch c {
	case codingGzip:
		return "gzip"
	case codingBrotli:
		return "br"
	}
	return "identity"
}

// acceptEncoding is what a request's Accept-Encoding says of the codings Herald knows: each
// weight in thousandths (q=0.5 is 500), -1 where the header does not name it.
type acceptEncoding struct {
	br, gzip, identity, star int
}

// parseAcceptEncoding reads Accept-Encoding (RFC 9110 §12.5.3), every field line of it. Coding
// names are case-insensitive and x-gzip is gzip. An element with a malformed weight is
// ignored rather than guessed at; a coding named twice takes its lowest weight, so a refusal
// anywhere in the header holds.
func parseAcceptEncoding(lines []string) acceptEncoding {
	a := acceptEncoding{-1, -1, -1, -1}
	for _, line := range lines {
		for elem := range strings.SplitSeq(line, ",") {
			name, params, _ := strings.Cut(elem, ";")
			name = trimOWS(name)
			var slot *int
			switch {
			case asciiEqualFold(name, "br"):
				slot = &a.br
			case asciiEqualFold(name, "gzip"), asciiEqualFold(name, "x-gzip"):
				slot = &a.gzip
			case asciiEqualFold(name, "identity"):
				slot = &a.identity
			case name == "*":
				slot = &a.star
			default:
				continue
			}
			q, ok := weightOf(params)
			if !ok {
				continue
			}
			if *slot < 0 || q < *slot {
				*slot = q
			}
		}
	}
	return a
}

// weightOf reads the q parameter among an element's parameters; other parameters are ignored.
func weightOf(params string) (int, bool) {
	q := 1000
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if !asciiEqualFold(trimOWS(k), "q") {
			continue
		}
		var ok bool
		if q, ok = parseQValue(trimOWS(v)); !ok {
			return 0, false
		}
	}
	return q, true
}

// parseQValue reads a weight as RFC 9110 §12.4.2 writes it: 0, 1, or either with up to three
// decimals (1's all zero), as thousandths.
func parseQValue(v string) (int, bool) {
	if v == "" || len(v) > 5 || (v[0] != '0' && v[0] != '1') {
		return 0, false
	}
	q := int(v[0]-'0') * 1000
	if len(v) == 1 {
		return q, true
	}
	if v[1] != '.' {
		return 0, false
	}
	scale := 100
	for i := 2; i < len(v); i++ {
		d := v[i]
		if d < '0' || d > '9' || (q == 1000 && d != '0') {
			return 0, false
		}
		q += int(d-'0') * scale
		scale /= 10
	}
	return q, true
}

// weight is the weight of a coding's own entry, or of * when it has none.
func (a acceptEncoding) weight(own int) int {
	switch {
	case own >= 0:
		return own
	case a.star >= 0:
		return a.star
	}
	return 0
}

// choose picks the coding to answer with: the acceptable one of highest weight, gzip before
// brotli at equal weight (browsers name both at weight 1: brotli's 9 % smaller poll answer costs
// about seven times gzip's CPU, see the levels below), unless identity is named with a higher
// weight still. With no header,
// or an empty one, that is identity. identityRefused reports that the client excluded
// identity ("identity;q=0", or "*;q=0" without naming identity): the body is then compressed
// whatever its size. A client that refuses identity and accepts nothing Herald has still gets
// identity: an answer it may be able to use beats a 406 it surely cannot.
func (a acceptEncoding) choose(brotliOK bool) (c coding, identityRefused bool) {
	identityRefused = a.identity == 0 || (a.identity < 0 && a.star == 0)
	best, q := codingIdentity, 0
	if w := a.weight(a.gzip); w > 0 {
		best, q = codingGzip, w
	}
	if w := a.weight(a.br); brotliOK && w > q {
		best, q = codingBrotli, w
	}
	if best != codingIdentity && a.identity > q {
		return codingIdentity, false
	}
	return best, identityRefused
}

func trimOWS(s string) string { return strings.Trim(s, " \t") }

// asciiEqualFold compares ASCII case-insensitively: strings.EqualFold would also match
// Unicode look-alikes (the Kelvin sign for k), which no coding name has.
func asciiEqualFold(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], t[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// Compression levels, chosen for CPU: a node compresses every large poll answer it sends, and
// the last few percent of size cost several times the CPU. On a 21 KB poll answer of 100 chat
// events (measured on the development VM): klauspost's gzip level 4 gives 4.75 KB in about
// 50 µs, levels 5-6 gain 1 % for 1.5-2× the time, and the standard library's level 6 takes
// 230 µs for 4.6 KB. Brotli quality 5 gives 4.3 KB (9 % below gzip) in about 370 µs, while
// quality 4 is no smaller than gzip 4 at 6× its time, so it would buy nothing. Brotli's window
// is 256 KiB (lgwin 18) rather than its default 4 MiB: a pooled writer keeps its ring buffer,
// and poll answers larger than the window gain little from a longer one.
const (
	gzipLevel     = 4
	brotliQuality = 5
	brotliLGWin   = 18
)

// A gzip writer allocates about 1 MB and a brotli writer 1.4 MB before the first byte: pooled,
// a busy node keeps about as many as it compresses answers at once.
var (
	gzipPool = sync.Pool{New: func() any {
		w, _ := gzip.NewWriterLevel(nil, gzipLevel) // the level is valid: no error
		return w
	}}
	brotliPool = sync.Pool{New: func() any {
		return brotli.NewWriterOptions(nil, brotli.WriterOptions{Quality: brotliQuality, LGWin: brotliLGWin})
	}}
)

// encoder is a pooled gzip or brotli writer.
type encoder interface {
	io.WriteCloser
	Flush() error
	Reset(io.Writer)
}

func getEncoder(c coding, w io.Writer) encoder {
	var e encoder
	if c == codingBrotli {
		e = brotliPool.Get().(*brotli.Writer)
	} else {
		e = gzipPool.Get().(*gzip.Writer)
	}
	e.Reset(w)
	return e
}

func putEncoder(c coding, e encoder) {
	e.Reset(nil) // the pool must not keep the response alive
	if c == codingBrotli {
		brotliPool.Put(e)
	} else {
		gzipPool.Put(e)
	}
}

// streamRoutes are the routes whose GET is an SSE stream, never wrapped; compressSkips keeps
// the list honest against the router (TestCompressSkipsExactlyTheStreams).
var streamRoutes = map[string]bool{
	"/v1/channels/:channel/events": true,
	"/v1/stream":                   true,
}

func compressSkips(method, route string) bool {
	return method == http.MethodGet && streamRoutes[route]
}

// compressMiddleware compresses answers of at least minBytes bytes for clients that accept
// brotli or gzip. It holds no timer and no deadline: a long-poll may wait a minute before its
// handler writes anything, and nothing here is sent before it does.
func compressMiddleware(minBytes int) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if compressSkips(req.Method, c.Path()) {
				return next(c)
			}
			res := c.Response()
			// Caches (a CDN in front) must keep the compressed and the plain answer apart, also
			// for answers that happened to be too small to compress.
			res.Header().Add(echo.HeaderVary, echo.HeaderAcceptEncoding)
			coding, must := parseAcceptEncoding(req.Header.Values(echo.HeaderAcceptEncoding)).choose(true)
			if coding == codingIdentity || req.Method == http.MethodHead {
				return next(c)
			}
			cw := &compressWriter{ResponseWriter: res.Writer, coding: coding, min: minBytes, must: must}
			res.Writer = cw
			finished := false
			defer func() {
				res.Writer = cw.ResponseWriter
				if finished {
					return
				}
				// A panic on its way to the Recover middleware. When nothing was sent yet, the
				// error answer may still replace what the handler had begun.
				if cw.state == writerPending {
					res.Committed, res.Status, res.Size = false, 0, 0
				}
				cw.abandon()
			}()
			// An error is answered here, while the writer is in place, so that its body is
			// compressed (or not) by the same rule as any other.
			if err := next(c); err != nil {
				c.Error(err)
			}
			err := cw.close()
			finished = true
			res.Size = cw.wire // the access log reports what went on the wire
			if err != nil {
				return fmt.Errorf("compress %s answer: %w", coding, err)
			}
			return nil
		}
	}
}

// compressWriter holds the start of a body until it knows whether to compress it: once the
// body reaches min bytes (compressed), or once it ends or is flushed below that (sent as it
// is, with the status the handler chose).
type compressWriter struct {
	http.ResponseWriter
	coding coding
	min    int
	must   bool // the client refused identity: compress whatever the size

	state  int // writerPending, writerIdentity or writerCompressing
	status int
	held   []byte
	enc    encoder
	wire   int64 // body bytes written underneath
}

const (
	writerPending = iota
	writerIdentity
	writerCompressing
)

func (w *compressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *compressWriter) WriteHeader(status int) {
	switch {
	case w.state != writerPending:
		w.ResponseWriter.WriteHeader(status) // net/http warns about the superfluous call
		return
	case w.status != 0:
		return // superfluous too, and the first one is not sent yet
	}
	switch {
	case status < http.StatusOK && status != http.StatusSwitchingProtocols:
		w.ResponseWriter.WriteHeader(status) // informational: the real answer follows
	case status == http.StatusNoContent || status == http.StatusNotModified || status < http.StatusOK:
		// No body to compress: the answer goes out untouched.
		w.state = writerIdentity
		w.ResponseWriter.WriteHeader(status)
	default:
		w.status = status
	}
}

func (w *compressWriter) Write(p []byte) (int, error) {
	switch w.state {
	case writerIdentity:
		n, err := w.ResponseWriter.Write(p)
		w.wire += int64(n)
		return n, err
	case writerCompressing:
		return w.enc.Write(p)
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if len(w.held)+len(p) < w.min {
		w.held = append(w.held, p...)
		return len(p), nil
	}
	if err := w.decide(true); err != nil {
		return 0, err
	}
	return w.Write(p)
}

// decide sends the header and what is held, compressed when compress is true and the answer
// may be compressed.
func (w *compressWriter) decide(compress bool) error {
	h := w.Header()
	if h.Get(echo.HeaderContentEncoding) != "" || strings.HasPrefix(h.Get(echo.HeaderContentType), "text/event-stream") {
		compress = false // already encoded, or a stream that is not on a stream route
	}
	held := w.held
	w.held = nil
	if !compress {
		w.state = writerIdentity
		if w.status != 0 {
			w.ResponseWriter.WriteHeader(w.status)
		}
		if len(held) == 0 {
			return nil
		}
		_, err := w.Write(held)
		return err
	}
	w.state = writerCompressing
	h.Set(echo.HeaderContentEncoding, w.coding.String())
	h.Del(echo.HeaderContentLength) // the handler's length was the plain body's
	w.ResponseWriter.WriteHeader(w.status)
	w.enc = getEncoder(w.coding, wireCounter{w})
	_, err := w.enc.Write(held)
	return err
}

// wireCounter counts the compressed bytes on their way to the response.
type wireCounter struct{ w *compressWriter }

func (c wireCounter) Write(p []byte) (int, error) {
	n, err := c.w.ResponseWriter.Write(p)
	c.w.wire += int64(n)
	return n, err
}

// FlushError sends what the handler wrote so far. A body still below the threshold goes out
// uncompressed (unless identity was refused): a handler that flushes wants it seen now.
func (w *compressWriter) FlushError() error {
	switch w.state {
	case writerPending:
		if w.status == 0 {
			w.status = http.StatusOK
		}
		if err := w.decide(w.must); err != nil {
			return err
		}
		if w.state == writerCompressing {
			if err := w.enc.Flush(); err != nil {
				return err
			}
		}
	case writerCompressing:
		if err := w.enc.Flush(); err != nil {
			return err
		}
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *compressWriter) Flush() { _ = w.FlushError() }

// close ends the body: what is still held is sent, compressed if it reached the threshold.
func (w *compressWriter) close() error {
	switch w.state {
	case writerPending:
		if w.status == 0 && len(w.held) == 0 {
			return nil // the handler wrote nothing at all: net/http answers as it would have
		}
		// An empty body stays empty, whatever the client refused.
		if err := w.decide(len(w.held) > 0 && (w.must || len(w.held) >= w.min)); err != nil {
			w.abandon()
			return err
		}
		if w.state != writerCompressing {
			return nil
		}
	case writerIdentity:
		return nil
	}
	err := w.enc.Close()
	putEncoder(w.coding, w.enc)
	w.enc = nil
	return err
}

// abandon drops what the writer holds without sending it. Its encoder is not pooled again:
// it may have been interrupted mid-write.
func (w *compressWriter) abandon() {
	w.held, w.enc = nil, nil
}
