package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/herald-rt/herald/server"
	"github.com/herald-rt/herald/server/authz"
)

func token(args []string) error {
	fs := newFlagSet("token", "herald token — mint a token with the configured key")
	sub := fs.String("sub", "", "subject (user id)")
	subscribe := fs.List("subscribe", "channel pattern the token may subscribe to, repeatable (* matches anything)", false)
	pub := fs.List("publish", "channel pattern the token may publish to, repeatable", false)
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	app := fs.String("app", "", "the app the token is for (its app claim); signed with that app's own key when herald.yaml gives it one")
	configPath := fs.String("config", "", "herald.yaml, to find the key of --app")
	keys := addKeyFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if *sub == "" {
		return errors.New("--sub is required")
	}
	az, err := loadAuthz(*configPath)
	if err != nil {
		return err
	}
	secret, privateKey, err := signingKey(*app, az, keys)
	if err != nil {
		return err
	}
	m, err := server.NewMinter(secret, privateKey)
	if err != nil {
		return fmt.Errorf("%w (set --jwt-secret / HERALD_JWT_SECRET, or --jwt-private-key)", err)
	}
	spec := server.TokenSpec{
		Subject: *sub, App: *app, Subscribe: *subscribe, Publish: *pub, TTL: *ttl, Issuer: *keys.issuer, Audience: *keys.audience,
	}
	tok, err := m.Mint(spec)
	if err != nil {
		return err
	}
	// A token the server would refuse is no use: check it against the key that will verify it.
	if a := az.App(*app); a != nil && a.JWTPublicKeyFile != "" {
		v, err := server.NewAuthenticator(server.AuthConfig{AppKeys: map[string]server.TokenKey{a.ID: {PublicKeyFile: a.JWTPublicKeyFile}},
			Issuer: *keys.issuer, Audience: *keys.audience})
		if err != nil {
			return fmt.Errorf("app %q: %w", a.ID, err)
		}
		if _, err := v.Verify(tok); err != nil {
			return fmt.Errorf("app %q: --jwt-private-key does not match its jwt_public_key %s", a.ID, a.JWTPublicKeyFile)
		}
	}
	fmt.Println(tok)
	return nil
}

// signingKey picks the key a token for app is signed with: the app's own when herald.yaml
// gives it one (an HS256 secret from jwt_secret_env, or --jwt-private-key for its
// jwt_public_key), otherwise the deployment's.
func signingKey(app string, az *authz.Config, keys keyFlags) (secret []byte, privateKeyFile string, err error) {
	if app != "" && az != nil && az.App(app) == nil {
		return nil, "", fmt.Errorf("--app %q: no such app in the config", app)
	}
	a := az.App(app)
	if app == "" {
		a = az.DefaultApp()
	}
	switch {
	case a == nil || !a.HasOwnJWTKey():
		return []byte(*keys.secret), *keys.privateKey, nil
	case len(a.JWTSecret()) > 0:
		return a.JWTSecret(), "", nil
	case *keys.privateKey == "":
		return nil, "", fmt.Errorf("app %q verifies tokens with its jwt_public_key: pass its private key with --jwt-private-key", a.ID)
	default:
		return nil, *keys.privateKey, nil
	}
}

// clientFlags are the settings of the debugging clients.
func clientFlags(fs *flagSet) (base, tok *string) {
	return fs.String("url", "http://127.0.0.1:8081", "Herald's base URL"),
		fs.String("token", "", "bearer token")
}

func publish(args []string) error {
	fs := newFlagSet("publish", "herald publish CHANNEL EVENT JSON — publish one event")
	base, tok := clientFlags(fs)
	socket := fs.String("socket-id", "", "publisher socket id to exclude from delivery")
	key := fs.String("idempotency-key", "", "Idempotency-Key header (default: a random one, printed)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() != 3 {
		return errors.New("usage: herald publish [flags] CHANNEL EVENT JSON")
	}
	channel, event, data := fs.Arg(0), fs.Arg(1), fs.Arg(2)
	if !json.Valid([]byte(data)) {
		return fmt.Errorf("the event data %q is not valid JSON (quote strings: '\"text\"')", data)
	}
	body, err := json.Marshal(server.PublishRequest{Event: event, Data: json.RawMessage(data), SocketID: *socket})
	if err != nil {
		return err
	}
	if *key == "" {
		// With a key a publish can be repeated safely: the event is appended at most once.
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		*key = hex.EncodeToString(b)
	}
	fmt.Fprintf(os.Stderr, "Idempotency-Key: %s\n", *key)
	target := strings.TrimRight(*base, "/") + "/v1/channels/" + url.PathEscape(channel) + "/events"
	status, out, err := publishOnce(target, *tok, *key, body)
	if err == nil && status == http.StatusServiceUnavailable && bytes.Contains(out, []byte(`"store_timeout"`)) {
		// The store may have appended it: the same key tells, and appends it if it did not.
		fmt.Fprintf(os.Stderr, "%d %s\nretrying once with the same Idempotency-Key\n", status, bytes.TrimSpace(out))
		status, out, err = publishOnce(target, *tok, *key, body)
	}
	if err != nil {
		return err
	}
	fmt.Printf("%d %s\n", status, bytes.TrimSpace(out))
	if status >= 300 {
		return fmt.Errorf("publish failed with status %d", status)
	}
	return nil
}

// publishOnce sends one publish and returns the answer's status and body.
func publishOnce(target, tok, key string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Idempotency-Key", key)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, out, err
}

// tail follows a channel's SSE stream and prints each event's envelope on its own line,
// reconnecting from the last id it saw, until interrupted.
func tail(args []string) error {
	fs := newFlagSet("tail", "herald tail CHANNEL — print events as they arrive")
	base, tok := clientFlags(fs)
	since := fs.String("since", "", "resume after this cursor, or \"beginning\" for the retained history")
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: herald tail [flags] CHANNEL")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	u := strings.TrimRight(*base, "/") + "/v1/channels/" + url.PathEscape(fs.Arg(0)) + "/events"
	last, fromBeginning := *since, false
	if last == "beginning" {
		last, fromBeginning = "", true
	}
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		target := u
		if fromBeginning && last == "" {
			target += "?since=beginning"
		}
		err := tailOnce(ctx, target, *tok, &last)
		if ctx.Err() != nil {
			return nil
		}
		var fatal *tailError
		if errors.As(err, &fatal) {
			return err
		}
		fmt.Fprintf(os.Stderr, "# disconnected (%v); reconnecting from %q\n", err, last)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
	return nil
}

type tailError struct{ msg string }

func (e *tailError) Error() string { return e.msg }

func tailOnce(ctx context.Context, target, tok string, last *string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return &tailError{err.Error()}
	}
	req.Header.Set("Accept", "text/event-stream")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if *last != "" {
		req.Header.Set("Last-Event-ID", *last)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		msg := fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
		if resp.StatusCode < 500 {
			return &tailError{msg}
		}
		return errors.New(msg)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var id, event string
	var data []string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if len(data) > 0 {
				if event != "" && strings.HasPrefix(event, "herald:") {
					fmt.Fprintf(os.Stderr, "# %s %s\n", event, strings.Join(data, "\n"))
				} else {
					fmt.Println(strings.Join(data, "\n"))
				}
			}
			if id != "" {
				*last = id
			}
			id, event, data = "", "", nil
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			id = value
		case "event":
			event = value
		case "data":
			data = append(data, value)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}
