package main

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"testing"
)

// TestPublishRetriesStoreTimeout: `herald publish` sends an Idempotency-Key (a random one unless
// given), and repeats the publish once with the same key when the answer is store_timeout —
// never on store_unavailable, which proves nothing was appended.
func TestPublishRetriesStoreTimeout(t *testing.T) {
	type answer struct {
		status int
		body   string
	}
	var mu sync.Mutex
	var keys []string
	var answers []answer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		a := answers[0]
		answers = answers[1:]
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		w.Write([]byte(a.body))
	}))
	defer srv.Close()
	timeout := `{"error":{"code":"store_timeout","message":"may have been appended"}}`
	unavailable := `{"error":{"code":"store_unavailable","message":"nothing was appended"}}`
	created := `{"id":"e-1","channel":"demo"}`
	set := func(a ...answer) {
		mu.Lock()
		answers, keys = a, nil
		mu.Unlock()
	}

	set(answer{503, timeout}, answer{201, created})
	if err := publish([]string{"--url", srv.URL, "demo", "Tick", "{}"}); err != nil {
		t.Fatalf("store_timeout then 201: %v", err)
	}
	if len(keys) != 2 || keys[0] != keys[1] || !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(keys[0]) {
		t.Fatalf("want two requests with one random key, got %q", keys)
	}

	set(answer{503, unavailable})
	if err := publish([]string{"--url", srv.URL, "--idempotency-key", "mine", "demo", "Tick", "{}"}); err == nil {
		t.Fatal("store_unavailable: want an error")
	}
	if len(keys) != 1 || keys[0] != "mine" {
		t.Fatalf("store_unavailable must not be retried, and the given key used: %q", keys)
	}

	set(answer{503, timeout}, answer{503, timeout})
	if err := publish([]string{"--url", srv.URL, "demo", "Tick", "{}"}); err == nil {
		t.Fatal("store_timeout twice: want an error")
	}
	if len(keys) != 2 {
		t.Fatalf("store_timeout is retried once only: %d requests", len(keys))
	}
}
