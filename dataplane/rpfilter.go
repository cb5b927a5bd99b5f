package dataplane

import (
	"sync/atomic"

	"xnat/dataplane/topo"
)

// Reverse-path filtering, as Linux's net.ipv4.conf.*.rp_filter
// (fib_validate_source): a packet that would open a connection is
// checked against the route back to its source.
//
//   - 0, off: any source is taken, but one of the box's own addresses
//     (martian, as Linux without rp_filter).
//   - 1, strict: the route back to the source must leave through the
//     interface the packet came in on (any next hop of a multipath
//     route); a source with no route back, or whose route leaves
//     elsewhere, is dropped (rp_filter).
//   - 2, loose: the source needs a route back through any interface of
//     the box; with a default route every source has one.
//
// An interface's mode is the larger of net.ipv4.conf.all.rp_filter and
// its own, as in Linux. The route back is looked up in every route of the
// main table, those through interfaces xnat does not forward on
// included (a source routed through the box's management interface fails
// the strict check on an xnat interface, as it does in Linux). A source
// that is one of the box's addresses is a martian in every mode (Linux
// drops it whatever rp_filter says, unless accept_local).
//
// The check runs on a connection's first packet and on packets that
// create none (INVALID ones conntrack does not track). Linux checks every
// forwarded packet in its input route lookup; xnat does not check a
// packet of a known connection again. Such a packet matches a connection
// tuple by its five fields, and the first packet of each direction came
// through the check (the original by this filter, the reply from the
// address the connection was opened to, whose route is the one the
// connection leaves by); what is left is a packet forging a live
// connection's exact tuple on another interface, which sequence
// tracking bounds for TCP, and a check on each established packet would
// cost a route lookup (or a cache probe) on the path every packet takes.
// Linux counts its drops in /proc/net/netstat as IPReversePathFilter;
// xnat counts them as rp_filter, and local sources as martian.

// RP filter modes (Linux's values).
const (
	RPFilterOff    = 0
	RPFilterStrict = 1
	RPFilterLoose  = 2
)

// RPFilter is the reverse-path filter's settings by Linux's sysctls:
// All is net.ipv4.conf.all.rp_filter, Default net.ipv4.conf.default's
// (the value Linux gives an interface created later; xnat keeps and
// reports it, and the daemon gives it to an interface whose own value
// it cannot read), If[id] that of the port with that ID. Each holds 0,
// 1 or 2; the daemon sets them from the kernel's at start.
type RPFilter struct {
	All, Default atomic.Int32
	If           [MaxPorts]atomic.Int32
}

// Mode returns the mode of port id: the larger of All and its own.
func (r *RPFilter) Mode(id uint16) int32 {
	m := r.All.Load()
	if int(id) < len(r.If) {
		m = max(m, r.If[id].Load())
	}
	return m
}

// rpRoute is a route as the reverse-path filter sees it: every main-table
// route, its port NoPort when it leaves through an interface xnat does
// not forward on.
type rpRoute struct {
	dst    topo.Prefix
	metric int
	port   uint16
}

// compileRPRoutes keeps every route of the snapshot, longest prefix then
// lowest metric first (the snapshot's order).
func compileRPRoutes(routes []topo.Route, byIndex map[int]uint16) []rpRoute {
	out := make([]rpRoute, 0, len(routes))
	for _, r := range routes {
		port, ok := byIndex[r.IfIndex]
		if !ok {
			port = NoPort
		}
		out = append(out, rpRoute{dst: r.Dst, metric: r.Metric, port: port})
	}
	return out
}

// reversePath checks the source of a packet that came in on port in
// under mode (fib_validate_source): ReasonMartian for one of the box's
// addresses, ReasonRPFilter for a source the mode refuses, ReasonNone
// for one it takes.
func (e *Env) reversePath(src uint32, in uint16, mode int32) Reason {
	if _, ok := e.local[src]; ok {
		return ReasonMartian
	}
	if mode == RPFilterOff {
		return ReasonNone
	}
	rs := e.rpRoutes
	first := -1
	for i := range rs {
		if rs[i].dst.Contains(src) {
			first = i
			break
		}
	}
	if first < 0 {
		return ReasonRPFilter // no route back
	}
	// The route Linux's lookup takes is the first of the longest prefix
	// with the lowest metric; each of its next hops counts.
	r0 := rs[first]
	for i := first; i < len(rs) && rs[i].dst == r0.dst && rs[i].metric == r0.metric; i++ {
		if rs[i].port == in {
			return ReasonNone
		}
	}
	// The route back leaves elsewhere: strict refuses it, and so does
	// loose on an interface without an address (Linux's last resort).
	if mode == RPFilterStrict || int(in) < len(e.Ports) && len(e.Ports[in].Addrs) == 0 {
		return ReasonRPFilter
	}
	return ReasonNone
}

// rpFiltered drops a packet that would create a connection, or be
// forwarded untracked, when the reverse-path filter refuses its source
// (counted under its reason), and reports whether it did.
func (p *Pipeline) rpFiltered(src uint32, m *meta, out *Result) bool {
	r := p.env.reversePath(src, m.in, p.d.Settings.RPFilter.Mode(m.in))
	if r == ReasonNone {
		return false
	}
	p.finish(out, ActDrop, r, 0, 0)
	return true
}
