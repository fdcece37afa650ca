package server

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
	"github.com/herald-rt/herald/stream"
)

// This node in its deployment: what it tells the registry about itself, keeping it registered
// while it serves, and the calls that must reach every node (terminating a user's
// connections). The registry itself is the store's (store.Registry); the per-channel counts
// are the engine's to keep there (stream.Hub.Register).

// nodeInfo is what a node says of itself in the registry, per app: the admin API's and the
// monitor's view of a node.
type nodeInfo struct {
	Addr        string           `json:"addr,omitempty"`
	AdminAddr   string           `json:"admin_addr,omitempty"`
	Version     string           `json:"version,omitempty"`
	Hostname    string           `json:"hostname,omitempty"`
	PID         int              `json:"pid"`
	Started     time.Time        `json:"started"`
	Connections map[string]int64 `json:"connections"` // by transport
	Sockets     int              `json:"sockets"`
	Channels    int              `json:"channels"` // with at least one socket of this node
}

// nodeSelf is what the node knows of itself beyond its counts.
type nodeSelf struct {
	started  time.Time
	hostname string
}

// info describes the node for app's registry.
func (s *Server) nodeInfo(app *App) json.RawMessage {
	info := nodeInfo{Addr: s.cfg.Addr}
	info.AdminAddr = s.cfg.AdminAddr
	info.Version = s.cfg.Version
	info.Hostname = s.self.hostname
	info.PID = os.Getpid()
	info.Started = s.self.started.UTC().Truncate(time.Second)
	info.Connections = app.conns.snapshot()
	hc := app.Hub.Counters()
	info.Sockets, info.Channels = hc.Sockets, hc.Channels
	b, _ := json.Marshal(info)
	return b
}

// registerNodes keeps the node in every app's registry until ctx ends, then removes it.
func (s *Server) registerNodes(ctx context.Context) {
	host, _ := os.Hostname()
	s.self.hostname = host
	for _, a := range s.apps {
		s.janitor.Add(1)
		go func() {
			defer s.janitor.Done()
			a.Hub.Register(ctx, a.Registry, stream.RegisterOptions{
				TTL:  s.cfg.NodeTTL,
				Info: func() json.RawMessage { return s.nodeInfo(a) },
				OnOccupancy: func(changes []store.Occupancy) {
					for _, c := range changes {
						s.log.Debug().Str("app", a.ID).Str("channel", c.Channel).Bool("occupied", c.Occupied).Msg("channel occupancy")
					}
					s.hookOccupancy(a, changes)
					for _, c := range changes {
						if !c.Occupied && channel.IsPresence(c.Channel) {
							s.expireVacated(a, c.Channel)
						}
					}
				},
				OnWritten: func(counts map[string]int) { s.hookCounts(a, counts) },
				OnError: func(err error) {
					s.log.Warn().Err(err).Str("app", a.ID).Msg("node registry write failed; retrying")
				},
			})
		}()
	}
}

