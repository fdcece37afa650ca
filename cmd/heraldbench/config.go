package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Modes of one run.
const (
	modeFanout  = "fanout"  // subscribers + publishing: delivery, latency, CPU per delivery
	modeIdle    = "idle"    // subscribers only, held: memory per connection
	modePublish = "publish" // publishing only: throughput and request latency
)

// runConfig is everything one run needs.
type runConfig struct {
	Scenario string // S1..S5 or "custom"
	Mode     string

	Conns         int
	Channels      int
	ChannelPrefix string
	Rate          float64 // messages per second in total, spread evenly over the channels
	Duration      time.Duration
	Settle        time.Duration
	Drain         time.Duration
	PubWorkers    int
	MsgSize       int

	RampRate       float64 // new connections per second
	MaxPending     int     // connection attempts in flight
	ConnectTimeout time.Duration
	PubTimeout     time.Duration
	SrcIPs         int
	ReadBuf        int

	// Proto is what the subscribers speak: h1, h2 or h2c (proto.go); TLS makes h1 run over
	// TLS (h2 always does). StreamsPerConn HTTP/2 streams share one connection.
	Proto          string
	TLS            bool
	StreamsPerConn int
	// RootCAs are trusted for https URLs: -tls-ca's, or the certificate the orchestrator made.
	RootCAs *x509.CertPool
	// AdminURL is the server's admin listener, for its Go heap, stacks and goroutines (from
	// /debug/pprof) before connecting and after settle; empty: RSS only.
	AdminURL string
	// ProfileDir, when set, receives the server's heap and goroutine profiles after settle.
	ProfileDir string

	Base string // replaces {base} in the URL templates
	// SubBases are further servers (nodes of one deployment) subscribers connect to: connection
	// i goes to base (i / Channels) % (1 + len(SubBases)), base 0 being Base, so each node
	// holds subscribers of every channel. Publishing stays on Base.
	SubBases   []string
	SubURL     string
	PubURL     string
	PubBody    string
	SubHeaders []string
	PubHeaders []string
	Token      string // adds "Authorization: Bearer <token>" to publish requests

	ReadyEvent  string // a subscriber is ready once it received this event ("" = at the response head)
	ExpectEvent string // payload events must carry this event name ("" = no check)

	ServerPID int
	RedisPID  int
	// ServerPIDs are further server processes (the other nodes) whose CPU counts with
	// ServerPID's.
	ServerPIDs []int
	// RedisPIDs are further redis-servers whose CPU counts with RedisPID's (a cluster's).
	RedisPIDs []int
	Progress  time.Duration
}

// defaultConfig holds the values every scenario starts from; they match the
// reference tool's defaults wherever benchmarks.md does not set a value.
func defaultConfig() runConfig {
	return runConfig{
		Scenario:       "custom",
		Mode:           modeFanout,
		Conns:          1000,
		Channels:       10,
		ChannelPrefix:  "bench.",
		Rate:           100,
		Duration:       10 * time.Second,
		Settle:         2 * time.Second,
		Drain:          3 * time.Second,
		PubWorkers:     8,
		MsgSize:        200,
		RampRate:       2000,
		MaxPending:     500,
		ConnectTimeout: 10 * time.Second,
		PubTimeout:     10 * time.Second,
		SrcIPs:         4,
		ReadBuf:        4096,
		Proto:          protoH1,
		StreamsPerConn: 1,
		Base:           "http://127.0.0.1:8080",
		SubURL:         "{base}/v1/channels/{channel}/events",
		PubURL:         "{base}/v1/channels/{channel}/events",
		PubBody:        `{"event":"bench","data":{payload}}`,
		ReadyEvent:     "herald:connected",
		ExpectEvent:    "bench",
		Progress:       2 * time.Second,
	}
}

// scenario is one line of the table in benchmarks.md.
type scenario struct {
	id, what string
	apply    func(*runConfig)
}

var scenarios = []scenario{
	{"S1", "idle memory: 10,000 connections over 100 channels, held 10 s", func(c *runConfig) {
		c.Mode, c.Conns, c.Channels, c.Duration = modeIdle, 10000, 100, 10*time.Second
	}},
	{"S2", "wide fan-out: 1 channel x 5,000 subscribers, 20 msg/s, 15 s", func(c *runConfig) {
		c.Mode, c.Conns, c.Channels, c.Rate, c.Duration = modeFanout, 5000, 1, 20, 15*time.Second
	}},
	{"S3", "wider: 1 channel x 10,000 subscribers, 20 msg/s, 15 s", func(c *runConfig) {
		c.Mode, c.Conns, c.Channels, c.Rate, c.Duration = modeFanout, 10000, 1, 20, 15*time.Second
	}},
	{"S4", "many channels: 2,000 channels x 5 subscribers, 2,000 msg/s, 15 s", func(c *runConfig) {
		c.Mode, c.Conns, c.Channels, c.Rate, c.Duration = modeFanout, 10000, 2000, 2000, 15*time.Second
	}},
	{"S5", "publish only: 100 channels, 32 workers, 20,000 msg/s target, 10 s", func(c *runConfig) {
		c.Mode, c.Channels, c.Rate, c.PubWorkers, c.Duration = modePublish, 100, 20000, 32, 10*time.Second
		c.Conns = 0
	}},
}

