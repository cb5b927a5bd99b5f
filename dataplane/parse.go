package dataplane

import (
	"encoding/binary"

	"xnat/dataplane/header"
	"xnat/flowtable"
)

// Frame-kinds the parser distinguishes.
const (
	kDone      = iota // already decided
	kTCP              // TCP segment
	kUDP              // UDP datagram
	kICMPQuery        // ICMP echo/timestamp, tracked by identifier
	kICMPError        // ICMP error about the datagram embedded in it
	kOther            // another protocol, tracked by addresses only
)

// meta is what parsing found in one frame.
type meta struct {
	kind     uint8
	ttl      uint8 // TCP and UDP: the TTL as received
	in       uint16
	l3, l4   uint16 // offsets of the IPv4 and transport headers
	ipLen    uint16
	proto    uint8
	tcpFlags uint8
	icmpType uint8
	icmpCode uint8
	eL3, eL4 uint16 // ICMP errors: offsets of the embedded IPv4 and transport headers
	eProto   uint8
	eQuery   uint8  // embedded ICMP query: 1 request, 2 reply
	qbase    uint16 // quietBase: the established path's part of quietIndex
	// TCP and UDP: the IPv4 header's and the transport header's checksums
	// as received, so that the established path writes the headers it
	// rewrites without reading them again.
	ipCsum, l4Csum uint16
}

// The frames parseFast takes: untagged Ethernet, IPv4 without options at
// fastL3, the transport header at fastL4, and the shortest of them, with a
// whole UDP header or TCP header.
const (
	fastL3     = header.EthernetLen
	fastL4     = fastL3 + header.IPv4MinLen
	fastUDPLen = fastL4 + header.UDPLen
	fastTCPLen = fastL4 + header.TCPMinLen
)

// parseFast counts each frame of the batch in on its port, and parses
// those that are what nearly every packet is: untagged Ethernet, IPv4
// without options and not a later fragment, with a TTL above one,
// carrying TCP or UDP. It reads fixed offsets of arrays whose length is
// checked once, filling each frame's meta and key exactly as parse would
// (FuzzParseFast holds the two together). It returns the mask of the
// frames it left to parse (any other frame, good or bad: parse then finds
// what is wrong with it or what else it is), and how many it took. The
// batch holds at most batchMax frames.
func (p *Pipeline) parseFast(frames [][]byte, sizes []int, in []uint16) (rest uint64, took int) {
	metas, keys := p.meta[:len(frames)], p.keys[:len(frames)]
	sizes, in = sizes[:len(frames)], in[:len(frames)]
	// The receive counters are kept for a run of frames from one port (a
	// queue's batch is one run) and added when the port changes.
	var rx rxRun
	nports := len(p.env.Ports)
	be := binary.BigEndian
	for i := range frames {
		m := &metas[i]
		frame := frames[i][:sizes[i]]
		port := in[i]
		if port != rx.port {
			rx.flush(p)
			rx.port = port
		}
		rx.pkts++
		rx.bytes += uint64(len(frame))
		m.in = port
		// A frame from a port the environment lacks is left to the full
		// path, which drops it (no_port).
		if len(frame) < fastUDPLen || int(port) >= nports {
			rest |= 1 << i
			continue
		}
		h := (*[fastUDPLen]byte)(frame)
		ip := (*[header.IPv4MinLen]byte)(h[fastL3:])
		tl := int(be.Uint16(ip[header.IPv4TotalLen:]))
		// EtherType IPv4, then version 4 with IHL 5: three bytes, one compare.
		if be.Uint32(h[header.EthernetType:])>>8 != header.EtherTypeIPv4<<8|header.IPv4VersionIHL5 ||
			fastL3+tl > len(frame) || be.Uint16(ip[header.IPv4FlagsFrag:])&header.IPv4OffsetMask != 0 ||
			ip[header.IPv4TTL] <= 1 || !header.IsValidChecksum20(ip) {
			rest |= 1 << i
			continue
		}
		udp := (*[header.UDPLen]byte)(h[fastL4:]) // TCP's ports, too
		proto := ip[header.IPv4Protocol]
		switch proto {
		case header.ProtoUDP:
			n := int(be.Uint16(udp[header.UDPLength:]))
			if tl < header.IPv4MinLen+header.UDPLen || n < header.UDPLen || n > tl-header.IPv4MinLen {
				rest |= 1 << i
				continue
			}
			m.kind, m.qbase = kUDP, quietBase(kUDP, 0, true)
			m.l4Csum = be.Uint16(udp[header.UDPChecksum:])
		case header.ProtoTCP:
			if tl < header.IPv4MinLen+header.TCPMinLen { // then the frame holds fastTCPLen bytes
				rest |= 1 << i
				continue
			}
			tcp := (*[header.TCPMinLen]byte)((*[fastTCPLen]byte)(frame)[fastL4:])
			if off := int(tcp[header.TCPDataOffset]>>4) * 4; off < header.TCPMinLen || off > tl-header.IPv4MinLen {
				rest |= 1 << i
				continue
			}
			m.kind, m.tcpFlags = kTCP, tcp[header.TCPFlags]
			m.qbase = quietBase(kTCP, m.tcpFlags, true)
			m.l4Csum = be.Uint16(tcp[header.TCPChecksum:])
		default:
			rest |= 1 << i
			continue
		}
		m.l3, m.l4, m.ipLen, m.proto = fastL3, fastL4, uint16(tl), proto
		m.ttl, m.ipCsum = ip[header.IPv4TTL], be.Uint16(ip[header.IPv4Checksum:])
		keys[i].Set(proto, be.Uint32(ip[header.IPv4SrcAddr:]), be.Uint16(udp[header.UDPSrcPort:]),
			be.Uint32(ip[header.IPv4DstAddr:]), be.Uint16(udp[header.UDPDstPort:]))
		took++
	}
	rx.flush(p)
	return rest, took
}

