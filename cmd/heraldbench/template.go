package main

import (
	"fmt"
	"net/url"
	"strings"
)

// Placeholders of the URL and body templates.
const (
	phLit      = iota
	phChannel  // {channel}: the channel name as it is
	phChannelQ // {channel_q}: the channel name, query-escaped
	phPayload  // {payload}: the JSON payload object (publish body only)
)

var placeholders = []struct {
	text string
	kind int
}{
	{"{channel}", phChannel},
	{"{channel_q}", phChannelQ},
	{"{payload}", phPayload},
}

type tmplPart struct {
	kind int
	lit  string
}

// tmpl is a template split once into literal text and placeholders. Braces
// that do not start a known placeholder are literal text, so JSON bodies
// can be written as they are.
type tmpl struct {
	src   string
	parts []tmplPart
	uses  [4]bool
}

// parseTmpl splits s; {base} has been replaced before. Placeholders outside
// allowed are refused, so that a typo does not go out as text.
func parseTmpl(what, s string, allowed ...int) (*tmpl, error) {
	t := &tmpl{src: s}
	lit := strings.Builder{}
	for i := 0; i < len(s); {
		if s[i] == '{' {
			matched := false
			for _, ph := range placeholders {
				if strings.HasPrefix(s[i:], ph.text) {
					ok := false
					for _, a := range allowed {
						ok = ok || a == ph.kind
					}
					if !ok {
						return nil, fmt.Errorf("%s: placeholder %s is not allowed here", what, ph.text)
					}
					if lit.Len() > 0 {
						t.parts = append(t.parts, tmplPart{kind: phLit, lit: lit.String()})
						lit.Reset()
					}
					t.parts = append(t.parts, tmplPart{kind: ph.kind})
					t.uses[ph.kind] = true
					i += len(ph.text)
					matched = true
					break
				}
			}
			if matched {
				continue
			}
		}
		lit.WriteByte(s[i])
		i++
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, tmplPart{kind: phLit, lit: lit.String()})
	}
	return t, nil
}

// expand appends the template with its placeholders filled in to dst.
func (t *tmpl) expand(dst []byte, channel string, payload []byte) []byte {
	for _, p := range t.parts {
		switch p.kind {
		case phLit:
			dst = append(dst, p.lit...)
		case phChannel:
			dst = append(dst, channel...)
		case phChannelQ:
			dst = append(dst, url.QueryEscape(channel)...)
		case phPayload:
			dst = append(dst, payload...)
		}
	}
	return dst
}

// validChannelName is Herald's channel name rule: [A-Za-z0-9_\-=@,.;]{1,164}.
// Names of this form need no escaping in a URL path or a JSON string.
func validChannelName(s string) bool {
	if len(s) < 1 || len(s) > 164 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("_-=@,.;", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// parseHeaderLine splits "Name: value".
func parseHeaderLine(what, h string) (string, string, error) {
	name, value, ok := strings.Cut(h, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.ContainsAny(name, " \t\r\n") || strings.ContainsAny(value, "\r\n") {
		return "", "", fmt.Errorf("%s %q: want 'Name: value'", what, h)
	}
	return name, strings.TrimSpace(value), nil
}
