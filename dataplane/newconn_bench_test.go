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

// BenchmarkNewConnectionsSync is BenchmarkNewConnections with state sync
// on: each connection is also reported on the core's event ring, which is
// drained (as the sync goroutine does) every 8192 connections.
func BenchmarkNewConnectionsSync(b *testing.B) {
	bed, err := bench.NewPipelineBed(max(b.N, 64), "udp")
	if err != nil {
		b.Fatal(err)
	}
	bed.DP.EnableSync()
	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = make([]byte, 0, 2048)
	}
	sizes, in, out := make([]int, 64), make([]uint16, 64), make([]dataplane.Result, 64)
	evs := make([]dataplane.SyncEvent, 8192)
	b.ReportAllocs()
	b.ResetTimer()
	got, events := 0, 0
	for from := 0; from < b.N; from += 8192 {
		got += bed.Run(from, min(8192, b.N-from), 64, frames, sizes, in, out, false)
		events += bed.DP.DrainSync(0, evs)
	}
	if got != b.N || events != b.N || bed.DP.SyncDrops() != 0 {
		b.Fatalf("forwarded %d, reported %d of %d, dropped %d", got, events, b.N, bed.DP.SyncDrops())
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
}
