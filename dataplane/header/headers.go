package header

import "encoding/binary"

// EtherType values.
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeVLAN = 0x8100 // 802.1Q
	EtherTypeQinQ = 0x88A8 // 802.1ad (the outer, service tag)
	EtherTypeIPv6 = 0x86DD
)

// Sizes.
const (
	EthernetAddrLen = 6
	EthernetLen     = 14
	VLANLen         = 4
	IPv4MinLen      = 20
	TCPMinLen       = 20
	UDPLen          = 8
	ICMPLen         = 8
)

// Ethernet II header and its fields' offsets:
//
//	 0                   6                   12      14
//	+-------------------+-------------------+-------+
//	|  destination MAC  |    source MAC     | type  |
//	+-------------------+-------------------+-------+
//
// With one 802.1Q tag, the type at 12 is EtherTypeVLAN, the tag control
// information follows at 14 and the inner EtherType at 16.
const (
	EthernetDst   = 0
	EthernetSrc   = 6
	EthernetType  = 12
	VLANTCI       = 14
	VLANInnerType = 16
)

// Ethernet is an Ethernet II header.
type Ethernet []byte

func (e Ethernet) Dst() (m [6]byte) { copy(m[:], e[EthernetDst:EthernetDst+EthernetAddrLen]); return }
func (e Ethernet) Src() (m [6]byte) { copy(m[:], e[EthernetSrc:EthernetSrc+EthernetAddrLen]); return }
func (e Ethernet) SetDst(m [6]byte) { copy(e[EthernetDst:EthernetDst+EthernetAddrLen], m[:]) }
func (e Ethernet) SetSrc(m [6]byte) { copy(e[EthernetSrc:EthernetSrc+EthernetAddrLen], m[:]) }
func (e Ethernet) Type() uint16     { return binary.BigEndian.Uint16(e[EthernetType:]) }
func (e Ethernet) SetType(t uint16) { binary.BigEndian.PutUint16(e[EthernetType:], t) }

// InnerType is the EtherType after one 802.1Q tag.
func (e Ethernet) InnerType() uint16   { return binary.BigEndian.Uint16(e[VLANInnerType:]) }
func (e Ethernet) VLANTCI() uint16     { return binary.BigEndian.Uint16(e[VLANTCI:]) }
func (e Ethernet) SetVLANTCI(v uint16) { binary.BigEndian.PutUint16(e[VLANTCI:], v) }

// IPv4 header (RFC 791 §3.1) and its fields' offsets:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version|  IHL  |Type of Service|          Total Length         |  0
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Identification        |Flags|      Fragment Offset    |  4
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Time to Live |    Protocol   |         Header Checksum       |  8
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       Source Address                          | 12
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Destination Address                        | 16
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Options (IHL > 5)          |    Padding    | 20
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	IPv4VersionIHL = 0
	IPv4TOS        = 1
	IPv4TotalLen   = 2
	IPv4ID         = 4
	IPv4FlagsFrag  = 6
	IPv4TTL        = 8
	IPv4Protocol   = 9
	IPv4Checksum   = 10
	IPv4SrcAddr    = 12
	IPv4DstAddr    = 16
)

// IPv4VersionIHL5 is the first byte of an IPv4 header without options:
// version 4, IHL 5.
const IPv4VersionIHL5 = 0x45

// IPv4 flag bits in the flags/fragment-offset word.
const (
	IPv4DontFragment  = 0x4000
	IPv4MoreFragments = 0x2000
	IPv4OffsetMask    = 0x1fff
)

// IPv4 is an IPv4 header (with its options).
type IPv4 []byte

