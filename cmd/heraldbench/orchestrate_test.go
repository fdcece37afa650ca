package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-rt/herald/test/testkit"
)

// The test binary doubles as a fake herald and a fake ssebench for the
// orchestration test: with HERALDBENCH_FAKE=1 it plays the part its
// arguments ask for instead of running the tests.
func TestMain(m *testing.M) {
	if os.Getenv("HERALDBENCH_FAKE") == "1" {
		os.Exit(fakeMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return "hdr." + hex.EncodeToString(sum[:8]) + ".sig"
}

func fakeMain(args []string) int {
	switch {
	case len(args) > 0 && args[0] == "token":
		want := []string{"token", "--sub", "bench", "--subscribe", "*", "--publish", "*", "--ttl", "2h"}
		if strings.Join(args, " ") != strings.Join(want, " ") || os.Getenv("HERALD_JWT_SECRET") == "" {
			fmt.Fprintln(os.Stderr, "fake herald token: unexpected", args)
			return 2
		}
		fmt.Println(fakeToken(os.Getenv("HERALD_JWT_SECRET")))
		return 0
	case len(args) > 0 && args[0] == "serve":
		return fakeServe(args[1:])
	case len(args) == 2 && args[0] == "-addr":
		return fakeMinimal(args[1])
	case len(args) == 2 && args[0] == "-c":
		return fakeCentrifugo(args[1])
	}
	return fakeSSEBench(args)
}

func fakeServe(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", "", "")
	secret := fs.String("jwt-secret", "", "")
	redisURL := fs.String("redis-url", "", "")
	certFile := fs.String("tls-cert", "", "")
	keyFile := fs.String("tls-key", "", "")
	h2c := fs.Bool("h2c", false, "")
	if fs.Parse(args) != nil || *addr == "" || *secret == "" || *secret != os.Getenv("HERALD_JWT_SECRET") ||
		(*certFile == "") != (*keyFile == "") {
		fmt.Fprintln(os.Stderr, "fake herald serve: bad arguments", args)
		return 2
	}
	if *redisURL != "" {
		// The redis store: the Redis given must answer.
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(*redisURL, "redis://"), time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fake herald: redis:", err)
			return 1
		}
		_, _ = c.Write([]byte("PING\r\n"))
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.HasPrefix(line, "+PONG") {
			fmt.Fprintln(os.Stderr, "fake herald: redis said", line)
			return 1
		}
	}
	h := newFakeHerald(fakeToken(*secret))
	if f := os.Getenv("HERALDBENCH_FAKE_SUBS"); f != "" {
		// Each subscription, as the server saw it: its protocol, TLS, and client address (one
		// per TCP connection), for the tests to check what the streams really were.
		var mu sync.Mutex
		h.onSubscribe = func(r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err == nil {
				fmt.Fprintf(fh, "%s %v %s\n", r.Proto, r.TLS != nil, r.RemoteAddr)
				fh.Close()
			}
		}
	}
	if admin := os.Getenv("HERALD_ADMIN_ADDR"); admin != "" {
		// The admin listener's profiles, as herald serves them: the heap and goroutine figures.
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		go serveUntilTerm("fake admin", admin, &http.Server{Handler: mux}, *certFile, *keyFile)
	}
	srv := &http.Server{Handler: h}
	if *h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	return serveUntilTerm("fake herald", *addr, srv, *certFile, *keyFile)
}

// serveUntilTerm serves srv on addr (over TLS with a certificate) and exits 0 on SIGTERM, as
// the servers heraldbench stops do.
func serveUntilTerm(name, addr string, srv *http.Server, certFile, keyFile string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go func() {
		<-sig
		os.Exit(0)
	}()
	if certFile != "" {
		_ = srv.ServeTLS(ln, certFile, keyFile)
	} else {
		_ = srv.Serve(ln)
	}
	return 1
}

// fakeMinimal stands in for ssebench's minimal server: its routes, no auth, publish-only.
func fakeMinimal(addr string) int {
	return serveUntilTerm("fake minimal", addr, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/stats":
			_, _ = w.Write([]byte(`{}`))
		case r.URL.Path == "/publish" && r.Method == http.MethodPost && r.URL.Query().Get("channel") != "" &&
			r.Header.Get("Authorization") == "":
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusNoContent)
		default:
			http.Error(w, "fake minimal: unexpected "+r.Method+" "+r.URL.String(), http.StatusBadRequest)
		}
	})}, "", "")
}

