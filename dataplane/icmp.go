package dataplane

import (
	"encoding/binary"
	"math/bits"

	"xnat/dataplane/header"
	"xnat/dataplane/rules"
	"xnat/flowtable"
)

// maxICMPError is the most an ICMP error xnat sends may carry: the IP
// datagram is kept within 576 bytes (RFC 1812 4.3.2.3).
const maxICMPError = 576

// handleICMPError forwards an ICMP error about a tracked connection
// (state RELATED), translating the outer header and the datagram it
// quotes, with all their checksums (RFC 5508 section 4.2). As in Linux,
// the error must travel in the direction the quoted datagram came from:
// its outer destination must be the quoted datagram's source, the
// connection's endpoint in that direction; else, as an error about
// nothing xnat tracks, it is INVALID. The outer addresses are rewritten
// as Linux rewrites them, whatever they held: the destination to the
// endpoint behind the NAT, and, where the connection's source is
// translated in the direction the error travels, the source to the
// translated address, so that no inside address, and no source an inside
// host forged, leaves. It never refreshes or ends the connection.
func (p *Pipeline) handleICMPError(frame []byte, size int, m *meta, ref flowtable.Ref, out *Result) {
	if ref == 0 {
		p.untracked(frame, size, m, out)
		return
	}
	// The error's own source is checked like a new connection's.
	if p.rpFiltered(header.IPv4(frame[m.l3:]).Src(), m, out) {
		return
	}
	f := p.d.Table.Flow(ref)
	dir := ref.Dir()
	k := f.TuplePtr(dir)
	ip := header.IPv4(frame[m.l3:])
	if ip.Dst() != k.Dst {
		p.untracked(frame, size, m, out)
		return
	}
	n := f.Tuple(1 - dir).Reverse()
	ctstate := rules.CtRelated
	st := f.Status()
	if st&flowtable.FlagSrcNAT != 0 {
		ctstate |= rules.CtSNAT
	} else if st&flowtable.FlagDstNAT != 0 {
		ctstate |= rules.CtDNAT
	}
	// The source is translated in this direction: SNAT going out (original
	// direction), DNAT coming back (reply).
	srcNAT := flowtable.FlagSrcNAT
	if dir == flowtable.DirReply {
		srcNAT = flowtable.FlagDstNAT
	}
	newSrc, newDst := ip.Src(), n.Dst
	if st&srcNAT != 0 {
		newSrc = n.Src
	}
	nh, r := p.nextHop(newDst)
	if r != ReasonNone && r != ReasonNoNeighbour {
		p.finish(out, ActDrop, r, 0, 0)
		return
	}
	port := nh.port
	var pk rules.Packet
	p.packetFor(frame, m, &pk)
	pk.OutIf, pk.CtState, pk.CtMark = port, ctstate, f.Mark()
	v := p.env.Rules.Filter(rules.Forward, &pk, p.core, p.nowNs)
	switch v.Action {
	case rules.Drop:
		p.finish(out, ActDrop, ReasonFiltered, 0, 0)
		return
	case rules.Reject:
		p.finish(out, ActDrop, ReasonRejected, 0, 0) // no error about an error
		return
	}
	if int(m.ipLen) > p.env.Ports[port].MTU {
		p.finish(out, ActDrop, ReasonMTU, 0, 0)
		return
	}
	end := int(m.l3) + int(m.ipLen)
	// The quoted datagram: it went the other way, so it is N reversed.
	d := setAddrs(header.IPv4(frame[m.eL3:end]), n.Dst, n.Src)
	el4 := frame[m.eL4:end]
	switch m.eProto {
	case header.ProtoTCP:
		// The quote may stop before the checksum; rewritePorts then leaves it.
		rewritePorts(el4, header.TCPChecksum, false, n.DstPort, n.SrcPort, d)
	case header.ProtoUDP:
		rewritePorts(el4, header.UDPChecksum, true, n.DstPort, n.SrcPort, d)
	case header.ProtoICMP:
		id := n.DstPort // a quoted request went out with the id in its SrcPort slot
		if m.eQuery == 2 {
			id = n.SrcPort
		}
		setICMPID(header.ICMPv4(el4), id)
	}
	// The outer header, then the ICMP checksum over the whole message.
	setAddrs(ip, newSrc, newDst)
	icmp := header.ICMPv4(frame[m.l4:end])
	icmp.SetChecksum(0)
	icmp.SetChecksum(header.Checksum(icmp, 0))
	ip.DecTTL()
	p.deliver(frame, size, m, nh, out)
}

