//go:build !linux

package main

import "errors"

// heraldbench measures servers through Linux's /proc; elsewhere it still
// builds, and runs without the server figures.

var errNoProc = errors.New("process figures need Linux /proc")

func procMem(int) (int64, int64, error)          { return 0, 0, errNoProc }
func procCPU(int) (float64, error)               { return 0, errNoProc }
func hostCPU() (uint64, uint64, error)           { return 0, 0, errNoProc }
func raiseNofile(want uint64) (uint64, error)    { return 0, errNoProc }
func setsockoptInt(uintptr, int, int, int) error { return nil }
func isTooManyFiles(error) bool                  { return false }
func isNoPorts(error) bool                       { return false }
func isRefused(error) bool                       { return false }
func isReset(error) bool                         { return false }
func isWouldBlock(error) bool                    { return false }
