package dataplane

import (
	"xnat/dataplane/header"
	"xnat/dataplane/rules"
	"xnat/flowtable"
)

// handle decides one parsed frame whose key has been looked up.
func (p *Pipeline) handle(frame []byte, size int, m *meta, key *flowtable.Tuple, ref flowtable.Ref, out *Result) {
	tab := p.d.Table
	p.curKey = key
	if m.kind == kICMPError {
		p.handleICMPError(frame, size, m, ref, out)
		return
	}
	ctstate := rules.CtNew
	if ref != 0 {
		f := tab.Flow(ref)
		var was uint32
		if p.sq != nil {
			was = f.Status()
		}
		var v ctVerdict
		var seen bool
		if ps := tab.Proto(ref); ps != nil && m.kind == kTCP {
			var s tcpSeg
			readSeg(frame, m, &s)
			v, seen = trackTCP(f, ps, ref.Dir(), &s, &p.tp, p.now)
		} else {
			v, seen = track(f, ref.Dir(), m.proto, m.tcpFlags, p.now, p.nowSec)
		}
		if p.sq != nil && v != ctReopen {
			if now := f.Status(); (now^was)&syncVisible != 0 {
				p.sq.push(SyncUpdate, f.TuplePtr(flowtable.DirOrig), f.TuplePtr(flowtable.DirReply), now, f.Mark())
			}
		}
		switch v {
		case ctReopen:
			p.ct.Kill(ref)
			ref = 0
		case ctInvalid:
			// Out of window or of step: INVALID, counted, the connection
			// as it was. The filter decides; let through, it is
			// translated as its connection's packets are, so that no
			// inside address leaves untranslated.
			p.ct.CountInvalid()
			ctstate = rules.CtInvalid
		default:
			if seen {
				ctstate = rules.CtEstablished
			}
		}
		if ref != 0 {
			p.forward(frame, size, m, ref, ctstate, out)
			if v == ctKill && out.Action == ActForward {
				p.ct.Kill(ref)
			}
			return
		}
	}
	p.newConnection(frame, size, m, key, out)
}

// forward runs an established (or just created) connection's packet
// through filter FORWARD, translates it and sends it on its way.
func (p *Pipeline) forward(frame []byte, size int, m *meta, ref flowtable.Ref, ctstate rules.CtState, out *Result) {
	tab := p.d.Table
	f := tab.Flow(ref)
	// The packet leaves as the opposite direction's tuple reversed; that
	// tuple is read in place rather than copied and reversed on the stack
	// (a tuple built field by field and then read whole stalls on store
	// forwarding).
	other := f.TuplePtr(1 - ref.Dir())
	st := f.Status()
	if st&flowtable.FlagSrcNAT != 0 {
		ctstate |= rules.CtSNAT
	}
	if st&flowtable.FlagDstNAT != 0 {
		ctstate |= rules.CtDNAT
	}
	// nextHop, its cache hit inlined: a call is too dear.
	nh := p.nhHit(other.Src)
	if nh == nil {
		var r Reason
		if nh, r = p.resolveNextHop(other.Src); r != ReasonNone && r != ReasonNoNeighbour {
			p.finish(out, ActDrop, r, 0, 0)
			return
		}
	}
	port := nh.port
	rs := p.env.Rules
	v, policyOnly := rs.PolicyOnly(rules.Forward)
	if policyOnly {
		// No rules to match: only the policy counts the packet.
		rs.CountPolicy(rules.Forward, p.core, m.ipLen)
	} else {
		var pk rules.Packet
		p.packetFor(frame, m, &pk)
		pk.OutIf = port
		pk.CtState = ctstate
		pk.CtMark = f.Mark()
		v = rs.Filter(rules.Forward, &pk, p.core, p.nowNs)
		if pk.CtMark != f.Mark() {
			f.SetMark(pk.CtMark)
		}
	}
	// Every packet of a known connection the established path leaves
	// comes here, so refused and send are written out rather than called.
	switch v.Action {
	case rules.Drop:
		if ctstate&rules.CtInvalid != 0 {
			p.finish(out, ActDrop, ReasonInvalid, 0, 0)
		} else {
			p.finish(out, ActDrop, ReasonFiltered, 0, 0)
		}
		return
	case rules.Reject:
		p.reject(frame, size, m, v.Reject, out)
		return
	}
	if int(m.ipLen) > p.env.Ports[port].MTU {
		p.tooBig(frame, size, m, port, out)
		return
	}
	p.translate(frame, m, other)
	p.deliver(frame, size, m, nh, out)
	p.d.Table.Account(ref, int(m.ipLen))
}

