package dataplane

import (
	"testing"
	"time"

	"xnat/dataplane/topo"
)

// holdBed is a testbed whose gateway is not resolved yet.
func holdBed(t *testing.T) (*testbed, *Pipeline) {
	t.Helper()
	tb := newTestbed(t, masqRules, 1500, 1)
	tb.dp.Neighbours().Update(topo.Neigh{IfIndex: 3, IP: addrGW}, false)
	return tb, tb.dp.Pipeline(0)
}

// runHeld processes one frame and returns its result and buffer (whole:
// a held frame is released in it later).
func (tb *testbed) runHeld(frame []byte, in uint16) (Result, []byte) {
	buf := make([]byte, len(frame), 2048)
	copy(buf, frame)
	out := make([]Result, 1)
	tb.dp.Pipeline(0).Process([][]byte{buf}, []int{len(buf)}, []uint16{in}, out)
	return out[0], buf
}

func gwValid() (topo.Neigh, bool) {
	return topo.Neigh{IfIndex: 3, IP: addrGW, MAC: macGW, State: topo.NeighValid}, true
}

// TestHoldUntilResolved: packets to a next hop being resolved are held,
// the first having created its connection, the resolution asked of the
// kernel once; when the neighbour resolves they leave in order,
// translated, to its address.
func TestHoldUntilResolved(t *testing.T) {
	tb, p := holdBed(t)
	var bufs [][]byte
	var holds []uint16
	for i := range 3 {
		r, buf := tb.runHeld(udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t), portIn)
		if r.Action != ActHold {
			t.Fatalf("packet %d: %v %v, want held", i, r.Action, r.Reason)
		}
		bufs, holds = append(bufs, buf), append(holds, r.Hold)
	}
	if n := tb.tab.Count(); n != 1 {
		t.Fatalf("%d connections while the next hop resolves, want 1", n)
	}
	misses := make([]NeighMiss, 8)
	if n := p.DrainNeighMisses(misses); n != 1 || misses[0].IP != addrGW || misses[0].IfIndex != 3 {
		t.Fatalf("resolutions asked: %+v", misses[:n])
	}
	if c := tb.dp.TotalCounters(); c.NeighQueued != 3 || p.Held() != 3 {
		t.Fatalf("neigh_queued %d, held %d; want 3 and 3", c.NeighQueued, p.Held())
	}
	p.Idle()
	if len(p.Released()) != 0 {
		t.Fatalf("released before resolution: %+v", p.Released())
	}
	tb.dp.Neighbours().Update(gwValid())
	p.Idle()
	rel := p.Released()
	if len(rel) != 3 {
		t.Fatalf("%d releases, want 3", len(rel))
	}
	for i, rl := range rel {
		if rl.Hold != holds[i] || rl.Result.Action != ActForward || rl.Result.Port != portOut {
			t.Fatalf("release %d: %+v, want frame %d forwarded on port %d", i, rl, holds[i], portOut)
		}
		d := decode(t, bufs[i][:rl.Result.Len])
		macEq(t, "destination MAC", d.eth.DstMAC, macGW)
		macEq(t, "source MAC", d.eth.SrcMAC, macOut0)
		ipEq(t, "source", d.ip.SrcIP, addrExt)
		if d.ip.TTL != 63 {
			t.Fatalf("TTL %d, want 63", d.ip.TTL)
		}
	}
	if p.Held() != 0 {
		t.Fatalf("%d frames still held", p.Held())
	}
	// The next packet goes straight out.
	r, _ := tb.run(udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	if c := tb.dp.TotalCounters(); c.Forwarded != 4 {
		t.Fatalf("forwarded %d, want 4", c.Forwarded)
	}
}

