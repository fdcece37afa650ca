package stream

import (
	"hash/fnv"
	"slices"
	"strconv"
	"strings"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
)

// A composite cursor is the position of a socket in each of its channels, written as the SSE
// `id:` of a multi-channel stream and as the `cursor` of a multi-channel poll:
//
//	"c" ( "." key ":" channel-cursor )*
//
// where key is a 48-bit hash of the channel name in hex. Keys instead of names keep the cursor
// short enough for a Last-Event-ID header behind proxies (100 channels fit in ~3 KB) and let a
// client change its channel set: channels missing from the cursor start at their head, entries
// of channels no longer asked for are ignored.

const keyLen = 12

// channelKey is the short stable name of a channel inside a composite cursor.
func channelKey(channel string) string {
	h := fnv.New64a()
	h.Write([]byte(channel))
	var b [16]byte
	s := strconv.AppendUint(b[:0], h.Sum64()>>16|1<<48, 16) // fixed width: 13 hex digits, drop the leading 1
	return string(s[1:])
}

// ParseComposite parses a composite cursor into positions by channel, for the given channel
// set. Channels of the set that the cursor does not mention are absent from the result. Its
// errors are store.ErrBadCursor, as store.ParseCursor's are for one channel's cursor.
func ParseComposite(text string, channels []string) (map[string]store.Cursor, error) {
	if len(text) == 0 || text[0] != 'c' || len(text) > 1+channel.MaxPerSocket*(2+keyLen+store.MaxEpochLen+21) {
		return nil, store.ErrBadCursor
	}
	byKey := make(map[string]store.Cursor)
	rest := text[1:]
	for rest != "" {
		if rest[0] != '.' {
			return nil, store.ErrBadCursor
		}
		rest = rest[1:]
		entry := rest
		if i := strings.IndexByte(rest, '.'); i >= 0 {
			entry, rest = rest[:i], rest[i:]
		} else {
			rest = ""
		}
		if len(entry) < keyLen+2 || entry[keyLen] != ':' || !isHex(entry[:keyLen]) {
			return nil, store.ErrBadCursor
		}
		c, err := store.ParseCursor(entry[keyLen+1:])
		if err != nil {
			return nil, store.ErrBadCursor
		}
		if _, dup := byKey[entry[:keyLen]]; dup || len(byKey) == channel.MaxPerSocket {
			return nil, store.ErrBadCursor
		}
		byKey[entry[:keyLen]] = c
	}
	out := make(map[string]store.Cursor, len(byKey))
	for _, ch := range channels {
		if c, ok := byKey[channelKey(ch)]; ok {
			out[ch] = c
		}
	}
	return out, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// appendComposite writes the composite cursor of subs.
func appendComposite(b []byte, subs []*subscription) []byte {
	b = append(b, 'c')
	for _, s := range subs {
		b = append(b, '.')
		b = append(b, s.key...)
		b = append(b, ':')
		b = appendCursor(b, s.pos)
	}
	return b
}

// HeadCursor is the cursor a socket opened live on channels would start at, given their heads
// in the same order: the channel cursor of one channel, or the composite cursor of several (of
// any number when composite is set). It lets a reader that only wants to know where "now" is
// skip opening a socket.
func HeadCursor(channels []string, heads []store.Cursor, composite bool) string {
	if !composite && len(channels) == 1 {
		return string(appendCursor(nil, heads[0]))
	}
	subs := make([]*subscription, len(channels))
	for i, name := range channels {
		subs[i] = &subscription{channel: name, key: channelKey(name), pos: heads[i]}
	}
	slices.SortFunc(subs, func(a, b *subscription) int { return strings.Compare(a.channel, b.channel) })
	return string(appendComposite(nil, subs))
}

func appendCursor(b []byte, c store.Cursor) []byte {
	if c.Epoch == "" {
		b = append(b, '0')
	} else {
		b = append(b, c.Epoch...)
	}
	b = append(b, '-')
	return strconv.AppendUint(b, c.Seq, 10)
}
