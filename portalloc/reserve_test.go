package portalloc

import (
	"testing"

	"xnat/flowtable"
)

// TestReserve: a connection committed with its external endpoint keeps
// it, on whichever core owns the port; the port counts, the steering and
// the limiter see it as an allocated one, and Release gives it back.
func TestReserve(t *testing.T) {
	st := newSteering(t, 1)
	if err := st.SetAddrs(map[uint32]uint32{extA: 0}); err != nil {
		t.Fatal(err)
	}
	tab := table(t, 2, 1000)
	lim := limiter(t, 2, tab.RecordsPerCore(), 0, 0)
	as, err := New(Pool{AddrLo: extA, AddrHi: extA, PortLo: 5000, PortHi: 5009, Steering: st}, 2, NewShared(2, lim))
	if err != nil {
		t.Fatal(err)
	}
	src := ip(10, 0, 0, 1)
	mk := func(proto uint8, sport, ext uint16) flowtable.NewFlow {
		nf := conn(proto, src, sport, remote, 80)
		nf.Reply.Dst, nf.Reply.DstPort = extA, ext
		return nf
	}
	// 5008 lies in core 1's slice (5005-5009), not core 0's.
	nf := mk(flowtable.ProtoTCP, 40000, 5008)
	if as[0].Owns(flowtable.ProtoTCP, extA, 5008) || !as[1].Owns(flowtable.ProtoTCP, extA, 5008) {
		t.Fatal("5008 should be core 1's")
	}
	c0, c1 := tab.Core(0), tab.Core(1)
	c0.Enter()
	if _, res, _ := as[0].Reserve(c0, &nf, 0); res != NotOwned {
		t.Fatalf("core 0 reserving core 1's port: %v", res)
	}
	c0.Exit()
	if tab.Count() != 0 {
		t.Fatal("a refused reserve inserted")
	}
	c1.Enter()
	defer c1.Exit()
	r, res, _ := as[1].Reserve(c1, &nf, 0)
	if res != OK || r == 0 {
		t.Fatalf("reserve: %v", res)
	}
	if f := tab.Flow(r); f.Reply().Dst != extA || f.Reply().DstPort != 5008 || f.Orig() != nf.Orig {
		t.Fatalf("inserted %v / %v", f.Orig(), f.Reply())
	}
	if as[1].Uses(flowtable.ProtoTCP, extA, 5008) != 1 || st.Count(extA, flowtable.ProtoTCP, 5008) != 1 {
		t.Fatalf("uses %d, steering holders %d", as[1].Uses(flowtable.ProtoTCP, extA, 5008), st.Count(extA, flowtable.ProtoTCP, 5008))
	}
	if count(lim, src) != [2]int{1, 1} {
		t.Fatalf("limiter counts %v, want one connection on one port", count(lim, src))
	}
	if s := as[1].Stats(); s.Allocated != 1 || s.PortsInUse != 1 {
		t.Fatalf("stats %+v", s)
	}
	// The same endpoint towards the same remote endpoint is taken.
	dup := mk(flowtable.ProtoTCP, 40001, 5008)
	if _, res, ir := as[1].Reserve(c1, &dup, 0); res != TableRefused || ir != flowtable.ReplyClash {
		t.Fatalf("clashing reserve: %v %v", res, ir)
	}
	if count(lim, src) != [2]int{1, 1} || as[1].Uses(flowtable.ProtoTCP, extA, 5008) != 1 {
		t.Fatalf("a refused reserve left counts: %v, uses %d", count(lim, src), as[1].Uses(flowtable.ProtoTCP, extA, 5008))
	}
	// An allocation on core 1 does not hand out the reserved port to the
	// same remote endpoint.
	other := conn(flowtable.ProtoTCP, ip(10, 0, 0, 2), 5008, remote, 80)
	if _, res, _ := as[1].Allocate(c1, &other, Options{}, 0); res != OK || other.Reply.DstPort == 5008 {
		t.Fatalf("allocate next to a reserved port: %v port %d", res, other.Reply.DstPort)
	}
	// ICMP: the identifier is the port.
	icmp := mk(flowtable.ProtoICMP, 7, 5009)
	icmp.Reply.SrcPort = 0
	if _, res, _ := as[1].Reserve(c1, &icmp, 0); res != OK || as[1].Uses(flowtable.ProtoICMP, extA, 5009) != 1 {
		t.Fatalf("icmp reserve: %v", res)
	}
	// An address outside the pool is nobody's.
	far := mk(flowtable.ProtoUDP, 1, 5008)
	far.Reply.Dst = ip(203, 0, 113, 99)
	if _, res, _ := as[1].Reserve(c1, &far, 0); res != NotOwned {
		t.Fatalf("foreign address: %v", res)
	}
	for _, f := range []*flowtable.NewFlow{&nf, &other, &icmp} {
		if !as[1].Release(&f.Orig, &f.Reply) {
			t.Fatalf("release %v", f.Reply)
		}
	}
	if st.Count(extA, flowtable.ProtoTCP, 5008) != 0 || st.SlotHeld(0) || count(lim, src) != [2]int{} {
		t.Fatalf("counts left after release: holders %d, limiter %v", st.Count(extA, flowtable.ProtoTCP, 5008), count(lim, src))
	}
}

// TestReserveNoAllocs: reserving allocates nothing.
func TestReserveNoAllocs(t *testing.T) {
	tab := table(t, 1, 4096)
	as, err := New(Pool{AddrLo: extA, AddrHi: extA}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	port := uint16(2000)
	n := testing.AllocsPerRun(100, func() {
		nf := conn(flowtable.ProtoUDP, ip(10, 0, 0, 1), port, remote, 53)
		nf.Reply.Dst, nf.Reply.DstPort = extA, port
		port++
		if _, res, _ := as[0].Reserve(c, &nf, 0); res != OK {
			t.Fatalf("reserve: %v", res)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per reserve", n)
	}
}

// TestRehold: a port given out while its address had no steering slot
// is held once Rehold is called after the address got one.
func TestRehold(t *testing.T) {
	st := newSteering(t, 1)
	tab := table(t, 1, 1000)
	as, err := New(Pool{AddrLo: extA, AddrHi: extA, PortLo: 5000, PortHi: 5009, Steering: st}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	nf := conn(flowtable.ProtoUDP, ip(10, 0, 0, 1), 5003, remote, 53)
	if _, res, _ := as[0].Allocate(c, &nf, Options{}, 0); res != OK {
		t.Fatal(res)
	}
	if as[0].Rehold(flowtable.ProtoUDP, extA, nf.Reply.DstPort) || st.Count(extA, flowtable.ProtoUDP, nf.Reply.DstPort) != 0 {
		t.Fatal("held without a slot")
	}
	if err := st.SetAddrs(map[uint32]uint32{extA: 0}); err != nil {
		t.Fatal(err)
	}
	first := as[0].Rehold(flowtable.ProtoUDP, extA, nf.Reply.DstPort)
	second := as[0].Rehold(flowtable.ProtoUDP, extA, nf.Reply.DstPort)
	if !first || !second || st.Count(extA, flowtable.ProtoUDP, nf.Reply.DstPort) != 1 {
		t.Fatalf("after the slot: %d holders, want 1 however often Rehold is called", st.Count(extA, flowtable.ProtoUDP, nf.Reply.DstPort))
	}
	if as[0].Rehold(flowtable.ProtoUDP, extA, 5009) {
		t.Fatal("held a port in use by nobody")
	}
	if !as[0].Release(&nf.Orig, &nf.Reply) || st.SlotHeld(0) {
		t.Fatal("release left the port held")
	}
}
