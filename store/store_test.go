package store

import (
	"errors"
	"strings"
	"testing"
)

func TestPlanRead(t *testing.T) {
	head := Cursor{Epoch: "e1", Seq: 100}
	for _, c := range []struct {
		name        string
		after, head Cursor
		oldest      uint64
		from        uint64
		expired     bool
	}{
		{"covered", Cursor{"e1", 50}, head, 1, 50, false},
		{"at head", Cursor{"e1", 100}, head, 1, 100, false},
		{"just before oldest", Cursor{"e1", 40}, head, 41, 40, false},
		{"trimmed", Cursor{"e1", 39}, head, 41, 40, true},
		{"other epoch", Cursor{"e0", 50}, head, 1, 0, true},
		{"ahead of head", Cursor{"e1", 101}, head, 1, 100, true},
		{"ahead of head, trimmed", Cursor{"e1", 120}, head, 41, 100, true},
		{"ahead of head, all aged out", Cursor{"e1", 120}, head, 101, 100, true},
		{"zero, nothing trimmed", Cursor{}, head, 1, 0, false},
		{"zero, trimmed", Cursor{}, head, 41, 40, true},
		{"beginning, trimmed", Beginning, head, 41, 40, false},
		{"empty channel, zero", Cursor{}, Cursor{}, 0, 0, false},
		{"empty channel, cursor", Cursor{"e1", 5}, Cursor{}, 0, 0, true},
		{"all aged out, at head", Cursor{"e1", 100}, head, 101, 100, false},
		{"all aged out, behind", Cursor{"e1", 99}, head, 101, 100, true},
	} {
		from, expired := PlanRead(c.after, c.head, c.oldest)
		if from != c.from || expired != c.expired {
			t.Errorf("%s: PlanRead = %d, %v; want %d, %v", c.name, from, expired, c.from, c.expired)
		}
	}
}

func TestFingerprintSeparatesFields(t *testing.T) {
	a := Fingerprint(AppendRequest{Name: "ab", Data: []byte("c")})
	b := Fingerprint(AppendRequest{Name: "a", Data: []byte("bc")})
	if a == b {
		t.Fatal("fields run together in the fingerprint")
	}
	if a != Fingerprint(AppendRequest{Name: "ab", Data: []byte("c"), Channel: "other", IdempotencyKey: "k"}) {
		t.Fatal("the fingerprint depends on the channel or key")
	}
}

func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"0-0", "abc-1", "a-01", "-1", "a-", "toolongepoch12345-1", "k3j9x0qa-42",
		"a-18446744073709551615", "a--1", "a-+1", "A-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCursor(s)
		if err != nil {
			if !errors.Is(err, ErrBadCursor) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if c.String() != s {
			t.Fatalf("%q -> %+v -> %q", s, c, c.String())
		}
		if c.Epoch == "*" {
			t.Fatal("parsed the Beginning sentinel")
		}
		if strings.ContainsAny(s, "\r\n\x00") {
			t.Fatalf("accepted a cursor that cannot be an SSE id: %q", s)
		}
	})
}
