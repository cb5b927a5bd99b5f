package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"

	"xnat/control/api"
)

// num formats a count: "950", "1.2 k", "3.4 M".
func num(n uint64, unit string) string {
	s := fmt.Sprint(n)
	if n >= 1000 {
		s = humanize.SIWithDigits(float64(n), 1, "")
	}
	if unit != "" {
		s += " " + unit
	}
	return s
}

// rate formats a per-second rate.
func rate(v float64, unit string) string {
	if v < 1000 {
		return fmt.Sprintf("%.1f %s/s", v, unit)
	}
	return humanize.SIWithDigits(v, 1, "") + " " + unit + "/s"
}

func bytesRate(v float64) string {
	return humanize.Bytes(uint64(v)) + "/s"
}

// line writes "label  k v  k v ...".
func line(w io.Writer, label string, kv ...string) {
	var b strings.Builder
	fmt.Fprintf(&b, "%-12s", label)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %s %s ", kv[i], kv[i+1])
	}
	fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
}

func writeIfaces(w io.Writer, ifs []api.IfaceStats) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "interface\trole\trx\t\ttx\t")
	for _, i := range ifs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", i.Name, i.Role, num(i.RxPackets, "pkts"), humanize.Bytes(i.RxBytes),
			num(i.TxPackets, "pkts"), humanize.Bytes(i.TxBytes))
	}
	tw.Flush()
}

func writeDrops(w io.Writer, label string, drops []api.Count) {
	const perLine = 4
	for i := 0; i < len(drops); i += perLine {
		var kv []string
		for _, d := range drops[i:min(i+perLine, len(drops))] {
			kv = append(kv, d.Name, num(d.Value, ""))
		}
		line(w, label, kv...)
		label = ""
	}
}

// writeStats prints every counter.
func writeStats(w io.Writer, s *api.Stats, perCore bool) {
	writeIfaces(w, s.Interfaces)
	fmt.Fprintln(w)
	c := s.Connections
	line(w, "connections", "entries", fmt.Sprint(c.Entries), "max", fmt.Sprint(c.Max), "capacity", fmt.Sprint(c.Capacity),
		"created", num(c.Created, ""), "expired", num(c.Expired, ""), "deleted", num(c.Deleted, ""))
	line(w, "conntrack", "found", num(c.Found, ""), "invalid", num(c.Invalid, ""), "insert", num(c.Inserted, ""),
		"insert_failed", num(c.InsertFailed, ""), "drop", num(c.Drop, ""), "early_drop", num(c.EarlyDrop, ""))
	p := s.Pipeline
	line(w, "pipeline", "forwarded", num(p.Forwarded, "pkts"), "replies", num(p.Replies, ""), "to_kernel", num(p.ToKernel, ""),
		"neigh_queued", num(p.NeighQueued, ""), "dropped", num(p.Dropped, "pkts"), "batches", num(p.Batches, ""))
	writeDrops(w, "drops", s.Drops)
	n := s.NAT
	line(w, "nat", "allocated", num(n.Allocated, ""), "preserved", num(n.Preserved, ""), "released", num(n.Released, ""),
		"out_of_ports", num(n.OutOfPorts, ""), "per_source_limit", num(n.PerSourceLimit, ""), "per_source_full", num(n.PerSourceFull, ""), "ports_in_use", num(n.PortsInUse, ""))
	mp := s.Mappings
	line(w, "mappings", "entries", fmt.Sprint(mp.Entries), "max", fmt.Sprint(mp.Max), "created", num(mp.Created, ""),
		"reused", num(mp.Reused, ""), "expired", num(mp.Expired, ""), "inbound", num(mp.Inbound, ""), "failed", num(mp.Failed, ""))
	for _, x := range s.XDP {
		line(w, "xdp", x.Interface, "("+x.Mode+")", "to_xnat_forward", num(x.ToXnatForward, ""), "to_xnat_local", num(x.ToXnatLocal, ""),
			"redirect_failed", num(x.RedirectFailed, ""), "pass_not_ipv4", num(x.PassNotIPv4, ""), "pass_local", num(x.PassLocal, ""), "pass_broadcast", num(x.PassBroadcast, ""),
			"pass_malformed", num(x.PassMalformed, ""), "pass_vlan", num(x.PassVLAN, ""))
	}
	for _, r := range s.Rings {
		mode := "copy"
		if r.ZeroCopy {
			mode = "zero-copy"
		}
		line(w, "ring", fmt.Sprintf("q%d", r.Queue), r.Interface+" ("+mode+")", "rx", num(r.Rx, ""), "tx", num(r.Tx, ""),
			"completed", num(r.Completed, ""), "filled", num(r.Filled, ""), "tx_ring_full", num(r.TxRingFull, ""),
			"fill_ring_empty", num(r.FillRingEmpty, ""), "kick_errors", num(r.KickErrors, ""),
			"rx_dropped", num(r.RxDropped, ""), "rx_ring_full", num(r.RxRingFull, ""), "outstanding", num(r.TxOutstanding, ""))
	}
	for _, wk := range s.Workers {
		cpu := "unpinned"
		if wk.CPU >= 0 {
			cpu = fmt.Sprintf("cpu %d", wk.CPU)
		}
		line(w, "worker", fmt.Sprintf("q%d", wk.Queue), "("+cpu+")", "iterations", num(wk.Iterations, ""),
			"idle_waits", num(wk.IdleWaits, ""), "rx", num(wk.Rx, ""), "tx", num(wk.Tx, ""), "tx_refused", num(wk.TxRefused, ""),
			"dropped", num(wk.Dropped, ""), "kernel", num(wk.Kernel, ""))
	}
	ct := s.Control
	line(w, "control", "rule_replacements", fmt.Sprint(ct.RuleReplacements), "masquerade_flushed", num(ct.MasqueradeFlushed, ""),
		"resolves", num(ct.Resolves, ""), "resolve_errors", num(ct.ResolveErrors, ""), "env_errors", num(ct.EnvErrors, ""))
	if !perCore {
		return
	}
	for _, cs := range s.Cores {
		fmt.Fprintf(w, "\ncore %d\n", cs.Core)
		writeIfaces(w, cs.Interfaces)
		line(w, "pipeline", "forwarded", num(cs.Pipeline.Forwarded, "pkts"), "created", num(cs.Created, ""),
			"dropped", num(cs.Pipeline.Dropped, "pkts"), "batches", num(cs.Pipeline.Batches, ""))
		var nz []api.Count
		for _, d := range cs.Drops {
			if d.Value != 0 {
				nz = append(nz, d)
			}
		}
		writeDrops(w, "drops", nz)
	}
	for _, cc := range s.Conntrack {
		line(w, fmt.Sprintf("conntrack %d", cc.Core), "found", num(cc.Found, ""), "insert", num(cc.Insert, ""),
			"drop", num(cc.Drop, ""), "early_drop", num(cc.EarlyDrop, ""), "expired", num(cc.Expired, ""), "deleted", num(cc.Deleted, ""))
	}
}

