package portalloc

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"xnat/flowtable"
)

func newSteering(t testing.TB, slots int) *Steering {
	t.Helper()
	s, err := NewSteering(make([]uint32, slots*slotWords), slots)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestUsableAndSplit(t *testing.T) {
	r := usable(1024, 65535, []PortRange{{32768, 60999}})
	if len(r) != 2 || r[0] != (PortRange{1024, 32767}) || r[1] != (PortRange{61000, 65535}) {
		t.Fatalf("usable = %v", r)
	}
	if r := usable(1024, 2000, []PortRange{{1, 1024}, {2000, 3000}, {1500, 1500}}); len(r) != 2 || r[0] != (PortRange{1025, 1499}) || r[1] != (PortRange{1501, 1999}) {
		t.Fatalf("usable with edges = %v", r)
	}
	if r := usable(40000, 50000, []PortRange{{32768, 60999}}); len(r) != 0 {
		t.Fatalf("usable inside the exclusion = %v", r)
	}
	// Every usable port in exactly one core's slice, the slices within
	// one port of each other in size, at consecutive offsets.
	total := 0
	for _, x := range r {
		total += int(x.Hi-x.Lo) + 1
	}
	for _, cores := range []int{1, 2, 3, 8, 64} {
		r := usable(1024, 65535, []PortRange{{32768, 60999}})
		seen := map[uint32]bool{}
		min, max := 1<<30, 0
		for c := range cores {
			n := uint32(0)
			for _, s := range split(r, cores, c) {
				if s.off != n {
					t.Fatalf("cores %d core %d: segment at offset %d after %d ports", cores, c, s.off, n)
				}
				for p := s.port; p < s.port+s.n; p++ {
					if seen[p] || p >= 32768 && p <= 60999 || p < 1024 || p > 65535 {
						t.Fatalf("cores %d core %d: port %d", cores, c, p)
					}
					seen[p] = true
				}
				n += s.n
			}
			min, max = minInt(min, int(n)), maxInt(max, int(n))
		}
		if len(seen) != 32767-1024+1+65535-61000+1 || max-min > 1 {
			t.Fatalf("cores %d: %d ports covered, slices from %d to %d", cores, len(seen), min, max)
		}
	}
}

func minInt(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// TestPoolLeavesKernelPorts: a pool on one of the box's addresses never
// gives out a port the kernel may pick for its own sockets, and its
// slices stay even; a pool on other addresses uses them all.
func TestPoolLeavesKernelPorts(t *testing.T) {
	st := newSteering(t, 2)
	st.SetKernelPorts([]PortRange{{32768, 60999}})
	if err := st.SetAddrs(map[uint32]uint32{extA: 0}); err != nil {
		t.Fatal(err)
	}
	const cores = 8
	as, err := New(Pool{AddrLo: extA, AddrHi: extA, Steering: st}, cores, nil)
	if err != nil {
		t.Fatal(err)
	}
	tab := table(t, cores, 1<<17)
	for c, a := range as {
		if a.n < 4500 || a.n > 4600 {
			t.Fatalf("core %d has %d ports", c, a.n)
		}
		core := tab.Core(c)
		core.Enter()
		for i := range 2000 {
			nf := conn(flowtable.ProtoUDP, ip(10, byte(c), byte(i>>8), byte(i)), uint16(30000+i), remote, 53)
			_, res, _ := a.Allocate(core, &nf, Options{}, 0)
			if res != OK {
				t.Fatalf("core %d connection %d: %v", c, i, res)
			}
			if p := nf.Reply.DstPort; p >= 32768 && p <= 60999 || p < 1024 {
				t.Fatalf("core %d gave out port %d, one the kernel may use", c, p)
			}
		}
		core.Exit()
	}
	// Another address: every port of the range.
	other, err := New(Pool{AddrLo: ip(203, 0, 113, 9), AddrHi: ip(203, 0, 113, 9), Steering: st}, cores, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lo, _ := other[4].Slice(); lo < 32768 || lo > 60999 {
		t.Fatalf("a pool on another address starts core 4 at %d", lo)
	}
	// Nothing left once the kernel's ports are taken out.
	if _, err := New(Pool{AddrLo: extA, AddrHi: extA, PortLo: 40000, PortHi: 50000, Steering: st}, 1, nil); !errors.Is(err, ErrPool) {
		t.Fatalf("a pool wholly in the kernel's ports: %v", err)
	}
}

// TestPoolFloating: with SetFloating (an HA pair), a pool made while its
// address is the box's keeps the kernel's ports, and is split as the same
// pool made while the address is elsewhere; without it, it leaves them
// out.
func TestPoolFloating(t *testing.T) {
	st := newSteering(t, 2)
	st.SetKernelPorts([]PortRange{{32768, 60999}})
	const cores = 4
	away, err := New(Pool{AddrLo: extA, AddrHi: extA, Steering: st}, cores, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetAddrs(map[uint32]uint32{extA: 0}); err != nil {
		t.Fatal(err)
	}
	local, err := New(Pool{AddrLo: extA, AddrHi: extA, Steering: st}, cores, nil)
	if err != nil {
		t.Fatal(err)
	}
	if local[2].Owns(flowtable.ProtoUDP, extA, 45000) || local[3].Owns(flowtable.ProtoUDP, extA, 45000) {
		t.Fatal("without SetFloating, a pool made while the address is the box's owns a kernel port")
	}
	st.SetFloating(true)
	floating, err := New(Pool{AddrLo: extA, AddrHi: extA, Steering: st}, cores, nil)
	if err != nil {
		t.Fatal(err)
	}
	for c := range cores {
		for _, port := range []uint16{1024, 20000, 32767, 32768, 45000, 60999, 61000, 65535} {
			if a, f := away[c].Owns(flowtable.ProtoUDP, extA, port), floating[c].Owns(flowtable.ProtoUDP, extA, port); a != f {
				t.Fatalf("core %d port %d: owned %v by the pool made with the address away, %v by the floating one made with it", c, port, a, f)
			}
		}
		if a, f := away[c].n, floating[c].n; a != f {
			t.Fatalf("core %d: %d ports with the address away, %d floating", c, a, f)
		}
	}
}

// TestSteeringCounts: a port is held while any connection uses it, by
// each pool that uses it; the counts go back to 0 when they all end.
func TestSteeringCounts(t *testing.T) {
	st := newSteering(t, 2)
	if err := st.SetAddrs(map[uint32]uint32{extA: 1}); err != nil {
		t.Fatal(err)
	}
	tab := table(t, 1, 1000)
	a1, err := New(Pool{AddrLo: extA, AddrHi: extA, Steering: st}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := New(Pool{AddrLo: extA, AddrHi: extA, PortLo: 5000, PortHi: 5010, Steering: st}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := a1[0], a2[0]
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	var conns []flowtable.NewFlow
	alloc := func(a *Allocator, proto uint8, src uint32, dst uint32) flowtable.NewFlow {
		nf := conn(proto, src, 5005, dst, 53)
		if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != OK || nf.Reply.DstPort != 5005 {
			t.Fatalf("allocate: %v %v", res, nf.Reply)
		}
		conns = append(conns, nf)
		return nf
	}
	alloc(p1, flowtable.ProtoUDP, ip(10, 0, 0, 1), remote)
	alloc(p1, flowtable.ProtoUDP, ip(10, 0, 0, 2), ip(198, 51, 100, 8))
	if n := st.Count(extA, flowtable.ProtoUDP, 5005); n != 1 {
		t.Fatalf("two connections of one pool on a port: %d holders, want 1", n)
	}
	alloc(p2, flowtable.ProtoUDP, ip(10, 0, 0, 3), ip(198, 51, 100, 9))
	if n := st.Count(extA, flowtable.ProtoUDP, 5005); n != 2 {
		t.Fatalf("two pools on a port: %d holders, want 2", n)
	}
	alloc(p1, flowtable.ProtoTCP, ip(10, 0, 0, 1), remote)
	alloc(p1, flowtable.ProtoICMP, ip(10, 0, 0, 1), remote)
	if st.Count(extA, flowtable.ProtoTCP, 5005) != 1 || st.Count(extA, flowtable.ProtoICMP, 5005) != 1 ||
		st.Count(extA, flowtable.ProtoTCP, 5004) != 0 || st.Count(extA, flowtable.ProtoTCP, 5006) != 0 {
		t.Fatal("counts of other protocols or neighbouring ports")
	}
	rel := func(i int, a *Allocator) {
		if !a.Release(&conns[i].Orig, &conns[i].Reply) {
			t.Fatalf("release %d refused", i)
		}
	}
	rel(0, p1)
	if n := st.Count(extA, flowtable.ProtoUDP, 5005); n != 2 {
		t.Fatalf("after one of pool 1's two connections ended: %d holders, want 2", n)
	}
	rel(1, p1)
	if n := st.Count(extA, flowtable.ProtoUDP, 5005); n != 1 {
		t.Fatalf("pool 1 done with the port: %d holders, want 1", n)
	}
	// 5004's count shares a word with 5005's: neither disturbs the other.
	for range 3 {
		st.Hold(extA, flowtable.ProtoUDP, 5004)
	}
	if st.Count(extA, flowtable.ProtoUDP, 5004) != 3 || st.Count(extA, flowtable.ProtoUDP, 5005) != 1 {
		t.Fatal("neighbouring counts of one word disturb each other")
	}
	for range 3 {
		st.Drop(extA, flowtable.ProtoUDP, 5004)
	}
	rel(2, p2)
	rel(3, p1)
	rel(4, p1)
	if st.SlotHeld(1) {
		t.Fatal("counts held after every connection ended")
	}
	// No slot for the address: nothing is held, nothing goes wrong.
	if err := st.SetAddrs(nil); err != nil {
		t.Fatal(err)
	}
	nf := alloc(p1, flowtable.ProtoUDP, ip(10, 0, 0, 7), ip(198, 51, 100, 10))
	if st.Hold(extA, flowtable.ProtoUDP, 5005) || st.SlotHeld(1) {
		t.Fatal("held a port of an address without a slot")
	}
	if !p1.Release(&nf.Orig, &nf.Reply) {
		t.Fatal("release")
	}
	if err := st.SetAddrs(map[uint32]uint32{extA: 2}); err == nil {
		t.Fatal("slot 2 of 2 accepted")
	}
	if _, err := NewSteering(make([]uint32, 10), 1); !errors.Is(err, ErrSteering) {
		t.Fatalf("short counts: %v", err)
	}
}

// TestSteeringConcurrent: cores holding and dropping ports of the same
// words at once leave every count at 0.
func TestSteeringConcurrent(t *testing.T) {
	st := newSteering(t, 1)
	if err := st.SetAddrs(map[uint32]uint32{extA: 0}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20000 {
				p := uint16(1000 + (i+g)%8)
				if !st.Hold(extA, flowtable.ProtoTCP, p) {
					t.Error("hold refused")
					return
				}
				st.Drop(extA, flowtable.ProtoTCP, p)
			}
		}()
	}
	wg.Wait()
	if st.SlotHeld(0) {
		t.Fatal("counts left after balanced holds and drops")
	}
}

func TestNoAllocsSteering(t *testing.T) {
	st := newSteering(t, 1)
	if err := st.SetAddrs(map[uint32]uint32{extA: 0}); err != nil {
		t.Fatal(err)
	}
	st.SetKernelPorts([]PortRange{{32768, 60999}})
	tab := table(t, 1, 100000)
	as, err := New(Pool{AddrLo: extA, AddrHi: extA, Steering: st}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := as[0]
	noAllocs(t, a, tab.Core(0))
	if a.Stats().PortsInUse == 0 && st.SlotHeld(0) {
		t.Fatal("ports held with none in use")
	}
}

// TestSteeringNeedsDenseCounts: a pool on the box's own addresses keeps
// per-port counts (and its bitmaps) within the shared budget, or is
// refused; a pool beyond the budget on other addresses is sparse and
// holds nothing, even for an address that gets a slot later.
func TestSteeringNeedsDenseCounts(t *testing.T) {
	st := newSteering(t, 2)
	st.SetKernelPorts([]PortRange{{32768, 60999}})
	if err := st.SetAddrs(map[uint32]uint32{extA: 0}); err != nil {
		t.Fatal(err)
	}
	const cores = 2
	local := Pool{AddrLo: extA, AddrHi: extA, Steering: st}
	// 1024-32767 and 61000-65535: 36,280 ports, 18,140 a core.
	span := uint32(32767 - 1024 + 1 + 65535 - 61000 + 1)
	cost := denseBytes(1, span) + cores*int64((span/cores+63)/64)*8*numClasses
	if got := denseBytes(1, span) + heldBytes(usable(DefaultPortLo, DefaultPortHi, st.KernelPorts()), cores, 1); got != cost {
		t.Fatalf("cost of the pool: %d, want %d", got, cost)
	}

	sh := NewShared(cores, nil)
	as, err := New(local, cores, sh)
	if err != nil {
		t.Fatal(err)
	}
	if !as[0].Dense() || !as[0].Steers() || DenseMax-sh.DenseLeft() != cost {
		t.Fatalf("dense %v, steers %v, budget taken %d, want %d", as[0].Dense(), as[0].Steers(), DenseMax-sh.DenseLeft(), cost)
	}

	// One byte short: refused, and the budget is untouched.
	sh = NewShared(cores, nil)
	sh.denseLeft = cost - 1
	if _, err := New(local, cores, sh); !errors.Is(err, ErrPool) || !strings.Contains(err.Error(), "box's own addresses") {
		t.Fatalf("local pool beyond the budget: %v", err)
	}
	if sh.DenseLeft() != cost-1 {
		t.Fatalf("a refused pool took %d bytes of the budget", cost-1-sh.DenseLeft())
	}
	// A pool of 1,000 addresses around the box's: beyond DenseMax.
	if _, err := New(Pool{AddrLo: extA - 500, AddrHi: extA + 499, Steering: st}, cores, NewShared(cores, nil)); !errors.Is(err, ErrPool) {
		t.Fatalf("local pool of 1000 addresses: %v", err)
	}

	// Other addresses beyond the budget: sparse, not steering, serving.
	other := ip(192, 0, 2, 1)
	sparse, err := New(Pool{AddrLo: other, AddrHi: other, PortLo: 5000, PortHi: 5010, Steering: st}, 1, sh1(0))
	if err != nil {
		t.Fatal(err)
	}
	a := sparse[0]
	if a.Dense() || a.Steers() {
		t.Fatalf("dense %v, steers %v", a.Dense(), a.Steers())
	}
	// The address becomes the box's after the pool was made: the sparse
	// pool cannot tell a port's first connection from its others, and
	// holds nothing (see the package documentation).
	if err := st.SetAddrs(map[uint32]uint32{extA: 0, other: 1}); err != nil {
		t.Fatal(err)
	}
	tab := table(t, 1, 100)
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	nf := conn(flowtable.ProtoUDP, ip(10, 0, 0, 1), 5005, remote, 53)
	if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != OK {
		t.Fatal(res)
	}
	if st.SlotHeld(1) {
		t.Fatal("a sparse pool held a port")
	}
	if !a.Release(&nf.Orig, &nf.Reply) || st.SlotHeld(1) {
		t.Fatal("release")
	}
}

// sh1 is a one-core Shared with left bytes of budget.
func sh1(left int64) *Shared {
	sh := NewShared(1, nil)
	sh.denseLeft = left
	return sh
}

// TestSteeringWithLimiter: with the per-source limiter counting ports
// per source, the Steering's count still follows the port's first and
// last connection of any source, and a connection refused at a source's
// port limit holds nothing.
func TestSteeringWithLimiter(t *testing.T) {
	st := newSteering(t, 1)
	if err := st.SetAddrs(map[uint32]uint32{extA: 0}); err != nil {
		t.Fatal(err)
	}
	tab := table(t, 1, 1000)
	lim := limiter(t, 1, tab.RecordsPerCore(), 0, 1)
	as, err := New(Pool{AddrLo: extA, AddrHi: extA, PortLo: 5000, PortHi: 5010, Steering: st}, 1, NewShared(1, lim))
	if err != nil {
		t.Fatal(err)
	}
	a, c := as[0], tab.Core(0)
	c.Enter()
	defer c.Exit()
	srcA, srcB := ip(10, 0, 0, 1), ip(10, 0, 0, 2)
	alloc := func(src uint32, sport uint16, dst uint32) (flowtable.NewFlow, Result) {
		nf := conn(flowtable.ProtoTCP, src, sport, dst, 80)
		_, res, _ := a.Allocate(c, &nf, Options{}, 0)
		return nf, res
	}
	held := func() int { return st.Count(extA, flowtable.ProtoTCP, 5005) }
	fa, res := alloc(srcA, 5005, remote)
	if res != OK || fa.Reply.DstPort != 5005 || held() != 1 {
		t.Fatalf("first connection: %v port %d, %d holders", res, fa.Reply.DstPort, held())
	}
	fb, res := alloc(srcB, 5005, ip(198, 51, 100, 8))
	if res != OK || fb.Reply.DstPort != 5005 || held() != 1 {
		t.Fatalf("second source on the port: %v port %d, %d holders", res, fb.Reply.DstPort, held())
	}
	// Source A is at its one port: another port is refused, unheld.
	if _, res := alloc(srcA, 5006, ip(198, 51, 100, 9)); res != PerSourceLimit || st.Count(extA, flowtable.ProtoTCP, 5006) != 0 {
		t.Fatalf("beyond the port limit: %v, port 5006 %d holders", res, st.Count(extA, flowtable.ProtoTCP, 5006))
	}
	if !a.Release(&fa.Orig, &fa.Reply) || held() != 1 {
		t.Fatalf("first connection gone: %d holders, want 1", held())
	}
	if !a.Release(&fb.Orig, &fb.Reply) || held() != 0 || st.SlotHeld(0) {
		t.Fatalf("last connection gone: %d holders", held())
	}
	if count(lim, srcA) != [2]int{} || count(lim, srcB) != [2]int{} {
		t.Fatalf("limiter counts left: %v %v", count(lim, srcA), count(lim, srcB))
	}
}
