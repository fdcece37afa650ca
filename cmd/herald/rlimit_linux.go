package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// raiseFileLimit lifts the open-file limit as far as the process may: every stream is a file
// descriptor, and the usual 1,024 (or a container's 20,000) caps a node long before memory
// does. Go already raises the soft limit to the hard one; a privileged process may also raise
// the hard limit, up to the kernel's nr_open. It returns the limit in force.
func raiseFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	want := uint64(1 << 20)
	if raw, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64); err == nil && n < want {
			want = n
		}
	}
	if lim.Max < want {
		raised := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			return want
		}
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return lim.Cur
}
