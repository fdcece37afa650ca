package server

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/memstore"
	"github.com/herald-rt/herald/stream"
)

// benchServer is newTestServer for benchmarks.
func benchServer(b *testing.B, cfg Config) (*httptest.Server, *Server) {
	b.Helper()
	st := memstore.New(memstore.Options{})
	hub := stream.New(st, stream.Options{})
	cfg.SocketSecret = DeriveSocketSecret(testSecret)
	cfg.Apps = []*App{{ID: "default", Hub: hub, Bus: st, Presence: memstore.NewPresence(memstore.PresenceOptions{})}}
	srv := New(cfg, zerolog.New(io.Discard))
	ts := httptest.NewServer(srv.Handler())
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		ts.Close()
		hub.Close()
		st.Close()
	})
	return ts, srv
}

var chatWords = strings.Fields("the a of and to in is you that it he was for on are as with his they I at be this have " +
	"from or one had by word but not what all were we when your can said there use an each which she do how their if " +
	"will up other about out many then them these so some her would make like him into time has look two more write go " +
	"see number no way could people my than first water been call who oil its now find long down day did get come made")

// chatEvent is the data of a chat message: a user and 12 to 31 words, about 200 bytes.
func chatEvent(r *rand.Rand) json.RawMessage {
	words := make([]string, 12+r.IntN(20))
	for i := range words {
		words[i] = chatWords[r.IntN(len(chatWords))]
	}
	data, _ := json.Marshal(map[string]any{
		"user": map[string]any{"id": r.IntN(100000), "name": fmt.Sprintf("user%d", r.IntN(100000))},
		"text": strings.Join(words, " "),
	})
	return data
}

// memNow is the goroutine stacks as they are (a collection would shrink grown ones, which a
// busy stream grows again), and the heap in use after two collections: the second empties the
// sync.Pools (the compressors' shared buffers, a fixed cost of the process, not of a stream).
func memNow() (heap, stack uint64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	stack = ms.StackInuse
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, stack
}

// rawSSE is a stream client that keeps nothing but its connection and the last bytes read: it
// knows a batch has arrived whole when the bytes end as a batch does (a frame's blank line, or
// gzip's sync flush).
type rawSSE struct {
	conn net.Conn
	read int64
}

var syncFlush = []byte{0, 0, 0xff, 0xff}

func (r *rawSSE) readBatch(buf []byte, gz bool, keep *bytes.Buffer) error {
	var tail []byte
	for {
		n, err := r.conn.Read(buf)
		r.read += int64(n)
		if keep != nil {
			keep.Write(buf[:n])
		}
		if err != nil {
			return err
		}
		tail = append(tail, buf[:n]...)
		if len(tail) > 8 {
			tail = tail[len(tail)-8:]
		}
		if (gz && bytes.HasSuffix(tail, syncFlush)) || (!gz && bytes.HasSuffix(tail, []byte("\n\n"))) {
			return nil
		}
	}
}

