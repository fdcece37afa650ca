package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisTLSFiles are the PEM files of --redis-ca, --redis-cert and --redis-key.
type redisTLSFiles struct{ ca, cert, key string }

// apply adds the files to the TLS settings of a rediss:// target (cfg, nil for redis://) and
// returns the settings to use.
func (f redisTLSFiles) apply(cfg *tls.Config) (*tls.Config, error) {
	if f == (redisTLSFiles{}) {
		return cfg, nil
	}
	if cfg == nil {
		return nil, errors.New("--redis-ca, --redis-cert and --redis-key need a rediss:// URL (TLS)")
	}
	if (f.cert == "") != (f.key == "") {
		return nil, errors.New("--redis-cert and --redis-key go together")
	}
	cfg = cfg.Clone()
	cfg.MinVersion = tls.VersionTLS12
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("--redis-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--redis-ca: no PEM certificate in %s", f.ca)
		}
		cfg.RootCAs = pool
	}
	if f.cert != "" {
		cert, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("--redis-cert, --redis-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// misconfigured reports an error that retrying cannot cure: Redis refused the login or the
// command, or TLS could not be agreed on (an unknown CA, a wrong name, plain text on a TLS
// port or the reverse).
func misconfigured(err error) bool {
	if err == nil {
		return false
	}
	for _, prefix := range []string{"WRONGPASS", "NOAUTH", "NOPERM", "ERR AUTH"} {
		if redis.HasErrorPrefix(err, prefix) {
			return true
		}
	}
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &record) || errors.As(err, &verify) ||
		// The server's TLS alert (no client certificate, say) has no exported type.
		strings.Contains(err.Error(), "remote error: tls: ")
}
