package authz

import (
	"crypto/sha256"
	"crypto/subtle"

	"github.com/herald-rt/herald/store/channel"
)

// APIKey is a server API key: a backend sends it as `Authorization: Bearer <key>` and may then
// publish to the channels its patterns match, in its app. Only the key's SHA-256 is kept.
type APIKey struct {
	Name    string   // for logs
	App     string   // the app it publishes into: its app setting, else the default app ("" without apps)
	Publish []string // channel patterns; `*` matches any run of characters

	digest [sha256.Size]byte
}

// String names the key, so an APIKey is safe to log.
func (k *APIKey) String() string { return "API key " + k.Name }

const maxAPIKeyLen = 1024

func digestKey(key string) [sha256.Size]byte { return sha256.Sum256([]byte(key)) }

// APIKey returns the configured API key equal to token. It compares SHA-256 digests in
// constant time, against every configured key, so neither the key nor its position leaks.
func (c *Config) APIKey(token string) (*APIKey, bool) {
	if c == nil || token == "" || len(token) > maxAPIKeyLen {
		return nil, false
	}
	d := digestKey(token)
	var found *APIKey
	for _, k := range c.apiKeys {
		if subtle.ConstantTimeCompare(d[:], k.digest[:]) == 1 && found == nil {
			found = k
		}
	}
	return found, found != nil
}

// CanPublish reports whether the key may publish to channel.
func (k *APIKey) CanPublish(ch string) bool {
	return k != nil && channel.Valid(ch) == nil && channel.MatchAny(k.Publish, ch)
}
