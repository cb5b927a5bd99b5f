package dataplane

import (
	"time"

	"xnat/flowtable"
	"xnat/portalloc"
)

// Full-cone mappings (FULLCONENAT; RFC 4787 REQ-1, REQ-8, RFC 5382
// REQ-1, REQ-2): an inside endpoint (address, protocol, port) keeps one
// external endpoint for every destination while any of its connections
// lives, and for the mapping timeout after the last one ends; and, with
// FULLCONENAT in PREROUTING, a new connection from anywhere to that
// external endpoint is admitted to the inside endpoint.
//
// The mappings live in a second flow table (Dataplane.Mappings), with the
// connection table's concurrency design: one record a mapping, its
// original tuple the inside endpoint (proto, inside address and port, 0,
// 0), its reply tuple the external one (proto, 0, 0, external address and
// port), so that a lookup by either side is one table lookup, from any
// core, without locks. The record's caller bits count the connections
// using it (flowtable.Flow.AddUser, DropUser); while it has any it is in
// state mapHeld, whose timeout never runs out, and from its last
// connection's end it is in mapIdle, whose timeout is the mapping timeout.
// A mapping is created by the core whose allocator gave the port of its
// first connection, in that core's share: that core owns it, sweeps it,
// and gives its port back to its allocator (portalloc Retain, Unretain)
// when it expires. Connections count as its users through the flags
// flagMapOut (the connection's source is the mapping's inside endpoint)
// and flagMapIn (the connection was admitted to it inbound, or
// hairpinned to it); the connection's owner drops the use when the
// connection is gone.

// Connection status flags (flowtable's caller bits).
const (
	flagMapOut = 1 << flowtable.FlagUserShift       // a user of its source's mapping
	flagMapIn  = 1 << (flowtable.FlagUserShift + 1) // a user of its destination's mapping
	// flagJoined: the connection joined its source's mapping without an
	// allocation, and the per-source limiter counted it (AcquireConn).
	flagJoined = 1 << (flowtable.FlagUserShift + 2)
)

// A mapping's states in the mapping table, chosen for their timeouts
// there: mapHeld's is flowtable.MaxTimeout, mapIdle's the mapping timeout.
const (
	mapHeld = flowtable.TCPEstablished
	mapIdle = flowtable.UDPStream
)

// MappingTimeoutMin is the least mapping timeout (RFC 4787 REQ-5): the
// mapping timeout is the UDP stream timeout
// (nf_conntrack_udp_timeout_stream), but never below this.
const MappingTimeoutMin = 120 * time.Second

// newMappingTable makes the mapping table of a dataplane over tab: the
// same capacity (at least 1024: a gateway's clients mostly give each
// connection its own source port, so each may need its own mapping), the
// same cores. Its limit (Max, xnat.fullcone_max) starts at its capacity.
func newMappingTable(tab *flowtable.Table) *flowtable.Table {
	m, err := flowtable.New(flowtable.Config{Capacity: max(tab.Capacity(), 1024), Cores: tab.Cores(), Start: tab.Start()})
	if err != nil {
		// The geometry is within the connection table's, which was made.
		panic("dataplane: mapping table: " + err.Error())
	}
	m.SetTimeout("nf_conntrack_tcp_timeout_established", flowtable.MaxTimeout)
	syncMappingTimeout(tab, m)
	return m
}

// syncMappingTimeout sets the mapping timeout from the connection table's
// UDP stream timeout.
func syncMappingTimeout(tab, m *flowtable.Table) {
	want := max(tab.StateTimeout(flowtable.UDPStream), MappingTimeoutMin)
	if m.StateTimeout(mapIdle) != want {
		m.SetTimeout("nf_conntrack_udp_timeout_stream", want)
	}
}

// insideKey and outsideKey are the mapping table's tuples of an inside
// and an external endpoint.
func insideKey(proto uint8, addr uint32, port uint16) flowtable.Tuple {
	return flowtable.MakeTuple(proto, addr, port, 0, 0)
}

func outsideKey(proto uint8, addr uint32, port uint16) flowtable.Tuple {
	return flowtable.MakeTuple(proto, 0, 0, addr, port)
}

// mappingTo returns the live mapping whose external endpoint is a
// packet's destination, or 0.
func (p *Pipeline) mappingTo(key *flowtable.Tuple) flowtable.Ref {
	k := outsideKey(key.Proto, key.Dst, key.DstPort)
	return p.mc.Lookup(&k, p.now)
}

