package authz

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Pusher's published test credentials (pusher docs: auth-signatures, rest-api "Worked example").
const (
	docKey    = "278d425bdf160c739803"
	docSecret = "7ad3773142a6692b25b8"
)

func docConfig(t testing.TB) *Config {
	t.Helper()
	return mustParse(t, `
apps:
  - id: "3"
    key: `+docKey+`
    secret: `+docSecret+`
  - id: "4"
    key: other-key
    secret: other-secret
    limits:
      max_user_info_bytes: 32
      max_user_id_length: 4
`, nil)
}

func TestChannelAuthPublishedVectors(t *testing.T) {
	c := docConfig(t)
	app := c.App("3")

	// Private channel: "1234.1234:private-foobar".
	const private = docKey + ":58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
	if got := app.SignChannel("1234.1234", "private-foobar", ""); got != private {
		t.Fatalf("SignChannel = %s, want the published %s", got, private)
	}
	gotApp, m, err := c.VerifyChannelAuth("1234.1234", "private-foobar", private, "")
	if err != nil || gotApp != app || m != nil {
		t.Fatalf("private vector: %v %v %v", gotApp, m, err)
	}

	// Presence channel: "1234.1234:presence-foobar:<channel_data>".
	const data = `{"user_id":10,"user_info":{"name":"Mr. Channels"}}`
	const presence = docKey + ":31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
	if got := app.SignChannel("1234.1234", "presence-foobar", data); got != presence {
		t.Fatalf("SignChannel = %s, want the published %s", got, presence)
	}
	m, err = app.VerifyChannelAuth("1234.1234", "presence-foobar", presence, data)
	if err != nil || m == nil || m.UserID != "10" || string(m.UserInfo) != `{"name":"Mr. Channels"}` {
		t.Fatalf("presence vector: %+v %v", m, err)
	}
}

