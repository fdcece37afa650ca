// Package server is Herald's HTTP layer: the v1 API's routes on Echo, authentication, JSON
// errors, and the two transports that turn a stream.Socket into bytes on the wire — Server-Sent
// Events and long-poll. It owns no event state: ordering, fan-out and history belong to package
// stream and the store behind it.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/stream"
)

// Config is the HTTP layer's settings. Zero fields take the defaults of WithDefaults.
type Config struct {
	// Auth verifies tokens; nil refuses every request that needs one.
	Auth *Authenticator
	// CORSOrigins may call the API from a browser; empty means same-origin only, "*" any.
	CORSOrigins []string
	// Heartbeat is the interval of `: ping` comments on idle streams. Default 15s.
	Heartbeat time.Duration
	// Retry is the reconnect delay a stream tells EventSource. Default 2s.
	Retry time.Duration
	// WriteTimeout cuts off a client that does not take a frame for this long. Default 15s.
	WriteTimeout time.Duration
	// MaxBodyBytes limits request bodies. Default 64 KiB.
	MaxBodyBytes int64
	// BodyTimeout is how long a request body may take to arrive in full. Default 10s.
	BodyTimeout time.Duration
	// MaxHeaderBytes limits a request's line and headers; net/http answers 431 over it.
	// Default 64 KiB.
	MaxHeaderBytes int
	// StreamSendBuffer is the kernel send buffer of an SSE connection (SO_SNDBUF); negative
	// leaves it to the kernel's autotuning. Default 128 KiB.
	StreamSendBuffer int
	// PollTimeout is the default long-poll wait; PollTimeoutMax the largest a client may ask.
	// Defaults 25s and 60s.
	PollTimeout    time.Duration
	PollTimeoutMax time.Duration
	// PollLimit is the default number of events per poll answer; PollLimitMax the largest.
	// Defaults 100 and 1000.
	PollLimit    int
	PollLimitMax int
	// HistorySize is advertised in /v1/config.
	HistorySize int
	// SocketSecret signs socket tokens; every node of a deployment needs the same one.
	SocketSecret []byte
	// SocketTimeout closes a long-poll socket nobody polled for this long. Default twice
	// PollTimeout.
	SocketTimeout time.Duration
	// Apps are the tenants served; the first is the default app. At least one.
	Apps []*App
	// Authz holds channel rules and server API keys from the config file; nil for none.
	Authz *authz.Config
	// ClientEvents says which channels accept whispers: ClientEventsMembers (default),
	// ClientEventsAll or ClientEventsNone.
	ClientEvents string
	// WhisperRate is how many client events a socket may send per second. Default 10.
	WhisperRate float64
	// PresenceTTL is the lease of a presence membership; the node renews its members every
	// third of it. It must match the presence stores'. Default 60s.
	PresenceTTL time.Duration
	// Version is advertised in /v1/config.
	Version string
	// NodeTTL is the node's lease in the deployment's registry: a node that dies vanishes
	// from every node's view within it. Default store.DefaultNodeTTL.
	NodeTTL time.Duration
	// Addr and AdminAddr are the API's and the admin listener's addresses, advertised in the
	// registry.
	Addr, AdminAddr string
	// AdminToken, when set, is required on every request to the admin listener.
	AdminToken string
	// DevMinter lets the debug console mint tokens (POST /admin/dev/token). herald serve sets it
	// in --dev only; nil answers that route 404.
	DevMinter *Minter
	// MaxConnections bounds the node's open connections (streams, long-poll sockets, waiting
	// polls); more are refused with 503 over_capacity. 0: no limit.
	MaxConnections int
	// MaxConnRate bounds how many connections one client address may open a second (in
	// bursts of a second's worth); more are refused with 429 rate_limited. 0: no limit.
	MaxConnRate float64
	// Metrics, when set, are kept and served at /metrics on the admin listener. Nil: none.
	Metrics *Metrics
	// TrustedProxies are the addresses of the proxies in front (nginx, a load balancer): a
	// request coming from one of them is from the client X-Forwarded-For names — the last
	// address in it that is not itself a trusted proxy. Empty: the connection's own address,
	// whatever the headers say (a client could otherwise pick any address, and with it the
	// per-address rate limit it falls under).
	TrustedProxies []*net.IPNet
	// CompressMinBytes is the smallest answer compressed (brotli or gzip, as the client's
	// Accept-Encoding allows); SSE streams are never compressed by it. Negative: no
	// compression. Default 1024.
	CompressMinBytes int
	// SSECompression sends streams gzip-compressed to clients that accept gzip, flushed per
	// batch of events. Off by default: it costs CPU per batch and about 2 KB per stream.
	SSECompression bool
	// TLS, when set, makes Serve speak TLS, offering HTTP/2 and HTTP/1.1 (Certificate.TLSConfig).
	TLS *tls.Config
	// H2C serves HTTP/2 without TLS, with prior knowledge, beside HTTP/1.1: for a proxy in front
	// that terminates TLS and speaks HTTP/2 to its backends. Never for browsers, which speak
	// HTTP/2 only over TLS.
	H2C bool
}

