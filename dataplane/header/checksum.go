package header

import (
	"encoding/binary"
	"math/bits"
)

// Sum returns the 16-bit one's-complement sum of b added to initial (not
// complemented; RFC 1071). An odd final byte is padded with zero.
func Sum(b []byte, initial uint16) uint16 {
	acc := uint64(initial)
	var carry uint64
	for len(b) >= 32 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), 0)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[8:16]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[16:24]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[24:32]), carry)
		acc += carry
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), 0)
		acc += carry
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b)), 0)
		acc += carry
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), 0)
		acc += carry
		b = b[2:]
	}
	if len(b) == 1 {
		acc, carry = bits.Add64(acc, uint64(b[0])<<8, 0)
		acc += carry
	}
	return fold64(acc)
}

// valid20 reports whether a 20-byte IPv4 header's checksum verifies: its
// one's-complement sum (RFC 1071) is 0xffff. The header is read as five
// words in the machine's byte order, with no byte reversal: the sum is
// independent of byte order but for a swap of its two bytes (§2.B), which
// leaves 0xffff as it is. A 64-bit sum of the words is congruent modulo
// 0xffff to the folded sum, and folding a sum other than zero never gives
// zero, so the folded sum is 0xffff exactly when the 64-bit sum is a
// non-zero multiple of 0xffff (a multiply and a shift, not four folds).
func valid20(b *[20]byte) bool {
	ne := binary.NativeEndian
	acc := uint64(ne.Uint32(b[0:])) + uint64(ne.Uint32(b[4:])) + uint64(ne.Uint32(b[8:])) +
		uint64(ne.Uint32(b[12:])) + uint64(ne.Uint32(b[16:]))
	return acc != 0 && acc%0xffff == 0
}

// Valid20 is valid20 for callers outside the package that hold a header
// without options as an array (the parser's fast path).
func Valid20(b *[20]byte) bool { return valid20(b) }

// fold64 folds a 64-bit sum to 16 bits with end-around carries. Adding a
// word to itself rotated by half its width leaves in the high half the
// sum of the two halves with its carry brought around: for acc = h·2³² + l,
// acc + rotl(acc, 32) has (h + l + carry out of l + h) mod 2³² on top. The
// same with 16 takes 32 bits to 16. The result is congruent to acc modulo
// 0xffff, and zero only for acc zero.
func fold64(acc uint64) uint16 {
	s := uint32((acc + bits.RotateLeft64(acc, 32)) >> 32)
	return uint16((s + bits.RotateLeft32(s, 16)) >> 16)
}

// Checksum is the Internet checksum of b: the complement of its sum.
func Checksum(b []byte, initial uint16) uint16 { return ^Sum(b, initial) }

// Combine adds two one's-complement sums.
func Combine(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s + s>>16)
}

// PseudoSum is the sum of the TCP/UDP pseudo-header.
func PseudoSum(src, dst uint32, proto uint8, length uint16) uint16 {
	acc := uint64(src>>16) + uint64(src&0xffff) + uint64(dst>>16) + uint64(dst&0xffff) + uint64(proto) + uint64(length)
	return fold64(acc)
}

// Delta accumulates the changes to checksummed 16-bit words, for Adjust:
// RFC 1624's HC' = ~(~HC + ~m + m') summed over every changed word m.
type Delta uint32

// Add16 records that a 16-bit word changed from old to new.
func (d Delta) Add16(old, new uint16) Delta {
	return d + Delta(^old) + Delta(new)
}

// Add32 records that a 32-bit field changed from old to new.
func (d Delta) Add32(old, new uint32) Delta {
	return d.Add16(uint16(old>>16), uint16(new>>16)).Add16(uint16(old), uint16(new))
}

// Adjust applies the recorded changes to a checksum field value.
func Adjust(csum uint16, d Delta) uint16 {
	return ^fold64(uint64(^csum) + uint64(d))
}

