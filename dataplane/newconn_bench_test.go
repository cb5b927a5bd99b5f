package dataplane_test

import (
	"testing"

	"xnat/bench"
	"xnat/dataplane"
)

// BenchmarkNewConnections: each frame is the first packet of a new UDP
// connection (nat PREROUTING, filter FORWARD, nat POSTROUTING, a port from
// the core's allocator, the insert), one core, batches of 64.
func BenchmarkNewConnections(b *testing.B) {
	bed, err := bench.NewPipelineBed(max(b.N, 64), "udp")
	if err != nil {
		b.Fatal(err)
	}
	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = make([]byte, 0, 2048)
	}
	sizes, in, out := make([]int, 64), make([]uint16, 64), make([]dataplane.Result, 64)
	b.ReportAllocs()
	b.ResetTimer()
	if got := bed.Run(0, b.N, 64, frames, sizes, in, out, false); got != b.N {
		b.Fatalf("forwarded %d of %d", got, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
}
