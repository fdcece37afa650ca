package server

import (
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestClientIP(t *testing.T) {
	trusted, err := ParseTrustedProxies([]string{"10.0.0.0/8, 127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		trusted []*net.IPNet
		remote  string
		xff     string
		want    string
	}{
		{"no proxies trusted: the header is ignored", nil, "127.0.0.1:5000", "203.0.113.7", "127.0.0.1"},
		{"from a trusted proxy", trusted, "10.1.2.3:5000", "203.0.113.7", "203.0.113.7"},
		{"a chain of trusted proxies", trusted, "127.0.0.1:5000", "203.0.113.7, 10.9.9.9", "203.0.113.7"},
		{"a client's own forged entry stays on the left", trusted, "10.1.2.3:5000", "1.1.1.1, 203.0.113.7", "203.0.113.7"},
		{"from an untrusted address", trusted, "192.0.2.1:5000", "203.0.113.7", "192.0.2.1"},
		{"private ranges are not trusted unless listed", trusted, "192.168.1.1:5000", "203.0.113.7", "192.168.1.1"},
		{"IPv6 loopback listed", trusted, "[::1]:5000", "2001:db8::1", "2001:db8::1"},
		{"no header", trusted, "10.1.2.3:5000", "", "10.1.2.3"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "/", nil)
			req.RemoteAddr = c.remote
			if c.xff != "" {
				req.Header.Set("X-Forwarded-For", c.xff)
			}
			if got := clientIP(c.trusted)(req); got != c.want {
				t.Fatalf("client address %q, want %q", got, c.want)
			}
		})
	}
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies([]string{"10.0.0.0/8,127.0.0.1", " ::1 ", ""})
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, n := range got {
		s = append(s, n.String())
	}
	if want := "10.0.0.0/8 127.0.0.1/32 ::1/128"; strings.Join(s, " ") != want {
		t.Fatalf("parsed %q, want %q", s, want)
	}
	for _, bad := range []string{"10.0.0.0/33", "proxy.local", "1.2.3", "10.0.0.0/8/8"} {
		if _, err := ParseTrustedProxies([]string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: error %v, want one naming it", bad, err)
		}
	}
}

func FuzzParseTrustedProxies(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "127.0.0.1,::1", "fe80::/10", "1.2.3.4/0", "", ",", "::ffff:1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		nets, err := ParseTrustedProxies([]string{s})
		if err != nil {
			return
		}
		for _, n := range nets {
			ones, bits := n.Mask.Size()
			if bits == 0 || ones > bits || len(n.IP) != bits/8 {
				t.Fatalf("%q parsed to a malformed range %v", s, n)
			}
			if !n.Contains(n.IP) {
				t.Fatalf("%q: range %v does not contain its own address", s, n)
			}
		}
	})
}
