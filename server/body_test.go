package server

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestLoneSurrogate(t *testing.T) {
	for body, want := range map[string]bool{
		`{"event":"a","data":"\ud83d\ude00"}`: false, // a pair: 😀
		`{"event":"\ud800"}`:                  true,
		`{"event":"\udc00"}`:                  true,
		`{"event":"\ud800\u0041"}`:            true, // high, then not a low one
		`{"event":"\ud800x"}`:                 true,
		`{"event":"\ud800"`:                   true,
		`{"event":"\\ud800"}`:                 false, // an escaped backslash, then text
		`{"event":"\\\ud800"}`:                true,
		`{"a":"\u00e9","b":"\uDBFF\uDFFF"}`:   false,
		`{"d":[1,"\u12"]}`:                    false, // malformed: the JSON decoder refuses it
		`["\"\ud800"]`:                        true,
		`"\ud83d\ude00\udc00"`:                true,
		`\ud800`:                              false, // not in a string: not JSON at all
	} {
		if got := loneSurrogate([]byte(body)); got != want {
			t.Errorf("loneSurrogate(%s) = %v, want %v", body, got, want)
		}
	}
}

// FuzzLoneSurrogate: whatever encoding/json writes for text (valid UTF-8 strings, where every
// non-BMP character may also be written as a surrogate pair) has none; a lone half added to
// such text is always found.
func FuzzLoneSurrogate(f *testing.F) {
	f.Add("hello", uint16(0xd800))
	f.Add("😀 \\ \" é", uint16(0xdfff))
	f.Fuzz(func(t *testing.T, s string, half uint16) {
		s = strings.ToValidUTF8(s, "?")
		text, _ := json.Marshal(s)
		if loneSurrogate(text) {
			t.Fatalf("found a lone surrogate in %s", text)
		}
		var paired strings.Builder
		for _, r := range s {
			if r > 0xffff {
				r1, r2 := utf16Pair(r)
				paired.WriteString(escape(r1) + escape(r2))
				continue
			}
			b, _ := json.Marshal(string(r))
			paired.Write(b[1 : len(b)-1])
		}
		if p := `"` + paired.String() + `"`; loneSurrogate([]byte(p)) || !json.Valid([]byte(p)) {
			t.Fatalf("paired form %s: lone=%v valid=%v", p, loneSurrogate([]byte(p)), json.Valid([]byte(p)))
		}
		if half < 0xd800 || half > 0xdfff {
			return
		}
		bad := `"` + paired.String() + escape(rune(half)) + `"`
		if !loneSurrogate([]byte(bad)) {
			t.Fatalf("missed the lone surrogate in %s", bad)
		}
	})
}

func utf16Pair(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff
}

func escape(r rune) string {
	const hex = "0123456789abcdef"
	return `\u` + string([]byte{hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf]})
}
