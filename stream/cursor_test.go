package stream

import (
	"errors"
	"strings"
	"testing"

	"github.com/herald-rt/herald/store"
)

func TestCompositeRoundTrip(t *testing.T) {
	subs := []*subscription{
		{channel: "a", key: channelKey("a"), pos: store.Cursor{Epoch: "k3j9x0qa", Seq: 42}},
		{channel: "private-conversation.1.2", key: channelKey("private-conversation.1.2"), pos: store.Cursor{}},
	}
	text := string(appendComposite(nil, subs))
	got, err := ParseComposite(text, []string{"a", "private-conversation.1.2", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["a"] != subs[0].pos || got["private-conversation.1.2"] != (store.Cursor{}) {
		t.Fatalf("%q parsed as %v", text, got)
	}
	if empty, err := ParseComposite("c", []string{"a"}); err != nil || len(empty) != 0 {
		t.Fatalf("empty composite: %v %v", empty, err)
	}
}

func TestCompositeRejectsMalformed(t *testing.T) {
	key := channelKey("a")
	for _, bad := range []string{
		"", "x", "c.", "c..", "c." + key, "c." + key + ":", "c." + key + ":abc", "c." + key + ":a-01",
		"c." + key + ":A-1", "c." + strings.ToUpper(key) + ":a-1", "c." + key[:11] + ":a-1",
		"c." + key + ":a-1." + key + ":a-2", "c." + key + ":a-18446744073709551616", "c." + key + ":a-1.",
		"k3j9x0qa-42",
	} {
		if _, err := ParseComposite(bad, []string{"a"}); !errors.Is(err, store.ErrBadCursor) {
			t.Errorf("ParseComposite(%q) = %v, want store.ErrBadCursor", bad, err)
		}
	}
}

func TestChannelKeyIsStable(t *testing.T) {
	// Keys are part of cursors clients keep across server versions and nodes.
	if k := channelKey("private-organization.7"); k != channelKey("private-organization.7") || len(k) != keyLen || !isHex(k) {
		t.Fatalf("key %q", k)
	}
	if channelKey("a") == channelKey("b") {
		t.Fatal("keys collide")
	}
}

func FuzzParseComposite(f *testing.F) {
	f.Add("c", "a")
	f.Add("c."+channelKey("a")+":k3j9x0qa-42", "a")
	f.Add("c."+channelKey("a")+":0-0."+channelKey("b")+":z-1", "b")
	f.Fuzz(func(t *testing.T, text, channel string) {
		got, err := ParseComposite(text, []string{channel})
		if err != nil {
			if !errors.Is(err, store.ErrBadCursor) {
				t.Fatalf("error %v does not wrap store.ErrBadCursor", err)
			}
			return
		}
		if len(got) > 1 {
			t.Fatalf("one channel asked, %d positions", len(got))
		}
		// A parsed position written back parses to the same position.
		if c, ok := got[channel]; ok {
			sub := &subscription{channel: channel, key: channelKey(channel), pos: c}
			again, err := ParseComposite(string(appendComposite(nil, []*subscription{sub})), []string{channel})
			if err != nil || again[channel] != c {
				t.Fatalf("round trip of %v: %v %v", c, again, err)
			}
		}
	})
}

func FuzzValidEventName(f *testing.F) {
	for _, s := range []string{"MessageSent", "client-typing", ".App\\Events\\X", "herald:connected", "a\nb", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidEventName(name) != nil {
			return
		}
		if strings.ContainsAny(name, "\r\n\x00") || strings.HasPrefix(name, "herald:") || name == "" {
			t.Fatalf("accepted %q", name)
		}
	})
}
