package test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The organization / conversation / role rules a chatbot inbox relies on, checked through
// the real binary: channel rules from --config on top of the tokens' own patterns, server API
// keys for backends, and apps that never see each other's channels.

const authzConfig = twoAppsConfig + `channels:
  rules:
    - channel: private-organization.{org}
      action: subscribe
      when: {claim: org, equals: "{org}"}
    - channel: private-conversation.{org}.{id}
      when:
        all:
          - {claim: org, equals: "{org}"}
          - any:
              - {claim: conversations, contains: "{id}"}
              - {claim: role, equals: admin}
    - channel: private-organization.*
      action: publish
      when: {claim: role, in: [admin, agent]}
api_keys:
  - name: backend
    key: backend-key-backend-key-backend-key-0001
    publish: ["private-organization.*"]
`

func startWithConfig(t *testing.T, yaml string, extra ...string) *herald {
	t.Helper()
	path := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return startHerald(t, heraldOpts{args: append([]string{"--config", path}, extra...)})
}

func claimsToken(t *testing.T, h *herald, claims jwt.MapClaims) string {
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
	}
	return tokenClaims(t, h.Secret, claims)
}

func TestChannelRulesMatrix(t *testing.T) {
	t.Parallel()
	h := startWithConfig(t, authzConfig)
	all := []string{"private-*", "presence-*"}
	agent1 := claimsToken(t, h, jwt.MapClaims{"sub": "a1", "org": "1", "role": "agent", "conversations": []string{"5"},
		"herald.subscribe": all, "herald.publish": []string{"*"}})
	admin1 := claimsToken(t, h, jwt.MapClaims{"sub": "ad1", "org": "1", "role": "admin", "herald.subscribe": all, "herald.publish": []string{"*"}})
	admin2 := claimsToken(t, h, jwt.MapClaims{"sub": "ad2", "org": "2", "role": "admin", "herald.subscribe": all})
	customer1 := claimsToken(t, h, jwt.MapClaims{"sub": "c1", "org": "1", "role": "customer", "conversations": []string{"6"},
		"herald.subscribe": []string{"private-conversation.*"}, "herald.publish": []string{"*"}})
	expired := claimsToken(t, h, jwt.MapClaims{"sub": "a1", "org": "1", "herald.subscribe": all, "exp": time.Now().Add(-time.Hour).Unix()})

	subscribe := func(tok, ch string) reply {
		return mustDo(t, "GET", h.Base+pollPath(ch)+"?timeout=0", bearerHeader(tok), nil)
	}
	for _, c := range []struct {
		who, tok, channel string
		status            int
		code              string
	}{
		{"agent of org 1", agent1, "private-organization.1", 200, ""},
		{"agent of org 1, other org", agent1, "private-organization.2", 403, "forbidden"},
		{"participant", agent1, "private-conversation.1.5", 200, ""},
		{"not a participant", agent1, "private-conversation.1.6", 403, "forbidden"},
		{"admin of org 1", admin1, "private-conversation.1.6", 200, ""},
		{"admin of another org", admin2, "private-conversation.1.6", 403, "forbidden"},
		{"customer in own conversation", customer1, "private-conversation.1.6", 200, ""},
		{"customer without the org pattern", customer1, "private-organization.1", 403, "forbidden"},
		{"expired token", expired, "private-organization.1", 401, "token_invalid"},
		{"no token", "", "private-organization.1", 401, "token_missing"},
	} {
		r := subscribe(c.tok, c.channel)
		if c.status == 200 {
			if r.Status != 200 {
				t.Errorf("%s → %s: want 200, got %s", c.who, c.channel, r)
			}
			continue
		}
		expectAPIError(t, c.who+" → "+c.channel, r, c.status, c.code)
	}

	publish := func(tok, ch string) reply {
		r, err := h.publishBody(tok, ch, []byte(`{"event":"Note","data":{}}`), nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := publish(agent1, "private-organization.1"); r.Status != http.StatusCreated {
		t.Errorf("agent publishes to the organization: %s", r)
	}
	expectAPIError(t, "customer publishes to the organization", publish(customer1, "private-organization.1"), 403, "forbidden")
	if r := publish("backend-key-backend-key-backend-key-0001", "private-organization.9"); r.Status != http.StatusCreated {
		t.Errorf("API key publishes within its patterns: %s", r)
	}
	expectAPIError(t, "API key outside its patterns", publish("backend-key-backend-key-backend-key-0001", "private-conversation.1.5"), 403, "forbidden")
	expectAPIError(t, "unknown bearer", publish("backend-key-backend-key-backend-key-0002", "private-organization.9"), 401, "token_invalid")

	// The socket API applies the same rules, and tells the socket.
	s := mustSSE(t, h.Base+"/v1/stream", nil)
	hello := s.expectPreamble(t)
	hdr := socketHeader(hello.SocketToken)
	hdr.Set("Authorization", "Bearer "+agent1)
	subs := h.Base + "/v1/sockets/" + hello.SocketID + "/subscriptions"
	expectAPIError(t, "socket: other org", mustDo(t, "POST", subs, hdr, strings.NewReader(`{"channel":"private-organization.2"}`)), 403, "forbidden")
	if f := s.mustEvent(t, 10*time.Second); f.Event != "herald:subscription_error" {
		t.Fatalf("want a subscription error on the socket, got %q", f.Raw)
	}
	if r := mustDo(t, "POST", subs, hdr, strings.NewReader(`{"channel":"private-organization.1"}`)); r.Status != 200 {
		t.Fatalf("socket: own org: %s", r)
	}
}

func TestAppsAreIsolated(t *testing.T) {
	t.Parallel()
	h := startWithConfig(t, authzConfig)
	tokFor := func(app string) string {
		return claimsToken(t, h, jwt.MapClaims{"sub": "u", "app": app, "herald.subscribe": []string{"*"}, "herald.publish": []string{"*"}})
	}
	app1, app2 := tokFor("1001"), tokFor("1002")
	s1 := mustSSE(t, h.Base+eventsPath("shared")+"?token="+app1, nil)
	s1.expectPreamble(t)
	s2 := mustSSE(t, h.Base+eventsPath("shared")+"?token="+app2, nil)
	s2.expectPreamble(t)
	id2 := h.mustPublish(t, app2, "shared", "Tick", map[string]int{"n": 2})
	id1 := h.mustPublish(t, app1, "shared", "Tick", map[string]int{"n": 1})
	if f := s1.mustEvent(t, 10*time.Second); !strings.Contains(f.Data, `"n":1`) {
		t.Fatalf("app 1001 subscriber got %q", f.Raw)
	}
	if f := s2.mustEvent(t, 10*time.Second); !strings.Contains(f.Data, `"n":2`) {
		t.Fatalf("app 1002 subscriber got %q", f.Raw)
	}
	s1.expectQuiet(t, 200*time.Millisecond)
	s2.expectQuiet(t, 200*time.Millisecond)
	// Each app's history holds its own event only; the same cursor text means nothing across apps.
	var a pollAnswer
	if err := json.Unmarshal(mustDo(t, "GET", h.Base+pollPath("shared")+"?since=beginning&timeout=0", bearerHeader(app1), nil).Body, &a); err != nil || len(a.Events) != 1 || !strings.Contains(string(a.Events[0]), id1) {
		t.Fatalf("app 1001 history: %+v %v (its event %s, the other's %s)", a, err, id1, id2)
	}
	expectAPIError(t, "unknown app", mustDo(t, "GET", h.Base+pollPath("shared")+"?timeout=0", bearerHeader(tokFor("9999")), nil), 403, "unknown_app")
}
