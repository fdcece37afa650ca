package server

import (
	"math/big"
	"testing"
	"time"
)

// FuzzParseSeconds: a timeout is accepted exactly when it is a whole number of seconds from 0
// to the limit — compared with arbitrary-precision arithmetic, so no overflow can let a huge
// value through as a small one.
func FuzzParseSeconds(f *testing.F) {
	for _, s := range []string{"0", "25", "60", "61", "-1", "99999999", "9223372036854775807", "18446744074",
		"9223372037", "9223372036", "-9223372036854775808", "+5", "1e3", " 5", "0x10", ""} {
		f.Add(s)
	}
	const limit = 60 * time.Second
	f.Fuzz(func(t *testing.T, raw string) {
		d, ok := parseSeconds(raw, limit)
		n, isInt := new(big.Int).SetString(raw, 10)
		want := isInt && n.Sign() >= 0 && n.Cmp(big.NewInt(int64(limit/time.Second))) <= 0
		if ok != want {
			t.Fatalf("parseSeconds(%q) ok=%v, want %v", raw, ok, want)
		}
		if ok && (d < 0 || d > limit || d%time.Second != 0 || int64(d/time.Second) != n.Int64()) {
			t.Fatalf("parseSeconds(%q) = %v", raw, d)
		}
	})
}
