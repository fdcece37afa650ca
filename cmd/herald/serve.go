package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/server"
	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/redisstore"
	"github.com/herald-rt/herald/stream"
)

// keyFlags are the JWT settings shared by serve and token.
type keyFlags struct {
	secret, publicKey, privateKey, issuer, audience *string
}

func addKeyFlags(fs *flagSet) keyFlags {
	return keyFlags{
		secret:     fs.String("jwt-secret", "", "HS256 secret that signs tokens (at least 32 bytes)"),
		publicKey:  fs.String("jwt-public-key", "", "PEM public key file for RS256/ES256/EdDSA tokens"),
		privateKey: fs.String("jwt-private-key", "", "PEM private key file that \"herald token\" signs with (asymmetric keys)"),
		issuer:     fs.String("jwt-issuer", "", "required iss claim, if set"),
		audience:   fs.String("jwt-audience", "", "required aud claim, if set"),
	}
}

type serveConfig struct {
	addr, redisURL, redisPrefix, logLevel, adminAddr       *string
	redisCA, redisCert, redisKey                           *string
	redisCluster, redisSentinels, redisMaster, redisSentPw *string
	adminToken                                             *string
	socketSecret, configPath, clientEvents                 *string
	presenceTTL, webhookStale                              *time.Duration
	dev, metrics                                           *bool
	cors, trustedProxies                                   *[]string
	heartbeat, retry, writeTimeout, pollTimeout, pollMax   *time.Duration
	historyTTL, idempotencyTTL, shutdownTimeout, linger    *time.Duration
	drainPeriod, replicationTimeout, appendLinger          *time.Duration
	durability                                             *string
	bodyTimeout                                            *time.Duration
	maxBody, historySize, queueSize, pollLimit, pollLimMax *int
	maxHeader, sendBuffer, maxConns                        *int
	maxConnRate                                            *float64
	nodeTTL                                                *time.Duration
	tlsCert, tlsKey                                        *string
	h2c, sseCompression                                    *bool
	compressMin                                            *int
	keys                                                   keyFlags
}

