//go:build linux

package main

import "syscall"

// childAttr makes the kernel kill a child should this process die without
// stopping it.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
