package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
)

// Webhooks, in Pusher's format: the app's backend hears when a channel is occupied or vacated,
// when a member joins or leaves a presence channel, and of client events. Each event is
// generated once, where the deployment-wide truth is decided — the registry reports an
// occupancy transition to the one node whose write caused it, the presence store reports a
// user's first join and last leave to one caller — and queued in the store (Redis), one queue
// per endpoint, so a node that dies with events queued or in flight loses none. Every node
// runs a deliverer and the queue lets one at a time deliver (in queue order, taken over when
// it dies): batches of up to 50 events gathered for up to a second, signed as Pusher signs
// them, retried with backoff until the endpoint takes them. Delivery is at least once:
// receivers dedupe. Queueing is one store write beside the request's own, and delivery runs
// apart from every request, so a slow or dead endpoint never slows publishing or fan-out.

// WebhookEndpoint is one of an app's webhook endpoints and its queue.
type WebhookEndpoint struct {
	authz.Webhook
	Queue store.HookQueue
}

// hookEvent is one webhook event as Pusher sends it.
type hookEvent struct {
	Name     string `json:"name"`
	Channel  string `json:"channel"`
	UserID   string `json:"user_id,omitempty"`
	Event    string `json:"event,omitempty"`
	Data     string `json:"data,omitempty"`
	SocketID string `json:"socket_id,omitempty"`
	// SubscriptionCount is set on subscription_count only (where 0 is a count).
	SubscriptionCount *int `json:"subscription_count,omitempty"`
}

// Delivery settings.
const (
	hookBatchMax    = 50
	hookBatchWindow = time.Second       // how long a batch gathers after its first event
	hookPostTimeout = 10 * time.Second  // one POST to an endpoint
	hookMaxBackoff  = 20 * time.Second  // between retries; under the queue's stale time, so a retrying node keeps its claim
	hookQueueWrite  = 5 * time.Second   // a store write that queues events
	hookErrorPause  = 1 * time.Second   // after the store failed a claim
	hookUserAgent   = "herald-webhooks" // what endpoints see
)

// hook queues an event for every endpoint of the app that takes it. Failures are logged and
// counted: the request that caused the event has already succeeded.
func (s *Server) hook(ctx context.Context, app *App, e hookEvent) {
	if len(app.Webhooks) == 0 || channel.IsUser(e.Channel) {
		return
	}
	var payload []byte
	for _, ep := range app.Webhooks {
		if !ep.Wants(e.Name) {
			continue
		}
		if payload == nil {
			payload, _ = json.Marshal(e)
		}
		err := ep.Queue.Add(ctx, payload)
		s.hookQueued(app, ep, e, err)
	}
}

func (s *Server) hookQueued(app *App, ep WebhookEndpoint, e hookEvent, err error) {
	outcome := "queued"
	if err != nil {
		outcome = "lost"
		s.log.Warn().Err(err).Str("app", app.ID).Stringer("endpoint", ep).Str("event", e.Name).Str("channel", e.Channel).Msg("webhook event not queued")
	}
	s.cfg.Metrics.webhookEvent(app.ID, outcome)
}

