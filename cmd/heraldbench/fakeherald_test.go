package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fakeHerald is a small in-process server speaking Herald's wire contract,
// for the tests: SSE subscriptions with retry, herald:connected and pings,
// and POST publishing with a bearer token. It can be told to misbehave on
// purpose, so the tests can check that the tool notices.
type fakeHerald struct {
	token string

	noReady bool          // never send herald:connected
	raw     bool          // hijack the connection and stream without chunking, with CRLF line ends
	ping    time.Duration // heartbeat comment interval (0: none)
	// Misbehaviour on channel "bench.0", by payload seq.
	drop      map[uint64]bool
	dup       map[uint64]bool
	holdUntil map[uint64]uint64 // hold message k back until message v has been sent
	closeAt   uint64            // close every stream of bench.0 after sending this seq
	// onSubscribe, when set, sees every subscription request.
	onSubscribe func(r *http.Request)

	mu        sync.Mutex
	published map[string]uint64 // accepted publishes per channel
	srcIPs    map[string]int    // subscriptions per client address
	subs      map[string]map[*fakeSub]bool
	held      map[uint64][]byte
	nextID    atomic.Uint64
	reqAuth   atomic.Int64 // publishes refused for their token
}

type fakeSub struct {
	out  chan []byte
	quit chan struct{}
	once sync.Once
}

func (s *fakeSub) close() { s.once.Do(func() { close(s.quit) }) }

func newFakeHerald(token string) *fakeHerald {
	return &fakeHerald{token: token, published: map[string]uint64{}, srcIPs: map[string]int{}, subs: map[string]map[*fakeSub]bool{}, held: map[uint64][]byte{}}
}

func (h *fakeHerald) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/health" {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"status":"ok"}`))
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/channels/")
	ch, ok2 := strings.CutSuffix(rest, "/events")
	if !ok || !ok2 || ch == "" || !validChannelName(ch) {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		h.subscribe(w, r, ch)
	case http.MethodPost:
		h.publish(w, r, ch)
	default:
		http.Error(w, "method", http.StatusMethodNotAllowed)
	}
}

func (h *fakeHerald) publishedOn(ch string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.published[ch]
}

func (h *fakeHerald) frame(id, ch, event string, data json.RawMessage) []byte {
	env, _ := json.Marshal(map[string]any{"id": id, "channel": ch, "event": event, "data": data, "ts": time.Now().UnixMilli()})
	return []byte("id: " + id + "\nevent: " + event + "\ndata: " + string(env) + "\n\n")
}

func (h *fakeHerald) publish(w http.ResponseWriter, r *http.Request, ch string) {
	if r.Header.Get("Authorization") != "Bearer "+h.token {
		h.reqAuth.Add(1)
		http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
		return
	}
	var body struct {
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Event == "" {
		http.Error(w, `{"error":"bad body"}`, http.StatusBadRequest)
		return
	}
	var p struct {
		Seq uint64 `json:"seq"`
	}
	_ = json.Unmarshal(body.Data, &p)
	id := strconv.FormatUint(h.nextID.Add(1), 10) + "-0"
	f := h.frame(id, ch, body.Event, body.Data)

	h.mu.Lock()
	h.published[ch]++
	var frames [][]byte
	closeAfter := false
	if ch == "bench.0" && p.Seq > 0 {
		switch {
		case h.drop[p.Seq]:
		case h.holdUntil[p.Seq] != 0:
			h.held[h.holdUntil[p.Seq]] = f
		default:
			frames = append(frames, f)
			if h.dup[p.Seq] {
				frames = append(frames, f)
			}
			if held := h.held[p.Seq]; held != nil {
				frames = append(frames, held)
				delete(h.held, p.Seq)
			}
		}
		closeAfter = h.closeAt != 0 && p.Seq == h.closeAt
	} else {
		frames = append(frames, f)
	}
	for s := range h.subs[ch] {
		for _, fr := range frames {
			select {
			case s.out <- fr:
			default:
			}
		}
		if closeAfter {
			s.close()
		}
	}
	h.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"id":%q,"channel":%q}`, id, ch)
}

func (h *fakeHerald) subscribe(w http.ResponseWriter, r *http.Request, ch string) {
	s := &fakeSub{out: make(chan []byte, 4096), quit: make(chan struct{})}
	if h.onSubscribe != nil {
		h.onSubscribe(r)
	}
	h.mu.Lock()
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		h.srcIPs[ip]++
	}
	if h.subs[ch] == nil {
		h.subs[ch] = map[*fakeSub]bool{}
	}
	h.subs[ch][s] = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.subs[ch], s)
		h.mu.Unlock()
	}()

	var write func([]byte) error
	var flush func()
	if h.raw {
		conn, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n")
		write = func(b []byte) error {
			_, err := bw.Write([]byte(strings.ReplaceAll(string(b), "\n", "\r\n")))
			return err
		}
		flush = func() { _ = bw.Flush() }
		go func() { // notice the client going away
			_, _ = bufio.NewReader(conn).ReadByte()
			s.close()
		}()
	} else {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		write = func(b []byte) error { _, err := w.Write(b); return err }
		flush = func() { _ = rc.Flush() }
	}
	_ = write([]byte("retry: 3000\n\n"))
	if !h.noReady {
		_ = write([]byte("event: herald:connected\ndata: {\"socket_id\":\"s1\",\"heartbeat\":15,\"cursor\":\"0-0\"}\n\n"))
	}
	flush()
	var tick <-chan time.Time
	if h.ping > 0 {
		t := time.NewTicker(h.ping)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case f := <-s.out:
			if write(f) != nil {
				return
			}
			flush()
		case <-tick:
			if write([]byte(": ping\n\n")) != nil {
				return
			}
			flush()
		case <-s.quit:
			return
		case <-r.Context().Done():
			return
		}
	}
}