func (ip IPv4) Version() uint8        { return ip[IPv4VersionIHL] >> 4 }
func (ip IPv4) HeaderLen() int        { return int(ip[IPv4VersionIHL]&0xf) * 4 }
func (ip IPv4) SetVersionIHL(v uint8) { ip[IPv4VersionIHL] = v }
func (ip IPv4) TOS() uint8            { return ip[IPv4TOS] }
func (ip IPv4) SetTOS(v uint8)        { ip[IPv4TOS] = v }
func (ip IPv4) TotalLen() uint16      { return binary.BigEndian.Uint16(ip[IPv4TotalLen:]) }
func (ip IPv4) SetTotalLen(n uint16)  { binary.BigEndian.PutUint16(ip[IPv4TotalLen:], n) }
func (ip IPv4) ID() uint16            { return binary.BigEndian.Uint16(ip[IPv4ID:]) }
func (ip IPv4) SetID(v uint16)        { binary.BigEndian.PutUint16(ip[IPv4ID:], v) }
func (ip IPv4) FlagsFrag() uint16     { return binary.BigEndian.Uint16(ip[IPv4FlagsFrag:]) }
func (ip IPv4) SetFlagsFrag(v uint16) { binary.BigEndian.PutUint16(ip[IPv4FlagsFrag:], v) }
func (ip IPv4) FragOffset() uint16    { return ip.FlagsFrag() & IPv4OffsetMask }
func (ip IPv4) MoreFragments() bool   { return ip.FlagsFrag()&IPv4MoreFragments != 0 }
func (ip IPv4) DontFragment() bool    { return ip.FlagsFrag()&IPv4DontFragment != 0 }
func (ip IPv4) TTL() uint8            { return ip[IPv4TTL] }
func (ip IPv4) SetTTL(v uint8)        { ip[IPv4TTL] = v }
func (ip IPv4) Protocol() uint8       { return ip[IPv4Protocol] }
func (ip IPv4) SetProtocol(p uint8)   { ip[IPv4Protocol] = p }
func (ip IPv4) Checksum() uint16      { return binary.BigEndian.Uint16(ip[IPv4Checksum:]) }
func (ip IPv4) SetChecksum(c uint16)  { binary.BigEndian.PutUint16(ip[IPv4Checksum:], c) }
func (ip IPv4) Src() uint32           { return binary.BigEndian.Uint32(ip[IPv4SrcAddr:]) }
func (ip IPv4) Dst() uint32           { return binary.BigEndian.Uint32(ip[IPv4DstAddr:]) }
func (ip IPv4) SetSrc(a uint32)       { binary.BigEndian.PutUint32(ip[IPv4SrcAddr:], a) }
func (ip IPv4) SetDst(a uint32)       { binary.BigEndian.PutUint32(ip[IPv4DstAddr:], a) }
func (ip IPv4) Payload() []byte       { return ip[ip.HeaderLen():ip.TotalLen()] }

// IsValidChecksum reports whether the header checksum verifies. A header
// without options, nearly every one, takes IsValidChecksum20.
func (ip IPv4) IsValidChecksum() bool {
	if ip[IPv4VersionIHL]&0xf == 5 {
		return IsValidChecksum20((*[IPv4MinLen]byte)(ip))
	}
	return Sum(ip[:ip.HeaderLen()], 0) == 0xffff
}

// ComputeChecksum computes the header checksum, the checksum field taken
// as zero.
func (ip IPv4) ComputeChecksum() uint16 {
	return ^Sum(ip[IPv4SrcAddr:ip.HeaderLen()], Sum(ip[:IPv4Checksum], 0))
}

// DecTTL decrements the TTL and updates the header checksum.
func (ip IPv4) DecTTL() {
	old := binary.BigEndian.Uint16(ip[IPv4TTL:]) // the TTL and the protocol
	ip[IPv4TTL]--
	ip.SetChecksum(Delta(0).Add16(old, old-0x100).Apply(ip.Checksum()))
}

// TCP flags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPUrg = 0x20
)

// TCP header (RFC 793 §3.1) and its fields' offsets:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|          Source Port          |       Destination Port        |  0
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                        Sequence Number                        |  4
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Acknowledgment Number                      |  8
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Data |       |C|E|U|A|P|R|S|F|                               |
//	| Offset|       |W|C|R|C|S|S|Y|I|            Window             | 12
//	|       |       |R|E|G|K|H|T|N|N|                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|           Checksum            |         Urgent Pointer        | 16
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Options                    |    Padding    | 20
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	TCPSrcPort    = 0
	TCPDstPort    = 2
	TCPSeqNum     = 4
	TCPAckNum     = 8
	TCPDataOffset = 12
	TCPFlags      = 13
	TCPWindow     = 14
	TCPChecksum   = 16
	TCPUrgent     = 18
)

// TCP is a TCP header.
type TCP []byte

func (t TCP) SrcPort() uint16      { return binary.BigEndian.Uint16(t[TCPSrcPort:]) }
func (t TCP) DstPort() uint16      { return binary.BigEndian.Uint16(t[TCPDstPort:]) }
func (t TCP) SetSrcPort(p uint16)  { binary.BigEndian.PutUint16(t[TCPSrcPort:], p) }
func (t TCP) SetDstPort(p uint16)  { binary.BigEndian.PutUint16(t[TCPDstPort:], p) }
func (t TCP) Seq() uint32          { return binary.BigEndian.Uint32(t[TCPSeqNum:]) }
func (t TCP) Ack() uint32          { return binary.BigEndian.Uint32(t[TCPAckNum:]) }
func (t TCP) SetSeq(v uint32)      { binary.BigEndian.PutUint32(t[TCPSeqNum:], v) }
func (t TCP) SetAck(v uint32)      { binary.BigEndian.PutUint32(t[TCPAckNum:], v) }
func (t TCP) DataOffset() int      { return int(t[TCPDataOffset]>>4) * 4 }
func (t TCP) SetDataOffset(n int)  { t[TCPDataOffset] = uint8(n/4) << 4 }
func (t TCP) Flags() uint8         { return t[TCPFlags] }
func (t TCP) SetFlags(f uint8)     { t[TCPFlags] = f }
func (t TCP) Window() uint16       { return binary.BigEndian.Uint16(t[TCPWindow:]) }
func (t TCP) SetWindow(w uint16)   { binary.BigEndian.PutUint16(t[TCPWindow:], w) }
func (t TCP) Checksum() uint16     { return binary.BigEndian.Uint16(t[TCPChecksum:]) }
func (t TCP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(t[TCPChecksum:], c) }
func (t TCP) SetUrgent(u uint16)   { binary.BigEndian.PutUint16(t[TCPUrgent:], u) }

