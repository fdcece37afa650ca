package main

import (
	"errors"
	"strconv"
	"strings"
)

// respHead is what the subscriber needs from an HTTP/1.x response head.
type respHead struct {
	status      int
	contentType string
	chunked     bool
	length      int64 // Content-Length, -1 when absent
}

var errBadHead = errors.New("malformed HTTP response head")

// findHeadEnd returns the length of the response head including the empty
// line that ends it, or -1 when the head is not complete yet.
func findHeadEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		// A head ends with an empty line: LF LF or LF CR LF.
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 2
		}
		if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 3
		}
	}
	return -1
}

// parseHead reads the status line and the headers that matter.
func parseHead(b []byte) (respHead, error) {
	h := respHead{length: -1}
	lines := strings.Split(string(b), "\n")
	status := strings.TrimRight(lines[0], "\r")
	if !strings.HasPrefix(status, "HTTP/1.") || len(status) < 12 || status[8] != ' ' {
		return h, errBadHead
	}
	code, err := strconv.Atoi(status[9:12])
	if err != nil || code < 100 || code > 999 {
		return h, errBadHead
	}
	h.status = code
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(strings.TrimRight(l, "\r"), ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "content-type":
			h.contentType = value
		case "transfer-encoding":
			h.chunked = strings.Contains(strings.ToLower(value), "chunked")
		case "content-length":
			if n, err := strconv.ParseInt(value, 10, 64); err == nil && n >= 0 {
				h.length = n
			}
		}
	}
	if h.chunked {
		h.length = -1
	}
	return h, nil
}

// isEventStream reports whether a Content-Type is text/event-stream.
func isEventStream(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// How the body of a response is delimited.
const (
	bodyToClose = iota
	bodySized
	bodyChunked
)

// Steps of the chunked-coding reader.
const (
	ckSize      = iota // hex digits of a chunk size
	ckExt              // a chunk extension, up to the line end
	ckSizeLF           // CR seen after the size line, LF expected
	ckData             // chunk data
	ckDataEnd          // CR or LF expected after the data
	ckDataEndLF        // LF expected after that CR
	ckTrailer          // trailer lines until an empty one
	ckTrailerLF        // CR seen in a trailer line
	ckDone
)

var errBadChunked = errors.New("malformed chunked body")

// bodyReader strips the HTTP body framing (Content-Length, chunked or read
// to close) and passes the payload bytes to the event-stream parser without
// copying them.
type bodyReader struct {
	mode    uint8
	step    uint8
	digits  uint8
	lineLen uint16
	left    int64 // sized: body bytes left; chunked: bytes left in the chunk or the size being read
}

func (d *bodyReader) init(h respHead) {
	*d = bodyReader{}
	switch {
	case h.chunked:
		d.mode = bodyChunked
	case h.length >= 0:
		d.mode, d.left = bodySized, h.length
	default:
		d.mode = bodyToClose
	}
}

// feed consumes raw bytes from the connection. done reports that the body
// (and so the stream) has ended.
func (d *bodyReader) feed(b []byte, p *sseParser, sink sseSink) (done bool, err error) {
	switch d.mode {
	case bodyToClose:
		return false, p.feed(b, sink)
	case bodySized:
		if int64(len(b)) > d.left {
			b = b[:d.left]
		}
		d.left -= int64(len(b))
		if err := p.feed(b, sink); err != nil {
			return true, err
		}
		return d.left == 0, nil
	}
	for len(b) > 0 {
		if d.step == ckData {
			n := int64(len(b))
			if n > d.left {
				n = d.left
			}
			if err := p.feed(b[:n], sink); err != nil {
				return true, err
			}
			b = b[n:]
			if d.left -= n; d.left == 0 {
				d.step = ckDataEnd
			}
			continue
		}
		if d.step == ckDone {
			return true, nil
		}
		c := b[0]
		b = b[1:]
		if err := d.control(c); err != nil {
			return true, err
		}
	}
	return d.step == ckDone, nil
}

// control advances the chunked reader by one framing byte.
func (d *bodyReader) control(c byte) error {
	switch d.step {
	case ckSize:
		if v, ok := hexDigit(c); ok {
			if d.digits >= 15 {
				return errBadChunked
			}
			d.left = d.left<<4 | int64(v)
			d.digits++
			return nil
		}
		switch c {
		case ';', ' ', '\t':
			d.step = ckExt
		case '\r':
			d.step = ckSizeLF
		case '\n':
			return d.sizeDone()
		default:
			return errBadChunked
		}
	case ckExt:
		if c == '\n' {
			return d.sizeDone()
		}
	case ckSizeLF:
		if c != '\n' {
			return errBadChunked
		}
		return d.sizeDone()
	case ckDataEnd:
		switch c {
		case '\r':
			d.step = ckDataEndLF
		case '\n':
			d.step = ckSize
		default:
			return errBadChunked
		}
	case ckDataEndLF:
		if c != '\n' {
			return errBadChunked
		}
		d.step = ckSize
	case ckTrailer, ckTrailerLF:
		switch {
		case c == '\r':
			d.step = ckTrailerLF
		case c == '\n':
			if d.lineLen == 0 {
				d.step = ckDone
				return nil
			}
			d.lineLen = 0
			d.step = ckTrailer
		case d.step == ckTrailerLF:
			return errBadChunked
		default:
			if d.lineLen < 1<<15 {
				d.lineLen++
			}
		}
	}
	return nil
}

func (d *bodyReader) sizeDone() error {
	if d.digits == 0 {
		return errBadChunked
	}
	d.digits = 0
	if d.left == 0 {
		d.step, d.lineLen = ckTrailer, 0
	} else {
		d.step = ckData
	}
	return nil
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
