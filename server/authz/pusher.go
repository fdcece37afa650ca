package authz

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/herald-rt/herald/store/channel"
)

// Errors of Pusher signature verification. Compare with errors.Is; the returned errors wrap
// them with details that hold no secrets.
var (
	ErrUnknownApp   = errors.New("no app has this key")
	ErrBadSignature = errors.New("signature mismatch")
	ErrMalformed    = errors.New("malformed socket id, channel name or auth value")
	ErrChannelData  = errors.New("invalid presence channel_data")
	ErrUserData     = errors.New("invalid user_data")
	ErrMissingParam = errors.New("missing or malformed auth parameter")
	ErrTimestamp    = errors.New("auth_timestamp is too far from the server clock")
	ErrBodyMD5      = errors.New("body_md5 does not match the body")
	ErrWrongApp     = errors.New("the request path names another app")
)

// PresenceMember is the user a presence channel's channel_data names.
type PresenceMember struct {
	UserID   string          // user_id, a JSON string or integer, as text
	UserInfo json.RawMessage // user_info as sent (any JSON value), or nil when absent or null
}

// SignChannel returns the auth value the app's /broadcasting/auth answers for a socket joining
// a channel: "<key>:<hex HMAC-SHA256(secret, socket_id:channel[:channel_data])>". Tests and
// tools use it; the server only verifies.
func (a *App) SignChannel(socketID, channel, channelData string) string {
	return a.Key + ":" + hex.EncodeToString(a.channelMAC(socketID, channel, channelData))
}

func (a *App) channelMAC(socketID, channel, channelData string) []byte {
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte(socketID))
	m.Write([]byte{':'})
	m.Write([]byte(channel))
	if channelData != "" {
		m.Write([]byte{':'})
		m.Write([]byte(channelData))
	}
	return m.Sum(nil)
}

// VerifyChannelAuth checks a channel authorization (the auth, and for presence channels the
// channel_data, that the app's /broadcasting/auth issued) against this app's key and secret.
// The exact channel_data string received is what was signed. For a presence- channel it
// returns the member channel_data names, checked against the app's limits; otherwise nil.
func (a *App) VerifyChannelAuth(socketID, ch, auth, channelData string) (*PresenceMember, error) {
	if !validSocketID(socketID) {
		return nil, fmt.Errorf("%w: socket id must be digits.digits", ErrMalformed)
	}
	if channel.Valid(ch) != nil {
		return nil, fmt.Errorf("%w: invalid ch name", ErrMalformed)
	}
	key, sig, ok := strings.Cut(auth, ":")
	if !ok || len(sig) != 2*sha256.Size {
		return nil, fmt.Errorf("%w: auth must be <app key>:<64 hex digits>", ErrMalformed)
	}
	if key != a.Key {
		return nil, fmt.Errorf("%w: the auth is for another app key", ErrUnknownApp)
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return nil, fmt.Errorf("%w: auth must be <app key>:<64 hex digits>", ErrMalformed)
	}
	presence := channel.IsPresence(ch)
	if presence && channelData == "" {
		return nil, fmt.Errorf("%w: presence channels need channel_data", ErrChannelData)
	}
	if len(channelData) > a.maxChannelData() {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrChannelData, a.maxChannelData())
	}
	if !hmac.Equal(got, a.channelMAC(socketID, ch, channelData)) {
		return nil, ErrBadSignature
	}
	if !presence {
		return nil, nil
	}
	return parsePresence(channelData, a.Limits)
}

// VerifyChannelAuth finds the app by the key before the ':' of auth, then verifies as
// (*App).VerifyChannelAuth does.
func (c *Config) VerifyChannelAuth(socketID, ch, auth, channelData string) (*App, *PresenceMember, error) {
	key, _, ok := strings.Cut(auth, ":")
	if !ok {
		return nil, nil, fmt.Errorf("%w: auth must be <app key>:<64 hex digits>", ErrMalformed)
	}
	app := c.AppByKey(key)
	if app == nil {
		return nil, nil, ErrUnknownApp
	}
	m, err := app.VerifyChannelAuth(socketID, ch, auth, channelData)
	if err != nil {
		return nil, nil, err
	}
	return app, m, nil
}

