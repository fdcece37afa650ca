package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/herald-rt/herald/test/testkit"
)

// Children this process started, stopped by the watchdog or a signal if
// the run does not get to stop them itself.
var (
	childMu  sync.Mutex
	children = map[*exec.Cmd]bool{}
)

func registerChild(c *exec.Cmd)   { childMu.Lock(); children[c] = true; childMu.Unlock() }
func unregisterChild(c *exec.Cmd) { childMu.Lock(); delete(children, c); childMu.Unlock() }

func killChildren() {
	childMu.Lock()
	defer childMu.Unlock()
	for c := range children {
		if c.Process != nil {
			_ = c.Process.Kill()
		}
	}
}

// proc is a started child process and the file its output goes to.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	exited  chan struct{}
	waitErr error
}

func startProc(name, dir string, cmd *exec.Cmd) (*proc, error) {
	f, err := os.CreateTemp(dir, name+"-*.log")
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	// Should this process die without stopping it, the kernel does.
	cmd.SysProcAttr = childAttr()
	p := &proc{name: name, cmd: cmd, logPath: f.Name(), logFile: f, exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	registerChild(cmd)
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop ends the process: SIGTERM, then SIGKILL after grace. Bounded.
func (p *proc) stop(grace time.Duration) {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
			select {
			case <-p.exited:
			case <-time.After(5 * time.Second):
			}
		}
	}
	unregisterChild(p.cmd)
	p.logFile.Close()
}

