package dataplane

import (
	"sync"
	"testing"
	"time"

	"xnat/flowtable"
	"xnat/portalloc"
)

const fullConeRules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i out0 -j FULLCONENAT
-A POSTROUTING -o out0 -j FULLCONENAT
COMMIT
`

// fullConeOutOnly maps endpoint-independently but filters as MASQUERADE
// does: without the PREROUTING rule nothing is admitted inbound.
const fullConeOutOnly = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o out0 -j FULLCONENAT
COMMIT
`

var (
	remote2 = ip4(198, 51, 100, 8)
	remote3 = ip4(192, 0, 2, 44)
)

// sendOut sends a UDP datagram from an inside host on core and returns
// the external source (address, port) it left with.
func (tb *testbed) sendOut(core int, mac [6]byte, src uint32, sport uint16, dst uint32, dport uint16) (uint32, uint16) {
	tb.t.Helper()
	r, out := tb.runOn(core, udpPkt(mac, macIn0, src, sport, dst, dport).bytes(tb.t), portIn)
	expect(tb.t, r, ActForward, portOut)
	d := decode(tb.t, out)
	return ip4(d.ip.SrcIP[0], d.ip.SrcIP[1], d.ip.SrcIP[2], d.ip.SrcIP[3]), uint16(d.udp.SrcPort)
}

func (tb *testbed) idle(cores int) {
	for range 4 {
		for c := range cores {
			tb.dp.Pipeline(c).Idle()
		}
	}
}

func TestFullConeMappingAndFiltering(t *testing.T) {
	for _, cores := range []int{1, 2} {
		tb := newTestbed(t, fullConeRules, 1500, cores)
		// One inside socket, two servers: one external endpoint.
		a1, p1 := tb.sendOut(0, macA, addrA, 5000, remote, 3478)
		a2, p2 := tb.sendOut(cores-1, macA, addrA, 5000, remote2, 3478)
		if a1 != addrExt || a2 != a1 || p2 != p1 {
			t.Fatalf("cores %d: mapped %s:%d and %s:%d, want one endpoint on %s", cores,
				flowtable.FormatAddr(a1), p1, flowtable.FormatAddr(a2), p2, flowtable.FormatAddr(addrExt))
		}
		// A third host, never contacted, reaches the inside socket; on
		// two cores its packet arrives on the core that did not make the
		// mapping.
		r, out := tb.runOn(cores-1, udpPkt(macGW, macOut0, remote3, 9999, addrExt, p1).bytes(t), portOut)
		expect(t, r, ActForward, portIn)
		d := decode(t, out)
		ipEq(t, "inbound destination", d.ip.DstIP, addrA)
		ipEq(t, "inbound source", d.ip.SrcIP, remote3)
		if d.udp.DstPort != 5000 || d.udp.SrcPort != 9999 {
			t.Fatalf("inbound ports %d -> %d, want 9999 -> 5000", d.udp.SrcPort, d.udp.DstPort)
		}
		// The inside socket's answer leaves from the mapping.
		if a, p := tb.sendOut(0, macA, addrA, 5000, remote3, 9999); a != addrExt || p != p1 {
			t.Fatalf("answer left from %s:%d, want the mapping's %d", flowtable.FormatAddr(a), p, p1)
		}
		c := tb.dp.TotalCounters()
		if c.MapCreated != 1 || c.MapReused != 1 || c.MapInbound != 1 || c.MapFailed != 0 || c.Created != 3 {
			t.Fatalf("cores %d: created %d reused %d inbound %d failed %d connections %d", cores,
				c.MapCreated, c.MapReused, c.MapInbound, c.MapFailed, c.Created)
		}
		// Another inside socket gets another mapping, not this port.
		if _, p := tb.sendOut(0, macB, addrB, 5000, remote, 3478); p == p1 {
			t.Fatalf("B's socket shares A's mapped port %d", p)
		}
		// Traffic to a port no mapping holds stays unsolicited.
		r, _ = tb.run(udpPkt(macGW, macOut0, remote3, 9999, addrExt, p1+1).bytes(t), portOut)
		if r.Action != ActDrop || r.Reason != ReasonUnsolicited {
			t.Fatalf("to an unmapped port: %v %v", r.Action, r.Reason)
		}
	}
}

