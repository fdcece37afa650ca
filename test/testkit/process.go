package testkit

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// BuildWithoutRace builds the Go package pkg into out without the race detector, whatever
// GOFLAGS says: a server under test runs at its real speed while the tests run with -race.
func BuildWithoutRace(out, pkg string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go command is not on PATH: %w", err)
	}
	cmd := exec.Command(goBin, "build", "-o", out, pkg)
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		if v, ok := strings.CutPrefix(kv, "GOFLAGS="); ok {
			fields := slices.DeleteFunc(strings.Fields(v), func(f string) bool { return f == "-race" || f == "--race" })
			kv = "GOFLAGS=" + strings.Join(fields, " ")
		}
		env = append(env, kv)
	}
	cmd.Env = env
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w\n%s", err, buf.String())
	}
	return nil
}

// LogBuffer keeps the last 256 KiB a child process wrote, for the log of a test that failed.
type LogBuffer struct {
	mu      sync.Mutex
	b       []byte
	dropped int
}

const logBufferMax = 256 << 10

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if over := len(l.b) - logBufferMax; over > 0 {
		l.dropped += over
		l.b = append(l.b[:0], l.b[over:]...)
	}
	return len(p), nil
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dropped > 0 {
		return fmt.Sprintf("[… %d earlier bytes dropped …]\n%s", l.dropped, l.b)
	}
	return string(l.b)
}

// Main runs a package's tests, stops the redis-server SharedRedisURL may have started, and then
// fails the run if any goroutine leaked (go.uber.org/goleak). TestMain is then one line:
// os.Exit(testkit.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	StopSharedRedis()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}
