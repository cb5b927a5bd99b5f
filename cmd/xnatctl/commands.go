package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"xnat/control/api"
	"xnat/control/conntrack"
	"xnat/control/sysctl"
	"xnat/flowtable"
)

func (e *env) printJSON(v any) int {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return e.failf(1, "%v", err)
	}
	return 0
}

// conntrackCmd runs a conntrack command line against the daemon.
func conntrackCmd(e *env, args []string) int {
	// conntrack has no --json of its own: take it wherever it is.
	words := args[:0:0]
	for _, w := range args {
		if w == "--json" {
			e.json = true
			continue
		}
		words = append(words, w)
	}
	a, err := conntrack.Parse(words)
	if err != nil {
		return e.failf(2, "%v", err)
	}
	c := e.client()
	switch a.Command {
	case conntrack.List:
		return e.conntrackList(c, &a.Filter)
	case conntrack.Delete:
		n, err := c.ConntrackDelete(e.ctx, &a.Filter)
		if err != nil {
			return e.fail(err)
		}
		if e.json {
			return e.printJSON(api.ConntrackDeleted{Deleted: n})
		}
		fmt.Fprintln(e.stderr, conntrack.Summary(a.Command, n))
	case conntrack.Flush:
		n, err := c.ConntrackFlush(e.ctx)
		if err != nil {
			return e.fail(err)
		}
		if e.json {
			return e.printJSON(api.ConntrackDeleted{Deleted: n})
		}
		fmt.Fprintln(e.stderr, "xnat conntrack (conntrack-tools format): connection tracking table has been emptied.")
	case conntrack.Count:
		n, err := c.ConntrackCount(e.ctx)
		if err != nil {
			return e.fail(err)
		}
		if e.json {
			return e.printJSON(api.ConntrackCount{Count: n})
		}
		fmt.Fprintln(e.stdout, n)
	case conntrack.Stats:
		s, err := c.ConntrackStats(e.ctx)
		if err != nil {
			return e.fail(err)
		}
		if e.json {
			return e.printJSON(s)
		}
		st := make([]flowtable.Stats, len(s.Cores))
		for i, cc := range s.Cores {
			st[i] = cc.FlowStats()
		}
		if err := conntrack.WriteStats(e.stdout, st); err != nil {
			return e.failf(1, "%v", err)
		}
	}
	return 0
}

// conntrackList prints the listing as it arrives: conntrack's lines and
// summary, or with --json the ConntrackList as printJSON prints it.
func (e *env) conntrackList(c *api.Client, f *conntrack.Filter) int {
	st, err := c.ConntrackStream(e.ctx, f)
	if err != nil {
		return e.fail(err)
	}
	defer st.Close()
	out := bufio.NewWriterSize(e.stdout, 64<<10)
	var jl *jsonList
	if e.json {
		jl = &jsonList{w: out}
	}
	n := 0
	flushed := time.Now()
	for {
		if time.Since(flushed) > 200*time.Millisecond {
			// A slow or filtered listing shows as it comes.
			if err := out.Flush(); err != nil {
				return e.failf(1, "%v", err)
			}
			flushed = time.Now()
		}
		var cn api.Conn
		ok, err := st.Next(&cn)
		if err != nil {
			out.Flush()
			return e.fail(err)
		}
		if !ok {
			break
		}
		n++
		if jl != nil {
			err = jl.add(st.Acct, &cn)
		} else {
			var fi flowtable.FlowInfo
			if fi, err = cn.FlowInfo(); err == nil {
				err = conntrack.WriteEntry(out, &fi, st.Acct)
			}
		}
		if err != nil {
			out.Flush()
			return e.failf(1, "%v", err)
		}
	}
	if jl != nil {
		if err := jl.end(st.Acct); err != nil {
			return e.failf(1, "%v", err)
		}
	}
	if err := out.Flush(); err != nil {
		return e.failf(1, "%v", err)
	}
	if jl == nil {
		fmt.Fprintln(e.stderr, conntrack.Summary(conntrack.List, n))
	}
	return 0
}

// jsonList writes a ConntrackList one connection at a time, in the form
// printJSON gives the whole list.
type jsonList struct {
	w       io.Writer
	started bool
	n       int
}

func (j *jsonList) head(acct bool) error {
	j.started = true
	_, err := fmt.Fprintf(j.w, "{\n  \"acct\": %t,\n  \"conns\": [", acct)
	return err
}

func (j *jsonList) add(acct bool, c *api.Conn) error {
	if !j.started {
		if err := j.head(acct); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(c, "    ", "  ")
	if err != nil {
		return err
	}
	sep := ",\n    "
	if j.n == 0 {
		sep = "\n    "
	}
	j.n++
	if _, err := io.WriteString(j.w, sep); err != nil {
		return err
	}
	_, err = j.w.Write(b)
	return err
}

func (j *jsonList) end(acct bool) error {
	if !j.started {
		if err := j.head(acct); err != nil {
			return err
		}
	}
	tail := "]\n}\n"
	if j.n > 0 {
		tail = "\n  ]\n}\n"
	}
	_, err := io.WriteString(j.w, tail)
	return err
}

// iptablesCmd runs one iptables command line against the rules in force.
func iptablesCmd(e *env, args []string) int {
	// --json at the end too (inside a rule it could be an option's value).
	for len(args) > 0 && args[len(args)-1] == "--json" {
		e.json, args = true, args[:len(args)-1]
	}
	if len(args) == 0 {
		return e.failf(2, "no command specified (try -L, -S, -A ...)")
	}
	r, err := e.client().Iptables(e.ctx, args)
	if err != nil {
		return e.fail(err)
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(e.stderr, "xnatctl iptables: warning: %s\n", w)
	}
	if e.json {
		return e.printJSON(r)
	}
	fmt.Fprint(e.stdout, r.Output)
	return 0
}

func iptablesSave(e *env, args []string) int {
	fs := e.flags()
	counters := fs.Bool("counters", false, "include counters")
	fs.BoolVar(counters, "c", false, "same as --counters")
	table := fs.String("table", "", "only this table")
	fs.StringVar(table, "t", "", "same as --table")
	if code, ok := e.parse(fs, args, "[-c] [-t TABLE]"); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return e.failf(2, "unexpected argument %q", fs.Arg(0))
	}
	var tables []string
	if *table != "" {
		tables = []string{*table}
	}
	text, err := e.client().Save(e.ctx, *counters, tables)
	if err != nil {
		return e.fail(err)
	}
	if e.json {
		return e.printJSON(api.IptablesResponse{Output: text})
	}
	fmt.Fprint(e.stdout, text)
	return 0
}