func TestChannelAuthRejects(t *testing.T) {
	c := docConfig(t)
	app := c.App("3")
	const data = `{"user_id":10,"user_info":{"name":"Mr. Channels"}}`
	good := app.SignChannel("1234.1234", "private-foobar", "")
	goodPresence := app.SignChannel("1234.1234", "presence-foobar", data)
	flip := func(s string) string { // change the last hex digit
		last := s[len(s)-1]
		if last == '0' {
			return s[:len(s)-1] + "1"
		}
		return s[:len(s)-1] + "0"
	}
	cases := []struct {
		name                            string
		socket, channel, auth, chanData string
		want                            error
	}{
		{"forged signature", "1234.1234", "private-foobar", flip(good), "", ErrBadSignature},
		{"another socket id", "1234.1235", "private-foobar", good, "", ErrBadSignature},
		{"another channel", "1234.1234", "private-foobaz", good, "", ErrBadSignature},
		{"channel_data added", "1234.1234", "private-foobar", good, "{}", ErrBadSignature},
		{"channel_data reformatted", "1234.1234", "presence-foobar", goodPresence, strings.Replace(data, ":", ": ", 1), ErrBadSignature},
		{"channel_data changed", "1234.1234", "presence-foobar", goodPresence, strings.Replace(data, "10", "11", 1), ErrBadSignature},
		{"another app's secret", "1234.1234", "private-foobar", "other-key:" + good[len(docKey)+1:], "", ErrBadSignature},
		{"unknown key", "1234.1234", "private-foobar", "nobody:" + good[len(docKey)+1:], "", ErrUnknownApp},
		{"no colon", "1234.1234", "private-foobar", good[len(docKey)+1:], "", ErrMalformed},
		{"short signature", "1234.1234", "private-foobar", good[:len(good)-2], "", ErrMalformed},
		{"not hex", "1234.1234", "private-foobar", good[:len(good)-1] + "g", "", ErrMalformed},
		{"upper-case hex", "1234.1234", "private-foobar", docKey + ":" + strings.ToUpper(good[len(docKey)+1:]), "", nil},
		{"empty auth", "1234.1234", "private-foobar", "", "", ErrMalformed},
		{"bad socket id", "1234", "private-foobar", good, "", ErrMalformed},
		{"socket id with letters", "12a4.1234", "private-foobar", good, "", ErrMalformed},
		{"socket id too long", strings.Repeat("1", 21) + ".1", "private-foobar", good, "", ErrMalformed},
		{"bad channel", "1234.1234", "private-foo bar", good, "", ErrMalformed},
		{"presence without channel_data", "1234.1234", "presence-foobar", goodPresence, "", ErrChannelData},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := c.VerifyChannelAuth(tc.socket, tc.channel, tc.auth, tc.chanData)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// The app-level check refuses another app's key even with a valid signature for it.
	other := c.App("4")
	if _, err := app.VerifyChannelAuth("1.1", "private-x", other.SignChannel("1.1", "private-x", ""), ""); !errors.Is(err, ErrUnknownApp) {
		t.Fatalf("err = %v, want ErrUnknownApp", err)
	}
}

func TestPresenceChannelData(t *testing.T) {
	lim := DefaultLimits()
	cases := []struct {
		name, data string
		id, info   string
		err        bool
	}{
		{"string id", `{"user_id":"u-1","user_info":{"a":1}}`, "u-1", `{"a":1}`, false},
		{"integer id", `{"user_id":42}`, "42", "", false},
		{"negative integer id", `{"user_id":-42}`, "-42", "", false},
		{"null info", `{"user_id":"a","user_info":null}`, "a", "", false},
		{"scalar info (Laravel passes a callback's true through)", `{"user_id":"a","user_info":true}`, "a", "true", false},
		{"extra keys ignored", `{"user_id":"a","other":[1,2]}`, "a", "", false},
		{"escaped id", `{"user_id":"\u00e9\u00e9"}`, "éé", "", false},
		{"id at the limit", `{"user_id":"` + strings.Repeat("é", 128) + `"}`, strings.Repeat("é", 128), "", false},
		{"info at the limit", `{"user_id":"a","user_info":"` + strings.Repeat("x", 1022) + `"}`, "a", `"` + strings.Repeat("x", 1022) + `"`, false},
		{"id over the limit", `{"user_id":"` + strings.Repeat("a", 129) + `"}`, "", "", true},
		{"info over the limit", `{"user_id":"a","user_info":"` + strings.Repeat("x", 1023) + `"}`, "", "", true},
		{"float id", `{"user_id":1.5}`, "", "", true},
		{"exponent id", `{"user_id":1e3}`, "", "", true},
		{"bool id", `{"user_id":true}`, "", "", true},
		{"object id", `{"user_id":{}}`, "", "", true},
		{"null id", `{"user_id":null}`, "", "", true},
		{"empty id", `{"user_id":""}`, "", "", true},
		{"no id", `{"user_info":{}}`, "", "", true},
		{"not an object", `[{"user_id":"a"}]`, "", "", true},
		{"null", `null`, "", "", true},
		{"trailing garbage", `{"user_id":"a"} x`, "", "", true},
		{"truncated", `{"user_id":"a"`, "", "", true},
		{"not JSON", `user_id=a`, "", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parsePresence(tc.data, lim)
			if tc.err {
				if !errors.Is(err, ErrChannelData) || m != nil {
					t.Fatalf("= %+v, %v; want ErrChannelData", m, err)
				}
				return
			}
			if err != nil || m.UserID != tc.id || string(m.UserInfo) != tc.info {
				t.Fatalf("= %+v (%s), %v; want %q %s", m, m.UserInfo, err, tc.id, tc.info)
			}
		})
	}
}

func TestPresenceLimitsPerApp(t *testing.T) {
	app := docConfig(t).App("4") // max_user_id_length 4, max_user_info_bytes 32
	sign := func(data string) error {
		_, err := app.VerifyChannelAuth("1.2", "presence-x", app.SignChannel("1.2", "presence-x", data), data)
		return err
	}
	if err := sign(`{"user_id":"abcd","user_info":{"n":"` + strings.Repeat("x", 24) + `"}}`); err != nil {
		t.Fatalf("at the limits: %v", err)
	}
	if err := sign(`{"user_id":"abcde"}`); !errors.Is(err, ErrChannelData) {
		t.Fatalf("long id: %v", err)
	}
	if err := sign(`{"user_id":"a","user_info":{"n":"` + strings.Repeat("x", 25) + `"}}`); !errors.Is(err, ErrChannelData) {
		t.Fatalf("big user_info: %v", err)
	}
	// channel_data far over the limits is refused before it is hashed or parsed.
	huge := `{"user_id":"a","pad":"` + strings.Repeat("x", 10000) + `"}`
	if err := sign(huge); !errors.Is(err, ErrChannelData) || !strings.Contains(err.Error(), "longer") {
		t.Fatalf("huge channel_data: %v", err)
	}
}