// writeRates prints per-second rates between two readings.
func writeRates(w io.Writer, prev, cur *api.Stats) {
	dt := cur.Time.Sub(prev.Time).Seconds()
	if dt <= 0 {
		return
	}
	per := func(a, b uint64) float64 {
		if b < a {
			return 0
		}
		return float64(b-a) / dt
	}
	fmt.Fprintf(w, "\nrates over %.1f s\n", dt)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "interface\trx\t\ttx\t")
	for i, c := range cur.Interfaces {
		if i >= len(prev.Interfaces) {
			break
		}
		p := prev.Interfaces[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, rate(per(p.RxPackets, c.RxPackets), "pkts"), bytesRate(per(p.RxBytes, c.RxBytes)),
			rate(per(p.TxPackets, c.TxPackets), "pkts"), bytesRate(per(p.TxBytes, c.TxBytes)))
	}
	tw.Flush()
	line(w, "pipeline", "forwarded", rate(per(prev.Pipeline.Forwarded, cur.Pipeline.Forwarded), "pkts"),
		"dropped", rate(per(prev.Pipeline.Dropped, cur.Pipeline.Dropped), "pkts"),
		"created", rate(per(prev.Connections.Created, cur.Connections.Created), "conns"),
		"expired", rate(per(prev.Connections.Expired, cur.Connections.Expired), "conns"))
	var kv []string
	for i, d := range cur.Drops {
		if i < len(prev.Drops) && d.Value > prev.Drops[i].Value {
			kv = append(kv, d.Name, rate(per(prev.Drops[i].Value, d.Value), "pkts"))
		}
	}
	if len(kv) > 0 {
		line(w, "drops", kv...)
	}
}

func stats(e *env, args []string) int {
	fs := e.flags()
	watch := fs.Bool("watch", false, "print again every second, with rates")
	fs.BoolVar(watch, "w", false, "same as --watch")
	count := fs.Int("count", 0, "with --watch: stop after N readings (0: until interrupted)")
	perCore := fs.Bool("per-core", false, "per-core counters too")
	if code, ok := e.parse(fs, args, "[--watch [--count N]] [--per-core]"); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return e.failf(2, "unexpected argument %q", fs.Arg(0))
	}
	if *count < 0 || (*count > 0 && !*watch) {
		return e.failf(2, "--count N goes with --watch, N at least 1")
	}
	c := e.client()
	var prev *api.Stats
	for i := 0; ; i++ {
		s, err := c.Stats(e.ctx)
		if err != nil {
			if e.ctx.Err() != nil && prev != nil {
				return 0
			}
			return e.fail(err)
		}
		if e.json {
			if code := e.printJSON(s); code != 0 {
				return code
			}
		} else {
			if *watch {
				fmt.Fprintf(e.stdout, "--- %s\n", s.Time.Local().Format(time.TimeOnly))
			}
			writeStats(e.stdout, s, *perCore)
			if prev != nil {
				writeRates(e.stdout, prev, s)
			}
		}
		prev = s
		if !*watch || (*count > 0 && i+1 >= *count) {
			return 0
		}
		select {
		case <-e.ctx.Done():
			return 0
		case <-time.After(time.Second):
		}
	}
}