// rxRun is a run of frames received on one port, not yet counted.
type rxRun struct {
	port        uint16
	pkts, bytes uint64
}

// flush counts the run on its port, if the environment has that port.
func (r *rxRun) flush(p *Pipeline) {
	if r.pkts != 0 && int(r.port) < len(p.env.Ports) && int(r.port) < len(p.cnt.Ports) {
		pc := &p.cnt.Ports[r.port]
		pc.RxPackets += r.pkts
		pc.RxBytes += r.bytes
	}
	r.pkts, r.bytes = 0, 0
}

// parse checks a frame's headers and fills m and the lookup key.
func (p *Pipeline) parse(frame []byte, m *meta, key *flowtable.Tuple) Reason {
	if len(frame) < header.EthernetLen {
		return ReasonShortFrame
	}
	eth := header.Ethernet(frame)
	l3 := header.EthernetLen
	et := eth.Type()
	// xnat's interfaces carry no VLAN: a tagged frame (802.1Q, or
	// 802.1ad's outer tag) is not for an xnat port, and is never
	// forwarded with its tag onto another (the XDP program passes them to
	// the kernel, which owns the box's VLAN sub-interfaces).
	if et == header.EtherTypeVLAN || et == header.EtherTypeQinQ {
		return ReasonVLAN
	}
	if et != header.EtherTypeIPv4 {
		return ReasonNotIPv4
	}
	if len(frame) < l3+header.IPv4MinLen {
		return ReasonShortFrame
	}
	ip := header.IPv4(frame[l3:])
	if ip.Version() != 4 {
		return ReasonIPVersion
	}
	hl := ip.HeaderLen()
	if hl < header.IPv4MinLen || l3+hl > len(frame) {
		return ReasonIPHeaderLen
	}
	tl := int(ip.TotalLen())
	if tl < hl || l3+tl > len(frame) {
		return ReasonIPTotalLen
	}
	if !ip.IsValidChecksum() {
		return ReasonIPChecksum
	}
	if ip.FragOffset() != 0 {
		return ReasonFragment
	}
	m.l3, m.l4, m.ipLen = uint16(l3), uint16(l3+hl), uint16(tl)
	m.proto = ip.Protocol()
	m.qbase = notQuiet
	payload := frame[l3+hl : l3+tl]
	src, dst := ip.Src(), ip.Dst()
	switch m.proto {
	case header.ProtoTCP:
		if len(payload) < header.TCPMinLen {
			return ReasonL4Header
		}
		t := header.TCP(payload)
		if off := t.DataOffset(); off < header.TCPMinLen || off > len(payload) {
			return ReasonL4Header
		}
		m.kind, m.tcpFlags = kTCP, t.Flags()
		m.qbase = quietBase(kTCP, m.tcpFlags, hl == header.IPv4MinLen)
		m.ttl, m.ipCsum, m.l4Csum = ip.TTL(), ip.Checksum(), t.Checksum()
		key.Set(header.ProtoTCP, src, t.SrcPort(), dst, t.DstPort())
	case header.ProtoUDP:
		if len(payload) < header.UDPLen {
			return ReasonL4Header
		}
		u := header.UDP(payload)
		// A first fragment carries the length of the whole datagram;
		// its header, which is all xnat rewrites, is here whole.
		if n := int(u.Length()); n < header.UDPLen || n > len(payload) && !ip.MoreFragments() {
			return ReasonL4Header
		}
		m.kind, m.qbase = kUDP, quietBase(kUDP, 0, hl == header.IPv4MinLen)
		m.ttl, m.ipCsum, m.l4Csum = ip.TTL(), ip.Checksum(), u.Checksum()
		key.Set(header.ProtoUDP, src, u.SrcPort(), dst, u.DstPort())
	case header.ProtoICMP:
		if len(payload) < header.ICMPLen {
			return ReasonL4Header
		}
		c := header.ICMPv4(payload)
		m.icmpType, m.icmpCode = c.Type(), c.Code()
		switch {
		case header.ICMPIsQuery(m.icmpType):
			m.kind = kICMPQuery
			*key = icmpKey(src, dst, m.icmpType, c.ID())
		case header.ICMPIsError(m.icmpType):
			if r := parseEmbedded(payload, m, key); r != ReasonNone {
				return r
			}
			m.kind = kICMPError
		default:
			m.kind = kOther
			key.Set(header.ProtoICMP, src, 0, dst, 0)
		}
	default:
		m.kind = kOther
		key.Set(m.proto, src, 0, dst, 0)
	}
	return ReasonNone
}

