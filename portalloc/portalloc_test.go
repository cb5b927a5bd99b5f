package portalloc

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"xnat/flowtable"
)

func ip(a, b, c, d byte) uint32 { return uint32(a)<<24 | uint32(b)<<16 | uint32(c)<<8 | uint32(d) }

var (
	extA   = ip(203, 0, 113, 1)
	remote = ip(198, 51, 100, 7)
)

func table(t testing.TB, cores, capacity int) *flowtable.Table {
	t.Helper()
	tab, err := flowtable.New(flowtable.Config{Capacity: capacity, Cores: cores, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// conn is a new TCP connection from src:sport to dst:dport, with the
// reply tuple's source filled in (no DNAT).
func conn(proto uint8, src uint32, sport uint16, dst uint32, dport uint16) flowtable.NewFlow {
	o := flowtable.MakeTuple(proto, src, sport, dst, dport)
	st := flowtable.TCPSynSent
	switch proto {
	case flowtable.ProtoUDP:
		st = flowtable.UDP
	case flowtable.ProtoICMP:
		st = flowtable.ICMP
	case 47:
		st = flowtable.Generic
	}
	return flowtable.NewFlow{Orig: o, Reply: o.Reverse(), Status: uint32(st) | flowtable.FlagSrcNAT}
}

func TestSlicesAreDisjointAndCover(t *testing.T) {
	for _, cores := range []int{1, 2, 3, 7, 64} {
		as, err := New(Pool{AddrLo: extA, AddrHi: extA}, cores, nil)
		if err != nil {
			t.Fatal(err)
		}
		next := uint16(DefaultPortLo)
		for c, a := range as {
			lo, hi := a.Slice()
			if lo != next || hi < lo {
				t.Fatalf("cores=%d core %d slice %d-%d, want start %d", cores, c, lo, hi, next)
			}
			next = hi + 1
		}
		if next != 0 { // wrapped past 65535
			t.Fatalf("cores=%d: slices end at %d", cores, next-1)
		}
	}
	as, _ := New(Pool{AddrLo: extA, AddrHi: extA, PortLo: 1024, PortHi: 31000}, 2, nil)
	if lo, hi := as[1].Slice(); lo != 1024+29977/2 || hi != 31000 {
		t.Errorf("--to-ports 1024-31000 core 1: %d-%d", lo, hi)
	}
}

func TestPoolErrors(t *testing.T) {
	for _, tc := range []struct {
		p     Pool
		cores int
	}{
		{Pool{AddrLo: 2, AddrHi: 1}, 1},
		{Pool{AddrLo: 1, AddrHi: 1, PortLo: 10, PortHi: 9}, 1},
		{Pool{AddrLo: 1, AddrHi: 1, PortLo: 0, PortHi: 9}, 1},
		{Pool{AddrLo: 1, AddrHi: 1, PortLo: 1025, PortHi: 1025}, 2},
		{Pool{AddrLo: 1, AddrHi: 1 << 20}, 1},
		{Pool{AddrLo: 1, AddrHi: 1}, 0},
	} {
		if _, err := New(tc.p, tc.cores, nil); !errors.Is(err, ErrPool) {
			t.Errorf("New(%+v, %d) = %v", tc.p, tc.cores, err)
		}
	}
}

func TestPreservesPortAndRemapsClash(t *testing.T) {
	tab := table(t, 1, 100)
	as, _ := New(Pool{AddrLo: extA, AddrHi: extA}, 1, nil)
	a, c := as[0], tab.Core(0)
	c.Enter()
	defer c.Exit()
	// Two inside hosts, same source port, same server: the first keeps its
	// port, the second is remapped.
	h1 := conn(flowtable.ProtoUDP, ip(192, 168, 1, 2), 5000, remote, 53)
	r1, res, _ := a.Allocate(c, &h1, Options{}, 0)
	if res != OK || h1.Reply.Dst != extA || h1.Reply.DstPort != 5000 {
		t.Fatalf("first: %v %v", res, h1.Reply)
	}
	h2 := conn(flowtable.ProtoUDP, ip(192, 168, 1, 3), 5000, remote, 53)
	r2, res, _ := a.Allocate(c, &h2, Options{}, 0)
	if res != OK || h2.Reply.DstPort == 5000 || h2.Reply.Dst != extA {
		t.Fatalf("second: %v %v", res, h2.Reply)
	}
	// Replies find their connections.
	if got := c.Lookup(&h1.Reply, 0); got == 0 || tab.Flow(got) != tab.Flow(r1) {
		t.Error("first reply not found")
	}
	if got := c.Lookup(&h2.Reply, 0); got == 0 || tab.Flow(got) != tab.Flow(r2) {
		t.Error("second reply not found")
	}
	// The same port serves another remote endpoint (endpoint-dependent reuse).
	h3 := conn(flowtable.ProtoUDP, ip(192, 168, 1, 3), 5000, ip(198, 51, 100, 8), 53)
	if _, res, _ := a.Allocate(c, &h3, Options{}, 0); res != OK || h3.Reply.DstPort != 5000 {
		t.Fatalf("third: %v %v", res, h3.Reply)
	}
	if n := a.Uses(flowtable.ProtoUDP, extA, 5000); n != 2 {
		t.Errorf("uses of 5000 = %d", n)
	}
	s := a.Stats()
	if s.Allocated != 3 || s.Preserved != 2 || s.PortsInUse != 2 {
		t.Errorf("stats %+v", s)
	}
	// The original tuple tracked already: the table says Exists.
	dup := conn(flowtable.ProtoUDP, ip(192, 168, 1, 2), 5000, remote, 53)
	if r, res, tr := a.Allocate(c, &dup, Options{}, 0); res != TableRefused || tr != flowtable.Exists || r == 0 {
		t.Errorf("duplicate: %v %v", res, tr)
	}
}

func TestRandomModesDoNotPreserve(t *testing.T) {
	tab := table(t, 1, 1000)
	as, _ := New(Pool{AddrLo: extA, AddrHi: extA}, 1, nil)
	a, c := as[0], tab.Core(0)
	c.Enter()
	defer c.Exit()
	kept := 0
	starts := map[uint16]bool{}
	for i := range 200 {
		nf := conn(flowtable.ProtoTCP, ip(10, 0, 0, byte(i)), 40000, remote, 443)
		mode := ModeRandom
		if i%2 == 1 {
			mode = ModeRandomFully
		}
		if _, res, _ := a.Allocate(c, &nf, Options{Mode: mode}, 0); res != OK {
			t.Fatal(res)
		}
		if nf.Reply.DstPort == 40000 {
			kept++
		}
		starts[nf.Reply.DstPort] = true
	}
	if kept > 2 {
		t.Errorf("random modes kept the original port %d times of 200", kept)
	}
	if len(starts) < 190 {
		t.Errorf("only %d distinct ports in 200 random allocations", len(starts))
	}
	if a.Stats().Preserved != 0 {
		t.Errorf("preserved %d", a.Stats().Preserved)
	}
}

func TestOutOfPortsAndReleaseOnExpiry(t *testing.T) {
	tab := table(t, 1, 100)
	as, _ := New(Pool{AddrLo: extA, AddrHi: extA, PortLo: 2000, PortHi: 2003}, 1, nil)
	a, c := as[0], tab.Core(0)
	c.Enter()
	for i := range 4 {
		nf := conn(flowtable.ProtoUDP, ip(10, 0, 0, byte(i+1)), 5000, remote, 53)
		if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != OK {
			t.Fatalf("%d: %v", i, res)
		}
	}
	nf := conn(flowtable.ProtoUDP, ip(10, 0, 0, 9), 5000, remote, 53)
	if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != OutOfPorts {
		t.Fatalf("fifth to the same server: %v", res)
	}
	if a.Stats().OutOfPorts != 1 {
		t.Errorf("out_of_ports %d", a.Stats().OutOfPorts)
	}
	// To another server the same four ports serve again.
	other := conn(flowtable.ProtoUDP, ip(10, 0, 0, 9), 5000, ip(198, 51, 100, 99), 53)
	if _, res, _ := a.Allocate(c, &other, Options{}, 0); res != OK {
		t.Fatalf("to another server: %v", res)
	}
	c.Exit()

	// The UDP timeout passes; the sweep reports the connections gone and
	// their ports come back.
	later := flowtable.Ticks(31 * time.Second)
	var gone [16]flowtable.Gone
	released := 0
	for range 3 {
		c.Enter()
		n := c.Sweep(later, 100, gone[:])
		for _, g := range gone[:n] {
			if a.Release(&g.Orig, &g.Reply) {
				released++
			}
		}
		c.Exit()
	}
	if released != 5 {
		t.Fatalf("released %d", released)
	}
	if s := a.Stats(); s.PortsInUse != 0 || s.Released != 5 {
		t.Errorf("stats after expiry %+v", s)
	}
	c.Enter()
	defer c.Exit()
	if _, res, _ := a.Allocate(c, &nf, Options{}, later); res != OK {
		t.Fatalf("after expiry: %v", res)
	}
	// A foreign endpoint is not ours to release.
	foreign := flowtable.MakeTuple(flowtable.ProtoUDP, remote, 53, ip(1, 2, 3, 4), 2000)
	if a.Release(&nf.Orig, &foreign) {
		t.Error("released a foreign address")
	}
}

func TestPairedAddressPooling(t *testing.T) {
	tab := table(t, 2, 10000)
	as, _ := New(Pool{AddrLo: ip(203, 0, 113, 1), AddrHi: ip(203, 0, 113, 8)}, 2, nil)
	used := map[uint32]bool{}
	for i := range 64 {
		host := ip(10, 1, 0, byte(i))
		var addr [2]uint32
		for core := range 2 { // the same host to the same server, on either core
			c := tab.Core(core)
			c.Enter()
			nf := conn(flowtable.ProtoTCP, host, uint16(1000+core), remote, 80)
			if _, res, _ := as[core].Allocate(c, &nf, Options{}, 0); res != OK {
				t.Fatal(res)
			}
			c.Exit()
			addr[core] = nf.Reply.Dst
		}
		if addr[0] != addr[1] {
			t.Fatalf("host %d mapped to two addresses", i)
		}
		used[addr[0]] = true
		// --persistent: the same address whatever the server.
		c := tab.Core(0)
		c.Enter()
		p1 := conn(flowtable.ProtoTCP, host, 2000, ip(1, 1, 1, 1), 80)
		p2 := conn(flowtable.ProtoTCP, host, 2001, ip(2, 2, 2, 2), 80)
		as[0].Allocate(c, &p1, Options{Persistent: true}, 0)
		as[0].Allocate(c, &p2, Options{Persistent: true}, 0)
		c.Exit()
		if p1.Reply.Dst != p2.Reply.Dst {
			t.Fatalf("--persistent host %d mapped to two addresses", i)
		}
	}
	if len(used) < 6 {
		t.Errorf("64 hosts used only %d of 8 addresses", len(used))
	}
}

func TestICMPAndOtherProtocols(t *testing.T) {
	tab := table(t, 1, 100)
	as, _ := New(Pool{AddrLo: extA, AddrHi: extA}, 1, nil)
	a, c := as[0], tab.Core(0)
	c.Enter()
	defer c.Exit()
	// Echo requests: identifier in SrcPort; the reply tuple carries the
	// translated identifier in DstPort.
	e1 := conn(flowtable.ProtoICMP, ip(10, 0, 0, 1), 7777, remote, 0)
	e2 := conn(flowtable.ProtoICMP, ip(10, 0, 0, 2), 7777, remote, 0)
	a.Allocate(c, &e1, Options{}, 0)
	if _, res, _ := a.Allocate(c, &e2, Options{}, 0); res != OK {
		t.Fatal(res)
	}
	if e1.Reply.DstPort != 7777 || e2.Reply.DstPort == 7777 || e2.Reply.SrcPort != 0 {
		t.Errorf("icmp ids: %v %v", e1.Reply, e2.Reply)
	}
	// GRE: address only, ports untouched.
	g := conn(47, ip(10, 0, 0, 1), 0, remote, 0)
	if _, res, _ := a.Allocate(c, &g, Options{}, 0); res != OK || g.Reply.Dst != extA {
		t.Errorf("gre: %v %v", res, g.Reply)
	}
	g2 := conn(47, ip(10, 0, 0, 2), 0, remote, 0)
	if _, res, tr := a.Allocate(c, &g2, Options{}, 0); res != TableRefused || tr != flowtable.ReplyClash {
		t.Errorf("second gre to the same server: %v %v", res, tr)
	}
}

// noAllocs checks that a connection's allocation, its end and its
// release by the sweep allocate nothing.
func noAllocs(t *testing.T, a *Allocator, c *flowtable.Core) {
	t.Helper()
	var gone [64]flowtable.Gone
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		c.Enter()
		i++
		nf := conn(flowtable.ProtoUDP, ip(10, 0, byte(i>>8), byte(i)), uint16(i), remote, 53)
		r, res, _ := a.Allocate(c, &nf, Options{}, 0)
		if res == OK {
			c.Kill(r)
		}
		n := c.Sweep(0, 64, gone[:])
		for _, g := range gone[:n] {
			a.Release(&g.Orig, &g.Reply)
		}
		c.Exit()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per allocate/release", allocs)
	}
}

// expireAll sweeps each core of tab 200 times, an hour on, releasing
// what ends through the core's allocator in as, and checks each release.
func expireAll(t *testing.T, tab *flowtable.Table, as []*Allocator) {
	t.Helper()
	var gone [256]flowtable.Gone
	for id := range as {
		c := tab.Core(id)
		for range 200 {
			c.Enter()
			n := c.Sweep(flowtable.Ticks(time.Hour), 256, gone[:])
			for _, g := range gone[:n] {
				if !as[id].Release(&g.Orig, &g.Reply) {
					t.Errorf("core %d could not release %v", id, g.Reply)
				}
			}
			c.Exit()
		}
	}
}

func TestNoAllocs(t *testing.T) {
	tab := table(t, 1, 100000)
	lim := limiter(t, 1, 100000, 0, 0)
	as, _ := New(Pool{AddrLo: extA, AddrHi: extA}, 1, NewShared(1, lim))
	noAllocs(t, as[0], tab.Core(0))
}

// TestConcurrentCores allocates on every core at once into one shared
// table with a shared limiter; every inserted connection must have its
// own reply tuple, and everything must come back after expiry.
func TestConcurrentCores(t *testing.T) {
	const cores = 4
	tab := table(t, cores, 40000)
	lim := limiter(t, cores, 40000, 0, 0)
	as, err := New(Pool{AddrLo: extA, AddrHi: ip(203, 0, 113, 2), PortLo: 10000, PortHi: 10999}, cores, NewShared(cores, lim))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	replies := map[flowtable.Tuple]bool{}
	var wg sync.WaitGroup
	for id := range cores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, a := tab.Core(id), as[id]
			rng := rand.New(rand.NewPCG(uint64(id), 3))
			for i := range 3000 {
				c.Enter()
				// Few hosts and ports: many clashes across cores.
				nf := conn(flowtable.ProtoUDP, ip(10, 0, 0, byte(rng.IntN(64))), uint16(10000+rng.IntN(1000)), remote, uint16(53+i%4))
				if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res == OK {
					mu.Lock()
					if replies[nf.Reply] {
						t.Errorf("reply tuple %v given twice", nf.Reply)
					}
					replies[nf.Reply] = true
					mu.Unlock()
					if lo, hi := a.Slice(); nf.Reply.DstPort < lo || nf.Reply.DstPort > hi {
						t.Errorf("core %d allocated %d outside %d-%d", id, nf.Reply.DstPort, lo, hi)
					}
				}
				c.Exit()
			}
		}()
	}
	wg.Wait()
	if tab.Count() != len(replies) {
		t.Errorf("table %d, allocated %d", tab.Count(), len(replies))
	}
	expireAll(t, tab, as)
	var total Stats
	for _, a := range as {
		total.Add(a.Stats())
	}
	if total.PortsInUse != 0 || total.Released != total.Allocated || total.Allocated != uint64(len(replies)) {
		t.Errorf("after expiry: %+v", total)
	}
	for i := range 64 {
		if n, p := lim.Count(ip(10, 0, 0, byte(i))); n != 0 || p != 0 {
			t.Errorf("host %d still counts %d connections, %d ports", i, n, p)
		}
	}
	if top := lim.Top(1); top.Sources != 0 || top.Conns != 0 || top.Ports != 0 {
		t.Errorf("limiter after expiry: %+v", top)
	}
}

