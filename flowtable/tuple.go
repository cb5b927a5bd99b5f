package flowtable

import (
	"fmt"
	"math/bits"
)

// IP protocol numbers the table knows by name.
const (
	ProtoICMP uint8 = 1
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
)

// Tuple is one direction of a connection: the key the table is indexed by.
// It is packed and pointer-free: 16 bytes with no implicit padding, so
// tuples compare as two machine words and hash without reflection.
//
// Addresses are IPv4 held as the big-endian value (192.0.2.1 is
// 0xC0000201). For TCP and UDP the ports are the transport ports. For ICMP
// query messages (echo and the like) the identifier stands in for the
// port: an echo request carries its identifier in SrcPort with DstPort 0,
// an echo reply in DstPort with SrcPort 0, so that a request's tuple
// reversed is the tuple of its reply, as conntrack pairs them.
type Tuple struct {
	Src     uint32
	Dst     uint32
	SrcPort uint16
	DstPort uint16
	Proto   uint8
	pad     [3]uint8 // always zero: keeps the struct free of implicit padding
}

// MakeTuple builds a tuple.
func MakeTuple(proto uint8, src uint32, sport uint16, dst uint32, dport uint16) Tuple {
	return Tuple{Src: src, Dst: dst, SrcPort: sport, DstPort: dport, Proto: proto}
}

// Reverse returns the tuple of the opposite direction.
func (t Tuple) Reverse() Tuple {
	return Tuple{Src: t.Dst, Dst: t.Src, SrcPort: t.DstPort, DstPort: t.SrcPort, Proto: t.Proto}
}

// String formats the tuple as conntrack does ("tcp src=… dst=… sport=… dport=…").
func (t Tuple) String() string {
	return fmt.Sprintf("%s src=%s dst=%s sport=%d dport=%d", ProtoName(t.Proto), FormatAddr(t.Src), FormatAddr(t.Dst), t.SrcPort, t.DstPort)
}

// ProtoName is the protocol's conntrack name, or its number.
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	}
	return fmt.Sprintf("%d", p)
}

// FormatAddr formats an IPv4 address held as its big-endian value.
func FormatAddr(a uint32) string {
	return fmt.Sprintf("%d.%d.%d.%d", byte(a>>24), byte(a>>16), byte(a>>8), byte(a))
}

// hasher is the table's keyed hash: a wyhash-style multiply-fold over the
// tuple's two words, with a secret drawn at table creation so that an
// outside host cannot aim its tuples at one bucket.
type hasher struct {
	s0, s1, s2, s3 uint64
}

func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func (h *hasher) hash(t *Tuple) uint64 {
	w0, w1 := t.words()
	return mum(mum(w0^h.s0, w1^h.s1)^h.s2, w0^w1^h.s3)
}
