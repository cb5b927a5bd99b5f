//go:build !amd64 || purego

// The Go code alone: on architectures with no assembly here, and in
// purego builds, which compile none.

package flowtable

// vectorAvailable reports whether the vector code can run: never where
// none is written, or in a purego build.
func vectorAvailable() bool { return false }

// autoImpl is ImplAuto's choice: the Go code, the only one here.
func autoImpl() Impl { return ImplGo }

// tagScan is tagScanGo where no vector scan is written.
func tagScan(buckets []bucket, recs []Flow, bb []probe, mask uint32, second bool) int {
	return tagScanGo(buckets, bb, mask, second)
}

// bucketMatch is bucketMatchGo where no vector match is written.
func bucketMatch(b *bucket, tag, mask uint32) uint32 { return bucketMatchGo(b, tag, mask) }

// bucketMatch2 is bucketMatch on a tuple's two buckets.
func bucketMatch2(b1, b2 *bucket, tag, mask uint32) (uint32, uint32) {
	return bucketMatch2Go(b1, b2, tag, mask)
}

// hashProbes is hashProbesGo where no assembly is written (and nothing is
// prefetched).
func (t *Table) hashProbes(keys []Tuple, bb []probe, prefetch bool) { t.hashProbesGo(keys, bb) }

// compareProbes is compareProbesGo where no assembly is written.
func (t *Table) compareProbes(keys []Tuple, bb []probe, refs []Ref, now Time) (int, uint64) {
	return t.compareProbesGo(keys, bb, refs, now)
}

// lookupOne is never sure where no assembly is written: lookup scans.
func (t *Table) lookupOne(k *Tuple, now Time) (Ref, bool) { return 0, false }

// Prefetch does nothing where no assembly is written.
func (t *Table) Prefetch(keys []Tuple) {}

// Prefetches reports whether Prefetch does anything: never here.
func (t *Table) Prefetches() bool { return false }

// lookupSmall is never taken where no assembly is written: lookupBatch
// runs its passes.
func (t *Table) lookupSmall(keys []Tuple, refs []Ref, now Time) (int, bool) { return 0, false }
