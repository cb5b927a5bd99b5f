package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"xnat/control/api"
)

// topCmd shows the inside addresses with the most connections, ports and
// refusals through NAT.
func topCmd(e *env, args []string) int {
	fs := e.flags()
	n := fs.Int("n", api.DefaultTop, "addresses in each list")
	if code, ok := e.parse(fs, args, "[-n N]"); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return e.failf(2, "unexpected argument %q", fs.Arg(0))
	}
	if *n < 1 || *n > api.MaxTop {
		return e.failf(2, "-n %d: from 1 to %d", *n, api.MaxTop)
	}
	t, err := e.client().Top(e.ctx, *n)
	if err != nil {
		return e.fail(err)
	}
	if e.json {
		return e.printJSON(t)
	}
	writeTop(e.stdout, t)
	return 0
}

func limitText(n int) string {
	if n == 0 {
		return "none"
	}
	return strconv.Itoa(n)
}

// writeTop prints the totals, then each list as a table.
func writeTop(w io.Writer, t *api.TopSources) {
	line(w, "sources", "inside", num(uint64(t.Sources), ""), "connections", num(uint64(t.Conns), ""), "ports", num(uint64(t.Ports), ""))
	line(w, "limits", "per_source_max", limitText(t.PerSourceMax), "per_source_ports", limitText(t.PerSourcePorts))
	line(w, "refused", "at_max", num(t.RefusedConns, ""), "at_ports", num(t.RefusedPorts, ""), "limiter_full", num(t.Full, ""))
	for _, l := range []struct {
		title string
		uses  []api.SourceUse
	}{{"most connections", t.ByConns}, {"most ports", t.ByPorts}, {"most refused", t.ByRefused}} {
		fmt.Fprintf(w, "\n%s\n", l.title)
		if len(l.uses) == 0 {
			fmt.Fprintln(w, "  (none)")
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "%-15s\tconnections\tports\trefused\t\n", "address")
		for _, u := range l.uses {
			fmt.Fprintf(tw, "%-15s\t%d\t%d\t%d\t\n", u.Addr, u.Conns, u.Ports, u.Refused)
		}
		tw.Flush()
	}
}
