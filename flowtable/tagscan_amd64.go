//go:build amd64 && !purego

package flowtable

import (
	"encoding/binary"
	"math/bits"

	"golang.org/x/sys/cpu"
)

// vectorAvailable reports whether the vector code can run: on CPUs with
// AVX2 and BMI1, and not under the race detector, whose happens-before
// edges between an insert and a lookup come from the Go scan's atomic
// loads of the slots.
func vectorAvailable() bool { return !raceEnabled && cpu.X86.HasAVX2 && cpu.X86.HasBMI1 }

// autoImpl is ImplAuto's choice: the vector code where it can run and
// the CPU is one it was measured faster on, else the Go code.
//
// Measured 2026-12: the vector code is faster than the Go code on AMD
// Zen 4 (EPYC, family 19h) at every table size; it has not been measured
// on Intel cores, which charge far more than Zen for any slip in mixing
// SSE and AVX, so auto takes it on AMD's Zen cores (family 17h on) only.
func autoImpl() Impl {
	if vendor, family := x86CPU(); vectorAvailable() && vendor == "AuthenticAMD" && family >= 0x17 {
		return ImplAVX2
	}
	return ImplGo
}

// cpuid executes CPUID with EAX = leaf and ECX = sub.
//
//go:noescape
func cpuid(leaf, sub uint32) (a, b, c, d uint32)

// x86CPU returns the CPU's vendor string (CPUID leaf 0) and its family
// (leaf 1).
func x86CPU() (vendor string, family uint32) {
	_, b, c, d := cpuid(0, 0)
	var v [12]byte
	binary.LittleEndian.PutUint32(v[0:], b)
	binary.LittleEndian.PutUint32(v[4:], d)
	binary.LittleEndian.PutUint32(v[8:], c)
	a, _, _, _ := cpuid(1, 0)
	return string(v[:]), x86Family(a)
}

// x86Family is the family in CPUID leaf 1's EAX: the base family, plus
// the extended family when the base is 0xF.
func x86Family(eax uint32) uint32 {
	f := eax >> 8 & 0xF
	if f == 0xF {
		f += eax >> 20 & 0xFF
	}
	return f
}

// tagScanAVX2 is tagScanGo over the same probes with AVX2: each bucket is
// compared with the tag as two 8-slot vectors, with no branch on where
// (or whether) the tag sits. notMask is ^mask. It is tagScanGo's
// contract, for len(bb) > 0; the caller checks the bucket indices. It
// also prefetches (PREFETCHT1, which never faults) the lines of each
// candidate record in recs and, in the first pass, the second bucket of
// each probe left without a candidate.
//
//go:noescape
func tagScanAVX2(buckets *bucket, recs *Flow, bb *probe, n int, notMask uint32, second bool) int

// tagScan runs the vector tag scan under ImplAVX2, else the Go one.
func tagScan(buckets []bucket, recs []Flow, bb []probe, mask uint32, second bool) int {
	if useAVX2.Load() && len(bb) > 0 {
		return tagScanAVX2(&buckets[0], &recs[0], &bb[0], len(bb), ^mask, second)
	}
	return tagScanGo(buckets, bb, mask, second)
}

// bucketMatchAVX2 is bucketMatchGo's answer in two vector compares.
//
//go:noescape
func bucketMatchAVX2(b *bucket, tag, notMask uint32) uint32

// bucketMatch runs the vector bucket match under ImplAVX2, else the Go
// one.
func bucketMatch(b *bucket, tag, mask uint32) uint32 {
	if useAVX2.Load() {
		return bucketMatchAVX2(b, tag, ^mask)
	}
	return bucketMatchGo(b, tag, mask)
}

// bucketMatch2AVX2 is bucketMatch2Go's answer: bucketMatchAVX2 on two
// buckets in one call.
//
//go:noescape
func bucketMatch2AVX2(b1, b2 *bucket, tag, notMask uint32) (m1, m2 uint32)

// bucketMatch2 is bucketMatch on a tuple's two buckets, in one call under
// ImplAVX2: the insert path reads both.
func bucketMatch2(b1, b2 *bucket, tag, mask uint32) (uint32, uint32) {
	if useAVX2.Load() {
		return bucketMatch2AVX2(b1, b2, tag, ^mask)
	}
	return bucketMatch2Go(b1, b2, tag, mask)
}

// hashProbesAMD64 is hashProbesGo in assembly (baseline amd64: no vector
// instructions), prefetching each first bucket as soon as it is known
// (with prefetch): for n > 0 keys.
//
//go:noescape
func hashProbesAMD64(keys *Tuple, bb *probe, n int, h *hasher, nb uint64, notMask uint32, buckets *bucket, prefetch bool)