// fakeCentrifugo stands in for Centrifugo v6 started on the configuration heraldbench wrote:
// it refuses one that lacks what the comparison relies on (history with recovery, anonymous
// unidirectional SSE subscribers naming their channels, the API key; its Redis answering),
// then publishes through its HTTP API to the unidirectional SSE subscribers of the channel,
// each publication in Centrifugo's envelope.
func fakeCentrifugo(path string) int {
	var conf struct {
		HTTPServer struct {
			Address string `json:"address"`
			Port    int    `json:"port"`
		} `json:"http_server"`
		HTTPAPI struct {
			Key string `json:"key"`
		} `json:"http_api"`
		UniSSE struct {
			Enabled bool `json:"enabled"`
		} `json:"uni_sse"`
		Health struct {
			Enabled bool `json:"enabled"`
		} `json:"health"`
		Client struct {
			Anonymous bool `json:"allow_anonymous_connect_without_token"`
		} `json:"client"`
		Channel struct {
			Default struct {
				ForClient     bool   `json:"allow_subscribe_for_client"`
				ForAnonymous  bool   `json:"allow_subscribe_for_anonymous"`
				HistorySize   int    `json:"history_size"`
				HistoryTTL    string `json:"history_ttl"`
				ForceRecovery bool   `json:"force_recovery"`
			} `json:"without_namespace"`
		} `json:"channel"`
		Engine *struct {
			Type  string `json:"type"`
			Redis struct {
				Address []string `json:"address"`
			} `json:"redis"`
		} `json:"engine"`
	}
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &conf)
	}
	ch := conf.Channel.Default
	if err != nil || conf.HTTPServer.Address != "127.0.0.1" || conf.HTTPServer.Port == 0 || len(conf.HTTPAPI.Key) < 16 ||
		!conf.UniSSE.Enabled || !conf.Health.Enabled || !conf.Client.Anonymous || !ch.ForClient || !ch.ForAnonymous ||
		ch.HistorySize != 1000 || ch.HistoryTTL != "24h" || !ch.ForceRecovery {
		fmt.Fprintf(os.Stderr, "fake centrifugo: bad configuration (%v):\n%s\n", err, b)
		return 2
	}
	if conf.Engine != nil {
		if conf.Engine.Type != "redis" || len(conf.Engine.Redis.Address) != 1 {
			fmt.Fprintf(os.Stderr, "fake centrifugo: bad engine:\n%s\n", b)
			return 2
		}
		if _, err := testkit.RedisCommand(strings.TrimPrefix(conf.Engine.Redis.Address[0], "redis://"), "PING"); err != nil {
			fmt.Fprintln(os.Stderr, "fake centrifugo: redis:", err)
			return 1
		}
	}
	var mu sync.Mutex
	subs := map[string][]chan []byte{}
	offset := 0
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/health":
			_, _ = w.Write([]byte(`{}`))
		case r.URL.Path == "/api/publish" && r.Method == http.MethodPost && r.Header.Get("X-API-Key") == conf.HTTPAPI.Key:
			var p struct {
				Channel string          `json:"channel"`
				Data    json.RawMessage `json:"data"`
			}
			if json.NewDecoder(r.Body).Decode(&p) != nil || p.Channel == "" || len(p.Data) == 0 || p.Data[0] != '{' {
				http.Error(w, `{"error":{"code":107,"message":"bad request"}}`, http.StatusBadRequest)
				return
			}
			mu.Lock()
			offset++
			ev := fmt.Appendf(nil, "data: {\"channel\":%q,\"pub\":{\"data\":%s,\"offset\":%d}}\n\n", p.Channel, p.Data, offset)
			for _, c := range subs[p.Channel] {
				c <- ev
			}
			mu.Unlock()
			_, _ = w.Write([]byte(`{"result":{}}`))
		case r.URL.Path == "/connection/uni_sse" && r.Method == http.MethodGet:
			var req struct {
				Subs map[string]struct{} `json:"subs"`
			}
			if json.Unmarshal([]byte(r.URL.Query().Get("cf_connect")), &req) != nil || len(req.Subs) != 1 {
				http.Error(w, "fake centrifugo: bad cf_connect "+r.URL.RawQuery, http.StatusBadRequest)
				return
			}
			c := make(chan []byte, 1024)
			mu.Lock()
			for name := range req.Subs {
				subs[name] = append(subs[name], c)
			}
			mu.Unlock()
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = w.Write([]byte("\r\ndata: {\"connect\":{\"client\":\"x\"}}\n\n"))
			w.(http.Flusher).Flush()
			for {
				select {
				case ev := <-c:
					_, _ = w.Write(ev)
					w.(http.Flusher).Flush()
				case <-r.Context().Done():
					return
				}
			}
		default:
			http.Error(w, "fake centrifugo: unexpected "+r.Method+" "+r.URL.String(), http.StatusBadRequest)
		}
	})
	return serveUntilTerm("fake centrifugo", fmt.Sprintf("127.0.0.1:%d", conf.HTTPServer.Port), &http.Server{Handler: handler}, "", "")
}

