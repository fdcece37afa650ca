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
	"github.com/herald-rt/herald/store/channel"
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
func (c *Claims) CanSubscribe(name string) bool { return channel.MatchAny(c.Subscribe, name) }

// CanPublish reports whether the claims allow publishing to channel.
func (c *Claims) CanPublish(name string) bool { return channel.MatchAny(c.Publish, name) }

// AuthConfig selects how tokens are verified: with the deployment's key (at most one of
// Secret and PublicKeyFile), and with the keys of apps that have their own.
type AuthConfig struct {
	// Secret is the HS256 key.
	Secret []byte
	// PublicKeyFile is a PEM public key (RSA → RS256, ECDSA → ES256, Ed25519 → EdDSA).
	PublicKeyFile string
	// AppKeys are the keys of apps with their own (herald.yaml's jwt_secret_env and
	// jwt_public_key), by app id. A token for such an app is verified with its key only, and
	// that key verifies no token of another app; the deployment's key verifies only tokens of
	// apps without one.
	AppKeys map[string]TokenKey
	// DefaultApp is the app of a token without an app claim.
	DefaultApp string
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer   string
	Audience string
	// Leeway tolerates clock skew on exp/nbf/iat. Default 5s.
	Leeway time.Duration
}

// TokenKey is one key that verifies tokens: an HS256 Secret or a PEM PublicKeyFile.
type TokenKey struct {
	Secret        []byte
	PublicKeyFile string
}

// ErrUnauthorized is wrapped by every token verification failure.
var ErrUnauthorized = errors.New("invalid token")

// Authenticator verifies tokens with an explicit parser: allowed algorithms only, exp required,
// iat not in the future. Verified tokens are remembered until they expire, so a client that
// publishes or polls many times with one token pays for the signature check once (it was a
// quarter of a publish's CPU).
type Authenticator struct {
	global     *verifier            // the deployment's key; nil when only apps have keys
	apps       map[string]*verifier // apps with their own key
	defaultApp string
	leeway     time.Duration

	mu    sync.Mutex
	cache map[string]*Claims // verified token → its claims; bounded by maxCachedTokens
}

// verifier is one key with the parser for its algorithm.
type verifier struct {
	parser *jwt.Parser
	key    any
}

const maxCachedTokens = 10000

// NewAuthenticator returns an Authenticator for cfg.
func NewAuthenticator(cfg AuthConfig) (*Authenticator, error) {
	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = 5 * time.Second
	}
	opts := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(leeway)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	a := &Authenticator{apps: make(map[string]*verifier), defaultApp: cfg.DefaultApp, leeway: leeway, cache: make(map[string]*Claims)}
	if len(cfg.Secret) > 0 || cfg.PublicKeyFile != "" {
		v, err := newVerifier(TokenKey{Secret: cfg.Secret, PublicKeyFile: cfg.PublicKeyFile}, opts)
		if err != nil {
			return nil, err
		}
		a.global = v
	}
	for id, k := range cfg.AppKeys {
		v, err := newVerifier(k, opts)
		if err != nil {
			return nil, fmt.Errorf("app %q: %w", id, err)
		}
		a.apps[id] = v
	}
	if a.global == nil && len(a.apps) == 0 {
		return nil, errors.New("no JWT key configured")
	}
	return a, nil
}

func newVerifier(k TokenKey, opts []jwt.ParserOption) (*verifier, error) {
	var key any
	var method string
	switch {
	case len(k.Secret) > 0 && k.PublicKeyFile != "":
		return nil, errors.New("set either a JWT secret or a JWT public key file, not both")
	case len(k.Secret) > 0:
		if len(k.Secret) < authz.MinJWTSecretLen {
			return nil, fmt.Errorf("the JWT secret must be at least %d bytes", authz.MinJWTSecretLen)
		}
		key, method = k.Secret, "HS256"
	case k.PublicKeyFile != "":
		pub, err := loadPublicKey(k.PublicKeyFile)
		if err != nil {
			return nil, err
		}
		key = pub
		switch pub.(type) {
		case *rsa.PublicKey:
			method = "RS256"
		case *ecdsa.PublicKey:
			method = "ES256"
		case ed25519.PublicKey:
			method = "EdDSA"
		default:
			return nil, fmt.Errorf("unsupported public key type %T", pub)
		}
	default:
		return nil, errors.New("no JWT key configured")
	}
	opts = append([]jwt.ParserOption{jwt.WithValidMethods([]string{method})}, opts...)
	return &verifier{parser: jwt.NewParser(opts...), key: key}, nil
}

// maxTokenLen bounds the token text, so a huge header cannot make the parser work hard.
const maxTokenLen = 8 << 10

// Verify parses and checks a token. The key is chosen by the token's app claim, read before
// the signature is checked; the claim is read again from the verified token, so a token can
// only ever be accepted for the app whose key signed it.
func (a *Authenticator) Verify(token string) (*Claims, error) {
	if token == "" || len(token) > maxTokenLen {
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
	payload, err := tokenPayload(token)
	if err != nil {
		return nil, err
	}
	var unverified struct {
		App string `json:"app"`
	}
	if err := json.Unmarshal(payload, &unverified); err != nil {
		return nil, fmt.Errorf("%w: the app claim must be a string", ErrUnauthorized)
	}
	app := a.appOf(unverified.App)
	v := a.apps[app]
	if v == nil {
		v = a.global
	}
	if v == nil {
		return nil, fmt.Errorf("%w: app %q has no key here", ErrUnauthorized, app)
	}
	claims := new(Claims)
	if _, err := v.parser.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return v.key, nil }); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	if a.appOf(claims.App) != app {
		return nil, fmt.Errorf("%w: the app claim is ambiguous", ErrUnauthorized)
	}
	// The signature is good, so the payload is the issuer's: decode it whole for the rules.
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&claims.Raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	// The JWT library also reads a time written as a string ("exp":"1700000000"); RFC 7519
	// says NumericDate, and a token that differs from it is refused rather than guessed at.
	for _, name := range []string{"exp", "nbf", "iat"} {
		if v, ok := claims.Raw[name]; ok {
			if _, isNumber := v.(json.Number); !isNumber {
				return nil, fmt.Errorf("%w: %s is not a JSON number", ErrUnauthorized, name)
			}
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

// appOf is the app a token's app claim names: the default app when it names none.
func (a *Authenticator) appOf(claim string) string {
	if claim == "" {
		return a.defaultApp
	}
	return claim
}

// tokenPayload decodes the claims part of a compact JWS, unverified.
func tokenPayload(token string) ([]byte, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrUnauthorized)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: claims are not base64url", ErrUnauthorized)
	}
	return payload, nil
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
	Subject string
	// App is the token's app claim; empty means the default app.
	App       string
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
		App:       spec.App,
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