// DefaultConfig holds the default of every setting that has one; `herald serve`'s flags take
// theirs from it. SocketTimeout's default is twice PollTimeout, whatever that is.
func DefaultConfig() Config {
	return Config{
		Heartbeat:        15 * time.Second,
		Retry:            2 * time.Second,
		WriteTimeout:     15 * time.Second,
		MaxBodyBytes:     64 << 10,
		BodyTimeout:      10 * time.Second,
		MaxHeaderBytes:   64 << 10,
		StreamSendBuffer: 128 << 10,
		PollTimeout:      25 * time.Second,
		PollTimeoutMax:   60 * time.Second,
		PollLimit:        100,
		PollLimitMax:     1000,
		ClientEvents:     ClientEventsMembers,
		WhisperRate:      float64(authz.DefaultLimits().ClientEventsPerSecond),
		PresenceTTL:      store.DefaultPresenceTTL,
		NodeTTL:          store.DefaultNodeTTL,
		CompressMinBytes: 1024,
	}
}

// WithDefaults returns c with its zero (or negative) fields set to DefaultConfig's.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	orDefault(&c.Heartbeat, d.Heartbeat)
	orDefault(&c.Retry, d.Retry)
	orDefault(&c.WriteTimeout, d.WriteTimeout)
	orDefault(&c.MaxBodyBytes, d.MaxBodyBytes)
	orDefault(&c.BodyTimeout, d.BodyTimeout)
	orDefault(&c.MaxHeaderBytes, d.MaxHeaderBytes)
	if c.StreamSendBuffer == 0 {
		c.StreamSendBuffer = d.StreamSendBuffer
	}
	orDefault(&c.PollTimeout, d.PollTimeout)
	orDefault(&c.PollTimeoutMax, d.PollTimeoutMax)
	orDefault(&c.PollLimit, d.PollLimit)
	orDefault(&c.PollLimitMax, d.PollLimitMax)
	orDefault(&c.SocketTimeout, 2*c.PollTimeout)
	orDefault(&c.PresenceTTL, d.PresenceTTL)
	orDefault(&c.NodeTTL, d.NodeTTL)
	if c.WhisperRate == 0 { // negative: no limit
		c.WhisperRate = d.WhisperRate
	}
	if c.ClientEvents == "" {
		c.ClientEvents = d.ClientEvents
	}
	if c.CompressMinBytes == 0 { // negative: no compression
		c.CompressMinBytes = d.CompressMinBytes
	}
	return c
}

// orDefault sets *v to def when it is zero or negative.
func orDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Server serves the v1 API (and the Pusher HTTP API) for its apps.
type Server struct {
	cfg   Config
	log   zerolog.Logger
	echo  *echo.Echo
	admin *echo.Echo // the admin listener's routes (AdminHandler)
	http  *http.Server
	// streams counts SSE streams served outside their handler (hijacked connections), which
	// http.Server.Shutdown does not wait for.
	streams sync.WaitGroup

	apps       apps
	sockTokens socketTokens
	sessions   sessions
	census     census
	self       nodeSelf
	// unregister takes the node out of the registry (at a drain's start, or at shutdown).
	unregister context.CancelFunc

	stop     context.CancelFunc // ends the background work started by New
	stopCtx  context.Context
	janitor  sync.WaitGroup
	stopOnce sync.Once
}

