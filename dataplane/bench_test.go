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
				bt := newBatch()
				bt.run(bed, 0, n)
				b.ReportAllocs()
				b.ResetTimer()
				bt.run(bed, 0, b.N)
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
			runCounted(b, bed)
		})
	}
}

// runCounted runs BenchmarkPipelineCounted's measurement on a bed of
// 1,000 connections: the sweep budget at its floor, every connection
// made first, then b.N frames.
func runCounted(b *testing.B, bed *bench.PipelineBed) {
	bed.DP.Settings.SweepBudget.Store(8)
	bt := newBatch()
	bt.run(bed, 0, 1000)
	b.ResetTimer()
	bt.run(bed, 0, b.N)
}

// runNewConns runs BenchmarkNewConnections' measurement: b.N frames, each
// a bed connection's first, all of them forwarded.
func runNewConns(b *testing.B, bed *bench.PipelineBed) {
	bt := newBatch()
	b.ReportAllocs()
	b.ResetTimer()
	if got := bt.run(bed, 0, b.N); got != b.N {
		b.Fatalf("forwarded %d of %d", got, b.N)
	}
}

// batch is one batch's buffers for PipelineBed.Run: 64 frames and their
// sizes, ports and results.
type batch struct {
	frames [][]byte
	sizes  []int
	in     []uint16
	out    []dataplane.Result
}

func newBatch() *batch {
	bt := &batch{sizes: make([]int, 64), in: make([]uint16, 64), out: make([]dataplane.Result, 64)}
	bt.frames = make([][]byte, 64)
	for i := range bt.frames {
		bt.frames[i] = make([]byte, 0, 2048)
	}
	return bt
}

// run processes frames of the bed's connections [from, from+count) in
// batches of 64, as PipelineBed.Run does, and returns how many it
// forwarded.
func (bt *batch) run(bed *bench.PipelineBed, from, count int) int {
	return bed.Run(from, count, 64, bt.frames, bt.sizes, bt.in, bt.out, false)
}
