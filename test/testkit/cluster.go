package testkit

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// RedisCluster is a Redis Cluster of redis-servers this process started on loopback, made with
// `redis-cli --cluster create`, as an operator makes one. Its node timeout is short (1 s), so a
// killed master's replica takes over within a few seconds.
type RedisCluster struct {
	Nodes []*Redis // masters first, as redis-cli assigned them at creation
}

// StartRedisCluster starts masters × (1 + replicas) servers in cluster mode and joins them,
// each master with its replicas; extra args go to every server.
func StartRedisCluster(masters, replicas int, args ...string) (*RedisCluster, error) {
	if masters < 3 {
		return nil, errors.New("redis-cli --cluster create needs at least 3 masters")
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, errors.New("redis-cli is not on PATH: install redis-tools (make test does)")
	}
	c := &RedisCluster{}
	for range masters * (1 + replicas) {
		n, err := startClusterNode(args)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	create := append([]string{"--cluster", "create"}, c.Addrs()...)
	create = append(create, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command(cli, create...).CombinedOutput(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// startClusterNode starts one server with its cluster bus on a port chosen here: the default,
// port+10000, may be out of range or taken.
func startClusterNode(args []string) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNoRedis
	}
	dir, err := os.MkdirTemp("", "herald-cluster-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 {
		port, err1 := FreePort()
		bus, err2 := FreePort()
		if err := errors.Join(err1, err2); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if port == bus {
			continue
		}
		r := &Redis{bin: bin, dir: dir, port: port, ownDir: true, args: append([]string{
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "1000", "--cluster-port", strconv.Itoa(bus),
			// A replica that lost its master briefly still takes over; tests kill masters.
			"--cluster-replica-validity-factor", "0",
		}, args...)}
		if lastErr = r.Start(); lastErr == nil {
			return r, nil
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

// Addrs are every node's host:port, the seeds a client starts from.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// Seeds is Addrs joined with commas, as --redis-cluster takes them.
func (c *RedisCluster) Seeds() string { return strings.Join(c.Addrs(), ",") }

// Close kills every node and removes their directories.
func (c *RedisCluster) Close() {
	for _, n := range c.Nodes {
		n.Close()
	}
}

// Cli runs redis-cli against the node at addr and returns its output.
func (c *RedisCluster) Cli(addr string, args ...string) (string, error) {
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// WaitHealthy waits until every running node reports cluster_state:ok, every replica is in
// sync with its master, and the running nodes agree on which node serves each slot.
func (c *RedisCluster) WaitHealthy(d time.Duration) error {
	var why string
	ok := WaitFor(d, func() bool {
		var view string
		for _, n := range c.Nodes {
			if !n.Running() {
				continue
			}
			info, err := c.Cli(n.Addr(), "cluster", "info")
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				why = n.Addr() + ": " + firstLine(info) + fmt.Sprint(err)
				return false
			}
			repl, err := c.Cli(n.Addr(), "info", "replication")
			if err != nil || (strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up")) {
				why = n.Addr() + ": a replica not in sync with its master yet"
				return false
			}
			slots, err := c.Cli(n.Addr(), "cluster", "nodes")
			if err != nil {
				why = err.Error()
				return false
			}
			masters := masterSlots(slots)
			if view == "" {
				view = masters
			} else if masters != view {
				why = "the nodes disagree on the slots' masters"
				return false
			}
		}
		return true
	})
	if !ok {
		return fmt.Errorf("redis cluster not healthy within %v: %s", d, why)
	}
	return nil
}

// masterSlots reduces CLUSTER NODES output to the masters that serve slots, each with its
// slot ranges, sorted: what the nodes must agree on.
func masterSlots(out string) string {
	var masters []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		masters = append(masters, addr+" "+strings.Join(f[8:], " "))
	}
	slices.Sort(masters)
	return strings.Join(masters, ";")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// MasterOf returns the running node that serves key's slot as master.
func (c *RedisCluster) MasterOf(key string) (*Redis, error) {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		slot, err := c.Cli(n.Addr(), "cluster", "keyslot", key)
		if err != nil {
			return nil, err
		}
		nodes, err := c.Cli(n.Addr(), "cluster", "nodes")
		if err != nil {
			return nil, err
		}
		s, _ := strconv.Atoi(strings.TrimSpace(slot))
		for _, line := range strings.Split(nodes, "\n") {
			f := strings.Fields(line)
			if len(f) < 9 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
				continue
			}
			for _, r := range f[8:] {
				lo, hi, found := strings.Cut(r, "-")
				if !found {
					hi = lo
				}
				a, err1 := strconv.Atoi(lo)
				b, err2 := strconv.Atoi(hi)
				if err1 == nil && err2 == nil && a <= s && s <= b {
					addr, _, _ := strings.Cut(f[1], "@")
					for _, m := range c.Nodes {
						if m.Addr() == addr {
							return m, nil
						}
					}
				}
			}
		}
		return nil, fmt.Errorf("no master serves slot %d", s)
	}
	return nil, errors.New("no node is running")
}

// nodeID is the cluster id of the node at addr.
func (c *RedisCluster) nodeID(addr string) (string, error) {
	out, err := c.Cli(addr, "cluster", "myid")
	return strings.TrimSpace(out), err
}

// Masters are the running nodes that serve slots as masters.
func (c *RedisCluster) Masters() ([]*Redis, error) {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		out, err := c.Cli(n.Addr(), "cluster", "nodes")
		if err != nil {
			return nil, err
		}
		var masters []*Redis
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 9 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
				continue
			}
			addr, _, _ := strings.Cut(f[1], "@")
			for _, m := range c.Nodes {
				if m.Addr() == addr {
					masters = append(masters, m)
				}
			}
		}
		return masters, nil
	}
	return nil, errors.New("no node is running")
}