// TestHoldQueueBounds: a next hop's queue keeps its newest frames within
// unres_qlen_bytes (each charged its whole buffer), pushing the oldest
// out; a core holds at most HoldCapacity frames.
func TestHoldQueueBounds(t *testing.T) {
	tb, p := holdBed(t)
	tb.dp.Settings.UnresQlenBytes.Store(3 * 2048)
	var holds []uint16
	for i := range 5 {
		r, _ := tb.runHeld(udpPkt(macA, macIn0, addrA, uint16(5000+i), remote, 7000).bytes(t), portIn)
		if r.Action != ActHold {
			t.Fatalf("packet %d: %v %v", i, r.Action, r.Reason)
		}
		holds = append(holds, r.Hold)
		rel := p.Released()
		if i < 3 && len(rel) != 0 || i >= 3 && (len(rel) != 1 || rel[0].Hold != holds[i-3] || rel[0].Result.Reason != ReasonNeighQueueFull) {
			t.Fatalf("packet %d pushed out %+v", i, rel)
		}
	}
	if c := tb.dp.TotalCounters(); p.Held() != 3 || c.Drop(ReasonNeighQueueFull) != 2 || tb.tab.Count() != 5 {
		t.Fatalf("held %d, neigh_queue_full %d, connections %d; want 3, 2, 5", p.Held(), c.Drop(ReasonNeighQueueFull), tb.tab.Count())
	}
	// The core's bound.
	tb.dp.Settings.UnresQlenBytes.Store(1 << 30)
	full := 0
	for i := range HoldCapacity {
		r, _ := tb.runHeld(udpPkt(macA, macIn0, addrA, uint16(6000+i), remote, 7000).bytes(t), portIn)
		if r.Action == ActDrop && r.Reason == ReasonNeighQueueFull {
			full++
		}
	}
	if p.Held() != HoldCapacity || full != 3 {
		t.Fatalf("held %d (want %d), %d refused (want 3)", p.Held(), HoldCapacity, full)
	}
	// Stopping releases them all as drops.
	p.DropHeld()
	if len(p.Released()) != HoldCapacity || p.Held() != 0 {
		t.Fatalf("DropHeld released %d, %d still held", len(p.Released()), p.Held())
	}
	for _, rl := range p.Released() {
		if rl.Result.Action != ActDrop {
			t.Fatalf("DropHeld: %+v", rl)
		}
	}
}

// TestHoldFailedResolution: when the kernel reports the resolution
// failed, each held packet is answered with ICMP host unreachable from
// the ingress port's address, quoting the packet as its sender sent it.
func TestHoldFailedResolution(t *testing.T) {
	tb, p := holdBed(t)
	r, buf := tb.runHeld(udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t), portIn)
	if r.Action != ActHold {
		t.Fatalf("%v %v, want held", r.Action, r.Reason)
	}
	tb.dp.Neighbours().Update(topo.Neigh{IfIndex: 3, IP: addrGW, State: topo.NeighFailed}, true)
	p.Idle()
	rel := p.Released()
	if len(rel) != 1 || rel[0].Result.Action != ActReply || rel[0].Result.Port != portIn {
		t.Fatalf("releases %+v, want an ICMP error on port %d", rel, portIn)
	}
	d := decode(t, buf[:rel[0].Result.Len])
	if d.icmp == nil || d.icmp.TypeCode.Type() != 3 || d.icmp.TypeCode.Code() != 1 {
		t.Fatalf("reply %+v, want ICMP host unreachable", d.icmp)
	}
	ipEq(t, "error source", d.ip.SrcIP, addrExt) // the masqueraded source, as Linux
	ipEq(t, "error destination", d.ip.DstIP, addrA)
	macEq(t, "error destination MAC", d.eth.DstMAC, macA)
	if d.inner == nil {
		t.Fatal("no quoted datagram")
	}
	ipEq(t, "quoted source", d.inner.SrcIP, addrA)
	ipEq(t, "quoted destination", d.inner.DstIP, remote)
	if q := d.inner.Payload; len(q) < 4 || uint16(q[0])<<8|uint16(q[1]) != 5000 {
		t.Fatalf("quoted source port %x, want 5000", q[:4])
	}
	if c := tb.dp.TotalCounters(); c.Drop(ReasonNeighFailed) != 1 || c.Replies != 1 {
		t.Fatalf("neigh_failed %d, replies %d; want 1 and 1", c.Drop(ReasonNeighFailed), c.Replies)
	}
	// A failure known before the packet came does not fail it: the kernel
	// probes again.
	r, _ = tb.runHeld(udpPkt(macA, macIn0, addrA, 5001, remote, 7000).bytes(t), portIn)
	p.Idle()
	if r.Action != ActHold || len(p.Released()) != 0 {
		t.Fatalf("packet after an old failure: %v, releases %+v", r.Action, p.Released())
	}
	// Nor does the kernel's silence hold it for ever.
	p.held.pend[0].since -= int64(holdTimeout + time.Second)
	p.Idle()
	if rel := p.Released(); len(rel) != 1 || rel[0].Result.Action != ActReply {
		t.Fatalf("after the hold timeout: %+v", rel)
	}
}

