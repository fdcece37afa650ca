package authz

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/herald-rt/herald/store/channel"
)

// Config is a loaded and validated herald.yaml: the apps, the channel rules and the server API
// keys. It does not change after Load and is safe for concurrent use.
type Config struct {
	// Rules are the channel rules; never nil in a Config from Load or Parse.
	Rules *Rules

	apps       []*App
	byID       map[string]*App
	byKey      map[string]*App
	defaultApp *App
	apiKeys    []*APIKey
}

// App is one Pusher-protocol application (a Reverb "app"): its public id and key, its secret,
// and its settings. The secret is never exported; App signs and verifies with it.
type App struct {
	ID  string
	Key string
	// ClientEvents says who may send client events (whispers) on this app's channels.
	ClientEvents ClientEvents
	Limits       Limits
	// JWTPublicKeyFile is the PEM public key that verifies this app's tokens (jwt_public_key);
	// empty when the app has no key of its own or has a secret instead.
	JWTPublicKeyFile string
	// Durability is how durable an acknowledged publish is (durability): memory, redis or
	// replicated; empty for the deployment's --durability.
	Durability string
	// AllowedOrigins are the page origins whose browsers may use the app (allowed_origins);
	// unset, the deployment's --cors-origins decide.
	AllowedOrigins Origins
	// Webhooks are the app's webhook endpoints (webhooks); VacateDelay is how long a channel
	// stays empty before channel_vacated (webhook_vacate_delay, default DefaultVacateDelay).
	Webhooks    []Webhook
	VacateDelay time.Duration

	secret    []byte
	jwtSecret []byte // jwt_secret_env's value: the HS256 key of this app's tokens
}

// JWTSecret is the HS256 key of the app's own tokens, nil when it has none. Whoever holds it
// can mint tokens for this app only: an app with its own key accepts no other.
func (a *App) JWTSecret() []byte { return a.jwtSecret }

// HasOwnJWTKey reports whether the app's tokens are verified with a key of its own rather than
// the deployment's.
func (a *App) HasOwnJWTKey() bool { return len(a.jwtSecret) > 0 || a.JWTPublicKeyFile != "" }

// String names the app without its secret, so an App is safe to log.
func (a *App) String() string { return "app " + a.ID + " (key " + a.Key + ")" }

// GoString keeps %#v from printing the secret.
func (a *App) GoString() string {
	return "&authz.App{ID:" + strconv.Quote(a.ID) + ", Key:" + strconv.Quote(a.Key) + "}"
}

// ClientEvents is an app's accept_client_events_from setting.
type ClientEvents string

// The accept_client_events_from values, as Reverb has them.
const (
	ClientEventsMembers ClientEvents = "members" // only sockets subscribed to the channel (default)
	ClientEventsAll     ClientEvents = "all"     // any socket of the app
	ClientEventsNone    ClientEvents = "none"    // client events are disabled
)

// Limits are an app's per-channel and per-socket limits (Pusher's published values by default).
type Limits struct {
	MaxPresenceMembers    int // members of one presence channel
	MaxUserInfoBytes      int // size of a presence member's user_info JSON
	MaxUserIDLength       int // characters of a presence member's user_id
	ClientEventsPerSecond int // client events one socket may send per second
	// MaxConnections bounds the app's open connections on each node (streams, long-poll
	// sockets, waiting polls), as Reverb's max_connections does; 0: no limit.
	MaxConnections int
}

// DefaultLimits are Pusher's limits: 100 presence members, 1 KB user_info, 128-character user
// ids, 10 client events per second per socket.
func DefaultLimits() Limits {
	return Limits{MaxPresenceMembers: 100, MaxUserInfoBytes: 1024, MaxUserIDLength: 128, ClientEventsPerSecond: 10}
}

// App returns the app with this id, or nil.
func (c *Config) App(id string) *App {
	if c == nil {
		return nil
	}
	return c.byID[id]
}

// AppByKey returns the app with this key, or nil.
func (c *Config) AppByKey(key string) *App {
	if c == nil {
		return nil
	}
	return c.byKey[key]
}

// DefaultApp is the app used when a request names none (a v1 API token without an app claim);
// nil when no app is configured.
func (c *Config) DefaultApp() *App {
	if c == nil {
		return nil
	}
	return c.defaultApp
}