func findScenario(id string) (scenario, bool) {
	for _, s := range scenarios {
		if strings.EqualFold(s.id, id) {
			return s, true
		}
	}
	return scenario{}, false
}

// parseScenarioList reads "S1,S2,..." ("" means one custom run).
func parseScenarioList(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return []string{"custom"}, nil
	}
	var out []string
	seen := map[string]bool{}
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if strings.EqualFold(part, "custom") {
			part = "custom"
		} else {
			s, ok := findScenario(part)
			if !ok {
				return nil, fmt.Errorf("unknown scenario %q (S1..S5 or custom)", part)
			}
			part = s.id
		}
		if !seen[part] {
			seen[part] = true
			out = append(out, part)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-scenario names no scenario")
	}
	return out, nil
}

// configFor builds the configuration of one scenario: the base (defaults
// and every flag), the scenario's own values, then the flags given
// explicitly on the command line, which win.
func configFor(id string, base runConfig, override func(*runConfig)) runConfig {
	c := base
	c.Scenario = id
	if s, ok := findScenario(id); ok {
		s.apply(&c)
		if override != nil {
			override(&c)
		}
	}
	return c
}

// validate checks a configuration before anything is sent.
func (c *runConfig) validate() error {
	switch c.Mode {
	case modeFanout, modeIdle, modePublish:
	default:
		return fmt.Errorf("-mode must be fanout, idle or publish, not %q", c.Mode)
	}
	if c.Channels < 1 {
		return errors.New("-channels must be at least 1")
	}
	if c.Mode != modePublish {
		if c.Conns < 1 {
			return errors.New("-conns must be at least 1")
		}
		if c.RampRate <= 0 || c.MaxPending < 1 {
			return errors.New("-ramp-rate and -max-pending must be positive")
		}
		if c.SrcIPs < 0 || c.SrcIPs > 254 {
			return errors.New("-src-ips must be between 0 and 254")
		}
		if c.ReadBuf < 512 || c.ReadBuf > 1<<20 {
			return errors.New("-read-buf must be between 512 and 1048576")
		}
	}
	if c.Mode != modeIdle {
		if c.Rate <= 0 || c.Rate > 1e6 {
			return errors.New("-rate must be above 0 and at most 1,000,000")
		}
		if c.PubWorkers < 1 || c.PubWorkers > 4096 {
			return errors.New("-pub-workers must be between 1 and 4096")
		}
		if c.MsgSize < 0 || c.MsgSize > 1<<20 {
			return errors.New("-msg-size must be between 0 and 1048576")
		}
	}
	if c.Duration <= 0 || c.Duration > 24*time.Hour {
		return errors.New("-duration must be positive and at most 24h")
	}
	if c.Settle < 0 || c.Drain < 0 || c.Settle > time.Hour || c.Drain > time.Hour {
		return errors.New("-settle and -drain must be between 0 and 1h")
	}
	if c.ConnectTimeout <= 0 || c.PubTimeout <= 0 || c.ConnectTimeout > 5*time.Minute || c.PubTimeout > 5*time.Minute {
		return errors.New("-connect-timeout and -pub-timeout must be positive and at most 5m")
	}
	switch c.Proto {
	case protoH1:
		if c.StreamsPerConn != 1 {
			return errors.New("-streams-per-conn is for HTTP/2 (-proto h2 or h2c); HTTP/1.1 has one stream per connection")
		}
	case protoH2:
	case protoH2C:
		if c.TLS {
			return errors.New("-proto h2c is HTTP/2 without TLS: leave out -tls (-proto h2 is HTTP/2 over TLS)")
		}
	default:
		return fmt.Errorf("-proto must be h1, h2 or h2c, not %q", c.Proto)
	}
	if c.StreamsPerConn < 1 || c.StreamsPerConn > 10000 {
		return errors.New("-streams-per-conn must be between 1 and 10000")
	}
	if c.Mode != modePublish && c.Conns > 1_000_000 {
		return errors.New("-conns must be at most 1,000,000")
	}
	return nil
}

// maxRunTime bounds how long a run with this configuration may take; the
// watchdog ends the process past the sum of these bounds.
func (c *runConfig) maxRunTime() time.Duration {
	d := c.Settle + c.Duration + c.Drain + 3*c.PubTimeout + 30*time.Second
	if c.Mode != modePublish && c.RampRate > 0 {
		d += time.Duration(float64(c.Conns)/c.RampRate*float64(time.Second)) + 6*c.ConnectTimeout
	}
	return d
}
