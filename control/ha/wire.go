package ha

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the protocol version conntrackd speaks (the header's high
// nibble of its first byte).
const Version = 1

// MsgType is a message's type (the low nibble of the header's first byte).
type MsgType uint8

// The message types. Expectation messages are recognised and counted, not
// applied: xnat has no expectations.
const (
	TypeNew    MsgType = 0 // a new connection
	TypeUpdate MsgType = 1 // a connection changed (or is sent again)
	TypeDelete MsgType = 2 // a connection is gone
	TypeExpNew MsgType = 3
	TypeExpUpd MsgType = 4
	TypeExpDel MsgType = 5
	TypeCtl    MsgType = 10 // a control message: ACK, NACK, RESYNC, ALIVE
)

func (t MsgType) String() string {
	switch t {
	case TypeNew:
		return "new"
	case TypeUpdate:
		return "update"
	case TypeDelete:
		return "delete"
	case TypeExpNew, TypeExpUpd, TypeExpDel:
		return fmt.Sprintf("expectation(%d)", uint8(t))
	case TypeCtl:
		return "control"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Flags are the header's flag bits.
type Flags uint8

// The flags.
const (
	FlagResync    Flags = 1 << 1 // control: send me your whole table
	FlagNack      Flags = 1 << 2 // control: send From..To again
	FlagAck       Flags = 1 << 3 // control: From..To received
	FlagAlive     Flags = 1 << 4 // control: keepalive
	FlagHello     Flags = 1 << 5 // any message: I (re)started, track my sequence afresh
	FlagHelloBack Flags = 1 << 6 // any message: your hello was seen
)

// HeaderLen is the length of a message header; AckLen that of an ACK,
// NACK or RESYNC message (the header and a From, To sequence range).
// Messages and attributes are aligned to 4 bytes.
const (
	HeaderLen = 8
	AckLen    = 16
	align     = 4
)

// Header is a message's header. From and To are set for ACK, NACK and
// RESYNC messages only.
type Header struct {
	Type     MsgType
	Flags    Flags
	Len      uint16 // the whole message's length, header included
	Seq      uint32
	From, To uint32
}

// IsData reports a connection message: a state type with no flags other
// than the hello handshake's.
func (h *Header) IsData() bool {
	return h.Type <= TypeExpDel && h.Flags&^(FlagHello|FlagHelloBack) == 0
}

// IsRange reports a control message that carries a sequence range.
func (h *Header) IsRange() bool {
	return h.Type == TypeCtl && h.Flags&(FlagAck|FlagNack|FlagResync) != 0
}

// Parse errors. Every error Session reports wraps one of them.
var (
	ErrShort       = errors.New("message shorter than its header")
	ErrLength      = errors.New("bad message length")
	ErrVersion     = errors.New("unsupported protocol version")
	ErrType        = errors.New("unknown message type or flags")
	ErrRange       = errors.New("control message range ends before it starts")
	ErrAttr        = errors.New("malformed attribute")
	ErrMissing     = errors.New("connection message lacks its tuple or protocol")
	ErrUnsupported = errors.New("unsupported connection (IPv6 or expectation)")
)

// ParseHeader reads the header of the message at the start of b, which
// holds the rest of the datagram, and checks that the message fits in b.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderLen {
		return h, fmt.Errorf("%w: %d bytes left", ErrShort, len(b))
	}
	if v := b[0] >> 4; v != Version {
		return h, fmt.Errorf("%w: %d", ErrVersion, v)
	}
	h.Type = MsgType(b[0] & 0xf)
	h.Flags = Flags(b[1])
	h.Len = binary.BigEndian.Uint16(b[2:])
	h.Seq = binary.BigEndian.Uint32(b[4:])
	min := HeaderLen
	if h.IsRange() {
		min = AckLen
	}
	if int(h.Len) < min || int(h.Len) > len(b) {
		return h, fmt.Errorf("%w: %d (need %d..%d)", ErrLength, h.Len, min, len(b))
	}
	if h.IsRange() {
		h.From = binary.BigEndian.Uint32(b[8:])
		h.To = binary.BigEndian.Uint32(b[12:])
	}
	return h, nil
}

// appendHeader appends a header; for data messages Len is patched later.
func appendHeader(b []byte, h *Header) []byte {
	b = append(b, Version<<4|byte(h.Type)&0xf, byte(h.Flags))
	b = binary.BigEndian.AppendUint16(b, h.Len)
	b = binary.BigEndian.AppendUint32(b, h.Seq)
	if h.IsRange() {
		b = binary.BigEndian.AppendUint32(b, h.From)
		b = binary.BigEndian.AppendUint32(b, h.To)
	}
	return b
}

// AppendControl appends a control message (ACK, NACK, RESYNC: AckLen
// bytes with the range; ALIVE: HeaderLen bytes).
func AppendControl(b []byte, flags Flags, seq, from, to uint32) []byte {
	h := Header{Type: TypeCtl, Flags: flags, Seq: seq, From: from, To: to, Len: HeaderLen}
	if h.IsRange() {
		h.Len = AckLen
	}
	return appendHeader(b, &h)
}

// Attribute numbers (conntrackd's NTA_*).
const (
	attrIPv4         = 0  // orig src, dst (network order)
	attrIPv6         = 1  // orig src, dst
	attrL4Proto      = 2  // u8
	attrPort         = 3  // orig sport, dport (network order)
	attrTCPState     = 4  // u8
	attrStatus       = 5  // u32
	attrTimeout      = 6  // u32 seconds
	attrMark         = 7  // u32
	attrMasterIPv4   = 8  // expectation master
	attrMasterIPv6   = 9  //
	attrMasterProto  = 10 //
	attrMasterPort   = 11 //
	attrSNATIPv4     = 12 // u32: the reply's destination address
	attrDNATIPv4     = 13 // u32: the reply's source address
	attrSPATPort     = 14 // u16 (sender's byte order, see below): the reply's destination port
	attrDPATPort     = 15 // u16: the reply's source port
	attrNATSeqAdj    = 16 //
	attrSCTPState    = 17 //
	attrSCTPVtagOrig = 18 //
	attrSCTPVtagRepl = 19 //
	attrDCCPState    = 20 //
	attrDCCPRole     = 21 //
	attrICMPType     = 22 // u8
	attrICMPCode     = 23 // u8
	attrICMPID       = 24 // u16, like the NAT ports
	attrWScaleOrig   = 25 //
	attrWScaleRepl   = 26 //
	attrHelperName   = 27 // string
	attrLabels       = 28 // u32 array
	attrSNATIPv6     = 29 //
	attrDNATIPv6     = 30 //
	attrSynproxy     = 31 // three u32: isn, its, tsoff
	numAttrs         = 32
)

// attrSize is each attribute's exact payload size; -1 is variable.
var attrSize = [numAttrs]int{
	attrIPv4: 8, attrIPv6: 32, attrL4Proto: 1, attrPort: 4, attrTCPState: 1,
	attrStatus: 4, attrTimeout: 4, attrMark: 4,
	attrMasterIPv4: 8, attrMasterIPv6: 32, attrMasterProto: 1, attrMasterPort: 4,
	attrSNATIPv4: 4, attrDNATIPv4: 4, attrSPATPort: 2, attrDPATPort: 2,
	attrNATSeqAdj: 24, attrSCTPState: 1, attrSCTPVtagOrig: 4, attrSCTPVtagRepl: 4,
	attrDCCPState: 1, attrDCCPRole: 1, attrICMPType: 1, attrICMPCode: 1, attrICMPID: 2,
	attrWScaleOrig: 1, attrWScaleRepl: 1, attrHelperName: -1, attrLabels: -1,
	attrSNATIPv6: 16, attrDNATIPv6: 16, attrSynproxy: 12,
}

// The NAT port and ICMP identifier attributes are 16-bit values that
// conntrackd byte-swaps once more than the tuple's ports: every
// little-endian conntrackd (x86, arm64) puts them on the wire least
// significant byte first, while the tuple, addresses, status, timeout and
// mark are in network order. xnat writes and reads them as those peers do.
var natPortOrder = binary.LittleEndian

// Kernel status bits (IPS_*) that the protocol carries.
const (
	IPSExpected   uint32 = 1 << 0
	IPSSeenReply  uint32 = 1 << 1
	IPSAssured    uint32 = 1 << 2
	IPSConfirmed  uint32 = 1 << 3
	IPSSrcNAT     uint32 = 1 << 4
	IPSDstNAT     uint32 = 1 << 5
	IPSSrcNATDone uint32 = 1 << 7
	IPSDstNATDone uint32 = 1 << 8
)

// Kernel TCP states (TCP_CONNTRACK_*): the same numbering as flowtable's
// TCP states (9 is SYN_SENT2, which Linux calls LISTEN in this enum's
// slot).
const (
	tcpNone    = 0
	tcpMax     = 9
	protoICMP  = 1
	protoTCP   = 6
	protoUDP   = 17
	icmpEcho   = 8
	icmpTstamp = 13
	icmpInfo   = 15
	icmpMask   = 17
)

// Has records which optional fields of a Conn are present.
type Has uint16

// The optional fields.
const (
	HasTCPState Has = 1 << iota
	HasTimeout
	HasMark
	HasSNAT
	HasDNAT
	HasSPAT
	HasDPAT
	HasICMP
)

func (h Has) has(f Has) bool { return h&f == f }

// Conn is one connection as the protocol describes it: the original
// direction's tuple and the translation, from which the reply tuple
// follows.
type Conn struct {
	Proto            uint8
	Src, Dst         uint32 // original direction, big-endian values (192.0.2.1 is 0xC0000201)
	SrcPort, DstPort uint16 // TCP/UDP ports; ICMP: SrcPort is the identifier
	Status           uint32 // kernel IPS_* bits
	TCPState         uint8  // TCP_CONNTRACK_*, with HasTCPState
	Timeout          uint32 // seconds left, with HasTimeout
	Mark             uint32
	SNAT, DNAT       uint32 // the reply's destination and source address, with HasSNAT, HasDNAT
	SPAT, DPAT       uint16 // the reply's destination and source port, with HasSPAT, HasDPAT
	ICMPType         uint8
	ICMPCode         uint8
	Has              Has
}

// ReplyTuple returns the reply direction's addresses and ports: the
// original reversed, with the translations applied.
func (c *Conn) ReplyTuple() (src, dst uint32, sport, dport uint16) {
	src, dst, sport, dport = c.Dst, c.Src, c.DstPort, c.SrcPort
	if c.Proto == protoICMP {
		sport, dport = 0, c.SrcPort
	}
	if c.Has&HasSNAT != 0 {
		dst = c.SNAT
	}
	if c.Has&HasDNAT != 0 {
		src = c.DNAT
	}
	if c.Has&HasSPAT != 0 {
		dport = c.SPAT
	}
	if c.Has&HasDPAT != 0 {
		sport = c.DPAT
	}
	return
}

// appendAttr appends one attribute: its header and payload, padded.
func appendAttr(b []byte, typ uint16, payload ...byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(4+len(payload)))
	b = binary.BigEndian.AppendUint16(b, typ)
	b = append(b, payload...)
	for len(b)%align != 0 {
		b = append(b, 0)
	}
	return b
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// AppendConn appends a connection message of type t with sequence number
// seq and flags (the hello handshake's only) to b. A delete carries the
// tuple only.
func AppendConn(b []byte, t MsgType, flags Flags, seq uint32, c *Conn) []byte {
	start := len(b)
	b = appendHeader(b, &Header{Type: t, Flags: flags, Seq: seq})
	var a [8]byte
	binary.BigEndian.PutUint32(a[0:], c.Src)
	binary.BigEndian.PutUint32(a[4:], c.Dst)
	b = appendAttr(b, attrIPv4, a[:]...)
	if t != TypeDelete {
		b = appendAttr(b, attrStatus, be32(c.Status)...)
	}
	b = appendAttr(b, attrL4Proto, c.Proto)
	switch c.Proto {
	case protoTCP, protoUDP:
		binary.BigEndian.PutUint16(a[0:], c.SrcPort)
		binary.BigEndian.PutUint16(a[2:], c.DstPort)
		b = appendAttr(b, attrPort, a[:4]...)
		if c.Proto == protoTCP && c.Has&HasTCPState != 0 && t != TypeDelete {
			b = appendAttr(b, attrTCPState, c.TCPState)
		}
	case protoICMP:
		b = appendAttr(b, attrICMPType, c.ICMPType)
		b = appendAttr(b, attrICMPCode, c.ICMPCode)
		natPortOrder.PutUint16(a[:], c.SrcPort)
		b = appendAttr(b, attrICMPID, a[:2]...)
	}
	if t != TypeDelete {
		if c.Has&HasTimeout != 0 {
			b = appendAttr(b, attrTimeout, be32(c.Timeout)...)
		}
		if c.Has&HasMark != 0 {
			b = appendAttr(b, attrMark, be32(c.Mark)...)
		}
		if c.Has&HasSNAT != 0 {
			b = appendAttr(b, attrSNATIPv4, be32(c.SNAT)...)
		}
		if c.Has&HasDNAT != 0 {
			b = appendAttr(b, attrDNATIPv4, be32(c.DNAT)...)
		}
		if c.Has&HasSPAT != 0 {
			natPortOrder.PutUint16(a[:], c.SPAT)
			b = appendAttr(b, attrSPATPort, a[:2]...)
		}
		if c.Has&HasDPAT != 0 {
			natPortOrder.PutUint16(a[:], c.DPAT)
			b = appendAttr(b, attrDPATPort, a[:2]...)
		}
	}
	binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	return b
}

// ParseConn decodes the attributes of a connection message (the message
// after its header). Attributes xnat does not use (window scales, helper
// names, labels, synproxy, SCTP and DCCP state) are checked and skipped,
// attributes newer than these are skipped; IPv6 and expectation
// attributes make the connection unsupported.
func ParseConn(body []byte) (Conn, error) {
	var c Conn
	var have struct{ ipv4, proto, port bool }
	for off := 0; off < len(body); {
		if len(body)-off < 4 {
			return c, fmt.Errorf("%w: %d trailing bytes", ErrAttr, len(body)-off)
		}
		alen := int(binary.BigEndian.Uint16(body[off:]))
		typ := binary.BigEndian.Uint16(body[off+2:])
		if alen < 4 || alen > len(body)-off {
			return c, fmt.Errorf("%w: attribute %d length %d at offset %d", ErrAttr, typ, alen, off)
		}
		p := body[off+4 : off+alen]
		if int(typ) < numAttrs {
			if sz := attrSize[typ]; sz >= 0 && len(p) != sz {
				return c, fmt.Errorf("%w: attribute %d has %d bytes, want %d", ErrAttr, typ, len(p), sz)
			}
		}
		switch typ {
		case attrIPv4:
			c.Src = binary.BigEndian.Uint32(p)
			c.Dst = binary.BigEndian.Uint32(p[4:])
			have.ipv4 = true
		case attrIPv6, attrSNATIPv6, attrDNATIPv6, attrMasterIPv4, attrMasterIPv6, attrMasterProto, attrMasterPort:
			return c, fmt.Errorf("%w: attribute %d", ErrUnsupported, typ)
		case attrL4Proto:
			c.Proto = p[0]
			have.proto = true
		case attrPort:
			c.SrcPort = binary.BigEndian.Uint16(p)
			c.DstPort = binary.BigEndian.Uint16(p[2:])
			have.port = true
		case attrTCPState:
			if p[0] > tcpMax {
				return c, fmt.Errorf("%w: TCP state %d", ErrAttr, p[0])
			}
			c.TCPState = p[0]
			c.Has |= HasTCPState
		case attrStatus:
			c.Status = binary.BigEndian.Uint32(p)
		case attrTimeout:
			c.Timeout = binary.BigEndian.Uint32(p)
			c.Has |= HasTimeout
		case attrMark:
			c.Mark = binary.BigEndian.Uint32(p)
			c.Has |= HasMark
		case attrSNATIPv4:
			c.SNAT = binary.BigEndian.Uint32(p)
			c.Has |= HasSNAT
		case attrDNATIPv4:
			c.DNAT = binary.BigEndian.Uint32(p)
			c.Has |= HasDNAT
		case attrSPATPort:
			c.SPAT = natPortOrder.Uint16(p)
			c.Has |= HasSPAT
		case attrDPATPort:
			c.DPAT = natPortOrder.Uint16(p)
			c.Has |= HasDPAT
		case attrICMPType:
			c.ICMPType = p[0]
			c.Has |= HasICMP
		case attrICMPCode:
			c.ICMPCode = p[0]
		case attrICMPID:
			c.SrcPort = natPortOrder.Uint16(p)
			have.port = true
		}
		off += (alen + align - 1) &^ (align - 1)
		if off > len(body) {
			// The last attribute's padding may be cut off; nothing follows it.
			break
		}
	}
	if !have.ipv4 || !have.proto {
		return c, ErrMissing
	}
	// Keep only what the protocol has: another protocol's fields are
	// ignored, as the kernel ignores them.
	if c.Proto != protoTCP {
		c.TCPState, c.Has = 0, c.Has&^HasTCPState
	}
	if c.Proto != protoICMP {
		c.ICMPType, c.ICMPCode, c.Has = 0, 0, c.Has&^HasICMP
	}
	switch c.Proto {
	case protoTCP, protoUDP:
	case protoICMP:
		c.DstPort = 0
	default:
		c.SrcPort, c.DstPort = 0, 0
	}
	switch c.Proto {
	case protoTCP, protoUDP:
		if !have.port {
			return c, fmt.Errorf("%w: %s connection without ports", ErrMissing, protoName(c.Proto))
		}
	case protoICMP:
		if !have.port || c.Has&HasICMP == 0 {
			return c, fmt.Errorf("%w: ICMP connection without type or identifier", ErrMissing)
		}
	}
	return c, nil
}

func protoName(p uint8) string {
	switch p {
	case protoTCP:
		return "tcp"
	case protoUDP:
		return "udp"
	case protoICMP:
		return "icmp"
	}
	return fmt.Sprintf("proto %d", p)
}