// New returns a Server for cfg.Apps, which must not be empty.
func New(cfg Config, log zerolog.Logger) *Server {
	if len(cfg.Apps) == 0 {
		panic("server.New: no apps")
	}
	s := &Server{cfg: cfg.WithDefaults(), log: log, apps: cfg.Apps, self: nodeSelf{started: time.Now()}}
	for _, a := range s.apps {
		if a.Registry == nil {
			// On its own, the node is the whole deployment.
			a.Registry = memstore.NewRegistry(memstore.RegistryOptions{})
		}
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.registerApp(a)
		}
	}
	s.sockTokens = socketTokens{key: s.cfg.SocketSecret}
	s.census.max = int64(max(s.cfg.MaxConnections, 0))
	s.census.rate = newAddrRate(s.cfg.MaxConnRate)
	s.stopCtx, s.stop = context.WithCancel(context.Background())
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.writeError
	e.IPExtractor = clientIP(s.cfg.TrustedProxies)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true}))
	e.Use(s.accessLog)
	e.Use(s.guardBody)
	if s.corsEnabled() {
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{
			// The deployment's origins and every app's; each request is then held to its own
			// app's (checkOrigin).
			AllowOriginFunc: func(origin string) (bool, error) { return s.corsAllowed(origin), nil },
			AllowMethods:    []string{http.MethodGet, http.MethodPost, http.MethodDelete, http.MethodOptions},
			AllowHeaders:    []string{"Authorization", "Content-Type", "Last-Event-ID", "Idempotency-Key", "X-Herald-Socket-Token", "X-Herald-Socket-Id"},
			// A refused client (503 over_capacity, shutting_down; 429) must read when to come back.
			ExposeHeaders:    []string{"Retry-After"},
			AllowCredentials: !s.corsAnyOrigin(),
			MaxAge:           600,
		}))
	}
	// Answers are compressed by a middleware that leaves the stream routes alone (streams
	// flush every frame and compress themselves when SSECompression asks); no timeout
	// middleware anywhere: streams live for hours and long-polls for a minute
	// (docs/architecture.md).
	if s.cfg.CompressMinBytes > 0 {
		e.Use(compressMiddleware(s.cfg.CompressMinBytes))
	}
	v1 := e.Group("/v1")
	v1.GET("/health", s.health)
	v1.GET("/ready", s.ready)
	v1.GET("/config", s.config)
	v1.POST("/test", s.testMessage)
	v1.POST("/channels/:channel/events", s.publish)
	v1.GET("/channels/:channel/events", s.channelStream)
	v1.GET("/stream", s.multiStream)
	v1.GET("/channels/:channel/poll", s.channelPoll)
	v1.GET("/poll", s.multiPoll)
	sockets := socketAPI{s}
	v1.POST("/sockets", sockets.openSocket)
	v1.POST("/sockets/:socket_id/subscriptions", sockets.subscribeSocket)
	v1.DELETE("/sockets/:socket_id/subscriptions/:channel", sockets.unsubscribeSocket)
	v1.POST("/sockets/:socket_id/signin", sockets.signin)
	v1.POST("/channels/:channel/whispers", sockets.whisper)
	v1.GET("/channels/:channel/members", s.channelMembers)
	pusherAPI{s}.routes(e)
	s.echo = e
	s.admin = s.newAdmin()
	s.http = &http.Server{
		Handler:           streamHandler{e},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		// No WriteTimeout: it would kill streams. Each stream keeps a rolling write deadline.
		ErrorLog:  nil,
		TLSConfig: s.cfg.TLS,
		HTTP2:     http2Settings(),
	}
	if s.cfg.H2C {
		s.http.Protocols = new(http.Protocols)
		s.http.Protocols.SetHTTP1(true)
		s.http.Protocols.SetHTTP2(s.cfg.TLS != nil)
		s.http.Protocols.SetUnencryptedHTTP2(true)
	}
	// http.Server.Shutdown waits for connections to go idle, which streams never do: end them
	// first, each with a jittered retry so clients do not all come back at once.
	s.http.RegisterOnShutdown(s.shutdownHubs)
	s.janitor.Add(2)
	go s.expireLoop()
	go s.presenceLoop()
	regCtx, unregister := context.WithCancel(s.stopCtx)
	s.unregister = unregister
	s.registerNodes(regCtx)
	s.startWebhooks(s.stopCtx)
	logHookConfig(s.log, s.apps)
	for _, a := range s.apps {
		if a.Bus == nil {
			continue
		}
		if err := a.Bus.Serve(s.stopCtx, a.Hub.Node(), func(ctx context.Context, req []byte) []byte {
			return sockets.serveBus(ctx, a, req)
		}); err != nil {
			log.Warn().Err(err).Str("app", a.ID).Msg("cannot serve socket calls from other nodes")
		}
	}
	return s
}

func (s *Server) shutdownHubs() {
	for _, a := range s.apps {
		a.Hub.Shutdown()
	}
}

// expireLoop closes long-poll sockets whose clients stopped polling.
func (s *Server) expireLoop() {
	defer s.janitor.Done()
	t := time.NewTicker(max(s.cfg.SocketTimeout/4, 50*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stopCtx.Done():
			return
		case <-t.C:
			s.sessions.expire(s.sessions.now(), s.cfg.SocketTimeout)
		}
	}
}

// Handler is the API as an http.Handler.
func (s *Server) Handler() http.Handler { return s.echo }

