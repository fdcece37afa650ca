package testkit

import (
	"fmt"
	"os"
	"path/filepath"
)

// StartCaddy runs Caddy in the foreground on a free loopback port. site(port) is the Caddyfile's
// site block: it must serve 127.0.0.1:port (`bind 127.0.0.1`). The global options before it are
// the test's: no admin endpoint (its default port would be shared by every Caddy), no HTTP→HTTPS
// redirect listener (port 80), and storage, config and home in the server's directory. Caddy logs
// to its output (Logs).
func StartCaddy(site func(port int) string) (*ProxyServer, error) {
	return startProxyServer(proxyLaunch{
		name: "caddy", pkg: "caddy",
		env: func(dir string) []string {
			return []string{"HOME=" + dir, "XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
		},
		write: func(dir string, port int) ([]string, error) {
			conf := fmt.Sprintf(`{
	admin off
	auto_https disable_redirects
	storage file_system %s
}

%s
`, filepath.Join(dir, "data"), site(port))
			path := filepath.Join(dir, "Caddyfile")
			if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
				return nil, err
			}
			return []string{"run", "--config", path, "--adapter", "caddyfile"}, nil
		},
	})
}
