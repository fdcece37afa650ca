package main

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is an sseSink that writes down everything, in a form that is
// easy to compare.
type recorder struct {
	items []string
}

func (r *recorder) sseEvent(name, id, data []byte) {
	r.items = append(r.items, fmt.Sprintf("event name=%q id=%q data=%q", name, id, data))
}
func (r *recorder) sseComment(text []byte) {
	r.items = append(r.items, fmt.Sprintf("comment %q", text))
}
func (r *recorder) sseRetry(ms int64) { r.items = append(r.items, fmt.Sprintf("retry %d", ms)) }

// feedSplit feeds s to a fresh parser in pieces cut at the given offsets,
// each piece in its own buffer that is overwritten after the call (so a
// parser that kept a reference to it would be caught).
func feedSplit(t *testing.T, s string, cuts ...int) []string {
	t.Helper()
	var p sseParser
	rec := &recorder{}
	prev := 0
	for _, c := range append(cuts, len(s)) {
		buf := []byte(s[prev:c])
		if err := p.feed(buf, rec); err != nil {
			t.Fatalf("feed: %v", err)
		}
		for i := range buf {
			buf[i] = '#'
		}
		prev = c
	}
	return rec.items
}

const sampleStream = "retry: 3000\n\n" +
	"event: herald:connected\ndata: {\"socket_id\":\"a\"}\n\n" +
	": ping\n\n" +
	"id: 1-0\nevent: bench\ndata: {\"seq\":1}\n\n" +
	"data: line one\ndata: line two\ndata:\ndata:three\n\n" +
	"id: 2-0\ndata: after\n\n"

var sampleWant = []string{
	`retry 3000`,
	`event name="herald:connected" id="" data="{\"socket_id\":\"a\"}"`,
	`comment " ping"`,
	`event name="bench" id="1-0" data="{\"seq\":1}"`,
	// the id is the last one seen: it persists across events
	`event name="" id="1-0" data="line one\nline two\n\nthree"`,
	`event name="" id="2-0" data="after"`,
}

