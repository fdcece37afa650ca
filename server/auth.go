package server

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-rt/herald/server/authz"
)

// Claims are what a Herald token carries: the subject and the channel patterns it may
// subscribe and publish to. A pattern's `*` matches any run of characters.
type Claims struct {
	jwt.RegisteredClaims
	Subscribe []string `json:"herald.subscribe,omitempty"`
	Publish   []string `json:"herald.publish,omitempty"`
	// App names the tenant the token is for; empty means the default app.
	App string `json:"app,omitempty"`
	// UserInfo is what presence channels show of the user (JWT mode).
	UserInfo json.RawMessage `json:"herald.user_info,omitempty"`
	// Raw is every claim, for channel rules that look at the app's own claims (org, role …).
	Raw map[string]any `json:"-"`
}

// CanSubscribe reports whether the claims allow subscribing to channel.
func (c *Claims) CanSubscribe(channel string) bool { return anyMatch(c.Subscribe, channel) }

// CanPublish reports whether the claims allow publishing to channel.
func (c *Claims) CanPublish(channel string) bool { return anyMatch(c.Publish, channel) }

func anyMatch(patterns []string, channel string) bool {
	for _, p := range patterns {
		if authz.Match(p, channel) {
			return true
		}
	}
	return false
}

// AuthConfig selects how tokens are verified. Exactly one of Secret and PublicKeyFile is set.
type AuthConfig struct {
	// Secret is the HS256 key.
	Secret []byte
	// PublicKeyFile is a PEM public key (RSA → RS256, ECDSA → ES256, Ed25519 → EdDSA).
	PublicKeyFile string
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer   string
	Audience string
	// Leeway tolerates clock skew on exp/nbf/iat. Default 5s.
	Leeway time.Duration
}

// ErrUnauthorized is wrapped by every token verification failure.
var ErrUnauthorized = errors.New("invalid token")

// Authenticator verifies tokens with an explicit parser: allowed algorithms only, exp required.
// Verified tokens are remembered until they expire, so a client that publishes or polls many
// times with one token pays for the signature check once (it was a quarter of a publish's CPU).
type Authenticator struct {
	parser *jwt.Parser
	key    any
	leeway time.Duration

	mu    sync.Mutex
	cache map[string]*Claims // verified token → its claims; bounded by maxCachedTokens
}

const maxCachedTokens = 10000

// NewAuthenticator returns an Authenticator for cfg.
func NewAuthenticator(cfg AuthConfig) (*Authenticator, error) {
	var key any
	var methods []string
	switch {
	case len(cfg.Secret) > 0 && cfg.PublicKeyFile != "":
		return nil, errors.New("set either a JWT secret or a JWT public key file, not both")
	case len(cfg.Secret) > 0:
		if len(cfg.Secret) < 32 {
			return nil, errors.New("the JWT secret must be at least 32 bytes")
		}
		key, methods = cfg.Secret, []string{"HS256"}
	case cfg.PublicKeyFile != "":
		pub, err := loadPublicKey(cfg.PublicKeyFile)
		if err != nil {
			return nil, err
		}
		key = pub
		switch pub.(type) {
		case *rsa.PublicKey:
			methods = []string{"RS256"}
		case *ecdsa.PublicKey:
			methods = []string{"ES256"}
		case ed25519.PublicKey:
			methods = []string{"EdDSA"}
		default:
			return nil, fmt.Errorf("unsupported public key type %T", pub)
		}
	default:
		return nil, errors.New("no JWT key configured")
	}
	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = 5 * time.Second
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithExpirationRequired(), jwt.WithLeeway(leeway)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	return &Authenticator{parser: jwt.NewParser(opts...), key: key, leeway: leeway, cache: make(map[string]*Claims)}, nil
}

// MaxTokenLen bounds the token text, so a huge header cannot make the parser work hard.
const MaxTokenLen = 8 << 10

