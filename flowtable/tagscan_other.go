//go:build !amd64

package flowtable

// tagScan is tagScanGo where no vector scan is written.
func tagScan(buckets []bucket, recs []Flow, bb []probe, mask uint32, second bool) int {
	return tagScanGo(buckets, bb, mask, second)
}

// prefetchBuckets has no portable form: a no-op.
func prefetchBuckets(buckets []bucket, bb []probe) {}

// bucketMatch is bucketMatchGo where no vector match is written.
func bucketMatch(b *bucket, tag, mask uint32) uint32 { return bucketMatchGo(b, tag, mask) }
