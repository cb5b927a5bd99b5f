package flowtable_test

import (
	"fmt"
	"testing"

	"xnat/bench"
	"xnat/flowtable"
)

// The same measurements as `xnat-bench flowtable`, for go test -bench.
// The peer (map+RWMutex) is measured by bench.MeasureFlowtable.

var sizes = []int{1000, 100_000, 1_000_000}

func BenchmarkLookup(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tab, keys := filled(b, n, 1)
			c := tab.Core(0)
			b.ResetTimer()
			for i := 0; i < b.N; i += 64 {
				c.Enter()
				for j := range 64 {
					c.Lookup(&keys[(i+j)&(len(keys)-1)], 1)
				}
				c.Exit()
			}
		})
	}
}

func BenchmarkLookupBatch(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tab, keys := filled(b, n, 1)
			c := tab.Core(0)
			var refs [64]flowtable.Ref
			b.ResetTimer()
			for i := 0; i < b.N; i += 64 {
				off := i & (len(keys) - 1) &^ 63
				c.Enter()
				c.LookupBatch(keys[off:off+64], refs[:], 1)
				c.Exit()
			}
		})
	}
}

func filled(b *testing.B, n, workers int) (*flowtable.Table, []flowtable.Tuple) {
	b.Helper()
	tab, err := bench.NewFilledTable(n, workers)
	if err != nil {
		b.Fatal(err)
	}
	return tab, bench.SampleKeys(n, 99)
}