// tail returns the last lines of the process's output, for error messages.
func (p *proc) tail(lines int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// freePort asks the kernel for a free loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// orchestrator starts a fresh Herald (and Redis) for every run.
type orchestrator struct {
	o      *options
	set    map[string]bool // flags given on the command line
	stdout io.Writer
	log    io.Writer
	stores []string
	secret string
	// -centrifugo made absolute (Centrifugo runs in a folder of its own) and its HTTP API key,
	// random per command.
	centrifugo, apiKey string
	workDir            string
	client             *http.Client
	// The certificate the servers get when a run needs TLS, made once per command.
	certFile, keyFile string
	roots             *x509.CertPool
}

func newOrchestrator(o *options, set map[string]bool, stdout, log io.Writer) (*orchestrator, error) {
	orc := &orchestrator{o: o, set: set, stdout: stdout, log: log, secret: o.jwtSecret, client: newLoopbackClient(5*time.Second, 1, nil)}
	for _, st := range strings.Split(o.store, ",") {
		switch st {
		case "memory", "redis", "cluster":
			orc.stores = append(orc.stores, st)
		case "both":
			orc.stores = append(orc.stores, "memory", "redis")
		default:
			return nil, fmt.Errorf("-store must be memory, redis, cluster, both or a comma list of them, not %q", o.store)
		}
	}
	if _, err := os.Stat(o.herald); err != nil {
		return nil, fmt.Errorf("-herald: %w", err)
	}
	if o.rounds < 1 || o.rounds > 20 {
		return nil, fmt.Errorf("-rounds must be 1 to 20, not %d", o.rounds)
	}
	if o.nodes < 1 || o.nodes > 8 {
		return nil, fmt.Errorf("-nodes must be 1 to 8, not %d", o.nodes)
	}
	if o.nodes > 1 && (slices.Contains(orc.stores, "memory") || o.ssebench != "") {
		return nil, errors.New("-nodes above 1 needs a Redis store (redis or cluster) and no -ssebench (it drives one server)")
	}
	if o.ssebench != "" {
		if _, err := os.Stat(o.ssebench); err != nil {
			return nil, fmt.Errorf("-ssebench: %w", err)
		}
	}
	if o.minimal != "" {
		if _, err := os.Stat(o.minimal); err != nil {
			return nil, fmt.Errorf("-minimal: %w", err)
		}
		if o.nodes > 1 {
			return nil, errors.New("-minimal runs one server; leave -nodes at 1")
		}
		orc.stores = append(orc.stores, storeMinimal)
	}
	if o.centrifugo != "" {
		if _, err := os.Stat(o.centrifugo); err != nil {
			return nil, fmt.Errorf("-centrifugo: %w", err)
		}
		if o.nodes > 1 {
			return nil, errors.New("-centrifugo runs one server; leave -nodes at 1")
		}
		// Each engine beside the store it compares with.
		n := len(orc.stores)
		if slices.Contains(orc.stores, "memory") {
			orc.stores = append(orc.stores, storeCentrifugo)
		}
		if slices.Contains(orc.stores, "redis") {
			orc.stores = append(orc.stores, storeCentrifugoRedis)
		}
		if len(orc.stores) == n {
			return nil, errors.New("-centrifugo runs beside -store memory or redis")
		}
		var err error
		if orc.centrifugo, err = filepath.Abs(o.centrifugo); err != nil {
			return nil, fmt.Errorf("-centrifugo: %w", err)
		}
		orc.apiKey = randomHex(16)
	}
	if o.redisURL != "" {
		u, err := url.Parse(o.redisURL)
		if err != nil || u.Scheme != "redis" || u.Host == "" {
			return nil, fmt.Errorf("-redis-url %q: want redis://127.0.0.1:PORT", o.redisURL)
		}
		if u.Port() == "" {
			return nil, fmt.Errorf("-redis-url %q: give the port", o.redisURL)
		}
		if _, err := loopbackAddr(u.Host); err != nil {
			return nil, fmt.Errorf("-redis-url: %w", err)
		}
	}
	for _, kv := range o.heraldEnv {
		if !strings.Contains(kv, "=") {
			return nil, fmt.Errorf("-herald-env %q: want KEY=VALUE", kv)
		}
	}
	if orc.secret == "" {
		orc.secret = randomHex(32)
	}
	return orc, nil
}

// timeLimit bounds the whole orchestrated command, for the watchdog.
func (orc *orchestrator) timeLimit(runs []runConfig) time.Duration {
	perStart := orc.o.startTimeout + 60*time.Second // redis, token, health, stop
	var d time.Duration
	tools := 1
	if orc.o.ssebench != "" {
		tools = 2
	}
	for _, c := range runs {
		d += time.Duration(orc.o.rounds*len(orc.stores)*tools) * (c.maxRunTime() + perStart)
	}
	return d + time.Minute
}

// runAll runs every scenario on every store with each tool, each on a
// fresh server, prints each run's summary and JSON line, and returns the
// rows. An error stops the whole command only when nothing can go on (the
// herald binary does not start); a failed run becomes a row with an error.
func (orc *orchestrator) runAll(runs []runConfig, token string) ([]*result, error) {
	dir, err := os.MkdirTemp("", "heraldbench-")
	if err != nil {
		return nil, err
	}
	orc.workDir = dir
	defer os.RemoveAll(dir)

	// The servers inherit this limit.
	var maxConns uint64
	for _, c := range runs {
		maxConns = max(maxConns, uint64(c.Conns))
	}
	if _, err := raiseNofile(maxConns + 4096); err != nil {
		fmt.Fprintln(orc.log, "heraldbench: warning: could not raise the open-file limit:", err)
	}
	if token == "" {
		if token, err = orc.mintToken(); err != nil {
			return nil, err
		}
	}
	for _, c := range runs {
		if c.useTLS() && orc.roots == nil {
			if orc.certFile, orc.keyFile, orc.roots, err = writeSelfSignedCert(dir); err != nil {
				return nil, fmt.Errorf("certificate: %w", err)
			}
			orc.client = newLoopbackClient(5*time.Second, 1, orc.roots)
		}
	}
	var rows []*result
	for _, c := range runs {
		// Rounds inside a scenario, stores inside a round: the rows a ratio compares run one
		// after the other, on the same phase of a machine whose speed drifts.
		for round := 1; round <= orc.o.rounds; round++ {
			for _, store := range orc.stores {
				tools := []string{"heraldbench"}
				if orc.o.ssebench != "" {
					tools = append(tools, "ssebench")
				}
				for _, tool := range tools {
					res := orc.runOne(c, store, tool, token)
					if orc.o.rounds > 1 {
						res.Round = round
					}
					writeSummary(orc.log, res)
					if err := writeJSONLine(orc.stdout, res); err != nil {
						return rows, err
					}
					rows = append(rows, res)
				}
			}
		}
	}
	return rows, nil
}

// mintToken runs 'herald token' with the servers' secret.
func (orc *orchestrator) mintToken() (string, error) {
	args := []string{"token", "--sub", "bench", "--subscribe", "*", "--publish", "*", "--ttl", "2h"}
	try := func(extra ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, orc.o.herald, append(args, extra...)...)
		cmd.Env = append(os.Environ(), "HERALD_JWT_SECRET="+orc.secret)
		if !envHas(cmd.Env, "HERALD_ADMIN_ADDR") && !envHas(orc.o.heraldEnv, "HERALD_ADMIN_ADDR") {
			// Any free port, so a bench run never meets another herald's admin listener. An
			// environment variable rather than a flag: binaries from before the admin listener
			// ignore it, so they can still be measured side by side.
			cmd.Env = append(cmd.Env, "HERALD_ADMIN_ADDR=127.0.0.1:0")
		}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("%s token: %v: %s", orc.o.herald, err, strings.TrimSpace(errb.String()))
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		tok := strings.TrimSpace(lines[len(lines)-1])
		if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \t") {
			return "", fmt.Errorf("%s token printed %q, not a JWT", orc.o.herald, tok)
		}
		return tok, nil
	}
	tok, err := try()
	if err != nil {
		tok, err = try("--jwt-secret", orc.secret)
	}
	return tok, err
}

