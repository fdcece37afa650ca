package test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Tenancy: a token speaks for its own app only. Wherever a token meets an app that something
// else chose — the socket a subscription call acts on, on whichever node — a token of another
// app is refused, and an app with its own JWT key accepts no token signed with another key.

const twoAppsConfig = `
default_app: "1001"
apps:
  - id: "1001"
    key: inbox-key
    secret: inbox-secret-inbox-secret
  - id: "1002"
    key: other-key
    secret: other-secret-other-secret
`

// startTwoAppCluster starts two nodes on one Redis serving the same two apps.
func startTwoAppCluster(t *testing.T, yaml string) (a, b *herald) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return startCluster(t, oneRedis, "--config", path)
}

// appToken is a token of app (empty: the default app) for user, allowed to read every
// private and presence channel.
func appToken(t *testing.T, secret []byte, app, user string) string {
	t.Helper()
	claims := jwt.MapClaims{
		"sub":              user,
		"exp":              time.Now().Add(time.Hour).Unix(),
		"herald.subscribe": []string{"private-*", "presence-*"},
		"herald.publish":   []string{"*"},
		"herald.user_info": map[string]string{"name": user},
	}
	if app != "" {
		claims["app"] = app
	}
	return tokenClaims(t, secret, claims)
}

// subscribeSocket sends a subscription call for socket c through node via.
func subscribeSocket(t *testing.T, via *herald, c connected, tok, channel string) reply {
	t.Helper()
	hdr := socketHeader(c.SocketToken)
	if tok != "" {
		hdr.Set("Authorization", "Bearer "+tok)
	}
	return mustDo(t, "POST", via.Base+"/v1/sockets/"+c.SocketID+"/subscriptions", hdr, strings.NewReader(`{"channel":"`+channel+`"}`))
}

// memberIDs lists a presence channel's user ids as the token's app sees them.
func memberIDs(t *testing.T, h *herald, tok, channel string) []string {
	t.Helper()
	r := mustDo(t, "GET", h.Base+"/v1/channels/"+channel+"/members", bearerHeader(tok), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("members of %s: %s", channel, r)
	}
	var ans struct {
		Members []struct {
			UserID string `json:"user_id"`
		} `json:"members"`
	}
	if err := json.Unmarshal(r.Body, &ans); err != nil {
		t.Fatalf("members of %s: %v: %s", channel, err, r.Body)
	}
	ids := []string{}
	for _, m := range ans.Members {
		ids = append(ids, m.UserID)
	}
	return ids
}