// Apps returns every app, in configuration order.
func (c *Config) Apps() []*App {
	if c == nil {
		return nil
	}
	return append([]*App(nil), c.apps...)
}

// Environment variables that define (or override) one app, as a Reverb .env does.
const (
	EnvAppID     = "HERALD_APP_ID"
	EnvAppKey    = "HERALD_APP_KEY"
	EnvAppSecret = "HERALD_APP_SECRET"
)

// MaxConfigSize bounds the configuration file.
const MaxConfigSize = 1 << 20

// Load reads and validates the configuration file at path. env looks up environment variables
// (pass os.Getenv; nil means an empty environment). An empty path means no file: the
// configuration then comes from the environment alone (HERALD_APP_ID/KEY/SECRET).
func Load(path string, env func(string) string) (*Config, error) {
	if path == "" {
		return Parse(nil, env)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg, err := Parse(data, env)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse validates a configuration document; see Load.
func Parse(data []byte, env func(string) string) (cfg *Config, err error) {
	if env == nil {
		env = func(string) string { return "" }
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("the configuration is larger than %d bytes", MaxConfigSize)
	}
	defer func() {
		// The YAML library reports its own failures as errors; this is a last guard so hostile
		// input can never take the process down at startup or on reload.
		if r := recover(); r != nil {
			cfg, err = nil, fmt.Errorf("invalid YAML: %v", r)
		}
	}()
	var spec fileSpec
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&spec); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("the configuration must be a single YAML document")
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root) // for line numbers; it parsed above
	b := &builder{spec: &spec, pos: &root, env: env}
	return b.build()
}

var unknownField = regexp.MustCompile(`^line (\d+): field (.*) not found in type authz\.(\w+)$`)

// yamlError rewords the library's errors: an unknown key names the key and the section.
func yamlError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("invalid YAML: %w", err)
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := unknownField.FindStringSubmatch(e); m != nil {
			e = fmt.Sprintf("line %s: unknown key %q in %s", m[1], m[2], sectionOf[m[3]])
		}
		msgs = append(msgs, e)
	}
	return errors.New(strings.Join(msgs, "; "))
}

var sectionOf = map[string]string{
	"fileSpec":     "the top level (default_app, apps, channels, api_keys)",
	"appSpec":      "an app (id, key, secret, secret_env, jwt_secret_env, jwt_public_key, accept_client_events_from, durability, allowed_origins, webhooks, webhook_vacate_delay, limits)",
	"webhookSpec":  "a webhook (url, events)",
	"limitsSpec":   "limits (max_presence_members, max_user_info_bytes, max_user_id_length, client_events_per_second)",
	"channelsSpec": "channels (default, rules)",
	"ruleSpec":     "a rule (channel, action, when)",
	"condSpec":     "a condition (claim with equals/in/contains/exists, all, any, not)",
	"apiKeySpec":   "an API key (name, key, key_env, key_sha256, app, publish)",
}

// The YAML document, as written.
type fileSpec struct {
	DefaultApp string       `yaml:"default_app"`
	Apps       []appSpec    `yaml:"apps"`
	Channels   channelsSpec `yaml:"channels"`
	APIKeys    []apiKeySpec `yaml:"api_keys"`
}

type appSpec struct {
	ID                     string        `yaml:"id"`
	Key                    string        `yaml:"key"`
	Secret                 string        `yaml:"secret"`
	SecretEnv              string        `yaml:"secret_env"`
	JWTSecretEnv           string        `yaml:"jwt_secret_env"`
	JWTPublicKey           string        `yaml:"jwt_public_key"`
	AcceptClientEventsFrom string        `yaml:"accept_client_events_from"`
	Durability             string        `yaml:"durability"`
	AllowedOrigins         []string      `yaml:"allowed_origins"`
	Webhooks               []webhookSpec `yaml:"webhooks"`
	VacateDelay            string        `yaml:"webhook_vacate_delay"`
	Limits                 limitsSpec    `yaml:"limits"`

	fromEnv   bool   // defined by HERALD_APP_ID alone
	envSecret string // HERALD_APP_SECRET, which wins over secret_env and secret
}

