package dataplane

import (
	"math/bits"

	"xnat/dataplane/header"
	"xnat/dataplane/rules"
	"xnat/flowtable"
	"xnat/portalloc"
)

// prefetchReplies starts on their way the index lines of the reply
// tuples the batch's new connections will most likely be inserted with:
// behind the external address this core's last translated connection got
// (the one address of most gateways), with the ports its allocator will
// most likely give a TCP or UDP packet from an inside port that found no
// connection (portalloc.Allocator.Likely: the packet's own source port,
// and the port the search starts at when that one may be taken). Each
// insert reads those lines to see that its reply tuple is free;
// prefetched together, their misses overlap one another and the rule
// evaluation before each insert. A wrong guess costs a prefetch.
func (p *Pipeline) prefetchReplies(metas []meta, keys []flowtable.Tuple, refs []flowtable.Ref) {
	a, ext := p.lastAlloc, p.lastExt
	n := 0
	for i := range refs {
		m := &metas[i]
		if refs[i] != 0 || (m.kind != kTCP && m.kind != kUDP) || p.env.Ports[m.in].Outside || n+2 > len(p.guess) {
			continue
		}
		k := &keys[i]
		ports, np := a.Likely(k, ext)
		for _, port := range ports[:np] {
			p.guess[n].Set(k.Proto, k.Dst, k.DstPort, ext, port)
			n++
		}
	}
	p.d.Table.Prefetch(p.guess[:n])
}

