package server

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func writePEM(t *testing.T, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAsymmetricKeys: each public-key algorithm verifies its own tokens and refuses the other
// algorithms — including the classic confusion of an HS256 token signed with the public key.
func TestAsymmetricKeys(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, c := range []struct {
		name string
		priv crypto.Signer
	}{{"RS256", rsaKey}, {"ES256", ecKey}, {"EdDSA", edKey}} {
		t.Run(c.name, func(t *testing.T) {
			privDER, err := x509.MarshalPKCS8PrivateKey(c.priv)
			if err != nil {
				t.Fatal(err)
			}
			pubDER, err := x509.MarshalPKIXPublicKey(c.priv.Public())
			if err != nil {
				t.Fatal(err)
			}
			auth, err := NewAuthenticator(AuthConfig{PublicKeyFile: writePEM(t, "pub.pem", "PUBLIC KEY", pubDER)})
			if err != nil {
				t.Fatal(err)
			}
			m, err := NewMinter(nil, writePEM(t, "priv.pem", "PRIVATE KEY", privDER))
			if err != nil {
				t.Fatal(err)
			}
			tok, err := m.Mint(TokenSpec{Subject: "u1", Subscribe: []string{"private-*"}, TTL: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			cl, err := auth.Verify(tok)
			if err != nil || cl.Subject != "u1" || !cl.CanSubscribe("private-a") || cl.CanPublish("private-a") {
				t.Fatalf("own token: %+v, %v", cl, err)
			}
			pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
			confused, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "evil", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(pemBytes)
			if _, err := auth.Verify(confused); !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("HS256 token keyed with the public key was accepted: %v", err)
			}
			other, _ := NewMinter(testSecret, "")
			hs, _ := other.Mint(TokenSpec{Subject: "u", TTL: time.Minute})
			if _, err := auth.Verify(hs); !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("HS256 token accepted by a %s authenticator: %v", c.name, err)
			}
		})
	}
}

func TestAuthenticatorConfigErrors(t *testing.T) {
	for name, cfg := range map[string]AuthConfig{
		"nothing":       {},
		"short secret":  {Secret: []byte("too-short")},
		"both":          {Secret: testSecret, PublicKeyFile: "x.pem"},
		"missing file":  {PublicKeyFile: filepath.Join(t.TempDir(), "absent.pem")},
		"not pem":       {PublicKeyFile: writePEM(t, "bad.pem", "GARBAGE", []byte("x"))},
		"short app key": {Secret: testSecret, AppKeys: map[string]TokenKey{"2": {Secret: []byte("short")}}},
		"app key both":  {AppKeys: map[string]TokenKey{"2": {Secret: testSecret, PublicKeyFile: "x.pem"}}},
	} {
		if _, err := NewAuthenticator(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func jwtSign(claims map[string]any) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims)).SignedString(testSecret)
}

// TestAppKeys: an app with its own key accepts tokens signed with it only, that key verifies
// no token of another app, and the deployment's key verifies the apps without one — including
// the default app, which a token without an app claim is for.
func TestAppKeys(t *testing.T) {
	appSecret := []byte("app-2-secret-app-2-secret-app-2-s")
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	pubDER, _ := x509.MarshalPKIXPublicKey(edKey.Public())
	auth, err := NewAuthenticator(AuthConfig{Secret: testSecret, DefaultApp: "1", AppKeys: map[string]TokenKey{
		"2": {Secret: appSecret},
		"3": {PublicKeyFile: writePEM(t, "pub.pem", "PUBLIC KEY", pubDER)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	sign := func(method jwt.SigningMethod, key any, app any) string {
		claims := jwt.MapClaims{"sub": "u", "exp": exp}
		if app != nil {
			claims["app"] = app
		}
		tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	hs, ed := jwt.SigningMethodHS256, jwt.SigningMethodEdDSA
	for _, c := range []struct {
		name string
		tok  string
		ok   bool
	}{
		{"default app, no claim, deployment key", sign(hs, testSecret, nil), true},
		{"default app named, deployment key", sign(hs, testSecret, "1"), true},
		{"unknown app, deployment key", sign(hs, testSecret, "9"), true}, // the server refuses it as unknown_app
		{"app 2, its key", sign(hs, appSecret, "2"), true},
		{"app 2, deployment key", sign(hs, testSecret, "2"), false},
		{"app 1, app 2's key", sign(hs, appSecret, "1"), false},
		{"no claim, app 2's key", sign(hs, appSecret, nil), false},
		{"app 3, its Ed25519 key", sign(ed, edKey, "3"), true},
		{"app 3, deployment key", sign(hs, testSecret, "3"), false},
		{"app 2, app 3's key", sign(ed, edKey, "2"), false},
		{"app claim a number", sign(hs, appSecret, 2), false},
	} {
		cl, err := auth.Verify(c.tok)
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case !c.ok && !errors.Is(err, ErrUnauthorized):
			t.Errorf("%s: accepted (%+v), want ErrUnauthorized", c.name, cl)
		}
	}

	// Without a deployment key, only the apps with their own are served.
	only, err := NewAuthenticator(AuthConfig{DefaultApp: "1", AppKeys: map[string]TokenKey{"2": {Secret: appSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := only.Verify(sign(hs, testSecret, nil)); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("no deployment key: a token of the default app was accepted")
	}
	if _, err := only.Verify(sign(hs, appSecret, "2")); err != nil {
		t.Errorf("no deployment key: app 2's own token refused: %v", err)
	}
}