// Verify parses and checks a token.
func (a *Authenticator) Verify(token string) (*Claims, error) {
	if token == "" || len(token) > MaxTokenLen {
		return nil, ErrUnauthorized
	}
	now := time.Now()
	a.mu.Lock()
	cached := a.cache[token]
	a.mu.Unlock()
	if cached != nil {
		// Only time can make a verified token invalid; everything else was checked once.
		if now.Before(cached.ExpiresAt.Add(a.leeway)) && (cached.NotBefore == nil || !now.Before(cached.NotBefore.Add(-a.leeway))) {
			return cached, nil
		}
		a.mu.Lock()
		delete(a.cache, token)
		a.mu.Unlock()
	}
	claims := new(Claims)
	_, err := a.parser.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return a.key, nil })
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	// The signature is good, so the payload is the issuer's: decode it whole for the rules.
	if parts := strings.Split(token, "."); len(parts) == 3 {
		if raw, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			_ = dec.Decode(&claims.Raw)
		}
	}
	a.mu.Lock()
	if len(a.cache) >= maxCachedTokens {
		for k := range a.cache { // evict an arbitrary tenth; map order is random
			delete(a.cache, k)
			if len(a.cache) < maxCachedTokens*9/10 {
				break
			}
		}
	}
	a.cache[token] = claims
	a.mu.Unlock()
	return claims, nil
}

// Expiry is when a verified token stops being accepted: its exp plus the clock-skew leeway.
// Streams end then, so a token accepted at connect never ends its stream the same instant.
func (a *Authenticator) Expiry(c *Claims) time.Time {
	if c == nil || c.ExpiresAt == nil {
		return time.Time{}
	}
	return c.ExpiresAt.Add(a.leeway)
}

func loadPublicKey(path string) (crypto.PublicKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read JWT public key: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("JWT public key %s: no PEM block", path)
	}
	if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
		return cert.PublicKey, nil
	}
	if pub, err := x509.ParsePKIXPublicKey(block.Bytes); err == nil {
		return pub, nil
	}
	if pub, err := x509.ParsePKCS1PublicKey(block.Bytes); err == nil {
		return pub, nil
	}
	return nil, fmt.Errorf("JWT public key %s: not a PKIX, PKCS#1 or certificate PEM", path)
}

// Minter signs tokens, for `herald token` and the dev mode's printed token.
type Minter struct {
	method jwt.SigningMethod
	key    any
}

// NewMinter signs with an HS256 secret, or with a PEM private key file (RSA → RS256,
// ECDSA P-256 → ES256, Ed25519 → EdDSA).
func NewMinter(secret []byte, privateKeyFile string) (*Minter, error) {
	if privateKeyFile == "" {
		if len(secret) == 0 {
			return nil, errors.New("no JWT secret or private key to sign with")
		}
		return &Minter{method: jwt.SigningMethodHS256, key: secret}, nil
	}
	raw, err := os.ReadFile(privateKeyFile)
	if err != nil {
		return nil, fmt.Errorf("read JWT private key: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("JWT private key %s: no PEM block", privateKeyFile)
	}
	var key any
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		key = k
	} else if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		key = k
	} else if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		key = k
	} else {
		return nil, fmt.Errorf("JWT private key %s: not PKCS#8, PKCS#1 or EC", privateKeyFile)
	}
	switch key.(type) {
	case *rsa.PrivateKey:
		return &Minter{method: jwt.SigningMethodRS256, key: key}, nil
	case *ecdsa.PrivateKey:
		return &Minter{method: jwt.SigningMethodES256, key: key}, nil
	case ed25519.PrivateKey:
		return &Minter{method: jwt.SigningMethodEdDSA, key: key}, nil
	}
	return nil, fmt.Errorf("unsupported private key type %T", key)
}

// TokenSpec is what a minted token grants.
type TokenSpec struct {
	Subject   string
	Subscribe []string
	Publish   []string
	TTL       time.Duration
	Issuer    string
	Audience  string
}

// Mint signs a token for spec.
func (m *Minter) Mint(spec TokenSpec) (string, error) {
	if spec.TTL <= 0 {
		return "", errors.New("token TTL must be positive")
	}
	now := time.Now()
	claims := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   spec.Subject,
			Issuer:    spec.Issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(spec.TTL)),
		},
		Subscribe: spec.Subscribe,
		Publish:   spec.Publish,
	}
	if spec.Audience != "" {
		claims.Audience = jwt.ClaimStrings{spec.Audience}
	}
	return jwt.NewWithClaims(m.method, claims).SignedString(m.key)
}

// bearer extracts the token of an Authorization header value.
func bearer(header string) string {
	const prefix = "bearer "
	if len(header) > len(prefix) && strings.EqualFold(header[:len(prefix)], prefix) {
		return strings.TrimSpace(header[len(prefix):])
	}
	return ""
}
