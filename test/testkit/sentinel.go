package testkit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SentinelMasterName is the name the sentinels of a RedisSentinel monitor their master by.
const SentinelMasterName = "herald-test"

// RedisSentinel is a master, its replica and three Sentinels watching them, all redis-servers
// this process started on loopback, as an operator sets up Redis Sentinel. The sentinels take a
// master for down after 1 s without an answer and need 2 of them to agree, so a killed master's
// replica takes over within a few seconds.
//
// Master and Replica are the servers as started: after a failover the replica is the master
// (CurrentMaster says which is).
type RedisSentinel struct {
	Master    *Redis
	Replica   *Redis
	Sentinels []*Redis
	Name      string // the master name the sentinels know, SentinelMasterName
}

// StartRedisSentinel starts the master, its replica and three sentinels and waits until the
// replica is in sync and every sentinel knows the master, the replica and the other sentinels:
// until a failover could happen. Extra args go to the master and the replica.
func StartRedisSentinel(args ...string) (*RedisSentinel, error) {
	// Diskless replication waits 5 s by default for more replicas to sync with one transfer;
	// this set has one, and the promoted replica must serve the same way.
	args = append([]string{"--repl-diskless-sync-delay", "0"}, args...)
	s := &RedisSentinel{Name: SentinelMasterName}
	var err error
	if s.Master, err = StartRedis(args...); err != nil {
		return nil, err
	}
	if s.Replica, err = StartRedis(append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(s.Master.Port())}, args...)...); err != nil {
		s.Close()
		return nil, err
	}
	for range 3 {
		n, err := startSentinelNode(s.Name, s.Master.Port())
		if err != nil {
			s.Close()
			return nil, err
		}
		s.Sentinels = append(s.Sentinels, n)
	}
	if err := s.waitReady(30 * time.Second); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// startSentinelNode starts one sentinel monitoring the master on masterPort. redis-server runs
// as a sentinel only with a config file, which must be writable: the sentinel saves what it
// learns there.
func startSentinelNode(name string, masterPort int) (*Redis, error) {
	server, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNoRedis
	}
	dir, err := os.MkdirTemp("", "herald-sentinel-")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "sentinel.conf")
	var lastErr error
	for range 5 { // a free port may be taken by someone else before the sentinel binds it
		port, err := FreePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		// Written afresh on each try: a sentinel that failed to start may have rewritten it.
		// down-after 1 s and failover-timeout 5 s are short enough for a test and long enough
		// not to take a busy machine's slow answer for a failure.
		cfg := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 2\n"+
			"sentinel down-after-milliseconds %[1]s 1000\n"+
			"sentinel failover-timeout %[1]s 5000\n"+
			"sentinel parallel-syncs %[1]s 1\n"+
			"sentinel announce-ip 127.0.0.1\n", name, masterPort)
		if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		r := &Redis{bin: server, conf: conf, dir: dir, port: port, ownDir: true, args: []string{"--sentinel"}}
		if lastErr = r.Start(); lastErr == nil {
			return r, nil
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

// waitReady waits until the replica is in sync and every sentinel sees the master up with one
// replica and two other sentinels, and sees the replica up and in sync: what a sentinel needs
// to start a failover and to pick the replica for it.
func (s *RedisSentinel) waitReady(d time.Duration) error {
	var why string
	ok := WaitFor(d, func() bool {
		repl, err := sentinelQuery(s.Replica.Addr(), "INFO", "replication")
		if err != nil || !strings.Contains(strings.Join(repl, ""), "master_link_status:up") {
			why = fmt.Sprintf("replica %s not in sync with its master yet (%v)", s.Replica.Addr(), err)
			return false
		}
		for _, n := range s.Sentinels {
			m, err := sentinelQuery(n.Addr(), "SENTINEL", "MASTER", s.Name)
			if err != nil {
				why = fmt.Sprintf("sentinel %s: %v", n.Addr(), err)
				return false
			}
			f := pairs(m)
			if f["flags"] != "master" || f["num-slaves"] != "1" || f["num-other-sentinels"] != "2" {
				why = fmt.Sprintf("sentinel %s sees master %s with flags %s, %s replicas and %s other sentinels",
					n.Addr(), f["port"], f["flags"], f["num-slaves"], f["num-other-sentinels"])
				return false
			}
			r, err := sentinelQuery(n.Addr(), "SENTINEL", "REPLICAS", s.Name)
			if err != nil {
				why = fmt.Sprintf("sentinel %s: %v", n.Addr(), err)
				return false
			}
			if f := pairs(r); f["flags"] != "slave" || f["master-link-status"] != "ok" || f["port"] != strconv.Itoa(s.Replica.Port()) {
				why = fmt.Sprintf("sentinel %s sees replica %s with flags %s and link %s", n.Addr(), f["port"], f["flags"], f["master-link-status"])
				return false
			}
		}
		return true
	})
	if !ok {
		return fmt.Errorf("redis sentinel not ready within %v: %s", d, why)
	}
	return nil
}

// pairs reads a flattened field-value reply (one replica's or master's state) into a map.
func pairs(reply []string) map[string]string {
	m := make(map[string]string, len(reply)/2)
	for i := 0; i+1 < len(reply); i += 2 {
		m[reply[i]] = reply[i+1]
	}
	return m
}

// SentinelAddrs are the sentinels' host:port, what a client is given to find the master.
func (s *RedisSentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.Sentinels))
	for i, n := range s.Sentinels {
		addrs[i] = n.Addr()
	}
	return addrs
}