// Serve accepts connections on ln until Shutdown, over TLS when Config.TLS is set.
func (s *Server) Serve(ln net.Listener) error {
	var err error
	if s.http.TLSConfig != nil {
		err = s.http.ServeTLS(ln, "", "")
	} else {
		err = s.http.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Drain takes the node out of service before a shutdown: it leaves the registry at once,
// /v1/ready answers 503, new streams, long-poll sockets and polls are refused (503
// shutting_down with Retry-After), and the open ones are ended spread over period, each told
// to reconnect — to another node. Publishes and calls on existing sockets are still served.
// Drain returns when every socket has ended or ctx ends; call Shutdown then.
func (s *Server) Drain(ctx context.Context, period time.Duration) {
	s.census.draining.Store(true)
	s.unregister()
	var wg sync.WaitGroup
	for _, a := range s.apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.Hub.Drain(ctx, period)
		}()
	}
	wg.Wait()
}

// Shutdown ends every stream, then waits for them and for other requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.unregister() // other nodes stop counting this one's sockets at once
	err := s.http.Shutdown(ctx)
	s.shutdownHubs() // also when Serve was never called
	s.stopOnce.Do(func() {
		s.stop()
		s.janitor.Wait()
	})
	done := make(chan struct{})
	go func() {
		s.streams.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

// clientIP reads a request's client address: the connection's, or X-Forwarded-For's when the
// connection comes from a trusted proxy. Echo trusts loopback and private ranges by default;
// here nothing is trusted that was not listed.
func clientIP(trusted []*net.IPNet) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range trusted {
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// ParseTrustedProxies reads addresses and CIDR ranges ("10.0.0.0/8", "127.0.0.1", "::1"),
// each element possibly a comma-separated list.
func ParseTrustedProxies(list []string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, v := range strings.Split(strings.Join(list, ","), ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if !strings.Contains(v, "/") {
			ip := net.ParseIP(v)
			if ip == nil {
				return nil, fmt.Errorf("trusted proxy %q: not an IP address or CIDR range", v)
			}
			bits := 128
			if ip4 := ip.To4(); ip4 != nil {
				ip, bits = ip4, 32
			}
			out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, n, err := net.ParseCIDR(v)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: not an IP address or CIDR range", v)
		}
		out = append(out, n)
	}
	return out, nil
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// accessLog logs each request once it ends, with the query's token redacted. A hijacked stream
// logs itself when it closes, so its duration is the connection's lifetime.
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		if c.Get(streamLogKey) != nil {
			return nil
		}
		s.finished(requestOf(c, start), c.Response().Status, c.Response().Size, "")
		return nil
	}
}

// streamLogKey is set in the echo.Context of a stream that writes its own access log line.
const streamLogKey = "herald.stream_log"

// accessEntry is what the access log says of a request, kept small: a stream holds one for
// its whole life.
type accessEntry struct {
	method, path, rawQuery, remote string
	route                          string // the router's pattern, for the metrics
	start                          time.Time
}

func requestOf(c echo.Context, start time.Time) accessEntry {
	req := c.Request()
	return accessEntry{method: req.Method, path: req.URL.Path, rawQuery: req.URL.RawQuery, remote: c.RealIP(), route: c.Path(), start: start}
}

// finished writes a request's access log line (server errors are warnings) and counts it in
// the metrics.
func (s *Server) finished(r accessEntry, status int, bytes int64, reason string) {
	s.cfg.Metrics.request(r.route, r.method, status, time.Since(r.start))
	ev := s.log.Info()
	if status >= 500 {
		ev = s.log.Warn()
	}
	ev = ev.Str("method", r.method).
		Str("path", r.path).
		Str("query", redactQuery(r.rawQuery)).
		Int("status", status).
		Int64("bytes", bytes).
		Dur("duration", time.Since(r.start)).
		Str("remote", r.remote)
	if reason != "" {
		ev = ev.Str("reason", reason)
	}
	ev.Msg("request")
}

// redactQuery hides secrets (token=…) in a raw query string, for logs.
func redactQuery(raw string) string {
	if raw == "" {
		return ""
	}
	parts := strings.Split(raw, "&")
	for i, p := range parts {
		key, _, hasValue := strings.Cut(p, "=")
		if k, err := url.QueryUnescape(key); err == nil {
			key = k
		}
		if hasValue && isSecretParam(key) {
			parts[i] = p[:strings.IndexByte(p, '=')] + "=REDACTED"
		}
	}
	return strings.Join(parts, "&")
}

func isSecretParam(key string) bool {
	switch strings.ToLower(key) {
	case "token", "access_token", "auth", "socket_token", "jwt":
		return true
	}
	return false
}

// jitter spreads reconnects after a shutdown over [base, 3·base].
func jitter(base time.Duration) time.Duration {
	return base + rand.N(2*base)
}

// storeError maps store failures to API errors.
func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrUnconfirmed):
		return errStoreTimeout
	case errors.Is(err, store.ErrNotReplicated):
		return errReplicationTimeout
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrClosed):
		return errStoreUnavailable
	case errors.Is(err, stream.ErrShutdown):
		return errShuttingDown
	}
	return err
}
