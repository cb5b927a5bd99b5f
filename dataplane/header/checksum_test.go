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
// random buffers and checks that Delta.Apply gives the checksum a full
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
		inc := d.Apply(binary.BigEndian.Uint16(b[10:]))
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

// TestIsValidChecksum20 checks the native-order header check against Sum
// on random headers, and IsValidChecksum on headers with and without a
// right checksum, with options and without.
func TestIsValidChecksum20(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for n := 0; n < 20000; n++ {
		b := make([]byte, 60)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if n%7 == 0 {
			clear(b[:20]) // the all-zero sum
		}
		if got, want := IsValidChecksum20((*[20]byte)(b)), Sum(b[:20], 0) == 0xffff; got != want {
			t.Fatalf("IsValidChecksum20 of % x: %v, Sum %v", b[:20], got, want)
		}
		if n%5 == 0 { // make it verify: the last word completes the sum
			binary.BigEndian.PutUint16(b[18:], 0)
			binary.BigEndian.PutUint16(b[18:], ^Sum(b[:20], 0))
			if !IsValidChecksum20((*[20]byte)(b)) {
				t.Fatalf("IsValidChecksum20 of % x: false, Sum %#x", b[:20], Sum(b[:20], 0))
			}
		}
		ip := IPv4(b)
		ip[0] = 0x40 | byte(5+rng.IntN(11))
		ip.SetChecksum(ip.ComputeChecksum())
		if !ip.IsValidChecksum() {
			t.Fatalf("IHL %d: a computed checksum does not verify", ip[0]&0xf)
		}
		ip[10+rng.IntN(2)] ^= byte(1 + rng.IntN(255))
		if ip.IsValidChecksum() {
			t.Fatalf("IHL %d: a corrupted checksum verifies", ip[0]&0xf)
		}
	}
}

// TestRewriteNATMatchesFull rewrites random TCP and UDP packets with
// random addresses and ports and checks both checksums against a full
// recomputation, and the fields against what was asked.
func TestRewriteNATMatchesFull(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for n := 0; n < 20000; n++ {
		udp := n%2 == 0
		l4len, off, proto := 20+rng.IntN(40), 16, uint8(ProtoTCP)
		if udp {
			l4len, off, proto = 8+rng.IntN(40), 6, ProtoUDP
		}
		b := make([]byte, 20+l4len)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		ip := IPv4(b)
		ip[0] = 0x45
		ip.SetTotalLen(uint16(len(b)))
		ip.SetProtocol(proto)
		ip.SetTTL(uint8(1 + rng.IntN(255))) // any TTL a router decrements
		if n%11 == 0 {
			ip.SetSrc(0)
			ip.SetDst(0)
		}
		ip.SetChecksum(ip.ComputeChecksum())
		l4 := b[20:]
		binary.BigEndian.PutUint16(l4[off:], 0)
		sum := Checksum(l4, PseudoSum(ip.Src(), ip.Dst(), proto, uint16(l4len)))
		zero := udp && n%10 == 1 // no UDP checksum
		if zero {
			sum = 0
		}
		binary.BigEndian.PutUint16(l4[off:], sum)

		src, dst := rng.Uint32(), rng.Uint32()
		sport, dport := uint16(rng.Uint32()), uint16(rng.Uint32())
		switch n % 7 {
		case 3: // nothing but the TTL changes
			src, dst = ip.Src(), ip.Dst()
			sport, dport = binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
		case 5:
			src, dst = 0, 0
		}
		ttl := ip.TTL()
		RewriteNAT(b, 0, 20, udp, src, dst, uint32(sport)<<16|uint32(dport))

		if ip.Src() != src || ip.Dst() != dst || ip.TTL() != ttl-1 ||
			binary.BigEndian.Uint16(l4[0:]) != sport || binary.BigEndian.Uint16(l4[2:]) != dport {
			t.Fatalf("packet %d: fields not rewritten: % x", n, b)
		}
		if !ip.IsValidChecksum() {
			t.Fatalf("packet %d: header checksum %#x, want %#x", n, ip.Checksum(), ip.ComputeChecksum())
		}
		got := binary.BigEndian.Uint16(l4[off:])
		if zero {
			if got != 0 {
				t.Fatalf("packet %d: a zero UDP checksum became %#x", n, got)
			}
			continue
		}
		binary.BigEndian.PutUint16(l4[off:], 0)
		want := Checksum(l4, PseudoSum(src, dst, proto, uint16(l4len)))
		if udp && want == 0 {
			want = 0xffff
		}
		// The incremental update may give either form of zero where a
		// full computation gives the other (RFC 1624 §3); both verify.
		if got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
			t.Fatalf("packet %d (udp %v): transport checksum %#x, full recomputation %#x", n, udp, got, want)
		}
	}
}

// TestFold64 checks the rotate-and-add fold against folding 16 bits at a
// time, on edge values and random ones.
func TestFold64(t *testing.T) {
	ref := func(acc uint64) uint16 {
		for acc > 0xffff {
			acc = acc>>16 + acc&0xffff
		}
		return uint16(acc)
	}
	vals := []uint64{0, 1, 0xffff, 0x10000, 0xffffffff, 1 << 32, 0xffffffff_ffffffff, 0xffff_0000_ffff_0000, 0x0001_0000_0000_ffff}
	rng := rand.New(rand.NewPCG(9, 10))
	for range 100000 {
		vals = append(vals, rng.Uint64(), rng.Uint64()>>rng.IntN(64))
	}
	for _, v := range vals {
		if got, want := fold64(v), ref(v); got != want {
			t.Fatalf("fold64(%#x) = %#x, want %#x", v, got, want)
		}
	}
}