// The address hash spreads the hosts of one subnet over the pool for
// every key, not just on average: with a fair hash, 64 hosts leave 3 of 8
// addresses unused with a probability near 5e-12 per key.
func TestPairedAddressSpreadEveryKey(t *testing.T) {
	for k := range 2000 {
		as, err := New(Pool{AddrLo: ip(203, 0, 113, 1), AddrHi: ip(203, 0, 113, 8)}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		used := map[uint32]int{}
		for i := range 64 {
			used[as[0].pickAddr(ip(10, 1, 0, byte(i)), remote, false)]++
		}
		if len(used) < 6 {
			t.Fatalf("key %d (%x, %x): 64 hosts of a subnet used %d of 8 addresses: %v", k, as[0].key0, as[0].key1, len(used), used)
		}
	}
}

// onCore1 is a pool of one address split between two cores, with core 1's
// allocator and flow-table core, inside its critical section until the
// test ends.
func onCore1(t *testing.T) ([]*Allocator, *Allocator, *flowtable.Core) {
	t.Helper()
	tab := table(t, 2, 20000)
	as, err := New(Pool{AddrLo: extA, AddrHi: extA}, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := tab.Core(1)
	c.Enter()
	t.Cleanup(c.Exit)
	return as, as[1], c
}

// TestSearchPort: when a connection's own port is taken, ModeDefault
// gives it SearchPort's port if that is free; SearchPort stays in the
// core's slice and spreads connections over it.
func TestSearchPort(t *testing.T) {
	as, a, c := onCore1(t)
	lo, hi := a.Slice()
	// A port inside core 1's slice, taken by the first host.
	first := conn(flowtable.ProtoUDP, ip(192, 168, 1, 2), lo+7, remote, 53)
	if _, res, _ := a.Allocate(c, &first, Options{}, 0); res != OK || first.Reply.DstPort != lo+7 {
		t.Fatalf("first: %v %v", res, first.Reply)
	}
	for i := range 200 {
		nf := conn(flowtable.ProtoUDP, ip(192, 168, 2, byte(i)), lo+7, remote, 53)
		want := a.SearchPort(&nf.Orig)
		if want == lo+7 || a.Uses(flowtable.ProtoUDP, extA, want) != 0 {
			continue // the search goes on past it: nothing to check here
		}
		if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != OK || nf.Reply.DstPort != want {
			t.Fatalf("connection %d: %v port %d, SearchPort said %d", i, res, nf.Reply.DstPort, want)
		}
	}
	// A port outside this core's slice is searched for at once.
	lo0, _ := as[0].Slice()
	out := conn(flowtable.ProtoTCP, ip(192, 168, 3, 1), lo0, remote, 443)
	want := a.SearchPort(&out.Orig)
	if _, res, _ := a.Allocate(c, &out, Options{}, 0); res != OK || out.Reply.DstPort != want {
		t.Fatalf("outside the slice: %v port %d, SearchPort said %d", res, out.Reply.DstPort, want)
	}
	// Spread: 16,000 tuples over 16 equal parts of the slice.
	var bins [16]int
	n := uint32(hi) - uint32(lo) + 1
	for i := range 16000 {
		k := flowtable.MakeTuple(flowtable.ProtoTCP, ip(10, byte(i>>16), byte(i>>8), byte(i)), uint16(40000+i%97), remote, 443)
		p := a.SearchPort(&k)
		if p < lo || p > hi {
			t.Fatalf("SearchPort %d outside the slice %d-%d", p, lo, hi)
		}
		bins[(uint32(p)-uint32(lo))*16/n]++
	}
	for i, b := range bins {
		if b < 800 || b > 1200 {
			t.Fatalf("part %d of the slice drew %d of 16000 (%v)", i, b, bins)
		}
	}
}

// TestLikely: the ports Likely guesses are the ones Allocate goes on to
// give, and the search port is guessed only where the own port may be
// taken: outside the slice, or in use while own ports have been clashing.
func TestLikely(t *testing.T) {
	as, a, c := onCore1(t)
	lo, _ := a.Slice()
	lo0, _ := as[0].Slice()
	check := func(nf *flowtable.NewFlow, want ...uint16) {
		t.Helper()
		ports, n := a.Likely(&nf.Orig, extA)
		if n != len(want) || (n > 0 && ports[0] != want[0]) || (n > 1 && ports[1] != want[1]) {
			t.Fatalf("Likely(%v) = %v (%d), want %v", nf.Orig, ports[:n], n, want)
		}
		if _, res, _ := a.Allocate(c, nf, Options{}, 0); res != OK || nf.Reply.DstPort != want[n-1] && nf.Reply.DstPort != want[0] {
			t.Fatalf("Allocate gave %v port %d, Likely said %v", res, nf.Reply.DstPort, want)
		}
	}
	// Own ports free: the own port alone.
	for i := range 40 {
		nf := conn(flowtable.ProtoUDP, ip(192, 168, 1, byte(i)), lo+uint16(i), remote, 53)
		check(&nf, lo+uint16(i))
	}
	// Own port outside the slice: the search port alone.
	out := conn(flowtable.ProtoUDP, ip(192, 168, 2, 1), lo0+3, remote, 53)
	check(&out, a.SearchPort(&out.Orig))
	// Own port taken for this remote endpoint, again and again: while
	// clashes were rare the own port alone, then both.
	both := 0
	for i := range 40 {
		nf := conn(flowtable.ProtoUDP, ip(192, 168, 3, byte(i)), lo, remote, 53)
		ports, n := a.Likely(&nf.Orig, extA)
		if n == 2 {
			both++
			if ports[0] != lo || ports[1] != a.SearchPort(&nf.Orig) {
				t.Fatalf("clashing: Likely %v", ports)
			}
		}
		if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != OK || nf.Reply.DstPort == lo {
			t.Fatalf("clashing connection %d: %v port %d", i, res, nf.Reply.DstPort)
		}
	}
	if both < 30 {
		t.Fatalf("after 40 clashes in a row, the search port was guessed %d times", both)
	}
	// Own ports free again: the guesses go back to the own port alone.
	for i := range 200 {
		nf := conn(flowtable.ProtoUDP, ip(192, 168, 4, byte(i)), lo+100+uint16(i), remote, 53)
		a.Allocate(c, &nf, Options{}, 0)
	}
	nf := conn(flowtable.ProtoUDP, ip(192, 168, 5, 1), lo+100, remote, 54) // in use, but clashes are over
	check(&nf, lo+100)
}
