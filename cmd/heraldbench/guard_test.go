package main

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestLoopbackGuard(t *testing.T) {
	ok := map[string]string{
		"127.0.0.1:80":         "127.0.0.1:80",
		"127.9.8.7:1":          "127.9.8.7:1",
		"localhost:8080":       "127.0.0.1:8080",
		"LOCALHOST:8080":       "127.0.0.1:8080",
		"[::1]:8080":           "[::1]:8080",
		"[::ffff:127.0.0.1]:9": "127.0.0.1:9",
	}
	for in, want := range ok {
		got, err := loopbackAddr(in)
		if err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"10.0.0.1:80", "192.168.1.1:80", "172.16.0.1:80", "8.8.8.8:53", "0.0.0.0:80",
		"[::]:80", "[2001:db8::1]:80", "example.com:80", "localhost.example.com:80",
		"127.0.0.1.nip.io:80", "169.254.1.1:80",
	} {
		if _, err := loopbackAddr(in); !errors.Is(err, errNotLoopback) {
			t.Errorf("%s: got %v, want errNotLoopback", in, err)
		}
	}
	if _, err := parseTarget("ftp://127.0.0.1/x"); err == nil {
		t.Error("ftp accepted")
	}
	if tg, err := parseTarget("https://127.0.0.1/x"); err != nil || tg.dial != "127.0.0.1:443" {
		t.Errorf("https: %+v, %v", tg, err)
	}
	if _, err := parseTarget("https://10.0.0.1/x"); !errors.Is(err, errNotLoopback) {
		t.Errorf("https to 10.0.0.1: %v", err)
	}
	if _, err := parseTarget("http://user:pw@127.0.0.1/x"); err == nil {
		t.Error("user info accepted")
	}
	tg, err := parseTarget("http://localhost/v1/channels/a/events?x=1")
	if err != nil || tg.dial != "127.0.0.1:80" || tg.host != "localhost" || tg.u.RequestURI() != "/v1/channels/a/events?x=1" {
		t.Fatalf("target %+v, %v", tg, err)
	}
	// The dialers' hook refuses what the URL check would have missed.
	if err := guardedControl("tcp4", "10.1.2.3:80", nil); !errors.Is(err, errNotLoopback) {
		t.Fatalf("guardedControl: %v", err)
	}
}

// A run aimed at a non-loopback address is refused before any packet: the
// configuration check fails, and realMain returns without running.
func TestRunRefusesNonLoopback(t *testing.T) {
	for _, args := range [][]string{
		{"-base", "http://10.0.0.1:8080", "-conns", "1", "-duration", "1s"},
		{"-sub-url", "http://192.168.0.5/sse?c={channel_q}", "-conns", "1", "-duration", "1s"},
		{"-mode", "publish", "-pub-url", "http://example.com/p", "-duration", "1s"},
		{"-herald", os.Args[0], "-redis-url", "redis://10.0.0.2:6379", "-scenario", "S5"},
	} {
		var stderr strings.Builder
		code := realMain(args, io.Discard, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), errNotLoopback.Error()) {
			t.Errorf("%v: exit %d, want 2 and a loopback error; stderr: %s", args, code, stderr.String())
		}
	}
	if _, err := newRunner(func() runConfig {
		c := defaultConfig()
		c.Base = "http://8.8.8.8"
		return c
	}(), io.Discard); !errors.Is(err, errNotLoopback) {
		t.Fatalf("newRunner: %v, want errNotLoopback", err)
	}
}

// The publish client dials loopback only, whatever the URL says.
func TestLoopbackClientRefuses(t *testing.T) {
	var accepted atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	c := newLoopbackClient(time.Second, 1, nil)
	if _, err := c.Get("http://192.0.2.1:9/"); !errors.Is(err, errNotLoopback) {
		t.Fatalf("got %v, want errNotLoopback", err)
	}
	if _, err := c.Get("http://" + ln.Addr().String() + "/"); err == nil || errors.Is(err, errNotLoopback) {
		t.Fatalf("loopback dial: %v", err)
	}
	if accepted.Load() != 1 {
		t.Fatalf("accepted %d connections, want 1", accepted.Load())
	}
}