// restoreToDaemon loads a rules file into the running daemon.
func restoreToDaemon(e *env, in io.Reader, name string, counters, noflush bool) int {
	b, err := io.ReadAll(io.LimitReader(in, api.MaxRestoreBody+1))
	if err != nil {
		return e.failf(1, "%s: %v", name, err)
	}
	if len(b) > api.MaxRestoreBody {
		return e.failf(1, "%s: larger than %d bytes, the most the daemon takes in one restore", name, api.MaxRestoreBody)
	}
	r, err := e.client().Restore(e.ctx, &api.RestoreRequest{Rules: string(b), Counters: counters, NoFlush: noflush})
	if err != nil {
		if errors.Is(err, api.ErrNotRunning) {
			return e.fail(err)
		}
		return e.failf(1, "%s: %v", name, err)
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(e.stderr, "xnatctl iptables-restore: warning: %s\n", w)
	}
	if e.json {
		return e.printJSON(r)
	}
	return 0
}

// sysctlCmd lists, reads or sets keys, as sysctl does.
func sysctlCmd(e *env, args []string) int {
	fs := e.flags()
	fs.Bool("a", false, "list every key (the default without names)")
	fs.Bool("w", false, "accepted: NAME=VALUE sets")
	if code, ok := e.parse(fs, args, "[-a] [NAME[=VALUE]]..."); !ok {
		return code
	}
	c := e.client()
	var vals []api.SysctlValue
	var err error
	switch words := fs.Args(); {
	case len(words) == 0:
		vals, err = c.Sysctl(e.ctx)
	case strings.Contains(words[0], "="):
		set := make([]api.SysctlValue, 0, len(words))
		for _, w := range words {
			if !strings.Contains(w, "=") {
				return e.failf(2, "%q: give every key a value (NAME=VALUE), or none", w)
			}
			a, err := sysctl.ParseAssignment(w)
			if err != nil {
				return e.failf(2, "%v", err)
			}
			set = append(set, api.SysctlValue{Name: a.Name, Value: a.Value})
		}
		vals, err = c.SysctlSet(e.ctx, set)
	default:
		for _, w := range words {
			if strings.Contains(w, "=") {
				return e.failf(2, "%q: read keys or set them, not both", w)
			}
		}
		vals, err = c.Sysctl(e.ctx, words...)
	}
	if err != nil {
		return e.fail(err)
	}
	if e.json {
		return e.printJSON(api.SysctlValues{Values: vals})
	}
	for _, v := range vals {
		fmt.Fprintf(e.stdout, "%s = %d\n", v.Name, v.Value)
	}
	return 0
}

// formatEvent is an event's text line.
func formatEvent(ev *api.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-5s %s", ev.Time.Local().Format(time.RFC3339), ev.Level, ev.Msg)
	switch ev.Kind {
	case api.KindTableFull:
		fmt.Fprintf(&b, ": %d dropped since it filled (%d/%d connections)", ev.Drops, ev.Conns, ev.Max)
	case api.KindTableNotFull:
		fmt.Fprintf(&b, " after %s, %d dropped (%d/%d connections)", ev.Duration, ev.Drops, ev.Conns, ev.Max)
	case api.KindOutOfPorts:
		fmt.Fprintf(&b, ": %d dropped", ev.Drops)
	case api.KindRulesReplaced:
		fmt.Fprintf(&b, " by %s", ev.Source)
	case api.KindAddressChanged:
		addrs := "none"
		if len(ev.Addrs) > 0 {
			addrs = strings.Join(ev.Addrs, " ")
		}
		fmt.Fprintf(&b, ": %s now has %s", ev.Interface, addrs)
	case api.KindMasqueradeFlush:
		fmt.Fprintf(&b, ": %d", ev.Count)
	}
	return b.String()
}

func events(e *env, args []string) int {
	fs := e.flags()
	follow := fs.Bool("follow", false, "wait for new events")
	fs.BoolVar(follow, "f", false, "same as --follow")
	after := fs.Uint64("after", 0, "only events after this sequence number")
	if code, ok := e.parse(fs, args, "[--follow] [--after N]"); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return e.failf(2, "unexpected argument %q", fs.Arg(0))
	}
	c := e.client()
	print := func(ev api.Event) error {
		if e.json {
			b, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "%s\n", b)
			return err
		}
		_, err := fmt.Fprintln(e.stdout, formatEvent(&ev))
		return err
	}
	if *follow {
		if err := c.FollowEvents(e.ctx, *after, print); err != nil {
			return e.fail(err)
		}
		return 0
	}
	l, err := c.Events(e.ctx, *after)
	if err != nil {
		return e.fail(err)
	}
	if e.json {
		return e.printJSON(l)
	}
	for _, ev := range l.Events {
		if err := print(ev); err != nil {
			return e.failf(1, "%v", err)
		}
	}
	return 0
}
