package testkit

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// Frame is one Server-Sent Events block — the lines up to a blank line — with its exact bytes,
// so a test can assert the wire format as well as what a client makes of it.
type Frame struct {
	Raw      string
	ID       string
	HasID    bool
	Event    string
	Data     string
	HasData  bool
	Retry    string
	HasRetry bool
	Comments []string
	At       time.Time // when it was read
}

// CommentOnly reports a frame of comment lines only (a heartbeat).
func (f Frame) CommentOnly() bool { return !f.HasID && !f.HasData && f.Event == "" && !f.HasRetry }

// ReadFrame reads the next frame from br, as EventSource parses one: fields id, event, data
// (joined with newlines), retry; lines starting with ':' are comments.
func ReadFrame(br *bufio.Reader) (Frame, error) {
	var f Frame
	var raw strings.Builder
	var data []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return f, err
		}
		raw.WriteString(line)
		l := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if l == "" {
			f.Raw = raw.String()
			if data != nil {
				f.Data, f.HasData = strings.Join(data, "\n"), true
			}
			f.At = time.Now()
			return f, nil
		}
		if l[0] == ':' {
			f.Comments = append(f.Comments, strings.TrimPrefix(l[1:], " "))
			continue
		}
		field, value, _ := strings.Cut(l, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			f.ID, f.HasID = value, true
		case "event":
			f.Event = value
		case "data":
			data = append(data, value)
		case "retry":
			f.Retry, f.HasRetry = value, true
		}
	}
}

// RawSSE is an event stream read off a bare TCP connection: for clients that must control
// their socket (a tiny receive buffer, a client that stops reading) or count bytes.
type RawSSE struct {
	Conn net.Conn
	BR   *bufio.Reader
}

// DialSSE connects to addr with a receive buffer of rcvbuf bytes (0 leaves the system's), set
// before connecting so the window the server sees is small from the start, and sends GET path.
// It reads nothing yet.
func DialSSE(addr, path string, header http.Header, rcvbuf int) (*RawSSE, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			return errors.Join(err, serr)
		}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n", path, addr)
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(b.String())); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetWriteDeadline(time.Time{})
	return &RawSSE{Conn: conn, BR: bufio.NewReaderSize(conn, 8<<10)}, nil
}

// ReadHead reads the response head and fails unless it is a 200.
func (s *RawSSE) ReadHead() error {
	status, err := s.BR.ReadString('\n')
	if err != nil {
		return fmt.Errorf("response head: %w", err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 200 ") {
		return fmt.Errorf("response %q", strings.TrimSpace(status))
	}
	for {
		l, err := s.BR.ReadString('\n')
		if err != nil {
			return fmt.Errorf("response head: %w", err)
		}
		if l == "\r\n" || l == "\n" {
			return nil
		}
	}
}

// ReadFrame reads the next frame, heartbeats included.
func (s *RawSSE) ReadFrame() (Frame, error) { return ReadFrame(s.BR) }

// Close closes the connection.
func (s *RawSSE) Close() { s.Conn.Close() }