// SignUser returns the auth value the app's user authentication endpoint
// (/broadcasting/user-auth, pusher.authenticateUser) answers for a socket signing in with
// userData: "<key>:<hex HMAC-SHA256(secret, socket_id::user::user_data)>". Tests and tools use
// it; the server only verifies.
func (a *App) SignUser(socketID, userData string) string {
	return a.Key + ":" + hex.EncodeToString(a.userMAC(socketID, userData))
}

func (a *App) userMAC(socketID, userData string) []byte {
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte(socketID))
	m.Write([]byte("::user::"))
	m.Write([]byte(userData))
	return m.Sum(nil)
}

// VerifyUserAuth checks a user sign-in (the auth and user_data that the app's user
// authentication endpoint issued) against this app's key and secret, and returns the user id
// user_data names: its "id", a non-empty JSON string (or an integer, as Laravel's numeric ids
// arrive), within the app's user id limit and made of channel characters, since the user's
// events travel on channel.UserChannel(id).
func (a *App) VerifyUserAuth(socketID, auth, userData string) (string, error) {
	if !validSocketID(socketID) {
		return "", fmt.Errorf("%w: socket id must be digits.digits", ErrMalformed)
	}
	key, sig, ok := strings.Cut(auth, ":")
	if !ok || len(sig) != 2*sha256.Size {
		return "", fmt.Errorf("%w: auth must be <app key>:<64 hex digits>", ErrMalformed)
	}
	if key != a.Key {
		return "", fmt.Errorf("%w: the auth is for another app key", ErrUnknownApp)
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return "", fmt.Errorf("%w: auth must be <app key>:<64 hex digits>", ErrMalformed)
	}
	if len(userData) > a.maxChannelData() {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrUserData, a.maxChannelData())
	}
	if !hmac.Equal(got, a.userMAC(socketID, userData)) {
		return "", ErrBadSignature
	}
	return parseUserData(userData, a.Limits)
}

// parseUserData reads the user id of a sign-in's user_data: {"id": "…" or 123, …}. Other keys
// (user_info, watchlist) are the app's own.
func parseUserData(data string, lim Limits) (string, error) {
	var raw struct {
		ID json.RawMessage `json:"id"`
	}
	if !strings.HasPrefix(strings.TrimLeft(data, " \t\r\n"), "{") || json.Unmarshal([]byte(data), &raw) != nil {
		return "", fmt.Errorf("%w: not a JSON object with an id", ErrUserData)
	}
	id, err := jsonUserID(raw.ID, "id", lim)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUserData, err)
	}
	if channel.UserChannel(id) == "" {
		return "", fmt.Errorf("%w: id must be characters of A-Z a-z 0-9 _ - = @ , . ; (it names the user's channel)", ErrUserData)
	}
	return id, nil
}

// jsonUserID reads the user id in field: a non-empty JSON string, or a JSON integer taken as
// its text, of at most the limit's characters.
func jsonUserID(id json.RawMessage, field string, lim Limits) (string, error) {
	var s string
	switch {
	case len(id) == 0 || string(id) == "null":
		return "", errors.New("no " + field)
	case id[0] == '"':
		if err := json.Unmarshal(id, &s); err != nil {
			return "", errors.New(field + " is not a string")
		}
	case isJSONInteger(id):
		s = string(id)
	default:
		return "", errors.New(field + " must be a string or an integer")
	}
	if s == "" {
		return "", errors.New(field + " is empty")
	}
	if n := utf8.RuneCountInString(s); n > lim.MaxUserIDLength {
		return "", fmt.Errorf("%s has %d characters, over the limit of %d", field, n, lim.MaxUserIDLength)
	}
	return s, nil
}

// maxChannelData bounds channel_data before it is hashed or parsed: the user_info limit, the
// user id limit with room for JSON escapes, and the object around them.
func (a *App) maxChannelData() int {
	return a.Limits.MaxUserInfoBytes + 6*a.Limits.MaxUserIDLength + 256
}