type limitsSpec struct {
	MaxPresenceMembers    *int `yaml:"max_presence_members"`
	MaxUserInfoBytes      *int `yaml:"max_user_info_bytes"`
	MaxUserIDLength       *int `yaml:"max_user_id_length"`
	ClientEventsPerSecond *int `yaml:"client_events_per_second"`
	MaxConnections        *int `yaml:"max_connections"`
}

type channelsSpec struct {
	Default string     `yaml:"default"`
	Rules   []ruleSpec `yaml:"rules"`
}

type ruleSpec struct {
	Channel string    `yaml:"channel"`
	Action  string    `yaml:"action"`
	When    *condSpec `yaml:"when"`
}

type condSpec struct {
	Claim    string      `yaml:"claim"`
	Equals   *string     `yaml:"equals"`
	In       *[]string   `yaml:"in"`
	Contains *string     `yaml:"contains"`
	Exists   *bool       `yaml:"exists"`
	All      *[]condSpec `yaml:"all"`
	Any      *[]condSpec `yaml:"any"`
	Not      *condSpec   `yaml:"not"`
}

type apiKeySpec struct {
	Name      string   `yaml:"name"`
	Key       string   `yaml:"key"`
	KeyEnv    string   `yaml:"key_env"`
	KeySHA256 string   `yaml:"key_sha256"`
	App       string   `yaml:"app"`
	Publish   []string `yaml:"publish"`
}

// builder turns the spec into a Config, naming the line of whatever it rejects.
type builder struct {
	spec *fileSpec
	pos  *yaml.Node
	env  func(string) string
}

// errAt formats an error about the value at path (keys and sequence indexes).
func (b *builder) errAt(path []any, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	where := pathString(path)
	if line := b.line(path); line > 0 {
		return fmt.Errorf("line %d: %s: %s", line, where, msg)
	}
	return fmt.Errorf("%s: %s", where, msg)
}

func pathString(path []any) string {
	var sb strings.Builder
	for _, p := range path {
		switch p := p.(type) {
		case string:
			if sb.Len() > 0 {
				sb.WriteByte('.')
			}
			sb.WriteString(p)
		case int:
			fmt.Fprintf(&sb, "[%d]", p)
		}
	}
	return sb.String()
}

