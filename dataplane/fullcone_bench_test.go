package dataplane_test

import (
	"testing"

	"xnat/bench"
	"xnat/dataplane"
)

// BenchmarkPipelineCountedNAT and BenchmarkNewConnectionsNAT are
// BenchmarkPipelineCounted/udp and BenchmarkNewConnections with
// MASQUERADE and with FULLCONENAT, for callgrind counts of a mapping's
// cost beside MASQUERADE (each bed connection is its own inside endpoint,
// so every new connection also makes a mapping).
func BenchmarkPipelineCountedNAT(b *testing.B) {
	for _, nat := range []string{bench.NATMasquerade, bench.NATFullCone} {
		b.Run(nat, func(b *testing.B) {
			bed, err := bench.NewPipelineBedNAT(1000, "udp", nat)
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

func BenchmarkNewConnectionsNAT(b *testing.B) {
	for _, nat := range []string{bench.NATMasquerade, bench.NATFullCone} {
		b.Run(nat, func(b *testing.B) {
			bed, err := bench.NewPipelineBedNAT(max(b.N, 64), "udp", nat)
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
			if c := bed.DP.TotalCounters(); nat == bench.NATFullCone && c.MapCreated != uint64(b.N) {
				b.Fatalf("%d mappings for %d connections", c.MapCreated, b.N)
			}
		})
	}
}