// validSocketID reports whether id looks like a Pusher socket id: digits, '.', digits.
func validSocketID(id string) bool {
	whole, frac, ok := strings.Cut(id, ".")
	return ok && allDigits(whole, 20) && allDigits(frac, 20)
}

func allDigits(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parsePresence reads a presence channel_data object: {"user_id": "…" or 123, "user_info": …}.
// Other keys are ignored, as Pusher and Reverb do.
func parsePresence(data string, lim Limits) (*PresenceMember, error) {
	var raw struct {
		UserID   json.RawMessage `json:"user_id"`
		UserInfo json.RawMessage `json:"user_info"`
	}
	if !strings.HasPrefix(strings.TrimLeft(data, " \t\r\n"), "{") {
		return nil, fmt.Errorf("%w: not a JSON object", ErrChannelData)
	}
	if err := json.Unmarshal([]byte(data), &raw); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object with user_id and user_info", ErrChannelData)
	}
	id, err := jsonUserID(raw.UserID, "user_id", lim)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrChannelData, err)
	}
	m := &PresenceMember{UserID: id}
	if len(raw.UserInfo) > 0 && string(raw.UserInfo) != "null" {
		if len(raw.UserInfo) > lim.MaxUserInfoBytes {
			return nil, fmt.Errorf("%w: user_info is %d bytes, over the limit of %d", ErrChannelData, len(raw.UserInfo), lim.MaxUserInfoBytes)
		}
		m.UserInfo = raw.UserInfo
	}
	return m, nil
}

func isJSONInteger(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	return allDigits(string(b), 40)
}

// --- Pusher HTTP API requests -----------------------------------------------------------

// MaxClockSkew is how far auth_timestamp may be from the server clock, either way.
const MaxClockSkew = 600 * time.Second

// maxSignedQuery bounds the text a request signature covers.
const maxSignedQuery = 64 << 10

// VerifyPusherRequest checks a signed Pusher HTTP API request (what Laravel's Pusher/Reverb
// broadcaster sends) and returns the app whose key and secret signed it:
//
//   - auth_key names the app (ErrUnknownApp);
//   - auth_timestamp is within ±600 s of now (ErrTimestamp);
//   - auth_version is 1.0;
//   - body_md5 is the hex MD5 of a non-empty body, and required then; with an empty body it may
//     be absent, or the MD5 of nothing (ErrBodyMD5);
//   - auth_signature is hex HMAC-SHA256(secret, METHOD\nPATH\nQUERY), QUERY being every
//     parameter but auth_signature, keys lowercased and sorted, joined k=v with & and not
//     URL-escaped, a repeated key's values joined with ',' (ErrBadSignature);
//   - path is the app's own: /apps/<app id> or below it (ErrWrongApp).
//
// path is the request path as the client signed it, without any prefix the server is mounted
// under; query is the parsed query string. Missing, repeated or malformed auth parameters are
// ErrMissingParam.
func (c *Config) VerifyPusherRequest(method, path string, query url.Values, body []byte, now time.Time) (*App, error) {
	one := func(name string) (string, error) {
		switch vs := query[name]; len(vs) {
		case 1:
			return vs[0], nil
		case 0:
			return "", fmt.Errorf("%w: no %s", ErrMissingParam, name)
		default:
			return "", fmt.Errorf("%w: %s is repeated", ErrMissingParam, name)
		}
	}
	key, err := one("auth_key")
	if err != nil {
		return nil, err
	}
	app := c.AppByKey(key)
	if app == nil {
		return nil, ErrUnknownApp
	}
	ts, err := one("auth_timestamp")
	if err != nil {
		return nil, err
	}
	if !allDigits(ts, 18) {
		return nil, fmt.Errorf("%w: auth_timestamp must be unix seconds", ErrMissingParam)
	}
	sec, _ := strconv.ParseInt(ts, 10, 64)
	if skew := now.Unix() - sec; skew > int64(MaxClockSkew/time.Second) || -skew > int64(MaxClockSkew/time.Second) {
		return nil, fmt.Errorf("%w: %d s away (the limit is %d s)", ErrTimestamp, skew, int64(MaxClockSkew/time.Second))
	}
	version, err := one("auth_version")
	if err != nil {
		return nil, err
	}
	if version != "1.0" {
		return nil, fmt.Errorf("%w: auth_version must be 1.0", ErrMissingParam)
	}
	sig, err := one("auth_signature")
	if err != nil {
		return nil, err
	}
	if _, present := query["body_md5"]; present || len(body) > 0 {
		got, err := one("body_md5")
		if err != nil {
			return nil, err
		}
		sum := md5.Sum(body)
		if !strings.EqualFold(got, hex.EncodeToString(sum[:])) {
			return nil, ErrBodyMD5
		}
	}
	if !appPath(path, app.ID) {
		return nil, ErrWrongApp
	}
	toSign, err := stringToSign(method, path, query)
	if err != nil {
		return nil, err
	}
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return nil, fmt.Errorf("%w: auth_signature is not 64 hex digits", ErrBadSignature)
	}
	m := hmac.New(sha256.New, app.secret)
	m.Write([]byte(toSign))
	if !hmac.Equal(got, m.Sum(nil)) {
		return nil, ErrBadSignature
	}
	return app, nil
}

