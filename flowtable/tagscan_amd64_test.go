//go:build amd64 && !purego

package flowtable

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"golang.org/x/sys/cpu"
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

// TestLookupOne holds the single-key assembly lookup, and the one-pass
// lookup of a batch (lookupSmallAMD64), to the Go scan of both buckets:
// whenever they are sure, their answer is the scan's. On a table
// with keys of live connections in either direction, absent keys, killed
// and expired connections and clocks before their last packet; and on a
// table of two buckets with a 31-bit index mask, where half the tags come
// out zero, half the keys' buckets coincide, and slots under a key's tag
// name records that do not hold it, so that it is unsure.
func TestLookupOne(t *testing.T) {
	if !cpu.X86.HasAVX2 || !cpu.X86.HasBMI1 {
		t.Skip("the CPU lacks AVX2 or BMI1: the assembly lookup is never called")
	}
	var tt Table
	if unsafe.Pointer(&tt.timeouts) != unsafe.Pointer(&tt.timeouts[0]) || unsafe.Sizeof(tt.timeouts[0]) != 4 || unsafe.Sizeof(tt.recs) != 24 {
		t.Fatal("the timeouts or the record slice differ from what tagscan_amd64.s reads")
	}
	scan := func(tab *Table, k *Tuple, now Time) Ref {
		p := tab.at(k)
		return tab.scanBoth(p.b1, p.b2, p.tag, k, now)
	}
	// The one-pass lookup of a batch (lookupSmallAMD64, for tables in the
	// caches) the same way: every key it is sure of gets the scan's
	// answer, found counts them, and lookupSmall, which scans the others,
	// answers every key as the scan does.
	var unsureInBatch int
	checkBatch := func(tab *Table, keys []Tuple, now Time) {
		t.Helper()
		refs := make([]Ref, len(keys))
		found, unsureBits := lookupSmallAMD64(tab, &keys[0], &refs[0], len(keys), now)
		want := make([]Ref, len(keys))
		sureFound, allFound := 0, 0
		for i := range keys {
			if want[i] = scan(tab, &keys[i], now); want[i] != 0 {
				allFound++
			}
			if unsureBits&(1<<i) != 0 {
				unsureInBatch++
				continue
			}
			if refs[i] != want[i] {
				t.Fatalf("batch of %d, key %d %v at %d: %v, want %v", len(keys), i, keys[i], now, refs[i], want[i])
			}
			if want[i] != 0 {
				sureFound++
			}
		}
		if found != sureFound {
			t.Fatalf("batch of %d: found %d, want %d", len(keys), found, sureFound)
		}
		if !useAVX2.Load() {
			return // the race detector's build: lookupSmall declines
		}
		if found, ok := tab.lookupSmall(keys, refs, now); !ok || found != allFound {
			t.Fatalf("lookupSmall: found %d (%v), want %d", found, ok, allFound)
		}
		for i := range keys {
			if refs[i] != want[i] {
				t.Fatalf("lookupSmall, key %d: %v, want %v", i, refs[i], want[i])
			}
		}
	}
	var sure, unsure int
	check := func(tab *Table, k *Tuple, now Time) {
		t.Helper()
		got, ok := lookupOneAMD64(tab, k, now)
		if !ok {
			unsure++
			return
		}
		sure++
		if want := scan(tab, k, now); got != want {
			t.Fatalf("key %v at %d: %v, want %v", k, now, got, want)
		}
	}
	rng := rand.New(rand.NewPCG(19, 20))
	tab := newTable(t, Config{Capacity: 512})
	c := tab.Core(0)
	c.Enter()
	var refs []Ref
	for k := range 300 {
		nf := snatFlow(uint16(10000+k), uint16(20000+k), []State{TCPEstablished, TCPSynSent, UDP, TCPTimeWait}[k%4])
		refs = append(refs, mustInsert(t, c, nf, Time(100+rng.IntN(50000))))
	}
	for _, r := range refs[:40] {
		c.Kill(r)
	}
	c.Exit()
	batch := make([]Tuple, 0, batchMax)
	for range 100000 {
		k := tab.Flow(refs[rng.IntN(len(refs))]).Tuple(Dir(rng.IntN(2)))
		if rng.IntN(4) == 0 {
			k.SrcPort++ // absent, mostly
		}
		check(tab, &k, Time(rng.IntN(600000)))
		if batch = append(batch, k); len(batch) == cap(batch) || rng.IntN(16) == 0 {
			checkBatch(tab, batch, Time(rng.IntN(600000)))
			batch = batch[:0]
		}
	}

	// Two buckets, a 31-bit index mask, random slots over 64 records.
	edge := &Table{h: hasher{rng.Uint64() | 1, rng.Uint64() | 1, rng.Uint64(), rng.Uint64()},
		buckets: make([]bucket, 2), recs: make([]Flow, 64), nb: 2, idxMask: 1<<31 - 1}
	edge.toSet.defaults()
	edge.timeouts.publish(&edge.toSet)
	keys := make([]Tuple, 64)
	var zeroTags, sameBuckets int
	for range 2000 {
		for i := range keys {
			keys[i] = MakeTuple(uint8(rng.Uint32()), rng.Uint32(), uint16(rng.Uint32()), rng.Uint32(), uint16(rng.Uint32()))
			x := edge.h.hash(&keys[i])
			if uint32(x)>>31 == uint32(x>>32)>>31 {
				sameBuckets++
			}
			if uint32((x*0x9E3779B97F4A7C15)>>32)&^edge.idxMask == 0 {
				zeroTags++
			}
		}
		for b := range edge.buckets {
			for s := range edge.buckets[b] {
				var v uint32 // empty, or a random key's tag over a random record
				if rng.IntN(3) != 0 {
					v = slotValue(edge.at(&keys[rng.IntN(len(keys))]).tag, uint32(rng.IntN(len(edge.recs))))
				}
				edge.buckets[b][s].Store(v)
			}
		}
		for r := range edge.recs {
			f := &edge.recs[r]
			f.orig, f.reply = keys[rng.IntN(len(keys))], keys[rng.IntN(len(keys))]
			f.status.Store(uint32(UDP) | []uint32{flagConfirmed, flagConfirmed | flagDying, 0}[rng.IntN(3)])
			f.last.Store(uint32(rng.IntN(100)))
		}
		for i := range keys {
			check(edge, &keys[i], Time(rng.IntN(200)))
		}
		checkBatch(edge, keys[:1+rng.IntN(len(keys))], Time(rng.IntN(200)))
	}
	if zeroTags == 0 || sameBuckets == 0 || unsure == 0 || sure == 0 || unsureInBatch == 0 {
		t.Fatalf("edges not reached: %d zero tags, %d coinciding buckets, %d sure, %d unsure (%d in batches)", zeroTags, sameBuckets, sure, unsure, unsureInBatch)
	}
}

