package dataplane

import (
	"testing"

	"xnat/dataplane/topo"
)

// rpSnapshot is the test topology with a management interface xnat does
// not forward on (mgmt, 192.168.50.0/24, and 172.16.0.0/12 behind it), a
// multipath route over in0 and out0 (100.64.0.0/10), and an inside port
// without an address (in1, behind which lies 10.9.0.0/16).
func rpSnapshot() *topo.Snapshot {
	s := testSnapshot(1500)
	s.Ifaces = append(s.Ifaces,
		topo.Iface{Index: 4, Name: "mgmt", MAC: [6]byte{2, 0, 0, 0, 4, 1}, MTU: 1500, Up: true, Addrs: []topo.Prefix{{Addr: ip4(192, 168, 50, 1), Len: 24}}},
		topo.Iface{Index: 5, Name: "in1", MAC: [6]byte{2, 0, 0, 0, 5, 1}, MTU: 1500, Up: true})
	s.Routes = []topo.Route{
		{Dst: topo.Prefix{Addr: ip4(10, 0, 0, 0), Len: 24}, IfIndex: 2},
		{Dst: topo.Prefix{Addr: ip4(192, 168, 50, 0), Len: 24}, IfIndex: 4},
		{Dst: topo.Prefix{Addr: ip4(203, 0, 113, 0), Len: 24}, IfIndex: 3},
		{Dst: topo.Prefix{Addr: ip4(10, 9, 0, 0), Len: 16}, IfIndex: 5},
		{Dst: topo.Prefix{Addr: ip4(172, 16, 0, 0), Len: 12}, Gateway: ip4(192, 168, 50, 254), IfIndex: 4},
		{Dst: topo.Prefix{Addr: ip4(100, 64, 0, 0), Len: 10}, Gateway: addrGW, IfIndex: 3, Metric: 10},
		{Dst: topo.Prefix{Addr: ip4(100, 64, 0, 0), Len: 10}, Gateway: ip4(10, 0, 0, 254), IfIndex: 2, Metric: 10},
		{Dst: topo.Prefix{Addr: ip4(100, 64, 0, 0), Len: 10}, Gateway: ip4(10, 9, 0, 254), IfIndex: 5, Metric: 20},
		{Dst: topo.Prefix{}, Gateway: addrGW, IfIndex: 3},
	}
	return s
}

