package flowtable

import (
	"math/rand/v2"
	"testing"
	"unsafe"
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

// TestCompareProbes holds the assembly compare to the Go one: probes with
// no candidate, with the record of their key in either direction, with
// another tuple's record, with records killed, expired, or last seen
// "after" now; and checks the layout and flags the assembly assumes.
func TestCompareProbes(t *testing.T) {
	if unsafe.Sizeof(Flow{}) != 48 || unsafe.Offsetof(Flow{}.reply) != 16 || unsafe.Offsetof(Flow{}.status) != 32 ||
		unsafe.Offsetof(Flow{}.last) != 36 || unsafe.Sizeof(probe{}) != 24 || unsafe.Offsetof(probe{}.idx) != 20 {
		t.Fatal("the record or probe layout differs from the one tagscan_amd64.s assumes")
	}
	if flagConfirmed != 0x100 || flagDying != 0x200 || stateMask != 15 {
		t.Fatal("the status flags differ from the ones tagscan_amd64.s assumes")
	}
	rng := rand.New(rand.NewPCG(17, 18))
	tab := newTable(t, Config{Capacity: 512})
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	var refs []Ref
	for k := range 300 {
		nf := snatFlow(uint16(10000+k), uint16(20000+k), []State{TCPEstablished, TCPSynSent, UDP, TCPTimeWait}[k%4])
		r := mustInsert(t, c, nf, Time(100+rng.IntN(50000)))
		refs = append(refs, r)
	}
	for _, r := range refs[:40] {
		c.Kill(r)
	}
	keys := make([]Tuple, 64)
	bb := make([]probe, 64)
	got, want := make([]Ref, 64), make([]Ref, 64)
	for n := 0; n < 3000; n++ {
		for i := range bb {
			r := refs[rng.IntN(len(refs))]
			f := tab.Flow(r)
			switch rng.IntN(5) {
			case 0:
				bb[i].idx = noCand
				keys[i] = f.orig
			case 1:
				bb[i].idx, keys[i] = r.idx(), f.orig
			case 2:
				bb[i].idx, keys[i] = r.idx(), f.reply
			case 3: // another connection's record
				bb[i].idx, keys[i] = refs[rng.IntN(len(refs))].idx(), f.orig
			default:
				bb[i].idx, keys[i] = r.idx(), f.reply
				keys[i].SrcPort++
			}
		}
		k := 1 + rng.IntN(64)
		now := Time(rng.IntN(600000))
		gf, gr := compareProbesAMD64(&keys[0], &bb[0], &got[0], k, &tab.recs[0], uint64(len(tab.recs)), &tab.timeouts, now)
		wf, wr := tab.compareProbesGo(keys[:k], bb[:k], want, now)
		if gf != wf || gr != wr {
			t.Fatalf("found %d rescan %#x, want %d %#x", gf, gr, wf, wr)
		}
		for i := range k {
			if got[i] != want[i] {
				t.Fatalf("probe %d: ref %v, want %v", i, got[i], want[i])
			}
		}
	}
}
