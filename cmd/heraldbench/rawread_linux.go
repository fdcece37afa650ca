//go:build linux

package main

import (
	"io"
	"net"
	"syscall"
)

// readRaw reads a TCP connection through its descriptor, which costs less
// with thousands of connections than a conn.Read loop, for two reasons:
//
//   - a read buffer is taken from the pool only while the socket has data,
//     so an idle connection holds none;
//   - after a read that did not fill the buffer the socket is empty, so the
//     goroutine waits for the poller at once instead of calling read(2)
//     again only to get EAGAIN, as conn.Read would.
//
// It stays inside one RawConn.Read call: readiness that arrives while the
// callback runs is remembered by the poller for the wait that follows.
func readRaw(conn *net.TCPConn, s *subscriber) (handled, done bool, err error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return false, false, nil
	}
	r := s.r
	var cbErr error
	rerr := rc.Read(func(fd uintptr) bool {
		bp := r.bufPool.Get().(*[]byte)
		defer r.bufPool.Put(bp)
		buf := *bp
		for {
			if r.stopping.Load() {
				cbErr = net.ErrClosed
				return true
			}
			n, e := syscall.Read(int(fd), buf)
			switch {
			case e == syscall.EINTR:
				continue
			case e == syscall.EAGAIN:
				return false // wait for the poller
			case e != nil:
				cbErr = e
				return true
			case n == 0:
				cbErr = io.EOF
				return true
			}
			d, fe := s.feedBody(buf[:n])
			if d || fe != nil {
				done, cbErr = d, fe
				return true
			}
			if n < len(buf) {
				return false
			}
		}
	})
	if rerr != nil {
		return true, done, rerr
	}
	return true, done, cbErr
}
