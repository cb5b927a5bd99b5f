package flowtable

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// The assembly reads fields at go_asm.h's offsets, but steps over some
// sizes by shifts, which it names: BUCKET_SHIFT, TUPLE_SHIFT,
// REC_SIZE_SHIFT (after ·3) and REF_SIZE.
func TestAsmLayout(t *testing.T) {
	if unsafe.Sizeof(bucket{}) != 1<<6 || unsafe.Sizeof(Tuple{}) != 1<<4 || unsafe.Sizeof(Flow{}) != 3<<4 || unsafe.Sizeof(Ref(0)) != 4 {
		t.Fatalf("bucket %d, tuple %d, record %d, Ref %d bytes; tagscan_amd64.s steps over 64, 16, 48 and 4",
			unsafe.Sizeof(bucket{}), unsafe.Sizeof(Tuple{}), unsafe.Sizeof(Flow{}), unsafe.Sizeof(Ref(0)))
	}
}

// forEachImpl runs f under each implementation this build can run on
// this CPU (ImplGo everywhere, ImplAVX2 where the vector code runs), and
// then restores the one in use.
func forEachImpl(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	prev := ActiveImpl()
	defer SetImpl(prev)
	for _, impl := range []Impl{ImplGo, ImplAVX2} {
		if impl == ImplAVX2 && !vectorAvailable() {
			continue
		}
		if err := SetImpl(impl); err != nil {
			t.Fatal(err)
		}
		t.Run(impl.String(), f)
	}
}

func TestImpl(t *testing.T) {
	for _, impl := range []Impl{ImplAuto, ImplGo, ImplAVX2} {
		if got, err := ParseImpl(impl.String()); err != nil || got != impl {
			t.Errorf("ParseImpl(%q) = %v, %v", impl.String(), got, err)
		}
	}
	for _, bad := range []string{"", "Go", "avx512", "sse"} {
		if _, err := ParseImpl(bad); !errors.Is(err, ErrImpl) {
			t.Errorf("ParseImpl(%q): %v, want ErrImpl", bad, err)
		}
	}
	prev := ActiveImpl()
	defer SetImpl(prev)
	if err := SetImpl(Impl(9)); !errors.Is(err, ErrImpl) {
		t.Errorf("SetImpl(9): %v, want ErrImpl", err)
	}
	if err := SetImpl(ImplGo); err != nil || ActiveImpl() != ImplGo {
		t.Errorf("SetImpl(go): %v, active %v", err, ActiveImpl())
	}
	err := SetImpl(ImplAVX2)
	if vectorAvailable() != (err == nil) || vectorAvailable() != (ActiveImpl() == ImplAVX2) {
		t.Errorf("SetImpl(avx2) with the vector code available %v: %v, active %v", vectorAvailable(), err, ActiveImpl())
	}
	if err != nil && !errors.Is(err, ErrImpl) {
		t.Errorf("SetImpl(avx2): %v, want ErrImpl", err)
	}
	if err := SetImpl(ImplAuto); err != nil || ActiveImpl() != autoImpl() || ActiveImpl() == ImplAuto {
		t.Errorf("SetImpl(auto): %v, active %v, want %v", err, ActiveImpl(), autoImpl())
	}
	if autoImpl() == ImplAVX2 && !vectorAvailable() {
		t.Error("auto chose the vector code where it cannot run")
	}
}

// checkTagScan runs the scan of the implementation in use and the Go scan
// on copies of the same probes, both passes, and compares every candidate
// and count.
func checkTagScan(t *testing.T, buckets []bucket, bb []probe, mask uint32) {
	t.Helper()
	for _, second := range []bool{false, true} {
		got := append([]probe(nil), bb...)
		want := append([]probe(nil), bb...)
		ng := tagScan(buckets, make([]Flow, 1), got, mask, second)
		nw := tagScanGo(buckets, want, mask, second)
		if ng != nw {
			t.Fatalf("second=%v: %d left without a candidate, want %d", second, ng, nw)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("second=%v, probe %d: %+v, want %+v", second, i, got[i], want[i])
			}
		}
		copy(bb, got) // the second pass starts from the first's candidates
	}
}