// The REST API "Worked example" from Pusher's docs.
const (
	docBody      = `{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`
	docBodyMD5   = "ec365a775a4cd0599faeb73354201b6f"
	docTimestamp = 1353088179
	docSignature = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
)

func docQuery() url.Values {
	return url.Values{
		"auth_key":       {docKey},
		"auth_timestamp": {"1353088179"},
		"auth_version":   {"1.0"},
		"body_md5":       {docBodyMD5},
		"auth_signature": {docSignature},
	}
}

func TestPusherRequestWorkedExample(t *testing.T) {
	c := docConfig(t)
	now := time.Unix(docTimestamp, 0)
	app, err := c.VerifyPusherRequest("POST", "/apps/3/events", docQuery(), []byte(docBody), now)
	if err != nil || app != c.App("3") {
		t.Fatalf("worked example: %v %v", app, err)
	}
	q, err := app.SignRequest("POST", "/apps/3/events", nil, []byte(docBody), now)
	if err != nil {
		t.Fatal(err)
	}
	if q.Encode() != docQuery().Encode() {
		t.Fatalf("SignRequest = %s\nwant          %s", q.Encode(), docQuery().Encode())
	}
}

func TestPusherRequestClockSkew(t *testing.T) {
	c := docConfig(t)
	for _, tc := range []struct {
		skew time.Duration
		ok   bool
	}{
		{0, true},
		{600 * time.Second, true},
		{-600 * time.Second, true},
		{600*time.Second + 999*time.Millisecond, true}, // whole seconds, as the timestamp is
		{601 * time.Second, false},
		{-601 * time.Second, false},
		{-time.Hour, false},
		{24 * time.Hour, false},
	} {
		_, err := c.VerifyPusherRequest("POST", "/apps/3/events", docQuery(), []byte(docBody), time.Unix(docTimestamp, 0).Add(tc.skew))
		if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrTimestamp)) {
			t.Errorf("skew %v: err = %v", tc.skew, err)
		}
	}
}

func TestPusherRequestRejects(t *testing.T) {
	c := docConfig(t)
	now := time.Unix(docTimestamp, 0)
	with := func(change func(url.Values)) url.Values {
		q := docQuery()
		change(q)
		return q
	}
	emptyMD5 := "d41d8cd98f00b204e9800998ecf8427e"
	cases := []struct {
		name   string
		method string
		path   string
		query  url.Values
		body   string
		want   error
	}{
		{"body changed", "POST", "/apps/3/events", docQuery(), docBody + " ", ErrBodyMD5},
		{"body_md5 missing", "POST", "/apps/3/events", with(func(q url.Values) { q.Del("body_md5") }), docBody, ErrMissingParam},
		{"body_md5 repeated", "POST", "/apps/3/events", with(func(q url.Values) { q.Add("body_md5", docBodyMD5) }), docBody, ErrMissingParam},
		{"body_md5 without a body", "POST", "/apps/3/events", docQuery(), "", ErrBodyMD5},
		{"upper-case body_md5", "POST", "/apps/3/events", with(func(q url.Values) { q.Set("body_md5", strings.ToUpper(docBodyMD5)) }), docBody, ErrBadSignature},
		{"signature", "POST", "/apps/3/events", with(func(q url.Values) { q.Set("auth_signature", strings.Repeat("0", 64)) }), docBody, ErrBadSignature},
		{"signature not hex", "POST", "/apps/3/events", with(func(q url.Values) { q.Set("auth_signature", "zz") }), docBody, ErrBadSignature},
		{"method", "PUT", "/apps/3/events", docQuery(), docBody, ErrBadSignature},
		{"path", "POST", "/apps/3/batch_events", docQuery(), docBody, ErrBadSignature},
		{"extra parameter", "POST", "/apps/3/events", with(func(q url.Values) { q.Set("info", "user_count") }), docBody, ErrBadSignature},
		{"unknown key", "POST", "/apps/3/events", with(func(q url.Values) { q.Set("auth_key", "nobody") }), docBody, ErrUnknownApp},
		{"another app's path", "POST", "/apps/4/events", docQuery(), docBody, ErrWrongApp},
		{"an app id with our id as prefix", "POST", "/apps/30/events", docQuery(), docBody, ErrWrongApp},
		{"a prefixed path", "POST", "/reverb/apps/3/events", docQuery(), docBody, ErrWrongApp},
		{"no auth_key", "POST", "/apps/3/events", with(func(q url.Values) { q.Del("auth_key") }), docBody, ErrMissingParam},
		{"no auth_timestamp", "POST", "/apps/3/events", with(func(q url.Values) { q.Del("auth_timestamp") }), docBody, ErrMissingParam},
		{"no auth_version", "POST", "/apps/3/events", with(func(q url.Values) { q.Del("auth_version") }), docBody, ErrMissingParam},
		{"no auth_signature", "POST", "/apps/3/events", with(func(q url.Values) { q.Del("auth_signature") }), docBody, ErrMissingParam},
		{"auth_version 2.0", "POST", "/apps/3/events", with(func(q url.Values) { q.Set("auth_version", "2.0") }), docBody, ErrMissingParam},
		{"timestamp not a number", "POST", "/apps/3/events", with(func(q url.Values) { q.Set("auth_timestamp", "+1353088179") }), docBody, ErrMissingParam},
		{"timestamp in ms", "POST", "/apps/3/events", with(func(q url.Values) { q.Set("auth_timestamp", "1353088179000") }), docBody, ErrTimestamp},
		{"repeated auth_key", "POST", "/apps/3/events", with(func(q url.Values) { q.Add("auth_key", docKey) }), docBody, ErrMissingParam},
		{"a key in two spellings", "POST", "/apps/3/events", with(func(q url.Values) { q.Set("Auth_Version", "1.0") }), docBody, ErrMissingParam},
		{"signature in two spellings", "POST", "/apps/3/events", with(func(q url.Values) { q.Set("AUTH_SIGNATURE", "x") }), docBody, ErrMissingParam},
		{"empty body with md5 of nothing, signed without it", "POST", "/apps/3/events", with(func(q url.Values) { q.Set("body_md5", emptyMD5) }), "", ErrBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			app, err := c.VerifyPusherRequest(tc.method, tc.path, tc.query, []byte(tc.body), now)
			if !errors.Is(err, tc.want) || app != nil {
				t.Fatalf("= %v, %v; want %v", app, err, tc.want)
			}
		})
	}
}

