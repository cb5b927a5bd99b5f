package portalloc

import (
	"runtime"
	"testing"
	"time"

	"xnat/flowtable"
)

// TestHugePoolIsSparse: a pool of 65,536 addresses (whose per-port counts
// would take 23.6 GiB) is made in a moment with next to no memory, serves
// connections from every address, and gives everything back.
func TestHugePoolIsSparse(t *testing.T) {
	const cores = 2
	tab := table(t, cores, 20000)
	lim := limiter(t, cores, tab.RecordsPerCore(), 0, 0)
	sh := NewShared(cores, lim)
	pool := Pool{AddrLo: ip(100, 64, 0, 0), AddrHi: ip(100, 64, 255, 255)}
	if want := int64(65536) * 64512 * 6; denseBytes(65536, 64512) != want || want < 23<<30 {
		t.Fatalf("dense counts of the pool: %d bytes", denseBytes(65536, 64512))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	as, err := New(pool, cores, sh)
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	grew := after.TotalAlloc - before.TotalAlloc
	t.Logf("New: %v, %d bytes allocated, heap in use %d -> %d, from the OS %d -> %d", took, grew, before.HeapInuse, after.HeapInuse, before.Sys, after.Sys)
	if grew > 64<<10 || after.Sys > before.Sys+8<<20 {
		t.Errorf("New of a 65,536-address pool allocated %d bytes (memory from the OS %d -> %d)", grew, before.Sys, after.Sys)
	}
	if took > 5*time.Second {
		t.Errorf("New took %v", took)
	}
	if as[0].Dense() || sh.DenseLeft() != DenseMax {
		t.Fatalf("dense %v, budget left %d", as[0].Dense(), sh.DenseLeft())
	}
	// Connections from many hosts spread over the addresses, each core
	// in its slice.
	addrs := map[uint32]bool{}
	var flows [cores][]flowtable.NewFlow
	for id := range cores {
		c, a := tab.Core(id), as[id]
		c.Enter()
		for i := range 3000 {
			nf := conn(flowtable.ProtoUDP, ip(10, byte(1+id), byte(i>>8), byte(i)), uint16(1024+i), remote, 53)
			if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != OK {
				t.Fatalf("core %d connection %d: %v", id, i, res)
			}
			if lo, hi := a.Slice(); nf.Reply.DstPort < lo || nf.Reply.DstPort > hi {
				t.Fatalf("core %d port %d outside %d-%d", id, nf.Reply.DstPort, lo, hi)
			}
			addrs[nf.Reply.Dst] = true
			flows[id] = append(flows[id], nf)
		}
		c.Exit()
	}
	if len(addrs) < 5000 {
		t.Errorf("6000 hosts on %d addresses", len(addrs))
	}
	if top := lim.Top(1); top.Conns != 6000 || top.Ports != 6000 {
		t.Errorf("limiter: %d connections, %d ports", top.Conns, top.Ports)
	}
	for id := range cores {
		for _, nf := range flows[id] {
			if !as[id].Release(&nf.Orig, &nf.Reply) {
				t.Fatalf("release %v", nf.Reply)
			}
		}
	}
	if top := lim.Top(1); top.Conns != 0 || top.Ports != 0 {
		t.Errorf("limiter after release: %d connections, %d ports", top.Conns, top.Ports)
	}
}

// TestDenseBudget: pools have per-port counts while the budget lasts;
// the next ones are sparse and cost it nothing.
func TestDenseBudget(t *testing.T) {
	one := denseBytes(1, DefaultPortHi-DefaultPortLo+1)
	sh := NewShared(1, nil)
	sh.denseLeft = 2*one + one/2
	for i, want := range []bool{true, true, false, false} {
		as, err := New(Pool{AddrLo: extA + uint32(i), AddrHi: extA + uint32(i)}, 1, sh)
		if err != nil {
			t.Fatal(err)
		}
		if as[0].Dense() != want {
			t.Errorf("pool %d dense %v, want %v", i, as[0].Dense(), want)
		}
	}
	if sh.DenseLeft() != one/2 {
		t.Errorf("budget left %d, want %d", sh.DenseLeft(), one/2)
	}
	// A small pool still fits.
	as, err := New(Pool{AddrLo: extA, AddrHi: extA, PortLo: 2000, PortHi: 2999}, 1, sh)
	if err != nil || !as[0].Dense() {
		t.Errorf("small pool: dense %v, %v", as[0].Dense(), err)
	}
}

// TestSparsePool: without per-port counts the allocator still keeps
// ports, remaps clashes, runs out and takes ports back, the flow table
// telling it which are taken.
func TestSparsePool(t *testing.T) {
	tab := table(t, 1, 100)
	lim := limiter(t, 1, 200, 0, 0)
	sh := NewShared(1, lim)
	sh.denseLeft = 0
	as, err := New(Pool{AddrLo: extA, AddrHi: extA, PortLo: 2000, PortHi: 2003}, 1, sh)
	if err != nil || as[0].Dense() {
		t.Fatalf("dense %v, %v", as[0].Dense(), err)
	}
	a, c := as[0], tab.Core(0)
	c.Enter()
	defer c.Exit()
	var flows []flowtable.NewFlow
	for i := range 4 {
		nf := conn(flowtable.ProtoUDP, ip(10, 0, 0, byte(1+i)), 2001, remote, 53)
		if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != OK {
			t.Fatalf("connection %d: %v", i, res)
		}
		if i == 0 && nf.Reply.DstPort != 2001 {
			t.Errorf("port not kept: %d", nf.Reply.DstPort)
		}
		flows = append(flows, nf)
	}
	nf := conn(flowtable.ProtoUDP, ip(10, 0, 0, 9), 2001, remote, 53)
	if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != OutOfPorts {
		t.Fatalf("fifth: %v", res)
	}
	if a.Uses(flowtable.ProtoUDP, extA, 2001) != 0 || a.Stats().PortsInUse != 0 {
		t.Errorf("a sparse pool counts ports: %d %d", a.Uses(flowtable.ProtoUDP, extA, 2001), a.Stats().PortsInUse)
	}
	// The same server on another port: the ports serve again.
	other := conn(flowtable.ProtoUDP, ip(10, 0, 0, 9), 2001, remote, 54)
	if _, res, _ := a.Allocate(c, &other, Options{}, 0); res != OK {
		t.Fatalf("other remote port: %v", res)
	}
	// A connection gone from the table frees its reply tuple.
	var gone [8]flowtable.Gone
	c.Kill(c.Lookup(&flows[2].Orig, 0))
	for _, g := range gone[:c.Sweep(0, 8, gone[:])] {
		if !a.Release(&g.Orig, &g.Reply) {
			t.Fatal("release")
		}
	}
	if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != OK || nf.Reply.DstPort != flows[2].Reply.DstPort {
		t.Fatalf("after release: %v port %d, want %d", res, nf.Reply.DstPort, flows[2].Reply.DstPort)
	}
	if top := lim.Top(1); top.Conns != 5 || top.Ports != 5 {
		t.Errorf("limiter: %+v", top)
	}
}