// hookOccupancy queues the occupancy transitions the registry reported to this node. A
// vacancy waits for the app's vacate delay under the channel's key; an occupation within it
// withdraws the vacancy and is not sent either (the channel flapped).
func (s *Server) hookOccupancy(app *App, changes []store.Occupancy) {
	if len(app.Webhooks) == 0 {
		return
	}
	// Not s.stopCtx: a node shutting down deregisters, and the vacancies that causes are
	// queued after the server began to stop (the store closes only after Shutdown returns).
	ctx, cancel := context.WithTimeout(context.Background(), hookQueueWrite)
	defer cancel()
	delay := time.Duration(0)
	if app.Pusher != nil {
		delay = app.Pusher.VacateDelay
	}
	for _, c := range changes {
		if channel.IsUser(c.Channel) {
			continue
		}
		key := "vacated:" + c.Channel
		for _, ep := range app.Webhooks {
			e := hookEvent{Name: authz.HookChannelOccupied, Channel: c.Channel}
			var err error
			switch {
			case c.Occupied && (ep.Wants(authz.HookChannelOccupied) || ep.Wants(authz.HookChannelVacated)):
				var payload []byte // none: only withdraw a pending vacancy
				if ep.Wants(authz.HookChannelOccupied) {
					payload, _ = json.Marshal(e)
				}
				var added bool
				added, err = ep.Queue.AddOrCancel(ctx, key, payload)
				if !added && err == nil {
					continue
				}
			case !c.Occupied && ep.Wants(authz.HookChannelVacated):
				e.Name = authz.HookChannelVacated
				payload, _ := json.Marshal(e)
				err = ep.Queue.AddAfter(ctx, key, payload, delay)
			default:
				continue
			}
			s.hookQueued(app, ep, e, err)
		}
	}
}

// hookCounts queues subscription_count for the channels whose counts this node just wrote to
// the registry. The count itself is read when the event is sent (freshCounts): two nodes
// writing one channel at once read their totals in an order their queued events need not
// keep, so a count read at queueing time could arrive after a newer one.
func (s *Server) hookCounts(app *App, counts map[string]int) {
	wanted := false
	for _, ep := range app.Webhooks {
		wanted = wanted || ep.Wants(authz.HookSubscriptionCount)
	}
	if !wanted || app.Registry == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), hookQueueWrite) // as hookOccupancy's
	defer cancel()
	for ch := range counts {
		s.hook(ctx, app, hookEvent{Name: authz.HookSubscriptionCount, Channel: ch})
	}
}

// freshCounts gives a batch's subscription_count events the channels' deployment-wide counts
// now, from the registry, keeping one event per channel (the last); a channel whose count
// cannot be read is left out (a later change sends it again).
func (s *Server) freshCounts(ctx context.Context, app *App, payloads [][]byte) [][]byte {
	marker := []byte(`"name":"` + authz.HookSubscriptionCount + `"`)
	last := map[string]int{} // channel → index of its last count event
	for i, p := range payloads {
		if !bytes.Contains(p, marker) {
			continue
		}
		var e hookEvent
		if json.Unmarshal(p, &e) == nil && e.Name == authz.HookSubscriptionCount {
			last[e.Channel] = i
		}
	}
	if len(last) == 0 {
		return payloads
	}
	out := payloads[:0:0]
	for i, p := range payloads {
		if !bytes.Contains(p, marker) {
			out = append(out, p)
			continue
		}
		var e hookEvent
		if json.Unmarshal(p, &e) != nil || last[e.Channel] != i {
			continue
		}
		perNode, err := app.Registry.Subscriptions(ctx, e.Channel)
		if err != nil {
			continue
		}
		total := 0
		for _, n := range perNode {
			total += n
		}
		e.SubscriptionCount = &total
		b, _ := json.Marshal(e)
		out = append(out, b)
	}
	return out
}