// line finds the line of the node at path, or of its closest ancestor that exists.
func (b *builder) line(path []any) int {
	n := b.pos
	if n == nil || n.Kind != yaml.DocumentNode || len(n.Content) == 0 {
		return 0
	}
	n = n.Content[0]
	line := 0
	for _, p := range path {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		var next *yaml.Node
		switch p := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == p {
						next = n.Content[i+1]
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && p < len(n.Content) {
				next = n.Content[p]
			}
		}
		if next == nil {
			break
		}
		n, line = next, next.Line
	}
	return line
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// limit bounds for the limits section.
const (
	maxMaxPresenceMembers = 1_000_000
	maxMaxUserInfoBytes   = 64 << 10
	maxMaxUserIDLength    = 1024
	maxClientEventsRate   = 10_000
	maxMaxConnections     = 10_000_000
)

// MinJWTSecretLen is the shortest HS256 secret accepted, for an app's key as for the
// deployment's.
const MinJWTSecretLen = 32

// MinAPIKeyLen is the shortest plain API key accepted: a bearer secret must not be guessable.
const MinAPIKeyLen = 32

func (b *builder) build() (*Config, error) {
	s := b.spec
	if err := b.applyAppEnv(); err != nil {
		return nil, err
	}
	c := &Config{byID: map[string]*App{}, byKey: map[string]*App{}}
	for i := range s.Apps {
		app, err := b.app(i)
		if err != nil {
			return nil, err
		}
		if c.byID[app.ID] != nil {
			return nil, b.errAt([]any{"apps", i, "id"}, "app id %q is used twice", app.ID)
		}
		if c.byKey[app.Key] != nil {
			return nil, b.errAt([]any{"apps", i, "key"}, "app key %q is used twice", app.Key)
		}
		c.apps = append(c.apps, app)
		c.byID[app.ID], c.byKey[app.Key] = app, app
	}
	switch {
	case s.DefaultApp != "":
		if c.defaultApp = c.byID[s.DefaultApp]; c.defaultApp == nil {
			return nil, b.errAt([]any{"default_app"}, "no app has id %q", s.DefaultApp)
		}
	case len(c.apps) > 0:
		c.defaultApp = c.apps[0]
	}
	rules, err := b.rules()
	if err != nil {
		return nil, err
	}
	c.Rules = rules
	for i := range s.APIKeys {
		k, err := b.apiKey(i, c)
		if err != nil {
			return nil, err
		}
		for _, other := range c.apiKeys {
			if other.digest == k.digest {
				return nil, b.errAt([]any{"api_keys", i}, "the same key is listed twice (also as %q)", other.Name)
			}
		}
		c.apiKeys = append(c.apiKeys, k)
	}
	return c, nil
}

// applyAppEnv merges HERALD_APP_ID/KEY/SECRET into the app list: into the app with that id,
// or a new app when no app has it; without HERALD_APP_ID, into the only app.
func (b *builder) applyAppEnv() error {
	id, key, secret := b.env(EnvAppID), b.env(EnvAppKey), b.env(EnvAppSecret)
	if id == "" && key == "" && secret == "" {
		return nil
	}
	s := b.spec
	var target *appSpec
	switch {
	case id != "":
		for i := range s.Apps {
			if s.Apps[i].ID == id {
				target = &s.Apps[i]
			}
		}
		if target == nil {
			s.Apps = append(s.Apps, appSpec{ID: id, fromEnv: true})
			target = &s.Apps[len(s.Apps)-1]
		}
	case len(s.Apps) == 1:
		target = &s.Apps[0]
	case len(s.Apps) == 0:
		return fmt.Errorf("%s or %s is set but %s is not", EnvAppKey, EnvAppSecret, EnvAppID)
	default:
		return fmt.Errorf("%s or %s is set and there are %d apps: set %s to say which one", EnvAppKey, EnvAppSecret, len(s.Apps), EnvAppID)
	}
	if key != "" {
		target.Key = key
	}
	target.envSecret = secret
	return nil
}

func (b *builder) app(i int) (*App, error) {
	a := &b.spec.Apps[i]
	at := func(field string) []any { return []any{"apps", i, field} }
	if a.fromEnv {
		at = func(string) []any { return []any{EnvAppID + "=" + a.ID} }
	}
	if !idPattern.MatchString(a.ID) {
		return nil, b.errAt(at("id"), "an app id is 1-128 characters of A-Z a-z 0-9 . _ -")
	}
	if !idPattern.MatchString(a.Key) {
		if a.Key == "" && a.fromEnv {
			return nil, b.errAt(at("key"), "no key: set %s", EnvAppKey)
		}
		return nil, b.errAt(at("key"), "an app key is 1-128 characters of A-Z a-z 0-9 . _ -")
	}
	secret := a.envSecret
	if secret == "" && a.SecretEnv != "" {
		secret = b.env(a.SecretEnv)
	}
	if secret == "" {
		secret = a.Secret
	}
	if secret == "" {
		switch {
		case a.fromEnv:
			return nil, b.errAt(at("secret"), "no secret: set %s", EnvAppSecret)
		case a.SecretEnv != "":
			return nil, b.errAt(at("secret_env"), "app %q has no secret: the environment variable %s is empty and no secret is set", a.ID, a.SecretEnv)
		default:
			return nil, b.errAt([]any{"apps", i}, "app %q has no secret: set secret_env (or secret, or %s)", a.ID, EnvAppSecret)
		}
	}
	app := &App{ID: a.ID, Key: a.Key, secret: []byte(secret), Limits: DefaultLimits()}
	switch {
	case a.JWTSecretEnv != "" && a.JWTPublicKey != "":
		return nil, b.errAt([]any{"apps", i}, "app %q: set jwt_secret_env or jwt_public_key, not both", a.ID)
	case a.JWTSecretEnv != "":
		v := b.env(a.JWTSecretEnv)
		if len(v) < MinJWTSecretLen {
			return nil, b.errAt(at("jwt_secret_env"), "app %q: the environment variable %s must hold a JWT secret of at least %d bytes", a.ID, a.JWTSecretEnv, MinJWTSecretLen)
		}
		app.jwtSecret = []byte(v)
	case a.JWTPublicKey != "":
		app.JWTPublicKeyFile = a.JWTPublicKey
	}
	switch ClientEvents(a.AcceptClientEventsFrom) {
	case "", ClientEventsMembers:
		app.ClientEvents = ClientEventsMembers
	case ClientEventsAll, ClientEventsNone:
		app.ClientEvents = ClientEvents(a.AcceptClientEventsFrom)
	default:
		return nil, b.errAt(at("accept_client_events_from"), "want members, all or none, not %q", a.AcceptClientEventsFrom)
	}
	switch a.Durability {
	case "", "memory", "redis", "replicated":
		app.Durability = a.Durability
	default:
		return nil, b.errAt(at("durability"), "want memory, redis or replicated, not %q", a.Durability)
	}
	origins, err := ParseOrigins(a.AllowedOrigins)
	if err != nil {
		return nil, b.errAt(at("allowed_origins"), "%v", err)
	}
	app.AllowedOrigins = origins
	if err := b.webhooks(i, a, app); err != nil {
		return nil, err
	}
	limits := []struct {
		v    *int
		dst  *int
		name string
		max  int
	}{
		{a.Limits.MaxPresenceMembers, &app.Limits.MaxPresenceMembers, "max_presence_members", maxMaxPresenceMembers},
		{a.Limits.MaxUserInfoBytes, &app.Limits.MaxUserInfoBytes, "max_user_info_bytes", maxMaxUserInfoBytes},
		{a.Limits.MaxUserIDLength, &app.Limits.MaxUserIDLength, "max_user_id_length", maxMaxUserIDLength},
		{a.Limits.ClientEventsPerSecond, &app.Limits.ClientEventsPerSecond, "client_events_per_second", maxClientEventsRate},
		{a.Limits.MaxConnections, &app.Limits.MaxConnections, "max_connections", maxMaxConnections},
	}
	for _, l := range limits {
		if l.v == nil {
			continue
		}
		if *l.v < 1 || *l.v > l.max {
			return nil, b.errAt([]any{"apps", i, "limits", l.name}, "want 1 to %d, not %d", l.max, *l.v)
		}
		*l.dst = *l.v
	}
	return app, nil
}

func (b *builder) rules() (*Rules, error) {
	cs := b.spec.Channels
	r := &Rules{}
	switch cs.Default {
	case "", "allow":
	case "deny":
		r.denyUnmatched = true
	default:
		return nil, b.errAt([]any{"channels", "default"}, "want allow or deny, not %q", cs.Default)
	}
	for i, rs := range cs.Rules {
		path := []any{"channels", "rules", i}
		ru, names, err := compilePattern(rs.Channel)
		if err != nil {
			return nil, b.errAt(append(path, "channel"), "%v", err)
		}
		switch rs.Action {
		case "", "both":
			ru.actions = Subscribe | Publish
		case "subscribe":
			ru.actions = Subscribe
		case "publish":
			ru.actions = Publish
		default:
			return nil, b.errAt(append(path, "action"), "want subscribe, publish or both, not %q", rs.Action)
		}
		if rs.When != nil {
			if ru.cond, err = b.cond(rs.When, names, append(path, "when"), 0); err != nil {
				return nil, err
			}
		}
		ru.desc = fmt.Sprintf("channel rule %d (%s", i, rs.Channel)
		if line := b.line(path); line > 0 {
			ru.desc += ", line " + strconv.Itoa(line)
		}
		ru.desc += ")"
		r.rules = append(r.rules, ru)
	}
	return r, nil
}

func (b *builder) cond(cs *condSpec, names []string, path []any, depth int) (cond, error) {
	path = append([]any(nil), path...) // the callers' slices are reused
	if depth > maxCondDepth {
		return nil, b.errAt(path, "conditions nest deeper than %d levels", maxCondDepth)
	}
	kinds := 0
	for _, set := range []bool{cs.Claim != "", cs.All != nil, cs.Any != nil, cs.Not != nil} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return nil, b.errAt(path, "a condition is exactly one of: claim (with equals, in, contains or exists), all, any, not")
	}
	switch {
	case cs.All != nil || cs.Any != nil:
		list, key := cs.All, "all"
		if cs.Any != nil {
			list, key = cs.Any, "any"
		}
		if len(*list) == 0 {
			return nil, b.errAt(append(path, key), "an empty list; omit `when` for a rule with no condition")
		}
		subs := make([]cond, 0, len(*list))
		for i := range *list {
			sub, err := b.cond(&(*list)[i], names, append(path, key, i), depth+1)
			if err != nil {
				return nil, err
			}
			subs = append(subs, sub)
		}
		if key == "all" {
			return allCond(subs), nil
		}
		return anyCond(subs), nil
	case cs.Not != nil:
		sub, err := b.cond(cs.Not, names, append(path, "not"), depth+1)
		if err != nil {
			return nil, err
		}
		return notCond{sub}, nil
	}
	if len(cs.Claim) > 256 {
		return nil, b.errAt(append(path, "claim"), "claim name longer than 256 bytes")
	}
	c := &claimCond{}
	var err error
	if c.path, err = compileTemplate(cs.Claim, names); err != nil {
		return nil, b.errAt(append(path, "claim"), "%v", err)
	}
	ops := 0
	var values []string
	var key string
	if cs.Equals != nil {
		ops, c.op, values, key = ops+1, opEquals, []string{*cs.Equals}, "equals"
	}
	if cs.In != nil {
		ops, c.op, values, key = ops+1, opIn, *cs.In, "in"
		if len(values) == 0 {
			return nil, b.errAt(append(path, "in"), "an empty list matches nothing")
		}
	}
	if cs.Contains != nil {
		ops, c.op, values, key = ops+1, opContains, []string{*cs.Contains}, "contains"
	}
	if cs.Exists != nil {
		ops, c.op, c.exists = ops+1, opExists, *cs.Exists
	}
	if ops != 1 {
		return nil, b.errAt(path, "claim %q needs exactly one of equals, in, contains, exists", cs.Claim)
	}
	for i, v := range values {
		t, err := compileTemplate(v, names)
		if err != nil {
			p := append(path, key)
			if c.op == opIn {
				p = append(p, i)
			}
			return nil, b.errAt(p, "%v", err)
		}
		c.values = append(c.values, t)
	}
	return c, nil
}

