package server

import (
	"context"
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/stream"
)

// FuzzParseSeconds: a timeout is accepted exactly when it is a whole number of seconds from 0
// to the limit — compared with arbitrary-precision arithmetic, so no overflow can let a huge
// value through as a small one.
func FuzzParseSeconds(f *testing.F) {
	for _, s := range []string{"0", "25", "60", "61", "-1", "99999999", "9223372036854775807", "18446744074",
		"9223372037", "9223372036", "-9223372036854775808", "+5", "1e3", " 5", "0x10", ""} {
		f.Add(s)
	}
	const limit = 60 * time.Second
	f.Fuzz(func(t *testing.T, raw string) {
		d, ok := parseSeconds(raw, limit)
		n, isInt := new(big.Int).SetString(raw, 10)
		want := isInt && n.Sign() >= 0 && n.Cmp(big.NewInt(int64(limit/time.Second))) <= 0
		if ok != want {
			t.Fatalf("parseSeconds(%q) ok=%v, want %v", raw, ok, want)
		}
		if ok && (d < 0 || d > limit || d%time.Second != 0 || int64(d/time.Second) != n.Int64()) {
			t.Fatalf("parseSeconds(%q) = %v", raw, d)
		}
	})
}

// TestOneShotPollThatLags: one-shot polls whose socket queue holds one event, so bursts
// overflow it, still answer 200, and following their cursors reads every event once, in
// order. (The fault matrix met the rarest case — an overflow of repeats after a store outage,
// with nothing new to answer — as a 500; the answer is now the cursor, and the log has the
// rest.)
func TestOneShotPollThatLags(t *testing.T) {
	ts, srv := newTestServerHub(t, Config{}, stream.Options{QueueSize: 1})
	st := srv.apps.byID("default").Hub.Store()
	const total = 900 // within the default retention (1,000 events)
	var head struct{ Cursor string }
	if r := call(t, "GET", ts.URL+"/v1/poll?channel=lag", nil, ""); r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &head) != nil {
		t.Fatalf("head: %d %s", r.status, r.body)
	}
	published := make(chan error, 1)
	go func() {
		for i := range total {
			_, err := st.Append(context.Background(), store.AppendRequest{Channel: "lag", Name: "e", Data: json.RawMessage(strconv.Itoa(i))})
			if err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	cursor, next := head.Cursor, 0
	deadline := time.Now().Add(20 * time.Second)
	for next < total && time.Now().Before(deadline) {
		r := call(t, "GET", ts.URL+"/v1/poll?channel=lag&limit=7&timeout=1&cursor="+url.QueryEscape(cursor), nil, "")
		if r.status != http.StatusOK {
			t.Fatalf("poll from %s: %d %s", cursor, r.status, r.body)
		}
		var ans struct {
			Events []struct {
				Data json.RawMessage `json:"data"`
			} `json:"events"`
			Cursor string          `json:"cursor"`
			Resync json.RawMessage `json:"resync"`
		}
		if err := json.Unmarshal([]byte(r.body), &ans); err != nil {
			t.Fatal(err)
		}
		if len(ans.Resync) > 0 {
			t.Fatalf("resync %s: the log keeps every event of this test", ans.Resync)
		}
		for _, e := range ans.Events {
			if got := string(e.Data); got != strconv.Itoa(next) {
				t.Fatalf("event %s, want %d (lost, duplicated or reordered)", got, next)
			}
			next++
		}
		cursor = ans.Cursor
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	if next != total {
		t.Fatalf("read %d of %d events", next, total)
	}
}
