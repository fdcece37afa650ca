package main

import (
	"strings"
	"testing"
)

// TestAdminOffLoopbackNeedsAToken: the admin listener on an address other machines reach
// (an unspecified host is every interface) is refused without an admin token.
func TestAdminOffLoopbackNeedsAToken(t *testing.T) {
	t.Setenv("HERALD_JWT_SECRET", "0123456789abcdef0123456789abcdef")
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:8082"} {
		err := serve([]string{"--addr", "127.0.0.1:0", "--admin-addr", addr})
		if err == nil || !strings.Contains(err.Error(), "refusing to serve the admin listener") {
			t.Errorf("--admin-addr %s without a token: %v, want a refusal", addr, err)
		}
	}
	for addr, want := range map[string]bool{"127.0.0.1:8082": true, "[::1]:8082": true, "localhost:8082": true,
		"127.9.9.9:1": true, ":8082": false, "0.0.0.0:8082": false, "10.0.0.1:8082": false, "bad": false} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