// MoveSlot moves the slot of key, with its keys, to the master to, the way redis-cli --cluster
// reshard moves each slot: IMPORTING and MIGRATING, MIGRATE in batches, then SETSLOT NODE on
// every master. Clients see ASK and TRYAGAIN while it runs, and the old master's shard
// channel subscribers get a sunsubscribe at the end.
func (c *RedisCluster) MoveSlot(key string, to *Redis) error {
	from, err := c.MasterOf(key)
	if err != nil {
		return err
	}
	if from == to {
		return nil
	}
	out, err := c.Cli(from.Addr(), "cluster", "keyslot", key)
	if err != nil {
		return err
	}
	slot := strings.TrimSpace(out)
	fromID, err1 := c.nodeID(from.Addr())
	toID, err2 := c.nodeID(to.Addr())
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	steps := [][]string{
		{to.Addr(), "cluster", "setslot", slot, "importing", fromID},
		{from.Addr(), "cluster", "setslot", slot, "migrating", toID},
	}
	for _, s := range steps {
		if _, err := c.Cli(s[0], s[1:]...); err != nil {
			return err
		}
	}
	for range 10000 {
		out, err := c.Cli(from.Addr(), "cluster", "getkeysinslot", slot, "100")
		if err != nil {
			return err
		}
		keys := strings.Fields(out)
		if len(keys) == 0 {
			break
		}
		args := append([]string{"migrate", "127.0.0.1", strconv.Itoa(to.Port()), "", "0", "5000", "KEYS"}, keys...)
		if out, err := c.Cli(from.Addr(), args...); err != nil || strings.Contains(out, "ERR") {
			return fmt.Errorf("migrate: %v %s", err, out)
		}
	}
	masters, err := c.Masters()
	if err != nil {
		return err
	}
	// The new owner first, then the old one, as redis-cli does, then everyone else.
	order := []*Redis{to, from}
	for _, m := range masters {
		if m != to && m != from {
			order = append(order, m)
		}
	}
	for _, m := range order {
		if _, err := c.Cli(m.Addr(), "cluster", "setslot", slot, "node", toID); err != nil {
			return err
		}
	}
	return nil
}
