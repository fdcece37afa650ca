package test

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-rt/herald/test/testkit"
)

// TestDurabilityReplicated: with --durability replicated a publish is answered 201 only once
// the Redis replica has the event. With the replica hung it is answered 503
// replication_timeout — and is in the channel's history all the same — and the retry with the
// same Idempotency-Key, once the replica is back, answers 200 with the same id.
func TestDurabilityReplicated(t *testing.T) {
	t.Parallel()
	master := startPrivateRedis(t, "--repl-diskless-sync-delay", "0")
	replica := startPrivateRedis(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port()))
	// Connected is not enough: a replica still loading the master's data, or one the master
	// has not yet seen acknowledge, confirms nothing. In sync once it confirms a write.
	if !testkit.WaitFor(10*time.Second, func() bool { return confirmsWrites(master.Addr()) }) {
		t.Fatal("the replica did not sync")
	}
	h := startNodes(t, onRedis(master), 1, "--durability", "replicated", "--replication-timeout", "300ms")[0]
	tok := h.Publisher(t)
	ch := uniqueChannel("replicated")
	sub := mustSSE(t, h.Base+eventsPath(ch), nil)
	sub.expectPreamble(t)
	publish := func(key string, n int) reply {
		r, err := h.publishBody(tok, ch, []byte(fmt.Sprintf(`{"event":"Tick","data":{"n":%d}}`, n)), map[string][]string{"Idempotency-Key": {key}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := publish("k0", 0); r.Status != 201 {
		t.Fatalf("publish with the replica in sync: %s", r)
	}
	if err := replica.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	hung := publish("k1", 1)
	replica.Signal(syscall.SIGCONT)
	expectAPIError(t, "publish with the replica hung", hung, 503, "replication_timeout")
	retry := publish("k1", 1)
	if retry.Status != 200 || !strings.Contains(string(retry.Body), `"id"`) {
		t.Fatalf("the retry with the same key once the replica is back: %s, want 200 with the event's id", retry)
	}
	got := sub.mustEvents(t, 2, 10*time.Second)
	if got[0].N != 0 || got[1].N != 1 || !strings.Contains(string(retry.Body), got[1].Env.ID) {
		t.Fatalf("subscriber got %v %v; the retry answered %s", got[0].Env.ID, got[1].Env.ID, retry.Body)
	}
	sub.expectQuiet(t, 200*time.Millisecond)
}

// TestDurabilityRefusedAtStartup: a durability level the store cannot give stops the node at
// startup, saying why.
func TestDurabilityRefusedAtStartup(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--durability", "replicated"}, "durability replicated needs Redis"},
		{[]string{"--durability", "memory", "--redis-url", testRedis(t)}, "does not go with a Redis option"},
		{[]string{"--durability", "fsync"}, "want memory, redis or replicated"},
	} {
		_, err := tryStartHerald(t, heraldOpts{name: "durability", secret: randomSecret(), args: c.args}, fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t)))
		if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want an exit at startup saying %q, got %v", c.args, c.want, err)
		}
	}
}

// replicaInSync reports whether the redis-server at addr is a replica whose initial sync is
// done and whose link to its master is up.
func replicaInSync(addr string) bool {
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command("redis-cli", "-h", host, "-p", port, "INFO", "replication").Output()
	info := string(out)
	return err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up") &&
		strings.Contains(info, "master_sync_in_progress:0")
}

// confirmsWrites reports whether a replica of the redis-server at addr confirms a write to it
// within 100 ms: a write and a WAIT on one connection.
func confirmsWrites(addr string) bool {
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command("redis-cli", "-h", host, "-p", port)
	cmd.Stdin = strings.NewReader("SET herald-sync-probe 1\nWAIT 1 100\n")
	out, err := cmd.Output()
	f := strings.Fields(string(out))
	return err == nil && len(f) > 0 && f[len(f)-1] == "1"
}