// RewriteNAT is NAT's rewrite of a TCP or UDP packet: in the frame whose
// IPv4 header starts at l3 and transport header at l4, it sets the source
// and destination addresses to src and dst, the ports to ports>>16
// (source) and ports&0xffff (destination), decrements the TTL, and
// updates the header checksum and the TCP or UDP checksum incrementally
// (RewriteNATFields). The caller has checked that the frame holds an IPv4
// header at l3 (20 bytes or more: options are left as they are) whose TTL
// exceeds one, and a whole TCP or UDP header at l4.
func RewriteNAT(frame []byte, l3, l4 int, udp bool, src, dst, ports uint32) {
	csum := l4 + 16
	if udp {
		csum = l4 + 6
	}
	RewriteNATFields((*[20]byte)(frame[l3:]), (*[4]byte)(frame[l4:]), (*[2]byte)(frame[csum:]), udp, src, dst, ports)
}

// RewriteNATFields is RewriteNAT on the fields it changes, which the
// established path finds at fixed offsets with no bounds to check: ip is
// the IPv4 header's first 20 bytes, l4 the transport header's ports and
// csum its checksum field. The checksums are updated by RFC 1624 eqn. 3;
// with udp, a checksum of zero means none and stays zero, and a computed
// zero is sent as 0xffff (RFC 768). It reads the old values and hands
// them to parts small enough to inline (AddrsDelta, PortsDelta,
// PutIPv4NAT, PutPorts, PutL4Checksum), which the established path calls
// with the values its parser read, writing the header without reading it
// again.
func RewriteNATFields(ip *[20]byte, l4 *[4]byte, csum *[2]byte, udp bool, src, dst, ports uint32) {
	be := binary.BigEndian
	dA := AddrsDelta(be.Uint32(ip[12:]), be.Uint32(ip[16:]), src, dst)
	dP := PortsDelta(be.Uint32(l4[:]), ports)
	PutIPv4NAT(ip, src, dst, ip[8], be.Uint16(ip[10:]), dA)
	PutPorts(l4, ports)
	PutL4Checksum(csum, udp, be.Uint16(csum[:]), dA+dP)
}

// AddrsDelta is the change of an IPv4 header's addresses from oldSrc and
// oldDst to src and dst, for the header checksum and the transport
// checksum's pseudo-header.
//
// A change is the sum of the new words and of the old ones complemented,
// taken on whole 32-bit words and folded once, by the checksum update the
// change goes to: the one's-complement sum of 16-bit words is congruent to
// that of 32-bit words modulo 0xffff (RFC 1071 §2.A, §2.B), and a word
// complemented is congruent to its negation.
func AddrsDelta(oldSrc, oldDst, src, dst uint32) uint64 {
	return uint64(^oldSrc) + uint64(^oldDst) + uint64(src) + uint64(dst)
}

// PortsDelta is the change of a TCP or UDP header's ports (source << 16 |
// destination) from old to ports, as AddrsDelta.
func PortsDelta(old, ports uint32) uint64 {
	return uint64(^old) + uint64(ports)
}

// ttlDecrement is the checksum change of decrementing a TTL above zero:
// the word it shares with the protocol goes from m to m - 0x100, and
// ^m + (m - 0x100) is 0xfeff whatever m is.
const ttlDecrement = 0xfeff

// PutIPv4NAT writes an IPv4 header's addresses (src and dst), its TTL
// (ttl, the TTL it had, decremented) and its checksum: csum, the checksum
// it had, updated for dA (AddrsDelta) and the TTL's decrement. Nothing is
// read from the header: the old values come from the caller, who has
// read them already.
func PutIPv4NAT(ip *[20]byte, src, dst uint32, ttl uint8, csum uint16, dA uint64) {
	be := binary.BigEndian
	be.PutUint32(ip[12:], src)
	be.PutUint32(ip[16:], dst)
	ip[8] = ttl - 1
	be.PutUint16(ip[10:], ^fold64(uint64(^csum)+dA+ttlDecrement))
}

// PutPorts sets a TCP or UDP header's ports to ports>>16 (source) and
// ports&0xffff (destination).
func PutPorts(l4 *[4]byte, ports uint32) {
	binary.BigEndian.PutUint32(l4[:], ports)
}

// PutL4Checksum writes a TCP or UDP checksum field: c, its value before,
// updated for d (the changes of AddrsDelta and PortsDelta). A UDP checksum
// of zero means none and stays zero, and a computed zero is sent as 0xffff
// (RFC 768).
func PutL4Checksum(csum *[2]byte, udp bool, c uint16, d uint64) {
	if udp && c == 0 {
		return
	}
	c = ^fold64(uint64(^c) + d)
	if udp && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(csum[:], c)
}