// UDP header (RFC 768) and its fields' offsets:
//
//	 0      7 8     15 16    23 24    31
//	+--------+--------+--------+--------+
//	|   Source Port   |  Destination    |  0
//	|                 |      Port       |
//	+--------+--------+--------+--------+
//	|     Length      |    Checksum     |  4
//	+--------+--------+--------+--------+
//
// The ports lie where TCP's do.
const (
	UDPSrcPort  = 0
	UDPDstPort  = 2
	UDPLength   = 4
	UDPChecksum = 6
)

// UDP is a UDP header.
type UDP []byte

func (u UDP) SrcPort() uint16      { return binary.BigEndian.Uint16(u[UDPSrcPort:]) }
func (u UDP) DstPort() uint16      { return binary.BigEndian.Uint16(u[UDPDstPort:]) }
func (u UDP) SetSrcPort(p uint16)  { binary.BigEndian.PutUint16(u[UDPSrcPort:], p) }
func (u UDP) SetDstPort(p uint16)  { binary.BigEndian.PutUint16(u[UDPDstPort:], p) }
func (u UDP) Length() uint16       { return binary.BigEndian.Uint16(u[UDPLength:]) }
func (u UDP) SetLength(n uint16)   { binary.BigEndian.PutUint16(u[UDPLength:], n) }
func (u UDP) Checksum() uint16     { return binary.BigEndian.Uint16(u[UDPChecksum:]) }
func (u UDP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(u[UDPChecksum:], c) }

// ICMPv4 types xnat handles.
const (
	ICMPEchoReply      = 0
	ICMPDestUnreach    = 3
	ICMPSourceQuench   = 4
	ICMPRedirect       = 5
	ICMPEcho           = 8
	ICMPTimeExceeded   = 11
	ICMPParamProblem   = 12
	ICMPTimestamp      = 13
	ICMPTimestampReply = 14
)

// Destination-unreachable codes.
const (
	ICMPNetUnreach      = 0
	ICMPHostUnreach     = 1
	ICMPProtoUnreach    = 2
	ICMPPortUnreach     = 3
	ICMPFragNeeded      = 4
	ICMPNetProhibited   = 9
	ICMPHostProhibited  = 10
	ICMPAdminProhibited = 13
)

// ICMPv4 message header (RFC 792) and its fields' offsets:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Type      |     Code      |          Checksum             |  0
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|   Identifier (queries)        |   Sequence Number (queries)   |  4
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// In an error the second word is unused, but for fragmentation needed,
// whose low half is the next hop's MTU (RFC 1191); the datagram it is
// about follows at 8.
const (
	ICMPType     = 0
	ICMPCode     = 1
	ICMPChecksum = 2
	ICMPID       = 4
	ICMPSeq      = 6
	ICMPRest     = 4 // the second word, whole
)

// ICMPv4 is an ICMP header.
type ICMPv4 []byte

func (c ICMPv4) Type() uint8          { return c[ICMPType] }
func (c ICMPv4) Code() uint8          { return c[ICMPCode] }
func (c ICMPv4) SetType(t uint8)      { c[ICMPType] = t }
func (c ICMPv4) SetCode(v uint8)      { c[ICMPCode] = v }
func (c ICMPv4) Checksum() uint16     { return binary.BigEndian.Uint16(c[ICMPChecksum:]) }
func (c ICMPv4) SetChecksum(v uint16) { binary.BigEndian.PutUint16(c[ICMPChecksum:], v) }
func (c ICMPv4) ID() uint16           { return binary.BigEndian.Uint16(c[ICMPID:]) }
func (c ICMPv4) SetID(v uint16)       { binary.BigEndian.PutUint16(c[ICMPID:], v) }
func (c ICMPv4) Seq() uint16          { return binary.BigEndian.Uint16(c[ICMPSeq:]) }
func (c ICMPv4) SetRest(v uint32)     { binary.BigEndian.PutUint32(c[ICMPRest:], v) }

// ICMPIsQuery reports whether an ICMP type is a query with an identifier
// (echo, timestamp and their replies).
func ICMPIsQuery(t uint8) bool {
	return t == ICMPEcho || t == ICMPEchoReply || t == ICMPTimestamp || t == ICMPTimestampReply
}

// ICMPIsRequest reports whether a query type is a request.
func ICMPIsRequest(t uint8) bool { return t == ICMPEcho || t == ICMPTimestamp }

// ICMPIsError reports whether an ICMP type is an error carrying the
// offending datagram's header (RFC 792, RFC 1812 §4.3).
func ICMPIsError(t uint8) bool {
	return t == ICMPDestUnreach || t == ICMPTimeExceeded || t == ICMPParamProblem || t == ICMPSourceQuench || t == ICMPRedirect
}

// IP protocol numbers.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)