// TestTokenOfAnotherAppCannotSubscribeSocket: a socket of app 1001 — opened without a token or
// with an app-1001 token — cannot be subscribed to 1001's private or presence channels with an
// app-1002 token, through either node; the intruder never hears 1001's events nor shows up in
// its members, and a socket that is not subscribed cannot whisper there.
func TestTokenOfAnotherAppCannotSubscribeSocket(t *testing.T) {
	t.Parallel()
	a, b := startTwoAppCluster(t, twoAppsConfig)
	alice := appToken(t, a.Secret, "", "alice")       // app 1001, the default
	bob := appToken(t, a.Secret, "1002", "bob")       // app 1002
	intruder := appToken(t, a.Secret, "1002", "mall") // app 1002 too
	private, presence := uniqueChannel("private-secret"), uniqueChannel("presence-room")

	// Legitimate members in each app's presence channel of the same name; a socket belongs to
	// the app of the token it was opened with.
	for _, m := range []struct {
		node *herald
		tok  string
	}{{a, alice}, {b, bob}} {
		s := mustSSE(t, m.node.Base+"/v1/stream?token="+m.tok, nil)
		c := s.expectPreamble(t)
		if r := subscribeSocket(t, m.node, c, "", presence); r.Status != http.StatusOK {
			t.Fatalf("join %s: %s", presence, r)
		}
		if f := s.mustEvent(t, 10*time.Second); f.Event != "herald:subscription_succeeded" {
			t.Fatalf("want the presence notice, got %q", f.Raw)
		}
	}

	anonymous := mustSSE(t, a.Base+"/v1/stream", nil)
	anon := anonymous.expectPreamble(t)
	withToken := mustSSE(t, a.Base+"/v1/stream?token="+alice, nil)
	own := withToken.expectPreamble(t)

	for _, sock := range []struct {
		name   string
		stream *sseStream
		hello  connected
	}{{"socket opened without a token", anonymous, anon}, {"socket opened with an app-1001 token", withToken, own}} {
		for _, via := range []*herald{a, b} {
			for _, ch := range []string{private, presence} {
				what := fmt.Sprintf("%s, %s via %s", sock.name, ch, via.name)
				expectAPIError(t, what, subscribeSocket(t, via, sock.hello, intruder, ch), http.StatusForbidden, "app_mismatch")
				f := sock.stream.mustEvent(t, 10*time.Second)
				if f.Event != "herald:subscription_error" || !strings.Contains(f.Data, `"app_mismatch"`) {
					t.Fatalf("%s: want herald:subscription_error with app_mismatch on the socket, got %q", what, f.Raw)
				}
			}
		}
	}

	// Nothing of app 1001 reaches the sockets, and the intruder is no member of anything.
	pub := appToken(t, a.Secret, "", "publisher")
	a.mustPublish(t, pub, private, "Secret", map[string]int{"n": 1})
	anonymous.expectQuiet(t, 300*time.Millisecond)
	withToken.expectQuiet(t, 300*time.Millisecond)
	if got := memberIDs(t, a, alice, presence); strings.Join(got, ",") != "alice" {
		t.Errorf("app 1001's members of %s: want [alice], got %v", presence, got)
	}
	if got := memberIDs(t, b, intruder, presence); strings.Join(got, ",") != "bob" {
		t.Errorf("app 1002's members of %s (listed with an app-1002 token): want [bob], got %v", presence, got)
	}
	hdr := socketHeader(anon.SocketToken)
	expectAPIError(t, "whisper from a socket the intruder could not subscribe",
		mustDo(t, "POST", a.Base+"/v1/channels/"+private+"/whispers?socket_id="+anon.SocketID, hdr, strings.NewReader(`{"event":"client-typing","data":{}}`)),
		http.StatusForbidden, "not_subscribed")

	// The same token subscribes a socket of its own app, which hears only its own app's events.
	mine := mustSSE(t, b.Base+"/v1/stream?token="+intruder, nil)
	mc := mine.expectPreamble(t)
	if r := subscribeSocket(t, a, mc, "", private); r.Status != http.StatusOK {
		t.Fatalf("app-1002 socket subscribed with the token it was opened with: %s", r)
	}
	if f := mine.mustEvent(t, 10*time.Second); f.Event != "herald:subscription_succeeded" {
		t.Fatalf("want subscription_succeeded, got %q", f.Raw)
	}
	a.mustPublish(t, pub, private, "Secret", map[string]int{"n": 2})
	mine.expectQuiet(t, 300*time.Millisecond)
	a.mustPublish(t, appToken(t, a.Secret, "1002", "publisher"), private, "Own", map[string]int{"n": 3})
	if f := mine.mustEvent(t, 10*time.Second); !strings.Contains(f.Data, `"Own"`) {
		t.Fatalf("app-1002 socket: want its own app's event, got %q", f.Raw)
	}
}

// writeEd25519Key writes a fresh Ed25519 key pair as PEM files and returns their paths.
func writeEd25519Key(t *testing.T, dir, name string) (pubPath, privPath string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubPath, privPath = filepath.Join(dir, name+".pub.pem"), filepath.Join(dir, name+".pem")
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return pubPath, privPath
}

