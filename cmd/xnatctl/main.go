// Command xnatctl controls a running xnatd through its control socket, with
// the commands and output formats of the Linux tools it stands in for:
//
//	xnatctl [--socket PATH] [--timeout DURATION] [--json] COMMAND [args]
//
//	stats [--watch [--count N]] [--per-core]   every counter, humanized; rates with --watch
//	conntrack -L|-D [filters] | -F | -C | -S   conntrack-tools commands and formats
//	iptables ARGS...                           iptables command lines (-A, -D, -L -n -v, -S, -Z, ...)
//	iptables-save [-c] [-t TABLE]              the rules in force, iptables-save format
//	iptables-restore [-c] [-n] [FILE]          load a rules file, all or nothing; only the tables it names change
//	iptables-restore --test [--print] [FILE]   validate a file offline (no daemon needed)
//	sysctl [-a] [NAME[=VALUE]]...              timeouts and limits by conntrack sysctl names and xnat.*
//	events [--follow] [--after N]              table full, out of ports, rules replaced, ...
//	top [-n N]                                 inside addresses with the most connections, ports, refusals
//
// --socket (default /run/xnat/xnat.sock), --timeout and --json go before
// or right after the command. --timeout (default 10s; a duration such as
// 500ms or 1m, or seconds; 0 for none) bounds connecting and each request
// with its whole answer; for a streamed answer (conntrack -L, events
// --follow) it bounds each silence of the daemon instead, so a listing of
// millions of connections is printed as it arrives, however long it takes.
// --json prints the API's JSON (package control/api) instead of text. Exit
// status: 0 done, 1 refused or failed (the reason on standard error, one
// line), 2 bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"xnat/control/api"
	"xnat/control/iptables"
	"xnat/dataplane/rules"
)

// env is what every subcommand runs with.
type env struct {
	name           string // the subcommand, for messages
	socket         string
	timeout        time.Duration
	json           bool
	stdin          io.Reader
	stdout, stderr io.Writer
	ctx            context.Context
}

func (e *env) client() *api.Client {
	c := api.NewClient(e.socket)
	c.SetTimeout(e.timeout)
	return c
}

// parseTimeout reads --timeout: a Go duration (10s, 1m30s) or a number of
// seconds; 0 means no limit.
func parseTimeout(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || math.IsNaN(f) || math.IsInf(f, 0) || f > math.MaxInt64/float64(time.Second) {
			return 0, fmt.Errorf("--timeout %q: want a duration such as 10s or 500ms, or seconds", s)
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 0 {
		return 0, fmt.Errorf("--timeout %q: negative", s)
	}
	return d, nil
}

// failf prints one line and returns code.
func (e *env) failf(code int, format string, args ...any) int {
	fmt.Fprintf(e.stderr, "xnatctl %s: %s\n", e.name, firstLine(fmt.Sprintf(format, args...)))
	return code
}

// fail reports an error from the client: 2 when the daemon found the
// request malformed, 1 otherwise.
func (e *env) fail(err error) int {
	code := 1
	var ae *api.Error
	if errors.As(err, &ae) && ae.Usage() {
		code = 2
	}
	if errors.Is(err, api.ErrNotRunning) {
		fmt.Fprintf(e.stderr, "xnatctl: %s\n", firstLine(err.Error()))
		return 1
	}
	return e.failf(code, "%v", err)
}

type subcommand struct {
	summary string
	run     func(e *env, args []string) int
}

var subcommands map[string]subcommand

func init() {
	subcommands = map[string]subcommand{
		"stats":            {"every counter [--watch [--count N]] [--per-core]", stats},
		"conntrack":        {"conntrack -L|-D [-p -s -d --sport --dport --state --mark] | -F | -C | -S", conntrackCmd},
		"iptables":         {"an iptables command line: -t nat -A POSTROUTING -o eth0 -j MASQUERADE, -L -n -v, -S, -Z ...", iptablesCmd},
		"iptables-save":    {"the rules in force [-c] [-t TABLE]", iptablesSave},
		"iptables-restore": {"load a rules file [-c] [-n] [FILE]; --test [--print] validates offline", iptablesRestore},
		"sysctl":           {"[-a] [NAME[=VALUE]]...: conntrack sysctls and xnat.* keys", sysctlCmd},
		"events":           {"[--follow] [--after N]: table full, out of ports, rules replaced ...", events},
		"mappings":         {"[-L]: the full-cone mappings (FULLCONENAT): inside and external endpoints, connections, timeout", mappingsCmd},
		"top":              {"[-n N]: inside addresses with the most connections, ports and refusals", topCmd},
		"ha":               {"status|cache|flush|resync|bulk|commit|role R: connection sync with the peer ([ha] section)", haCmd},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: xnatctl [--socket PATH] [--timeout DURATION] [--json] COMMAND [args]")
	fmt.Fprintln(w, "\ncommands:")
	var names []string
	for n := range subcommands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-18s %s\n", n, subcommands[n].summary)
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(runCtx(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runCtx(context.Background(), args, stdin, stdout, stderr)
}

// globals takes --socket, --timeout and --json from the front of args.
func globals(e *env, args []string) ([]string, error) {
	for len(args) > 0 {
		a := args[0]
		switch {
		case a == "--json" || a == "-json":
			e.json = true
			args = args[1:]
			continue
		case a == "--timeout" || a == "-timeout" || strings.HasPrefix(a, "--timeout="):
			v, rest, ok := strings.Cut(a, "=")
			args = args[1:]
			if !ok {
				if len(args) == 0 {
					return nil, fmt.Errorf("%s needs a duration", v)
				}
				rest, args = args[0], args[1:]
			}
			d, err := parseTimeout(rest)
			if err != nil {
				return nil, err
			}
			e.timeout = d
			continue
		case a == "--socket" || a == "-socket":
			if len(args) < 2 {
				return nil, errors.New("--socket needs a path")
			}
			e.socket = args[1]
			args = args[2:]
		case strings.HasPrefix(a, "--socket="):
			e.socket = strings.TrimPrefix(a, "--socket=")
			args = args[1:]
		default:
			return args, nil
		}
		if e.socket == "" {
			return nil, errors.New("--socket needs a path")
		}
	}
	return args, nil
}

func runCtx(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{name: "", socket: api.DefaultSocket, timeout: api.DefaultTimeout, stdin: stdin, stdout: stdout, stderr: stderr, ctx: ctx}
	args, err := globals(e, args)
	if err != nil {
		fmt.Fprintf(stderr, "xnatctl: %v\n", err)
		return 2
	}
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage(stdout)
		return 0
	}
	sc, ok := subcommands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "xnatctl: unknown command %q (run xnatctl --help)\n", args[0])
		return 2
	}
	e.name = args[0]
	rest, err := globals(e, args[1:])
	if err != nil {
		return e.failf(2, "%v", err)
	}
	return sc.run(e, rest)
}

// flags makes a flag set whose errors are one line, with --json and
// --socket accepted among the command's own flags.
func (e *env) flags() *flag.FlagSet {
	fs := flag.NewFlagSet(e.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&e.json, "json", e.json, "print JSON")
	fs.StringVar(&e.socket, "socket", e.socket, "control socket")
	fs.Func("timeout", "request timeout (10s, 500ms, 0 for none)", func(s string) error {
		d, err := parseTimeout(s)
		e.timeout = d
		return err
	})
	return fs
}

// parse parses flags; on error it returns the exit code to use.
func (e *env) parse(fs *flag.FlagSet, args []string, usageLine string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(e.stdout, "usage: xnatctl %s %s\n", e.name, usageLine)
			return 0, false
		}
		return e.failf(2, "%v", err), false
	}
	return 0, true
}

