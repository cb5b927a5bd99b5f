package flowtable

import (
	"math/rand/v2"
	"testing"
	"unsafe"
)

// TestTupleWords checks construction, reversal, and that equality of the
// word view is equality of the fields.
func TestTupleWords(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for range 10000 {
		src, dst := rng.Uint32(), rng.Uint32()
		sp, dp := uint16(rng.Uint32()), uint16(rng.Uint32())
		pr := uint8(rng.Uint32())
		tu := MakeTuple(pr, src, sp, dst, dp)
		if tu.Src != src || tu.Dst != dst || tu.SrcPort != sp || tu.DstPort != dp || tu.Proto != pr || tu.pad != [3]uint8{} {
			t.Fatalf("MakeTuple fields %+v", tu)
		}
		r := tu.Reverse()
		if r != (Tuple{Src: dst, Dst: src, SrcPort: dp, DstPort: sp, Proto: pr}) {
			t.Fatalf("Reverse %+v of %+v", r, tu)
		}
		o := tu
		if !tu.equal(&o) || tu.equal(&r) && r != tu {
			t.Fatal("equal")
		}
	}
}

func TestTupleSetIsMakeTuple(t *testing.T) {
	for _, c := range []struct {
		proto        uint8
		src, dst     uint32
		sport, dport uint16
	}{
		{ProtoTCP, 0x0A000001, 0xC6336407, 40000, 443},
		{ProtoUDP, 0xFFFFFFFF, 0, 65535, 0},
		{ProtoICMP, 1, 2, 0, 7},
		{47, 0xC0A80001, 0x08080808, 0, 0},
	} {
		want := MakeTuple(c.proto, c.src, c.sport, c.dst, c.dport)
		got := Tuple{Src: 9, Dst: 9, SrcPort: 9, DstPort: 9, Proto: 9}
		got.Set(c.proto, c.src, c.sport, c.dst, c.dport)
		if got != want || !got.equal(&want) {
			t.Fatalf("Set gave %+v, MakeTuple %+v", got, want)
		}
	}
}

// TestLittleEndian: the build tags of endian_little.go and endian_big.go
// agree with the machine: a tuple's first byte is the low byte of Src.
func TestLittleEndian(t *testing.T) {
	x := Tuple{Src: 1}
	if got := *(*byte)(unsafe.Pointer(&x)) == 1; got != littleEndian {
		t.Fatalf("littleEndian is %v; this machine's first byte of Src=1 says %v", littleEndian, got)
	}
}
