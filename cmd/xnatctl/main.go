// Command xnatctl controls xnat. For now it works offline:
//
//	xnatctl iptables-restore --test [--print] [--counters] [FILE]
//
// parses and validates an iptables-save format file (standard input
// without FILE) as iptables-restore --test does: exit status 0 when it
// would load, 1 with the errors on standard error when not. --print also
// writes the normalised rule set in iptables-save form to standard
// output (no counters unless --counters, no comment header lines).
//
// Later subcommands (stats, conntrack, sysctl...) talk to the daemon; they
// plug into the same dispatch table.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"xnat/control/iptables"
	"xnat/dataplane/rules"
)

type subcommand struct {
	summary string
	run     func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

var subcommands = map[string]subcommand{
	"iptables-restore": {"parse and validate an iptables-save file (--test) [--print] [--counters] [FILE]", iptablesRestore},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: xnatctl SUBCOMMAND [flags] [args]")
	fmt.Fprintln(w, "\nsubcommands:")
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
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
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
		fmt.Fprintf(stderr, "xnatctl: unknown subcommand %q (run xnatctl --help)\n", args[0])
		return 2
	}
	return sc.run(args[1:], stdin, stdout, stderr)
}

func iptablesRestore(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("iptables-restore", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	test := fs.Bool("test", false, "parse and validate only (required: xnatctl has no daemon to load into yet)")
	fs.BoolVar(test, "t", false, "same as --test")
	print := fs.Bool("print", false, "write the normalised rule set in iptables-save form to stdout")
	counters := fs.Bool("counters", false, "keep and print the counters in the file")
	fs.BoolVar(counters, "c", false, "same as --counters")
	noflush := fs.Bool("noflush", false, "add to the tables instead of replacing them")
	fs.BoolVar(noflush, "n", false, "same as --noflush")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "usage: xnatctl iptables-restore --test [--print] [--counters] [--noflush] [FILE]")
			return 0
		}
		fmt.Fprintf(stderr, "xnatctl iptables-restore: %s\n", firstLine(err.Error()))
		return 2
	}
	if fs.NArg() > 1 {
		fmt.Fprintf(stderr, "xnatctl iptables-restore: one FILE at most, got %d arguments\n", fs.NArg())
		return 2
	}
	if !*test {
		fmt.Fprintln(stderr, "xnatctl iptables-restore: only --test is available offline (no daemon to load rules into)")
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
