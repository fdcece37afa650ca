//go:build !linux

package main

import "net"

// readRaw is Linux only; elsewhere the subscriber uses a conn.Read loop.
func readRaw(*net.TCPConn, *subscriber) (handled, done bool, err error) {
	return false, false, nil
}