// icmpKey is the tuple of an ICMP query: the identifier in SrcPort for a
// request, in DstPort for a reply (flowtable.Tuple's convention).
func icmpKey(src, dst uint32, typ uint8, id uint16) flowtable.Tuple {
	if header.ICMPIsRequest(typ) {
		return flowtable.MakeTuple(header.ProtoICMP, src, id, dst, 0)
	}
	return flowtable.MakeTuple(header.ProtoICMP, src, 0, dst, id)
}

// icmpQuoteMin is the least of the datagram's data past its IP header an
// ICMP error carries (RFC 792: 64 bits), enough for TCP's and UDP's ports
// and an ICMP query's identifier.
const icmpQuoteMin = 8

// parseEmbedded reads the datagram an ICMP error carries and makes the
// lookup key: the reverse of the embedded datagram's tuple, which is the
// tuple of the direction the error travels in.
func parseEmbedded(payload []byte, m *meta, key *flowtable.Tuple) Reason {
	inner := payload[header.ICMPLen:]
	if len(inner) < header.IPv4MinLen {
		return ReasonL4Header
	}
	eip := header.IPv4(inner)
	ehl := eip.HeaderLen()
	if eip.Version() != 4 || ehl < header.IPv4MinLen || len(inner) < ehl+icmpQuoteMin {
		return ReasonL4Header
	}
	m.eL3 = m.l4 + header.ICMPLen
	m.eL4 = m.eL3 + uint16(ehl)
	m.eProto = eip.Protocol()
	l4 := inner[ehl:]
	var t flowtable.Tuple
	switch m.eProto {
	case header.ProtoTCP, header.ProtoUDP:
		u := header.UDP(l4) // TCP's ports lie where UDP's do
		t = flowtable.MakeTuple(m.eProto, eip.Src(), u.SrcPort(), eip.Dst(), u.DstPort())
	case header.ProtoICMP:
		c := header.ICMPv4(l4)
		if !header.ICMPIsQuery(c.Type()) {
			return ReasonL4Header // an error about an error is never sent
		}
		m.eQuery = 2
		if header.ICMPIsRequest(c.Type()) {
			m.eQuery = 1
		}
		t = icmpKey(eip.Src(), eip.Dst(), c.Type(), c.ID())
	default:
		t = flowtable.MakeTuple(m.eProto, eip.Src(), 0, eip.Dst(), 0)
	}
	*key = t.Reverse()
	return ReasonNone
}
