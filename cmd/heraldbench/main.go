// Command heraldbench is Herald's own load generator and correctness
// checker. It opens thousands of SSE subscriptions on the loopback
// interface, publishes numbered messages over HTTP at a fixed rate, and
// reports delivery (lost, duplicated, reordered), publish-to-deliver
// latency, and the server's memory and CPU use, for the five scenarios of
// docs/benchmarks.md. With -herald it starts a fresh Herald server (and
// Redis) for every scenario by itself. Run it with -h for the flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ", ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

const usageText = `heraldbench: load generator and correctness checker for Herald (loopback only)

Against a running server (figures need -server-pid):
  heraldbench -base http://127.0.0.1:8080 -token JWT -server-pid PID -scenario S2

Starting a fresh Herald (and Redis) for every scenario and store:
  heraldbench -herald ./bin/herald -store both -scenario S1,S2,S3,S4,S5 [-ssebench PATH] [-minimal PATH] [-centrifugo PATH]

Scenarios (benchmarks.md; flags given explicitly override them):
%s
Modes of a custom run (-mode, without -scenario):
  fanout   connect -conns subscribers over -channels, settle, publish -rate msg/s
           for -duration, drain: delivery, latency, server CPU per delivery
  idle     connect and hold for -duration: server memory per connection
  publish  publish only: publishes/s, request latency, publishes per CPU-second

Protocols: the subscribers speak HTTP/1.1 (-proto h1, over TLS with -tls),
HTTP/2 over TLS (h2) or HTTP/2 without TLS (h2c), -streams-per-conn streams
to a connection; publishing stays HTTP/1.1. With -herald the servers get a
certificate made for the command (ECDSA P-256, trusted by this process only);
against a running server give -tls-ca. -server-admin (set by itself with
-herald) adds the server's Go heap, stacks and goroutines per connection.

Templates: -sub-url and -pub-url take {base}, {channel}, {channel_q} (query-
escaped); -pub-body takes {channel}, {channel_q} and {payload}, the JSON
payload {"seq":N,"ch":"<channel>","t":<unix ns>,"pad":"xx.."}.

Output: a summary per run on stderr, one JSON line per run on stdout, and a
markdown table of all runs on stderr at the end (and in -md FILE).

Flags:
`

// options is the command line beyond one run's configuration.
type options struct {
	scenarios string
	strict    bool
	mdFile    string

	herald       string
	store        string
	nodes        int
	redisURL     string
	redisServer  string
	ssebench     string
	minimal      string
	centrifugo   string
	jwtSecret    string
	heraldArgs   listFlag
	heraldEnv    listFlag
	startTimeout time.Duration
	tlsCA        string
	rounds       int
}

// flagFields maps a flag name to copying its field, so that flags given on
// the command line can be laid over a scenario's values.
var flagFields = map[string]func(dst, src *runConfig){
	"mode":            func(d, s *runConfig) { d.Mode = s.Mode },
	"conns":           func(d, s *runConfig) { d.Conns = s.Conns },
	"channels":        func(d, s *runConfig) { d.Channels = s.Channels },
	"rate":            func(d, s *runConfig) { d.Rate = s.Rate },
	"duration":        func(d, s *runConfig) { d.Duration = s.Duration },
	"pub-workers":     func(d, s *runConfig) { d.PubWorkers = s.PubWorkers },
	"msg-size":        func(d, s *runConfig) { d.MsgSize = s.MsgSize },
	"settle":          func(d, s *runConfig) { d.Settle = s.Settle },
	"drain":           func(d, s *runConfig) { d.Drain = s.Drain },
	"ramp-rate":       func(d, s *runConfig) { d.RampRate = s.RampRate },
	"max-pending":     func(d, s *runConfig) { d.MaxPending = s.MaxPending },
	"connect-timeout": func(d, s *runConfig) { d.ConnectTimeout = s.ConnectTimeout },
	"pub-timeout":     func(d, s *runConfig) { d.PubTimeout = s.PubTimeout },
	"src-ips":         func(d, s *runConfig) { d.SrcIPs = s.SrcIPs },
}

