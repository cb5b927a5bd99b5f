package dataplane

import (
	"testing"

	"xnat/dataplane/topo"
)

// TestNextHopCacheShared: destinations behind one gateway share its one
// entry of nh, and a neighbour change (the gateway's MAC address changed)
// updates that entry in place, without emptying the cache: the next
// packet takes the established path to the new address.
func TestNextHopCacheShared(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	p := tb.dp.Pipeline(0)
	const n = 300
	for i := range n {
		r, out := tb.run(udpPkt(macA, macIn0, addrA, 5000, remote+uint32(i), 7000).bytes(t), portIn)
		expect(t, r, ActForward, portOut)
		if got := [6]byte(out[0:6]); got != macGW {
			t.Fatalf("destination %d sent to %x, want the gateway's %x", i, got, macGW)
		}
	}
	if p.nhLen != 2 {
		t.Fatalf("%d destinations behind one gateway took %d next-hop entries, want 1", n, p.nhLen-1)
	}
	// The established path relies on entry 0 staying empty (an MTU of 0).
	if p.nh[0] != (nhEntry{}) {
		t.Fatalf("next-hop entry 0 was written: %+v", p.nh[0])
	}
	envGen := p.envGen
	newGW := [6]byte{2, 0, 0, 0, 1, 0xfd}
	tb.dp.Neighbours().Update(topo.Neigh{IfIndex: 3, IP: addrGW, MAC: newGW, State: topo.NeighValid}, true)
	for i := range 2 {
		r, out := tb.run(udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t), portIn)
		expect(t, r, ActForward, portOut)
		if p.fastLast != 1 {
			t.Fatalf("packet %d after the change did not take the established path", i)
		}
		if got := [6]byte(out[0:6]); got != newGW {
			t.Fatalf("packet %d after the gateway's change sent to %x, want %x", i, got, newGW)
		}
	}
	if p.nhLen != 2 || p.envGen != envGen || p.nhHit(remote+1) == nil {
		t.Fatalf("the neighbour change rebuilt the cache: %d entries, Env generation %d (was %d)", p.nhLen-1, p.envGen, envGen)
	}
	// The gateway becomes unusable: its entry is retired, and a packet to
	// it is held; when it is usable again, the held packet leaves first.
	tb.dp.Neighbours().Update(topo.Neigh{IfIndex: 3, IP: addrGW, State: topo.NeighIncomplete}, true)
	r, _ := tb.run(udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t), portIn)
	if r.Action != ActHold {
		t.Fatalf("packet to an unusable gateway: %v %v, want held", r.Action, r.Reason)
	}
	tb.dp.Neighbours().Update(topo.Neigh{IfIndex: 3, IP: addrGW, MAC: macGW, State: topo.NeighValid}, true)
	p.Idle()
	rel := p.Released()
	if len(rel) != 1 || rel[0].Result.Action != ActForward || rel[0].Hold != r.Hold || rel[0].Result.Port != portOut {
		t.Fatalf("releases after the gateway resolved: %+v, want the held frame forwarded", rel)
	}
}

// TestNextHopCacheFull: more distinct next hops than nh holds. Each
// destination resolves to its own neighbour's address; when nh fills, the
// cache starts again, and destinations resolved before are resolved anew,
// correctly.
func TestNextHopCacheFull(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	p := tb.dp.Pipeline(0)
	const n = nhSize + 44
	host := func(i int) uint32 { return ip4(10, 1, byte(i>>8), byte(i)) }
	mac := func(i int) [6]byte { return [6]byte{2, 0, 0, 1, byte(i >> 8), byte(i)} }
	snap := testSnapshot(1500)
	snap.Routes = append(snap.Routes, topo.Route{Dst: topo.Prefix{Addr: ip4(10, 1, 0, 0), Len: 16}, IfIndex: 2})
	for i := range n {
		snap.Neighs = append(snap.Neighs, topo.Neigh{IfIndex: 2, IP: host(i), MAC: mac(i), State: topo.NeighValid})
	}
	env, err := NewEnv(EnvConfig{Snapshot: snap, Inside: []string{"in0"}, Outside: []string{"out0"}, Model: tb.dp.Env().Rules.Model(), Prev: tb.dp.Env(), Pools: tb.dp.Pools})
	if err != nil {
		t.Fatal(err)
	}
	p.env, p.envGen = env, env.gen
	tb.dp.Neighbours().Sync(snap.Neighs)
	p.resetNextHops()
	p.neighCheck()
	check := func(i int) {
		t.Helper()
		nh, r := p.nextHop(host(i))
		if r != ReasonNone || nh.mac != mac(i) || nh.port != portIn || nh.srcMAC != macIn0 {
			t.Fatalf("host %d: %+v %v, want port %d to %x", i, nh, r, portIn, mac(i))
		}
	}
	for i := range n {
		check(i)
		if p.nhLen < 2 || p.nhLen > nhSize {
			t.Fatalf("after host %d, %d entries in use", i, p.nhLen)
		}
	}
	if p.nhLen != n-(nhSize-1)+1 {
		t.Fatalf("%d next hops left %d entries in use, want %d", n, p.nhLen, n-(nhSize-1)+1)
	}
	for i := range n {
		check(i)
	}
}
