// Package testkit is what Herald's tests share to run against real parts: a redis-server they
// start, stop, hang and restart; a TCP proxy that can cut or mute the connections it carries;
// a Server-Sent Events reader that keeps each frame's exact bytes; the herald binary as a child
// process; and waiting for a condition instead of sleeping.
//
// It is used by the black-box tests in test/, by the Redis store's and the engine's tests, and
// by the load generator. It knows nothing of Herald's packages: it talks to processes over
// loopback, as clients do.
package testkit

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNoRedis says redis-server is not installed; `make test` installs it.
var ErrNoRedis = errors.New("redis-server is not on PATH: install it (apt-get install redis-server) or run the tests with make test")

// Redis is a redis-server this process started on a free loopback port, with a directory of its
// own (where an append-only file survives a restart).
type Redis struct {
	bin, dir string
	conf     string // a config file, which redis-server takes only as its first argument
	args     []string
	port     int
	ownDir   bool

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartRedis starts redis-server in a new temporary directory, keeping nothing on disk unless
// args say otherwise (for example "--appendonly", "yes", "--appendfsync", "always").
func StartRedis(args ...string) (*Redis, error) {
	dir, err := os.MkdirTemp("", "herald-redis-")
	if err != nil {
		return nil, err
	}
	r, err := StartRedisIn(dir, args...)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	r.ownDir = true
	return r, nil
}

// StartRedisIn is StartRedis in a directory the caller owns.
func StartRedisIn(dir string, args ...string) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNoRedis
	}
	var lastErr error
	for range 5 { // a free port may be taken by someone else before redis-server binds it
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		r := &Redis{bin: bin, dir: dir, args: args, port: port}
		if lastErr = r.Start(); lastErr == nil {
			return r, nil
		}
	}
	return nil, lastErr
}

// Start starts the server again on its port and directory, after Stop.
func (r *Redis) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return errors.New("redis-server is already running")
	}
	var args []string
	if r.conf != "" {
		args = append(args, r.conf)
	}
	args = append(append(args, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", r.dir, "--daemonize", "no", "--logfile", "redis.log"), r.args...)
	cmd := exec.Command(r.bin, args...)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	if err := WaitRedis(r.Addr(), exited, 10*time.Second); err != nil {
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("redis-server on port %d: %w\n%s", r.port, err, r.LogTail(20))
	}
	r.cmd, r.exited = cmd, exited
	return nil
}

// Stop kills the server (SIGKILL, as a crash would) and waits for it to exit.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGCONT) // a hung server still dies, and must not stay stopped
	r.cmd.Process.Kill()
	<-r.exited
	r.cmd, r.exited = nil, nil
}

// Close stops the server and removes the directory StartRedis made.
func (r *Redis) Close() {
	r.Stop()
	if r.ownDir {
		os.RemoveAll(r.dir)
	}
}

// Signal sends sig to the server: SIGSTOP hangs it with its connections open, SIGCONT resumes it.
func (r *Redis) Signal(sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return fmt.Errorf("redis-server on port %d is not running", r.port)
	}
	return r.cmd.Process.Signal(sig)
}

// PID is the server's process id, 0 when it is not running.
func (r *Redis) PID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Port is the server's port; Addr its host:port; URL a go-redis URL for database 0.
func (r *Redis) Port() int      { return r.port }
func (r *Redis) Addr() string   { return "127.0.0.1:" + strconv.Itoa(r.port) }
func (r *Redis) URL() string    { return "redis://" + r.Addr() + "/0" }
func (r *Redis) Dir() string    { return r.dir }
func (r *Redis) Running() bool  { r.mu.Lock(); defer r.mu.Unlock(); return r.cmd != nil }
func (r *Redis) String() string { return "redis-server " + r.Addr() }

// LogTail is the last n lines of the server's log.
func (r *Redis) LogTail(n int) string {
	b, err := os.ReadFile(r.dir + "/redis.log")
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// WaitRedis waits until the server at addr answers PING, for up to d, or until exited (when
// not nil) closes.
func WaitRedis(addr string, exited <-chan struct{}, d time.Duration) error {
	var err error
	ok := WaitFor(d, func() bool {
		select {
		case <-exited:
			err = errors.New("it exited")
			return true
		default:
		}
		_, err = RedisCommand(addr, "PING")
		return err == nil
	})
	if !ok {
		return fmt.Errorf("no answer to PING within %v: %v", d, err)
	}
	return err
}

// RedisCommand sends one command on a fresh connection and returns the first line of the reply
// (an error reply as an error). It speaks just enough RESP for tests: PING, CLIENT KILL, CONFIG.
func RedisCommand(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "-") {
		return "", errors.New(line[1:])
	}
	return line, nil
}

var shared struct {
	once  sync.Once
	url   string
	err   error
	redis *Redis
}

// SharedRedisURL is the Redis a whole test binary shares: HERALD_TEST_REDIS_URL (what make test
// sets), or a redis-server started once on first use. Tests that share it keep apart by key
// prefix. StopSharedRedis ends the one started here.
func SharedRedisURL() (string, error) {
	shared.once.Do(func() {
		if u := os.Getenv("HERALD_TEST_REDIS_URL"); u != "" {
			shared.url = u
			return
		}
		shared.redis, shared.err = StartRedis()
		if shared.err == nil {
			shared.url = shared.redis.URL()
		}
	})
	return shared.url, shared.err
}

// StopSharedRedis stops the redis-server SharedRedisURL started, if it did; call it from
// TestMain after the tests ran.
func StopSharedRedis() {
	if shared.redis != nil {
		shared.redis.Close()
	}
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WaitFor checks cond every 10 ms for up to d and reports whether it held: the way to wait for
// something to happen, rather than sleeping and hoping it did.
func WaitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
