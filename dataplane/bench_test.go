package dataplane_test

import (
	"fmt"
	"testing"

	"xnat/bench"
	"xnat/dataplane"
)

// BenchmarkPipeline is `xnat-bench pipeline` for go test -bench: one core,
// batches of 64, established UDP traffic over n connections (b.N frames).
func BenchmarkPipeline(b *testing.B) {
	for _, n := range []int{1000, 1_000_000} {
		for _, proto := range []string{"udp", "tcp"} {
			b.Run(fmt.Sprintf("%s/%d", proto, n), func(b *testing.B) {
				bed, err := bench.NewPipelineBed(n, proto)
				if err != nil {
					b.Fatal(err)
				}
				frames := make([][]byte, 64)
				for i := range frames {
					frames[i] = make([]byte, 0, 2048)
				}
				sizes, in, out := make([]int, 64), make([]uint16, 64), make([]dataplane.Result, 64)
				bed.Run(0, n, 64, frames, sizes, in, out, false)
				b.ReportAllocs()
				b.ResetTimer()
				bed.Run(0, b.N, 64, frames, sizes, in, out, false)
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mpps")
			})
		}
	}
}

// BenchmarkPipelineCounted is BenchmarkPipeline at 1,000 connections with
// the expiry sweep's budget fixed at its floor, for counting instructions
// under callgrind (make instructions): the paced sweep follows the clock,
// and under valgrind the clock runs tens of times slower than the program,
// so its share per packet would depend on the emulation's speed. With the
// budget fixed, the count per packet is the same on every run of a build.
func BenchmarkPipelineCounted(b *testing.B) {
	for _, proto := range []string{"udp", "tcp"} {
		b.Run(proto, func(b *testing.B) {
			bed, err := bench.NewPipelineBed(1000, proto)
			if err != nil {
				b.Fatal(err)
			}
			bed.DP.Settings.SweepBudget.Store(8)
			frames := make([][]byte, 64)
			for i := range frames {
				frames[i] = make([]byte, 0, 2048)
			}
			sizes, in, out := make([]int, 64), make([]uint16, 64), make([]dataplane.Result, 64)
			bed.Run(0, 1000, 64, frames, sizes, in, out, false)
			b.ResetTimer()
			bed.Run(0, b.N, 64, frames, sizes, in, out, false)
		})
	}
}
