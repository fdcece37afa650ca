// Package test holds Herald's black-box end-to-end and interop tests. They build the real
// `herald` binary (without the race detector) once in TestMain, start it as a child process on
// loopback ports, and talk to it only over HTTP, the way users and their clients do: our own
// small SSE client on net/http (to assert the exact wire format), long-poll, publishing, and
// third-party clients — Chromium's native EventSource (browser_test.go), the `eventsource` npm
// package (test/node) and r3labs/sse's Go client (interop_test.go).
//
// The multi-node tests need Redis: HERALD_TEST_REDIS_URL, or a redis-server on PATH that the
// tests start on a free loopback port themselves.
package test
