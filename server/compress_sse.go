package server

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"runtime"
	"sync"

	"github.com/klauspost/compress/flate"
)

// Opt-in gzip for SSE streams (Config.SSECompression). A stream may live for hours and a node
// holds thousands, so a stateful deflate writer per stream is out of the question: its window
// and hash tables cost a few hundred KB each (klauspost's level 1: 800 KB allocated), about
// fifty times an idle stream. Instead each batch of frames is compressed on its own by
// klauspost's stateless deflate, which keeps nothing between calls, against a dictionary of
// the stream's last sseDictBytes of plain text: events on one stream repeat their names,
// channels and JSON keys, which the dictionary finds. Each call ends on a byte boundary with
// an empty stored block (a sync flush), so every batch, heartbeats included, can be decoded
// the moment it arrives.

// sseDictBytes is the plain text kept per stream for the next batch to refer to. Chat-like
// events of 277 bytes came to 200 bytes each on the wire without it, 96 with 1 KB, 90 with
// 2 KB, 87 with 4 KB and 86 with the 8 KB the stateless encoder can use at most: 2 KB takes
// most of the gain for a sixth of an idle stream's memory.
const sseDictBytes = 2 << 10

// gzipHeader is a gzip member's header without a name, time or extra field (RFC 1952).
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

// sseGzip compresses a stream's batches into one gzip member and hands each batch to the
// stream's writer as one piece, so the hijacked path still writes a batch with one write.
type sseGzip struct {
	out     frameWriter
	dict    []byte
	crc     uint32
	size    uint32 // ISIZE: the plain length modulo 2³²
	started bool   // the header went out
	failed  bool   // a write failed: the member cannot be ended
	job     deflateJob
	one     [1][]byte
}

func newSSEGzip() *sseGzip {
	return &sseGzip{job: deflateJob{done: make(chan struct{}, 1)}}
}

// over returns the frame writer a stream uses: out itself when z is nil.
func (z *sseGzip) over(out frameWriter) frameWriter {
	if z == nil {
		return out
	}
	z.out = out
	return z
}

// Buffers for a batch's plain and compressed bytes, shared by every stream: a stream keeps
// none between batches. Buffers grown by a rare huge batch are left to the collector.
var sseBufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const sseBufKeep = 64 << 10

func putSSEBuf(b *bytes.Buffer) {
	if b.Cap() <= sseBufKeep {
		b.Reset()
		sseBufPool.Put(b)
	}
}

func (z *sseGzip) write(frames [][]byte) error {
	plain := sseBufPool.Get().(*bytes.Buffer)
	wire := sseBufPool.Get().(*bytes.Buffer)
	defer putSSEBuf(plain)
	defer putSSEBuf(wire)
	for _, f := range frames {
		plain.Write(f)
	}
	if !z.started {
		wire.Write(gzipHeader)
	}
	z.job.dst, z.job.in, z.job.dict, z.job.eof = wire, plain.Bytes(), z.dict, false
	err := runDeflate(&z.job)
	z.job.dst, z.job.in, z.job.dict = nil, nil, nil
	if err != nil {
		z.failed = true
		return fmt.Errorf("compress stream: %w", err)
	}
	z.crc = crc32.Update(z.crc, crc32.IEEETable, plain.Bytes())
	z.size += uint32(len(plain.Bytes()))
	z.remember(plain.Bytes())
	z.started = true
	z.one[0] = wire.Bytes()
	err = z.out.write(z.one[:])
	z.one[0] = nil
	if err != nil {
		z.failed = true
	}
	return err
}

// remember keeps the last sseDictBytes of the stream's plain text.
func (z *sseGzip) remember(b []byte) {
	if z.dict == nil {
		z.dict = make([]byte, 0, sseDictBytes)
	}
	if len(b) >= sseDictBytes {
		z.dict = append(z.dict[:0], b[len(b)-sseDictBytes:]...)
		return
	}
	if keep := sseDictBytes - len(b); len(z.dict) > keep {
		n := copy(z.dict, z.dict[len(z.dict)-keep:])
		z.dict = z.dict[:n]
	}
	z.dict = append(z.dict, b...)
}

// finish ends the gzip member (a final empty block, the CRC and the length) when the stream
// ends with its connection still writable, so that a client sees a complete body rather than
// a truncated one. Nothing is written after a failed write.
func (z *sseGzip) finish() {
	if z == nil || z.failed || !z.started {
		return
	}
	var b bytes.Buffer
	if flate.StatelessDeflate(&b, nil, true, nil) != nil { // a bytes.Buffer takes any write
		return
	}
	b.Write(binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, z.crc), z.size))
	z.one[0] = b.Bytes()
	_ = z.out.write(z.one[:]) // the stream is over: a client that left misses nothing
	z.one[0] = nil
}

// deflateJob is one call of the stateless compressor, run by a deflater goroutine.
type deflateJob struct {
	dst      *bytes.Buffer
	in, dict []byte
	eof      bool
	err      error
	done     chan struct{}
}

// The stateless compressor keeps its 16 KB match table on the stack. Called from a stream's
// own goroutine, it would grow that goroutine's stack from 8 to 32 KB at the first batch, and
// the runtime gives the memory back only over the next idle collections — for a busy stream,
// never (BenchmarkSSECompression: 34 KB of stack per busy stream, against 5.9 KB this way).
// The calls are therefore handed to at most GOMAXPROCS deflater goroutines, started when a
// call is queued and ending as soon as none is: the big stacks exist only while there is
// compressing to do, and an idle node runs none of them.
var deflaters struct {
	mu      sync.Mutex
	queue   []*deflateJob
	next    int
	running int
}

// runDeflate runs j on a deflater and waits for it.
func runDeflate(j *deflateJob) error {
	d := &deflaters
	d.mu.Lock()
	d.queue = append(d.queue, j)
	start := d.running < runtime.GOMAXPROCS(0)
	if start {
		d.running++
	}
	d.mu.Unlock()
	if start {
		go deflateLoop()
	}
	<-j.done
	return j.err
}

func deflateLoop() {
	d := &deflaters
	for {
		d.mu.Lock()
		if d.next == len(d.queue) {
			d.running--
			d.mu.Unlock()
			return
		}
		j := d.queue[d.next]
		d.queue[d.next] = nil
		if d.next++; d.next == len(d.queue) {
			d.queue, d.next = d.queue[:0], 0
		}
		d.mu.Unlock()
		j.err = flate.StatelessDeflate(j.dst, j.in, j.eof, j.dict)
		j.done <- struct{}{}
	}
}