// deliverHooks sends an endpoint's queued events until ctx ends.
func (s *Server) deliverHooks(ctx context.Context, app *App, ep WebhookEndpoint) {
	client := &http.Client{Timeout: hookPostTimeout}
	consumer := app.Hub.Node()
	log := s.log.With().Str("app", app.ID).Stringer("endpoint", ep).Logger()
	defer func() {
		// Stopping on purpose: hand the lease and any unacknowledged claims over now rather
		// than after --webhook-stale.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		if err := ep.Queue.Release(rctx, consumer); err != nil {
			log.Warn().Err(err).Msg("webhook lease not released; another node takes over once it is stale")
		}
	}()
	for ctx.Err() == nil {
		batch, err := s.claimBatch(ctx, ep, consumer)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn().Err(err).Msg("webhook queue unavailable; retrying")
				sleepCtx(ctx, hookErrorPause)
			}
			continue
		}
		if len(batch) == 0 {
			continue
		}
		ids := make([]string, len(batch))
		for i, h := range batch {
			ids[i] = h.ID
		}
		for attempt := 0; ctx.Err() == nil; attempt++ {
			status, err := s.postHooks(ctx, client, app, ep, batch)
			if err == nil {
				s.cfg.Metrics.webhookRequest(app.ID, "delivered", len(batch))
				ackCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), hookQueueWrite)
				if err := ep.Queue.Ack(ackCtx, ids...); err != nil {
					log.Warn().Err(err).Msg("webhook delivered but not acknowledged: it will be sent again")
				}
				cancel()
				break
			}
			s.cfg.Metrics.webhookRequest(app.ID, "failed", len(batch))
			wait := min(time.Second<<min(attempt, 10), hookMaxBackoff)
			wait = wait/2 + rand.N(wait/2+1)
			log.Warn().Err(err).Int("status", status).Int("events", len(batch)).Int("attempt", attempt+1).Dur("retry_in", wait).Msg("webhook delivery failed")
			_ = ep.Queue.Hold(ctx, consumer, ids...)
			sleepCtx(ctx, wait)
		}
	}
}

// claimBatch waits for a first event, then gathers more for up to hookBatchWindow.
func (s *Server) claimBatch(ctx context.Context, ep WebhookEndpoint, consumer string) ([]store.Hook, error) {
	batch, err := ep.Queue.Claim(ctx, consumer, hookBatchMax, hookBatchWindow)
	if err != nil || len(batch) == 0 {
		return nil, err
	}
	deadline := time.Now().Add(hookBatchWindow)
	for len(batch) < hookBatchMax {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		more, err := ep.Queue.Claim(ctx, consumer, hookBatchMax-len(batch), left)
		if err != nil {
			break // send what was claimed; the rest stays queued
		}
		batch = append(batch, more...)
	}
	return batch, nil
}

// postHooks sends one batch: {"time_ms":…,"events":[…]}, with the app's key and the body's
// signature. Any 2xx is success.
func (s *Server) postHooks(ctx context.Context, client *http.Client, app *App, ep WebhookEndpoint, batch []store.Hook) (int, error) {
	payloads := make([][]byte, len(batch))
	for i, h := range batch {
		payloads[i] = h.Payload
	}
	payloads = s.freshCounts(ctx, app, payloads)
	if len(payloads) == 0 {
		return 0, nil // only counts that could not be read: nothing to send
	}
	var body bytes.Buffer
	body.WriteString(`{"time_ms":`)
	body.WriteString(strconv.FormatInt(time.Now().UnixMilli(), 10))
	body.WriteString(`,"events":[`)
	for i, p := range payloads {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(p)
	}
	body.WriteString("]}")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body.Bytes()))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", hookUserAgent)
	req.Header.Set("X-Pusher-Key", app.Pusher.Key)
	req.Header.Set("X-Pusher-Signature", app.Pusher.SignWebhook(body.Bytes()))
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("the endpoint answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}

// startWebhooks runs a deliverer per webhook endpoint of every app until ctx ends.
func (s *Server) startWebhooks(ctx context.Context) {
	for _, a := range s.apps {
		if a.Pusher == nil {
			continue
		}
		for _, ep := range a.Webhooks {
			s.janitor.Add(1)
			go func() {
				defer s.janitor.Done()
				s.deliverHooks(ctx, a, ep)
			}()
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// logHookConfig says at start which endpoints each app sends webhooks to.
func logHookConfig(log zerolog.Logger, apps []*App) {
	for _, a := range apps {
		for _, ep := range a.Webhooks {
			log.Info().Str("app", a.ID).Stringer("endpoint", ep).Strs("events", ep.Events).Msg("webhooks")
		}
	}
}
