package authz

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"time"
)

// Webhook events, as Pusher names them.
const (
	HookChannelOccupied   = "channel_occupied"
	HookChannelVacated    = "channel_vacated"
	HookMemberAdded       = "member_added"
	HookMemberRemoved     = "member_removed"
	HookClientEvent       = "client_event"
	HookSubscriptionCount = "subscription_count"
)

// HookEvents lists every webhook event, in the order Pusher's documentation gives them.
var HookEvents = []string{HookChannelOccupied, HookChannelVacated, HookMemberAdded, HookMemberRemoved, HookClientEvent, HookSubscriptionCount}

// DefaultVacateDelay is how long a channel stays empty before channel_vacated is sent
// (webhook_vacate_delay): a channel occupied again within it sends neither event.
const DefaultVacateDelay = 3 * time.Second

// Bounds of the webhook settings.
const (
	maxWebhooks    = 10
	maxVacateDelay = time.Hour
)

// Webhook is one endpoint of an app's webhooks: where events go and which ones.
type Webhook struct {
	URL    string
	Events []string // a subset of HookEvents, in their order
}

// Wants reports whether the endpoint takes the event.
func (w Webhook) Wants(event string) bool { return slices.Contains(w.Events, event) }

// SignWebhook returns the X-Pusher-Signature of a webhook body: hex HMAC-SHA256 of the body
// with the app's secret, as Pusher signs webhooks.
func (a *App) SignWebhook(body []byte) string {
	m := hmac.New(sha256.New, a.secret)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

type webhookSpec struct {
	URL    string   `yaml:"url"`
	Events []string `yaml:"events"`
}

// webhooks checks an app's webhooks and its vacate delay.
func (b *builder) webhooks(i int, a *appSpec, app *App) error {
	at := func(rest ...any) []any { return append([]any{"apps", i}, rest...) }
	if len(a.Webhooks) > maxWebhooks {
		return b.errAt(at("webhooks"), "at most %d webhooks per app", maxWebhooks)
	}
	for j, w := range a.Webhooks {
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return b.errAt(at("webhooks", j, "url"), "want an http:// or https:// URL without credentials, not %q", w.URL)
		}
		if len(w.Events) == 0 {
			return b.errAt(at("webhooks", j, "events"), "name the events to send: %v", HookEvents)
		}
		hook := Webhook{URL: w.URL}
		for _, e := range HookEvents {
			if slices.Contains(w.Events, e) {
				hook.Events = append(hook.Events, e)
			}
		}
		for _, e := range w.Events {
			if !slices.Contains(HookEvents, e) {
				return b.errAt(at("webhooks", j, "events"), "unknown event %q: want some of %v", e, HookEvents)
			}
		}
		app.Webhooks = append(app.Webhooks, hook)
	}
	app.VacateDelay = DefaultVacateDelay
	if a.VacateDelay != "" {
		d, err := time.ParseDuration(a.VacateDelay)
		if err != nil || d < 0 || d > maxVacateDelay {
			return b.errAt(at("webhook_vacate_delay"), "want a duration from 0s to %v, like 3s, not %q", maxVacateDelay, a.VacateDelay)
		}
		app.VacateDelay = d
	}
	return nil
}

// String names the endpoint for logs: its URL without query (which may carry a secret).
func (w Webhook) String() string {
	u, err := url.Parse(w.URL)
	if err != nil {
		return "webhook"
	}
	u.RawQuery, u.Fragment = "", ""
	return fmt.Sprintf("webhook %s", u)
}