// newConnection runs a connection's first packet through the nat and
// filter tables, creates the connection and forwards the packet.
func (p *Pipeline) newConnection(frame []byte, size int, m *meta, key *flowtable.Tuple, out *Result) {
	env := p.env
	if p.routerMustNot(frame, m, out) || p.rpFiltered(key.Src, m, out) {
		return
	}
	rs := env.Rules
	var state flowtable.State
	switch m.kind {
	case kTCP:
		s, ok := newTCPState(m.tcpFlags, p.d.Settings.TCPLoose.Load())
		if !ok {
			p.untracked(frame, size, m, out)
			return
		}
		state = s
		p.newTCPProto(frame, m, s)
	case kUDP:
		state = flowtable.UDP
	case kICMPQuery:
		if !header.ICMPIsRequest(m.icmpType) {
			p.untracked(frame, size, m, out) // a reply with no request
			return
		}
		state = flowtable.ICMP
	default:
		state = flowtable.Generic
	}
	var pk rules.Packet
	p.packetFor(frame, m, &pk)
	pk.CtState = rules.CtNew

	nf := flowtable.NewFlow{Orig: *key, Status: uint32(state)}
	if m.kind == kTCP {
		nf.Status |= p.newTCPClass
		if p.d.Table.HasProto() {
			nf.Proto = &p.protoInit
		}
	}
	dst, dport := key.Dst, key.DstPort
	dn := rs.NAT(rules.Prerouting, &pk, p.core, p.nowNs)
	var inMap flowtable.Ref // the mapping an inbound connection is admitted through
	if env.fullCone && (m.kind == kTCP || m.kind == kUDP) && (dn.Kind == rules.NATFullCone ||
		(dn.Kind == rules.NATNone && !env.Ports[m.in].Outside && env.outsideAddr(key.Dst))) {
		// Endpoint-independent filtering: a new connection to a live
		// mapping's external endpoint goes to its inside endpoint; and
		// from the inside (no DNAT rule), hairpinning through it.
		if inMap = p.mappingTo(key); inMap != 0 {
			in := p.d.Mappings.Flow(inMap).TuplePtr(flowtable.DirOrig)
			dst, dport = in.Src, in.SrcPort
			nf.Status |= flowtable.FlagDstNAT | flagMapIn
		}
	}
	if inMap == 0 {
		if dn.Kind == rules.NATDNAT {
			a, port := dn.Pick(backendHash(key, p.backendSeed))
			dst = a
			if port != 0 && (m.kind == kTCP || m.kind == kUDP) {
				dport = port
			}
			nf.Status |= flowtable.FlagDstNAT
		} else if p.env.Ports[m.in].Outside {
			p.finish(out, ActDrop, ReasonUnsolicited, 0, 0)
			return
		}
	}
	// Only the egress port matters here: a next hop being resolved holds
	// the packet after its connection is created (forwardFirst).
	nh, r := p.nextHop(dst)
	if r != ReasonNone && r != ReasonNoNeighbour {
		p.finish(out, ActDrop, r, 0, 0)
		return
	}
	outPort := nh.port
	pk.OutIf = outPort
	if nf.Status&flowtable.FlagDstNAT != 0 {
		pk.CtState |= rules.CtDNAT
		pk.Dst, pk.DstPort = dst, dport
	}
	v := rs.Filter(rules.Forward, &pk, p.core, p.nowNs)
	if p.refused(frame, size, m, v, ReasonFiltered, out) {
		return
	}
	nf.Mark = pk.CtMark
	// The reply tuple: from the (translated) destination back to the source.
	nf.Reply = flowtable.MakeTuple(key.Proto, dst, dport, key.Src, key.SrcPort)
	if m.kind == kICMPQuery {
		nf.Reply = flowtable.MakeTuple(key.Proto, dst, 0, key.Src, key.SrcPort)
	}
	sn := rs.NAT(rules.Postrouting, &pk, p.core, p.nowNs)
	var pool uint16
	var opt portalloc.Options
	fullCone := false
	switch sn.Kind {
	case rules.NATFullCone:
		if sn.Range.Flags&rules.NATMapIPs != 0 {
			pool = env.snatPool[sn.Target]
		} else if pool = env.masqPool[[2]uint16{sn.Target, outPort}]; pool == 0 {
			p.finish(out, ActDrop, ReasonNoAddress, 0, 0)
			return
		}
		fullCone = m.kind == kTCP || m.kind == kUDP
	case rules.NATSNAT:
		pool = env.snatPool[sn.Target]
	case rules.NATMasquerade:
		pool = env.masqPool[[2]uint16{sn.Target, outPort}]
		if pool == 0 {
			p.finish(out, ActDrop, ReasonNoAddress, 0, 0)
			return
		}
	default:
		// Hairpinning (RFC 4787 REQ-9, RFC 5382 REQ-8): an inside host
		// reached another inside host through an outside address. The
		// reply must come back through xnat, so the source becomes that
		// outside address.
		if nf.Status&flowtable.FlagDstNAT != 0 && !p.env.Ports[m.in].Outside && !p.env.Ports[outPort].Outside {
			if hp, ok := env.local[key.Dst]; ok && hp != NoPort && env.Ports[hp].Outside {
				pool = env.masqPool[[2]uint16{hairpinTarget, hp}]
				// Through a mapping, the source appears as its own
				// mapping (RFC 4787 REQ-9).
				fullCone = env.fullCone && (m.kind == kTCP || m.kind == kUDP)
			}
		}
	}
	if sn.Range.Flags&rules.NATRandomFully != 0 {
		opt.Mode = portalloc.ModeRandomFully
	} else if sn.Range.Flags&rules.NATRandom != 0 {
		opt.Mode = portalloc.ModeRandom
	}
	opt.Persistent = sn.Range.Flags&rules.NATPersistent != 0
	nf.Aux = makeAux(pool, p.nowSec)

	var ref flowtable.Ref
	var res flowtable.InsertResult
	if pool != 0 {
		nf.Status |= flowtable.FlagSrcNAT
		a := p.d.Pools.allocator(pool, p.core)
		var ar portalloc.Result
		decided := false
		if fullCone {
			ref, ar, res, decided = p.fullConeOut(&nf, pool, opt)
		}
		if !decided {
			ref, ar, res = a.Allocate(p.ct, &nf, opt, p.now)
		}
		if ar == portalloc.OK {
			p.lastExt, p.lastAlloc = nf.Reply.Dst, a
			if opt.Mode != portalloc.ModeDefault {
				p.lastAlloc = nil
			}
		}
		switch ar {
		case portalloc.OutOfPorts:
			p.finish(out, ActDrop, ReasonOutOfPorts, 0, 0)
			return
		case portalloc.PerSourceLimit:
			p.finish(out, ActDrop, ReasonPerSource, 0, 0)
			return
		case portalloc.LimiterFull:
			p.finish(out, ActDrop, ReasonPerSourceFull, 0, 0)
			return
		}
	} else {
		ref, res = p.ct.Insert(&nf, p.now)
	}
	switch res {
	case flowtable.Inserted:
		p.cnt.Created++
		if p.sq != nil {
			p.sq.push(SyncNew, &nf.Orig, &nf.Reply, nf.Status, nf.Mark)
		}
		if inMap != 0 {
			p.joinInbound(ref, inMap)
		}
	case flowtable.Exists:
		// Another core created it a moment ago: it is this packet's.
		if ref == 0 {
			p.finish(out, ActDrop, ReasonInsertFailed, 0, 0)
			return
		}
	case flowtable.Full, flowtable.NoRecord:
		p.finish(out, ActDrop, ReasonTableFull, 0, 0)
		return
	default:
		p.finish(out, ActDrop, ReasonInsertFailed, 0, 0)
		return
	}
	// The first packet leaves as the connection's packets will.
	p.d.Table.Flow(ref).Touch(p.now)
	p.forwardFirst(frame, size, m, ref, out)
}