// heraldToken runs `herald token` with args and extra environment, and returns its output.
func heraldToken(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(heraldBin, append([]string{"token"}, args...)...)
	cmd.Env = env
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestAppOwnJWTKeys: an app with its own key (jwt_secret_env, jwt_public_key) accepts tokens
// signed with that key only; the deployment's key verifies only tokens of apps without one;
// `herald token --app` signs with the app's key; iat in the future and times written as
// strings are refused.
func TestAppOwnJWTKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pubPath, privPath := writeEd25519Key(t, dir, "app1003")
	_, otherPriv := writeEd25519Key(t, dir, "other")
	appSecret := randomSecret()
	yaml := twoAppsConfig + `    jwt_secret_env: APP1002_JWT_SECRET
  - id: "1003"
    key: third-key
    secret: third-secret-third-secret
    jwt_public_key: ` + pubPath + "\n"
	cfgPath := filepath.Join(dir, "herald.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"APP1002_JWT_SECRET=" + string(appSecret)}
	h := startHerald(t, heraldOpts{args: []string{"--config", cfgPath}, env: env})

	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		t.Helper()
		if _, ok := claims["exp"]; !ok {
			claims["exp"] = time.Now().Add(time.Hour).Unix()
		}
		claims["herald.subscribe"] = []string{"*"}
		claims["herald.publish"] = []string{"*"}
		tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	privPEM, err := os.ReadFile(privPath)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(privPEM)
	edKey, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	hs := jwt.SigningMethodHS256
	ch := uniqueChannel("keys")
	for _, c := range []struct {
		what string
		tok  string
		code string // empty: accepted
	}{
		{"app 1001 (no own key), deployment key", sign(hs, h.Secret, jwt.MapClaims{"sub": "u", "app": "1001"}), ""},
		{"no app claim (default app 1001), deployment key", sign(hs, h.Secret, jwt.MapClaims{"sub": "u"}), ""},
		{"app 1002, its own key", sign(hs, appSecret, jwt.MapClaims{"sub": "u", "app": "1002"}), ""},
		{"app 1002, deployment key", sign(hs, h.Secret, jwt.MapClaims{"sub": "u", "app": "1002"}), "token_invalid"},
		{"app 1001, app 1002's key", sign(hs, appSecret, jwt.MapClaims{"sub": "u", "app": "1001"}), "token_invalid"},
		{"no app claim, app 1002's key", sign(hs, appSecret, jwt.MapClaims{"sub": "u"}), "token_invalid"},
		{"app 1003, its Ed25519 key", sign(jwt.SigningMethodEdDSA, edKey, jwt.MapClaims{"sub": "u", "app": "1003"}), ""},
		{"app 1003, deployment key", sign(hs, h.Secret, jwt.MapClaims{"sub": "u", "app": "1003"}), "token_invalid"},
		{"app 1002's key, app claim not a string", sign(hs, appSecret, jwt.MapClaims{"sub": "u", "app": 1002}), "token_invalid"},
		{"iat an hour ahead", sign(hs, h.Secret, jwt.MapClaims{"sub": "u", "iat": time.Now().Add(time.Hour).Unix()}), "token_invalid"},
		{"exp as a string", sign(hs, h.Secret, jwt.MapClaims{"sub": "u", "exp": fmt.Sprint(time.Now().Add(time.Hour).Unix())}), "token_invalid"},
		{"nbf as a string", sign(hs, h.Secret, jwt.MapClaims{"sub": "u", "nbf": "0"}), "token_invalid"},
		{"iat as a string", sign(hs, h.Secret, jwt.MapClaims{"sub": "u", "iat": fmt.Sprint(time.Now().Unix())}), "token_invalid"},
	} {
		r := mustDo(t, "GET", h.Base+pollPath("private-"+ch)+"?timeout=0", bearerHeader(c.tok), nil)
		if c.code == "" {
			if r.Status != http.StatusOK {
				t.Errorf("%s: want 200, got %s", c.what, r)
			}
			continue
		}
		expectAPIError(t, c.what, r, http.StatusUnauthorized, c.code)
	}

	// herald token --app signs with the app's key; the token reads that app's channel.
	tenv := append([]string{"HERALD_JWT_SECRET=" + string(h.Secret)}, env...)
	tok1002, err := heraldToken(t, tenv, "--config", cfgPath, "--app", "1002", "--sub", "cli", "--subscribe", "*", "--publish", "*")
	if err != nil {
		t.Fatalf("herald token --app 1002: %v: %s", err, tok1002)
	}
	tok1003, err := heraldToken(t, tenv, "--config", cfgPath, "--app", "1003", "--sub", "cli", "--subscribe", "*", "--jwt-private-key", privPath)
	if err != nil {
		t.Fatalf("herald token --app 1003: %v: %s", err, tok1003)
	}
	if out, err := heraldToken(t, tenv, "--config", cfgPath, "--app", "1003", "--sub", "cli", "--jwt-private-key", otherPriv); err == nil || !strings.Contains(out, "does not match") {
		t.Errorf("herald token --app 1003 with a key that is not the app's: want an error, got %v: %s", err, out)
	}
	if out, err := heraldToken(t, tenv, "--config", cfgPath, "--app", "9999", "--sub", "cli"); err == nil || !strings.Contains(out, "no such app") {
		t.Errorf("herald token --app 9999: want an error, got %v: %s", err, out)
	}
	s := mustSSE(t, h.Base+eventsPath(ch)+"?token="+tok1002, nil)
	s.expectPreamble(t)
	h.mustPublish(t, sign(hs, h.Secret, jwt.MapClaims{"sub": "p"}), ch, "OtherApp", map[string]int{"n": 1})
	h.mustPublish(t, tok1002, ch, "SameApp", map[string]int{"n": 2})
	if f := s.mustEvent(t, 10*time.Second); f.Event != "SameApp" {
		t.Fatalf("a token minted by herald token --app 1002 reads app 1002: want SameApp, got %q", f.Raw)
	}
	if r := mustDo(t, "GET", h.Base+pollPath("private-"+ch)+"?timeout=0", bearerHeader(tok1003), nil); r.Status != http.StatusOK {
		t.Errorf("herald token --app 1003 --jwt-private-key: the token is refused: %s", r)
	}
}