// hashProbes fills each key's probe (its buckets and tag, as place finds
// them) and, with prefetch, starts the first buckets on their way. It is
// baseline amd64 code, and the Go implementation takes it too: at a
// million connections its prefetches took the Go LookupBatch from 62 to
// 54 ns a key on AMD Zen 4 (medians of 5 alternated runs).
func (t *Table) hashProbes(keys []Tuple, bb []probe, prefetch bool) {
	if len(keys) == 0 {
		return
	}
	bb = bb[:len(keys)]
	hashProbesAMD64(&keys[0], &bb[0], len(keys), &t.h, t.nb, ^t.idxMask, &t.buckets[0], prefetch)
}

// prefetchBucketsAMD64 hashes and places each of n > 0 keys and starts
// both of its buckets on their way into L2 (PREFETCHT1).
//
//go:noescape
func prefetchBucketsAMD64(keys *Tuple, n int, h *hasher, nb uint64, notMask uint32, buckets *bucket)

// Prefetch starts on their way the index lines that looking for each key
// reads when the key is absent: both of its buckets. The pipeline calls
// it with the reply tuples its new connections are about to be inserted
// with, so that their misses overlap one another and the work before
// the inserts, instead of stalling each insert in turn. Only a table too
// large for the caches (touchAbove) is prefetched. Baseline amd64 code:
// both implementations take it.
func (t *Table) Prefetch(keys []Tuple) {
	if len(keys) == 0 || !t.Prefetches() {
		return
	}
	prefetchBucketsAMD64(&keys[0], len(keys), &t.h, t.nb, ^t.idxMask, &t.buckets[0])
}

// Prefetches reports whether Prefetch does anything now, so that a
// caller can spare itself building keys for nothing.
func (t *Table) Prefetches() bool { return t.Count() > touchAbove }

// compareProbesAMD64 is compareProbesGo in assembly, for n in 1..64
// probes; nrec is len(recs), every probe's candidate is noCand or below
// it.
//
//go:noescape
func compareProbesAMD64(keys *Tuple, bb *probe, refs *Ref, n int, recs *Flow, nrec uint64, timeouts *timeouts, now Time) (found int, rescan uint64)

// compareProbes runs the assembly compare under ImplAVX2, with the vector
// scan (and so not under the race detector, whose happens-before edges
// come from the Go compare's atomic loads of status and last-seen time).
func (t *Table) compareProbes(keys []Tuple, bb []probe, refs []Ref, now Time) (int, uint64) {
	if useAVX2.Load() && len(bb) > 0 {
		keys, refs = keys[:len(bb)], refs[:len(bb)]
		return compareProbesAMD64(&keys[0], &bb[0], &refs[0], len(bb), &t.recs[0], uint64(len(t.recs)), &t.timeouts, now)
	}
	return t.compareProbesGo(keys, bb, refs, now)
}

// lookupOneAMD64 resolves one key in assembly (tagscan_amd64.s) for
// lookup; sure is false when the full scan must decide. Its Go twin is
// that scan (scanBoth), whose answer it gives whenever it is sure. For
// ImplAVX2 only (AVX2 and BMI1).
//
//go:noescape
func lookupOneAMD64(t *Table, k *Tuple, now Time) (ref Ref, sure bool)

// lookupOne is lookupOneAMD64 under ImplAVX2; under ImplGo it is never
// sure, and lookup scans.
func (t *Table) lookupOne(k *Tuple, now Time) (Ref, bool) {
	if !useAVX2.Load() {
		return 0, false
	}
	return lookupOneAMD64(t, k, now)
}

// lookupSmallAMD64 is LookupBatch's lookups for a table in the caches, one
// pass over n > 0 keys (tagscan_amd64.s); unsure has a bit for each key
// whose candidate failed the compare. Its Go twin is LookupBatch's
// passes, whose answers it gives for every key it is sure of. For
// ImplAVX2 only.
//
//go:noescape
func lookupSmallAMD64(t *Table, keys *Tuple, refs *Ref, n int, now Time) (found int, unsure uint64)

// lookupSmall looks the keys up into refs in one pass, each from hash to
// answer, under ImplAVX2 where no test asked for the passes
// (threePass); it reports whether it did. The few keys whose candidate
// failed the compare are looked for through both their buckets.
func (t *Table) lookupSmall(keys []Tuple, refs []Ref, now Time) (int, bool) {
	if !useAVX2.Load() || t.threePass || len(keys) == 0 || len(keys) > batchMax {
		return 0, false
	}
	refs = refs[:len(keys)]
	found, unsure := lookupSmallAMD64(t, &keys[0], &refs[0], len(keys), now)
	for ; unsure != 0; unsure &= unsure - 1 {
		i := bits.TrailingZeros64(unsure) & (batchMax - 1)
		b1, b2, tag := t.place(t.h.hash(&keys[i]))
		if refs[i] = t.scanBoth(b1, b2, tag, &keys[i], now); refs[i] != 0 {
			found++
		}
	}
	return found, true
}