// backendHash spreads connections over DNAT backends: a keyed mix of the
// whole original tuple, the same on every core, so each connection (not
// each client) picks its backend.
func backendHash(k *flowtable.Tuple, seed uint64) uint32 {
	a := uint64(k.Src)<<32 | uint64(k.Dst)
	b := uint64(k.SrcPort)<<32 | uint64(k.DstPort)<<16 | uint64(k.Proto)
	hi, lo := bits.Mul64(a^seed, b^0x9E3779B97F4A7C15)
	h := hi ^ lo
	return uint32(h>>32) ^ uint32(h)
}

// forwardFirst sends a connection's first packet: the filter has already
// accepted it, so only the translation and the router's duties remain.
func (p *Pipeline) forwardFirst(frame []byte, size int, m *meta, ref flowtable.Ref, out *Result) {
	other := p.d.Table.Flow(ref).TuplePtr(1 - ref.Dir())
	nh, r := p.nextHop(other.Src)
	if r != ReasonNone && r != ReasonNoNeighbour {
		p.finish(out, ActDrop, r, 0, 0)
		return
	}
	p.send(frame, size, m, ref, other, nh, out)
}

// untracked handles a packet conntrack cannot track (state INVALID): the
// filter decides, as in Linux, and an accepted one is forwarded as it is,
// untranslated, between inside ports. One bound out of an outside port is
// dropped and counted (invalid): Linux would send it untranslated, and an
// inside address would appear on the outside wire.
func (p *Pipeline) untracked(frame []byte, size int, m *meta, out *Result) {
	if p.routerMustNot(frame, m, out) || p.rpFiltered(header.IPv4(frame[m.l3:]).Src(), m, out) {
		return
	}
	p.ct.CountInvalid()
	var pk rules.Packet
	p.packetFor(frame, m, &pk)
	pk.CtState = rules.CtInvalid
	ip := header.IPv4(frame[m.l3:])
	if p.env.Ports[m.in].Outside {
		p.finish(out, ActDrop, ReasonUnsolicited, 0, 0)
		return
	}
	nh, r := p.nextHop(ip.Dst())
	if r != ReasonNone && r != ReasonNoNeighbour {
		p.finish(out, ActDrop, r, 0, 0)
		return
	}
	pk.OutIf = nh.port
	v := p.env.Rules.Filter(rules.Forward, &pk, p.core, p.nowNs)
	if p.refused(frame, size, m, v, ReasonInvalid, out) {
		return
	}
	if p.env.Ports[nh.port].Outside {
		p.finish(out, ActDrop, ReasonInvalid, 0, 0)
		return
	}
	p.send(frame, size, m, 0, nil, nh, out)
}