// TestPrefetch: Prefetch, on a table large enough for it to run the
// assembly, over batches of every size of arbitrary keys, leaves the
// table as it was (every connection found both ways, no stranger found),
// and the caller's state intact (the assembly clobbers registers the ABI
// wrapper must restore).
func TestPrefetch(t *testing.T) {
	tab := newTable(t, Config{Capacity: 2 * touchAbove, Seed: 17})
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	const n = touchAbove + 1000
	var orig, reply []Tuple
	for i := range n {
		nf := NewFlow{
			Orig:   MakeTuple(ProtoUDP, 0x0a000000|uint32(i), uint16(1024+i%50000), 0xc6336401, 443),
			Reply:  MakeTuple(ProtoUDP, 0xc6336401, 443, 0xcb007101, uint16(1024+i%50000)),
			Status: uint32(UDP) | FlagSrcNAT,
		}
		nf.Reply.DstPort = uint16(i)
		nf.Reply.Dst += uint32(i >> 16)
		mustInsert(t, c, nf, 1)
		orig, reply = append(orig, nf.Orig), append(reply, nf.Reply)
	}
	if tab.Count() <= touchAbove || !tab.Prefetches() {
		t.Fatalf("%d connections: Prefetches %v", tab.Count(), tab.Prefetches())
	}
	rng := rand.New(rand.NewPCG(17, 18))
	keys := make([]Tuple, 64)
	for round := range 200 {
		for i := range keys {
			keys[i] = MakeTuple(uint8(rng.Uint32()), rng.Uint32(), uint16(rng.Uint32()), rng.Uint32(), uint16(rng.Uint32()))
		}
		k := 1 + round%len(keys)
		tab.Prefetch(keys[:k])
		prefetchBucketsAMD64(&keys[0], k, &tab.h, tab.nb, ^tab.idxMask, &tab.buckets[0])
		for _, key := range keys[:k] {
			if r := tab.lookup(&key, 1, new(uint64)); r != 0 {
				t.Fatalf("round %d: a random key %v found", round, key)
			}
		}
	}
	for i := range n {
		if r := tab.lookup(&orig[i], 1, new(uint64)); r == 0 || r.Dir() != DirOrig {
			t.Fatalf("connection %d: original tuple %v", i, r)
		}
		if r := tab.lookup(&reply[i], 1, new(uint64)); r == 0 || r.Dir() != DirReply {
			t.Fatalf("connection %d: reply tuple %v", i, r)
		}
	}
}

// TestX86CPU: the family decoding on CPUID signatures of known parts,
// and the vendor string read from this CPU.
func TestX86CPU(t *testing.T) {
	for _, c := range []struct {
		eax, family uint32
	}{
		{0x00A10F11, 0x19}, // AMD EPYC 9004 (Zen 4)
		{0x00830F10, 0x17}, // AMD EPYC 7002 (Zen 2)
		{0x00600F20, 0x15}, // AMD Opteron 6300 (Piledriver)
		{0x000806F8, 6},    // Intel Xeon 4th generation (Sapphire Rapids)
		{0x00050654, 6},    // Intel Xeon Scalable (Skylake-SP)
	} {
		if f := x86Family(c.eax); f != c.family {
			t.Errorf("signature %#x: family %#x, want %#x", c.eax, f, c.family)
		}
	}
	vendor, family := x86CPU()
	if len(vendor) != 12 || family == 0 {
		t.Fatalf("vendor %q, family %#x", vendor, family)
	}
	for _, r := range vendor {
		if r < ' ' || r > '~' {
			t.Fatalf("vendor %q: not printable", vendor)
		}
	}
	wantAVX2 := vectorAvailable() && vendor == "AuthenticAMD" && family >= 0x17
	if (autoImpl() == ImplAVX2) != wantAVX2 {
		t.Errorf("%s family %#x, vector code available %v: auto chose %v", vendor, family, vectorAvailable(), autoImpl())
	}
	t.Logf("%s family %#x: auto is %v", vendor, family, autoImpl())
}
