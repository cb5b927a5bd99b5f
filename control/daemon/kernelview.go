package daemon

import (
	"log/slog"
	"slices"
	"time"

	"xnat/dataplane"
	"xnat/dataplane/rules"
	"xnat/dataplane/topo"
	"xnat/dataplane/xdpprog"
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
	env, err := d.newEnv(s, d.model)
	if err != nil {
		d.envErrors.Add(1)
		d.emit(Event{Level: slog.LevelError, Msg: "kernel change not applied: the previous interfaces, routes and neighbours stay", Args: []any{"err", err}})
		return
	}
	if err := d.updateFilter(s, env); err != nil {
		d.emit(Event{Level: slog.LevelError, Msg: "updating the XDP maps", Args: []any{"err", err}})
	}
	d.setEnv(env)
}

// flushMasqueraded deletes the source-translated connections whose
// external address is addr, as Linux does when a masquerading address
// goes away or its device goes down.
func (d *Daemon) flushMasqueraded(addr uint32) int {
	n := d.tab.DeleteMatching(func(fi *flowtable.FlowInfo) bool {
		return fi.Status&flowtable.FlagSrcNAT != 0 && fi.Reply.Dst == addr
	})
	d.flushed.Add(uint64(n))
	return n
}

// updateFilter writes the box's addresses and the NAT port sets into the
// XDP program's maps. Called with mu held.
func (d *Daemon) updateFilter(s *topo.Snapshot, env *dataplane.Env) error {
	if d.filter == nil {
		return nil
	}
	var locals [][4]byte
	for _, ifc := range s.Ifaces {
		for _, a := range ifc.Addrs {
			locals = append(locals, [4]byte{byte(a.Addr >> 24), byte(a.Addr >> 16), byte(a.Addr >> 8), byte(a.Addr)})
		}
	}
	if err := d.filter.SetLocals(locals); err != nil {
		return err
	}
	sets := portSets(d.model, env.Rules)
	for i, p := range []xdpprog.Proto{xdpprog.TCP, xdpprog.UDP, xdpprog.ICMP} {
		if err := d.filter.SetPorts(p, &sets[i]); err != nil {
			return err
		}
	}
	return nil
}

// portSets computes which TCP ports, UDP ports and ICMP echo identifiers
// arriving for the box's own addresses belong to xnat: the ports of every
// source NAT pool (its --to-ports, or portalloc's default 1024–65535; the
// default range too for hairpinning when there are DNAT rules), in all
// three sets, and the destination ports of nat-table DNAT rules. A DNAT
// rule without a destination port match (or with a negated one) claims
// every port of its protocol — of TCP and UDP both when it names no
// protocol — so the box's own services on those ports are no longer
// reachable: give DNAT rules a --dport.
func portSets(m *rules.Model, rs *rules.Ruleset) (sets [3]xdpprog.PortSet) {
	for _, r := range poolPorts(rs) {
		for i := range sets {
			sets[i].AddRange(r.Lo, r.Hi)
		}
	}
	const tcp, udp = 0, 1
	for _, ch := range m.Tables[rules.NAT].Chains {
		for i := range ch.Rules {
			r := &ch.Rules[i]
			if r.Target.Kind != rules.TargetDNAT {
				continue
			}
			var which []int
			switch {
			case r.ProtoInvert || r.Proto == 0:
				which = []int{tcp, udp}
			case r.Proto == flowtable.ProtoTCP:
				which = []int{tcp}
			case r.Proto == flowtable.ProtoUDP:
				which = []int{udp}
			default:
				continue // other protocols are translated by address only
			}
			var ranges []rules.PortRange
			all := true
			for _, mt := range r.Matches {
				switch mt.Kind {
				case rules.MatchTCP, rules.MatchUDP:
					if mt.DstPort != rules.AllPorts && !mt.DstPortInvert {
						ranges, all = append(ranges, mt.DstPort), false
					}
				case rules.MatchMultiport:
					if !mt.Invert && (mt.Multi == rules.MultiDest || mt.Multi == rules.MultiEither) {
						ranges, all = append(ranges, mt.Ports...), false
					}
				}
			}
			if all {
				ranges = []rules.PortRange{{Lo: 0, Hi: 65535}}
			}
			for _, w := range which {
				for _, pr := range ranges {
					sets[w].AddRange(pr.Lo, pr.Hi)
				}
			}
		}
	}
	return sets
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
	var lastResolveErr time.Time
	for {
		select {
		case <-d.ctlStop:
			return
		case <-tick.C:
		}
		cores := d.tab.Cores()
		for c := range cores {
			n := d.dp.Pipeline(c).DrainNeighMisses(misses)
			for _, m := range misses[:n] {
				d.resolves.Add(1)
				if err := d.mirror.Resolve(m.IfIndex, m.IP); err != nil {
					d.resolveErrs.Add(1)
					if time.Since(lastResolveErr) > time.Second {
						lastResolveErr = time.Now()
						d.emit(warn("neighbour resolution", "ifindex", m.IfIndex, "ip", flowtable.FormatAddr(m.IP), "err", err))
					}
				}
			}
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
// at most a second (the workers pass a batch at least every poll timeout);
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
		time.Sleep(time.Millisecond)
	}
	d.settle.Settle()
	d.settle = nil
}
