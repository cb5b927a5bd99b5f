package header

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// sumRef is RFC 1071's sum, one 16-bit word at a time.
func sumRef(b []byte) uint16 {
	var acc uint32
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		acc += uint32(b[len(b)-1]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}

func TestSumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if got, want := Sum(b, 0), sumRef(b); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
			t.Fatalf("len %d: Sum %#x, reference %#x", n, got, want)
		}
	}
	// RFC 1071's worked example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
	if s := Sum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0); s != 0xddf2 {
		t.Errorf("RFC 1071 example: %#x", s)
	}
}

// TestIncrementalMatchesFull rewrites random 16- and 32-bit fields of
// random buffers and checks that Adjust gives the checksum a full
// recomputation gives (RFC 1624 eqn. 3).
func TestIncrementalMatchesFull(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 20000; iter++ {
		n := 20 + 2*rng.IntN(40)
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if iter%7 == 0 { // edge values
			for i := range b {
				b[i] = 0xff * byte(i%2)
			}
		}
		binary.BigEndian.PutUint16(b[10:], 0)
		binary.BigEndian.PutUint16(b[10:], Checksum(b, 0))
		var d Delta
		for k := 0; k < 1+rng.IntN(3); k++ {
			off := 2 * rng.IntN(n/2)
			if off == 10 || off == 8 || off == 12 {
				continue
			}
			if rng.IntN(2) == 0 && off+4 <= n && off+2 != 10 {
				old := binary.BigEndian.Uint32(b[off:])
				nw := rng.Uint32()
				binary.BigEndian.PutUint32(b[off:], nw)
				d = d.Add32(old, nw)
			} else {
				old := binary.BigEndian.Uint16(b[off:])
				nw := uint16(rng.Uint32())
				binary.BigEndian.PutUint16(b[off:], nw)
				d = d.Add16(old, nw)
			}
		}
		inc := Adjust(binary.BigEndian.Uint16(b[10:]), d)
		binary.BigEndian.PutUint16(b[10:], inc)
		if Sum(b, 0) != 0xffff {
			binary.BigEndian.PutUint16(b[10:], 0)
			t.Fatalf("iter %d: incremental %#x, full %#x", iter, inc, Checksum(b, 0))
		}
	}
}

func TestDecTTL(t *testing.T) {
	ip := IPv4([]byte{0x45, 0, 0, 28, 0x12, 0x34, 0x40, 0, 1, 17, 0, 0, 10, 0, 0, 1, 8, 8, 8, 8})
	ip.SetChecksum(ip.ComputeChecksum())
	for ttl := 1; ttl >= 0; ttl-- {
		ip.DecTTL()
		if !ip.IsValidChecksum() {
			t.Fatalf("checksum invalid after DecTTL to %d", ip.TTL())
		}
	}
	ip.SetTTL(255)
	ip.SetChecksum(ip.ComputeChecksum())
	for range 255 {
		ip.DecTTL()
		if !ip.IsValidChecksum() {
			t.Fatalf("checksum invalid at TTL %d", ip.TTL())
		}
	}
}

func TestPseudoSum(t *testing.T) {
	src, dst := uint32(0xC0A80102), uint32(0x08080808)
	var b [12]byte
	binary.BigEndian.PutUint32(b[0:], src)
	binary.BigEndian.PutUint32(b[4:], dst)
	b[9] = 17
	binary.BigEndian.PutUint16(b[10:], 1234)
	if got, want := PseudoSum(src, dst, 17, 1234), Sum(b[:], 0); got != want {
		t.Errorf("PseudoSum %#x, want %#x", got, want)
	}
}

func BenchmarkSum1500(b *testing.B) {
	buf := make([]byte, 1500)
	b.SetBytes(1500)
	for b.Loop() {
		Sum(buf, 0)
	}
}
