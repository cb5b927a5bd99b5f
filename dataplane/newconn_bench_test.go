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
	runNewConns(b, bed)
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
	bt := newBatch()
	evs := make([]dataplane.SyncEvent, 8192)
	b.ReportAllocs()
	b.ResetTimer()
	got, events := 0, 0
	for from := 0; from < b.N; from += 8192 {
		got += bt.run(bed, from, min(8192, b.N-from))
		events += bed.DP.DrainSync(0, evs)
	}
	if got != b.N || events != b.N || bed.DP.SyncDrops() != 0 {
		b.Fatalf("forwarded %d, reported %d of %d, dropped %d", got, events, b.N, bed.DP.SyncDrops())
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
}
