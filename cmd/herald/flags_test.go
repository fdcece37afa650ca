package main

import (
	"strings"
	"testing"
	"time"
)

func TestEnvironmentSetsDefaultsAndFlagsWin(t *testing.T) {
	t.Setenv("HERALD_REDIS_URL", "redis://from-env:6379/0")
	t.Setenv("HERALD_HEARTBEAT", "7s")
	t.Setenv("HERALD_CORS_ORIGINS", "https://a.example, https://b.example")
	fs := newFlagSet("serve", "test")
	url := fs.String("redis-url", "", "")
	hb := fs.Duration("heartbeat", 15*time.Second, "")
	cors := fs.List("cors-origins", "", true)
	subs := fs.List("subscribe", "", false)
	if err := fs.parse([]string{"--heartbeat", "3s", "--subscribe", "private-a,b", "--subscribe", "c"}); err != nil {
		t.Fatal(err)
	}
	if *url != "redis://from-env:6379/0" || *hb != 3*time.Second {
		t.Fatalf("redis-url %q heartbeat %v", *url, *hb)
	}
	if strings.Join(*cors, "|") != "https://a.example|https://b.example" {
		t.Fatalf("cors from the environment: %q", *cors)
	}
	// Channel names may hold commas, so a repeatable pattern flag never splits.
	if strings.Join(*subs, "|") != "private-a,b|c" {
		t.Fatalf("subscribe patterns: %q", *subs)
	}
}

func TestBadEnvironmentIsAnError(t *testing.T) {
	t.Setenv("HERALD_HEARTBEAT", "soon")
	fs := newFlagSet("serve", "test")
	fs.Duration("heartbeat", time.Second, "")
	err := fs.parse(nil)
	if err == nil || !strings.Contains(err.Error(), "HERALD_HEARTBEAT") {
		t.Fatalf("err = %v, want one naming HERALD_HEARTBEAT", err)
	}
}

func TestCommandLineReplacesEnvironmentList(t *testing.T) {
	t.Setenv("HERALD_CORS_ORIGINS", "https://env.example")
	fs := newFlagSet("serve", "test")
	cors := fs.List("cors-origins", "", true)
	if err := fs.parse([]string{"--cors-origins", "https://flag.example"}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(*cors, "|") != "https://flag.example" {
		t.Fatalf("cors: %q", *cors)
	}
}

func TestFlagsMayFollowArguments(t *testing.T) {
	fs := newFlagSet("publish", "test")
	tok := fs.String("token", "", "")
	if err := fs.parse([]string{"demo", "--token", "T", "MessageSent", `{"a":1}`}); err != nil {
		t.Fatal(err)
	}
	if *tok != "T" || strings.Join(fs.Args(), " ") != `demo MessageSent {"a":1}` {
		t.Fatalf("token %q args %q", *tok, fs.Args())
	}
}

func TestDoubleDashEndsFlags(t *testing.T) {
	fs := newFlagSet("publish", "test")
	fs.String("token", "", "")
	if err := fs.parse([]string{"demo", "Tick", "--", "-5"}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(fs.Args(), " ") != "demo Tick -5" {
		t.Fatalf("args %q", fs.Args())
	}
}