// hmacHex is an independent signer for the tests: the string is built by hand.
func hmacHex(secret, s string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(s))
	return hex.EncodeToString(m.Sum(nil))
}

func TestPusherRequestQueryRules(t *testing.T) {
	c := docConfig(t)
	now := time.Unix(1700000000, 0)
	// A GET with parameters: keys sorted, values NOT URL-escaped, no body_md5 for an empty body.
	q := url.Values{
		"filter_by_prefix": {"presence-"},
		"info":             {"user_count,subscription_count"},
		"auth_key":         {docKey},
		"auth_timestamp":   {"1700000000"},
		"auth_version":     {"1.0"},
	}
	q.Set("auth_signature", hmacHex(docSecret, "GET\n/apps/3/channels\nauth_key="+docKey+
		"&auth_timestamp=1700000000&auth_version=1.0&filter_by_prefix=presence-&info=user_count,subscription_count"))
	if _, err := c.VerifyPusherRequest("GET", "/apps/3/channels", q, nil, now); err != nil {
		t.Fatalf("GET with info: %v", err)
	}
	// Keys are lowercased before sorting; a repeated key's values are joined with ','.
	q = url.Values{
		"Zeta":           {"1"},
		"alpha":          {"a b", "c&d"},
		"auth_key":       {docKey},
		"auth_timestamp": {"1700000000"},
		"auth_version":   {"1.0"},
	}
	q.Set("auth_signature", hmacHex(docSecret, "GET\n/apps/3\nalpha=a b,c&d&auth_key="+docKey+
		"&auth_timestamp=1700000000&auth_version=1.0&zeta=1"))
	if _, err := c.VerifyPusherRequest("GET", "/apps/3", q, nil, now); err != nil {
		t.Fatalf("lowercased, joined: %v", err)
	}
	// An empty body may carry the MD5 of nothing, if it was signed.
	q = url.Values{"auth_key": {docKey}, "auth_timestamp": {"1700000000"}, "auth_version": {"1.0"}, "body_md5": {"d41d8cd98f00b204e9800998ecf8427e"}}
	q.Set("auth_signature", hmacHex(docSecret, "POST\n/apps/3/users/1/terminate_connections\nauth_key="+docKey+
		"&auth_timestamp=1700000000&auth_version=1.0&body_md5=d41d8cd98f00b204e9800998ecf8427e"))
	if _, err := c.VerifyPusherRequest("POST", "/apps/3/users/1/terminate_connections", q, nil, now); err != nil {
		t.Fatalf("empty body with its md5: %v", err)
	}
	// SignRequest and VerifyPusherRequest agree, for any app.
	for _, app := range c.Apps() {
		signed, err := app.SignRequest("POST", "/apps/"+app.ID+"/batch_events", url.Values{"x": {"1"}}, []byte(`{"batch":[]}`), now)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.VerifyPusherRequest("POST", "/apps/"+app.ID+"/batch_events", signed, []byte(`{"batch":[]}`), now); err != nil || got != app {
			t.Fatalf("app %s round trip: %v %v", app.ID, got, err)
		}
	}
	// A query too long to sign is refused, not hashed.
	q = docQuery()
	q.Set("pad", strings.Repeat("x", maxSignedQuery))
	if _, err := c.VerifyPusherRequest("POST", "/apps/3/events", q, []byte(docBody), time.Unix(docTimestamp, 0)); !errors.Is(err, ErrMissingParam) {
		t.Fatalf("huge query: %v", err)
	}
}