// fakeSSEBench records its arguments, checks the server is up, and prints
// a JSON line like ssebench's.
func fakeSSEBench(args []string) int {
	if f := os.Getenv("HERALDBENCH_FAKE_ARGS"); f != "" {
		b, _ := json.Marshal(args)
		fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, _ = fh.Write(append(b, '\n'))
			fh.Close()
		}
	}
	fs := flag.NewFlagSet("ssebench", flag.ContinueOnError)
	mode := fs.String("mode", "fanout", "")
	sub := fs.String("sub-url", "", "")
	fs.Int("conns", 0, "")
	fs.Int("channels", 0, "")
	fs.Float64("rate", 0, "")
	fs.Int("pub-workers", 0, "")
	fs.Duration("duration", 0, "")
	fs.Duration("settle", 0, "")
	fs.Int("msg-size", 0, "")
	fs.Int("server-pid", 0, "")
	fs.Bool("json", false, "")
	fs.String("channel-prefix", "", "")
	fs.String("pub-url", "", "")
	fs.String("pub-body", "", "")
	fs.Var(&listFlag{}, "pub-header", "")
	fs.Duration("progress", 0, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	health := "/v1/health"
	base, _, found := strings.Cut(*sub, "/v1/")
	if !found {
		base, _, found = strings.Cut(*sub, "/sse?")
		health = "/stats"
	}
	if !found {
		base, _, _ = strings.Cut(*sub, "/connection/")
		health = "/health"
	}
	resp, err := http.Get(base + health)
	if err != nil || resp.StatusCode != 200 {
		fmt.Fprintln(os.Stderr, "fake ssebench: server not up:", err)
		return 2
	}
	resp.Body.Close()
	fmt.Printf(`{"mode":%q,"conns_ok":20,"published":7,"publish_rate":14,"delivered":140,"expected_deliveries":140,"bytes_per_conn":1234.5,"server_cpu_s":0.5,"deliveries_per_server_cpu_s":280,"latency_p99_ms":1.5}`+"\n", *mode)
	return 0
}

