package stream

import (
	"encoding/json"
	"strconv"

	"github.com/herald-rt/herald/store"
)

// Message is one event encoded for delivery. It is built once per published event and the same
// bytes go to every socket of the channel; nothing in it is per-subscriber.
type Message struct {
	Channel  string
	Cursor   store.Cursor
	ID       string // Cursor's text: the envelope id
	SocketID string // the publisher's socket, for exclusion; never sent

	// frame is the whole SSE event: "id: <cursor>\nevent: <name>\ndata: <envelope>\n\n".
	frame  []byte
	body   int // offset of "event:" in frame
	envlo  int // the envelope JSON is frame[envlo:envhi]
	envhi  int
	gapped bool // not an event: live delivery of Channel lost continuity
	// ephemeral messages (whispers, presence changes) have no cursor and no id line; they
	// are never stored, so they do not move a socket's position.
	ephemeral bool
	UserID    string // the sender's user on presence channels, for ephemeral messages
}

// Ephemeral reports a live-only message: no cursor, no id line.
func (m *Message) Ephemeral() bool { return m.ephemeral }

// Frame is the SSE event with its `id:` line, the channel cursor: what a one-channel stream sends.
func (m *Message) Frame() []byte { return m.frame }

// Body is the SSE event without an `id:` line, for streams that write their own composite id.
func (m *Message) Body() []byte { return m.frame[m.body:] }

// DataLine is the frame's `data:` line and the blank line after it: the event without its
// name, for streams that send every event unnamed (EventSource's "message").
func (m *Message) DataLine() []byte { return m.frame[m.envlo-len("data: "):] }

// Envelope is the event's JSON envelope:
// {"id":"<cursor>","channel":"…","event":"…","data":<json>,"ts":<unix ms>}.
func (m *Message) Envelope() []byte { return m.frame[m.envlo:m.envhi] }

// newEnvelope encodes ev's envelope alone, for a reader that never sends SSE frames: only
// Envelope is valid on the result.
func newEnvelope(ev *store.Event) *Message {
	id := appendCursor(make([]byte, 0, 32), ev.Cursor())
	name, _ := json.Marshal(ev.Name) // a string always marshals
	f := appendEnvelope(make([]byte, 0, envelopeSize(ev, id, name)), ev, id, name)
	return &Message{Channel: ev.Channel, Cursor: ev.Cursor(), ID: string(id), SocketID: ev.SocketID,
		frame: f, envhi: len(f)}
}

// NewMessage encodes ev. The event's data must be compact JSON (no line breaks), which the
// publishing side guarantees, so the envelope fits one `data:` line.
func NewMessage(ev *store.Event) *Message {
	id := appendCursor(make([]byte, 0, 32), ev.Cursor())
	name, _ := json.Marshal(ev.Name) // a string always marshals
	f := make([]byte, 0, 4+len(id)+8+len(ev.Name)+7+envelopeSize(ev, id, name)+3)
	f = append(f, "id: "...)
	f = append(f, id...)
	f = append(f, '\n')
	body := len(f)
	f = append(f, "event: "...)
	f = append(f, ev.Name...)
	f = append(f, "\ndata: "...)
	envlo := len(f)
	f = appendEnvelope(f, ev, id, name)
	envhi := len(f)
	f = append(f, "\n\n"...)
	return &Message{
		Channel: ev.Channel, Cursor: ev.Cursor(), ID: string(id), SocketID: ev.SocketID,
		frame: f, body: body, envlo: envlo, envhi: envhi,
	}
}

func envelopeSize(ev *store.Event, id, name []byte) int {
	return len(`{"id":"","channel":"","event":,"data":,"ts":}`) + len(id) + len(ev.Channel) + len(name) + len(ev.Data) + 20
}

// appendEnvelope writes {"id":"<cursor>","channel":"…","event":"…","data":<json>,"ts":<ms>}.
func appendEnvelope(f []byte, ev *store.Event, id, name []byte) []byte {
	f = append(f, `{"id":"`...)
	f = append(f, id...)
	f = append(f, `","channel":"`...)
	f = append(f, ev.Channel...)
	f = append(f, `","event":`...)
	f = append(f, name...)
	f = append(f, `,"data":`...)
	if len(ev.Data) == 0 {
		f = append(f, "null"...)
	} else {
		f = append(f, ev.Data...)
	}
	f = append(f, `,"ts":`...)
	f = strconv.AppendInt(f, ev.Time, 10)
	return append(f, '}')
}

// NewEphemeral encodes a live-only message. Its frame has no `id:` line, so a browser's
// Last-Event-ID stays at the last stored event; its data is
// {"channel":"…","event":"…","data":<json>[,"user_id":"…"]}.
func NewEphemeral(e *store.Ephemeral) *Message {
	name, _ := json.Marshal(e.Name)
	f := make([]byte, 0, 64+len(e.Name)+len(e.Channel)+len(name)+len(e.Data)+len(e.UserID))
	f = append(f, "event: "...)
	f = append(f, e.Name...)
	f = append(f, "\ndata: "...)
	envlo := len(f)
	f = append(f, `{"channel":"`...)
	f = append(f, e.Channel...)
	f = append(f, `","event":`...)
	f = append(f, name...)
	f = append(f, `,"data":`...)
	if len(e.Data) == 0 {
		f = append(f, "null"...)
	} else {
		f = append(f, e.Data...)
	}
	if e.UserID != "" {
		uid, _ := json.Marshal(e.UserID)
		f = append(f, `,"user_id":`...)
		f = append(f, uid...)
	}
	f = append(f, '}')
	envhi := len(f)
	f = append(f, "\n\n"...)
	return &Message{Channel: e.Channel, SocketID: e.SocketID, UserID: e.UserID, ephemeral: true,
		frame: f, envlo: envlo, envhi: envhi}
}
