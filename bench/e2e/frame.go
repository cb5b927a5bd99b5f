package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"

	"xnat/dataplane/header"
)

// Proto is the transport of the generated flows.
type Proto uint8

const (
	// UDP datagrams.
	UDP Proto = header.ProtoUDP
	// TCP segments: ACKs for established flows, SYNs for new ones.
	TCP Proto = header.ProtoTCP
)

func (p Proto) String() string {
	switch p {
	case UDP:
		return "udp"
	case TCP:
		return "tcp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ParseProto parses "udp" or "tcp".
func ParseProto(s string) (Proto, error) {
	switch s {
	case "udp":
		return UDP, nil
	case "tcp":
		return TCP, nil
	}
	return 0, fmt.Errorf("%w: protocol %q (udp|tcp)", ErrConfig, s)
}

// ErrConfig is returned for an invalid generator, sink or scenario
// configuration.
var ErrConfig = errors.New("e2e: invalid configuration")

// Frame layout offsets (Ethernet without VLAN, IPv4 without options).
const (
	offIP      = header.EthernetLen
	offL4      = offIP + header.IPv4MinLen
	fcsLen     = 4 // counted in --size, not handed to the device
	stampLen   = 18
	stampMagic = 0x584e // "XN"

	// Offsets inside the stamp (the first bytes of the L4 payload).
	stMagic = 0
	stFlow  = 2
	stSeq   = 6
	stTime  = 10

	// MaxFrame is the largest frame handed to a device (MTU 1500).
	MaxFrame = header.EthernetLen + 1500

	// Initial TCP sequence and acknowledgement numbers of generated
	// segments; every segment of a flow repeats them.
	tcpSeq = 0x10000000
	tcpAck = 0x20000000
)

// Flow numbering: flow i has source address FlowBase+i/PortsPerAddr,
// source port FirstPort+i%PortsPerAddr and destination port
// DstPortBase+i/PortsPerAddr. Flows sharing a source port differ in
// their destination port, so one masquerading address can translate all
// of them keeping their ports.
const (
	PortsPerAddr = 64000
	FirstPort    = 1024
	DstPortBase  = 9000
	// MaxAddrs is how many inside source addresses flows use
	// (10.0.0.16 … 10.0.0.254).
	MaxAddrs = 239
	// MaxFlows is the number of distinct flow tuples.
	MaxFlows = PortsPerAddr * MaxAddrs
)

// FlowTuple returns the inside tuple of flow i for a generator whose
// first source address is base.
func FlowTuple(base uint32, i uint32) (src uint32, sport, dport uint16) {
	a := i / PortsPerAddr
	return base + a, uint16(FirstPort + i%PortsPerAddr), uint16(DstPortBase + a)
}

// flowDstPort is the destination port of flow i.
func flowDstPort(i uint32) uint16 { return uint16(DstPortBase + i/PortsPerAddr) }

// Template is a prebuilt frame for one protocol and size, with the sums
// that make a per-send checksum an adjustment of the template's.
type Template struct {
	Proto Proto
	Len   int // bytes handed to the device
	buf   [MaxFrame]byte
	// The template's own tuple and stamp, from which per-send frames
	// differ.
	src          uint32
	sport, dport uint16
	ipCsum       uint16
	l4Csum       uint16
	l4Off, stOff int
	csumOff      int // offset of the L4 checksum in the frame
	flagsOff     int // TCP flags byte, 0 for UDP
}

// Endpoints are the addresses that prebuilt frames carry.
type Endpoints struct {
	SrcMAC, DstMAC [6]byte
	SrcBase        uint32 // first inside source address
	Dst            uint32 // server address
}

// MinLen is the shortest frame carrying the stamp for proto.
func MinLen(p Proto) int {
	if p == TCP {
		return offL4 + header.TCPMinLen + stampLen
	}
	return offL4 + header.UDPLen + stampLen
}

// FrameLen is the length handed to the device for a --size of size
// bytes (the Ethernet frame with its FCS, as RFC 2544 counts it),
// raised to the protocol's minimum.
func FrameLen(p Proto, size int) int {
	n := size - fcsLen
	if m := MinLen(p); n < m {
		n = m
	}
	return n
}

// NewTemplate builds the frame of flow 0 with a zero stamp and valid
// checksums. n is the frame length without FCS.
func NewTemplate(p Proto, n int, ep Endpoints) (*Template, error) {
	if p != UDP && p != TCP {
		return nil, fmt.Errorf("%w: protocol %d", ErrConfig, p)
	}
	if n < MinLen(p) || n > MaxFrame {
		return nil, fmt.Errorf("%w: frame length %d for %v (%d..%d)", ErrConfig, n, p, MinLen(p), MaxFrame)
	}
	t := &Template{Proto: p, Len: n}
	b := t.buf[:n]
	copy(b[0:6], ep.DstMAC[:])
	copy(b[6:12], ep.SrcMAC[:])
	binary.BigEndian.PutUint16(b[12:], header.EtherTypeIPv4)
	ip := b[offIP:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(n-offIP))
	binary.BigEndian.PutUint16(ip[6:], header.IPv4DontFragment)
	ip[8] = 64
	ip[9] = uint8(p)
	t.src, t.sport, t.dport = FlowTuple(ep.SrcBase, 0)
	binary.BigEndian.PutUint32(ip[12:], t.src)
	binary.BigEndian.PutUint32(ip[16:], ep.Dst)
	t.ipCsum = header.Checksum(ip[:header.IPv4MinLen], 0)
	binary.BigEndian.PutUint16(ip[10:], t.ipCsum)
	l4 := b[offL4:]
	binary.BigEndian.PutUint16(l4[0:], t.sport)
	binary.BigEndian.PutUint16(l4[2:], t.dport)
	t.l4Off = offL4
	if p == UDP {
		binary.BigEndian.PutUint16(l4[4:], uint16(n-offL4))
		t.stOff = offL4 + header.UDPLen
		t.csumOff = offL4 + 6
	} else {
		binary.BigEndian.PutUint32(l4[4:], tcpSeq)
		binary.BigEndian.PutUint32(l4[8:], tcpAck)
		l4[12] = 5 << 4
		l4[13] = header.TCPAck
		binary.BigEndian.PutUint16(l4[14:], 65535)
		t.stOff = offL4 + header.TCPMinLen
		t.csumOff = offL4 + 16
		t.flagsOff = offL4 + 13
	}
	binary.BigEndian.PutUint16(b[t.stOff+stMagic:], stampMagic)
	// The padding after the stamp: a fixed pattern, so that the
	// payload is not all zeros.
	for i := t.stOff + stampLen; i < n; i++ {
		b[i] = byte(i)
	}
	t.l4Csum = l4Checksum(b)
	if p == UDP && t.l4Csum == 0 {
		t.l4Csum = 0xffff
	}
	binary.BigEndian.PutUint16(b[t.csumOff:], t.l4Csum)
	return t, nil
}

// Bytes returns the template frame.
func (t *Template) Bytes() []byte { return t.buf[:t.Len] }

// l4Checksum computes the TCP/UDP checksum of an IPv4 frame with the
// checksum field taken as zero.
func l4Checksum(b []byte) uint16 {
	ip := b[offIP:]
	src := binary.BigEndian.Uint32(ip[12:])
	dst := binary.BigEndian.Uint32(ip[16:])
	l4 := b[offL4:]
	ps := header.PseudoSum(src, dst, ip[9], uint16(len(l4)))
	var csumAt int
	if ip[9] == header.ProtoUDP {
		csumAt = 6
	} else {
		csumAt = 16
	}
	s := header.Sum(l4[:csumAt], ps)
	s = header.Sum(l4[csumAt+2:], s)
	return ^s
}

// Stamp is what the generator writes into each frame.
type Stamp struct {
	Flow uint32 // flow number
	Seq  uint32 // send sequence number
	Time int64  // monotonic send time, ns
}

// Write writes the template's frame for flow f with stamp s into dst
// (len(dst) ≥ t.Len): the headers are copied, the padding is not (the
// caller keeps the frame's padding equal to the template's, as Prime
// does). Checksums are adjusted from the template's (RFC 1624).
// syn makes a TCP frame a SYN instead of an ACK.
func (t *Template) Write(dst []byte, base uint32, s Stamp, syn bool) {
	hdr := t.stOff + stampLen
	copy(dst[:hdr], t.buf[:hdr])
	src, sport, dport := FlowTuple(base, s.Flow)
	ip := dst[offIP:]
	var d header.Delta
	d = d.Add32(t.src, src)
	binary.BigEndian.PutUint32(ip[12:], src)
	binary.BigEndian.PutUint16(ip[10:], d.Apply(t.ipCsum))
	// The L4 checksum covers the pseudo-header's source address too.
	d = d.Add16(t.sport, sport).Add16(t.dport, dport)
	binary.BigEndian.PutUint16(dst[t.l4Off:], sport)
	binary.BigEndian.PutUint16(dst[t.l4Off+2:], dport)
	st := dst[t.stOff:]
	binary.BigEndian.PutUint32(st[stFlow:], s.Flow)
	binary.BigEndian.PutUint32(st[stSeq:], s.Seq)
	binary.BigEndian.PutUint64(st[stTime:], uint64(s.Time))
	d = d.Add32(0, s.Flow).Add32(0, s.Seq).Add32(0, uint32(uint64(s.Time)>>32)).Add32(0, uint32(s.Time))
	if syn && t.flagsOff != 0 {
		// Flags share a word with the data offset.
		d = d.Add16(5<<12|header.TCPAck, 5<<12|header.TCPSyn)
		dst[t.flagsOff] = header.TCPSyn
		binary.BigEndian.PutUint32(dst[t.l4Off+8:], 0) // no ACK number on a SYN
		d = d.Add32(tcpAck, 0)
	}
	c := d.Apply(t.l4Csum)
	if t.Proto == UDP && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(dst[t.csumOff:], c)
}

// WriteFull does what Write does but recomputes both checksums over the
// whole frame: the peer Write is measured against (BenchmarkStamp).
func (t *Template) WriteFull(dst []byte, base uint32, s Stamp, syn bool) {
	hdr := t.stOff + stampLen
	copy(dst[:hdr], t.buf[:hdr])
	src, sport, dport := FlowTuple(base, s.Flow)
	ip := dst[offIP:]
	binary.BigEndian.PutUint32(ip[12:], src)
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], header.Checksum(ip[:header.IPv4MinLen], 0))
	binary.BigEndian.PutUint16(dst[t.l4Off:], sport)
	binary.BigEndian.PutUint16(dst[t.l4Off+2:], dport)
	st := dst[t.stOff:]
	binary.BigEndian.PutUint32(st[stFlow:], s.Flow)
	binary.BigEndian.PutUint32(st[stSeq:], s.Seq)
	binary.BigEndian.PutUint64(st[stTime:], uint64(s.Time))
	if syn && t.flagsOff != 0 {
		dst[t.flagsOff] = header.TCPSyn
		binary.BigEndian.PutUint32(dst[t.l4Off+8:], 0)
	}
	c := l4Checksum(dst[:t.Len])
	if t.Proto == UDP && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(dst[t.csumOff:], c)
}

