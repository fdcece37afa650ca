package server

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// transport is how a client is connected. The census counts connections by it.
type transport uint8

const (
	transportSSE        transport = iota // a one-channel SSE stream
	transportSSEMulti                    // a multiplexed SSE stream (/v1/stream)
	transportPollSocket                  // a long-poll socket (POST /v1/sockets), between polls too
	transportPoll                        // a one-shot poll while it waits
	numTransports
)

// transportNames are the transports as the registry, the admin API and the metrics name them.
var transportNames = [numTransports]string{"sse", "sse_multi", "poll_socket", "poll"}

func (t transport) String() string { return transportNames[t] }

// connCounts are the open connections of one app, or of the node, by transport, and (for
// an app) how many were opened, closed and refused since the node started.
type connCounts struct {
	total          atomic.Int64
	by             [numTransports]atomic.Int64
	opened, closed [numTransports]atomic.Uint64
	// refusedNode, refusedApp and refusedRate count connections turned away by the node's
	// limit, by the app's, and by the per-address rate.
	refusedNode, refusedApp, refusedRate atomic.Uint64
}

// snapshot returns the counts by transport name.
func (cc *connCounts) snapshot() map[string]int64 {
	out := make(map[string]int64, numTransports)
	for t := range numTransports {
		out[t.String()] = cc.by[t].Load()
	}
	return out
}

// census counts the node's open connections — per app and in all — and admits a new one only
// within the node's limit (Config.MaxConnections) and its app's (limits.max_connections).
// What it counts is what holds the node's memory: open streams, long-poll sockets, and
// one-shot polls while they wait.
type census struct {
	node connCounts
	max  int64 // the node's limit; 0: none
	// draining is set when the node drains (Server.Drain): every new connection is refused.
	draining atomic.Bool
	// rate limits how fast one client address may open connections; nil: no limit.
	rate *addrRate
}

// retryAfterSeconds is what a refused client is told to wait (Retry-After), spread so that a
// crowd turned away together does not come back together.
func retryAfterSeconds() int { return 2 + rand.IntN(4) }

// admit counts a new connection of app, or refuses it with 503 over_capacity when the node or
// the app is full. Each admit that succeeds needs one leave.
func (c *census) admit(app *App, t transport, addr string) error {
	if c.draining.Load() {
		e := errorf(http.StatusServiceUnavailable, "shutting_down", "this node is draining; reconnect, to another node")
		e.RetryAfter = retryAfterSeconds()
		return e
	}
	if c.rate != nil {
		if wait, ok := c.rate.allow(addr, time.Now()); !ok {
			app.conns.refusedRate.Add(1)
			e := errorf(http.StatusTooManyRequests, "rate_limited", "too many new connections from this address; try again shortly")
			e.RetryAfter = wait
			return e
		}
	}
	if n := c.node.total.Add(1); c.max > 0 && n > c.max {
		c.node.total.Add(-1)
		app.conns.refusedNode.Add(1)
		return overCapacity(fmt.Sprintf("this node has its maximum of %d connections; try again shortly, or another node", c.max))
	}
	limit := int64(limitsOf(app).MaxConnections)
	if n := app.conns.total.Add(1); limit > 0 && n > limit {
		app.conns.total.Add(-1)
		c.node.total.Add(-1)
		app.conns.refusedApp.Add(1)
		return overCapacity(fmt.Sprintf("this app has its maximum of %d connections on this node; try again shortly", limit))
	}
	c.node.by[t].Add(1)
	app.conns.by[t].Add(1)
	app.conns.opened[t].Add(1)
	return nil
}

// leave uncounts a connection admit counted.
func (c *census) leave(app *App, t transport) {
	app.conns.by[t].Add(-1)
	app.conns.total.Add(-1)
	app.conns.closed[t].Add(1)
	c.node.by[t].Add(-1)
	c.node.total.Add(-1)
}

// addrRate is a token bucket per client address: perSec new connections a second, in bursts
// of up to a second's worth.
type addrRate struct {
	perSec  float64
	mu      sync.Mutex
	buckets map[string]*rateBucket
	swept   time.Time
}

type rateBucket struct {
	tokens float64
	at     time.Time
}

func newAddrRate(perSec float64) *addrRate {
	if perSec <= 0 {
		return nil
	}
	return &addrRate{perSec: perSec, buckets: make(map[string]*rateBucket)}
}

// burst is how many connections an address may open at once.
func (r *addrRate) burst() float64 { return max(r.perSec, 1) }

// allow takes a token of addr's bucket, or says how many seconds until there is one.
func (r *addrRate) allow(addr string, now time.Time) (retryAfter int, ok bool) {
	if r == nil {
		return 0, true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.swept) > time.Minute {
		// A full bucket says nothing a new one would not: forget it, so the map holds only
		// the addresses active in the last moments.
		for a, b := range r.buckets {
			if b.tokens+now.Sub(b.at).Seconds()*r.perSec >= r.burst() {
				delete(r.buckets, a)
			}
		}
		r.swept = now
	}
	b := r.buckets[addr]
	if b == nil {
		b = &rateBucket{tokens: r.burst(), at: now}
		r.buckets[addr] = b
	}
	b.tokens = min(r.burst(), b.tokens+now.Sub(b.at).Seconds()*r.perSec)
	b.at = now
	if b.tokens < 1 {
		return int(math.Ceil((1 - b.tokens) / r.perSec)), false
	}
	b.tokens--
	return 0, true
}

func overCapacity(msg string) *apiError {
	e := errorf(http.StatusServiceUnavailable, "over_capacity", msg)
	e.RetryAfter = retryAfterSeconds()
	return e
}