// Close kills every server and sentinel and removes their directories.
func (s *RedisSentinel) Close() {
	for _, n := range s.Sentinels { // first, so none starts a failover while the rest go
		n.Close()
	}
	for _, r := range []*Redis{s.Replica, s.Master} {
		if r != nil {
			r.Close()
		}
	}
}

// CurrentMaster is the master's host:port as the first running sentinel that answers reports it.
func (s *RedisSentinel) CurrentMaster() (string, error) {
	err := errors.New("no sentinel is running")
	for _, n := range s.Sentinels {
		if !n.Running() {
			continue
		}
		var addr string
		if addr, err = s.masterBy(n); err == nil {
			return addr, nil
		}
	}
	return "", err
}

func (s *RedisSentinel) masterBy(n *Redis) (string, error) {
	reply, err := sentinelQuery(n.Addr(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.Name)
	if err != nil {
		return "", fmt.Errorf("sentinel %s: %w", n.Addr(), err)
	}
	if len(reply) != 2 {
		return "", fmt.Errorf("sentinel %s does not know master %s: %q", n.Addr(), s.Name, reply)
	}
	return net.JoinHostPort(reply[0], reply[1]), nil
}

// WaitFailover waits up to d until every running sentinel reports the same master, other than
// old, and that server says it is a master; it returns the new master's host:port. Clients
// that ask any sentinel from then on find the new master.
func (s *RedisSentinel) WaitFailover(old string, d time.Duration) (string, error) {
	var now, why string
	ok := WaitFor(d, func() bool {
		now = ""
		for _, n := range s.Sentinels {
			if !n.Running() {
				continue
			}
			addr, err := s.masterBy(n)
			switch {
			case err != nil:
				why = err.Error()
				return false
			case addr == old:
				why = fmt.Sprintf("sentinel %s still reports %s", n.Addr(), old)
				return false
			case now != "" && addr != now:
				why = fmt.Sprintf("the sentinels disagree: %s and %s", now, addr)
				return false
			}
			now = addr
		}
		if now == "" {
			why = "no sentinel is running"
			return false
		}
		repl, err := sentinelQuery(now, "INFO", "replication")
		if err != nil || !strings.Contains(strings.Join(repl, ""), "role:master") {
			why = fmt.Sprintf("%s is not a master yet (%v)", now, err)
			return false
		}
		return true
	})
	if !ok {
		return "", fmt.Errorf("no failover from %s within %v: %s", old, d, why)
	}
	return now, nil
}

// sentinelQuery sends one command on a fresh connection and returns the reply flattened into
// strings: nested arrays in order, nils as "". An error reply is an error. Each exchange is
// bounded by a deadline, so a hung server cannot hang the caller.
func sentinelQuery(addr string, args ...string) ([]string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return nil, err
	}
	var out []string
	return out, readFlat(bufio.NewReader(c), &out)
}

// readFlat reads one RESP2 reply and appends its values to out.
func readFlat(br *bufio.Reader, out *[]string) error {
	line, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return errors.New("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		*out = append(*out, line[1:])
	case '-':
		return errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return fmt.Errorf("bad bulk length %q", line)
		}
		if n < 0 {
			*out = append(*out, "")
			return nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return err
		}
		*out = append(*out, string(buf[:n]))
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return fmt.Errorf("bad array length %q", line)
		}
		for range n {
			if err := readFlat(br, out); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}
