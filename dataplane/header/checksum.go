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
