package main

import (
	"bytes"
	"errors"
)

// sseSink receives what the parser finds in a text/event-stream. The slices
// passed are only valid during the call.
type sseSink interface {
	sseEvent(name, id, data []byte)
	sseComment(text []byte)
	sseRetry(ms int64)
}

// maxLineLen bounds a single line, and so one event's data, that the parser
// will hold.
const maxLineLen = 1 << 20

var errLineTooLong = errors.New("event-stream line longer than 1 MiB")

// Where the data of the event being built lives.
const (
	dataNone     = iota
	dataBorrowed // one line, still inside the bytes of the current feed call
	dataOwned    // copied into sseParser.data
)

// sseParser is a push parser for text/event-stream: feed it the body in
// pieces of any size, as they arrive. It understands LF, CRLF and lone CR line
// ends, comments, multi-line data, id (kept as the last event id), event,
// retry and a leading byte order mark.
//
// It is built to cost little per idle connection: an event whose single data
// line arrived within one feed is handed on without being copied, and the
// parser only keeps bytes across feeds for a line or an event that is
// split between them.
type sseParser struct {
	carry     []byte // start of a line whose end has not arrived yet
	data      []byte // data of the current event, when owned
	dataRef   []byte // data of the current event, when borrowed
	dataState uint8
	lastCR    bool // the previous feed ended in CR: a leading LF is part of that line end
	started   bool // the first line has been seen (the BOM check is done)
	name      []byte
	lastID    []byte
}

// feed parses the next piece of the stream.
func (p *sseParser) feed(b []byte, sink sseSink) error {
	if p.lastCR && len(b) > 0 {
		p.lastCR = false
		if b[0] == '\n' {
			b = b[1:]
		}
	}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		head := b
		if nl >= 0 {
			head = b[:nl]
		}
		end, next := -1, 0
		if cr := bytes.IndexByte(head, '\r'); cr >= 0 {
			end, next = cr, cr+1
			switch {
			case cr+1 < len(b) && b[cr+1] == '\n':
				next = cr + 2
			case cr+1 == len(b):
				p.lastCR = true
			}
		} else if nl >= 0 {
			end, next = nl, nl+1
		}
		if end < 0 {
			if len(p.carry)+len(b) > maxLineLen {
				return errLineTooLong
			}
			p.carry = append(p.carry, b...)
			break
		}
		line := b[:end]
		fromCarry := false
		if len(p.carry) > 0 {
			if len(p.carry)+len(line) > maxLineLen {
				return errLineTooLong
			}
			p.carry = append(p.carry, line...)
			line, fromCarry = p.carry, true
		}
		b = b[next:]
		if err := p.line(line, fromCarry, sink); err != nil {
			return err
		}
		if fromCarry {
			p.carry = p.carry[:0]
			if cap(p.carry) > 4096 {
				p.carry = nil
			}
		}
	}
	// A borrowed data line must not outlive the caller's buffer.
	if p.dataState == dataBorrowed {
		p.data = append(p.data[:0], p.dataRef...)
		p.dataRef = nil
		p.dataState = dataOwned
	}
	return nil
}

var bom = []byte("\xEF\xBB\xBF")

func (p *sseParser) line(line []byte, fromCarry bool, sink sseSink) error {
	if !p.started {
		p.started = true
		line = bytes.TrimPrefix(line, bom)
	}
	if len(line) == 0 {
		p.dispatch(sink)
		return nil
	}
	if line[0] == ':' {
		sink.sseComment(line[1:])
		return nil
	}
	field, value := line, line[len(line):]
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "data":
		switch p.dataState {
		case dataNone:
			if fromCarry {
				p.data = append(p.data[:0], value...)
				p.dataState = dataOwned
			} else {
				p.dataRef = value
				p.dataState = dataBorrowed
			}
		case dataBorrowed:
			p.data = append(p.data[:0], p.dataRef...)
			p.dataRef = nil
			p.dataState = dataOwned
			fallthrough
		case dataOwned:
			if len(p.data)+1+len(value) > maxLineLen {
				return errLineTooLong
			}
			p.data = append(p.data, '\n')
			p.data = append(p.data, value...)
		}
	case "event":
		p.name = append(p.name[:0], value...)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.lastID = append(p.lastID[:0], value...)
		}
	case "retry":
		if ms, ok := parseDigits(value); ok {
			sink.sseRetry(ms)
		}
	}
	// Any other field is ignored, as the format requires.
	return nil
}

// dispatch ends the current event at a blank line. An event without a data
// field is not dispatched, but its name is still reset.
func (p *sseParser) dispatch(sink sseSink) {
	var data []byte
	switch p.dataState {
	case dataNone:
		p.name = p.name[:0]
		return
	case dataBorrowed:
		data = p.dataRef
	case dataOwned:
		data = p.data
	}
	sink.sseEvent(p.name, p.lastID, data)
	p.name = p.name[:0]
	p.dataRef = nil
	p.dataState = dataNone
	p.data = p.data[:0]
	if cap(p.data) > 16<<10 {
		p.data = nil // one big event should not stay on every connection
	}
}

// parseDigits reads a non-empty run of ASCII digits, as the retry field
// requires; anything else makes it invalid.
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