func TestOrchestrateFreshServers(t *testing.T) {
	exe, argsFile := fakeTools(t)
	mdFile := filepath.Join(t.TempDir(), "table.md")
	stores := []string{"memory"}
	storeFlag := "memory"
	if _, err := exec.LookPath("redis-server"); err == nil {
		stores, storeFlag = []string{"memory", "redis"}, "both"
	} else {
		t.Log("redis-server not found: the redis store is not tried")
	}
	var stdout, stderr strings.Builder
	code := realMain([]string{"-herald", exe, "-ssebench", exe, "-store", storeFlag, "-scenario", "S2,S5",
		"-conns", "20", "-rate", "40", "-duration", "500ms", "-settle", "100ms", "-progress", "0", "-md", mdFile},
		&stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}

	rows := resultRows(t, stdout.String())
	if len(rows) != 2*len(stores)*2 {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), 2*len(stores)*2, stdout.String())
	}
	i := 0
	pids := map[int]bool{}
	for _, sc := range []string{"S2", "S5"} {
		for _, store := range stores {
			for _, tool := range []string{"heraldbench", "ssebench"} {
				r := rows[i]
				i++
				if r.Scenario != sc || r.Store != store || r.Tool != tool || r.Error != "" {
					t.Fatalf("row %d: %s %s %s error %q, want %s %s %s", i, r.Scenario, r.Store, r.Tool, r.Error, sc, store, tool)
				}
				if tool == "ssebench" {
					if r.Delivered != 140 || r.BytesPerConn == nil || *r.BytesPerConn != 1235 {
						t.Fatalf("ssebench row not read: %+v", r)
					}
					continue
				}
				if r.ServerPID == 0 || pids[r.ServerPID] {
					t.Fatalf("server pid %d: not a fresh server", r.ServerPID)
				}
				pids[r.ServerPID] = true
				if r.Published == 0 || r.PublishErrors != 0 {
					t.Fatalf("%s %s: published %d, errors %v", sc, store, r.Published, r.PublishErrsBy)
				}
				if sc == "S2" && (r.ConnsReady != 20 || r.Delivered != r.Expected || r.Expected != r.Published*20 || r.BytesPerConn == nil) {
					t.Fatalf("S2 %s: %+v", store, r)
				}
				if sc == "S5" && (r.Mode != modePublish || r.Channels != 100 || r.PubWorkers != 32 || r.ServerCPUS == nil) {
					t.Fatalf("S5 %s: %+v", store, r)
				}
				if (store == "redis") != (r.RedisCPUS != nil) {
					t.Fatalf("%s %s: redis cpu %v", sc, store, r.RedisCPUS)
				}
			}
		}
	}
	// Every server was stopped.
	for pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("server %d still there: %v", pid, err)
		}
	}

	// ssebench got the flags of benchmarks.md and Herald's URLs.
	calls := ssebenchCalls(t, argsFile)
	if len(calls) != 2*len(stores) {
		t.Fatalf("ssebench ran %d times", len(calls))
	}
	j2, j5 := calls[0], calls[len(calls)-1]
	for _, want := range []string{"-conns 20 -channels 1 -rate 40 -duration 500ms -msg-size 200 -server-pid ", " -json", "-settle 100ms",
		"-channel-prefix bench. ", "/v1/channels/{channel}/events -pub-url http://127.0.0.1:",
		`-pub-body {"event":"bench","data":{payload}}`, "-pub-header Authorization: Bearer hdr."} {
		if !strings.Contains(j2, want) {
			t.Errorf("S2 ssebench args lack %q: %s", want, j2)
		}
	}
	if !strings.HasPrefix(j5, "-mode publish -channels 100 -rate 40 -pub-workers 32 -duration 500ms -msg-size 200") {
		t.Errorf("S5 ssebench args: %s", j5)
	}
	md, err := os.ReadFile(mdFile)
	if err != nil || !strings.Contains(string(md), "| S2 | memory | heraldbench | 20/20 |") || strings.Count(string(md), "\n") != len(rows)+2 {
		t.Fatalf("markdown table: %v\n%s", err, md)
	}
}

