package flowtable

import (
	"math/rand/v2"
	"testing"
)

// TestHashProbesAssemblyEdges drives the assembly hash pass where random
// keys on a real table seldom take it: a tag that comes out zero (with an
// index mask of 31 bits, half the keys) and two buckets that coincide
// (with two buckets, half the keys), against the formulas of place.
func TestHashProbesAssemblyEdges(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	h := hasher{rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64()}
	buckets := make([]bucket, 2)
	const idxMask = 1<<31 - 1
	keys := make([]Tuple, 64)
	bb := make([]probe, 64)
	var zeroTags, sameBuckets int
	for n := 0; n < 100; n++ {
		for i := range keys {
			keys[i] = MakeTuple(uint8(rng.Uint32()), rng.Uint32(), uint16(rng.Uint32()), rng.Uint32(), uint16(rng.Uint32()))
		}
		hashProbesAMD64(&keys[0], &bb[0], len(keys), &h, 2, ^uint32(idxMask), &buckets[0], true)
		for i := range keys {
			x := h.hash(&keys[i])
			b1, b2 := uint64(uint32(x))*2>>32, uint64(uint32(x>>32))*2>>32
			if b1 == b2 {
				sameBuckets++
				b2 = (b2 + 1) % 2
			}
			tag := uint32((x*0x9E3779B97F4A7C15)>>32) &^ idxMask
			if tag == 0 {
				zeroTags++
				tag = idxMask + 1
			}
			if g := bb[i]; g.b1 != b1 || g.b2 != b2 || g.tag != tag {
				t.Fatalf("key %v: probe %+v, want b1 %d b2 %d tag %#x", keys[i], g, b1, b2, tag)
			}
		}
	}
	if zeroTags == 0 || sameBuckets == 0 {
		t.Fatalf("edges not reached: %d zero tags, %d coinciding buckets", zeroTags, sameBuckets)
	}
}
