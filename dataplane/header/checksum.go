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
func valid20(b []byte) bool {
	_ = b[19]
	acc := uint64(binary.NativeEndian.Uint32(b[0:])) + uint64(binary.NativeEndian.Uint32(b[4:])) +
		uint64(binary.NativeEndian.Uint32(b[8:])) + uint64(binary.NativeEndian.Uint32(b[12:])) +
		uint64(binary.NativeEndian.Uint32(b[16:]))
	return acc != 0 && acc%0xffff == 0
}

func fold64(acc uint64) uint16 {
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>16 + acc&0xffff
	acc = acc>>16 + acc&0xffff
	return uint16(acc)
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
	s := uint64(^csum) + uint64(d) // below 2^33: three folds suffice
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	return ^uint16(s)
}

// RewriteNAT is NAT's rewrite of a TCP or UDP packet, written for the
// established path: it sets the IPv4 source and destination to src and
// dst, the transport ports (the first two words of l4) to sport and dport,
// decrements the TTL, and updates the header checksum and the transport
// checksum at l4[csumOff:] incrementally (RFC 1624 eqn. 3). With udp, a
// transport checksum of zero means none and stays zero, and a computed
// zero is sent as 0xffff (RFC 768).
//
// The sums are taken in the machine's byte order, on whole 32-bit words,
// and folded once per checksum: the one's-complement sum of 16-bit words
// is congruent to that of 32-bit words modulo 0xffff, and independent of
// byte order but for a swap of its bytes (RFC 1071 §2.A, §2.B). Each new
// value is written big-endian and read back in the machine's order, which
// costs a load and needs no assumption about that order.
//
// The caller has checked that ip holds a 20-byte header whose TTL exceeds
// one and that len(l4) >= csumOff+2.
func RewriteNAT(ip IPv4, l4 []byte, csumOff int, udp bool, src, dst uint32, sport, dport uint16) {
	ne := binary.NativeEndian
	_ = ip[19]
	_ = l4[csumOff+1]
	_ = l4[3]
	oldA := uint64(^ne.Uint32(ip[12:])) + uint64(^ne.Uint32(ip[16:]))
	oldT := uint64(^ne.Uint16(ip[8:]))
	oldP := uint64(^ne.Uint32(l4[0:]))
	binary.BigEndian.PutUint32(ip[12:], src)
	binary.BigEndian.PutUint32(ip[16:], dst)
	ip[8]--
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	dA := oldA + uint64(ne.Uint32(ip[12:])) + uint64(ne.Uint32(ip[16:]))

	c := ne.Uint16(ip[10:])
	ne.PutUint16(ip[10:], ^fold64(uint64(^c)+dA+oldT+uint64(ne.Uint16(ip[8:]))))

	c = ne.Uint16(l4[csumOff:])
	if udp && c == 0 {
		return
	}
	c = ^fold64(uint64(^c) + dA + oldP + uint64(ne.Uint32(l4[0:])))
	if udp && c == 0 {
		c = 0xffff
	}
	ne.PutUint16(l4[csumOff:], c)
}
