package testkit

import (
	"fmt"
	"os"
	"path/filepath"
)

// StartNginx starts nginx in the foreground on a free loopback port with a config of its own.
// httpConf(port) is the inside of the http {} block: it must listen on 127.0.0.1:port. The main
// context around it is the test's: one process (master_process off), the pid file, error log
// (nginx-error.log, at info level), access log and temp paths all in the server's directory, so
// nothing of the machine's nginx is read or written and no root-owned path is needed.
func StartNginx(httpConf func(port int) string) (*ProxyServer, error) {
	return startProxyServer(proxyLaunch{
		name: "nginx", pkg: "nginx", logFile: "nginx-error.log",
		write: func(dir string, port int) ([]string, error) {
			tmp := filepath.Join(dir, "tmp")
			if err := os.MkdirAll(tmp, 0o755); err != nil {
				return nil, err
			}
			conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log info;

events {
    worker_connections 1024;
}

http {
    access_log %[1]s/nginx-access.log;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;

%[3]s
}
`, dir, tmp, httpConf(port))
			path := filepath.Join(dir, "nginx.conf")
			if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
				return nil, err
			}
			// -e: the log nginx writes before it has read error_log from the config (it
			// would be /var/log/nginx/error.log otherwise).
			return []string{"-p", dir + "/", "-c", path, "-e", filepath.Join(dir, "nginx-error.log")}, nil
		},
	})
}
