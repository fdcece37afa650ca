package server

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// An app's allowed_origins hold its streams, polls and sockets to the pages they name, matched
// on the Origin's host as Reverb matches them; a request without an Origin, or from the
// server's own host, is never refused; CORS answers the allowed origins.
func TestAllowedOrigins(t *testing.T) {
	ts, _ := pusherServerWith(t, `
apps:
  - id: "1"
    key: key-one
    secret: secret-one-secret-one
    allowed_origins: ["*.example.com", "app.test"]
`)
	do := func(method, path, origin string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, ts.URL+path, nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	poll := "/v1/channels/news/poll?timeout=0"
	for _, c := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"https://chat.example.com", true},
		{"https://a.b.example.com", true},
		{"http://app.test:8443", true}, // the port is not part of the match
		{"https://APP.test", true},
		{ts.URL, true}, // the server's own host
		{"https://example.com", false},
		{"https://example.com.evil.test", false},
		{"https://app.test.evil.test", false},
		{"null", false},
	} {
		resp, body := do(http.MethodGet, poll, c.origin)
		if c.ok {
			if resp.StatusCode != http.StatusOK {
				t.Errorf("poll from %q: %d %s, want 200", c.origin, resp.StatusCode, body)
			}
			if c.origin != "" && c.origin != ts.URL && resp.Header.Get("Access-Control-Allow-Origin") != c.origin {
				t.Errorf("poll from %q: Access-Control-Allow-Origin %q", c.origin, resp.Header.Get("Access-Control-Allow-Origin"))
			}
			continue
		}
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `"code":"origin_not_allowed"`) {
			t.Errorf("poll from %q: %d %s, want 403 origin_not_allowed", c.origin, resp.StatusCode, body)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("poll from %q: Access-Control-Allow-Origin %q", c.origin, got)
		}
	}
	if resp, body := do(http.MethodPost, "/v1/sockets", "https://evil.test"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("socket from another site: %d %s, want 403", resp.StatusCode, body)
	}
	if resp, body := do(http.MethodPost, "/v1/sockets", "https://chat.example.com"); resp.StatusCode != http.StatusCreated {
		t.Errorf("socket from an allowed page: %d %s, want 201", resp.StatusCode, body)
	}
	if resp, body := do(http.MethodGet, "/v1/channels/news/events", "https://evil.test"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("stream from another site: %d %s, want 403", resp.StatusCode, body)
	}
}
