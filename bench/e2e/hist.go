package e2e

import "math/bits"

// Histogram is a fixed-size log-linear histogram of non-negative values
// (latencies in ns), in the manner of HdrHistogram: values below 2^subBits
// are counted exactly; above, each power of two is split into 2^subBits
// equal buckets, so a value is known within a relative error of
// 2^-subBits (0.8%). Record allocates nothing and takes no lock; a
// Histogram belongs to one goroutine until it is read.
type Histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	min, max uint64
	sum      uint64
}

const (
	subBits     = 7
	subCount    = 1 << subBits
	histGroups  = 64 - subBits + 1
	histBuckets = histGroups * subCount
)

func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	l := bits.Len64(v)
	shift := l - 1 - subBits
	g := shift + 1
	return g<<subBits + int(v>>uint(shift)) - subCount
}

// bucketRange returns the lowest and highest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	g, m := i>>subBits, uint64(i&(subCount-1))
	if g == 0 {
		return m, m
	}
	lo = (subCount + m) << uint(g-1)
	return lo, lo + (1 << uint(g-1)) - 1
}

// Record counts one value.
func (h *Histogram) Record(v uint64) {
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

// Count is the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest value recorded.
func (h *Histogram) Max() uint64 { return h.max }

// Mean is the average of the values recorded.
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return float64(h.sum) / float64(h.n)
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Reset forgets every value.
func (h *Histogram) Reset() { *h = Histogram{} }

// Quantile returns the value at quantile q (0 < q ≤ 1): the highest value
// of the bucket holding the ceil(q·n)-th smallest value, clipped to the
// recorded range; 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	if float64(rank) < q*float64(h.n) {
		rank++
	}
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			_, hi := bucketRange(i)
			if hi > h.max {
				hi = h.max
			}
			if hi < h.min {
				hi = h.min
			}
			return hi
		}
	}
	return h.max
}