func rpEnv(t *testing.T, s *topo.Snapshot) *Env {
	t.Helper()
	env, err := NewEnv(EnvConfig{Snapshot: s, Inside: []string{"in0", "in1"}, Outside: []string{"out0"}, Model: model(t, masqRules), Pools: NewPools(1, nil)})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestReversePath holds Env.reversePath to Linux's fib_validate_source,
// case by case: each source, ingress port and mode with the verdict Linux
// gives.
func TestReversePath(t *testing.T) {
	const in0, in1, out0 = 0, 1, 2
	env := rpEnv(t, rpSnapshot())
	noDefault := rpSnapshot()
	noDefault.Routes = noDefault.Routes[:len(noDefault.Routes)-1]
	envND := rpEnv(t, noDefault)
	for _, c := range []struct {
		name   string
		env    *Env
		src    uint32
		in     uint16
		mode   int32
		strict Reason // the verdict under mode when mode is -1: strict's
	}{
		{"inside host", env, addrA, in0, RPFilterStrict, ReasonNone},
		{"inside host, loose", env, addrA, in0, RPFilterLoose, ReasonNone},
		{"spoofed from inside, strict", env, remote, in0, RPFilterStrict, ReasonRPFilter},
		{"spoofed from inside, loose (default route)", env, remote, in0, RPFilterLoose, ReasonNone},
		{"spoofed from inside, off", env, remote, in0, RPFilterOff, ReasonNone},
		{"remote from outside, strict", env, remote, out0, RPFilterStrict, ReasonNone},
		{"inside source from outside, strict", env, addrA, out0, RPFilterStrict, ReasonRPFilter},
		{"inside source from outside, loose", env, addrA, out0, RPFilterLoose, ReasonNone},
		{"no route back, strict", envND, remote, in0, RPFilterStrict, ReasonRPFilter},
		{"no route back, loose", envND, remote, in0, RPFilterLoose, ReasonRPFilter},
		{"no route back, off", envND, remote, in0, RPFilterOff, ReasonNone},
		{"routed via mgmt, strict", env, ip4(192, 168, 50, 7), in0, RPFilterStrict, ReasonRPFilter},
		{"routed via mgmt by a gateway, strict", env, ip4(172, 16, 3, 4), out0, RPFilterStrict, ReasonRPFilter},
		{"routed via mgmt, loose", env, ip4(172, 16, 3, 4), out0, RPFilterLoose, ReasonNone},
		{"multipath, first hop", env, ip4(100, 64, 1, 1), out0, RPFilterStrict, ReasonNone},
		{"multipath, second hop", env, ip4(100, 64, 1, 1), in0, RPFilterStrict, ReasonNone},
		{"multipath, higher metric only", env, ip4(100, 64, 1, 1), in1, RPFilterStrict, ReasonRPFilter},
		{"port without address, own route", env, ip4(10, 9, 1, 1), in1, RPFilterStrict, ReasonNone},
		{"port without address, loose, route elsewhere", env, remote, in1, RPFilterLoose, ReasonRPFilter},
		{"box address, off", env, addrExt, in0, RPFilterOff, ReasonMartian},
		{"box address, strict", env, addrIn0, in0, RPFilterStrict, ReasonMartian},
		{"box address of another interface, off", env, ip4(192, 168, 50, 1), out0, RPFilterOff, ReasonMartian},
	} {
		if got := c.env.reversePath(c.src, c.in, c.mode); got != c.strict {
			t.Errorf("%s: %v, want %v", c.name, got, c.strict)
		}
	}
}

// TestRPFilterMode: an interface's mode is the larger of all's and its
// own, as Linux's IN_DEV_RPFILTER.
func TestRPFilterMode(t *testing.T) {
	var r RPFilter
	for _, c := range []struct{ all, own, want int32 }{{0, 0, 0}, {1, 0, 1}, {0, 2, 2}, {2, 1, 2}, {1, 2, 2}, {0, 1, 1}} {
		r.All.Store(c.all)
		r.If[3].Store(c.own)
		if got := r.Mode(3); got != c.want {
			t.Errorf("all %d, own %d: mode %d, want %d", c.all, c.own, got, c.want)
		}
	}
	if s := NewSettings(); s.RPFilter.Mode(0) != RPFilterStrict {
		t.Errorf("default mode %d, want strict", s.RPFilter.Mode(0))
	}
}

// TestRPFilterPipeline: spoofed inside sources are dropped and counted
// (rp_filter) on the connection's first packet, in strict mode and with
// no route back in loose mode; with the filter off or loose they leave
// translated; the box's own address as a source is a martian in every
// mode; a reply from outside is not checked again.
func TestRPFilterPipeline(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	rp := &tb.dp.Settings.RPFilter
	spoof := udpPkt(macA, macIn0, remote, 5000, addrPeer, 7000).bytes(t)
	r, _ := tb.run(spoof, portIn)
	if r.Action != ActDrop || r.Reason != ReasonRPFilter {
		t.Fatalf("spoofed source, strict: %v %v", r.Action, r.Reason)
	}
	// A legitimate connection, and its reply, pass.
	r, out := tb.run(udpPkt(macA, macIn0, addrA, 5000, addrPeer, 7000).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	ext := decode(t, out).udp.SrcPort
	r, _ = tb.run(udpPkt(macPeer, macOut0, addrPeer, 7000, addrExt, uint16(ext)).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
	// A spoofed ICMP error about that connection, from inside.
	r, _ = tb.run(icmpErrorAbout(t, macA, macIn0, ip4(192, 0, 2, 99), addrPeer, udpPkt(macA, macIn0, addrPeer, 7000, addrA, 5000)), portIn)
	if r.Action != ActDrop || r.Reason != ReasonRPFilter {
		t.Fatalf("spoofed ICMP error, strict: %v %v", r.Action, r.Reason)
	}
	// The same error from an inside router's address is related and leaves.
	r, _ = tb.run(icmpErrorAbout(t, macB, macIn0, addrB, addrPeer, udpPkt(macA, macIn0, addrPeer, 7000, addrA, 5000)), portIn)
	expect(t, r, ActForward, portOut)
	// The box's own address: a martian.
	r, _ = tb.run(udpPkt(macA, macIn0, addrExt, 5000, addrPeer, 7000).bytes(t), portIn)
	if r.Action != ActDrop || r.Reason != ReasonMartian {
		t.Fatalf("box's address as source: %v %v", r.Action, r.Reason)
	}
	if c := tb.dp.TotalCounters(); c.Drop(ReasonRPFilter) != 2 || c.Drop(ReasonMartian) != 1 || ReasonRPFilter.String() != "rp_filter" {
		t.Fatalf("rp_filter %d, martian %d", c.Drop(ReasonRPFilter), c.Drop(ReasonMartian))
	}
	// Loose on the inside port (all stays strict: the larger wins).
	rp.All.Store(RPFilterOff)
	rp.If[portIn].Store(RPFilterLoose)
	r, out = tb.run(spoof, portIn)
	expect(t, r, ActForward, portOut)
	ipEq(t, "loose: translated source", decode(t, out).ip.SrcIP, addrExt)
	// Off.
	rp.If[portIn].Store(RPFilterOff)
	r, _ = tb.run(udpPkt(macA, macIn0, remote, 5001, addrPeer, 7000).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	r, _ = tb.run(udpPkt(macA, macIn0, addrIn0, 5000, addrPeer, 7000).bytes(t), portIn)
	if r.Action != ActDrop || r.Reason != ReasonMartian {
		t.Fatalf("box's address as source, off: %v %v", r.Action, r.Reason)
	}
	// Loose without a route back.
	s := testSnapshot(1500)
	s.Routes = s.Routes[:2]
	env, err := NewEnv(EnvConfig{Snapshot: s, Inside: []string{"in0"}, Outside: []string{"out0"}, Model: model(t, masqRules), Prev: tb.dp.Env(), Pools: tb.dp.Pools})
	if err != nil {
		t.Fatal(err)
	}
	tb.dp.SetEnv(env)
	rp.All.Store(RPFilterLoose)
	r, _ = tb.run(udpPkt(macA, macIn0, remote, 5002, addrPeer, 7000).bytes(t), portIn)
	if r.Action != ActDrop || r.Reason != ReasonRPFilter {
		t.Fatalf("loose, no route back: %v %v", r.Action, r.Reason)
	}
}

// icmpErrorAbout builds an ICMP port unreachable from src to dst quoting
// the datagram q.
func icmpErrorAbout(t *testing.T, srcMAC, dstMAC [6]byte, src, dst uint32, q pkt) []byte {
	t.Helper()
	quoted := q.bytes(t)[offIP:]
	return icmpPkt(srcMAC, dstMAC, src, dst, 3, 3, 0, 0, quoted[:28]).bytes(t)
}