// makeScanCase fills buckets with slots under a handful of tags (so that
// probes find their tag in no slot, one slot or several) and empty slots,
// and probes aimed at them.
func makeScanCase(rng *rand.Rand, nb, np int, idxBits uint32) ([]bucket, []probe) {
	mask := uint32(1)<<idxBits - 1
	tags := []uint32{1 << idxBits, 2 << idxBits, 3 << idxBits, ^mask}
	buckets := make([]bucket, nb)
	for i := range buckets {
		for j := range buckets[i] {
			if rng.IntN(4) == 0 {
				continue // empty
			}
			buckets[i][j].Store(tags[rng.IntN(len(tags))] | (rng.Uint32()&mask | 1))
		}
	}
	bb := make([]probe, np)
	for i := range bb {
		bb[i] = probe{b1: uint64(rng.IntN(nb)), b2: uint64(rng.IntN(nb)), tag: tags[rng.IntN(len(tags))], idx: rng.Uint32()}
	}
	return buckets, bb
}

func TestTagScanMatchesGo(t *testing.T) { forEachImpl(t, testTagScanMatchesGo) }

func testTagScanMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		idxBits := uint32(4 + rng.IntN(24))
		buckets, bb := makeScanCase(rng, 1+rng.IntN(8), 1+rng.IntN(batchMax), idxBits)
		checkTagScan(t, buckets, bb, uint32(1)<<idxBits-1)
	}
}

// The scan on the last bucket of the table reads nothing beyond it.
func TestTagScanLastBucket(t *testing.T) { forEachImpl(t, testTagScanLastBucket) }

func testTagScanLastBucket(t *testing.T) {
	buckets := make([]bucket, 3)
	mask := uint32(1)<<20 - 1
	buckets[2][15].Store(5<<20 | 77)
	bb := []probe{{b1: 2, b2: 0, tag: 5 << 20}, {b1: 0, b2: 2, tag: 5 << 20}}
	checkTagScan(t, buckets[:3:3], bb, mask)
	if bb[0].idx != 76 || bb[1].idx != 76 {
		t.Fatalf("candidates %d, %d; want 76 from the last slot", bb[0].idx, bb[1].idx)
	}
}

func FuzzTagScan(f *testing.F) {
	f.Add(uint8(20), []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Fuzz(func(t *testing.T, bitsIn uint8, data []byte) {
		idxBits := uint32(bitsIn%28) + 1
		mask := uint32(1)<<idxBits - 1
		if len(data) < 4 {
			return
		}
		nb := int(data[0]%8) + 1
		buckets := make([]bucket, nb)
		data = data[1:]
		// Slots come from the input four bytes at a time, probes after.
		// Both keep the table's invariants: a used slot's index part is
		// idx+1, never 0, and a tag is never 0 (so empty slots match none).
		for i := 0; i < nb*slotsPerBucket && len(data) >= 4; i++ {
			v := binary.LittleEndian.Uint32(data)
			if v != 0 && v&mask == 0 {
				v |= 1
			}
			buckets[i/slotsPerBucket][i%slotsPerBucket].Store(v)
			data = data[4:]
		}
		var bb []probe
		for len(data) >= 6 && len(bb) < batchMax {
			tag := binary.LittleEndian.Uint32(data[2:]) &^ mask
			if tag == 0 {
				tag = mask + 1
			}
			bb = append(bb, probe{b1: uint64(int(data[0]) % nb), b2: uint64(int(data[1]) % nb), tag: tag, idx: uint32(data[1])})
			data = data[6:]
		}
		if len(bb) == 0 {
			return
		}
		forEachImpl(t, func(t *testing.T) { checkTagScan(t, buckets, bb, mask) })
	})
}

// TestBucketMatch holds the vector bucket match to the Go one on random
// buckets, with tags planted in random slots and index masks of every
// width.
func TestBucketMatch(t *testing.T) { forEachImpl(t, testBucketMatch) }

func testBucketMatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for n := 0; n < 20000; n++ {
		bits := 1 + rng.IntN(30)
		mask := uint32(1)<<bits - 1
		tag := (rng.Uint32() | 1<<bits) &^ mask
		var b bucket
		for i := range b {
			switch rng.IntN(3) {
			case 0: // empty
			case 1:
				b[i].Store(tag | rng.Uint32()&mask)
			default:
				b[i].Store(rng.Uint32())
			}
		}
		want := bucketMatchGo(&b, tag, mask)
		if got := bucketMatch(&b, tag, mask); got != want {
			t.Fatalf("bucket %v tag %#x mask %#x: %#x, want %#x", &b, tag, mask, got, want)
		}
		// Two buckets at once: this one and its slots reversed.
		var r bucket
		for i := range r {
			r[i].Store(b[len(b)-1-i].Load())
		}
		w1, w2 := bucketMatch2Go(&b, &r, tag, mask)
		if w1 != want || w2 != bucketMatchGo(&r, tag, mask) {
			t.Fatalf("bucketMatch2Go of %v and %v, tag %#x mask %#x: %#x %#x", &b, &r, tag, mask, w1, w2)
		}
		if g1, g2 := bucketMatch2(&b, &r, tag, mask); g1 != w1 || g2 != w2 {
			t.Fatalf("bucketMatch2 of %v and %v, tag %#x mask %#x: %#x %#x", &b, &r, tag, mask, g1, g2)
		}
	}
}

