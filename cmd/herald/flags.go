package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Every setting is a flag and an environment variable: --redis-url is HERALD_REDIS_URL.
// The environment sets the default; a flag on the command line wins.

func envName(flagName string) string {
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

type flagSet struct {
	*flag.FlagSet
	errs       []string
	positional []string
}

// Args, NArg and Arg are the positional arguments, wherever they stood among the flags.
func (fs *flagSet) Args() []string   { return fs.positional }
func (fs *flagSet) NArg() int        { return len(fs.positional) }
func (fs *flagSet) Arg(i int) string { return fs.positional[i] }

func newFlagSet(name, usage string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError)}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nFlags (each also read from the environment variable shown):\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

func (fs *flagSet) env(name string) (string, bool) {
	return os.LookupEnv(envName(name))
}

func (fs *flagSet) String(name, def, usage string) *string {
	return fs.StringEnv(name, envName(name), def, usage)
}

// StringEnv is String read from the environment variable env rather than the one its name
// gives, for a flag whose own variable would mean something else: monitor's --token is the
// admin token, HERALD_ADMIN_TOKEN as for serve, not a client's HERALD_TOKEN.
func (fs *flagSet) StringEnv(name, env, def, usage string) *string {
	if v, ok := os.LookupEnv(env); ok {
		def = v
	}
	return fs.FlagSet.String(name, def, usage+" ("+env+")")
}

func (fs *flagSet) Bool(name string, def bool, usage string) *bool {
	if v, ok := fs.env(name); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Sprintf("%s=%q: not a boolean", envName(name), v))
		}
		def = b
	}
	return fs.FlagSet.Bool(name, def, usage+" ("+envName(name)+")")
}

func (fs *flagSet) Int(name string, def int, usage string) *int {
	if v, ok := fs.env(name); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Sprintf("%s=%q: not an integer", envName(name), v))
		}
		def = n
	}
	return fs.FlagSet.Int(name, def, usage+" ("+envName(name)+")")
}

func (fs *flagSet) Float64(name string, def float64, usage string) *float64 {
	if v, ok := fs.env(name); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Sprintf("%s=%q: not a number", envName(name), v))
		}
		def = f
	}
	return fs.FlagSet.Float64(name, def, usage+" ("+envName(name)+")")
}

func (fs *flagSet) Duration(name string, def time.Duration, usage string) *time.Duration {
	if v, ok := fs.env(name); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Sprintf("%s=%q: not a duration (e.g. 15s, 24h)", envName(name), v))
		}
		def = d
	}
	return fs.FlagSet.Duration(name, def, usage+" ("+envName(name)+")")
}

// List is a repeatable flag; from the environment it is a comma-separated list.
func (fs *flagSet) List(name, usage string, splitEnv bool) *[]string {
	l := &listFlag{}
	if v, ok := fs.env(name); ok && v != "" {
		if splitEnv {
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					l.values = append(l.values, p)
				}
			}
		} else {
			l.values = []string{v}
		}
		l.fromEnv = true
	}
	fs.Var(l, name, usage+" ("+envName(name)+")")
	return &l.values
}

// parse parses args — flags may come before, between or after the positional arguments, as
// in `herald publish demo Tick '{}' --token T` — and reports environment errors too.
// Positional arguments are then fs.Args(); after "--" everything is positional.
func (fs *flagSet) parse(args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		rest := fs.FlagSet.Args()
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	fs.positional = positional
	if len(fs.errs) > 0 {
		return fmt.Errorf("bad environment: %s", strings.Join(fs.errs, "; "))
	}
	return nil
}

type listFlag struct {
	values  []string
	fromEnv bool
}

func (l *listFlag) String() string { return strings.Join(l.values, ",") }

func (l *listFlag) Set(v string) error {
	if l.fromEnv { // the command line replaces the environment's list
		l.values, l.fromEnv = nil, false
	}
	l.values = append(l.values, v)
	return nil
}
