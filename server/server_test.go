package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/stream"
	"github.com/herald-rt/herald/test/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func newTestServer(t *testing.T, cfg Config) (*httptest.Server, *Server) {
	t.Helper()
	return newTestServerHub(t, cfg, stream.Options{})
}

func newTestServerHub(t *testing.T, cfg Config, hubOpts stream.Options) (*httptest.Server, *Server) {
	t.Helper()
	auth, err := NewAuthenticator(AuthConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Auth = auth
	cfg.SocketSecret = DeriveSocketSecret(testSecret)
	st := memstore.New(memstore.Options{})
	hub := stream.New(st, hubOpts)
	cfg.Apps = []*App{{ID: "default", Hub: hub, Bus: st, Presence: memstore.NewPresence(memstore.PresenceOptions{})}}
	srv := New(cfg, zerolog.New(io.Discard))
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		ts.Close()
		hub.Close()
		st.Close()
	})
	return ts, srv
}

func mint(t *testing.T, spec TokenSpec) string {
	t.Helper()
	m, err := NewMinter(testSecret, "")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.Mint(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestVerifyRejects(t *testing.T) {
	auth, err := NewAuthenticator(AuthConfig{Secret: testSecret, Issuer: "app", Audience: "herald"})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	exp := time.Now().Add(time.Hour).Unix()
	good := jwt.MapClaims{"sub": "u1", "exp": exp, "iss": "app", "aud": "herald"}
	if _, err := auth.Verify(sign(jwt.SigningMethodHS256, testSecret, good)); err != nil {
		t.Fatalf("valid token refused: %v", err)
	}
	for name, tok := range map[string]string{
		"no exp":            sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "iss": "app", "aud": "herald"}),
		"expired":           sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(-time.Minute).Unix(), "iss": "app", "aud": "herald"}),
		"other secret":      sign(jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), good),
		"HS512":             sign(jwt.SigningMethodHS512, testSecret, good),
		"alg none":          sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good),
		"wrong issuer":      sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "exp": exp, "iss": "evil", "aud": "herald"}),
		"wrong audience":    sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "exp": exp, "iss": "app", "aud": "other"}),
		"iat in the future": sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "exp": exp, "iss": "app", "aud": "herald", "iat": time.Now().Add(time.Hour).Unix()}),
		"exp as a string":   sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "exp": fmt.Sprint(exp), "iss": "app", "aud": "herald"}),
		"nbf as a string":   sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "exp": exp, "nbf": "1", "iss": "app", "aud": "herald"}),
		"iat as a string":   sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "exp": exp, "iat": "1", "iss": "app", "aud": "herald"}),
		"app not a string":  sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "exp": exp, "app": 7, "iss": "app", "aud": "herald"}),
		"garbage":           "not.a.token",
		"empty":             "",
		"huge":              strings.Repeat("a", maxTokenLen+1),
	} {
		if _, err := auth.Verify(tok); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%s: err %v, want ErrUnauthorized", name, err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	appSecret := []byte("app-b-secret-app-b-secret-app-b-s")
	auth, err := NewAuthenticator(AuthConfig{Secret: testSecret, DefaultApp: "a", AppKeys: map[string]TokenKey{"b": {Secret: appSecret}}})
	if err != nil {
		f.Fatal(err)
	}
	m, _ := NewMinter(testSecret, "")
	tok, _ := m.Mint(TokenSpec{Subject: "u", Subscribe: []string{"*"}, TTL: time.Hour})
	f.Add(tok)
	mb, _ := NewMinter(appSecret, "")
	tok, _ = mb.Mint(TokenSpec{Subject: "u", App: "b", TTL: time.Hour})
	f.Add(tok)
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, token string) {
		cl, err := auth.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("error %v does not wrap ErrUnauthorized", err)
			}
			return
		}
		if cl.ExpiresAt == nil {
			t.Fatal("accepted a token without exp")
		}
		// Whatever was accepted was signed by its own app's key: b's key for b, the
		// deployment's for every other app.
		key := testSecret
		if cl.App == "b" {
			key = appSecret
		}
		if _, err := jwt.ParseWithClaims(token, new(Claims), func(*jwt.Token) (any, error) { return key, nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithoutClaimsValidation()); err != nil {
			t.Fatalf("accepted a token for app %q that its key does not verify: %v", cl.App, err)
		}
	})
}