// setAddrs sets an IPv4 header's source and destination addresses, with
// an incremental update of its checksum, and returns the change to their
// sum, which a TCP, UDP or ICMP checksum over the pseudo-header folds in.
func setAddrs(ip header.IPv4, src, dst uint32) header.Delta {
	var d header.Delta
	if s := ip.Src(); s != src {
		d = d.Add32(s, src)
		ip.SetSrc(src)
	}
	if s := ip.Dst(); s != dst {
		d = d.Add32(s, dst)
		ip.SetDst(dst)
	}
	if d != 0 {
		ip.SetChecksum(d.Apply(ip.Checksum()))
	}
	return d
}

// setICMPID sets an ICMP query's identifier, with an incremental update
// of its checksum.
func setICMPID(c header.ICMPv4, id uint16) {
	if old := c.ID(); old != id {
		c.SetID(id)
		c.SetChecksum(header.Delta(0).Add16(old, id).Apply(c.Checksum()))
	}
}

// rewritePorts sets a quoted TCP or UDP header's ports and folds their
// change and the address delta d into its checksum at csumOff
// (header.TCPChecksum or header.UDPChecksum), when the quote reaches it
// (Delta.ApplyL4: a UDP checksum of zero stays zero).
func rewritePorts(l4 []byte, csumOff int, udp bool, sport, dport uint16, d header.Delta) {
	h := header.UDP(l4) // TCP's ports lie where UDP's do
	if sp := h.SrcPort(); sp != sport {
		d = d.Add16(sp, sport)
		h.SetSrcPort(sport)
	}
	if dp := h.DstPort(); dp != dport {
		d = d.Add16(dp, dport)
		h.SetDstPort(dport)
	}
	if d == 0 || len(l4) < csumOff+2 {
		return
	}
	c := binary.BigEndian.Uint16(l4[csumOff:])
	binary.BigEndian.PutUint16(l4[csumOff:], d.ApplyL4(c, udp))
}

// icmpAllowed takes a token from the core's ICMP error budget.
func (p *Pipeline) icmpAllowed() bool {
	rate, burst := p.d.Settings.ICMPRate.Load(), p.d.Settings.ICMPBurst.Load()
	if rate <= 0 || burst <= 0 {
		return false
	}
	if el := p.nowNs - p.icmpLast; el > 0 {
		// The tokens earned since the last refill, el·rate/1e9, in 128
		// bits: after a long enough quiet spell (at the sysctl's largest
		// rate, under three hours) el·rate leaves int64, and a negative
		// product would stop the refills for good. The remainder, time not
		// yet worth a token, is carried.
		hi, lo := bits.Mul64(uint64(el), uint64(rate))
		if hi >= 1e9 { // a quotient beyond 64 bits: far more than any bucket
			p.icmpTokens = burst
		} else if q, r := bits.Div64(hi, lo, 1e9); q > 0 {
			p.icmpTokens = int64(min(uint64(burst), uint64(p.icmpTokens)+min(q, uint64(burst))))
			p.icmpLast = p.nowNs - int64(r/uint64(rate))
		}
		if p.icmpTokens >= burst {
			p.icmpLast = p.nowNs
		}
	}
	if p.icmpTokens <= 0 {
		return false
	}
	p.icmpTokens--
	return true
}

