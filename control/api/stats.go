package api

import (
	"time"

	"xnat/control/daemon"
	"xnat/dataplane"
	"xnat/dataplane/xdpprog"
)

// StatsOf converts the daemon's counters to the API's form. names are the
// interfaces in port ID order (inside first), nInside how many are inside.
func StatsOf(s *daemon.Stats, names []string, nInside int, now time.Time) Stats {
	out := Stats{Time: now}
	out.Interfaces = ifaces(&s.Pipeline, names, nInside)
	out.Connections = ConnStats{Entries: s.Conns, Max: s.Max, Capacity: s.Capacity, Created: s.Pipeline.Created,
		Inserted: s.Table.Insert, InsertFailed: s.Table.InsertFailed, Drop: s.Table.Drop, EarlyDrop: s.Table.EarlyDrop,
		Deleted: s.Table.Deleted, Found: s.Table.Found, Invalid: s.Table.Invalid, Expired: s.Table.Expired}
	out.Pipeline = pipeline(&s.Pipeline)
	out.Drops = drops(&s.Pipeline)
	out.NAT = NATStats{Allocated: s.Ports.Allocated, Preserved: s.Ports.Preserved, Released: s.Ports.Released,
		OutOfPorts: s.Ports.OutOfPorts, PerSourceLimit: s.Ports.PerSourceLimit, PerSourceFull: s.Ports.LimiterFull, PortsInUse: s.Ports.PortsInUse}
	p := &s.Pipeline
	out.Mappings = MappingStats{Entries: s.Mappings, Max: s.MappingsMax, Created: p.MapCreated, Reused: p.MapReused,
		Expired: p.MapExpired, Inbound: p.MapInbound, Failed: p.MapFailed}
	for _, p := range s.Programs {
		c := p.Counters
		out.XDP = append(out.XDP, XDPStats{Interface: p.Interface, Mode: p.Mode,
			ToXnatForward: c[xdpprog.CtrToXnatForward], ToXnatLocal: c[xdpprog.CtrToXnatLocal],
			RedirectFailed: c[xdpprog.CtrRedirectFailed], PassNotIPv4: c[xdpprog.CtrPassNotIPv4],
			PassLocal: c[xdpprog.CtrPassLocal], PassMalformed: c[xdpprog.CtrPassMalformed], PassBroadcast: c[xdpprog.CtrPassBroadcast],
			PassVLAN: c[xdpprog.CtrPassVLAN]})
	}
	for q, socks := range s.Sockets {
		for i, r := range socks {
			name := ""
			if i < len(names) {
				name = names[i]
			}
			out.Rings = append(out.Rings, RingStats{Queue: q, Interface: name, ZeroCopy: r.Info.ZeroCopy,
				Rx: r.Rx, Tx: r.Tx, Completed: r.Completed, Filled: r.Filled, TxRingFull: r.TxRingFull,
				CompletionLag: r.CompletionLag, FillRingEmpty: r.FillRingEmpty, FillNoFrames: r.FillNoFrames,
				Wakeups: r.Wakeups, KickRetries: r.KickRetries, KickErrors: r.KickErrors, BadDescs: r.BadDescs,
				TxOutstanding: r.TxOutstanding, RxDropped: r.RxDropped, RxInvalidDescs: r.RxInvalidDescs,
				TxInvalidDescs: r.TxInvalidDescs, RxRingFull: r.RxRingFull,
				RxFillRingEmptyDescs: r.RxFillRingEmptyDescs, TxRingEmptyDescs: r.TxRingEmptyDescs})
		}
	}
	for _, w := range s.Workers {
		out.Workers = append(out.Workers, WorkerStats{Queue: int(w.Queue), CPU: w.CPU, Iterations: w.Iterations,
			IdleWaits: w.IdleWaits, WaitErrors: w.WaitErrors, Rx: w.Rx, Tx: w.Tx, TxRefused: w.TxRefused,
			Dropped: w.Dropped, Kernel: w.Kernel})
	}
	out.Control = ControlStats{MasqueradeFlushed: s.Flushed, Resolves: s.Resolves, ResolveErrors: s.ResolveErrors,
		RuleReplacements: s.RuleReplacements, EnvErrors: s.EnvErrors}
	for c := range s.Cores {
		cc := &s.Cores[c]
		out.Cores = append(out.Cores, CoreStats{Core: c, Interfaces: ifaces(cc, names, nInside),
			Pipeline: pipeline(cc), Created: cc.Created, Drops: drops(cc)})
	}
	return out
}

func ifaces(c *dataplane.Counters, names []string, nInside int) []IfaceStats {
	out := make([]IfaceStats, 0, len(names))
	for i, n := range names {
		if i >= len(c.Ports) {
			break
		}
		role := "outside"
		if i < nInside {
			role = "inside"
		}
		p := c.Ports[i]
		out = append(out, IfaceStats{Name: n, Role: role, RxPackets: p.RxPackets, RxBytes: p.RxBytes,
			TxPackets: p.TxPackets, TxBytes: p.TxBytes})
	}
	return out
}

func pipeline(c *dataplane.Counters) PipelineStats {
	p := PipelineStats{Forwarded: c.Forwarded, Replies: c.Replies, ToKernel: c.ToKernel, NeighQueued: c.NeighQueued, Batches: c.Batches}
	for _, r := range dataplane.Reasons() {
		if r != dataplane.ReasonNotIPv4 && r != dataplane.ReasonBroadcast { // passed to the kernel
			p.Dropped += c.Drop(r)
		}
	}
	return p
}

func drops(c *dataplane.Counters) []Count {
	rs := dataplane.Reasons()
	out := make([]Count, 0, len(rs))
	for _, r := range rs {
		out = append(out, Count{Name: r.String(), Value: c.Drop(r)})
	}
	return out
}

// Drop returns a drop reason's count by name (0 when absent).
func (s *Stats) Drop(name string) uint64 {
	for _, c := range s.Drops {
		if c.Name == name {
			return c.Value
		}
	}
	return 0
}
