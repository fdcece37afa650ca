//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// userHZ is the unit of the CPU times in /proc (USER_HZ), 100 on every
// architecture Linux supports for user space ABI purposes.
const userHZ = 100

// procMem reads VmRSS and VmHWM (KiB) from /proc/PID/status.
func procMem(pid int) (rssKB, hwmKB int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != "VmRSS" && name != "VmHWM" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		found++
		if name == "VmRSS" {
			rssKB = n
		} else {
			hwmKB = n
		}
	}
	if found == 0 {
		return 0, 0, fmt.Errorf("no VmRSS for pid %d (a kernel thread or a zombie?)", pid)
	}
	return rssKB, hwmKB, nil
}

// procCPU reads a process's user+system CPU time, in seconds, from
// /proc/PID/stat (fields 14 and 15).
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces
	// or parentheses itself: count fields after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc/PID/stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc/PID/stat format")
	}
	// f[0] is field 3, so utime (14) is f[11] and stime (15) is f[12].
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unexpected /proc/PID/stat format")
	}
	return float64(ut+st) / userHZ, nil
}

// hostCPU returns the busy and total jiffies of the whole machine from the
// first line of /proc/stat.
func hostCPU() (busy, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, errors.New("unexpected /proc/stat format")
	}
	for i, s := range f[1:] {
		n, _ := strconv.ParseUint(s, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

// raiseNofile lifts the open-file limit to at least want when it can: the
// soft limit up to the hard one, and the hard one too when the process may
// (root). Child processes inherit the result. It returns the soft limit.
func raiseNofile(want uint64) (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	if r.Cur >= want {
		return r.Cur, nil
	}
	if want > r.Max {
		up := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
			return want, nil
		}
	}
	r.Cur = min(want, r.Max)
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	return r.Cur, err
}

func setsockoptInt(fd uintptr, level, opt, value int) error {
	return syscall.SetsockoptInt(int(fd), level, opt, value)
}

// Error kinds, for the failure tables.
func isTooManyFiles(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}
func isNoPorts(err error) bool { return errors.Is(err, syscall.EADDRNOTAVAIL) }
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
func isWouldBlock(err error) bool { return errors.Is(err, syscall.EAGAIN) }