// Prime copies the whole template (with its padding) into dst, so that
// later Writes need only touch the headers and the stamp.
func (t *Template) Prime(dst []byte) { copy(dst[:t.Len], t.buf[:t.Len]) }

// Verdict is what Check found in a received frame.
type Verdict uint8

// Check verdicts.
const (
	OK Verdict = iota
	BadShort
	BadEther
	BadIPHeader
	BadIPChecksum
	BadProto
	BadL4Checksum
	BadStamp
	BadSource // translated source address or port not the expected ones
	BadDest
	numVerdicts
)

var verdictNames = [numVerdicts]string{"ok", "short", "ethertype", "ip_header", "ip_checksum", "protocol", "l4_checksum", "stamp", "source", "destination"}

func (v Verdict) String() string {
	if v < numVerdicts {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Expect is what a sink accepts: the translated source address and port
// range, and the destination.
type Expect struct {
	Src            uint32 // 0: any
	PortLo, PortHi uint16 // source port range, inclusive; 0,0: any
	Dst            uint32 // 0: any
	Proto          Proto
	// Reply: the frames are replies coming back to the generator; the
	// destination must be the flow's own inside address and port
	// (SrcBase is the generator's first source address) and the source
	// port the server's.
	Reply   bool
	SrcBase uint32
}

// Parsed are the fields of a checked frame the sink needs.
type Parsed struct {
	Stamp        Stamp
	Src, Dst     uint32
	Sport, Dport uint16
	Flags        uint8 // TCP flags
}

// Check verifies a frame: Ethernet/IPv4 without options, the IPv4 header
// checksum, the protocol, the L4 checksum over the pseudo-header, the
// stamp, and the addresses and ports against e. It allocates nothing.
func Check(b []byte, e *Expect, p *Parsed) Verdict {
	if len(b) < offL4+header.UDPLen {
		return BadShort
	}
	if binary.BigEndian.Uint16(b[12:]) != header.EtherTypeIPv4 {
		return BadEther
	}
	ip := b[offIP:]
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	if ip[0] != 0x45 || tot < header.IPv4MinLen || offIP+tot > len(b) {
		return BadIPHeader
	}
	if header.Sum(ip[:header.IPv4MinLen], 0) != 0xffff {
		return BadIPChecksum
	}
	b = b[:offIP+tot]
	proto := ip[9]
	if proto != uint8(e.Proto) {
		return BadProto
	}
	l4 := b[offL4:]
	stOff := header.UDPLen
	if proto == header.ProtoTCP {
		stOff = header.TCPMinLen
		if len(l4) < stOff || int(l4[12]>>4)*4 != header.TCPMinLen {
			return BadShort
		}
		p.Flags = l4[13]
	}
	if len(l4) < stOff+stampLen {
		return BadShort
	}
	p.Src = binary.BigEndian.Uint32(ip[12:])
	p.Dst = binary.BigEndian.Uint32(ip[16:])
	csumAt := 6
	if proto == header.ProtoTCP {
		csumAt = 16
	}
	if !(proto == header.ProtoUDP && binary.BigEndian.Uint16(l4[csumAt:]) == 0) {
		ps := header.PseudoSum(p.Src, p.Dst, proto, uint16(len(l4)))
		if header.Sum(l4, ps) != 0xffff {
			return BadL4Checksum
		}
	}
	st := l4[stOff:]
	if binary.BigEndian.Uint16(st[stMagic:]) != stampMagic {
		return BadStamp
	}
	p.Stamp.Flow = binary.BigEndian.Uint32(st[stFlow:])
	p.Stamp.Seq = binary.BigEndian.Uint32(st[stSeq:])
	p.Stamp.Time = int64(binary.BigEndian.Uint64(st[stTime:]))
	p.Sport = binary.BigEndian.Uint16(l4[0:])
	p.Dport = binary.BigEndian.Uint16(l4[2:])
	if e.Reply {
		src, sport, dport := FlowTuple(e.SrcBase, p.Stamp.Flow)
		if p.Dst != src || p.Dport != sport {
			return BadDest
		}
		if p.Sport != dport || (e.Src != 0 && p.Src != e.Src) {
			return BadSource
		}
		return OK
	}
	if e.Src != 0 && p.Src != e.Src {
		return BadSource
	}
	if e.PortHi != 0 && (p.Sport < e.PortLo || p.Sport > e.PortHi) {
		return BadSource
	}
	if e.Dst != 0 && p.Dst != e.Dst {
		return BadDest
	}
	if p.Dport != flowDstPort(p.Stamp.Flow) {
		return BadDest
	}
	return OK
}

// Reflect turns a checked frame around in place: MACs, addresses and
// ports swapped (which leaves every checksum unchanged), and for TCP the
// sequence and acknowledgement numbers swapped with the acknowledgement
// advanced past the data (SYN+ACK for a SYN). The L4 checksum is
// adjusted incrementally.
func Reflect(b []byte) {
	var m [6]byte
	copy(m[:], b[0:6])
	copy(b[0:6], b[6:12])
	copy(b[6:12], m[:])
	ip := b[offIP:]
	var a [4]byte
	copy(a[:], ip[12:16])
	copy(ip[12:16], ip[16:20])
	copy(ip[16:20], a[:])
	l4 := ip[header.IPv4MinLen:]
	var pp [2]byte
	copy(pp[:], l4[0:2])
	copy(l4[0:2], l4[2:4])
	copy(l4[2:4], pp[:])
	if ip[9] != header.ProtoTCP {
		return
	}
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	dataLen := uint32(tot - header.IPv4MinLen - header.TCPMinLen)
	seq := binary.BigEndian.Uint32(l4[4:])
	ack := binary.BigEndian.Uint32(l4[8:])
	oldFlags := binary.BigEndian.Uint16(l4[12:])
	flags := uint8(oldFlags)
	nseq, nack := ack, seq+dataLen
	nflags := uint8(header.TCPAck)
	if flags&header.TCPSyn != 0 {
		nseq, nack = tcpAck, seq+dataLen+1
		nflags = header.TCPSyn | header.TCPAck
	}
	newFlags := oldFlags&0xff00 | uint16(nflags)
	var d header.Delta
	d = d.Add32(seq, nseq).Add32(ack, nack).Add16(oldFlags, newFlags)
	binary.BigEndian.PutUint32(l4[4:], nseq)
	binary.BigEndian.PutUint32(l4[8:], nack)
	binary.BigEndian.PutUint16(l4[12:], newFlags)
	binary.BigEndian.PutUint16(l4[16:], d.Apply(binary.BigEndian.Uint16(l4[16:])))
}