func FuzzParsePublish(f *testing.F) {
	f.Add([]byte(`{"event":"MessageSent","data":{"text":"hi"}}`))
	f.Add([]byte(`{"event":"X","data":[1,2,{"a":"\n"}],"socket_id":"1.2"}`))
	f.Add([]byte(`{"event":"X"} {}`))
	f.Add([]byte(`{"event":"a\nb"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parsePublish(body)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
				t.Fatalf("error %v is not a 400 API error", err)
			}
			return
		}
		if stream.ValidEventName(req.Event) != nil {
			t.Fatalf("accepted event name %q", req.Event)
		}
		if !json.Valid(req.Data) || strings.ContainsAny(string(req.Data), "\r\n") {
			t.Fatalf("data %q is not one line of valid JSON", req.Data)
		}
	})
}

func TestRedactQuery(t *testing.T) {
	for in, want := range map[string]string{
		"":                            "",
		"token=abc.def":               "token=REDACTED",
		"channel=a&token=x&since=b":   "channel=a&token=REDACTED&since=b",
		"TOKEN=x":                     "TOKEN=REDACTED",
		"%74oken=x":                   "%74oken=REDACTED",
		"socket_token=s&access_token": "socket_token=REDACTED&access_token",
	} {
		if got := redactQuery(in); got != want {
			t.Errorf("RedactQuery(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzRedactQuery(f *testing.F) {
	f.Add("token=secret&channel=a")
	f.Fuzz(func(t *testing.T, q string) {
		out := redactQuery(q)
		for _, p := range strings.Split(out, "&") {
			if k, v, ok := strings.Cut(p, "="); ok && strings.EqualFold(k, "token") && v != "REDACTED" {
				t.Fatalf("token value leaked: %q -> %q", q, out)
			}
		}
	})
}

func TestValidSocketID(t *testing.T) {
	for id, want := range map[string]bool{"1.2": true, "123456789.42": true, "": false, "1.": false, ".1": false, "1.2.3": false, "a.1": false, "1,2": false} {
		if validSocketID(id) != want {
			t.Errorf("ValidSocketID(%q) = %v", id, !want)
		}
	}
}

// TestStreamTokenExpiry checks in-process that a stream ends at its token's expiry.
func TestStreamEndsWhenTokenExpires(t *testing.T) {
	ts, _ := newTestServer(t, Config{})
	tok := mint(t, TokenSpec{Subject: "u", Subscribe: []string{"private-*"}, TTL: 1500 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/v1/channels/private-a/events?token="+tok, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if ctx.Err() != nil {
		t.Fatal("stream still open long after the token expired")
	}
	joined := strings.Join(lines, "\n")
	if !strings.Contains(joined, "event: herald:error") || !strings.Contains(joined, `"code":"token_expired"`) {
		t.Fatalf("stream ended without a token_expired frame:\n%s", joined)
	}
}

func TestCachedTokenStillExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // the bubble's clock jumps over the sleep
		auth, err := NewAuthenticator(AuthConfig{Secret: testSecret, Leeway: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		tok := mint(t, TokenSpec{Subject: "u", Publish: []string{"*"}, TTL: time.Second})
		for range 2 { // the second call is served from the cache
			if _, err := auth.Verify(tok); err != nil {
				t.Fatalf("fresh token refused: %v", err)
			}
		}
		time.Sleep(2100 * time.Millisecond)
		if _, err := auth.Verify(tok); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("expired cached token: err %v, want ErrUnauthorized", err)
		}
	})
}
