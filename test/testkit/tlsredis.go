package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Certs are PEM files of a throwaway CA and two certificates it signed: one for a server on
// 127.0.0.1 and localhost, one for a client. Made by the test, trusted by nothing else.
type Certs struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string // file paths
}

// NewCerts writes a fresh CA, server and client certificate into dir.
func NewCerts(dir string) (Certs, error) {
	c := Certs{
		CA:         filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client-key.pem"),
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return c, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herald test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return c, err
	}
	if err := writePEM(c.CA, "CERTIFICATE", caDER); err != nil {
		return c, err
	}
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage, certPath, keyPath string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(keyPath, "EC PRIVATE KEY", keyDER)
	}
	if err := leaf(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, c.ServerCert, c.ServerKey); err != nil {
		return c, err
	}
	return c, leaf(3, "herald test client", x509.ExtKeyUsageClientAuth, c.ClientCert, c.ClientKey)
}

func writePEM(path, kind string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}

// ClientTLS is the TLS configuration of a client that trusts the CA and presents the client
// certificate.
func (c Certs) ClientTLS() (*tls.Config, error) {
	caPEM, err := os.ReadFile(c.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", c.CA)
	}
	cert, err := tls.LoadX509KeyPair(c.ClientCert, c.ClientKey)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// TLSRedis is a redis-server that also listens with TLS, requiring a client certificate
// signed by its CA, and knows one ACL user with every right. Its default user (no password,
// on the plain port the kit uses to see it is up) may only PING: a client that does not log
// in as the ACL user can do nothing.
type TLSRedis struct {
	*Redis
	TLSPort        int
	Certs          Certs
	User, Password string
}

// StartTLSRedis starts a TLSRedis in a new temporary directory.
func StartTLSRedis() (*TLSRedis, error) {
	dir, err := os.MkdirTemp("", "herald-redis-tls-")
	if err != nil {
		return nil, err
	}
	certs, err := NewCerts(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	tlsPort, err := FreePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	r := &TLSRedis{TLSPort: tlsPort, Certs: certs, User: "herald", Password: "pw-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	r.Redis, err = StartRedisIn(dir,
		"--tls-port", strconv.Itoa(tlsPort),
		"--tls-cert-file", certs.ServerCert, "--tls-key-file", certs.ServerKey, "--tls-ca-cert-file", certs.CA,
		"--tls-auth-clients", "yes",
		// redis-server reads each word of a directive as its own argument.
		"--user", "default", "on", "nopass", "-@all", "+ping",
		"--user", r.User, "on", ">"+r.Password, "~*", "&*", "+@all")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	r.Redis.ownDir = true
	return r, nil
}

// URL is the rediss:// URL of the TLS port, logged in as the ACL user.
func (r *TLSRedis) URL() string {
	u := url.URL{Scheme: "rediss", User: url.UserPassword(r.User, r.Password), Host: "127.0.0.1:" + strconv.Itoa(r.TLSPort), Path: "/0"}
	return u.String()
}