func iptablesRestore(e *env, args []string) int {
	stdin, stdout, stderr := e.stdin, e.stdout, e.stderr
	fs := e.flags()
	test := fs.Bool("test", false, "parse and validate only, offline")
	fs.BoolVar(test, "t", false, "same as --test")
	print := fs.Bool("print", false, "write the normalised rule set in iptables-save form to stdout")
	counters := fs.Bool("counters", false, "keep and print the counters in the file")
	fs.BoolVar(counters, "c", false, "same as --counters")
	noflush := fs.Bool("noflush", false, "add to the tables instead of replacing them")
	fs.BoolVar(noflush, "n", false, "same as --noflush")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "usage: xnatctl iptables-restore [--test [--print]] [--counters] [--noflush] [FILE]")
			return 0
		}
		fmt.Fprintf(stderr, "xnatctl iptables-restore: %s\n", firstLine(err.Error()))
		return 2
	}
	if fs.NArg() > 1 {
		fmt.Fprintf(stderr, "xnatctl iptables-restore: one FILE at most, got %d arguments\n", fs.NArg())
		return 2
	}
	if *print && !*test {
		fmt.Fprintln(stderr, "xnatctl iptables-restore: --print goes with --test")
		return 2
	}
	in, name := stdin, "standard input"
	if fs.NArg() == 1 && fs.Arg(0) != "-" {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			fmt.Fprintf(stderr, "xnatctl iptables-restore: %v\n", err)
			return 1
		}
		defer f.Close()
		in, name = f, fs.Arg(0)
	}
	if !*test {
		return restoreToDaemon(e, in, name, *counters, *noflush)
	}
	m, tables, err := iptables.Restore(in, rules.NewModel(), iptables.RestoreOptions{Counters: *counters, NoFlush: *noflush})
	if err != nil {
		fmt.Fprintf(stderr, "xnatctl iptables-restore: %s: %v\n", name, err)
		return 1
	}
	if _, err := rules.Compile(m, nil, rules.Options{}); err != nil {
		fmt.Fprintf(stderr, "xnatctl iptables-restore: %s: %v\n", name, err)
		return 1
	}
	for _, w := range rules.Warnings(m) {
		fmt.Fprintf(stderr, "xnatctl iptables-restore: warning: %s\n", w)
	}
	if *print {
		if err := iptables.WriteSave(stdout, m, iptables.SaveOptions{Tables: tables, Counters: *counters}); err != nil {
			fmt.Fprintf(stderr, "xnatctl iptables-restore: %v\n", err)
			return 1
		}
	}
	return 0
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
