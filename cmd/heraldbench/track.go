package main

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strconv"
)

// Outcomes of seqTracker.add.
const (
	seqNext    = iota // the number right after the highest so far
	seqJump           // new, past the highest, some numbers in between missing
	seqLate           // new, but a higher number had already arrived
	seqDup            // already received
	seqAncient        // below what the tracker still remembers: late, or a duplicate
)

// maxHoles bounds how many missing numbers a tracker remembers. Numbers
// further back are forgotten, and one that arrives later is reported as
// seqAncient.
const maxHoles = 1024

// seqTracker follows the sequence numbers one subscriber receives on its
// channel. It remembers the highest number and the numbers below it that have
// not arrived (the holes), so it costs nothing while messages arrive in
// order and tells a late message from a duplicate exactly, as long as fewer
// than maxHoles numbers are missing.
type seqTracker struct {
	hi    uint64
	floor uint64   // numbers below floor are forgotten
	holes []uint64 // ascending, all in [floor, hi)
}

func (t *seqTracker) add(seq uint64) int {
	switch {
	case seq == t.hi+1:
		t.hi = seq
		return seqNext
	case seq > t.hi:
		from, forgot := t.hi+1, false
		if seq-from > maxHoles {
			from, forgot = seq-maxHoles, true
		}
		for s := from; s < seq; s++ {
			t.holes = append(t.holes, s)
		}
		if over := len(t.holes) - maxHoles; over > 0 {
			t.holes = append(t.holes[:0], t.holes[over:]...)
			forgot = true
		}
		if forgot {
			t.floor = t.holes[0]
		}
		t.hi = seq
		return seqJump
	case seq < t.floor:
		return seqAncient
	}
	i, found := slices.BinarySearch(t.holes, seq)
	if !found {
		return seqDup
	}
	t.holes = slices.Delete(t.holes, i, i+1)
	if len(t.holes) == 0 {
		t.holes = nil // give the memory back once the stream is whole again
	}
	return seqLate
}

// missing returns how many numbers below the highest have not arrived.
func (t *seqTracker) missing() int { return len(t.holes) }

// Keys of this tool's payload, with their quotes.
var (
	keySeq = []byte(`"seq"`)
	keyCh  = []byte(`"ch"`)
	keyT   = []byte(`"t"`)
)

// payloadRef is what a subscriber takes from an event: the fields of the
// payload this tool published. ch points into the event data.
type payloadRef struct {
	seq uint64
	ch  []byte
	t   int64
}

// scanPayload finds seq, ch and t of this tool's payload in an event's data
// by a byte scan, without decoding the JSON: whether the payload is the whole
// data or nested in a server's envelope (Herald puts it under "data"), with
// any key order or spacing. Events without the three fields return false.
func scanPayload(data []byte, out *payloadRef) bool {
	v := valueAt(data, keySeq)
	if v < 0 {
		return false
	}
	seq, ok := parseNum(data[v:])
	if !ok || seq < 1 || seq > 1<<53 {
		return false
	}
	c := valueAt(data, keyCh)
	if c < 0 {
		return false
	}
	ch, ok := stringValue(data[c:])
	if !ok {
		return false
	}
	tv := valueAt(data, keyT)
	if tv < 0 {
		return false
	}
	t, ok := parseNum(data[tv:])
	if !ok {
		return false
	}
	out.seq, out.ch, out.t = uint64(seq), ch, t
	return true
}

// valueAt returns where the value of the first member named key (quoted)
// starts, or -1.
func valueAt(data, key []byte) int {
	off := 0
	for off < len(data) {
		i := bytes.Index(data[off:], key)
		if i < 0 {
			return -1
		}
		p := off + i + len(key)
		off = off + i + 1
		for p < len(data) && isSpace(data[p]) {
			p++
		}
		if p >= len(data) || data[p] != ':' {
			continue // the same text as a value, not a key
		}
		p++
		for p < len(data) && isSpace(data[p]) {
			p++
		}
		return p
	}
	return -1
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// parseNum reads a JSON number at the start of b as an integer. A server
// that re-encoded the payload in floating point (1.7e+18) is accepted with
// the float's precision.
func parseNum(b []byte) (int64, bool) {
	end, isInt := 0, true
	for end < len(b) {
		c := b[end]
		if c >= '0' && c <= '9' || c == '-' {
			end++
			continue
		}
		if c == '.' || c == 'e' || c == 'E' || c == '+' {
			isInt = false
			end++
			continue
		}
		break
	}
	if end == 0 {
		return 0, false
	}
	if isInt {
		digits, neg := b[:end], false
		if digits[0] == '-' {
			digits, neg = digits[1:], true
		}
		if len(digits) == 0 || bytes.IndexByte(digits, '-') >= 0 {
			return 0, false
		}
		if len(digits) > 18 {
			n, err := strconv.ParseInt(string(b[:end]), 10, 64)
			return n, err == nil
		}
		var n int64
		for _, c := range digits {
			n = n*10 + int64(c-'0')
		}
		if neg {
			n = -n
		}
		return n, true
	}
	f, err := strconv.ParseFloat(string(b[:end]), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) || math.Abs(f) >= 1<<63 {
		return 0, false
	}
	return int64(f), true
}

// stringValue reads a JSON string at the start of b and returns its content.
// Without escapes (the usual case) it points into b.
func stringValue(b []byte) ([]byte, bool) {
	if len(b) < 2 || b[0] != '"' {
		return nil, false
	}
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '"':
			return b[1:i], true
		case '\\':
			// Rare: let the JSON decoder handle the escapes.
			end := i
			for end < len(b) {
				if b[end] == '\\' {
					end += 2
					continue
				}
				if b[end] == '"' {
					break
				}
				end++
			}
			if end >= len(b) {
				return nil, false
			}
			var s string
			if json.Unmarshal(b[:end+1], &s) != nil {
				return nil, false
			}
			return []byte(s), true
		}
	}
	return nil, false
}
