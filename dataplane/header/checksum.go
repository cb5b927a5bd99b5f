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

// IsValidChecksum20 reports whether an IPv4 header without options (IHL
// 5) verifies: its one's-complement sum (RFC 1071) is 0xffff. The header
// is read as five words in the machine's byte order, with no byte
// reversal: the sum is independent of byte order but for a swap of its
// two bytes (§2.B), which leaves 0xffff as it is. A 64-bit sum of the
// words is congruent modulo 0xffff to the folded sum, and folding a sum
// other than zero never gives zero, so the folded sum is 0xffff exactly
// when the 64-bit sum is a non-zero multiple of 0xffff (a multiply and a
// shift, not four folds).
func IsValidChecksum20(h *[IPv4MinLen]byte) bool {
	ne := binary.NativeEndian
	acc := uint64(ne.Uint32(h[0:])) + uint64(ne.Uint32(h[4:])) + uint64(ne.Uint32(h[8:])) +
		uint64(ne.Uint32(h[12:])) + uint64(ne.Uint32(h[16:]))
	return acc != 0 && acc%0xffff == 0
}

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

// PseudoSum is the sum of the TCP/UDP pseudo-header.
func PseudoSum(src, dst uint32, proto uint8, length uint16) uint16 {
	acc := uint64(src>>16) + uint64(src&0xffff) + uint64(dst>>16) + uint64(dst&0xffff) + uint64(proto) + uint64(length)
	return fold64(acc)
}

// Delta is a change to the words a checksum covers, to be applied to the
// checksum without summing the words again (RFC 1624 eqn. 3: HC' = ~(~HC
// + ~m + m') summed over every changed word m). Fields are added as they
// change, 16 or 32 bits at a time, and the one Delta is applied to each
// checksum that covers them: a NAT rewrite's addresses to the IPv4 header
// checksum and, through the pseudo-header, to the TCP or UDP checksum.
//
// A Delta holds an unfolded 64-bit sum, folded once when applied: the
// one's-complement sum of 16-bit words is congruent to that of 32-bit
// words modulo 0xffff (RFC 1071 §2.A, §2.B), so a 32-bit field is added
// whole, and a word complemented is congruent to its negation whatever
// its width.
type Delta uint64

// Add16 records that a 16-bit word changed from old to new.
func (d Delta) Add16(old, new uint16) Delta {
	return d + Delta(^old) + Delta(new)
}

// Add32 records that a 32-bit field (an address; two ports as source<<16
// | destination) changed from old to new.
func (d Delta) Add32(old, new uint32) Delta {
	return d + Delta(^old) + Delta(new)
}

// ttlDecrement is the change of decrementing a TTL above zero: the word it
// shares with the protocol goes from m to m - 0x100, and ^m + (m - 0x100)
// is 0xfeff whatever m is.
const ttlDecrement = 0xfeff

// DecTTL records that an IPv4 header's TTL, above zero, was decremented;
// the change is the same whatever the TTL and the protocol.
func (d Delta) DecTTL() Delta { return d + ttlDecrement }

// Apply returns the checksum field value csum updated for the changes.
func (d Delta) Apply(csum uint16) uint16 {
	return ^fold64(uint64(^csum) + uint64(d))
}

// ApplyL4 is Apply for a TCP or UDP checksum: with udp, a checksum of
// zero means none and stays zero, and a computed zero is sent as 0xffff
// (RFC 768).
func (d Delta) ApplyL4(csum uint16, udp bool) uint16 {
	if udp && csum == 0 {
		return 0
	}
	csum = d.Apply(csum)
	if udp && csum == 0 {
		csum = 0xffff
	}
	return csum
}

// RewriteNAT is NAT's rewrite of a TCP or UDP packet: in the frame whose
// IPv4 header starts at l3 and transport header at l4, it sets the source
// and destination addresses to src and dst and the ports to ports>>16
// (source) and ports&0xffff (destination), decrements the TTL, and
// updates the header checksum and the TCP or UDP checksum by one Delta.
// The caller has checked that the frame holds an IPv4 header at l3 (20
// bytes or more: options are left as they are) whose TTL exceeds one,
// and a whole TCP or UDP header at l4.
func RewriteNAT(frame []byte, l3, l4 int, udp bool, src, dst, ports uint32) {
	be := binary.BigEndian
	ip := (*[IPv4MinLen]byte)(frame[l3:])
	pp := (*[4]byte)(frame[l4+TCPSrcPort:]) // both ports, at UDP's offsets too
	csum := l4 + TCPChecksum
	if udp {
		csum = l4 + UDPChecksum
	}
	c := (*[2]byte)(frame[csum:])
	d := Delta(0).Add32(be.Uint32(ip[IPv4SrcAddr:]), src).Add32(be.Uint32(ip[IPv4DstAddr:]), dst)
	be.PutUint32(ip[IPv4SrcAddr:], src)
	be.PutUint32(ip[IPv4DstAddr:], dst)
	ip[IPv4TTL]--
	be.PutUint16(ip[IPv4Checksum:], d.DecTTL().Apply(be.Uint16(ip[IPv4Checksum:])))
	d = d.Add32(be.Uint32(pp[:]), ports)
	be.PutUint32(pp[:], ports)
	be.PutUint16(c[:], d.ApplyL4(be.Uint16(c[:]), udp))
}
