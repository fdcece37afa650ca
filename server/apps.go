package server

import (
	"net/http"

	"github.com/herald-rt/herald/server/authz"
	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/stream"
)

// App is one tenant of a Herald deployment. Every channel, stream key and presence set
// belongs to one app — each has its own hub over its own store keys — so two apps that use
// the same channel names never see each other's events.
type App struct {
	ID string
	// Hub fans out the app's events; its store holds the app's log.
	Hub *stream.Hub
	// Presence keeps the members of the app's presence channels.
	Presence store.Presence
	// Bus reaches the nodes holding the app's sockets; nil for a single node.
	Bus store.Bus
	// Pusher holds the app's Pusher key, secret and limits; nil when no app is configured, in
	// which case Pusher signatures and the Pusher HTTP API are refused.
	Pusher *authz.App
	// Registry lists the deployment's nodes and their sockets' counts per channel, which the
	// Pusher API's channel queries and the admin API answer from. Nil: the node is the whole
	// deployment (New gives it a memory registry).
	Registry store.Registry
	// Webhooks are the app's webhook endpoints, each with its queue in the app's store.
	Webhooks []WebhookEndpoint

	conns  connCounts // this node's open connections of the app, by transport
	meters *appMeters // nil when metrics are off
}

// apps are the tenants a server serves; the first is the default app. They decide which app a
// request is for, and that a token is only ever used for its own.
type apps []*App

// byID returns the app with id, or nil.
func (as apps) byID(id string) *App {
	for _, a := range as {
		if a.ID == id {
			return a
		}
	}
	return nil
}

// def serves requests that name no app.
func (as apps) def() *App { return as[0] }

// forToken picks the app of a v1 request: the token's app claim, or the default app.
func (as apps) forToken(cl *Claims) (*App, error) {
	if cl == nil || cl.App == "" {
		return as.def(), nil
	}
	if a := as.byID(cl.App); a != nil {
		return a, nil
	}
	return nil, errorf(http.StatusForbidden, "unknown_app", "the token's app is not served here")
}

// errAppMismatch refuses a token on a request whose app was chosen by something else (the
// socket it acts on): a token only ever speaks for its own app.
var errAppMismatch = errorf(http.StatusForbidden, "app_mismatch", "the token is for another app than the socket it acts on")

// check verifies that cl, a verified token, is for app.
func (as apps) check(cl *Claims, app *App) error {
	a, err := as.forToken(cl)
	if err != nil {
		return err
	}
	if a != app {
		return errAppMismatch
	}
	return nil
}

// ofSocket finds the app whose key signed a socket's token.
func (as apps) ofSocket(tokens socketTokens, socketID, token string) *App {
	for _, a := range as {
		if tokens.valid(a.ID, socketID, token) {
			return a
		}
	}
	return nil
}