// TestOrchestrateMinimal: -minimal adds ssebench's minimal server as a row of its own, driven
// through its routes with no token, by both tools.
func TestOrchestrateMinimal(t *testing.T) {
	exe, argsFile := fakeTools(t)
	var stdout, stderr strings.Builder
	code := realMain([]string{"-herald", exe, "-ssebench", exe, "-minimal", exe, "-store", "memory", "-scenario", "S5",
		"-rate", "40", "-duration", "500ms", "-progress", "0"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	rows := resultRows(t, stdout.String())
	if len(rows) != 4 || rows[2].Store != storeMinimal || rows[3].Store != storeMinimal {
		t.Fatalf("rows: %s", stdout.String())
	}
	if r := rows[2]; r.Tool != "heraldbench" || r.Error != "" || r.Published == 0 || r.PublishErrors != 0 || r.ServerCPUS == nil {
		t.Fatalf("minimal, heraldbench: %+v", r)
	}
	calls := ssebenchCalls(t, argsFile)
	j := calls[len(calls)-1]
	for _, want := range []string{"/sse?channel={channel_q} -pub-url http://127.0.0.1:", "/publish?channel={channel_q} -pub-body {payload}"} {
		if !strings.Contains(j, want) {
			t.Errorf("minimal ssebench args lack %q: %s", want, j)
		}
	}
	if strings.Contains(j, "Authorization") || strings.Contains(rows[3].Command, "$TOKEN") {
		t.Errorf("minimal ssebench run carries a token: %s / %s", j, rows[3].Command)
	}
}

// TestOrchestrateCentrifugo: -centrifugo adds Centrifugo beside each store, on its own
// configuration, driven through its routes with its API key and no token by both tools, its
// Redis engine's CPU counted like Herald's.
func TestOrchestrateCentrifugo(t *testing.T) {
	exe, argsFile := fakeTools(t)
	stores, storeFlag := []string{"memory", storeCentrifugo}, "memory"
	if _, err := exec.LookPath("redis-server"); err == nil {
		stores, storeFlag = []string{"memory", "redis", storeCentrifugo, storeCentrifugoRedis}, "both"
	} else {
		t.Log("redis-server not found: Centrifugo's Redis engine is not tried")
	}
	var stdout, stderr strings.Builder
	code := realMain([]string{"-herald", exe, "-ssebench", exe, "-centrifugo", exe, "-store", storeFlag, "-scenario", "S2",
		"-conns", "20", "-rate", "40", "-duration", "500ms", "-settle", "100ms", "-progress", "0"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	rows := resultRows(t, stdout.String())
	if len(rows) != 2*len(stores) {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), 2*len(stores), stdout.String())
	}
	for i, store := range stores {
		r := rows[2*i]
		if r.Store != store || r.Tool != "heraldbench" || r.Error != "" {
			t.Fatalf("row %d: %s %s error %q, want %s", 2*i, r.Store, r.Tool, r.Error, store)
		}
		if store != storeCentrifugo && store != storeCentrifugoRedis {
			continue
		}
		// Every subscriber ready, every publication found in its envelope, nothing else counted.
		if r.ConnsReady != 20 || r.Published == 0 || r.PublishErrors != 0 || r.Delivered != r.Published*20 || r.Lost != 0 ||
			r.WrongEvent != 0 || r.Misrouted != 0 || r.OtherEvents != 20 {
			t.Fatalf("%s: %+v", store, r)
		}
		if (store == storeCentrifugoRedis) != (r.RedisCPUS != nil) {
			t.Fatalf("%s: redis cpu %v", store, r.RedisCPUS)
		}
	}
	calls := ssebenchCalls(t, argsFile)
	j := calls[len(calls)-1]
	for _, want := range []string{"/connection/uni_sse?cf_connect=" + cfConnectSubs + " -pub-url http://127.0.0.1:",
		`/api/publish -pub-body {"channel":"{channel}","data":{payload}} -pub-header X-API-Key: `} {
		if !strings.Contains(j, want) {
			t.Errorf("centrifugo ssebench args lack %q: %s", want, j)
		}
	}
	if strings.Contains(j, "Authorization") {
		t.Errorf("centrifugo ssebench run carries a token: %s", j)
	}
}

// fakeTools makes this test binary play herald, ssebench and the servers beside them in the
// processes heraldbench starts (TestMain), and returns its path and the file where the fake
// ssebench records each command line.
func fakeTools(t *testing.T) (exe, argsFile string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	argsFile = filepath.Join(t.TempDir(), "args")
	t.Setenv("HERALDBENCH_FAKE", "1")
	t.Setenv("HERALDBENCH_FAKE_ARGS", argsFile)
	// Under -race a process waits a second at exit unless told not to.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	return exe, argsFile
}

// ssebenchCalls returns the fake ssebench's command lines, in order, each joined by spaces.
func ssebenchCalls(t *testing.T, argsFile string) []string {
	t.Helper()
	b, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	var calls []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var args []string
		if err := json.Unmarshal([]byte(l), &args); err != nil {
			t.Fatalf("recorded ssebench call %q: %v", l, err)
		}
		calls = append(calls, strings.Join(args, " "))
	}
	return calls
}

// resultRows reads heraldbench's JSON lines.
func resultRows(t *testing.T, stdout string) []result {
	t.Helper()
	var rows []result
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var r result
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("stdout line %q: %v", l, err)
		}
		rows = append(rows, r)
	}
	return rows
}