// TestMartians: broadcast and multicast go to the kernel, martian
// sources and destinations are dropped, each counted, and none creates
// a connection.
func TestMartians(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	cases := []struct {
		src, dst uint32
		want     Reason
	}{
		{addrA, 0xffffffff, ReasonBroadcast},
		{0, 0xffffffff, ReasonBroadcast}, // DHCP discover
		{addrA, ip4(10, 0, 0, 255), ReasonBroadcast},
		{addrA, ip4(224, 0, 0, 251), ReasonBroadcast},
		{addrA, ip4(239, 1, 2, 3), ReasonBroadcast},
		{addrA, ip4(127, 0, 0, 1), ReasonMartian},
		{ip4(127, 0, 0, 1), remote, ReasonMartian},
		{addrA, ip4(169, 254, 1, 1), ReasonMartian},
		{ip4(169, 254, 1, 1), remote, ReasonMartian},
		{addrA, ip4(0, 1, 2, 3), ReasonMartian},
		{ip4(0, 0, 0, 0), remote, ReasonMartian},
		{addrA, ip4(240, 0, 0, 1), ReasonMartian},
		{ip4(224, 0, 0, 5), remote, ReasonMartian},
		{ip4(10, 0, 0, 255), remote, ReasonMartian},
	}
	for _, c := range cases {
		for _, ttl := range []uint8{64, 1} {
			pk := udpPkt(macA, macIn0, c.src, 68, c.dst, 67)
			pk.ttl = ttl
			r, _ := tb.run(pk.bytes(t), portIn)
			want := ActDrop
			if c.want == ReasonBroadcast {
				want = ActKernel
			}
			if r.Action != want || r.Reason != c.want {
				t.Errorf("%s -> %s TTL %d: %v %v, want %v %v", netIP(c.src), netIP(c.dst), ttl, r.Action, r.Reason, want, c.want)
			}
		}
	}
	c := tb.dp.TotalCounters()
	if c.Drop(ReasonBroadcast) != 10 || c.Drop(ReasonMartian) != 18 || c.ToKernel != 10 || tb.tab.Count() != 0 || c.Replies != 0 {
		t.Fatalf("broadcast %d, martian %d, to kernel %d, connections %d, replies %d",
			c.Drop(ReasonBroadcast), c.Drop(ReasonMartian), c.ToKernel, tb.tab.Count(), c.Replies)
	}
}

// TestNoAllocsHold: holding a batch and releasing it allocates nothing.
func TestNoAllocsHold(t *testing.T) {
	tb, p := holdBed(t)
	const n = 64
	orig := make([][]byte, n)
	frames := make([][]byte, n)
	sizes := make([]int, n)
	in := make([]uint16, n)
	out := make([]Result, n)
	for i := range n {
		orig[i] = udpPkt(macA, macIn0, addrA, uint16(20000+i), remote, 7000).bytes(t)
		frames[i] = make([]byte, len(orig[i]), 2048)
	}
	nt := tb.dp.Neighbours()
	gw, _ := gwValid()
	released := 0
	allocs := testing.AllocsPerRun(50, func() {
		for i := range frames {
			frames[i] = frames[i][:len(orig[i])]
			copy(frames[i], orig[i])
			sizes[i] = len(orig[i])
			in[i] = portIn
		}
		nt.Update(topo.Neigh{IfIndex: 3, IP: addrGW, State: topo.NeighIncomplete}, true)
		p.Process(frames, sizes, in, out)
		nt.Update(gw, true)
		p.Idle()
		released += len(p.Released())
	})
	if allocs != 0 {
		t.Errorf("hold and release: %v allocations per batch", allocs)
	}
	if released != 51*n {
		t.Errorf("released %d frames, want %d", released, 51*n)
	}
}