// fullConeOut creates an outbound connection through its source's
// mapping in pool, creating the mapping when the source has none; nf's
// reply tuple has its source filled in. It returns what Allocate would,
// and whether it decided (false: the source's mapping is of another pool,
// so the connection takes the ordinary SNAT path).
func (p *Pipeline) fullConeOut(nf *flowtable.NewFlow, pool uint16, opt portalloc.Options) (flowtable.Ref, portalloc.Result, flowtable.InsertResult, bool) {
	o := &nf.Orig
	mk := insideKey(o.Proto, o.Src, o.SrcPort)
	if r := p.mc.Lookup(&mk, p.now); r != 0 {
		mf := p.d.Mappings.Flow(r)
		if auxPool(mf.Aux()) != pool {
			return 0, 0, 0, false
		}
		ext := mf.TuplePtr(flowtable.DirReply)
		nf.Reply.Dst, nf.Reply.DstPort = ext.Dst, ext.DstPort
		nf.Status |= flowtable.FlagSrcNAT | flagMapOut
		nf.Aux = makeAux(0, p.nowSec) // the port is the mapping's, not this connection's
		// The per-source limits count the connection as the allocator
		// would have (its port is one the source holds already).
		lim := p.d.Pools.Limiter()
		if lim != nil {
			if r := lim.AcquireConn(o.Src); r != portalloc.OK {
				return 0, r, flowtable.Inserted, true
			}
			nf.Status |= flagJoined
		}
		ref, res := p.ct.Insert(nf, p.now)
		if res != flowtable.Inserted && lim != nil {
			lim.ReleaseConn(o.Src)
		}
		if res == flowtable.Inserted {
			if mf.AddUser(p.now, mapHeld) {
				p.cnt.MapReused++
			} else {
				p.unmap(ref, flagMapOut)
			}
		}
		return ref, portalloc.OK, res, true
	}
	a := p.d.Pools.allocator(pool, p.core)
	nf.Status |= flowtable.FlagSrcNAT | flagMapOut
	opt.Exclusive, opt.Parity = true, true
	ref, ar, res := a.Allocate(p.ct, nf, opt, p.now)
	if ar == portalloc.OutOfPorts {
		// Every port of the pool holds a mapping or a connection: the
		// connection shares a port, as MASQUERADE's do, unmapped.
		nf.Status &^= flagMapOut
		opt.Exclusive, opt.Parity = false, false
		ref, ar, res = a.Allocate(p.ct, nf, opt, p.now)
		if ar == portalloc.OK && res == flowtable.Inserted {
			p.cnt.MapFailed++
		}
		return ref, ar, res, true
	}
	if ar != portalloc.OK || res != flowtable.Inserted {
		return ref, ar, res, true
	}
	mf := flowtable.NewFlow{
		Orig:   mk,
		Reply:  outsideKey(o.Proto, nf.Reply.Dst, nf.Reply.DstPort),
		Status: uint32(mapHeld) | flowtable.FlagAssured | 1<<flowtable.FlagUserShift,
		Aux:    makeAux(pool, p.nowSec),
	}
	if !a.Retain(o.Proto, nf.Reply.Dst, nf.Reply.DstPort) {
		// The port is at its use limit: no mapping can hold it.
		p.unmap(ref, flagMapOut)
		return ref, ar, res, true
	}
	if _, mres := p.mc.Insert(&mf, p.now); mres != flowtable.Inserted {
		a.Unretain(o.Proto, nf.Reply.Dst, nf.Reply.DstPort)
		p.unmap(ref, flagMapOut)
		return ref, ar, res, true
	}
	p.mapOwner = true
	p.cnt.MapCreated++
	return ref, ar, res, true
}

// unmap takes flag off a connection that could not join its mapping: it
// runs as an ordinary NAT connection.
func (p *Pipeline) unmap(ref flowtable.Ref, flag uint32) {
	f := p.d.Table.Flow(ref)
	for {
		s := f.Status()
		if f.UpdateStatus(s, s&^flag) {
			break
		}
	}
	p.cnt.MapFailed++
}

// joinInbound counts a new connection admitted through mapping m (ref
// 0: none) as its user.
func (p *Pipeline) joinInbound(ref, m flowtable.Ref) {
	if m == 0 {
		return
	}
	if p.d.Mappings.Flow(m).AddUser(p.now, mapHeld) {
		p.cnt.MapInbound++
	} else {
		p.unmap(ref, flagMapIn)
	}
}

// leaveMappings drops a gone connection's uses of its mappings, and its
// count in the per-source limiter when it joined one.
func (p *Pipeline) leaveMappings(g *flowtable.Gone) {
	if g.Status&flagJoined != 0 {
		if lim := p.d.Pools.Limiter(); lim != nil {
			lim.ReleaseConn(g.Orig.Src)
		}
	}
	if g.Status&flagMapOut != 0 {
		p.leave(insideKey(g.Orig.Proto, g.Orig.Src, g.Orig.SrcPort))
	}
	if g.Status&flagMapIn != 0 {
		// The inside endpoint is where the connection was sent.
		p.leave(insideKey(g.Reply.Proto, g.Reply.Src, g.Reply.SrcPort))
	}
}

func (p *Pipeline) leave(k flowtable.Tuple) {
	if r := p.mc.Lookup(&k, p.now); r != 0 {
		p.d.Mappings.Flow(r).DropUser(p.now, mapIdle)
	}
}

// sweepMappings expires this core's idle mappings past the mapping
// timeout and gives their ports back to the allocators that gave them.
// It reports whether any left.
func (p *Pipeline) sweepMappings() bool {
	if !p.mapOwner {
		return false
	}
	syncMappingTimeout(p.d.Table, p.d.Mappings)
	mt := p.d.Mappings
	n := p.mc.Sweep(p.now, max(paceDue(&p.mapSweptNs, p.nowNs, mapSweepPass, mt.Count()/mt.Cores()+1), 1), p.gone[:])
	for _, g := range p.gone[:n] {
		if a := p.d.Pools.allocator(auxPool(g.Aux), p.core); a != nil {
			a.Unretain(g.Orig.Proto, g.Reply.Dst, g.Reply.DstPort)
		}
		if g.Reason == flowtable.ReasonTimeout {
			p.cnt.MapExpired++
		}
	}
	return n > 0
}

// A core sweeps its share of the mapping table once every mapSweepPass,
// paced over its batches as the connection sweep is (paceDue), and at
// least one record a batch: the mapping timeout is at least 120 s, so a
// mapping outlives it by little, and the sweep costs the established path
// next to nothing.
const mapSweepPass = 10 * int64(time.Second)
