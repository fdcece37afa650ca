package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/test/testkit"
)

// syncBuffer is a log destination the watcher writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func served(t *testing.T, c *Certificate) []byte {
	t.Helper()
	cert, err := c.TLSConfig().GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	return cert.Certificate[0]
}

func leafOf(t *testing.T, path string) []byte {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(path, strings.TrimSuffix(path, ".pem")+"-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	return cert.Certificate[0]
}

func install(t *testing.T, from testkit.Certs, certFile, keyFile string) {
	t.Helper()
	for src, dst := range map[string]string{from.ServerCert: certFile, from.ServerKey: keyFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		// Written aside and renamed into place, as renewal tools do: the watcher, checking
		// every 10 ms, must never read a half-written file (a failure of its own, logged
		// besides the one under test).
		if err := os.WriteFile(dst+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dst+".tmp", dst); err != nil {
			t.Fatal(err)
		}
	}
}

// The watcher serves a renewed pair from the next handshake on, keeps the last good one
// through a broken write, and says so once rather than at every check.
func TestCertificateWatch(t *testing.T) {
	first, err := testkit.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	second, err := testkit.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	install(t, first, certFile, keyFile)
	c, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(t, c), leafOf(t, first.ServerCert)) {
		t.Fatal("LoadCertificate does not serve the files' certificate")
	}
	if changed, err := c.Reload(); changed || err != nil {
		t.Fatalf("Reload of unchanged files = %v, %v; want false, nil", changed, err)
	}

	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Watch(ctx, 10*time.Millisecond, zerolog.New(&logs))
	}()
	defer func() { cancel(); <-done }()

	install(t, second, certFile, keyFile)
	if !testkit.WaitFor(5*time.Second, func() bool { return bytes.Equal(served(t, c), leafOf(t, second.ServerCert)) }) {
		t.Fatal("a renewed certificate was not picked up")
	}
	// The certificate written, the key not yet: a mismatch, refused.
	install(t, testkit.Certs{ServerCert: first.ServerCert, ServerKey: second.ServerKey}, certFile, keyFile)
	if !testkit.WaitFor(5*time.Second, func() bool { return strings.Contains(logs.String(), "cannot reload") }) {
		t.Fatal("a certificate and key that do not match were not reported")
	}
	time.Sleep(100 * time.Millisecond) // ten more checks of the same broken pair
	if n := strings.Count(logs.String(), "cannot reload"); n != 1 {
		t.Fatalf("the same failure was logged %d times, want once:\n%s", n, logs.String())
	}
	if !bytes.Equal(served(t, c), leafOf(t, second.ServerCert)) {
		t.Fatal("a failed reload replaced the certificate served")
	}
	install(t, first, certFile, keyFile) // the key arrives
	if !testkit.WaitFor(5*time.Second, func() bool { return bytes.Equal(served(t, c), leafOf(t, first.ServerCert)) }) {
		t.Fatal("the completed renewal was not picked up")
	}
}

func TestTLSConfigDefaults(t *testing.T) {
	c := &Certificate{}
	cfg := c.TLSConfig()
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
	}
	if len(cfg.NextProtos) != 2 || cfg.NextProtos[0] != "h2" || cfg.NextProtos[1] != "http/1.1" {
		t.Errorf("ALPN = %q, want h2 then http/1.1", cfg.NextProtos)
	}
	for _, id := range cfg.CipherSuites {
		for _, s := range tls.InsecureCipherSuites() {
			if s.ID == id {
				t.Errorf("insecure suite %s offered", s.Name)
			}
		}
		if name := tls.CipherSuiteName(id); !strings.Contains(name, "ECDHE") {
			t.Errorf("suite %s has no forward secrecy", name)
		}
	}
	if _, err := cfg.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
		t.Error("a Certificate with nothing loaded handed out a certificate")
	}
}
