package ha

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"xnat/dataplane"
	"xnat/flowtable"
)

// countHandler counts the connection messages a link receives.
type countHandler struct{ n atomic.Uint64 }

func (h *countHandler) Conn(MsgType, *Conn) { h.n.Add(1) }
func (h *countHandler) Resync()             {}

// BenchmarkExportLink is the sync path of new connections: events drained
// from a core's ring, sent over a UDP link on the loopback to a peer that
// acknowledges them. One op is one new connection, counted when the peer
// has received it.
func BenchmarkExportLink(b *testing.B) {
	lo := netip.MustParseAddr("127.0.0.1")
	recv := &countHandler{}
	rl, err := Listen(LinkConfig{Local: netip.AddrPortFrom(lo, 0), Peer: netip.AddrPortFrom(lo, 1)}, recv)
	if err != nil {
		b.Fatal(err)
	}
	sl, err := Listen(LinkConfig{Local: netip.AddrPortFrom(lo, 0), Peer: rl.LocalAddr()}, &countHandler{})
	if err != nil {
		b.Fatal(err)
	}
	rl.cfg.Peer = sl.LocalAddr()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rl.Run(ctx)
	go sl.Run(ctx)
	tab, err := flowtable.New(flowtable.Config{Capacity: 1024, Cores: 1, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	src := &fakeSource{q: make([][]dataplane.SyncEvent, 1)}
	e := NewExporter(src, sl, tab)
	ext := a4("198.51.100.1")
	const batch = 1024
	evs := make([]dataplane.SyncEvent, batch)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		for j := range evs {
			k := uint32(i + j)
			o := flowtable.MakeTuple(17, a4("10.0.0.16")+k/64000, uint16(1024+k%64000), a4("192.0.2.1"), 9000)
			r := flowtable.MakeTuple(17, a4("192.0.2.1"), 9000, ext, uint16(1024+k%64000))
			evs[j] = dataplane.SyncEvent{Kind: dataplane.SyncNew, Orig: o, Reply: r, Status: uint32(flowtable.UDP) | flowtable.FlagSrcNAT}
		}
		src.q[0] = evs[:min(batch, b.N-i)]
		if _, err := e.Poll(); err != nil {
			b.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); recv.n.Load() < uint64(b.N) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	if got := recv.n.Load(); got < uint64(b.N) {
		b.Fatalf("the peer received %d of %d (lost %d)", got, b.N, rl.Stats().Lost)
	}
}
