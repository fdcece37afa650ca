package testkit

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is a loopback TCP proxy to one target that can break the connections it carries the
// ways networks do: cut them (clients reconnect), mute the target's answers (a reply lost on the
// way), or silence both directions (a connection a failover left open and dead). It also keeps
// the HTTP request heads it forwards.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns map[*proxied]struct{}
	heads []string
	wg    sync.WaitGroup
}

// proxied is one client connection and its upstream.
type proxied struct {
	client, up net.Conn
	muted      atomic.Bool // the target's answers are dropped
	silent     atomic.Bool // nothing passes either way
}

// StartProxy listens on a free loopback port and forwards every connection to target.
func StartProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[*proxied]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port; Base its http:// URL.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }
func (p *Proxy) Base() string { return "http://" + p.Addr() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	pc := &proxied{client: c, up: up}
	p.mu.Lock()
	p.conns[pc] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
		c.Close()
		up.Close()
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // target → client
		defer wg.Done()
		defer c.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 && !pc.muted.Load() && !pc.silent.Load() {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	// Client → target, noting each request head (keep-alive may carry several).
	buf := make([]byte, 32<<10)
	var pending []byte
	for {
		n, err := c.Read(buf)
		if n > 0 && !pc.silent.Load() {
			if _, werr := up.Write(buf[:n]); werr != nil {
				break
			}
			// Noted once forwarded: a test that sees a request here knows the target has it.
			pending = p.noteHeads(append(pending, buf[:n]...))
		}
		if err != nil {
			break
		}
	}
	up.Close()
	wg.Wait()
}

// noteHeads records the complete request heads at the start of pending and returns the rest.
func (p *Proxy) noteHeads(pending []byte) []byte {
	for {
		i := bytes.Index(pending, []byte("\r\n\r\n"))
		if i < 0 {
			if len(pending) > 64<<10 {
				pending = pending[len(pending)-(64<<10):]
			}
			return pending
		}
		p.mu.Lock()
		p.heads = append(p.heads, string(pending[:i]))
		p.mu.Unlock()
		pending = pending[i+4:]
	}
}

func (p *Proxy) each(f func(*proxied)) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pc := range p.conns {
		f(pc)
	}
	return len(p.conns)
}

// CutAll closes every connection the proxy carries and reports how many there were.
func (p *Proxy) CutAll() int {
	return p.each(func(pc *proxied) { pc.client.Close(); pc.up.Close() })
}

// MuteReplies drops, from now on, whatever the target answers on the connections open now;
// what their clients send still reaches it. Later connections are not muted.
func (p *Proxy) MuteReplies() { p.each(func(pc *proxied) { pc.muted.Store(true) }) }

// Silence lets nothing through, either way, on the connections open now, and keeps them open:
// only a probe can tell them from idle ones. Later connections work.
func (p *Proxy) Silence() { p.each(func(pc *proxied) { pc.silent.Store(true) }) }

// Requests returns the HTTP request heads forwarded so far whose request line contains
// pathPart.
func (p *Proxy) Requests(pathPart string) []*http.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*http.Request
	for _, h := range p.heads {
		first, _, _ := strings.Cut(h, "\r\n")
		if !strings.Contains(first, pathPart) {
			continue
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(h + "\r\n\r\n")))
		if err == nil {
			out = append(out, req)
		}
	}
	return out
}

// Close stops listening, cuts every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() {
	p.ln.Close()
	p.CutAll()
	p.wg.Wait()
}