func BenchmarkVerifyPusherRequest(b *testing.B) {
	c := docConfig(b)
	now := time.Unix(docTimestamp, 0)
	body := []byte(docBody)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.VerifyPusherRequest("POST", "/apps/3/events", docQuery(), body, now); err != nil {
			b.Fatal(err)
		}
	}
}

func TestUserAuth(t *testing.T) {
	c := docConfig(t)
	app, small := c.App("3"), c.App("4")
	// The signature is HMAC-SHA256 over "<socket_id>::user::<user_data>", as pusher's
	// authenticateUser signs it (the Node test checks interop with the real package).
	const data = `{"id":"12345","user_info":{"name":"Ann"},"watchlist":["2"]}`
	m := hmac.New(sha256.New, []byte(docSecret))
	m.Write([]byte("1234.1234::user::" + data))
	want := docKey + ":" + hex.EncodeToString(m.Sum(nil))
	if got := app.SignUser("1234.1234", data); got != want {
		t.Fatalf("SignUser = %s, want %s", got, want)
	}
	if id, err := app.VerifyUserAuth("1234.1234", want, data); err != nil || id != "12345" {
		t.Fatalf("VerifyUserAuth = %q, %v", id, err)
	}
	if id, err := app.VerifyUserAuth("1.2", app.SignUser("1.2", `{"id":42}`), `{"id":42}`); err != nil || id != "42" {
		t.Fatalf("an integer id (Laravel's): %q, %v", id, err)
	}
	cases := []struct {
		name               string
		app                *App
		socket, auth, data string
		want               error
	}{
		{"another socket", app, "1234.1235", want, data, ErrBadSignature},
		{"user_data changed", app, "1234.1234", want, strings.Replace(data, "12345", "12346", 1), ErrBadSignature},
		{"a channel signature", app, "1234.1234", app.SignChannel("1234.1234", "private-x", data), data, ErrBadSignature},
		{"another app's key", small, "1234.1234", want, data, ErrUnknownApp},
		{"malformed auth", app, "1234.1234", "nokey", data, ErrMalformed},
		{"bad socket id", app, "1234", want, data, ErrMalformed},
		{"no id", app, "1.1", "", `{"user_info":{}}`, ErrUserData},
		{"empty id", app, "1.1", "", `{"id":""}`, ErrUserData},
		{"id of another type", app, "1.1", "", `{"id":true}`, ErrUserData},
		{"id outside channel characters", app, "1.1", "", `{"id":"ann smith"}`, ErrUserData},
		{"not an object", app, "1.1", "", `["12345"]`, ErrUserData},
		{"not JSON", app, "1.1", "", `{"id":`, ErrUserData},
		{"id over the app's limit", small, "1.1", "", `{"id":"12345"}`, ErrUserData},
		{"user_data over the size limit", small, "1.1", "", `{"id":"1","x":"` + strings.Repeat("x", 1000) + `"}`, ErrUserData},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			auth := tc.auth
			if auth == "" {
				auth = tc.app.SignUser(tc.socket, tc.data)
			}
			id, err := tc.app.VerifyUserAuth(tc.socket, auth, tc.data)
			if !errors.Is(err, tc.want) || id != "" {
				t.Fatalf("VerifyUserAuth = %q, %v; want %v", id, err, tc.want)
			}
		})
	}
}
