package server

import (
	"bytes"
	"testing"
)

// FuzzParsePublishFast: whatever the fast reader accepts, encoding/json's strict decoder
// accepts too and reads the same event, data and socket id: the fast path changes how fast a
// body is read, never what it means.
func FuzzParsePublishFast(f *testing.F) {
	for _, s := range []string{
		`{"event":"MessageSent","data":{"text":"hi"}}`,
		` { "event" : "X" , "data" : [1,2,{"a":"}\"]"}] , "socket_id" : "1.2" } `,
		`{"data":null}`, `{"data":1e5}`, `{"data":"s\u00e9"}`, `{}`, `{"event":"X","event":"Y"}`,
		`{"Event":"X"}`, `{"event":"X"} {}`, `{"data":{}\}`, `{"data":1"x"}`, `{"event":"a\nb"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := parsePublishFast(body)
		if !ok {
			return
		}
		var slow PublishRequest
		if err := decodeStrict(body, &slow); err != nil {
			t.Fatalf("fast path accepted %q, the strict decoder refuses it: %v", body, err)
		}
		if fast.Event != slow.Event || fast.SocketID != slow.SocketID || !bytes.Equal(fast.Data, slow.Data) {
			t.Fatalf("%q: fast read %+v (data %q), strict %+v (data %q)", body, fast, fast.Data, slow, slow.Data)
		}
	})
}

// TestParsePublishFastTakesTheCommonShape: the bodies clients send take the fast path (a
// regression here would only cost speed, which no test can time; this says where it is lost).
func TestParsePublishFastTakesTheCommonShape(t *testing.T) {
	for _, body := range []string{
		`{"event":"MessageSent","data":{"id":1,"text":"hi \"there\"","tags":["a","b"]}}`,
		`{"event":"client-typing","data":null,"socket_id":"123.456"}`,
		"{\n  \"event\": \"X\",\n  \"data\": [1, 2]\n}\n",
	} {
		if _, ok := parsePublishFast([]byte(body)); !ok {
			t.Errorf("%s: not read by the fast path", body)
		}
	}
}

// BenchmarkParsePublish: a typical publish body read by the fast path and by the strict
// decoder it stands in for.
func BenchmarkParsePublish(b *testing.B) {
	body := []byte(`{"event":"MessageSent","data":{"id":1234,"conversation":"c-42","author":{"id":7,"name":"Ada"},` +
		`"text":"hello there, how can I help you today?","sent_at":"2026-12-05T13:00:00Z"},"socket_id":"123.456"}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := parsePublishFast(body); !ok {
				b.Fatal("not read")
			}
		}
	})
	b.Run("strict", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req PublishRequest
			if err := decodeStrict(body, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
