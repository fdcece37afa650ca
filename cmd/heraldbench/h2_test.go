package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// idleArgs is a small idle run: 20 streams, 10 per connection over HTTP/2.
func idleArgs(herald string, proto ...string) []string {
	return append([]string{"-herald", herald, "-store", "memory", "-mode", "idle", "-conns", "20", "-channels", "4",
		"-duration", "300ms", "-settle", "100ms", "-progress", "0"}, proto...)
}

// TestHTTP2Idle runs the idle mode over h2, h2c and HTTP/1.1 over TLS against the fake
// herald, started as the real one would be (certificate, --h2c, admin listener), and checks
// from the server's side what the streams were: their protocol, whether TLS carried them,
// and how many TCP connections they shared.
func TestHTTP2Idle(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HERALDBENCH_FAKE", "1")
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	for _, tc := range []struct {
		name     string
		args     []string
		proto    string // as the server saw it
		tls      bool
		conns    int
		perConn  int
		streamsH int64
	}{
		{"h2", []string{"-proto", "h2", "-streams-per-conn", "10"}, "HTTP/2.0", true, 2, 10, 20},
		{"h2c", []string{"-proto", "h2c", "-streams-per-conn", "10"}, "HTTP/2.0", false, 2, 10, 20},
		{"h1+tls", []string{"-proto", "h1", "-tls"}, "HTTP/1.1", true, 20, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			subs := filepath.Join(t.TempDir(), "subs")
			t.Setenv("HERALDBENCH_FAKE_SUBS", subs)
			var stdout, stderr strings.Builder
			if code := realMain(idleArgs(exe, tc.args...), &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d\n%s", code, stderr.String())
			}
			rows := resultRows(t, stdout.String())
			if len(rows) != 1 {
				t.Fatalf("%d rows: %s", len(rows), stdout.String())
			}
			r := rows[0]
			if r.Error != "" || r.Proto != tc.name || r.ConnsReady != 20 || r.ConnsDropped != 0 ||
				r.TCPConns != int64(tc.conns) || r.StreamsPerConn != tc.perConn || r.StreamsHTTP2 != tc.streamsH {
				t.Fatalf("row: %+v", r)
			}
			if r.BytesPerConn == nil || r.ServerRSSIdle == nil || r.ServerHeapPerConn == nil || r.ServerStackPerConn == nil || r.ServerGoroutinesPerConn == nil {
				t.Fatalf("memory figures missing: %+v", r)
			}
			if !strings.Contains(stderr.String(), "| custom | memory ("+tc.name) {
				t.Errorf("table row does not name the protocol:\n%s", stderr.String())
			}
			b, err := os.ReadFile(subs)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			addrs := map[string]int{}
			for _, l := range lines {
				f := strings.Fields(l)
				if len(f) != 3 || f[0] != tc.proto || f[1] != strconv.FormatBool(tc.tls) {
					t.Fatalf("subscription %q: want %s, TLS %v", l, tc.proto, tc.tls)
				}
				addrs[f[2]]++
			}
			if len(lines) != 20 || len(addrs) != tc.conns {
				t.Fatalf("%d subscriptions over %d connections, want 20 over %d: %v", len(lines), len(addrs), tc.conns, addrs)
			}
			for a, n := range addrs {
				if n != 20/tc.conns {
					t.Fatalf("connection %s carried %d streams, want %d: %v", a, n, 20/tc.conns, addrs)
				}
			}
		})
	}
}

// TestHTTP2IdleRealHerald is the same run against the real herald binary, built for the test:
// its TLS and h2c listeners, its admin listener over TLS, and its streams on HTTP/2.
func TestHTTP2IdleRealHerald(t *testing.T) {
	if testing.Short() {
		t.Skip("builds herald")
	}
	bin := filepath.Join(t.TempDir(), "herald")
	build := exec.Command("go", "build", "-o", bin, "../herald")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	for _, proto := range []string{"h2", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			var stdout, stderr strings.Builder
			if code := realMain(idleArgs(bin, "-proto", proto, "-streams-per-conn", "10"), &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d\n%s", code, stderr.String())
			}
			rows := resultRows(t, stdout.String())
			if len(rows) != 1 {
				t.Fatalf("%d rows: %s", len(rows), stdout.String())
			}
			r := rows[0]
			if r.Error != "" || r.ConnsReady != 20 || r.ConnsDropped != 0 || r.TCPConns != 2 || r.StreamsHTTP2 != 20 {
				t.Fatalf("row: %+v\n%s", r, stderr.String())
			}
			if r.BytesPerConn == nil || r.ServerHeapPerConn == nil || r.ServerStackPerConn == nil || r.ServerGoroutinesPerConn == nil {
				t.Fatalf("memory figures missing: %+v\n%s", r, stderr.String())
			}
		})
	}
}
