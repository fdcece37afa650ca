package main

import (
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

const testToken = "test.jwt.token"

// smallRun is a fanout run sized for tests: a few dozen connections for
// about a second, against base.
func smallRun(base string) runConfig {
	c := defaultConfig()
	c.Base = base
	c.Token = testToken
	c.Conns, c.Channels, c.Rate = 40, 4, 80
	c.Duration, c.Settle, c.Drain = 800*time.Millisecond, 100*time.Millisecond, 3*time.Second
	c.PubWorkers = 3
	c.ConnectTimeout, c.PubTimeout = 3*time.Second, 3*time.Second
	c.Progress = 0
	c.SrcIPs = 3
	return c
}

func startFake(t *testing.T, h *fakeHerald) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestEndToEndClean(t *testing.T) {
	for _, raw := range []bool{false, true} {
		name := "chunked"
		if raw {
			name = "hijacked-crlf"
		}
		t.Run(name, func(t *testing.T) {
			h := newFakeHerald(testToken)
			h.raw = raw
			h.ping = 50 * time.Millisecond
			c := smallRun(startFake(t, h))
			c.ServerPID = os.Getpid() // the in-process server is this process
			res, err := runOnce(c, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if res.ConnsReady != 40 || res.ConnsFailed != 0 || res.ConnsDropped != 0 || res.ConnsAliveEnd != 40 {
				t.Fatalf("connections: %+v", res)
			}
			if res.Published == 0 || res.PublishErrors != 0 {
				t.Fatalf("published %d, errors %d %v", res.Published, res.PublishErrors, res.PublishErrsBy)
			}
			// Every channel has 10 subscribers.
			if res.Expected != res.Published*10 || res.Delivered != res.Expected {
				t.Fatalf("expected %d (published %d x 10), delivered %d", res.Expected, res.Published, res.Delivered)
			}
			if p := res.problems(); len(p) > 0 {
				t.Fatalf("problems: %v", p)
			}
			if res.Stale != 0 || res.OtherEvents != 0 || res.Uncounted != 0 || res.Misrouted != 0 {
				t.Fatalf("unexpected events: %+v", res)
			}
			if res.Retries != 40 || res.Comments == 0 {
				t.Fatalf("retry fields %d (want 40), comments %d", res.Retries, res.Comments)
			}
			if res.LatP50 <= 0 || res.LatP99 < res.LatP50 || res.LatMax < res.LatP99 {
				t.Fatalf("latency p50 %v p99 %v max %v", res.LatP50, res.LatP99, res.LatMax)
			}
			if res.PubP50 <= 0 || res.PubP99 < res.PubP50 {
				t.Fatalf("publish latency p50 %v p99 %v", res.PubP50, res.PubP99)
			}
			if res.ServerCPUS == nil || (*res.ServerCPUS > 0) != (res.DelivPerCPUS != nil) || res.BytesPerConn == nil || res.ServerRSSEnd == nil {
				t.Fatalf("server figures missing: %+v", res)
			}
			// Connections come from 127.0.0.1, .2 and .3 (SrcIPs 3), evenly.
			h.mu.Lock()
			spread := fmt.Sprint(h.srcIPs)
			h.mu.Unlock()
			if spread != "map[127.0.0.1:14 127.0.0.2:13 127.0.0.3:13]" {
				t.Fatalf("source addresses: %s", spread)
			}
			if res.MsgSize != 200 {
				t.Fatalf("payload %d bytes", res.MsgSize)
			}
		})
	}
}

// The server drops, duplicates and reorders messages on bench.0 on
// purpose; the counts must say exactly that, for each of its subscribers.
func TestEndToEndDetectsMisbehaviour(t *testing.T) {
	h := newFakeHerald(testToken)
	h.drop = map[uint64]bool{3: true}
	h.dup = map[uint64]bool{5: true}
	h.holdUntil = map[uint64]uint64{7: 8} // 7 is sent after 8
	c := smallRun(startFake(t, h))
	c.Drain = 500 * time.Millisecond // the dropped message never comes
	res, err := runOnce(c, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if n := h.publishedOn("bench.0"); n < 8 {
		t.Fatalf("only %d messages on bench.0; the test needs 8", n)
	}
	const subs = 10 // on bench.0
	if res.Lost != subs || res.Dup != subs || res.OutOfOrder != subs {
		t.Fatalf("lost %d dup %d out of order %d, want %d each", res.Lost, res.Dup, res.OutOfOrder, subs)
	}
	// Gaps: 4 arrives while 3 is missing, 8 while 7 is.
	if res.Gaps != 2*subs {
		t.Fatalf("gaps %d, want %d", res.Gaps, 2*subs)
	}
	if res.Delivered != res.Expected-subs {
		t.Fatalf("delivered %d, expected %d", res.Delivered, res.Expected)
	}
}

func TestEndToEndServerDropsStreams(t *testing.T) {
	h := newFakeHerald(testToken)
	h.closeAt = 4 // every bench.0 stream ends after message 4
	c := smallRun(startFake(t, h))
	c.Drain = 300 * time.Millisecond
	res, err := runOnce(c, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.ConnsDropped != 10 || res.DropReasons["server_ended_stream"] != 10 || res.ConnsAliveEnd != 30 {
		t.Fatalf("dropped %d %v, alive %d", res.ConnsDropped, res.DropReasons, res.ConnsAliveEnd)
	}
	n := h.publishedOn("bench.0")
	if n < 5 {
		t.Fatalf("only %d messages on bench.0; the test needs 5", n)
	}
	// bench.0's subscribers missed everything after seq 4.
	if want := 10 * (n - 4); res.Lost != want {
		t.Fatalf("lost %d, want %d", res.Lost, want)
	}
}

func TestEndToEndWrongTokenAndNoReady(t *testing.T) {
	h := newFakeHerald("another token")
	h.noReady = true
	c := smallRun(startFake(t, h))
	c.Conns = 5
	c.ConnectTimeout = 400 * time.Millisecond
	c.Duration = 300 * time.Millisecond
	res, err := runOnce(c, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.ConnsReady != 0 || res.FailReasons["ready_timeout"] != 5 {
		t.Fatalf("ready %d, failures %v", res.ConnsReady, res.FailReasons)
	}
	if res.Published != 0 || res.PublishErrors == 0 || res.PublishErrors != res.PublishErrsBy["http_401"] {
		t.Fatalf("published %d, errors %d %v", res.Published, res.PublishErrors, res.PublishErrsBy)
	}
	if h.reqAuth.Load() != int64(res.PublishErrors) {
		t.Fatalf("server refused %d, tool counted %d", h.reqAuth.Load(), res.PublishErrors)
	}
}

func TestIdleAndPublishModes(t *testing.T) {
	base := startFake(t, newFakeHerald(testToken))
	c := smallRun(base)
	c.Mode, c.Duration = modeIdle, 200*time.Millisecond
	c.ServerPID = os.Getpid()
	res, err := runOnce(c, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.ConnsReady != 40 || res.ConnsAliveEnd != 40 || res.BytesPerConn == nil || res.ServerRSSIdle == nil || res.Published != 0 {
		t.Fatalf("idle: %+v", res)
	}

	c = smallRun(base)
	c.Mode, c.Rate, c.PubWorkers, c.Duration = modePublish, 500, 4, 400*time.Millisecond
	c.ServerPID = os.Getpid()
	res, err = runOnce(c, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// 500/s for 0.4 s is 200 messages; allow for a slow machine skipping some.
	if res.Published+res.PublishSkipped+res.PublishErrors != 200 || res.Published == 0 {
		t.Fatalf("publish: published %d skipped %d errors %d, want 200 in all", res.Published, res.PublishSkipped, res.PublishErrors)
	}
	if res.ConnsRequested != 0 || res.ServerCPUS == nil || (*res.ServerCPUS > 0) != (res.PubPerCPUS != nil) {
		t.Fatalf("publish: %+v", res)
	}
}

// The JSON line goes to stdout, the summary and table to stderr.
func TestRealMainOutput(t *testing.T) {
	base := startFake(t, newFakeHerald(testToken))
	var stdout, stderr strings.Builder
	code := realMain([]string{"-base", base, "-token", testToken, "-conns", "6", "-channels", "2", "-rate", "40",
		"-duration", "300ms", "-settle", "50ms", "-progress", "0", "-strict"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], `{"tool":"heraldbench","scenario":"custom","mode":"fanout"`) {
		t.Fatalf("stdout: %s", stdout.String())
	}
	if !strings.Contains(stderr.String(), "| custom | – | heraldbench | 6/6 |") {
		t.Fatalf("stderr has no table row: %s", stderr.String())
	}
}