// TestHashProbes holds the assembly hash pass to the Go one (hash and
// place) over random keys, on tables of several sizes, with and without
// its prefetches.
func TestHashProbes(t *testing.T) { forEachImpl(t, testHashProbes) }

func testHashProbes(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, capacity := range []int{16, 1000, 100_000} {
		tab := newTable(t, Config{Capacity: capacity, Seed: uint64(capacity)})
		keys := make([]Tuple, 64)
		got, want := make([]probe, 64), make([]probe, 64)
		for n := 0; n < 2000; n++ {
			for i := range keys {
				keys[i] = MakeTuple(uint8(rng.Uint32()), rng.Uint32(), uint16(rng.Uint32()), rng.Uint32(), uint16(rng.Uint32()))
			}
			k := 1 + rng.IntN(len(keys))
			tab.hashProbes(keys[:k], got, n&1 == 0)
			tab.hashProbesGo(keys[:k], want)
			for i := range k {
				w := &want[i]
				if b1, b2, tag := tab.place(tab.h.hash(&keys[i])); w.b1 != b1 || w.b2 != b2 || w.tag != tag {
					t.Fatalf("hashProbesGo disagrees with place")
				}
				if g := &got[i]; g.b1 != w.b1 || g.b2 != w.b2 || g.tag != w.tag {
					t.Fatalf("capacity %d, key %v: probe %+v, want %+v", capacity, keys[i], *g, *w)
				}
			}
		}
	}
}

// TestImplsAgree runs LookupBatch against Lookup, in one pass and in its
// passes, under each implementation.
func TestImplsAgree(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		for _, threePass := range []bool{false, true} {
			lookupBatchMatchesLookup(t, threePass)
		}
	})
}

// TestBucketsAligned: the vector match loads a bucket as two 32-byte
// halves, each within one cache line only if the bucket array starts on
// a 64-byte boundary (a load split over two lines costs more on every
// core). Go's allocator gives that alignment to arrays of 64-byte
// buckets (its size classes for them are multiples of 64, and large
// objects start on pages); this notices if it ever stops.
func TestBucketsAligned(t *testing.T) {
	for c := 1; c < 300_000; c = c*5/4 + 1 {
		tab := newTable(t, Config{Capacity: c})
		if a := uintptr(unsafe.Pointer(&tab.buckets[0])) % 64; a != 0 {
			t.Errorf("capacity %d: %d buckets start %d bytes past a cache line", c, len(tab.buckets), a)
		}
	}
}
