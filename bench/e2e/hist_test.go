package e2e

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

func TestHistogramQuantilesMatchSortedOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	dists := map[string]func() uint64{
		"small":       func() uint64 { return uint64(r.IntN(100)) },
		"uniform":     func() uint64 { return uint64(r.IntN(1_000_000)) },
		"exponential": func() uint64 { return uint64(r.ExpFloat64() * 50_000) },
		"heavy tail":  func() uint64 { return uint64(math.Exp(r.Float64() * 30)) },
	}
	for name, gen := range dists {
		var h Histogram
		vals := make([]uint64, 100_000)
		for i := range vals {
			vals[i] = gen()
			h.Record(vals[i])
		}
		sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
		for _, q := range []float64{0.001, 0.5, 0.9, 0.99, 0.999, 1} {
			rank := int(math.Ceil(q * float64(len(vals))))
			want := vals[rank-1]
			got := h.Quantile(q)
			// The bucket holding the value has a width of at most
			// want/2^subBits; the answer is that bucket's top.
			if got < want || float64(got-want) > float64(want)/subCount {
				t.Errorf("%s q=%v: %d, oracle %d", name, q, got, want)
			}
		}
		if h.Count() != uint64(len(vals)) || h.Max() != vals[len(vals)-1] {
			t.Errorf("%s: count %d max %d", name, h.Count(), h.Max())
		}
	}
}

func TestHistogramBuckets(t *testing.T) {
	// Every value falls in the bucket whose range holds it, and the
	// buckets tile the values without gaps.
	prevHi := uint64(0)
	for i := 0; i < histBuckets; i++ {
		lo, hi := bucketRange(i)
		if i > 0 && lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d after %d", i, lo, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d,%d] maps to %d,%d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		prevHi = hi
		if hi == math.MaxUint64 {
			break
		}
	}
	if prevHi != math.MaxUint64 {
		t.Fatalf("buckets end at %d", prevHi)
	}
}

func TestHistogramMergeAndEmpty(t *testing.T) {
	var a, b, all Histogram
	if a.Quantile(0.5) != 0 || a.Mean() != 0 {
		t.Fatal("empty histogram not zero")
	}
	for v := uint64(1); v < 5000; v += 7 {
		if v%2 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
		all.Record(v)
	}
	a.Merge(&b)
	for _, q := range []float64{0.1, 0.5, 0.99} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("q=%v: merged %d, whole %d", q, a.Quantile(q), all.Quantile(q))
		}
	}
	if a.Mean() != all.Mean() || a.Count() != all.Count() {
		t.Error("merged mean or count differs")
	}
	a.Reset()
	if a.Count() != 0 {
		t.Error("Reset kept values")
	}
}

func TestHistogramRecordAllocatesNothing(t *testing.T) {
	var h Histogram
	v := uint64(1)
	if n := testing.AllocsPerRun(1000, func() { h.Record(v); v = v*3 + 1 }); n != 0 {
		t.Fatalf("Record allocates %v", n)
	}
}