// server is a fresh Herald and, for the redis store, the Redis it uses.
type server struct {
	herald   *proc
	others   []*proc  // the further nodes of -nodes
	bases    []string // their base URLs
	redis    *proc
	cluster  *testkit.RedisCluster
	redisDir string
	base     string
	admin    string // the first node's admin listener, when heraldbench placed it
}

func (s *server) stop() {
	if s.herald != nil {
		s.herald.stop(10 * time.Second)
	}
	for _, p := range s.others {
		p.stop(10 * time.Second)
	}
	if s.redis != nil {
		s.redis.stop(5 * time.Second)
	}
	if s.cluster != nil {
		s.cluster.Close()
	}
	if s.redisDir != "" {
		os.RemoveAll(s.redisDir)
	}
}

// storeMinimal names, in the store column, ssebench's minimal SSE server run in Herald's
// place: no store, no auth, nothing but fan-out.
const storeMinimal = "minimal"

// Centrifugo run in Herald's place (-centrifugo), the peer the Redis path's goals name: its
// memory engine, or its Redis engine on a private redis-server. Both keep history and recover
// as Herald does by default (1,000 events or 24 hours a channel); subscribers use its
// unidirectional SSE and publishers its HTTP API.
const (
	storeCentrifugo      = "centrifugo"
	storeCentrifugoRedis = "centrifugo-redis"
)

