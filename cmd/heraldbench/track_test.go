package main

import (
	"strings"
	"testing"
)

func TestSeqTrackerOutcomes(t *testing.T) {
	var tr seqTracker
	steps := []struct {
		seq  uint64
		want int
	}{
		{1, seqNext}, {2, seqNext}, {2, seqDup}, // duplicate of the last
		{5, seqJump},              // 3 and 4 missing
		{4, seqLate}, {4, seqDup}, // late, then its duplicate
		{1, seqDup},                // an old duplicate
		{6, seqNext}, {3, seqLate}, // the last hole filled
		{3, seqDup}, {7, seqNext},
	}
	for i, s := range steps {
		if got := tr.add(s.seq); got != s.want {
			t.Fatalf("step %d: add(%d) = %d, want %d", i, s.seq, got, s.want)
		}
	}
	if tr.missing() != 0 || tr.holes != nil {
		t.Fatalf("holes left: %v", tr.holes)
	}
}

func TestSeqTrackerForgetsBeyondWindow(t *testing.T) {
	var tr seqTracker
	tr.add(1)
	big := uint64(1 + maxHoles + 500)
	if got := tr.add(big); got != seqJump {
		t.Fatalf("jump: %d", got)
	}
	if tr.missing() != maxHoles {
		t.Fatalf("remembers %d holes, want %d", tr.missing(), maxHoles)
	}
	if got := tr.add(2); got != seqAncient {
		t.Fatalf("forgotten number: got %d, want seqAncient", got)
	}
	if got := tr.add(big - 1); got != seqLate {
		t.Fatalf("remembered hole: got %d, want seqLate", got)
	}
	if got := tr.add(big - 1); got != seqDup {
		t.Fatalf("duplicate: got %d, want seqDup", got)
	}
}

func TestScanPayload(t *testing.T) {
	cases := []struct {
		data    string
		ok      bool
		seq     uint64
		ch      string
		tNs     int64
		comment string
	}{
		{`{"seq":7,"ch":"bench.3","t":1732600000123456789,"pad":"xxxx"}`, true, 7, "bench.3", 1732600000123456789, "plain"},
		{`{"id":"17-0","channel":"bench.3","event":"bench","data":{"seq":7,"ch":"bench.3","t":1732600000123456789,"pad":"xx"},"ts":1732600000123}`,
			true, 7, "bench.3", 1732600000123456789, "Herald envelope"},
		{`{"ch":"bench.3","pad":"xx","seq":7,"t":1732600000123456789}`, true, 7, "bench.3", 1732600000123456789, "keys sorted"},
		{"{\n  \"seq\" : 7,\n  \"ch\":\t\"bench.3\",\n  \"t\": 1732600000123456789\n}", true, 7, "bench.3", 1732600000123456789, "indented"},
		{`{"seq":7,"ch":"bench.3","t":1.7326e+18}`, true, 7, "bench.3", 1732600000000000000, "float time"},
		{`{"seq":7,"ch":"a\u002eb","t":5}`, true, 7, "a.b", 5, "escaped channel"},
		{`{"socket_id":"x","heartbeat":15,"cursor":"0-0"}`, false, 0, "", 0, "connected event"},
		{`{"seq":0,"ch":"a","t":5}`, false, 0, "", 0, "seq from 1"},
		{`{"seq":7,"t":5}`, false, 0, "", 0, "no channel"},
		{`{"note":"seq","x":"ch","seq":3,"ch":"c","t":9}`, true, 3, "c", 9, "key text as a value"},
		{`{"seq":"7","ch":"a","t":5}`, false, 0, "", 0, "quoted number"},
	}
	for _, c := range cases {
		var p payloadRef
		ok := scanPayload([]byte(c.data), &p)
		if ok != c.ok {
			t.Errorf("%s: ok=%v, want %v", c.comment, ok, c.ok)
			continue
		}
		if ok && (p.seq != c.seq || string(p.ch) != c.ch || p.t != c.tNs) {
			t.Errorf("%s: got seq=%d ch=%q t=%d", c.comment, p.seq, p.ch, p.t)
		}
	}
}

func TestPayloadLayout(t *testing.T) {
	r := &runner{cfg: runConfig{MsgSize: 200}}
	p := &publisher{r: r, padding: []byte(strings.Repeat("x", 1024))}
	b := p.appendPayload(nil, []byte(`"bench.12"`), 42, 1732600000123456789)
	if len(b) != 200 {
		t.Fatalf("payload is %d bytes, want 200: %s", len(b), b)
	}
	var got payloadRef
	if !scanPayload(b, &got) || got.seq != 42 || string(got.ch) != "bench.12" || got.t != 1732600000123456789 {
		t.Fatalf("payload %s scanned as %+v", b, got)
	}
	r.cfg.MsgSize = 10 // smaller than the fields: no padding, still valid
	if b := p.appendPayload(nil, []byte(`"c"`), 1, 1); string(b) != `{"seq":1,"ch":"c","t":1,"pad":""}` {
		t.Fatalf("small payload %s", b)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	h := newHistogram(3)
	for v := int64(1); v <= 100000; v++ {
		h.record(int(v), v)
	}
	s := h.snapshot()
	if s.n != 100000 || s.max != 100000 {
		t.Fatalf("n=%d max=%d", s.n, s.max)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := q * 100000
		got := float64(s.quantile(q))
		if got < want*0.99 || got > want*1.01 {
			t.Errorf("q%.3f = %.0f, want within 1%% of %.0f", q, got, want)
		}
	}
	for i := 0; i < hBuckets; i++ {
		lo, hi := bucketBounds(i)
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d: bounds %d..%d map to %d..%d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if i > 0 {
			_, prevHi := bucketBounds(i - 1)
			if prevHi+1 != lo {
				t.Fatalf("bucket %d starts at %d, previous ends at %d", i, lo, prevHi)
			}
		}
	}
	h.record(0, -5) // negative values count as 0
	if h.snapshot().counts[0] != 1 {
		t.Fatal("negative value not counted as 0")
	}
}
