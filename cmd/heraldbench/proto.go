package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// Protocols the subscribers speak (-proto). Publishing is HTTP/1.1 keep-alive whatever the
// subscribers speak (over TLS when the URLs are https), so the publish side of a run stays
// the same and only the streams change.
const (
	protoH1  = "h1"  // HTTP/1.1, plain or over TLS (-tls)
	protoH2  = "h2"  // HTTP/2 over TLS, by ALPN
	protoH2C = "h2c" // HTTP/2 without TLS, by prior knowledge
)

// useTLS reports whether the subscribers' URLs are https.
func (c *runConfig) useTLS() bool { return c.TLS || c.Proto == protoH2 }

// isH2 reports whether the subscribers speak HTTP/2.
func (c *runConfig) isH2() bool { return c.Proto == protoH2 || c.Proto == protoH2C }

// protoLabel names the subscribers' protocol in the results: h1, h1+tls, h2 or h2c.
func (c *runConfig) protoLabel() string {
	if c.Proto == protoH1 && c.TLS {
		return "h1+tls"
	}
	return c.Proto
}

// h2ReadBuf is each HTTP/2 stream's read buffer. A stream's goroutine holds it while it waits
// in Read (there is no readiness to wait for first, as readRaw does on a socket), so it is
// small: 10,000 streams then hold 10 MB of the client's memory rather than 40 MB, on a
// machine the client shares with the server it measures. Events larger than this arrive in
// several reads, which the push parser takes as they come.
const h2ReadBuf = 1024

// clientTLS is the subscribers' and publishers' TLS configuration for a server named host
// (an IP literal is checked against the certificate's IP addresses).
func clientTLS(roots *x509.CertPool, host string, alpn ...string) *tls.Config {
	return &tls.Config{RootCAs: roots, ServerName: host, NextProtos: alpn, MinVersion: tls.VersionTLS12}
}

// h2Conn is one HTTP/2 connection, shared by the streams of its group: streams
// g*StreamsPerConn … (g+1)*StreamsPerConn-1. The first stream of the group to start dials it;
// the others wait for it and never dial one of their own, so a group is exactly one TCP
// connection (no pool is involved that could open another).
type h2Conn struct {
	mu  sync.Mutex
	cc  *http2.ClientConn
	err error
	raw atomic.Pointer[net.Conn] // the TCP connection, closed by stopAll
}

// h2ClientConn returns group g's connection, dialling it on first use.
func (r *runner) h2ClientConn(g int, t *target) (*http2.ClientConn, error) {
	c := &r.h2conns[g]
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cc == nil && c.err == nil {
		c.cc, c.err = r.dialH2(c, g, t)
	}
	return c.cc, c.err
}

func (r *runner) dialH2(c *h2Conn, g int, t *target) (*http2.ClientConn, error) {
	d := r.dialers[0]
	if !t.ipv6 && len(r.dialers) > 1 {
		d = r.dialers[1+g%(len(r.dialers)-1)]
	}
	raw, err := d.Dial("tcp", t.dial)
	if err != nil {
		return nil, subError(errReason("dial", err))
	}
	c.raw.Store(&raw)
	if r.stopping.Load() {
		raw.Close()
		return nil, subError("stopped")
	}
	r.nTCP.Add(1)
	conn := raw
	if t.tls != nil {
		_ = raw.SetDeadline(time.Now().Add(r.cfg.ConnectTimeout))
		tc := tls.Client(raw, t.tls)
		if err := tc.Handshake(); err != nil {
			raw.Close()
			return nil, subError(errReason("tls", err))
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			raw.Close()
			return nil, subError("alpn_not_h2")
		}
		_ = raw.SetDeadline(time.Time{})
		conn = tc
	}
	cc, err := r.h2.NewClientConn(conn)
	if err != nil {
		raw.Close()
		return nil, subError(errReason("h2_setup", err))
	}
	return cc, nil
}

// closeH2 closes every HTTP/2 connection: every stream on it ends.
func (r *runner) closeH2() {
	for i := range r.h2conns {
		if p := r.h2conns[i].raw.Load(); p != nil {
			(*p).Close()
		}
	}
}

// openH2 opens the subscriber's stream on its group's connection and checks the response
// head. Head and ready event are bounded by the connect timeout, from the start of this call:
// a timer cancels the request when the subscriber is not ready by then.
func (s *subscriber) openH2() (io.ReadCloser, error) {
	r := s.r
	ci := &r.chans[s.ch]
	g := int(s.idx) / r.cfg.StreamsPerConn
	// By connection rather than by stream, as a connection's streams all go to one server.
	t := ci.targets[g%len(ci.targets)]
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.readyTimer = time.AfterFunc(r.cfg.ConnectTimeout, func() {
		if st := s.state.Load(); st == subDialing || st == subOpen {
			s.timedOut.Store(true)
			cancel()
		}
	})
	cc, err := r.h2ClientConn(g, t)
	if err != nil {
		return nil, err
	}
	req := (&http.Request{Method: http.MethodGet, URL: t.u, Host: t.host, Header: r.h2Header,
		Proto: "HTTP/2.0", ProtoMajor: 2}).WithContext(ctx)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return nil, subError(errReason("head", s.h2Err(err)))
	}
	if resp.ProtoMajor == 2 {
		r.nHTTP2.Add(1)
	}
	switch {
	case resp.StatusCode != http.StatusOK:
		resp.Body.Close()
		return nil, subError(fmt.Sprintf("http_%d", resp.StatusCode))
	case !isEventStream(resp.Header.Get("Content-Type")):
		resp.Body.Close()
		return nil, subError("not_event_stream")
	}
	// HTTP/2 frames the body itself: what Read returns is the event stream.
	s.body.init(respHead{length: -1})
	s.state.Store(subOpen)
	if r.readyEvent == nil {
		s.becomeReady()
	}
	return resp.Body, nil
}

// h2Err names a stream cancelled by its ready timer a timeout, as a socket deadline would be.
func (s *subscriber) h2Err(err error) error {
	if s.timedOut.Load() {
		return os.ErrDeadlineExceeded
	}
	return err
}

// readBody reads an HTTP/2 stream's body until it ends, fails, or the runner closes the
// connections.
func (s *subscriber) readBody(body io.Reader) (done bool, err error) {
	buf := make([]byte, h2ReadBuf)
	for !s.r.stopping.Load() {
		n, err := body.Read(buf)
		if n > 0 {
			if done, ferr := s.feedBody(buf[:n]); done || ferr != nil {
				return done, ferr
			}
		}
		if err != nil {
			return false, s.h2Err(err)
		}
	}
	return false, net.ErrClosed
}

// writeSelfSignedCert writes a fresh ECDSA P-256 certificate for 127.0.0.1, ::1 and
// localhost and its key into dir, for the servers the orchestrator starts, and returns the
// pool that trusts it. It is its own issuer, valid for a day, and trusted by this process
// only: nothing is installed anywhere.
func writeSelfSignedCert(dir string) (certFile, keyFile string, roots *x509.CertPool, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return "", "", nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "heraldbench"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", nil, err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", "", nil, err
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots, nil
}

// loadRoots reads the PEM certificates of -tls-ca.
func loadRoots(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New(file + ": no PEM certificate in it")
	}
	return pool, nil
}