// startServer starts Redis (when needed and not given) and Herald, speaking what c's
// subscribers speak, and waits until Herald answers GET /v1/health with 200.
func (orc *orchestrator) startServer(c runConfig, store string) (*server, error) {
	s := &server{}
	if store == storeCentrifugo || store == storeCentrifugoRedis {
		return s, orc.startCentrifugo(s, store == storeCentrifugoRedis)
	}
	if store == storeMinimal {
		port, err := freePort()
		if err != nil {
			return s, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if s.herald, err = startProc("minimal", orc.workDir, exec.Command(orc.o.minimal, "-addr", addr)); err != nil {
			return s, err
		}
		s.base = "http://" + addr
		if err := orc.waitHealth(s.base+"/stats", s.herald); err != nil {
			return s, fmt.Errorf("minimal server: %w\n%s", err, s.herald.tail(20))
		}
		return s, nil
	}
	redisURL := ""
	if store == "redis" {
		var err error
		if redisURL, err = orc.startRedis(s); err != nil {
			return s, err
		}
	}
	var storeArgs []string
	if redisURL != "" {
		storeArgs = append(storeArgs, "--redis-url", redisURL)
	}
	if store == "cluster" {
		// Three masters and no replicas: the same work as one Redis, spread over three
		// processes, so "server + redis" CPU compares like with like.
		var err error
		if s.cluster, err = testkit.StartRedisCluster(3, 0); err != nil {
			return s, err
		}
		storeArgs = append(storeArgs, "--redis-cluster", s.cluster.Seeds())
	}
	scheme := "http"
	if c.useTLS() {
		scheme = "https"
		storeArgs = append(storeArgs, "--tls-cert", orc.certFile, "--tls-key", orc.keyFile)
	}
	if c.Proto == protoH2C {
		storeArgs = append(storeArgs, "--h2c")
	}
	for n := range orc.o.nodes {
		args := storeArgs
		var env []string
		if n > 0 {
			args = append(args[:len(args):len(args)], "--admin-addr", "") // one admin listener is enough
		} else if !orc.adminGiven() {
			// The first node's admin listener on a free port, for its heap and stacks: never
			// another herald's on the default port. An environment variable rather than a
			// flag, so binaries from before the admin listener still start.
			port, err := freePort()
			if err != nil {
				return s, err
			}
			s.admin = scheme + "://127.0.0.1:" + strconv.Itoa(port)
			env = append(env, "HERALD_ADMIN_ADDR=127.0.0.1:"+strconv.Itoa(port))
		}
		p, base, err := orc.startHerald(scheme, args, env)
		if n == 0 {
			s.herald, s.base = p, base
		} else if p != nil {
			s.others, s.bases = append(s.others, p), append(s.bases, base)
		}
		if err != nil {
			return s, err
		}
	}
	return s, nil
}

// startRedis starts a private redis-server for s and returns its URL, or returns -redis-url.
func (orc *orchestrator) startRedis(s *server) (string, error) {
	if orc.o.redisURL != "" {
		return orc.o.redisURL, nil
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	if s.redisDir, err = os.MkdirTemp(orc.workDir, "redis-"); err != nil {
		return "", err
	}
	cmd := exec.Command(orc.o.redisServer, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.redisDir)
	cmd.Dir = s.redisDir
	if s.redis, err = startProc("redis", orc.workDir, cmd); err != nil {
		return "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if err := waitRedis(addr, s.redis, 10*time.Second); err != nil {
		return "", fmt.Errorf("redis-server: %w\n%s", err, s.redis.tail(10))
	}
	return "redis://" + addr, nil
}

// startCentrifugo starts Centrifugo with a configuration file of its own, on its Redis engine
// when onRedis, and waits for its health endpoint.
func (orc *orchestrator) startCentrifugo(s *server, onRedis bool) error {
	redisURL := ""
	if onRedis {
		var err error
		if redisURL, err = orc.startRedis(s); err != nil {
			return err
		}
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(orc.workDir, "centrifugo-")
	if err != nil {
		return err
	}
	conf := filepath.Join(dir, "config.json")
	if err := os.WriteFile(conf, centrifugoConfig(port, orc.apiKey, redisURL), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(orc.centrifugo, "-c", conf)
	cmd.Dir = dir
	if s.herald, err = startProc("centrifugo", orc.workDir, cmd); err != nil {
		return err
	}
	s.base = "http://127.0.0.1:" + strconv.Itoa(port)
	if err := orc.waitHealth(s.base+"/health", s.herald); err != nil {
		return fmt.Errorf("centrifugo: %w\n%s", err, s.herald.tail(20))
	}
	return nil
}

// centrifugoConfig is Centrifugo v6's configuration for a run: anonymous subscribers may
// name their channels in the connect request (unidirectional SSE), and channels keep the
// history Herald keeps by default, with recovery on, so that both pay for a durable log.
func centrifugoConfig(port int, apiKey, redisURL string) []byte {
	conf := map[string]any{
		"http_server": map[string]any{"address": "127.0.0.1", "port": port},
		"log":         map[string]any{"level": "error"}, // a line per connection would be measured
		"http_api":    map[string]any{"key": apiKey},
		"uni_sse":     map[string]any{"enabled": true},
		"health":      map[string]any{"enabled": true},
		"usage_stats": map[string]any{"disabled": true},
		"client":      map[string]any{"allow_anonymous_connect_without_token": true},
		"channel": map[string]any{"without_namespace": map[string]any{
			"allow_subscribe_for_client":    true,
			"allow_subscribe_for_anonymous": true,
			"history_size":                  1000,
			"history_ttl":                   "24h",
			"force_recovery":                true,
		}},
	}
	if redisURL != "" {
		conf["engine"] = map[string]any{"type": "redis", "redis": map[string]any{"address": []string{redisURL}}}
	}
	b, _ := json.MarshalIndent(conf, "", "  ") // maps of strings, numbers and bools always marshal
	return b
}

// adminGiven reports whether -herald-arg or -herald-env place the admin listener.
func (orc *orchestrator) adminGiven() bool {
	for _, a := range orc.o.heraldArgs {
		if strings.HasPrefix(strings.TrimLeft(a, "-"), "admin-addr") {
			return true
		}
	}
	return envHas(orc.o.heraldEnv, "HERALD_ADMIN_ADDR")
}

// startHerald starts one herald node with storeArgs (its store, TLS and h2c) and env, and
// waits for its health.
func (orc *orchestrator) startHerald(scheme string, storeArgs, env []string) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := append([]string{"serve", "--addr", addr, "--jwt-secret", orc.secret}, storeArgs...)
	args = append(args, orc.o.heraldArgs...)
	cmd := exec.Command(orc.o.herald, args...)
	cmd.Env = append(os.Environ(), "HERALD_JWT_SECRET="+orc.secret)
	if !envHas(cmd.Env, "HERALD_LOG_LEVEL") && !envHas(orc.o.heraldEnv, "HERALD_LOG_LEVEL") {
		// A log line per connection would be measured as server cost.
		cmd.Env = append(cmd.Env, "HERALD_LOG_LEVEL=warn")
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Env = append(cmd.Env, orc.o.heraldEnv...)
	p, err := startProc("herald", orc.workDir, cmd)
	if err != nil {
		return nil, "", err
	}
	base := scheme + "://" + addr
	if err := orc.waitHealth(base+"/v1/health", p); err != nil {
		return p, base, fmt.Errorf("herald: %w\n%s", err, p.tail(20))
	}
	return p, base, nil
}

// waitHealth polls the health URL until it answers 200, the process exits,
// or the start timeout passes.
func (orc *orchestrator) waitHealth(u string, p *proc) error {
	deadline := time.Now().Add(orc.o.startTimeout)
	for attempt := 0; attempt < 100000 && time.Now().Before(deadline); attempt++ {
		if !p.running() {
			return fmt.Errorf("exited before answering %s: %v", u, p.waitErr)
		}
		resp, err := orc.client.Get(u)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no 200 from %s within %v", u, orc.o.startTimeout)
}

// waitRedis sends PING until the server answers, or its process exits.
func waitRedis(addr string, p *proc, limit time.Duration) error {
	var err error
	up := testkit.WaitFor(limit, func() bool {
		if !p.running() {
			err = fmt.Errorf("exited: %v", p.waitErr)
			return true
		}
		_, err = testkit.RedisCommand(addr, "PING")
		return err == nil
	})
	if !up {
		return fmt.Errorf("no PONG from %s within %v: %v", addr, limit, err)
	}
	return err
}

// runOne runs one scenario on one store with one tool, on a fresh server.
func (orc *orchestrator) runOne(c runConfig, store, tool, token string) *result {
	fail := func(err error) *result {
		return &result{Tool: tool, Scenario: c.Scenario, Store: store, Mode: c.Mode, Proto: c.protoLabel(), Error: err.Error()}
	}
	switch store {
	case storeMinimal:
		fmt.Fprintf(orc.log, "heraldbench: %s on a fresh minimal server with %s\n", c.Scenario, tool)
		c = minimalURLs(c)
		token = ""
	case storeCentrifugo, storeCentrifugoRedis:
		fmt.Fprintf(orc.log, "heraldbench: %s on a fresh %s with %s\n", c.Scenario, store, tool)
		c = centrifugoURLs(c, orc.apiKey)
		token = ""
	default:
		fmt.Fprintf(orc.log, "heraldbench: %s on a fresh herald (%s store) with %s\n", c.Scenario, store, tool)
	}
	srv, err := orc.startServer(c, store)
	defer srv.stop()
	if err != nil {
		return fail(err)
	}
	c.ServerPID = srv.herald.pid()
	c.RootCAs = orc.roots
	if c.AdminURL == "" {
		c.AdminURL = srv.admin
	}
	c.SubBases = srv.bases
	for _, p := range srv.others {
		c.ServerPIDs = append(c.ServerPIDs, p.pid())
	}
	if srv.redis != nil {
		c.RedisPID = srv.redis.pid()
	}
	if srv.cluster != nil {
		for _, n := range srv.cluster.Nodes {
			if c.RedisPID == 0 {
				c.RedisPID = n.PID()
			} else {
				c.RedisPIDs = append(c.RedisPIDs, n.PID())
			}
		}
	}
	var res *result
	if tool == "ssebench" {
		res, err = orc.runSSEBench(c, srv, token)
	} else {
		c.Base = srv.base
		c.Token = token
		res, err = runOnce(c, orc.log)
	}
	if err != nil {
		return fail(err)
	}
	res.Store = store
	if !srv.herald.running() {
		res.Error = fmt.Sprintf("the server exited during the run (%v)", srv.herald.waitErr)
	}
	return res
}

// minimalURLs points c at ssebench's minimal server: its routes, the payload as the whole
// body, and its events' name; it answers at the response head, with no connected event.
func minimalURLs(c runConfig) runConfig {
	c.SubURL = "{base}/sse?channel={channel_q}"
	c.PubURL = "{base}/publish?channel={channel_q}"
	c.PubBody = "{payload}"
	c.ReadyEvent = ""
	c.ExpectEvent = "message"
	return c
}

// cfConnectSubs is Centrifugo's connect request naming the subscriber's channel,
// {"subs":{"{channel}":{}}}, query-escaped around the placeholder.
const cfConnectSubs = "%7B%22subs%22%3A%7B%22{channel}%22%3A%7B%7D%7D%7D"

// centrifugoURLs points c at Centrifugo: unidirectional SSE subscribers, which are ready at
// the response head and get unnamed events with the payload inside an envelope, and
// publishes through its HTTP API with the command's key.
func centrifugoURLs(c runConfig, apiKey string) runConfig {
	c.SubURL = "{base}/connection/uni_sse?cf_connect=" + cfConnectSubs
	c.PubURL = "{base}/api/publish"
	c.PubBody = `{"channel":"{channel}","data":{payload}}`
	c.PubHeaders = append(slices.Clip(c.PubHeaders), "X-API-Key: "+apiKey)
	c.ReadyEvent = ""
	c.ExpectEvent = ""
	return c
}

// ssebenchArgs builds the reference tool's command line: the flags of
// benchmarks.md for the scenario (with any overrides), and Herald's URLs.
func (orc *orchestrator) ssebenchArgs(c runConfig, base, token string) []string {
	d := func(v time.Duration) string { return v.String() }
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	var a []string
	switch c.Mode {
	case modeIdle:
		a = []string{"-mode", "idle", "-conns", strconv.Itoa(c.Conns), "-channels", strconv.Itoa(c.Channels), "-duration", d(c.Duration)}
	case modePublish:
		a = []string{"-mode", "publish", "-channels", strconv.Itoa(c.Channels), "-rate", f(c.Rate), "-pub-workers", strconv.Itoa(c.PubWorkers), "-duration", d(c.Duration)}
	default:
		a = []string{"-conns", strconv.Itoa(c.Conns), "-channels", strconv.Itoa(c.Channels), "-rate", f(c.Rate), "-duration", d(c.Duration)}
		if c.PubWorkers != 8 {
			a = append(a, "-pub-workers", strconv.Itoa(c.PubWorkers))
		}
	}
	a = append(a, "-msg-size", strconv.Itoa(c.MsgSize), "-server-pid", strconv.Itoa(c.ServerPID), "-json")
	// Settings where the two tools' defaults are the same unless changed.
	def := defaultConfig()
	if c.Settle != def.Settle {
		a = append(a, "-settle", d(c.Settle))
	}
	if c.Drain != def.Drain {
		a = append(a, "-drain", d(c.Drain))
	}
	if c.SrcIPs != def.SrcIPs {
		a = append(a, "-src-ips", strconv.Itoa(c.SrcIPs))
	}
	if c.RampRate != def.RampRate {
		a = append(a, "-ramp-rate", f(c.RampRate))
	}
	if c.ConnectTimeout != def.ConnectTimeout {
		a = append(a, "-connect-timeout", d(c.ConnectTimeout))
	}
	a = append(a,
		"-channel-prefix", c.ChannelPrefix,
		"-sub-url", strings.ReplaceAll(c.SubURL, "{base}", base),
		"-pub-url", strings.ReplaceAll(c.PubURL, "{base}", base),
		"-pub-body", c.PubBody)
	if token != "" {
		a = append(a, "-pub-header", "Authorization: Bearer "+token)
	}
	for _, h := range c.PubHeaders {
		a = append(a, "-pub-header", h)
	}
	return append(a, "-pub-header", "Content-Type: application/json", "-progress", "0")
}

// fromSSEBench reads ssebench's JSON line into a row of this tool's table. The two tools name
// their figures alike, so the line decodes into a result directly; only the figures ssebench
// names differently are mapped here.
func fromSSEBench(line []byte, c runConfig) (*result, error) {
	r := &result{}
	if err := json.Unmarshal(line, r); err != nil {
		return nil, err
	}
	var renamed struct {
		ConnsOK       int64             `json:"conns_ok"`
		PublishErrsBy map[string]uint64 `json:"publish_errors_by_status"`
		PublishRate   float64           `json:"publish_rate"`
	}
	if err := json.Unmarshal(line, &renamed); err != nil {
		return nil, err
	}
	r.ConnsReady, r.PublishErrsBy, r.PublishesPerS = renamed.ConnsOK, renamed.PublishErrsBy, renamed.PublishRate
	r.Tool, r.Scenario, r.Mode, r.Channels, r.PubWorkers, r.ServerPID = "ssebench", c.Scenario, c.Mode, c.Channels, c.PubWorkers, c.ServerPID
	r.ConnsRequested = 0
	if c.Mode != modePublish {
		r.ConnsRequested = c.Conns
	}
	if c.Mode == modePublish && r.ServerCPUS != nil && *r.ServerCPUS > 0 {
		r.PubPerCPUS = fptr(float64(r.Published) / *r.ServerCPUS)
	}
	r.roundAll()
	return r, nil
}

// runSSEBench runs the reference tool against the fresh server and reads
// its JSON line.
func (orc *orchestrator) runSSEBench(c runConfig, srv *server, token string) (*result, error) {
	args := orc.ssebenchArgs(c, srv.base, token)
	ctx, cancel := context.WithTimeout(context.Background(), c.maxRunTime()+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, orc.o.ssebench, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, orc.log
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	registerChild(cmd)
	err := cmd.Wait()
	unregisterChild(cmd)
	var line []byte
	for _, l := range bytes.Split(out.Bytes(), []byte("\n")) {
		if l = bytes.TrimSpace(l); len(l) > 0 && l[0] == '{' {
			line = l
		}
	}
	if line == nil {
		if err == nil {
			err = errors.New("no JSON line on its output")
		}
		return nil, fmt.Errorf("ssebench: %w", err)
	}
	r, jerr := fromSSEBench(line, c)
	if jerr != nil {
		return nil, fmt.Errorf("ssebench JSON: %w", jerr)
	}
	r.Command = "ssebench " + shellJoin(redactToken(args, token))
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 { // 1 is -strict, which is not passed
			r.Error = "ssebench: " + err.Error()
		}
	}
	return r, nil
}

func envHas(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

func redactToken(args []string, token string) []string {
	if token == "" {
		return args
	}
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, token, "$TOKEN")
	}
	return out
}

// shellJoin quotes arguments for a command line a person can paste.
func shellJoin(args []string) string {
	parts := make([]string, len(args))
	for i, a := range args {
		if a != "" && !strings.ContainsAny(a, " \t\n\"'{}$*?;&|<>()\\") {
			parts[i] = a
			continue
		}
		parts[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(parts, " ")
}
