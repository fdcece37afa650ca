// Package authz owns Herald's authorization decisions and the secrets they need: the
// herald.yaml configuration (apps with their Pusher key and secret, channel rules, server API
// keys), the evaluation of channel rules against a token's claims, the verification of Pusher
// channel authorization signatures (what a Laravel app's /broadcasting/auth issues) and of
// signed Pusher HTTP API requests (what Laravel's Pusher/Reverb broadcaster sends).
//
// It must not know about HTTP handlers, Echo, sockets, streams or stores: callers pass plain
// values (a method, a path, query parameters, a body, the current time, decoded JWT claims)
// and get a decision, a typed error (compare with errors.Is) or a short reason for logs.
//
// # Channel access for tokens
//
// A token may subscribe to (or publish to) a channel only when BOTH hold:
//
//   - one of its herald.subscribe (or herald.publish) patterns matches the channel, where `*`
//     matches any run of characters; and
//   - every channel rule whose pattern matches the channel, and whose action covers the
//     request, has its condition met by the token's claims.
//
// A private- or presence- channel that no rule matches is decided by the token pattern alone,
// unless channels.default is "deny": then such a channel needs at least one matching rule.
// Public channels are never affected by channels.default.
//
// Channel rules apply to tokens only. A Pusher channel signature means the app's own Laravel
// code authorized the socket; an API key or a signed Pusher HTTP API request is a trusted
// backend, limited by its patterns or by its app.
//
// What a channel name is, and how a pattern matches one, is package channel's (store/channel,
// a leaf with no dependencies): the same rules as the engine and the stores apply.
//
// All values are immutable once loaded and safe for concurrent use.
package authz
