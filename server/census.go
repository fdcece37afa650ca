package server

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
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
	// refusedNode and refusedApp count connections turned away by the node's limit and by
	// the app's.
	refusedNode, refusedApp atomic.Uint64
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
}

// retryAfterSeconds is what a refused client is told to wait (Retry-After), spread so that a
// crowd turned away together does not come back together.
func retryAfterSeconds() int { return 2 + rand.IntN(4) }

// admit counts a new connection of app, or refuses it with 503 over_capacity when the node or
// the app is full. Each admit that succeeds needs one leave.
func (c *census) admit(app *App, t transport) error {
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

func overCapacity(msg string) *apiError {
	e := errorf(http.StatusServiceUnavailable, "over_capacity", msg)
	e.RetryAfter = retryAfterSeconds()
	return e
}