func TestFullConeFilteringNeedsPrerouting(t *testing.T) {
	for _, rs := range []string{fullConeOutOnly, masqRules} {
		tb := newTestbed(t, rs, 1500, 1)
		a1, p1 := tb.sendOut(0, macA, addrA, 5000, remote, 3478)
		_, p2 := tb.sendOut(0, macA, addrA, 5000, remote2, 3478)
		if rs == fullConeOutOnly && p2 != p1 {
			t.Fatalf("FULLCONENAT in POSTROUTING: ports %d and %d", p1, p2)
		}
		r, _ := tb.run(udpPkt(macGW, macOut0, remote3, 9999, a1, p1).bytes(t), portOut)
		if r.Action != ActDrop || r.Reason != ReasonUnsolicited {
			t.Fatalf("inbound from a third host without PREROUTING FULLCONENAT: %v %v", r.Action, r.Reason)
		}
	}
}

// TestFullConeMappingLifetime: a mapping outlives its last connection by
// the mapping timeout (at least 120 s), then is gone, refuses inbound
// traffic, and its port is free again.
func TestFullConeMappingLifetime(t *testing.T) {
	tb := newTestbed(t, fullConeRules, 1500, 2)
	ext, port := tb.sendOut(0, macA, addrA, 5000, remote, 3478)
	key := insideKey(17, addrA, 5000)
	mapping := func() (*flowtable.Flow, bool) {
		p := tb.dp.Pipeline(0)
		p.mc.Enter()
		defer p.mc.Exit()
		r := p.mc.Lookup(&key, tb.dp.Pipeline(0).now)
		if r == 0 {
			return nil, false
		}
		return tb.dp.Mappings.Flow(r), true
	}
	tb.idle(2)
	if f, ok := mapping(); !ok || f.Users() != 1 {
		t.Fatalf("mapping with its connection: %v", ok)
	}
	// The connection expires (UDP unreplied: 30 s); the mapping stays,
	// with no users, its port still held by the allocator that gave it.
	tb.dp.start = tb.dp.start.Add(-31 * time.Second)
	tb.idle(2)
	if tb.tab.Count() != 0 {
		t.Fatalf("%d connections after their timeout", tb.tab.Count())
	}
	f, ok := mapping()
	if !ok || f.Users() != 0 {
		t.Fatalf("mapping after its last connection: live %v", ok)
	}
	pool := auxPool(f.Aux())
	if u := tb.dp.Pools.allocator(pool, 0).Uses(17, ext, port); u != 1 {
		t.Fatalf("mapped port uses %d, want 1 (the mapping's)", u)
	}
	// Inbound traffic is still admitted within the mapping timeout, on
	// the other core, and holds the mapping again.
	tb.dp.start = tb.dp.start.Add(-100 * time.Second)
	r, _ := tb.runOn(1, udpPkt(macGW, macOut0, remote3, 9999, ext, port).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
	if f, ok := mapping(); !ok || f.Users() != 1 {
		t.Fatalf("inbound connection does not hold the mapping")
	}
	// That connection expires; 119 s later the mapping lives, at 121 s
	// it is gone.
	tb.dp.start = tb.dp.start.Add(-31 * time.Second)
	tb.idle(2)
	if tb.tab.Count() != 0 {
		t.Fatalf("%d connections after their timeout", tb.tab.Count())
	}
	tb.dp.start = tb.dp.start.Add(-119 * time.Second)
	tb.idle(2)
	if _, ok := mapping(); !ok {
		t.Fatal("mapping gone before the mapping timeout")
	}
	tb.dp.start = tb.dp.start.Add(-2 * time.Second)
	tb.idle(2)
	if _, ok := mapping(); ok {
		t.Fatal("mapping alive after the mapping timeout")
	}
	c := tb.dp.TotalCounters()
	if c.MapExpired != 1 || tb.dp.Mappings.Count() != 0 {
		t.Fatalf("expired %d, mappings %d", c.MapExpired, tb.dp.Mappings.Count())
	}
	if u := tb.dp.Pools.allocator(pool, 0).Uses(17, ext, port); u != 0 {
		t.Fatalf("expired mapping's port uses %d", u)
	}
	r, _ = tb.run(udpPkt(macGW, macOut0, remote3, 9999, ext, port).bytes(t), portOut)
	if r.Action != ActDrop || r.Reason != ReasonUnsolicited {
		t.Fatalf("inbound after the mapping expired: %v %v", r.Action, r.Reason)
	}
}

// TestFullConeHairpin: an inside host sending to another's mapping
// reaches it, seen from its own mapping, and the answer comes back.
func TestFullConeHairpin(t *testing.T) {
	tb := newTestbed(t, fullConeRules, 1500, 1)
	_, pa := tb.sendOut(0, macA, addrA, 5000, remote, 3478)
	_, pb := tb.sendOut(0, macB, addrB, 6000, remote, 3478)
	r, out := tb.run(udpPkt(macB, macIn0, addrB, 6000, addrExt, pa).bytes(t), portIn)
	expect(t, r, ActForward, portIn)
	d := decode(t, out)
	ipEq(t, "hairpin destination", d.ip.DstIP, addrA)
	ipEq(t, "hairpin source", d.ip.SrcIP, addrExt)
	if d.udp.DstPort != 5000 || uint16(d.udp.SrcPort) != pb {
		t.Fatalf("hairpin ports %d -> %d, want %d (B's mapping) -> 5000", d.udp.SrcPort, d.udp.DstPort, pb)
	}
	r, out = tb.run(udpPkt(macA, macIn0, addrA, 5000, addrExt, pb).bytes(t), portIn)
	expect(t, r, ActForward, portIn)
	d = decode(t, out)
	ipEq(t, "answer destination", d.ip.DstIP, addrB)
	ipEq(t, "answer source", d.ip.SrcIP, addrExt)
	if uint16(d.udp.SrcPort) != pa || d.udp.DstPort != 6000 {
		t.Fatalf("answer ports %d -> %d, want %d -> 6000", d.udp.SrcPort, d.udp.DstPort, pa)
	}
	if c := tb.dp.TotalCounters(); c.MapCreated != 2 || c.MapReused != 1 || c.MapInbound != 1 {
		t.Fatalf("created %d reused %d inbound %d", c.MapCreated, c.MapReused, c.MapInbound)
	}
}

// TestFullConeTCP: a TCP mapping admits an inbound SYN from any host
// (RFC 5382 REQ-2), and its connections keep one external port.
func TestFullConeTCP(t *testing.T) {
	tb := newTestbed(t, fullConeRules, 1500, 1)
	r, out := tb.run(tcpPkt(macA, macIn0, addrA, 40000, remote, 443, 0x02, 1, 0).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	p1 := uint16(decode(t, out).tcp.SrcPort)
	r, out = tb.run(tcpPkt(macA, macIn0, addrA, 40000, remote2, 443, 0x02, 1, 0).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	if p2 := uint16(decode(t, out).tcp.SrcPort); p2 != p1 {
		t.Fatalf("TCP ports %d and %d", p1, p2)
	}
	r, out = tb.run(tcpPkt(macGW, macOut0, remote3, 50000, addrExt, p1, 0x02, 7, 0).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
	d := decode(t, out)
	ipEq(t, "SYN destination", d.ip.DstIP, addrA)
	if d.tcp.DstPort != 40000 {
		t.Fatalf("SYN to port %d", d.tcp.DstPort)
	}
	// Without nf_conntrack_tcp_loose a bare ACK is no new connection: not
	// admitted. (With it, as in Linux, it is picked up like any.)
	tb.dp.Settings.TCPLoose.Store(false)
	r, _ = tb.run(tcpPkt(macGW, macOut0, remote3, 50001, addrExt, p1, 0x10, 7, 9).bytes(t), portOut)
	if r.Action == ActForward {
		t.Fatal("an ACK without a connection was admitted through the mapping")
	}
}

// TestFullConeAllocs: new connections through a mapping, new mappings,
// and inbound admissions allocate nothing.
func TestFullConeAllocs(t *testing.T) {
	tb := newTestbed(t, fullConeRules, 1500, 1)
	p := tb.dp.Pipeline(0)
	frames, sizes, in, res := make([][]byte, 1), []int{0}, []uint16{0}, make([]Result, 1)
	outT := udpPkt(macA, macIn0, addrA, 1, remote, 1).bytes(t)
	inT := udpPkt(macGW, macOut0, remote3, 1, addrExt, 1).bytes(t)
	buf := make([]byte, 0, 2048)
	send := func(tmpl []byte, port uint16, sport, dport uint16) {
		buf = append(buf[:0], tmpl...)
		buf[offL4], buf[offL4+1] = byte(sport>>8), byte(sport)
		buf[offL4+2], buf[offL4+3] = byte(dport>>8), byte(dport)
		buf[offL4+6], buf[offL4+7] = 0, 0 // no UDP checksum
		frames[0], sizes[0], in[0] = buf, len(buf), port
		p.Process(frames, sizes, in, res)
	}
	i := uint16(0)
	n := testing.AllocsPerRun(300, func() {
		i++
		send(outT, portIn, 20000+i, 1000)                      // a new mapping
		send(outT, portIn, 20000+i, 2000)                      // reused
		mapped := uint16(buf[offL4])<<8 | uint16(buf[offL4+1]) // its external port
		send(inT, portOut, 3000+i, mapped)                     // admitted inbound
		if res[0].Action != ActForward {
			t.Fatalf("inbound: %v %v", res[0].Action, res[0].Reason)
		}
	})
	if n != 0 {
		t.Fatalf("%.1f allocations a round", n)
	}
	if c := tb.dp.TotalCounters(); c.MapCreated < 300 || c.MapInbound < 300 || c.MapFailed != 0 {
		t.Fatalf("created %d inbound %d failed %d", c.MapCreated, c.MapInbound, c.MapFailed)
	}
}

// TestFullConeLimit: at xnat.fullcone_max a new inside endpoint's
// connection runs as a MASQUERADE connection, counted failed, and is not
// admitted inbound.
func TestFullConeLimit(t *testing.T) {
	tb := newTestbed(t, fullConeRules, 1500, 1)
	if err := tb.dp.Mappings.SetMax(1); err != nil {
		t.Fatal(err)
	}
	tb.sendOut(0, macA, addrA, 5000, remote, 3478)
	ext, p := tb.sendOut(0, macB, addrB, 6000, remote, 3478)
	c := tb.dp.TotalCounters()
	if c.MapCreated != 1 || c.MapFailed != 1 || c.Created != 2 {
		t.Fatalf("created %d failed %d connections %d", c.MapCreated, c.MapFailed, c.Created)
	}
	r, _ := tb.run(udpPkt(macGW, macOut0, remote3, 9999, ext, p).bytes(t), portOut)
	if r.Action != ActDrop || r.Reason != ReasonUnsolicited {
		t.Fatalf("inbound to an unmapped connection's port: %v %v", r.Action, r.Reason)
	}
	// Its answer from the server still comes back.
	r, _ = tb.run(udpPkt(macGW, macOut0, remote, 3478, ext, p).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
}

// TestFullConeTwoCoresConcurrent: two cores make, join and admit through
// mappings of the same inside endpoints at once (under -race in make
// test's race target); once every connection and mapping has expired,
// no mapping and no port use is left.
func TestFullConeTwoCoresConcurrent(t *testing.T) {
	tb := newTestbed(t, fullConeRules, 1500, 2)
	const endpoints = 200
	var wg sync.WaitGroup
	for core := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := tb.dp.Pipeline(core)
			dst := []uint32{remote, remote2}[core]
			frames, sizes, in, res := make([][]byte, 1), []int{0}, []uint16{0}, make([]Result, 1)
			for i := range endpoints {
				f := udpPkt(macA, macIn0, addrA, uint16(20000+i), dst, 3478).bytes(t)
				frames[0], sizes[0], in[0] = f, len(f), portIn
				p.Process(frames, sizes, in, res)
				if res[0].Action != ActForward {
					t.Errorf("core %d: outbound %v %v", core, res[0].Action, res[0].Reason)
					return
				}
				ext := uint16(f[offL4])<<8 | uint16(f[offL4+1])
				g := udpPkt(macGW, macOut0, remote3, uint16(1000+core), addrExt, ext).bytes(t)
				frames[0], sizes[0], in[0] = g, len(g), portOut
				p.Process(frames, sizes, in, res)
			}
		}()
	}
	wg.Wait()
	c := tb.dp.TotalCounters()
	if c.MapCreated+c.MapFailed < endpoints || c.MapCreated > endpoints {
		t.Fatalf("created %d failed %d for %d endpoints", c.MapCreated, c.MapFailed, endpoints)
	}
	t.Logf("created %d reused %d inbound %d failed %d", c.MapCreated, c.MapReused, c.MapInbound, c.MapFailed)
	tb.dp.start = tb.dp.start.Add(-31 * time.Second)
	for range 200 {
		tb.idle(2)
	}
	tb.dp.start = tb.dp.start.Add(-121 * time.Second)
	for range 200 {
		tb.idle(2)
	}
	if n, m := tb.tab.Count(), tb.dp.Mappings.Count(); n != 0 || m != 0 {
		t.Fatalf("%d connections, %d mappings left", n, m)
	}
	for _, pl := range *tb.dp.Pools.list.Load() {
		for core, a := range pl.allocs {
			if s := a.Stats(); s.PortsInUse != 0 {
				t.Fatalf("pool %v core %d: %d ports in use after everything expired", pl.key, core, s.PortsInUse)
			}
		}
	}
}

// TestFullConePortsExhausted: when every port of the pool holds a
// mapping, a new inside endpoint's connection still goes out, sharing a
// port as MASQUERADE's connections do, unmapped and counted failed.
func TestFullConePortsExhausted(t *testing.T) {
	const rules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o out0 -p udp -j FULLCONENAT --to-ports 7000-7001
COMMIT
`
	tb := newTestbed(t, rules, 1500, 1)
	seen := map[uint16]bool{}
	for i := range 2 {
		_, p := tb.sendOut(0, macA, addrA, uint16(5000+i), remote, 3478)
		seen[p] = true
	}
	if len(seen) != 2 {
		t.Fatalf("two mappings on ports %v", seen)
	}
	_, p := tb.sendOut(0, macA, addrA, 5002, remote2, 3478)
	if p != 7000 && p != 7001 {
		t.Fatalf("third endpoint on port %d", p)
	}
	if c := tb.dp.TotalCounters(); c.MapCreated != 2 || c.MapFailed != 1 || c.Drop(ReasonOutOfPorts) != 0 {
		t.Fatalf("created %d failed %d out_of_ports %d", c.MapCreated, c.MapFailed, c.Drop(ReasonOutOfPorts))
	}
}

// TestFullConePerSource: connections that join a mapping count against
// xnat.per_source_max like any, and give their count back when they end.
func TestFullConePerSource(t *testing.T) {
	tb, lim := newLimitedTestbedRules(t, portalloc.LimiterConfig{Cores: 1, Conns: 4096, MaxConns: 2}, fullConeRules)
	tb.sendOut(0, macA, addrA, 5000, remote, 3478)
	tb.sendOut(0, macA, addrA, 5000, remote2, 3478) // joins the mapping
	if c, p := lim.Count(addrA); c != 2 || p != 1 {
		t.Fatalf("counts %d %d, want 2 connections on 1 port", c, p)
	}
	r, _ := tb.run(udpPkt(macA, macIn0, addrA, 5000, remote3, 3478).bytes(t), portIn)
	if r.Action != ActDrop || r.Reason != ReasonPerSource {
		t.Fatalf("a third connection through the mapping: %v %v", r.Action, r.Reason)
	}
	if !tb.tab.Delete(flowtable.MakeTuple(flowtable.ProtoUDP, addrA, 5000, remote2, 3478)) {
		t.Fatal("delete")
	}
	tb.dp.Pipeline(0).Idle()
	if c, _ := lim.Count(addrA); c != 1 {
		t.Fatalf("count after the joined connection ended: %d", c)
	}
	tb.sendOut(0, macA, addrA, 5000, remote3, 3478)
	if c := tb.dp.TotalCounters(); c.MapReused != 2 || c.MapCreated != 1 {
		t.Fatalf("reused %d created %d", c.MapReused, c.MapCreated)
	}
}