func equalItems(t *testing.T, got, want []string, what string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s:\ngot:\n  %s\nwant:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestSSEParserWhole(t *testing.T) {
	equalItems(t, feedSplit(t, sampleStream), sampleWant, "whole")
}

func TestSSEParserEverySplit(t *testing.T) {
	for _, eol := range []string{"\n", "\r\n", "\r"} {
		s := strings.ReplaceAll(sampleStream, "\n", eol)
		for cut := 0; cut <= len(s); cut++ {
			equalItems(t, feedSplit(t, s, cut), sampleWant, fmt.Sprintf("eol %q cut at %d", eol, cut))
		}
		for cut := 0; cut+7 <= len(s); cut += 3 {
			equalItems(t, feedSplit(t, s, cut, cut+2, cut+7), sampleWant, fmt.Sprintf("eol %q three cuts at %d", eol, cut))
		}
	}
}

func TestSSEParserByteByByte(t *testing.T) {
	s := strings.ReplaceAll(sampleStream, "\n", "\r\n")
	cuts := make([]int, 0, len(s))
	for i := 1; i < len(s); i++ {
		cuts = append(cuts, i)
	}
	equalItems(t, feedSplit(t, s, cuts...), sampleWant, "byte by byte")
}

func TestSSEParserFieldRules(t *testing.T) {
	s := "\xEF\xBB\xBFdata: first\n\n" + // byte order mark at the start is dropped
		"event: lonely\n\n" + // no data: not dispatched, and the name is reset
		"data\n\n" + // a field without a colon: empty value
		"data:  two spaces\n\n" + // only one space after the colon is removed
		"id: a\x00b\ndata: x\n\n" + // an id with NUL is ignored
		"retry: 12x\nretry: 500\n\n" + // invalid retry ignored
		"unknown: field\ndata: y\n\n" +
		":\n\n"
	want := []string{
		`event name="" id="" data="first"`,
		`event name="" id="" data=""`,
		`event name="" id="" data=" two spaces"`,
		`event name="" id="" data="x"`,
		`retry 500`,
		`event name="" id="" data="y"`,
		`comment ""`,
	}
	equalItems(t, feedSplit(t, s), want, "field rules")
	equalItems(t, feedSplit(t, s, 1, 2, 9), want, "field rules, BOM split")
}

func TestSSEParserLineTooLong(t *testing.T) {
	var p sseParser
	chunk := []byte("data: " + strings.Repeat("x", 64<<10))
	var err error
	for i := 0; i < 20 && err == nil; i++ {
		err = p.feed(chunk, &recorder{})
	}
	if err != errLineTooLong {
		t.Fatalf("got %v, want errLineTooLong", err)
	}
}

// chunk encodes s in HTTP chunked coding, in pieces of n bytes, with an
// extension on the first chunk and a trailer.
func chunk(s string, n int) string {
	var b strings.Builder
	first := true
	for len(s) > 0 {
		k := min(n, len(s))
		if first {
			fmt.Fprintf(&b, "%X;ext=1\r\n%s\r\n", k, s[:k])
			first = false
		} else {
			fmt.Fprintf(&b, "%x\r\n%s\r\n", k, s[:k])
		}
		s = s[k:]
	}
	b.WriteString("0\r\nX-Trailer: v\r\n\r\n")
	return b.String()
}

func TestBodyReaderChunked(t *testing.T) {
	body := chunk(sampleStream, 7)
	for cut := 0; cut <= len(body); cut++ {
		var d bodyReader
		d.init(respHead{chunked: true, length: -1})
		var p sseParser
		rec := &recorder{}
		done1, err := d.feed([]byte(body[:cut]), &p, rec)
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		done2, err := d.feed([]byte(body[cut:]), &p, rec)
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if !(done1 || done2) {
			t.Fatalf("cut %d: the end of the chunked body was not seen", cut)
		}
		equalItems(t, rec.items, sampleWant, fmt.Sprintf("chunked, cut %d", cut))
	}
}

func TestBodyReaderSizedAndToClose(t *testing.T) {
	var d bodyReader
	d.init(respHead{length: int64(len(sampleStream))})
	var p sseParser
	rec := &recorder{}
	done, err := d.feed([]byte(sampleStream+"data: beyond the body\n\n"), &p, rec)
	if err != nil || !done {
		t.Fatalf("sized: done=%v err=%v", done, err)
	}
	equalItems(t, rec.items, sampleWant, "sized")

	d.init(respHead{length: -1})
	p, rec = sseParser{}, &recorder{}
	done, err = d.feed([]byte(sampleStream), &p, rec)
	if err != nil || done {
		t.Fatalf("to close: done=%v err=%v", done, err)
	}
	equalItems(t, rec.items, sampleWant, "to close")
}

func TestBodyReaderBadChunk(t *testing.T) {
	for _, body := range []string{"zz\r\n", "5\r\nhello!!", "\r\n", "5\rx"} {
		var d bodyReader
		d.init(respHead{chunked: true})
		var p sseParser
		if _, err := d.feed([]byte(body), &p, &recorder{}); err != errBadChunked {
			t.Errorf("%q: got %v, want errBadChunked", body, err)
		}
	}
}

func TestResponseHead(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\nretry: 1\n"
	end := findHeadEnd([]byte(raw))
	if end < 0 || raw[end:] != "retry: 1\n" {
		t.Fatalf("head end %d", end)
	}
	h, err := parseHead([]byte(raw[:end]))
	if err != nil || h.status != 200 || !h.chunked || h.length != -1 || !isEventStream(h.contentType) {
		t.Fatalf("head %+v, %v", h, err)
	}
	if findHeadEnd([]byte("HTTP/1.1 200 OK\r\nA: b\r\n")) != -1 {
		t.Fatal("incomplete head reported complete")
	}
	h, err = parseHead([]byte("HTTP/1.0 401 Unauthorized\nContent-Length: 12\n\n"))
	if err != nil || h.status != 401 || h.length != 12 {
		t.Fatalf("head %+v, %v", h, err)
	}
	if _, err := parseHead([]byte("SSH-2.0-OpenSSH\r\n\r\n")); err == nil {
		t.Fatal("not HTTP, accepted")
	}
	if isEventStream("application/json") || !isEventStream("Text/Event-Stream") {
		t.Fatal("isEventStream")
	}
}