func newFlagSet(cfg *runConfig, o *options, subH, pubH *listFlag, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("heraldbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		var sc strings.Builder
		for _, s := range scenarios {
			fmt.Fprintf(&sc, "  %s  %s\n", s.id, s.what)
		}
		fmt.Fprintf(fs.Output(), usageText, sc.String())
		fs.PrintDefaults()
	}
	fs.StringVar(&o.scenarios, "scenario", "", "comma-separated scenarios S1..S5 (empty: one custom run from the flags)")
	fs.StringVar(&cfg.Mode, "mode", cfg.Mode, "custom run: fanout, idle or publish")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "subscriber connections; connection i subscribes to channel i % channels")
	fs.IntVar(&cfg.Channels, "channels", cfg.Channels, "channels, named -channel-prefix + index")
	fs.StringVar(&cfg.ChannelPrefix, "channel-prefix", cfg.ChannelPrefix, "channel name prefix")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "messages per second in total, spread evenly over the channels")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "publish (idle mode: hold) for this long")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "wait after connecting, before the idle memory reading and publishing")
	fs.DurationVar(&cfg.Drain, "drain", cfg.Drain, "after publishing, wait up to this long for messages on their way")
	fs.IntVar(&cfg.PubWorkers, "pub-workers", cfg.PubWorkers, "keep-alive publish workers; channel c belongs to worker c % workers")
	fs.IntVar(&cfg.MsgSize, "msg-size", cfg.MsgSize, "payload size in bytes (padded JSON)")
	fs.Float64Var(&cfg.RampRate, "ramp-rate", cfg.RampRate, "new connections per second")
	fs.IntVar(&cfg.MaxPending, "max-pending", cfg.MaxPending, "connection attempts in flight at once")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", cfg.ConnectTimeout, "limit for dial, response head and ready event")
	fs.DurationVar(&cfg.PubTimeout, "pub-timeout", cfg.PubTimeout, "limit for one publish request")
	fs.IntVar(&cfg.SrcIPs, "src-ips", cfg.SrcIPs, "spread connections over source addresses 127.0.0.1..127.0.0.N (0: system's choice)")
	fs.IntVar(&cfg.ReadBuf, "read-buf", cfg.ReadBuf, "read buffer bytes (pooled: held only while a socket has data)")
	fs.StringVar(&cfg.Proto, "proto", cfg.Proto, "what the subscribers speak: h1 (HTTP/1.1), h2 (HTTP/2 over TLS) or h2c (HTTP/2 without TLS); publishing stays HTTP/1.1")
	fs.BoolVar(&cfg.TLS, "tls", false, "with -proto h1: HTTP/1.1 over TLS (https URLs; with -herald, a certificate made for the run)")
	fs.IntVar(&cfg.StreamsPerConn, "streams-per-conn", cfg.StreamsPerConn, "HTTP/2: this many streams share one connection (streams i*N..i*N+N-1)")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "without -herald: PEM certificates to trust for https URLs")
	fs.StringVar(&cfg.AdminURL, "server-admin", "", "the server's admin listener base URL (loopback): its Go heap, stacks and goroutines per connection, from /debug/pprof (with -herald: set by itself)")
	fs.StringVar(&cfg.ProfileDir, "server-profile", "", "write the server's heap and goroutine profiles after settle into this folder (needs the admin listener)")
	fs.StringVar(&cfg.Base, "base", cfg.Base, "server base URL, for {base} in the URL templates (loopback only)")
	fs.StringVar(&cfg.SubURL, "sub-url", cfg.SubURL, "subscribe URL template (GET, text/event-stream)")
	fs.StringVar(&cfg.PubURL, "pub-url", cfg.PubURL, "publish URL template (POST)")
	fs.StringVar(&cfg.PubBody, "pub-body", cfg.PubBody, "publish body template")
	fs.Var(subH, "sub-header", "subscribe request header 'Name: value' (repeatable)")
	fs.Var(pubH, "pub-header", "publish request header 'Name: value' (repeatable)")
	fs.StringVar(&cfg.Token, "token", "", "JWT for publishing (Authorization: Bearer); with -herald, minted by 'herald token' when empty")
	fs.StringVar(&cfg.ReadyEvent, "ready-event", cfg.ReadyEvent, "a subscriber is ready (owed messages) once it gets this event; empty: at the response head")
	fs.StringVar(&cfg.ExpectEvent, "expect-event", cfg.ExpectEvent, "event name every delivered message must carry (empty: no check)")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "server process id, for its memory and CPU from /proc")
	fs.IntVar(&cfg.RedisPID, "redis-pid", 0, "redis-server process id, for its CPU")
	fs.DurationVar(&cfg.Progress, "progress", cfg.Progress, "progress line on stderr this often (0: never)")
	fs.BoolVar(&o.strict, "strict", false, "exit 1 when any run lost, duplicated, reordered or misrouted a message, or saw errors")
	fs.StringVar(&o.mdFile, "md", "", "also write the markdown table of figures to this file")

	fs.StringVar(&o.herald, "herald", "", "path of the herald binary: start a fresh server for every scenario and store")
	fs.StringVar(&o.store, "store", "memory", "with -herald: memory, redis, cluster (a 3-master Redis Cluster), both (memory,redis), or a comma list")
	fs.IntVar(&o.nodes, "nodes", 1, "with -herald and a Redis store: start this many herald nodes on it; subscribers spread over them evenly (connection i on node (i / channels) % nodes), publishes go to the first, CPU is summed over all")
	fs.StringVar(&o.redisURL, "redis-url", "", "with -herald: use this Redis (loopback) instead of starting redis-server")
	fs.StringVar(&o.redisServer, "redis-server", "redis-server", "redis-server binary to start for the redis store")
	fs.StringVar(&o.minimal, "minimal", "", "with -herald: also run every scenario on ssebench's minimal SSE server (its cmd/testserver built at this path), as the row of store \"minimal\": the yardstick of issue 13's goals")
	fs.StringVar(&o.centrifugo, "centrifugo", "", "with -herald: also run every scenario on Centrifugo v6 (the binary at this path), as the rows of store \"centrifugo\" (its memory engine, beside -store memory) and \"centrifugo-redis\" (its Redis engine on a private redis-server, beside -store redis): the peer issue 13's goals are stated against")
	fs.StringVar(&o.ssebench, "ssebench", "", "with -herald: also run the reference ssebench binary at this path, on a fresh server, per scenario and store")
	fs.StringVar(&o.jwtSecret, "jwt-secret", "", "with -herald: HS256 secret for the servers (default: random)")
	fs.Var(&o.heraldArgs, "herald-arg", "with -herald: extra argument for 'herald serve' (repeatable)")
	fs.Var(&o.heraldEnv, "herald-env", "with -herald: extra KEY=VALUE environment for herald (repeatable)")
	fs.DurationVar(&o.startTimeout, "start-timeout", 20*time.Second, "with -herald: limit for a server to answer GET /v1/health")
	fs.IntVar(&o.rounds, "rounds", 1, "with -herald: run each scenario this many times (1 to 20), every store once per round, so that noise between runs is measured rather than guessed; the goals table gives the median of the rounds' figures")
	return fs
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain runs the command and returns its exit status: 0, 1 (strict check
// failed), 2 (usage or run error).
func realMain(args []string, stdout, stderr io.Writer) int {
	cfg := defaultConfig()
	var o options
	var subH, pubH listFlag
	fs := newFlagSet(&cfg, &o, &subH, &pubH, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "heraldbench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg.SubHeaders, cfg.PubHeaders = subH, pubH
	if o.tlsCA != "" {
		if o.herald != "" {
			fmt.Fprintln(stderr, "heraldbench: -tls-ca is for a running server; with -herald the servers get a certificate made for the run")
			return 2
		}
		roots, err := loadRoots(o.tlsCA)
		if err != nil {
			fmt.Fprintln(stderr, "heraldbench: -tls-ca:", err)
			return 2
		}
		cfg.RootCAs = roots
	}
	if o.herald != "" && (o.ssebench != "" || o.minimal != "" || o.centrifugo != "") && (cfg.Proto != protoH1 || cfg.TLS) {
		fmt.Fprintln(stderr, "heraldbench: ssebench, the minimal server and the Centrifugo rows are plain HTTP/1.1 only: leave out -ssebench, -minimal and -centrifugo with -proto h2, h2c or -tls")
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	explicit := cfg
	override := func(c *runConfig) {
		for name, copyField := range flagFields {
			if set[name] {
				copyField(c, &explicit)
			}
		}
	}
	ids, err := parseScenarioList(o.scenarios)
	if err != nil {
		fmt.Fprintln(stderr, "heraldbench:", err)
		return 2
	}
	var runs []runConfig
	for _, id := range ids {
		c := configFor(id, cfg, override)
		if err := c.validate(); err != nil {
			fmt.Fprintf(stderr, "heraldbench: %s: %v\n", id, err)
			return 2
		}
		runs = append(runs, c)
	}

	var rows []*result
	var runErr error
	if o.herald != "" {
		orc, err := newOrchestrator(&o, set, stdout, stderr)
		if err != nil {
			fmt.Fprintln(stderr, "heraldbench:", err)
			return 2
		}
		stop := startWatchdog(orc.timeLimit(runs), stderr)
		defer stop()
		rows, runErr = orc.runAll(runs, cfg.Token)
	} else {
		// Check every target before anything is sent.
		for _, c := range runs {
			if _, err := newRunner(c, io.Discard); err != nil {
				fmt.Fprintf(stderr, "heraldbench: %s: %v\n", c.Scenario, err)
				return 2
			}
		}
		var limit time.Duration
		for _, c := range runs {
			limit += c.maxRunTime()
		}
		stop := startWatchdog(limit, stderr)
		defer stop()
		if len(runs) > 1 && cfg.ServerPID > 0 {
			fmt.Fprintln(stderr, "heraldbench: note: runs share one server; bytes per connection is only right for the first (use -herald for a fresh server per scenario)")
		}
		for _, c := range runs {
			res, err := runOnce(c, stderr)
			if err != nil {
				runErr = fmt.Errorf("%s: %w", c.Scenario, err)
				break
			}
			writeSummary(stderr, res)
			if err := writeJSONLine(stdout, res); err != nil {
				runErr = err
				break
			}
			rows = append(rows, res)
		}
	}
	if len(rows) > 0 {
		fmt.Fprintln(stderr)
		writeTable(stderr, rows)
		writeGoals(stderr, rows)
		if o.mdFile != "" {
			f, err := os.Create(o.mdFile)
			if err == nil {
				writeTable(f, rows)
				writeGoals(f, rows)
				err = f.Close()
			}
			if err != nil {
				fmt.Fprintln(stderr, "heraldbench:", err)
			}
		}
	}
	if runErr != nil {
		fmt.Fprintln(stderr, "heraldbench:", runErr)
		return 2
	}
	if o.strict {
		var bad []string
		for _, r := range rows {
			if p := r.problems(); len(p) > 0 {
				bad = append(bad, r.Tool+" "+r.Scenario+" "+r.Store+": "+strings.Join(p, ", "))
			}
		}
		if len(bad) > 0 {
			fmt.Fprintln(stderr, "heraldbench: strict check failed:\n  "+strings.Join(bad, "\n  "))
			return 1
		}
	}
	return 0
}

// startWatchdog ends the process, after stopping every child it started,
// if the whole command runs longer than limit; it also does so on SIGINT
// and SIGTERM. The returned function disarms it.
func startWatchdog(limit time.Duration, stderr io.Writer) (stop func()) {
	t := time.AfterFunc(limit, func() {
		fmt.Fprintf(stderr, "heraldbench: run exceeded its time limit of %v; stopping\n", limit.Round(time.Second))
		killChildren()
		os.Exit(3)
	})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	quit := make(chan struct{})
	go func() {
		select {
		case s := <-sig:
			fmt.Fprintf(stderr, "heraldbench: %v: stopping\n", s)
			killChildren()
			os.Exit(130)
		case <-quit:
		}
	}()
	return func() {
		t.Stop()
		signal.Stop(sig)
		close(quit)
	}
}
