package testkit

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ProxyServer is a reverse proxy (nginx, Caddy, HAProxy) running as a child process on a free
// loopback port, with its config, logs and state in a temporary directory of its own: it never
// touches the machine's own service of the same name, its config or its pid file.
type ProxyServer struct {
	Name string // the program: nginx, caddy, haproxy
	Port int
	Dir  string

	cmd     *exec.Cmd
	out     *LogBuffer
	logFile string // the server's own log file, if it writes one
	done    chan struct{}
	waitErr error
}

// proxyLaunch is how to run one kind of proxy server: write returns the arguments after
// writing the config for port into dir.
type proxyLaunch struct {
	name    string                    // the program on PATH
	pkg     string                    // the Debian package that has it
	logFile string                    // file in dir where the server writes its own log, "" if none
	env     func(dir string) []string // extra environment variables, KEY=value
	write   func(dir string, port int) ([]string, error)
}

// startProxyServer starts a proxy server on a free port. A port taken between choosing it and
// binding it is tried again, up to three times.
func startProxyServer(l proxyLaunch) (*ProxyServer, error) {
	bin, err := exec.LookPath(l.name)
	if err != nil {
		return nil, fmt.Errorf("%s is not on PATH: apt-get install -y %s", l.name, l.pkg)
	}
	dir, err := os.MkdirTemp("", "herald-"+l.name+"-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := FreePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s, err := tryProxyServer(l, bin, dir, port)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "in use") {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func tryProxyServer(l proxyLaunch, bin, dir string, port int) (*ProxyServer, error) {
	args, err := l.write(dir, port)
	if err != nil {
		return nil, err
	}
	s := &ProxyServer{Name: l.name, Port: port, Dir: dir, out: &LogBuffer{}, done: make(chan struct{})}
	if l.logFile != "" {
		s.logFile = filepath.Join(dir, l.logFile)
		_ = os.Remove(s.logFile) // a failed attempt's lines would be read as this one's
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir = dir
	s.cmd.Env = os.Environ()
	if l.env != nil {
		s.cmd.Env = append(s.cmd.Env, l.env(dir)...)
	}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return nil, fmt.Errorf("%s exited before it listened on %s (%v):\n%s", l.name, s.Addr(), s.waitErr, s.Logs())
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
			c.Close()
			return s, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("%s did not listen on %s within 15s:\n%s", l.name, s.Addr(), s.Logs())
}

// Addr is the server's host:port on loopback.
func (s *ProxyServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Logs returns what the server wrote: its output, then its own log file if it has one.
func (s *ProxyServer) Logs() string {
	var b strings.Builder
	b.WriteString(s.out.String())
	if s.logFile != "" {
		if data, err := os.ReadFile(s.logFile); err == nil {
			fmt.Fprintf(&b, "---- %s ----\n%s", filepath.Base(s.logFile), data)
		}
	}
	return b.String()
}

// Running reports whether the process is still there.
func (s *ProxyServer) Running() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// stop ends the process: SIGTERM, then SIGKILL if it is still there 5 s later.
func (s *ProxyServer) stop() error {
	if !s.Running() {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return nil
	case <-time.After(5 * time.Second):
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.done:
		return nil
	case <-time.After(5 * time.Second):
		return errors.New(s.Name + ": still running 5s after SIGKILL")
	}
}

// Close stops the server and removes its directory.
func (s *ProxyServer) Close() error {
	err := s.stop()
	os.RemoveAll(s.Dir)
	return err
}
