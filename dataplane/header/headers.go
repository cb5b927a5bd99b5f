package header

import "encoding/binary"

// EtherType values.
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeVLAN = 0x8100
	EtherTypeIPv6 = 0x86DD
)

// Sizes.
const (
	EthernetLen = 14
	VLANLen     = 4
	IPv4MinLen  = 20
	TCPMinLen   = 20
	UDPLen      = 8
	ICMPLen     = 8
)

// Ethernet is an Ethernet II header.
type Ethernet []byte

func (e Ethernet) Dst() (m [6]byte)    { copy(m[:], e[0:6]); return }
func (e Ethernet) Src() (m [6]byte)    { copy(m[:], e[6:12]); return }
func (e Ethernet) SetDst(m [6]byte)    { copy(e[0:6], m[:]) }
func (e Ethernet) SetSrc(m [6]byte)    { copy(e[6:12], m[:]) }
func (e Ethernet) Type() uint16        { return binary.BigEndian.Uint16(e[12:14]) }
func (e Ethernet) SetType(t uint16)    { binary.BigEndian.PutUint16(e[12:14], t) }
func (e Ethernet) InnerType() uint16   { return binary.BigEndian.Uint16(e[16:18]) } // after one 802.1Q tag
func (e Ethernet) VLANTCI() uint16     { return binary.BigEndian.Uint16(e[14:16]) }
func (e Ethernet) SetVLANTCI(v uint16) { binary.BigEndian.PutUint16(e[14:16], v) }

// IPv4 flag bits in the flags/fragment-offset word.
const (
	IPv4DontFragment  = 0x4000
	IPv4MoreFragments = 0x2000
	IPv4OffsetMask    = 0x1fff
)

// IPv4 is an IPv4 header (with its options).
type IPv4 []byte

func (ip IPv4) Version() uint8        { return ip[0] >> 4 }
func (ip IPv4) HeaderLen() int        { return int(ip[0]&0xf) * 4 }
func (ip IPv4) TOS() uint8            { return ip[1] }
func (ip IPv4) TotalLen() uint16      { return binary.BigEndian.Uint16(ip[2:4]) }
func (ip IPv4) SetTotalLen(n uint16)  { binary.BigEndian.PutUint16(ip[2:4], n) }
func (ip IPv4) ID() uint16            { return binary.BigEndian.Uint16(ip[4:6]) }
func (ip IPv4) SetID(v uint16)        { binary.BigEndian.PutUint16(ip[4:6], v) }
func (ip IPv4) FlagsFrag() uint16     { return binary.BigEndian.Uint16(ip[6:8]) }
func (ip IPv4) SetFlagsFrag(v uint16) { binary.BigEndian.PutUint16(ip[6:8], v) }
func (ip IPv4) FragOffset() uint16    { return ip.FlagsFrag() & IPv4OffsetMask }
func (ip IPv4) MoreFragments() bool   { return ip.FlagsFrag()&IPv4MoreFragments != 0 }
func (ip IPv4) DontFragment() bool    { return ip.FlagsFrag()&IPv4DontFragment != 0 }
func (ip IPv4) TTL() uint8            { return ip[8] }
func (ip IPv4) SetTTL(v uint8)        { ip[8] = v }
func (ip IPv4) Protocol() uint8       { return ip[9] }
func (ip IPv4) SetProtocol(p uint8)   { ip[9] = p }
func (ip IPv4) Checksum() uint16      { return binary.BigEndian.Uint16(ip[10:12]) }
func (ip IPv4) SetChecksum(c uint16)  { binary.BigEndian.PutUint16(ip[10:12], c) }
func (ip IPv4) Src() uint32           { return binary.BigEndian.Uint32(ip[12:16]) }
func (ip IPv4) Dst() uint32           { return binary.BigEndian.Uint32(ip[16:20]) }
func (ip IPv4) SetSrc(a uint32)       { binary.BigEndian.PutUint32(ip[12:16], a) }
func (ip IPv4) SetDst(a uint32)       { binary.BigEndian.PutUint32(ip[16:20], a) }
func (ip IPv4) Payload() []byte       { return ip[ip.HeaderLen():ip.TotalLen()] }

// IsValidChecksum reports whether the header checksum verifies. A header
// without options, nearly every one, takes valid20.
func (ip IPv4) IsValidChecksum() bool {
	if ip[0]&0xf == 5 {
		return valid20((*[20]byte)(ip))
	}
	return Sum(ip[:ip.HeaderLen()], 0) == 0xffff
}

