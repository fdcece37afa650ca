package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
)

// errNotLoopback is returned for any target outside the loopback range. The
// check happens on the configured URL, before anything is sent, and again
// in every dialer, on the address actually dialled.
var errNotLoopback = errors.New("not a loopback target (only 127.0.0.0/8, ::1 and localhost are allowed)")

// loopbackHost checks one host (no port) and returns the IP literal to dial.
// Host names other than localhost are refused without being resolved, so not
// even a DNS query leaves the machine.
func loopbackHost(host string) (string, error) {
	h := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if i := strings.IndexByte(h, '%'); i >= 0 {
		h = h[:i] // an IPv6 zone does not change whether it is loopback
	}
	if strings.EqualFold(h, "localhost") || strings.EqualFold(h, "localhost.") {
		return "127.0.0.1", nil
	}
	ip := net.ParseIP(h)
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("%q: %w", host, errNotLoopback)
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String(), nil
	}
	return ip.String(), nil
}

// loopbackAddr checks a host:port and returns the host:port to dial.
func loopbackAddr(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", fmt.Errorf("%q: %w", hostport, err)
	}
	ip, err := loopbackHost(host)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(ip, port), nil
}

// target is a checked http or https URL: where to dial and what to send.
type target struct {
	u    *url.URL
	dial string // loopback ip:port
	host string // Host header
	ipv6 bool
	tls  *tls.Config // https: the client's TLS settings (set by the runner)
}

// parseTarget parses an http or https URL and refuses anything that is not
// on a loopback address.
func parseTarget(raw string) (*target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: only http:// and https:// URLs are supported", raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%q: user information in the URL is not supported", raw)
	}
	hostport := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		hostport = net.JoinHostPort(u.Hostname(), port)
	}
	dial, err := loopbackAddr(hostport)
	if err != nil {
		return nil, err
	}
	if u.Path == "" {
		u.Path = "/"
	}
	ip, _, _ := net.SplitHostPort(dial)
	return &target{u: u, dial: dial, host: u.Host, ipv6: strings.Contains(ip, ":")}, nil
}

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h). With it, a
// socket bound to a source address gets its port at connect time, per
// destination, so every source address has the whole ephemeral port range.
const ipBindAddressNoPort = 24

// guardedControl is the dialers' Control hook: it runs just before connect(2)
// with the resolved address, refuses a non-loopback one, and asks for a late
// port choice when a source address is bound.
func guardedControl(network, address string, c syscall.RawConn) error {
	if _, err := loopbackAddr(address); err != nil {
		return err
	}
	if network == "tcp4" || network == "tcp" {
		_ = c.Control(func(fd uintptr) {
			// Best effort: an old kernel without the option still works.
			_ = setsockoptInt(fd, syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
		})
	}
	return nil
}
