package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"

	"xnat/control/api"
)

// haCmd runs xnatctl ha VERB: the sync node's state and the operations
// keepalived's notify scripts call on conntrackd.
//
//	status  role-independent state: addresses, sequence numbers, cache size, losses
//	cache   the external cache (the peer's connections), one per line, as
//	        conntrack -L prints them (-L may be given)
//	flush   empty the external cache            (conntrackd -f external)
//	resync  ask the peer for its whole table    (conntrackd -n)
//	bulk    send this side's table to the peer  (conntrackd -B)
//	commit  move the external cache into the flow table, each connection
//	        with its translation and external port (conntrackd -c)
//	role R  record the role keepalived gave this box: primary, backup or
//	        fault (the notify hook calls it; ha status shows it)
func haCmd(e *env, args []string) int {
	const usage = "usage: xnatctl ha status|cache [-L]|flush|resync|bulk|commit|role primary|backup|fault"
	if len(args) == 2 && args[0] == "role" {
		res, err := e.client().HASetRole(e.ctx, args[1])
		if err != nil {
			return e.fail(err)
		}
		if e.json {
			return e.printJSON(res)
		}
		fmt.Fprintf(e.stderr, "xnat ha: role %s.\n", res.Role)
		return 0
	}
	// ha cache -L (--dump): conntrack's spelling of a listing, as
	// conntrackd's external cache is listed.
	if len(args) == 2 && args[0] == "cache" && (args[1] == "-L" || args[1] == "--dump") {
		args = args[:1]
	}
	if len(args) != 1 || args[0] == "role" {
		return e.failf(2, usage)
	}
	c := e.client()
	switch args[0] {
	case "status":
		st, err := c.HAStatus(e.ctx)
		if err != nil {
			return e.fail(err)
		}
		if e.json {
			return e.printJSON(st)
		}
		return e.haStatus(st)
	case "cache":
		l, err := c.HACache(e.ctx)
		if err != nil {
			return e.fail(err)
		}
		if e.json {
			return e.printJSON(l)
		}
		for _, s := range l.Conns {
			fmt.Fprintln(e.stdout, s)
		}
		fmt.Fprintf(e.stderr, "xnat ha: %d connections in the external cache.\n", len(l.Conns))
	case "flush":
		n, err := c.HAFlush(e.ctx)
		if err != nil {
			return e.fail(err)
		}
		if e.json {
			return e.printJSON(api.HAFlushed{Flushed: n})
		}
		fmt.Fprintf(e.stderr, "xnat ha: external cache flushed (%d connections).\n", n)
	case "resync":
		if err := c.HAResync(e.ctx); err != nil {
			return e.fail(err)
		}
		fmt.Fprintln(e.stderr, "xnat ha: resync requested from the peer.")
	case "bulk":
		if err := c.HABulk(e.ctx); err != nil {
			return e.fail(err)
		}
		fmt.Fprintln(e.stderr, "xnat ha: table sent to the peer.")
	case "commit":
		res, err := c.HACommit(e.ctx)
		if err != nil {
			return e.fail(err)
		}
		if e.json {
			return e.printJSON(res)
		}
		fmt.Fprintf(e.stderr, "xnat ha: %d connections committed", res.Committed)
		if n := res.Exists + res.Replaced + res.NoPool + res.Refused + res.Invalid; n > 0 {
			fmt.Fprintf(e.stderr, "; %d already in the table, %d replaced, %d outside this box's NAT pools, %d refused, %d invalid",
				res.Exists, res.Replaced, res.NoPool, res.Refused, res.Invalid)
		}
		fmt.Fprintln(e.stderr, ".")
	default:
		return e.failf(2, "unknown verb %q (status, cache, flush, resync, bulk, commit, role)", args[0])
	}
	return 0
}

func (e *env) haStatus(st *api.HAStatus) int {
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	l := &st.Link
	last := "never"
	if !l.LastRecv.IsZero() {
		last = time.Since(l.LastRecv).Round(time.Millisecond).String() + " ago"
	}
	peerSeq := "-"
	if l.PeerSeqSet {
		peerSeq = fmt.Sprint(l.PeerSeq)
	}
	role := st.Role
	if !st.RoleSince.IsZero() {
		role += fmt.Sprintf(" (since %s, %s)", st.RoleSince.Format(time.RFC3339), humanize.Time(st.RoleSince))
	} else {
		role += " (keepalived's notify hook has not reported one: xnatctl ha role)"
	}
	rows := [][2]string{
		{"role", role},
		{"local", st.Local},
		{"peer", st.Peer},
		{"peer last heard", last},
		{"sequence (next sent)", fmt.Sprint(l.Seq)},
		{"peer sequence (last received)", peerSeq},
		{"awaiting ack", fmt.Sprint(l.Unacked)},
		{"external cache", fmt.Sprint(st.Cache)},
		{"messages sent / received", fmt.Sprintf("%d / %d", l.MsgSent, l.MsgRecv)},
		{"lost (peer's, detected)", fmt.Sprint(l.Lost)},
		{"retransmitted", fmt.Sprint(l.Retransmitted)},
		{"malformed / unsupported", fmt.Sprintf("%d / %d", l.Malformed, l.Unsupported)},
		{"from other addresses", fmt.Sprint(l.Foreign)},
		{"events sent", fmt.Sprint(st.EventsSent)},
		{"whole-table sends (bulk / after drops)", fmt.Sprintf("%d / %d", st.Bulks, st.EventResends)},
		{"commits", fmt.Sprint(st.Commits)},
		{"filtered (not sent)", fmt.Sprint(st.Filtered)},
		{"pool check", st.Check.Peer},
		{"pools and rules (this box)", short(st.Check.Fingerprint)},
		{"pools and rules (peer)", short(st.Check.PeerFingerprint)},
		{"refused (peer differs / outside the pools)", fmt.Sprintf("%d / %d", st.RefusedPeerDiffers, st.RefusedOutsidePools)},
	}
	if st.FlushedPeerDiffers > 0 {
		rows = append(rows, [2]string{"dropped from the cache (peer differs)", fmt.Sprint(st.FlushedPeerDiffers)})
	}
	if lc := st.LastCommit; lc != nil {
		rows = append(rows, [2]string{"last commit", fmt.Sprintf("%d committed (%d replacing), %d existed, %d outside the pools, %d refused, %d invalid",
			lc.Committed, lc.Replaced, lc.Exists, lc.NoPool, lc.Refused, lc.Invalid)})
	}
	if st.Group != "" {
		rows = append(rows[:3], append([][2]string{{"multicast group", st.Group}}, rows[3:]...)...)
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\n", r[0], r[1])
	}
	if l.LastRecvError != "" {
		fmt.Fprintf(w, "last bad message\t%s\n", l.LastRecvError)
	}
	if st.ExportError != "" {
		fmt.Fprintf(w, "exporter\t%s\n", st.ExportError)
	}
	if st.CheckError != "" {
		fmt.Fprintf(w, "pool check error\t%s\n", st.CheckError)
	}
	if err := w.Flush(); err != nil {
		return e.failf(1, "%v", err)
	}
	return 0
}

// short abbreviates a fingerprint for the status table (--json has it
// whole); "-" when there is none.
func short(fp string) string {
	if fp == "" {
		return "-"
	}
	if len(fp) > 16 {
		return fp[:16]
	}
	return fp
}
