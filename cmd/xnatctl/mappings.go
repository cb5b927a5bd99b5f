package main

import (
	"fmt"
	"text/tabwriter"
)

// mappingsCmd lists the full-cone mappings.
func mappingsCmd(e *env, args []string) int {
	fs := e.flags()
	fs.Bool("L", true, "list (the only action)")
	fs.Bool("list", true, "same as -L")
	if code, ok := e.parse(fs, args, "[-L] [--json]"); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return e.failf(2, "unexpected argument %q", fs.Arg(0))
	}
	l, err := e.client().Mappings(e.ctx)
	if err != nil {
		return e.fail(err)
	}
	if e.json {
		return e.printJSON(l)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "proto\tinside\texternal\tconnections\ttimeout")
	for _, m := range l.Mappings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", m.Proto, m.Inside, m.External, m.Connections, m.Timeout)
	}
	if err := tw.Flush(); err != nil {
		return e.fail(err)
	}
	fmt.Fprintf(e.stderr, "xnat mappings: %d full-cone mappings listed.\n", len(l.Mappings))
	return 0
}