func (b *builder) apiKey(i int, c *Config) (*APIKey, error) {
	ks := b.spec.APIKeys[i]
	path := []any{"api_keys", i}
	at := func(field string) []any { return append(append([]any(nil), path...), field) }
	k := &APIKey{Name: ks.Name}
	if k.Name == "" {
		k.Name = "api_keys[" + strconv.Itoa(i) + "]"
	}
	plain := ks.Key
	if ks.KeyEnv != "" {
		if v := b.env(ks.KeyEnv); v != "" {
			plain = v
		}
	}
	switch {
	case ks.KeySHA256 != "" && (ks.Key != "" || ks.KeyEnv != ""):
		return nil, b.errAt(path, "set key_sha256, or key/key_env, not both")
	case ks.KeySHA256 != "":
		d, err := hex.DecodeString(ks.KeySHA256)
		if err != nil || len(d) != len(k.digest) {
			return nil, b.errAt(at("key_sha256"), "want 64 hex digits (sha256 of the key)")
		}
		copy(k.digest[:], d)
	case plain == "" && ks.KeyEnv != "":
		return nil, b.errAt(at("key_env"), "API key %q: the environment variable %s is empty and no key is set", k.Name, ks.KeyEnv)
	case plain == "":
		return nil, b.errAt(path, "API key %q has no key: set key_env, key or key_sha256", k.Name)
	case len(plain) < MinAPIKeyLen || len(plain) > maxAPIKeyLen:
		return nil, b.errAt(at("key"), "API key %q must be %d to %d characters", k.Name, MinAPIKeyLen, maxAPIKeyLen)
	default:
		k.digest = digestKey(plain)
	}
	switch {
	case ks.App != "":
		if c.App(ks.App) == nil {
			return nil, b.errAt(at("app"), "no app has id %q", ks.App)
		}
		k.App = ks.App
	case c.defaultApp != nil:
		k.App = c.defaultApp.ID
	}
	if len(ks.Publish) == 0 {
		return nil, b.errAt(at("publish"), "API key %q may publish nowhere: list channel patterns", k.Name)
	}
	for j, p := range ks.Publish {
		if !channel.ValidPattern(p) {
			return nil, b.errAt(append(at("publish"), j), "a pattern is 1-%d channel characters and *", channel.MaxPatternLen)
		}
	}
	k.Publish = append([]string(nil), ks.Publish...)
	return k, nil
}
