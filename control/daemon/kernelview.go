package daemon

import (
	"log/slog"
	"slices"
	"time"

	"xnat/dataplane"
	"xnat/dataplane/rules"
	"xnat/dataplane/topo"
	"xnat/flowtable"
)

// onSnapshot is the mirror's OnChange: rebuild the Env for the kernel's new
// state, flush connections masqueraded through an outside address that went
// away or whose interface went down, and keep the XDP maps current.
func (d *Daemon) onSnapshot(s *topo.Snapshot) {
	// The dump's neighbours, in order with the notifications before and
	// after it (both come from the mirror's goroutine).
	d.neigh.Sync(s.Neighs)
	d.mu.Lock()
	defer d.mu.Unlock()
	prev := d.snap
	d.snap = s
	if d.dp == nil || d.stopped {
		return // Start builds the first Env from it
	}
	for _, name := range d.names {
		old, ok := prev.IfaceByName(name)
		if !ok {
			continue
		}
		cur, ok := s.IfaceByName(name)
		down := old.Up && (!ok || !cur.Up)
		for _, a := range old.Addrs {
			gone := !ok || !slices.ContainsFunc(cur.Addrs, func(p topo.Prefix) bool { return p.Addr == a.Addr })
			if !gone && !down {
				continue
			}
			reason := "address removed"
			if !gone {
				reason = "link down"
			}
			n := d.flushMasqueraded(a.Addr)
			d.emit(info("flushed masqueraded connections", "interface", name, "address", flowtable.FormatAddr(a.Addr),
				"reason", reason, "connections", n))
		}
	}
	// The programs, sockets and workers follow interfaces that go and
	// come back (the control goroutine does it).
	select {
	case d.ioKick <- struct{}{}:
	default:
	}
	d.settlePending(true)
	sp, facts, err := d.planSteering(s, d.model, true)
	if err != nil {
		d.envErrors.Add(1)
		d.emit(Event{Level: slog.LevelError, Msg: "kernel change not applied: the previous interfaces, routes and neighbours stay", Args: []any{"err", err}})
		return
	}
	d.prepareSlots(sp)
	env, err := d.newEnv(s, d.model)
	if err != nil {
		d.envErrors.Add(1)
		d.emit(Event{Level: slog.LevelError, Msg: "kernel change not applied: the previous interfaces, routes and neighbours stay", Args: []any{"err", err}})
		// The box's addresses changed all the same.
		if err := d.writeLocals(sp.locals); err != nil {
			d.emit(Event{Level: slog.LevelError, Msg: "updating the XDP maps", Args: []any{"err", err}})
		}
		return
	}
	if err := d.commitSteering(sp); err != nil {
		d.emit(Event{Level: slog.LevelError, Msg: "updating the XDP maps", Args: []any{"err", err}})
	}
	d.setEnv(env)
	d.reportPorts(facts)
}

// flushMasqueraded deletes the source-translated connections whose
// external address is addr, as Linux does when a masquerading address
// goes away or its device goes down; and the full-cone mappings on it
// (their ports go back to their allocators as their owners sweep them).
func (d *Daemon) flushMasqueraded(addr uint32) int {
	n := d.tab.DeleteMatching(func(fi *flowtable.FlowInfo) bool {
		return fi.Status&flowtable.FlagSrcNAT != 0 && fi.Reply.Dst == addr
	})
	d.dp.Mappings.DeleteMatching(func(fi *flowtable.FlowInfo) bool { return fi.Reply.Dst == addr })
	d.flushed.Add(uint64(n))
	return n
}

// control is the control goroutine: it asks the kernel to resolve the next
// hops the pipelines missed, reports table-full events and LOG records,
// and settles rule counters after a replacement.
func (d *Daemon) control() {
	defer close(d.ctlDone)
	tick := time.NewTicker(d.opts.ControlInterval)
	defer tick.Stop()
	misses := make([]dataplane.NeighMiss, 64)
	logs := make([]rules.LogRecord, 64)
	var fullSeen uint64
	var lastResolveErr, lastSlow time.Time
	for {
		select {
		case <-d.ctlStop:
			return
		case <-d.ioKick:
			d.reconcileIO()
			continue
		case <-d.missKick:
			d.resolveMisses(misses, &lastResolveErr)
			continue
		case <-tick.C:
		}
		d.retirePending()
		// Once a second: retry a failed reconcile, let go of DNAT
		// endpoints no connection uses, free unused slots.
		if time.Since(lastSlow) >= time.Second {
			lastSlow = time.Now()
			if d.ioRetry {
				d.reconcileIO()
			}
			d.releaseRetired()
			d.gcSlots()
		}
		d.resolveMisses(misses, &lastResolveErr)
		for c := range d.tab.Cores() {
			for {
				n := d.dp.Pools.LogRings().Drain(c, logs)
				for i := range logs[:n] {
					d.emit(Event{Level: logLevel(logs[i].Level), Msg: "LOG", Args: []any{"record", logs[i].String()}})
				}
				if n < len(logs) {
					break
				}
			}
		}
		if n, _ := d.tab.FullEvents(); n != fullSeen {
			fullSeen = n
			d.emit(warn("nf_conntrack: table full, dropping packet", "conns", d.tab.Count(), "max", d.tab.Max()))
		}
		d.mu.Lock()
		d.settlePending(false)
		d.mu.Unlock()
	}
}

// resolveMisses asks the kernel to resolve the next hops the cores are
// holding frames for: at every tick, and at once when a core records one
// (missKick). Errors are counted, and logged at most once a second.
func (d *Daemon) resolveMisses(misses []dataplane.NeighMiss, lastErr *time.Time) {
	for c := range d.tab.Cores() {
		for {
			n := d.dp.Pipeline(c).DrainNeighMisses(misses)
			for _, m := range misses[:n] {
				d.resolves.Add(1)
				if err := d.mirror.Resolve(m.IfIndex, m.IP); err != nil {
					d.resolveErrs.Add(1)
					if time.Since(*lastErr) > time.Second {
						*lastErr = time.Now()
						d.emit(warn("neighbour resolution", "ifindex", m.IfIndex, "ip", flowtable.FormatAddr(m.IP), "err", err))
					}
				}
			}
			if n < len(misses) {
				break
			}
		}
	}
}

// logLevel maps a syslog level (LOG --log-level) to slog's.
func logLevel(l uint8) slog.Level {
	switch {
	case l <= 3:
		return slog.LevelError
	case l == 4:
		return slog.LevelWarn
	case l == 7:
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// settlePending settles the counters of the last rule set swapped in once
// every core has passed two batches since (so none uses the previous set
// and each has flushed its last batch on it). With wait it waits for that,
// waking idle workers (Dataplane.Wake) so that each passes its batches at
// once, for at most a second;
// a rule set must be settled before the next one is compiled from it, or
// what the previous set counted after the compile would be lost. Called
// with mu held.
func (d *Daemon) settlePending(wait bool) {
	if d.settle == nil {
		return
	}
	deadline := time.Now().Add(time.Second)
	for {
		done := true
		for c, cnt := range d.dp.Counters() {
			if c < len(d.settleAt) && cnt.Batches < d.settleAt[c]+2 {
				done = false
			}
		}
		if done || (wait && time.Now().After(deadline)) {
			break
		}
		if !wait {
			return
		}
		d.dp.Wake()
		time.Sleep(time.Millisecond)
	}
	d.settle.Settle()
	d.settle = nil
}