// BenchmarkSSECompression: streams of one channel, each event published on its own and read by
// every stream before the next (so each is a batch of one, as in interactive use). One op is
// one event to every stream. Reported: the bytes on the wire per event per stream, and the
// process's heap and stack per stream, idle (after the hello) and after the events — client
// side included, which is a connection and a goroutine-free reader the same in both cases.
func BenchmarkSSECompression(b *testing.B) {
	const streams = 500
	for _, gz := range []bool{false, true} {
		name := "off"
		if gz {
			name = "gzip"
		}
		b.Run(name, func(b *testing.B) {
			ts, srv := benchServer(b, Config{SSECompression: true, Heartbeat: time.Hour})
			st := srv.apps.byID("default").Hub.Store()
			accept := "identity"
			if gz {
				accept = "gzip"
			}
			buf := make([]byte, 64<<10)
			heap0, stack0 := memNow()
			conns := make([]*rawSSE, streams)
			var first bytes.Buffer // stream 0's bytes, decoded at the end as a check
			for i := range conns {
				c, err := net.Dial("tcp", ts.Listener.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { c.Close() })
				fmt.Fprintf(c, "GET /v1/channels/bench/events HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: %s\r\n\r\n", accept)
				conns[i] = &rawSSE{conn: c}
				var keep *bytes.Buffer
				if i == 0 {
					keep = &first
				}
				if err := conns[i].readBatch(buf, gz, keep); err != nil {
					b.Fatal(err)
				}
			}
			heapIdle, stackIdle := memNow()
			var hello int64
			for _, c := range conns {
				hello += c.read
			}
			r := rand.New(rand.NewPCG(1, 2))
			events := make([]json.RawMessage, b.N)
			for i := range events {
				events[i] = chatEvent(r)
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := st.Append(context.Background(), store.AppendRequest{Channel: "bench", Name: "MessageSent", Data: events[i]}); err != nil {
					b.Fatal(err)
				}
				for j, c := range conns {
					var keep *bytes.Buffer
					if j == 0 {
						keep = &first
					}
					if err := c.readBatch(buf, gz, keep); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			heapBusy, stackBusy := memNow()
			var total int64
			for _, c := range conns {
				total += c.read
			}
			b.ReportMetric(float64(total-hello)/float64(streams*b.N), "wire-bytes/event")
			b.ReportMetric(float64(int64(heapIdle)-int64(heap0))/streams, "idle-heap-bytes/stream")
			b.ReportMetric(float64(int64(heapBusy)-int64(heap0))/streams, "heap-bytes/stream")
			b.ReportMetric(float64(int64(stackIdle)-int64(stack0))/streams, "idle-stack-bytes/stream")
			b.ReportMetric(float64(int64(stackBusy)-int64(stack0))/streams, "stack-bytes/stream")

			// The check: stream 0 carried every event, decodable.
			resp, err := http.ReadResponse(bufio.NewReader(&first), nil)
			if err != nil {
				b.Fatal(err)
			}
			body := io.Reader(resp.Body)
			if gz {
				if body, err = gzip.NewReader(resp.Body); err != nil {
					b.Fatal(err)
				}
			}
			plain, err := io.ReadAll(body)
			if err != nil && err != io.ErrUnexpectedEOF { // the stream is still open: no trailer
				b.Fatal(err)
			}
			if n := bytes.Count(plain, []byte("event: MessageSent\n")); n != b.N {
				b.Fatalf("stream 0 decoded %d events of %d", n, b.N)
			}
		})
	}
}

// BenchmarkPollCompression: a poll answer of 100 chat events, with each coding. Reported: its
// size on the wire; ns/op is the whole request, compression included.
func BenchmarkPollCompression(b *testing.B) {
	for _, coding := range []string{"identity", "gzip", "br"} {
		b.Run(coding, func(b *testing.B) {
			ts, srv := benchServer(b, Config{})
			st := srv.apps.byID("default").Hub.Store()
			r := rand.New(rand.NewPCG(1, 2))
			for range 100 {
				if _, err := st.Append(context.Background(), store.AppendRequest{Channel: "bench", Name: "MessageSent", Data: chatEvent(r)}); err != nil {
					b.Fatal(err)
				}
			}
			client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
			b.Cleanup(client.CloseIdleConnections)
			var size int
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodGet, ts.URL+"/v1/channels/bench/poll?since=beginning&timeout=0", nil)
				req.Header.Set("Accept-Encoding", coding)
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					b.Fatalf("%d %v", resp.StatusCode, err)
				}
				if got := resp.Header.Get("Content-Encoding"); got != strings.TrimPrefix(coding, "identity") {
					b.Fatalf("Content-Encoding %q", got)
				}
				size = len(body)
			}
			b.ReportMetric(float64(size), "wire-bytes/answer")
		})
	}
}
