package server

import (
	"encoding/json"
)

// parsePublishFast reads the common shape of a publish body — one object whose keys are
// exactly "event", "data" and "socket_id", each at most once, with plain ASCII strings — without
// reflection or a copy of the body: encoding/json's Decoder spent more of a publish's CPU than
// the append's own work in Herald. Anything else (escapes, other or repeated keys, other
// spellings, bad JSON) returns ok=false and goes to decodeStrict, which decides and words the
// error; FuzzParsePublishFast holds the two to the same answers.
func parsePublishFast(body []byte) (req PublishRequest, ok bool) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return req, false
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return req, skipSpace(body, i+1) == len(body)
	}
	var seen [3]bool
	for {
		key, next, ok := plainString(body, i)
		if !ok {
			return req, false
		}
		i = skipSpace(body, next)
		if i >= len(body) || body[i] != ':' {
			return req, false
		}
		i = skipSpace(body, i+1)
		switch string(key) { // compared without a copy
		case "event", "socket_id":
			f := 0
			if string(key) == "socket_id" {
				f = 1
			}
			v, next, ok := plainString(body, i)
			if !ok || seen[f] {
				return req, false
			}
			seen[f] = true
			if f == 0 {
				req.Event = string(v)
			} else {
				req.SocketID = string(v)
			}
			i = next
		case "data":
			end := valueEnd(body, i)
			if end < 0 || seen[2] || !json.Valid(body[i:end]) {
				return req, false
			}
			seen[2] = true
			req.Data = body[i:end:end]
			i = end
		default:
			return req, false
		}
		i = skipSpace(body, i)
		if i >= len(body) {
			return req, false
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case '}':
			return req, skipSpace(body, i+1) == len(body)
		default:
			return req, false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a JSON string at b[i] made of printable ASCII with no escapes, and returns
// its text and the index after its closing quote.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// valueEnd finds where the JSON value starting at b[i] ends, following strings and nesting
// only: the caller checks the value with json.Valid. It returns -1 when the value runs off the
// end.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '{', '[':
		depth, inString := 0, false
		for j := i; j < len(b); j++ {
			c := b[j]
			switch {
			case inString && c == '\\':
				j++
			case c == '"':
				inString = !inString
			case inString:
			case c == '{' || c == '[':
				depth++
			case c == '}' || c == ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	case '"':
		for j := i + 1; j < len(b); j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return j + 1
			}
		}
		return -1
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
			j++
		}
		return j
	}
}