// mayAnswer reports whether an ICMP error may be sent about a packet
// (RFC 1812 4.3.2.7: never about an ICMP error, a broadcast or multicast
// destination, or a source that is not a unicast host).
func mayAnswer(frame []byte, m *meta) bool {
	if m.kind == kICMPError {
		return false
	}
	ip := header.IPv4(frame[m.l3:])
	src, dst := ip.Src(), ip.Dst()
	return unicastHost(src) && dst != 0xffffffff && dst>>28 != 0xe
}

// unicastHost reports whether a is a plausible unicast host address.
func unicastHost(a uint32) bool {
	return a != 0 && a != 0xffffffff && a>>28 != 0xe && a>>24 != 127
}

// ttlExceeded drops a packet whose TTL would reach zero here and answers
// with ICMP time exceeded from the ingress port's address.
func (p *Pipeline) ttlExceeded(frame []byte, size int, m *meta, out *Result) {
	p.icmpError(frame, size, m, header.ICMPTimeExceeded, 0, 0, ReasonTTLExceeded, out)
}

// tooBig handles a packet larger than the egress MTU: with DF set, ICMP
// fragmentation needed carrying the MTU (RFC 1191); without, xnat does not
// fragment, and drops it.
func (p *Pipeline) tooBig(frame []byte, size int, m *meta, port uint16, out *Result) {
	if !header.IPv4(frame[m.l3:]).DontFragment() {
		p.finish(out, ActDrop, ReasonMTU, 0, 0)
		return
	}
	p.icmpError(frame, size, m, header.ICMPDestUnreach, header.ICMPFragNeeded, uint32(p.env.Ports[port].MTU), ReasonMTU, out)
}

// reject answers a packet a REJECT rule matched.
func (p *Pipeline) reject(frame []byte, size int, m *meta, rt rules.RejectType, out *Result) {
	if rt == rules.RejectTCPReset {
		if m.kind == kTCP && m.tcpFlags&header.TCPRst == 0 {
			p.tcpReset(frame, m, out)
			return
		}
		p.finish(out, ActDrop, ReasonRejected, 0, 0)
		return
	}
	typ, code, ok := rt.ICMP()
	if !ok {
		p.finish(out, ActDrop, ReasonRejected, 0, 0)
		return
	}
	p.icmpError(frame, size, m, typ, code, 0, ReasonRejected, out)
}

// icmpError turns the frame into an ICMP error about itself, sent back
// out of its ingress port; or drops it with reason when no error may or
// can be sent. The reason is counted either way.
func (p *Pipeline) icmpError(frame []byte, size int, m *meta, typ, code uint8, rest uint32, reason Reason, out *Result) {
	p.icmpErrorFrom(p.env.Ports[m.in].Primary(), frame, size, m, typ, code, rest, reason, out)
}

// icmpErrorFrom is icmpError with the error's source address given.
func (p *Pipeline) icmpErrorFrom(src uint32, frame []byte, size int, m *meta, typ, code uint8, rest uint32, reason Reason, out *Result) {
	p.cnt.Drops[reason]++
	in := &p.env.Ports[m.in]
	if src == 0 || !mayAnswer(frame, m) {
		*out = Result{Action: ActDrop, Reason: reason}
		return
	}
	if !p.icmpAllowed() {
		p.cnt.Drops[ReasonICMPRateLimit]++
		*out = Result{Action: ActDrop, Reason: reason}
		return
	}
	l3 := int(m.l3)
	q := min(int(m.ipLen), maxICMPError-header.IPv4MinLen-header.ICMPLen)
	total := l3 + header.IPv4MinLen + header.ICMPLen + q
	if cap(frame) < total {
		*out = Result{Action: ActDrop, Reason: reason}
		return
	}
	frame = frame[:total]
	ip := header.IPv4(frame[l3:])
	origSrc := ip.Src()
	tos := ip.TOS()
	copy(frame[l3+header.IPv4MinLen+header.ICMPLen:], frame[l3:l3+q])
	eth := header.Ethernet(frame)
	eth.SetDst(eth.Src())
	eth.SetSrc(in.MAC)
	// The error's TOS: the packet's, without its ECN bits, at precedence
	// 6, internetwork control (RFC 1812 4.3.2.5).
	writeIPv4(frame[l3:], tos&^0x03|0xc0, uint16(header.IPv4MinLen+header.ICMPLen+q), header.ProtoICMP, src, origSrc)
	icmp := header.ICMPv4(frame[l3+header.IPv4MinLen:])
	icmp.SetType(typ)
	icmp.SetCode(code)
	icmp.SetRest(rest)
	icmp.SetChecksum(0)
	icmp.SetChecksum(header.Checksum(icmp, 0))
	*out = Result{Action: ActReply, Reason: reason, Port: m.in, Len: total}
	p.cnt.Replies++
	pc := &p.cnt.Ports[m.in]
	pc.TxPackets++
	pc.TxBytes += uint64(total)
}