// SignRequest returns query with the auth parameters of a Pusher HTTP API request added, as
// pusher-http-php builds them (body_md5 only for a non-empty body). Tests and tools use it.
func (a *App) SignRequest(method, path string, query url.Values, body []byte, now time.Time) (url.Values, error) {
	q := url.Values{}
	for k, vs := range query {
		q[k] = append([]string(nil), vs...)
	}
	q.Set("auth_key", a.Key)
	q.Set("auth_timestamp", strconv.FormatInt(now.Unix(), 10))
	q.Set("auth_version", "1.0")
	q.Del("auth_signature")
	q.Del("body_md5")
	if len(body) > 0 {
		sum := md5.Sum(body)
		q.Set("body_md5", hex.EncodeToString(sum[:]))
	}
	toSign, err := stringToSign(method, path, q)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte(toSign))
	q.Set("auth_signature", hex.EncodeToString(m.Sum(nil)))
	return q, nil
}

// stringToSign builds METHOD\nPATH\nk=v&k=v over every parameter but auth_signature.
func stringToSign(method, path string, query url.Values) (string, error) {
	type kv struct{ k, v string }
	params := make([]kv, 0, len(query))
	size := len(method) + len(path) + 2
	for k, vs := range query {
		lk := strings.ToLower(k)
		if lk == "auth_signature" {
			if k != lk {
				return "", fmt.Errorf("%w: %s", ErrMissingParam, "auth_signature is given in two spellings")
			}
			continue
		}
		v := strings.Join(vs, ",")
		size += len(lk) + len(v) + 2
		if size > maxSignedQuery {
			return "", fmt.Errorf("%w: the query is too long", ErrMissingParam)
		}
		params = append(params, kv{lk, v})
	}
	slices.SortFunc(params, func(a, b kv) int { return strings.Compare(a.k, b.k) })
	var sb strings.Builder
	sb.Grow(size)
	sb.WriteString(method)
	sb.WriteByte('\n')
	sb.WriteString(path)
	sb.WriteByte('\n')
	for i, p := range params {
		if i > 0 {
			if params[i-1].k == p.k {
				return "", fmt.Errorf("%w: parameter %q is given in two spellings", ErrMissingParam, p.k)
			}
			sb.WriteByte('&')
		}
		sb.WriteString(p.k)
		sb.WriteByte('=')
		sb.WriteString(p.v)
	}
	return sb.String(), nil
}

// appPath reports whether path is /apps/<id> or below it.
func appPath(path, id string) bool {
	rest, ok := strings.CutPrefix(path, "/apps/"+id)
	return ok && (rest == "" || rest[0] == '/')
}
