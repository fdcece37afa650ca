package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// goMem is where a Go server's memory is, from its /debug/pprof: the heap in use and the
// goroutine stacks (both after a collection the request asks for), and the goroutine count.
// RSS says how much; these say whether it is heap or stacks, which is what tells a buffer
// held per stream from a goroutine kept per stream.
type goMem struct {
	ok         bool
	heapInuse  int64
	stackInuse int64
	goroutines int64
}

// maxProfileBytes bounds what is read of one profile: a goroutine profile of 20,000 streams
// grouped by stack is a few hundred KB.
const maxProfileBytes = 64 << 20

// fetch GETs admin+path into w, bounded in time and size.
func fetchAdmin(client *http.Client, admin, path string, w io.Writer) error {
	resp, err := client.Get(strings.TrimRight(admin, "/") + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, maxProfileBytes+1))
	if err == nil && n > maxProfileBytes {
		err = fmt.Errorf("%s: larger than %d bytes", path, maxProfileBytes)
	}
	return err
}

// readGoMem reads a server's heap, stacks and goroutines. The heap profile's text form ends
// with the runtime's MemStats; gc=1 collects first, so the heap is what is live, and stacks
// a collection could shrink are shrunk.
func readGoMem(client *http.Client, admin string) (goMem, error) {
	var m goMem
	if admin == "" {
		return m, errors.New("no admin listener")
	}
	var heap bytes.Buffer
	if err := fetchAdmin(client, admin, "/debug/pprof/heap?debug=1&gc=1", &heap); err != nil {
		return m, err
	}
	found := 0
	sc := bufio.NewScanner(&heap)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = ")
		if !ok {
			continue
		}
		value, _, _ = strings.Cut(value, " / ") // "Stack = StackInuse / StackSys"
		n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "HeapInuse":
			m.heapInuse = n
			found++
		case "Stack":
			m.stackInuse = n
			found++
		}
	}
	if found != 2 {
		return m, errors.New("no MemStats in the heap profile")
	}
	var g bytes.Buffer
	if err := fetchAdmin(client, admin, "/debug/pprof/goroutine?debug=1", &g); err != nil {
		return m, err
	}
	// "goroutine profile: total N"
	first, _, _ := strings.Cut(g.String(), "\n")
	total, ok := strings.CutPrefix(first, "goroutine profile: total ")
	n, err := strconv.ParseInt(strings.TrimSpace(total), 10, 64)
	if !ok || err != nil {
		return m, errors.New("no total in the goroutine profile")
	}
	m.goroutines, m.ok = n, true
	return m, nil
}

// saveProfiles writes the server's heap profile (after a collection) and its goroutines
// grouped by stack into dir, named after the run.
func saveProfiles(client *http.Client, admin, dir, name string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range []struct{ path, file string }{
		{"/debug/pprof/heap?gc=1", name + "-heap.pb.gz"},
		{"/debug/pprof/goroutine?debug=1", name + "-goroutine.txt"},
	} {
		f, err := os.Create(filepath.Join(dir, p.file))
		if err != nil {
			return err
		}
		err = fetchAdmin(client, admin, p.path, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// adminClient reads the admin listener: loopback only, TLS trusted as the run's, and slow
// enough for a goroutine profile of tens of thousands of goroutines.
func adminClient(cfg *runConfig) *http.Client {
	return newLoopbackClient(30*time.Second, 1, cfg.RootCAs)
}