// writeIPv4 writes a 20-byte IPv4 header with its checksum.
func writeIPv4(b []byte, tos uint8, total uint16, proto uint8, src, dst uint32) {
	ip := header.IPv4(b[:header.IPv4MinLen])
	ip.SetVersionIHL(header.IPv4VersionIHL5)
	ip.SetTOS(tos)
	ip.SetTotalLen(total)
	ip.SetID(0)
	ip.SetFlagsFrag(header.IPv4DontFragment)
	ip.SetTTL(64)
	ip.SetProtocol(proto)
	ip.SetSrc(src)
	ip.SetDst(dst)
	ip.SetChecksum(0)
	ip.SetChecksum(ip.ComputeChecksum())
}

// tcpReset answers a TCP segment with a reset from its destination (RFC
// 793 "Reset Generation"; as iptables' REJECT --reject-with tcp-reset).
func (p *Pipeline) tcpReset(frame []byte, m *meta, out *Result) {
	p.cnt.Drops[ReasonRejected]++
	l3 := int(m.l3)
	ip := header.IPv4(frame[l3:])
	t := header.TCP(frame[m.l4:])
	src, dst := ip.Src(), ip.Dst()
	sport, dport := t.SrcPort(), t.DstPort()
	seq, ack, flags := t.Seq(), t.Ack(), t.Flags()
	seglen := uint32(int(m.ipLen) - int(m.l4-m.l3) - t.DataOffset())
	if flags&header.TCPSyn != 0 {
		seglen++
	}
	if flags&header.TCPFin != 0 {
		seglen++
	}
	total := l3 + header.IPv4MinLen + header.TCPMinLen
	if cap(frame) < total || !mayAnswer(frame, m) {
		*out = Result{Action: ActDrop, Reason: ReasonRejected}
		return
	}
	frame = frame[:total]
	eth := header.Ethernet(frame)
	eth.SetDst(eth.Src())
	eth.SetSrc(p.env.Ports[m.in].MAC)
	writeIPv4(frame[l3:], 0, header.IPv4MinLen+header.TCPMinLen, header.ProtoTCP, dst, src)
	r := header.TCP(frame[l3+header.IPv4MinLen:])
	clear(r)
	r.SetSrcPort(dport)
	r.SetDstPort(sport)
	if flags&header.TCPAck != 0 {
		r.SetSeq(ack)
		r.SetFlags(header.TCPRst)
	} else {
		r.SetAck(seq + seglen)
		r.SetFlags(header.TCPRst | header.TCPAck)
	}
	r.SetDataOffset(header.TCPMinLen)
	r.SetChecksum(header.Checksum(r, header.PseudoSum(dst, src, header.ProtoTCP, header.TCPMinLen)))
	*out = Result{Action: ActReply, Reason: ReasonRejected, Port: m.in, Len: total}
	p.cnt.Replies++
	pc := &p.cnt.Ports[m.in]
	pc.TxPackets++
	pc.TxBytes += uint64(total)
}
