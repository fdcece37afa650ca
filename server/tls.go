package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Certificate is the TLS certificate and key the listeners serve, read from PEM files and
// reloaded when they change or on Reload (SIGHUP): a renewed certificate (Let's Encrypt's
// 60–90 days, an internal CA's hours) is picked up without a restart, so without ending every
// open stream. A reload that fails keeps the certificate already served.
type Certificate struct {
	certFile, keyFile string

	cur atomic.Pointer[tls.Certificate]
	mu  sync.Mutex // one reload at a time
	// seen is what the files held at the last load attempt: a file rewritten with the same
	// modification time still differs in content, and a half-written pair fails to parse and
	// is tried again at the next check.
	seen []byte
}

// LoadCertificate reads the PEM certificate chain and private key.
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile}
	if _, err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again and serves them from the next handshake on. It reports whether
// the certificate changed; on an error the previous one stays.
func (c *Certificate) Reload() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	certPEM, err := os.ReadFile(c.certFile)
	if err != nil {
		return false, fmt.Errorf("tls certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(c.keyFile)
	if err != nil {
		return false, fmt.Errorf("tls key: %w", err)
	}
	both := append(append(certPEM[:len(certPEM):len(certPEM)], 0), keyPEM...)
	if c.cur.Load() != nil && bytes.Equal(both, c.seen) {
		return false, nil
	}
	c.seen = both
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("tls certificate %s and key %s: %w", c.certFile, c.keyFile, err)
	}
	c.cur.Store(&cert)
	return true, nil
}

// Watch checks the files every interval until ctx ends and reloads them when they changed.
func (c *Certificate) Watch(ctx context.Context, interval time.Duration, log zerolog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := c.Reload()
		switch {
		case err != nil:
			// Logged once per distinct failure, not every interval: a renewal that writes
			// the certificate before the key fails one check and passes the next.
			if err.Error() != lastErr {
				log.Error().Err(err).Msg("tls: cannot reload the certificate; still serving the previous one")
			}
			lastErr = err.Error()
		case changed:
			lastErr = ""
			log.Info().Msg("tls: certificate reloaded")
		}
	}
}

// TLSConfig is the listeners' TLS settings: TLS 1.2 and up, forward-secret AEAD suites only
// for 1.2 (1.3's are all of that kind), HTTP/2 offered before HTTP/1.1 through ALPN.
func (c *Certificate) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert := c.cur.Load()
			if cert == nil {
				return nil, errors.New("no certificate loaded")
			}
			return cert, nil
		},
	}
}

// http2Settings are the HTTP/2 server's settings, where they differ from net/http's defaults
// for a server of long-lived streams (figures in docs/benchmarks.md, "HTTP/2 and TLS: memory
// per idle stream"). None of them changes what an idle stream costs (about 18 KB at 100
// streams to a connection, 71 KB at one over TLS, with these settings or without): that is
// mostly net/http's 4 KB write buffer per stream, the handler goroutine's stack and, at one
// stream to a connection, the connection's own goroutines and TLS state.
// The header tables stay at their defaults: smaller ones saved nothing measurable, and
// clients that send requests before our SETTINGS arrive then failed with COMPRESSION_ERROR
// (up to 8 streams in 10 at 100 to a connection).
func http2Settings() *http.HTTP2Config {
	return &http.HTTP2Config{
		// A proxy in front that speaks HTTP/2 to Herald (--h2c) carries many clients' streams
		// on a few connections, and a stream past the limit waits or fails: with Go's 250,
		// 7,500 of 10,000 streams sent 1,000 to a connection failed. An idle stream costs the
		// same at 1,000 to a connection as at 100 (22.3 against 23.1 KB).
		MaxConcurrentStreams: 1000,
		// The frame and flow-control sizes bound what a client can make a connection hold:
		// the framer keeps a buffer as large as the largest frame it read, and request bodies
		// no handler reads (an SSE stream's) stay buffered up to the windows. With Go's 1 MiB
		// windows, 200 connections each parking such a body held 1,147 KB per connection;
		// with these, 147 KB. 64 KiB per stream still takes a body of the default
		// --max-body-bytes in one window.
		MaxReadFrameSize:              16 << 10,
		MaxReceiveBufferPerConnection: 64 << 10,
		MaxReceiveBufferPerStream:     64 << 10,
		// SSE clients send nothing once their request is in, and a frozen client (an app
		// suspended by its phone, its kernel still acknowledging) takes heartbeats into its
		// buffers for hours: without pings 5 such connections were still held after 140 s,
		// with these they were closed within 50 s. A live client answers the ping by itself.
		SendPingTimeout: 30 * time.Second,
		PingTimeout:     15 * time.Second,
		// A connection whose writes make no progress this long is closed with all its
		// streams: the per-stream write deadlines cannot reach a frame already being written
		// to the socket. Twice the default --write-timeout, so those act first.
		WriteByteTimeout: 30 * time.Second,
	}
}

// tcpConn is the TCP connection under conn, also under TLS, for the socket options a stream
// sets (send buffer, linger).
func tcpConn(conn net.Conn) (*net.TCPConn, bool) {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	tc, ok := conn.(*net.TCPConn)
	return tc, ok
}