func serve(args []string) error {
	fs := newFlagSet("serve", "herald serve — run the service")
	def, ret, hub := server.DefaultConfig(), store.DefaultRetention(), stream.DefaultOptions()
	cfg := serveConfig{
		addr:               fs.String("addr", "127.0.0.1:8081", "address to listen on"),
		tlsCert:            fs.String("tls-cert", "", "PEM certificate chain: serve HTTPS, HTTP/2 and HTTP/1.1, on --addr and --admin-addr (with --tls-key; reloaded when the files change or on SIGHUP)"),
		tlsKey:             fs.String("tls-key", "", "PEM private key of --tls-cert"),
		compressMin:        fs.Int("compress-min-bytes", def.CompressMinBytes, "long-poll and API answers of at least this many bytes are sent with gzip or brotli when the client accepts it; negative: never"),
		sseCompression:     fs.Bool("sse-compression", false, "send streams gzip-encoded to clients that accept it (about 6 µs of CPU per event per stream and 2 KB per stream, for a third of the bytes)"),
		h2c:                fs.Bool("h2c", false, "also serve HTTP/2 without TLS (prior knowledge), for a TLS-terminating proxy that speaks HTTP/2 to Herald"),
		dev:                fs.Bool("dev", false, "INSECURE development mode: generated key, printed token, pretty logs"),
		metrics:            fs.Bool("metrics", true, "keep Prometheus metrics and serve them at /metrics on the admin listener; false: count nothing"),
		redisURL:           fs.String("redis-url", "", "Redis URL: redis://[user:password@]host:port/db, or rediss:// for TLS; empty uses the embedded in-memory store"),
		redisCA:            fs.String("redis-ca", "", "with rediss://: PEM file of the CA that signed Redis's certificate (default: the system's roots)"),
		redisCert:          fs.String("redis-cert", "", "with rediss://: PEM file of a client certificate, for Redis that requires one (with --redis-key)"),
		redisKey:           fs.String("redis-key", "", "with rediss://: PEM file of the client certificate's key"),
		redisCluster:       fs.String("redis-cluster", "", "Redis Cluster seed nodes, host:port,host:port,…; the first may be a URL, redis[s]://[user:password@]host:port, whose scheme and login hold for every node (database 0 only)"),
		redisSentinels:     fs.String("redis-sentinels", "", "Sentinel addresses, host:port,…, to find the master named by --redis-master-name; the first may be a URL, redis[s]://[user:password@]host:port[/db], whose login and database are the master's"),
		redisMaster:        fs.String("redis-master-name", "", "with --redis-sentinels: the name the Sentinels monitor the master under"),
		redisSentPw:        fs.String("redis-sentinel-password", "", "with --redis-sentinels: the Sentinels' own password, when they require one"),
		durability:         fs.String("durability", "", "when a publish is acknowledged: memory (the embedded store; the default without Redis), redis (the append ran on the Redis master; the default with Redis) or replicated (a replica confirmed it too: survives losing the master); apps[].durability overrides it"),
		replicationTimeout: fs.Duration("replication-timeout", time.Second, "with durability replicated: how long a publish waits for a replica before it is answered 503 replication_timeout"),
		appendLinger:       fs.Duration("redis-append-linger", redisstore.DefaultAppendLinger, "with Redis: while publishes come from several clients at once, how long a batch of appends may wait for more before it goes to Redis (one round trip and one script call for them all); a lone publisher never waits; 0 sends each batch at once"),
		redisPrefix:        fs.String("redis-prefix", redisstore.DefaultPrefix, "prefix of every Redis key, so deployments can share one Redis"),
		cors:               fs.List("cors-origins", "origin allowed to call the API from a browser, repeatable; * for any (default: same-origin only)", true),
		trustedProxies:     fs.List("trusted-proxies", "address or CIDR range of a proxy in front (nginx, a load balancer) whose X-Forwarded-For names the client; repeatable, or comma-separated (default: none, the connection's address is the client's)", true),
		heartbeat:          fs.Duration("heartbeat", def.Heartbeat, "interval of the \": ping\" comment on idle streams"),
		retry:              fs.Duration("retry", def.Retry, "reconnect delay sent to EventSource clients"),
		writeTimeout:       fs.Duration("write-timeout", def.WriteTimeout, "a stream client that takes no data for this long is cut off"),
		pollTimeout:        fs.Duration("poll-timeout", def.PollTimeout, "default long-poll wait"),
		pollMax:            fs.Duration("poll-timeout-max", def.PollTimeoutMax, "longest long-poll wait a client may ask for"),
		pollLimit:          fs.Int("poll-limit", def.PollLimit, "default events per long-poll answer"),
		pollLimMax:         fs.Int("poll-limit-max", def.PollLimitMax, "most events per long-poll answer a client may ask for"),
		maxBody:            fs.Int("max-body-bytes", int(def.MaxBodyBytes), "largest request body"),
		bodyTimeout:        fs.Duration("body-timeout", def.BodyTimeout, "a request body must arrive in full within this long, or the connection is closed"),
		maxHeader:          fs.Int("max-header-bytes", def.MaxHeaderBytes, "largest request line and headers (431 over it)"),
		sendBuffer:         fs.Int("stream-send-buffer", def.StreamSendBuffer, "kernel send buffer of an SSE connection, bytes; -1 leaves it to the kernel"),
		historySize:        fs.Int("history-size", ret.MaxEvents, "events kept per channel for resuming"),
		historyTTL:         fs.Duration("history-ttl", ret.MaxAge, "how long events are kept for resuming"),
		idempotencyTTL:     fs.Duration("idempotency-ttl", ret.IdempotencyTTL, "how long Idempotency-Keys are remembered"),
		queueSize:          fs.Int("queue-size", hub.QueueSize, "live events a socket may have waiting before it is disconnected as too slow"),
		linger:             fs.Duration("linger", hub.Linger, "how long a channel stays listened to after its last subscriber leaves"),
		shutdownTimeout:    fs.Duration("shutdown-timeout", 10*time.Second, "after the drain, how long shutdown waits for requests in flight"),
		drainPeriod:        fs.Duration("drain-period", 10*time.Second, "on SIGTERM, end the open streams spread over this long, refusing new ones, before shutting down (0: at once); with --shutdown-timeout it fits a 30 s grace period"),
		logLevel:           fs.String("log-level", "info", "debug, info, warn or error"),
		configPath:         fs.String("config", "", "YAML file with apps (Pusher id/key/secret), channel rules and server API keys"),
		clientEvents:       fs.String("client-events", def.ClientEvents, "which channels accept whispers: members (private/presence subscribers), all, none"),
		presenceTTL:        fs.Duration("presence-ttl", def.PresenceTTL, "a node that stops refreshing its presence members loses them after this long"),
		webhookStale:       fs.Duration("webhook-stale", store.DefaultHookStale, "a batch of webhook events a node claimed and stopped delivering (it died) goes to another node after this long; keep it over 20 s, the longest wait between retries, or a batch being retried is sent by two nodes"),
		nodeTTL:            fs.Duration("node-ttl", def.NodeTTL, "a node that stops renewing its registry entry vanishes from the deployment's view after this long"),
		maxConnRate:        fs.Float64("max-conn-rate", 0, "most new connections (streams, long-poll sockets, polls) one client address may open a second, in bursts of a second's worth (429 rate_limited beyond); 0: no limit"),
		maxConns:           fs.Int("max-connections", def.MaxConnections, "most open streams, long-poll sockets and waiting polls on this node (503 over_capacity beyond); 0: no limit"),
		socketSecret:       fs.String("socket-secret", "", "key that signs socket tokens, the same on every node (default: derived from --jwt-secret)"),
		adminAddr:          fs.String("admin-addr", "127.0.0.1:8082", "address of the admin listener (admin API, /metrics, /console, /debug/pprof); empty disables it"),
		adminToken:         fs.String("admin-token", "", "token the admin listener requires (Authorization: Bearer); required when --admin-addr is not loopback"),
		keys:               addKeyFlags(fs),
	}
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}

	log := newLogger(*cfg.dev, *cfg.logLevel)
	secret := []byte(*cfg.keys.secret)
	if *cfg.dev {
		log.Warn().Msg("DEV MODE: insecure settings for local development only — do not expose this server")
		if len(secret) == 0 && *cfg.keys.publicKey == "" {
			secret = randomSecret()
			log.Warn().Msg("DEV MODE: generated a throwaway JWT secret; tokens die with this process")
		}
	}
	az, err := loadAuthz(*cfg.configPath)
	if err != nil {
		return err
	}
	authCfg := authConfig(secret, cfg.keys, az)
	auth, err := server.NewAuthenticator(authCfg)
	if err != nil {
		if len(secret) == 0 && *cfg.keys.publicKey == "" && len(authCfg.AppKeys) == 0 {
			return errors.New("refusing to start without a JWT key: set --jwt-secret (HERALD_JWT_SECRET) or --jwt-public-key (HERALD_JWT_PUBLIC_KEY), or run with --dev for a throwaway key")
		}
		return err
	}

	sockSecret := []byte(*cfg.socketSecret)
	switch {
	case len(sockSecret) > 0:
	case len(secret) > 0:
		sockSecret = server.DeriveSocketSecret(secret)
	case *cfg.dev:
		sockSecret = randomSecret()
	default:
		return errors.New("without --jwt-secret, set --socket-secret (HERALD_SOCKET_SECRET): the key that signs socket tokens, the same on every node")
	}

	adminToken := *cfg.adminToken
	if *cfg.adminAddr != "" && adminToken == "" {
		switch {
		case *cfg.dev:
			adminToken = hex.EncodeToString(randomSecret()[:16])
		case !isLoopback(*cfg.adminAddr):
			return fmt.Errorf("refusing to serve the admin listener on %s without a token: set --admin-token (HERALD_ADMIN_TOKEN), or keep --admin-addr on loopback", *cfg.adminAddr)
		}
	}
	var cert *server.Certificate
	switch {
	case (*cfg.tlsCert == "") != (*cfg.tlsKey == ""):
		return errors.New("--tls-cert and --tls-key go together")
	case *cfg.tlsCert != "":
		if cert, err = server.LoadCertificate(*cfg.tlsCert, *cfg.tlsKey); err != nil {
			return err
		}
	}
	var adminLn net.Listener
	if *cfg.adminAddr != "" {
		adminLn, err = net.Listen("tcp", *cfg.adminAddr)
		if err != nil {
			return fmt.Errorf("--admin-addr: %w", err)
		}
		defer adminLn.Close()
	}

	// In --dev the console may mint tokens, signed with the dev key; never otherwise.
	var devMinter *server.Minter
	if *cfg.dev && len(secret) > 0 {
		if devMinter, err = server.NewMinter(secret, ""); err != nil {
			return err
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ret = store.Retention{MaxEvents: *cfg.historySize, MaxAge: *cfg.historyTTL, IdempotencyTTL: *cfg.idempotencyTTL}
	var metrics *server.Metrics
	if *cfg.metrics {
		metrics = server.NewMetrics(version)
	}
	apps, closeApps, err := openApps(ctx, backend{
		redis: redisTarget{url: *cfg.redisURL, cluster: *cfg.redisCluster, sentinels: *cfg.redisSentinels,
			masterName: *cfg.redisMaster, sentinelPassword: *cfg.redisSentPw,
			tls: redisTLSFiles{ca: *cfg.redisCA, cert: *cfg.redisCert, key: *cfg.redisKey}},
		prefix: *cfg.redisPrefix, retention: ret,
		durability: *cfg.durability, waitReplicas: *cfg.replicationTimeout, appendLinger: *cfg.appendLinger,
		hub:         stream.Options{QueueSize: *cfg.queueSize, Linger: *cfg.linger},
		presenceTTL: *cfg.presenceTTL, webhookStale: *cfg.webhookStale, log: log, metrics: metrics,
	}, az)
	if err != nil {
		return err
	}
	defer closeApps()

	// Both listeners are open before the server is built: it registers itself in the
	// deployment's registry with their actual addresses.
	ln, err := net.Listen("tcp", *cfg.addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	trusted, err := server.ParseTrustedProxies(*cfg.trustedProxies)
	if err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	srv := server.New(server.Config{
		Addr:             ln.Addr().String(),
		Auth:             auth,
		DevMinter:        devMinter,
		CORSOrigins:      *cfg.cors,
		TrustedProxies:   trusted,
		Heartbeat:        *cfg.heartbeat,
		Retry:            *cfg.retry,
		WriteTimeout:     *cfg.writeTimeout,
		MaxBodyBytes:     int64(*cfg.maxBody),
		BodyTimeout:      *cfg.bodyTimeout,
		MaxHeaderBytes:   *cfg.maxHeader,
		StreamSendBuffer: *cfg.sendBuffer,
		PollTimeout:      *cfg.pollTimeout,
		PollTimeoutMax:   *cfg.pollMax,
		PollLimit:        *cfg.pollLimit,
		PollLimitMax:     *cfg.pollLimMax,
		HistorySize:      *cfg.historySize,
		Version:          version,
		SocketSecret:     sockSecret,
		Apps:             apps,
		Authz:            az,
		ClientEvents:     *cfg.clientEvents,
		PresenceTTL:      *cfg.presenceTTL,
		NodeTTL:          *cfg.nodeTTL,
		MaxConnections:   *cfg.maxConns,
		MaxConnRate:      *cfg.maxConnRate,
		AdminAddr:        addrOf(adminLn),
		AdminToken:       adminToken,
		Metrics:          metrics,
		TLS:              tlsConfig(cert),
		H2C:              *cfg.h2c,
		CompressMinBytes: *cfg.compressMin,
		SSECompression:   *cfg.sseCompression,
	}, log)
	if cert != nil {
		go cert.Watch(ctx, certCheckInterval, log)
	}
	go reloadOnHangup(ctx, cert, log)

	log.Info().Str("addr", ln.Addr().String()).Str("protocols", protocols(cert != nil, *cfg.h2c)).Str("store", apps[0].Hub.Store().Kind()).Int("apps", len(apps)).Str("version", version).
		Uint64("max_open_files", raiseFileLimit()).Msg("herald listening")
	if adminLn != nil {
		ev := log.Info()
		if adminToken == "" {
			ev = log.Warn().Str("admin_token", "none")
		}
		ev.Str("addr", adminLn.Addr().String()).Msg("admin listener: /admin, /metrics, /console, /debug/pprof")
		admin := &http.Server{Handler: srv.AdminHandler(), ReadHeaderTimeout: 10 * time.Second, TLSConfig: tlsConfig(cert)}
		go func() {
			serve := admin.Serve
			if cert != nil {
				serve = func(ln net.Listener) error { return admin.ServeTLS(ln, "", "") }
			}
			if err := serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				log.Error().Err(err).Msg("admin listener")
			}
		}()
		defer admin.Close()
	}
	if *cfg.dev {
		printDevHelp(secret, ln.Addr().String(), addrOf(adminLn), adminToken, cert != nil)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	if *cfg.drainPeriod > 0 {
		log.Info().Dur("period", *cfg.drainPeriod).Msg("draining: out of the registry, /v1/ready 503, streams ended spread over the period")
		// A second signal during the drain cuts it short.
		dctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		dctx, cancelTimeout := context.WithTimeout(dctx, *cfg.drainPeriod+time.Second)
		srv.Drain(dctx, *cfg.drainPeriod)
		cancelTimeout()
		cancel()
	}
	log.Info().Msg("shutting down: ending what is left and waiting for requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), *cfg.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("shutdown")
	}
	return <-errc
}

// authConfig gathers the token keys: the deployment's, and those of apps with their own.
func authConfig(secret []byte, keys keyFlags, az *authz.Config) server.AuthConfig {
	cfg := server.AuthConfig{Secret: secret, PublicKeyFile: *keys.publicKey, Issuer: *keys.issuer, Audience: *keys.audience,
		DefaultApp: "default"}
	if def := az.DefaultApp(); def != nil {
		cfg.DefaultApp = def.ID
	}
	for _, a := range az.Apps() {
		if !a.HasOwnJWTKey() {
			continue
		}
		if cfg.AppKeys == nil {
			cfg.AppKeys = make(map[string]server.TokenKey)
		}
		cfg.AppKeys[a.ID] = server.TokenKey{Secret: a.JWTSecret(), PublicKeyFile: a.JWTPublicKeyFile}
	}
	return cfg
}

func newLogger(dev bool, level string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	var log zerolog.Logger
	if dev {
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05"})
	} else {
		log = zerolog.New(os.Stderr)
	}
	return log.Level(lvl).With().Timestamp().Logger()
}

func randomSecret() []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return []byte(hex.EncodeToString(b))
}

// isLoopback reports whether a listen address is on loopback only (an empty host is every
// interface).
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// printDevHelp prints a ready token and copy-paste curl lines for the dev server.
func printDevHelp(secret []byte, addr, adminAddr, adminToken string, tls bool) {
	if len(secret) == 0 {
		return
	}
	m, err := server.NewMinter(secret, "")
	if err != nil {
		return
	}
	tok, err := m.Mint(server.TokenSpec{Subject: "dev", Subscribe: []string{"*"}, Publish: []string{"*"}, TTL: 24 * time.Hour})
	if err != nil {
		return
	}
	scheme, curl := "http", "curl"
	if tls {
		// The dev certificate is often self-signed: curl then needs --cacert (or -k).
		scheme, curl = "https", "curl --http2"
	}
	base := scheme + "://" + addr
	var b strings.Builder
	fmt.Fprintf(&b, "\nHerald dev server on %s (in-memory unless --redis-url is set)\n\n", base)
	fmt.Fprintf(&b, "Dev token (24h, may subscribe and publish anywhere):\n  export HERALD_TOKEN=%s\n\n", tok)
	fmt.Fprintf(&b, "Subscribe (SSE):\n  %s -N %s/v1/channels/demo/events\n\n", curl, base)
	fmt.Fprintf(&b, "Publish:\n  %s -X POST %s/v1/channels/demo/events -H \"Authorization: Bearer $HERALD_TOKEN\" -H 'Content-Type: application/json' -d '{\"event\":\"MessageSent\",\"data\":{\"text\":\"hello\"}}'\n\n", curl, base)
	fmt.Fprintf(&b, "Long-poll (history from the beginning, then wait up to 25 s):\n  %s '%s/v1/channels/demo/poll?since=beginning'\n\n", curl, base)
	if adminAddr != "" {
		fmt.Fprintf(&b, "Debug console:\n  %s://%s/console?token=%s\n\n", scheme, adminAddr, adminToken)
		fmt.Fprintf(&b, "Admin API and metrics:\n  %s -H 'Authorization: Bearer %s' %s://%s/admin/nodes\n\n", curl, adminToken, scheme, adminAddr)
	}
	os.Stdout.WriteString(b.String())
}
