package testkit

import (
	"os"
	"path/filepath"
)

// StartHAProxy runs HAProxy in the foreground (-db) on a free loopback port. conf(port) is
// everything after the global section (defaults, frontends, backends): its frontend must bind
// 127.0.0.1:port. The global section is the test's: logs (those of `log global`) go to its
// output (Logs), no pid file, no stats socket, no chroot.
func StartHAProxy(conf func(port int) string) (*ProxyServer, error) {
	return startProxyServer(proxyLaunch{
		name: "haproxy", pkg: "haproxy",
		write: func(dir string, port int) ([]string, error) {
			cfg := "global\n    log stderr format raw local0 info\n\n" + conf(port)
			path := filepath.Join(dir, "haproxy.cfg")
			if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
				return nil, err
			}
			return []string{"-db", "-f", path}, nil
		},
	})
}