// packetFor fills the rule evaluator's view of a frame.
func (p *Pipeline) packetFor(frame []byte, m *meta, pk *rules.Packet) {
	ip := header.IPv4(frame[m.l3:])
	l4 := frame[m.l4:]
	*pk = rules.Packet{
		Src: ip.Src(), Dst: ip.Dst(), Length: m.ipLen, InIf: m.in, OutIf: rules.NoIface,
		Proto: m.proto, SrcMAC: header.Ethernet(frame).Src(),
	}
	switch m.kind {
	case kTCP:
		t := header.TCP(l4)
		pk.SrcPort, pk.DstPort, pk.TCPFlags = t.SrcPort(), t.DstPort(), m.tcpFlags
	case kUDP:
		u := header.UDP(l4)
		pk.SrcPort, pk.DstPort = u.SrcPort(), u.DstPort()
	case kICMPQuery, kICMPError:
		pk.ICMPType, pk.ICMPCode = m.icmpType, m.icmpCode
	}
}

// translate rewrites the packet's addresses and ports (or ICMP
// identifier) to the reverse of other, the connection's opposite
// direction, and decrements its TTL, with incremental checksum updates
// (one for the IPv4 header covering both). TCP and UDP, whose headers
// parse found whole, take header.RewriteNAT.
func (p *Pipeline) translate(frame []byte, m *meta, other *flowtable.Tuple) {
	if m.kind == kTCP || m.kind == kUDP {
		header.RewriteNAT(frame, int(m.l3), int(m.l4), m.kind == kUDP, other.Dst, other.Src, uint32(other.DstPort)<<16|uint32(other.SrcPort))
		return
	}
	ip := header.IPv4(frame[m.l3:])
	src, dst := ip.Src(), ip.Dst()
	var d header.Delta
	if src != other.Dst {
		d = d.Add32(src, other.Dst)
		ip.SetSrc(other.Dst)
	}
	if dst != other.Src {
		d = d.Add32(dst, other.Src)
		ip.SetDst(other.Src)
	}
	ip.SetTTL(ip.TTL() - 1)
	ip.SetChecksum(d.DecTTL().Apply(ip.Checksum()))
	l4 := frame[m.l4:]
	switch m.kind {
	case kICMPQuery:
		id := other.SrcPort
		if header.ICMPIsRequest(m.icmpType) {
			id = other.DstPort
		}
		setICMPID(header.ICMPv4(l4), id)
	}
}

// emit finishes a forwarded frame whose TTL has been decremented: MAC
// addresses, counters.
func (p *Pipeline) emit(frame []byte, size int, m *meta, port uint16, mac *[6]byte, out *Result) {
	eth := header.Ethernet(frame)
	eth.SetDst(*mac)
	eth.SetSrc(p.env.Ports[port].MAC)
	p.finish(out, ActForward, ReasonNone, port, size)
	p.cnt.Forwarded++
	pc := &p.cnt.Ports[port]
	pc.TxPackets++
	pc.TxBytes += uint64(size)
}

// send forwards an accepted packet to next hop nh: too big for the port's
// MTU, it gets the router's answer; else it is translated to the reverse
// of other, its connection's opposite direction (or, with no other, only
// has its TTL decremented), sent (or held while nh is resolved), and
// counted on its connection when it has one.
func (p *Pipeline) send(frame []byte, size int, m *meta, ref flowtable.Ref, other *flowtable.Tuple, nh *nhEntry, out *Result) {
	if int(m.ipLen) > p.env.Ports[nh.port].MTU {
		p.tooBig(frame, size, m, nh.port, out)
		return
	}
	if other != nil {
		p.translate(frame, m, other)
	} else {
		header.IPv4(frame[m.l3:]).DecTTL()
	}
	p.deliver(frame, size, m, nh, out)
	if ref != 0 {
		p.d.Table.Account(ref, int(m.ipLen))
	}
}

// refused carries out a filter verdict other than ACCEPT (a drop counted as
// dropAs, or a REJECT's answer) and reports whether it did.
func (p *Pipeline) refused(frame []byte, size int, m *meta, v rules.Verdict, dropAs Reason, out *Result) bool {
	switch v.Action {
	case rules.Drop:
		p.finish(out, ActDrop, dropAs, 0, 0)
		return true
	case rules.Reject:
		p.reject(frame, size, m, v.Reject, out)
		return true
	}
	return false
}
