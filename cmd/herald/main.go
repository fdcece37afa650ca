// Command herald is the Herald real-time event service: `herald serve` runs it, and `token`,
// `publish` and `tail` help to try and debug it, and `monitor` watches a deployment.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `herald — real-time channels over Server-Sent Events and long-poll

Usage:
  herald serve [flags]                   run the service (herald serve --help lists every setting)
  herald token --sub ID [--app ID]       mint a token with the configured key (the app's own, if it has one)
  herald publish CHANNEL EVENT JSON      publish an event (debugging)
  herald tail CHANNEL [--since CURSOR]   print a channel's events as they arrive (debugging)
  herald monitor --admin URL --token T   watch a deployment live: its nodes, its busiest channels
                                         (--app ID, --interval 1s; --once [--json]: one snapshot)
  herald version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(args)
	case "token":
		err = token(args)
	case "publish":
		err = publish(args)
	case "tail":
		err = tail(args)
	case "monitor":
		err = monitor(args)
	case "version", "--version":
		fmt.Println("herald", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "herald: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "herald:", err)
		os.Exit(1)
	}
}