// expireVacated reaps the members a vacated presence channel still lists as their leases run
// out: those of sockets whose node died, which no node refreshes and which no node with sockets
// in the channel would ever reap (presenceLoop reaps the channels this node has members in).
// It looks every third of the lease until nobody is left, for at most the life of the
// channel's keys (twice the lease). The registry reports a vacancy to one node only, so they
// are announced once, member_removed webhooks included.
func (s *Server) expireVacated(app *App, ch string) {
	if app.Presence == nil {
		return
	}
	s.janitor.Add(1)
	go func() {
		defer s.janitor.Done()
		every := max(s.cfg.PresenceTTL/3, 20*time.Millisecond)
		t := time.NewTicker(every)
		defer t.Stop()
		for range 7 { // 7 thirds of the lease: past the keys' life
			select {
			case <-s.stopCtx.Done():
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(s.stopCtx, every)
			gone, err := app.Presence.Expire(ctx, ch)
			if err == nil {
				s.membersGone(ctx, app, ch, gone)
			}
			left, err := app.Presence.Members(ctx, ch)
			cancel()
			if err == nil && len(left) == 0 {
				return
			}
		}
	}()
}

// The node-wide calls, sent to every node of the app (this one runs them directly).
type (
	// nodeStatsCall asks a node for its figures (nodeStats).
	nodeStatsCall struct{}
)

// nodeStats are a node's live figures for one app: its counts now, and its counters since it
// started, from which the monitor derives rates. The counters are absent when the node runs
// without metrics; StorePing when the store did not answer.
type nodeStats struct {
	Time        time.Time        `json:"time"`
	Connections map[string]int64 `json:"connections"` // by transport
	Sockets     int              `json:"sockets"`
	Channels    int              `json:"channels"`
	Resyncs     uint64           `json:"resyncs"`
	Gaps        uint64           `json:"gaps_refilled"`
	*nodeCounters
	StorePing *float64 `json:"store_ping_seconds"`
}

// nodeCounters are the app's totals since the node started (appMeters).
type nodeCounters struct {
	Publishes       uint64 `json:"publishes"`
	PublishFailures uint64 `json:"publish_failures"`
	Deliveries      uint64 `json:"deliveries"`
	BytesWritten    uint64 `json:"bytes_written"`
	SlowDisconnects uint64 `json:"slow_disconnects"`
}

// storePingTimeout bounds the store round trip a stats call measures.
const storePingTimeout = 500 * time.Millisecond

var opNodeStats = nodeOp[nodeStatsCall]{"node_stats", func(api socketAPI, app *App, ctx context.Context, _ nodeStatsCall) socketResult {
	hc := app.Hub.Counters()
	st := nodeStats{
		Time:        time.Now().UTC(),
		Connections: app.conns.snapshot(),
		Sockets:     hc.Sockets,
		Channels:    hc.Channels,
		Resyncs:     hc.HistoryExpired,
		Gaps:        hc.Gaps,
	}
	if m := app.meters; m != nil {
		st.nodeCounters = &nodeCounters{Publishes: m.published.Load(), PublishFailures: m.publishFailed.Load(), SlowDisconnects: m.slowDisconnects.Load()}
		for t := range numTransports {
			st.Deliveries += m.deliveries[t].load()
			st.BytesWritten += m.bytes[t].load()
		}
	}
	pctx, cancel := context.WithTimeout(ctx, storePingTimeout)
	defer cancel()
	start := time.Now()
	if app.Hub.Store().Ping(pctx) == nil {
		d := time.Since(start).Seconds()
		st.StorePing = &d
	}
	return jsonResult(http.StatusOK, st)
}}

type terminateUserCall struct {
	UserID string `json:"user_id"`
}

// terminatedAnswer is what a node answers a terminateUserCall with.
type terminatedAnswer struct {
	Sockets int `json:"sockets"`
}

var opTerminateUser = nodeOp[terminateUserCall]{"terminate_user", func(api socketAPI, app *App, _ context.Context, call terminateUserCall) socketResult {
	return jsonResult(http.StatusOK, terminatedAnswer{Sockets: api.sessions.terminateUser(app, call.UserID)})
}}

// everyNode runs a node-wide call on each live node of app's registry, this one included,
// in parallel, and returns their answers. A node that vanished between the listing and the
// call (404 socket_gone) is left out; any other failure fails the whole call, with that
// node's answer.
func everyNode[C any](ctx context.Context, api socketAPI, app *App, op nodeOp[C], call C) ([]socketResult, error) {
	nodes, err := app.Registry.Nodes(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	self := app.Hub.Node()
	ids := []string{self}
	for _, n := range nodes {
		if n.ID != self {
			ids = append(ids, n.ID)
		}
	}
	results := make([]socketResult, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if id == self {
				results[i] = op.run(api, app, ctx, call)
				return
			}
			results[i] = api.remoteCall(ctx, app, id, op.name, id, call)
		}()
	}
	wg.Wait()
	out := results[:0]
	for _, r := range results {
		switch {
		case r.Status == http.StatusOK:
			out = append(out, r)
		case r.Status != http.StatusNotFound:
			return nil, &remoteFailure{r}
		}
	}
	return out, nil
}