// IsValidChecksum20 is IsValidChecksum for a header the caller knows has
// no options (IHL 5), small enough to inline.
func (ip IPv4) IsValidChecksum20() bool { return valid20((*[20]byte)(ip)) }

// ComputeChecksum computes the header checksum, the checksum field taken
// as zero.
func (ip IPv4) ComputeChecksum() uint16 {
	return ^Sum(ip[12:ip.HeaderLen()], Sum(ip[:10], 0))
}

// DecTTL decrements the TTL and updates the header checksum.
func (ip IPv4) DecTTL() {
	old := binary.BigEndian.Uint16(ip[8:10])
	ip[8]--
	ip.SetChecksum(Adjust(ip.Checksum(), Delta(0).Add16(old, binary.BigEndian.Uint16(ip[8:10]))))
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

// TCP is a TCP header.
type TCP []byte

func (t TCP) SrcPort() uint16      { return binary.BigEndian.Uint16(t[0:2]) }
func (t TCP) DstPort() uint16      { return binary.BigEndian.Uint16(t[2:4]) }
func (t TCP) SetSrcPort(p uint16)  { binary.BigEndian.PutUint16(t[0:2], p) }
func (t TCP) SetDstPort(p uint16)  { binary.BigEndian.PutUint16(t[2:4], p) }
func (t TCP) Seq() uint32          { return binary.BigEndian.Uint32(t[4:8]) }
func (t TCP) Ack() uint32          { return binary.BigEndian.Uint32(t[8:12]) }
func (t TCP) SetSeq(v uint32)      { binary.BigEndian.PutUint32(t[4:8], v) }
func (t TCP) SetAck(v uint32)      { binary.BigEndian.PutUint32(t[8:12], v) }
func (t TCP) DataOffset() int      { return int(t[12]>>4) * 4 }
func (t TCP) SetDataOffset(n int)  { t[12] = uint8(n/4) << 4 }
func (t TCP) Flags() uint8         { return t[13] }
func (t TCP) SetFlags(f uint8)     { t[13] = f }
func (t TCP) Window() uint16       { return binary.BigEndian.Uint16(t[14:16]) }
func (t TCP) SetWindow(w uint16)   { binary.BigEndian.PutUint16(t[14:16], w) }
func (t TCP) Checksum() uint16     { return binary.BigEndian.Uint16(t[16:18]) }
func (t TCP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(t[16:18], c) }
func (t TCP) SetUrgent(u uint16)   { binary.BigEndian.PutUint16(t[18:20], u) }

// UDP is a UDP header.
type UDP []byte

func (u UDP) SrcPort() uint16      { return binary.BigEndian.Uint16(u[0:2]) }
func (u UDP) DstPort() uint16      { return binary.BigEndian.Uint16(u[2:4]) }
func (u UDP) SetSrcPort(p uint16)  { binary.BigEndian.PutUint16(u[0:2], p) }
func (u UDP) SetDstPort(p uint16)  { binary.BigEndian.PutUint16(u[2:4], p) }
func (u UDP) Length() uint16       { return binary.BigEndian.Uint16(u[4:6]) }
func (u UDP) SetLength(n uint16)   { binary.BigEndian.PutUint16(u[4:6], n) }
func (u UDP) Checksum() uint16     { return binary.BigEndian.Uint16(u[6:8]) }
func (u UDP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(u[6:8], c) }

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

// ICMPv4 is an ICMP header; for echo messages bytes 4–5 are the
// identifier, for fragmentation-needed bytes 6–7 the next-hop MTU.
type ICMPv4 []byte

func (c ICMPv4) Type() uint8          { return c[0] }
func (c ICMPv4) Code() uint8          { return c[1] }
func (c ICMPv4) SetType(t uint8)      { c[0] = t }
func (c ICMPv4) SetCode(v uint8)      { c[1] = v }
func (c ICMPv4) Checksum() uint16     { return binary.BigEndian.Uint16(c[2:4]) }
func (c ICMPv4) SetChecksum(v uint16) { binary.BigEndian.PutUint16(c[2:4], v) }
func (c ICMPv4) ID() uint16           { return binary.BigEndian.Uint16(c[4:6]) }
func (c ICMPv4) SetID(v uint16)       { binary.BigEndian.PutUint16(c[4:6], v) }
func (c ICMPv4) Seq() uint16          { return binary.BigEndian.Uint16(c[6:8]) }
func (c ICMPv4) SetRest(v uint32)     { binary.BigEndian.PutUint32(c[4:8], v) }

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
