package dataplane_test

import (
	"testing"

	"xnat/bench"
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
			runCounted(b, bed)
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
			runNewConns(b, bed)
			if c := bed.DP.TotalCounters(); nat == bench.NATFullCone && c.MapCreated != uint64(b.N) {
				b.Fatalf("%d mappings for %d connections", c.MapCreated, b.N)
			}
		})
	}
}
