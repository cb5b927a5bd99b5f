package portalloc

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"xnat/flowtable"
)

func limiter(t testing.TB, cores, conns, maxConns, maxPorts int) *SourceLimiter {
	t.Helper()
	l, err := NewSourceLimiter(LimiterConfig{Cores: cores, Conns: conns, MaxConns: maxConns, MaxPorts: maxPorts})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func count(l *SourceLimiter, src uint32) [2]int {
	c, p := l.Count(src)
	return [2]int{c, p}
}

func TestLimiterConfigErrors(t *testing.T) {
	for _, cfg := range []LimiterConfig{
		{Cores: 0, Conns: 10},
		{Cores: 1, Conns: 0},
		{Cores: 1, Conns: maxLimiterConns + 1},
		{Cores: 1, Conns: 10, Sources: -1},
		{Cores: 1, Conns: 10, Sources: maxLimiterSources + 1},
		{Cores: 1, Conns: 10, MaxConns: -1},
		{Cores: 1, Conns: 10, MaxPorts: MaxSourceLimit + 1},
	} {
		if _, err := NewSourceLimiter(cfg); !errors.Is(err, ErrLimiter) {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
	l := limiter(t, 1, 10, 5, 6)
	if m := limiter(t, 3, 1000, 0, 0).Memory(); m != 32*3000+3*32*1000+32<<10 {
		t.Errorf("memory of a limiter for 3 cores of 1000 connections: %d", m)
	}
	if l.Limit() != 5 || l.PortLimit() != 6 {
		t.Errorf("limits %d %d", l.Limit(), l.PortLimit())
	}
	if err := l.SetLimit(-1); !errors.Is(err, ErrLimiter) {
		t.Errorf("SetLimit(-1) = %v", err)
	}
	if err := l.SetPortLimit(MaxSourceLimit + 1); !errors.Is(err, ErrLimiter) {
		t.Errorf("SetPortLimit(too many) = %v", err)
	}
	if l.Limit() != 5 || l.PortLimit() != 6 {
		t.Errorf("limits changed by refused sets: %d %d", l.Limit(), l.PortLimit())
	}
	if _, err := New(Pool{AddrLo: extA, AddrHi: extA}, 2, NewShared(2, l)); !errors.Is(err, ErrPool) {
		t.Errorf("a 1-core limiter for 2 cores: %v", err)
	}
	if _, err := New(Pool{AddrLo: extA, AddrHi: extA}, 2, NewShared(1, nil)); !errors.Is(err, ErrPool) {
		t.Errorf("a 1-core shared state for 2 cores: %v", err)
	}
}

func TestPerSourceLimit(t *testing.T) {
	tab := table(t, 1, 100)
	lim := limiter(t, 1, 100, 0, 0)
	as, _ := New(Pool{AddrLo: extA, AddrHi: extA}, 1, NewShared(1, lim))
	a, c := as[0], tab.Core(0)
	c.Enter()
	defer c.Exit()
	host := ip(10, 0, 0, 1)
	var flows []flowtable.NewFlow
	for i := range 3 { // off by default: counts, never refuses
		nf := conn(flowtable.ProtoTCP, host, uint16(3000+i), remote, 80)
		if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != OK {
			t.Fatal(res)
		}
		flows = append(flows, nf)
	}
	if got := count(lim, host); got != [2]int{3, 3} {
		t.Fatalf("count %v", got)
	}
	if err := lim.SetLimit(3); err != nil {
		t.Fatal(err)
	}
	nf := conn(flowtable.ProtoTCP, host, 4000, remote, 80)
	if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != PerSourceLimit {
		t.Fatalf("over the limit: %v", res)
	}
	if a.Stats().PerSourceLimit != 1 || lim.Stats().RefusedConns != 1 {
		t.Errorf("refusals not counted: %+v %+v", a.Stats(), lim.Stats())
	}
	// Another host is not affected.
	o := conn(flowtable.ProtoTCP, ip(10, 0, 0, 2), 4000, remote, 80)
	if _, res, _ := a.Allocate(c, &o, Options{}, 0); res != OK {
		t.Fatal(res)
	}
	// An allocation that the table refuses gives its counts back.
	dup := flows[0]
	lim.SetLimit(10)
	if _, res, tr := a.Allocate(c, &dup, Options{}, 0); res != TableRefused || tr != flowtable.Exists {
		t.Fatalf("duplicate: %v %v", res, tr)
	}
	if got := count(lim, host); got != [2]int{3, 3} {
		t.Errorf("count after a table refusal %v", got)
	}
	lim.SetLimit(3)
	// One connection goes: the host may open another.
	if !a.Release(&flows[0].Orig, &flows[0].Reply) {
		t.Fatal("release")
	}
	if got := count(lim, host); got != [2]int{2, 2} {
		t.Errorf("count after a release %v", got)
	}
	if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != OK {
		t.Fatalf("after release: %v", res)
	}
	top := lim.Top(5)
	if len(top.Refused) != 1 || top.Refused[0].Addr != host || top.Refused[0].Refused != 1 || top.Refused[0].Conns != 3 {
		t.Errorf("top refused %+v", top.Refused)
	}
	if len(top.ByConns) != 2 || top.ByConns[0].Addr != host || top.ByConns[0].Conns != 3 || top.ByConns[1].Conns != 1 {
		t.Errorf("top by connections %+v", top.ByConns)
	}
	if top.Sources != 2 || top.Conns != 4 || top.Ports != 4 || top.Limit != 3 {
		t.Errorf("top totals %+v", top)
	}
}

// TestPerSourcePorts: a source's ports are the external endpoints its
// connections hold, each counted once however many connections share it;
// at its port limit a connection may only reuse the source's own port.
func TestPerSourcePorts(t *testing.T) {
	tab := table(t, 1, 100)
	lim := limiter(t, 1, 100, 0, 2)
	as, _ := New(Pool{AddrLo: extA, AddrHi: extA}, 1, NewShared(1, lim))
	a, c := as[0], tab.Core(0)
	c.Enter()
	defer c.Exit()
	host := ip(10, 0, 0, 1)
	// Port 5000 kept, to two servers: one port.
	f1 := conn(flowtable.ProtoUDP, host, 5000, remote, 53)
	f2 := conn(flowtable.ProtoUDP, host, 5000, remote+1, 53)
	for _, f := range []*flowtable.NewFlow{&f1, &f2} {
		if _, res, _ := a.Allocate(c, f, Options{}, 0); res != OK || f.Reply.DstPort != 5000 {
			t.Fatalf("%v port %d", res, f.Reply.DstPort)
		}
	}
	if got := count(lim, host); got != [2]int{2, 1} {
		t.Fatalf("two connections on one port: %v", got)
	}
	// The same port number in another protocol is another port.
	f3 := conn(flowtable.ProtoTCP, host, 5000, remote, 53)
	if _, res, _ := a.Allocate(c, &f3, Options{}, 0); res != OK {
		t.Fatal(res)
	}
	if got := count(lim, host); got != [2]int{3, 2} {
		t.Fatalf("after a TCP connection: %v", got)
	}
	// At the limit: a new port is refused, in any mode, at once.
	f4 := conn(flowtable.ProtoUDP, host, 6000, remote, 53)
	for _, m := range []Mode{ModeDefault, ModeRandom} {
		if _, res, _ := a.Allocate(c, &f4, Options{Mode: m}, 0); res != PerSourceLimit {
			t.Fatalf("mode %d: a third port: %v", m, res)
		}
	}
	if s := lim.Stats(); s.RefusedPorts != 2 || s.RefusedConns != 0 || a.Stats().PerSourceLimit != 2 {
		t.Errorf("refusals %+v %+v", s, a.Stats())
	}
	// but a port it holds serves another server.
	f5 := conn(flowtable.ProtoUDP, host, 5000, remote+2, 53)
	if _, res, _ := a.Allocate(c, &f5, Options{}, 0); res != OK || f5.Reply.DstPort != 5000 {
		t.Fatalf("held port at the limit: %v %d", res, f5.Reply.DstPort)
	}
	if got := count(lim, host); got != [2]int{4, 2} {
		t.Fatalf("after reusing a held port: %v", got)
	}
	// Another source has ports of its own, and may share port 5000.
	g := conn(flowtable.ProtoUDP, ip(10, 0, 0, 2), 5000, remote+3, 53)
	if _, res, _ := a.Allocate(c, &g, Options{}, 0); res != OK || g.Reply.DstPort != 5000 {
		t.Fatalf("other source: %v %d", res, g.Reply.DstPort)
	}
	if got := count(lim, g.Orig.Src); got != [2]int{1, 1} {
		t.Fatalf("other source: %v", got)
	}
	// The port goes when its last connection of the source does.
	for i, f := range []*flowtable.NewFlow{&f1, &f2, &f5} {
		a.Release(&f.Orig, &f.Reply)
		want := [2]int{3 - i, 2}
		if i == 2 {
			want[1] = 1
		}
		if got := count(lim, host); got != want {
			t.Fatalf("after release %d: %v, want %v", i, got, want)
		}
	}
	if _, res, _ := a.Allocate(c, &f4, Options{}, 0); res != OK {
		t.Fatalf("a new port under the limit: %v", res)
	}
	// A port-limit refusal gives back the connection it counted.
	lim.SetPortLimit(1)
	f6 := conn(flowtable.ProtoUDP, host, 7000, remote, 53)
	if _, res, _ := a.Allocate(c, &f6, Options{}, 0); res != PerSourceLimit {
		t.Fatal(res)
	}
	if got := count(lim, host); got != [2]int{2, 2} {
		t.Fatalf("after a port refusal: %v", got)
	}
	// ICMP identifiers are ports; other protocols hold none.
	lim.SetPortLimit(0)
	gre := conn(47, host, 0, remote, 0)
	if _, res, _ := a.Allocate(c, &gre, Options{}, 0); res != OK {
		t.Fatal(res)
	}
	if got := count(lim, host); got != [2]int{3, 2} {
		t.Fatalf("after GRE: %v", got)
	}
	a.Release(&gre.Orig, &gre.Reply)
	if got := count(lim, host); got != [2]int{2, 2} {
		t.Fatalf("after GRE's release: %v", got)
	}
}

// fillWindow binds every slot of src's two buckets to other addresses,
// each with one connection; every other slot is left free.
func fillWindow(l *SourceLimiter, src uint32) {
	b1, b2 := l.home(src)
	for i := range uint64(srcWindow) {
		l.slots[at(b1, b2, i)].key.Store(uint64(src+1+uint32(i))<<32 | keyBound | 1)
	}
}

// TestLimiterFullRefusesAtOnce: a source whose two buckets (16 slots) are
// bound to others is refused, and counted, however many slots of the
// table are free elsewhere: the refusal looks at its buckets only (it
// leaves every other slot as it was) and allocates nothing. A release
// likewise looks no further.
func TestLimiterFullRefusesAtOnce(t *testing.T) {
	l := limiter(t, 1, 1<<16, 0, 0)
	src := ip(10, 1, 2, 3)
	fillWindow(l, src)
	before := make([]uint64, len(l.slots))
	for i := range l.slots {
		before[i] = l.slots[i].key.Load()
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if j, why := l.acquire(src); why != limFull || j != -1 {
			t.Fatalf("acquire in a full window: %d %d", j, why)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations a refusal", allocs)
	}
	for i := range l.slots {
		if v := l.slots[i].key.Load(); v != before[i] {
			t.Fatalf("slot %d changed by refusals: %x -> %x", i, before[i], v)
		}
	}
	if s := l.Stats(); s.Full != 1001 {
		t.Errorf("full refusals %d, want 1001", s.Full)
	}
	if top := l.Top(1); len(top.Refused) != 1 || top.Refused[0].Addr != src || top.Refused[0].Refused != 1001 {
		t.Errorf("top refused %+v", top.Refused)
	}
	// A source bound in another bucket is not found by a release.
	b1, b2 := l.home(src)
	other := uint64(0)
	for other == b1 || other == b2 {
		other += srcBucket
	}
	out := &l.slots[other]
	out.key.Store(uint64(src)<<32 | keyBound | 1)
	l.release(src, false)
	if out.key.Load() != uint64(src)<<32|keyBound|1 {
		t.Error("release reached beyond the window")
	}
}

// TestLimiterWindowFullRate: with as many sources as the limiter was
// sized for (half its slots), each holding one connection, no source is
// refused for want of a slot.
func TestLimiterWindowFullRate(t *testing.T) {
	const sources = 1 << 18
	l, err := NewSourceLimiter(LimiterConfig{Cores: 1, Conns: 1, Sources: sources})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	seen := map[uint32]bool{}
	for len(seen) < sources {
		src := rng.Uint32()
		if seen[src] {
			continue
		}
		seen[src] = true
		if _, why := l.acquire(src); why != limOK {
			t.Fatalf("source %d of %d refused (%d)", len(seen), sources, why)
		}
	}
}

// TestSlotsFreedAndReused: a source's slot dies with its last connection
// and goes to the next new source that needs it.
func TestSlotsFreedAndReused(t *testing.T) {
	l, err := NewSourceLimiter(LimiterConfig{Cores: 1, Conns: 1, Sources: 8}) // 16 slots: one window
	if err != nil {
		t.Fatal(err)
	}
	if len(l.slots) != srcWindow {
		t.Fatalf("%d slots", len(l.slots))
	}
	slots := map[int]uint32{}
	for i := range srcWindow {
		src := ip(10, 0, 0, byte(i))
		j, why := l.acquire(src)
		if why != limOK {
			t.Fatalf("source %d: %d", i, why)
		}
		slots[j] = src
	}
	if len(slots) != srcWindow {
		t.Fatalf("%d sources in %d slots", srcWindow, len(slots))
	}
	late := ip(10, 0, 1, 0)
	if _, why := l.acquire(late); why != limFull {
		t.Fatalf("17th source: %d", why)
	}
	// Source 5 ends its connection: its slot is dead, still its own.
	l.release(ip(10, 0, 0, 5), false)
	if got := count(l, ip(10, 0, 0, 5)); got != [2]int{} {
		t.Fatalf("count after release %v", got)
	}
	if top := l.Top(20); top.Sources != srcWindow-1 {
		t.Errorf("%d sources in the top", top.Sources)
	}
	// It comes back to the same slot.
	j5, why := l.acquire(ip(10, 0, 0, 5))
	if why != limOK || slots[j5] != ip(10, 0, 0, 5) {
		t.Fatalf("revived: slot %d %d", j5, why)
	}
	l.release(ip(10, 0, 0, 5), false)
	// A new source takes it.
	j, why := l.acquire(late)
	if why != limOK || j != j5 {
		t.Fatalf("new source: slot %d (%d), the dead one is %d", j, why, j5)
	}
	if got := count(l, late); got != [2]int{1, 0} {
		t.Fatalf("new source count %v", got)
	}
	if _, why := l.acquire(ip(10, 0, 0, 5)); why != limFull {
		t.Fatalf("the old source with no slot left: %d", why)
	}
	// Every source lets go: every slot is dead, and 16 new ones fit.
	for _, src := range slots {
		if src != ip(10, 0, 0, 5) {
			l.release(src, false)
		}
	}
	l.release(late, false)
	for i := range srcWindow {
		if _, why := l.acquire(ip(10, 0, 2, byte(i))); why != limOK {
			t.Fatalf("new source %d after all left: %d", i, why)
		}
	}
}

// TestLimiterConcurrentExact: goroutines acquire and release connections
// (and ports) of a few sources at once, in a table small enough that dead
// slots are stolen all the time. No source ever holds more than its
// limits, and at the end every count is zero and every slot free or dead.
func TestLimiterConcurrentExact(t *testing.T) {
	const (
		workers  = 4
		sources  = 48
		maxConns = 5
		maxPorts = 3
	)
	l, err := NewSourceLimiter(LimiterConfig{Cores: 1, Conns: 1, Sources: 16, MaxConns: maxConns, MaxPorts: maxPorts}) // 32 slots, 4 buckets
	if err != nil {
		t.Fatal(err)
	}
	var conns, ports [sources]atomic.Int32 // what the workers hold
	var ok, full, refused atomic.Uint64
	iters := 20000
	if testing.Short() {
		iters = 2000
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 11))
			type held struct {
				src  int
				port bool
			}
			var mine []held
			for range iters {
				if len(mine) > 0 && (rng.IntN(2) == 0 || len(mine) > 40) {
					k := rng.IntN(len(mine))
					h := mine[k]
					mine[k] = mine[len(mine)-1]
					mine = mine[:len(mine)-1]
					conns[h.src].Add(-1)
					if h.port {
						ports[h.src].Add(-1)
					}
					l.release(uint32(h.src), h.port)
					continue
				}
				src := rng.IntN(sources)
				j, why := l.acquire(uint32(src))
				switch why {
				case limFull:
					full.Add(1)
					continue
				case limConns:
					refused.Add(1)
					continue
				}
				if n := conns[src].Add(1); n > maxConns {
					t.Errorf("source %d holds %d connections", src, n)
				}
				h := held{src: src}
				if rng.IntN(2) == 0 && l.reservePort(j) {
					h.port = true
					if n := ports[src].Add(1); n > maxPorts {
						t.Errorf("source %d holds %d ports", src, n)
					}
				}
				mine = append(mine, h)
				ok.Add(1)
			}
			for _, h := range mine {
				conns[h.src].Add(-1)
				if h.port {
					ports[h.src].Add(-1)
				}
				l.release(uint32(h.src), h.port)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d acquired, %d at the limit, %d without a slot", ok.Load(), refused.Load(), full.Load())
	if ok.Load() == 0 || refused.Load() == 0 || full.Load() == 0 {
		t.Errorf("the stress missed a path: %d acquired, %d at the limit, %d without a slot", ok.Load(), refused.Load(), full.Load())
	}
	for i := range l.slots {
		s := &l.slots[i]
		if v := s.key.Load(); v&(keyPending|countMask) != 0 || s.ports.Load() != 0 {
			t.Errorf("slot %d left %x with %d ports", i, v, s.ports.Load())
		}
	}
	if s := l.Stats(); s.Full != full.Load() || s.RefusedConns != refused.Load() {
		t.Errorf("stats %+v, saw %d full, %d refused", s, full.Load(), refused.Load())
	}
}

// TestAllocateConcurrentCounts: cores allocate into one table with one
// limiter; when they stop, every source's counts in the limiter are its
// connections in the table and the distinct external ports they hold,
// and after expiry everything is zero.
func TestAllocateConcurrentCounts(t *testing.T) {
	const cores = 3
	tab := table(t, cores, 30000)
	lim := limiter(t, cores, tab.RecordsPerCore(), 40, 25)
	as, err := New(Pool{AddrLo: extA, AddrHi: extA + 1, PortLo: 20000, PortHi: 20299}, cores, NewShared(cores, lim))
	if err != nil {
		t.Fatal(err)
	}
	type port struct {
		proto uint8
		addr  uint32
		port  uint16
	}
	var mu sync.Mutex
	conns := map[uint32]int{}
	held := map[uint32]map[port]bool{}
	var results [LimiterFull + 1]atomic.Uint64
	var wg sync.WaitGroup
	for id := range cores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, a := tab.Core(id), as[id]
			rng := rand.New(rand.NewPCG(uint64(id), 5))
			for i := range 3000 {
				c.Enter()
				proto := []uint8{flowtable.ProtoUDP, flowtable.ProtoTCP, 47}[rng.IntN(3)]
				nf := conn(proto, ip(10, 0, 0, byte(rng.IntN(32))), uint16(20000+rng.IntN(300)), remote+uint32(rng.IntN(4)), uint16(53+i%7))
				_, res, _ := a.Allocate(c, &nf, Options{}, 0)
				results[res].Add(1)
				if res == OK {
					mu.Lock()
					conns[nf.Orig.Src]++
					if proto != 47 {
						if held[nf.Orig.Src] == nil {
							held[nf.Orig.Src] = map[port]bool{}
						}
						held[nf.Orig.Src][port{proto, nf.Reply.Dst, nf.Reply.DstPort}] = true
					}
					mu.Unlock()
				}
				c.Exit()
			}
		}()
	}
	wg.Wait()
	t.Logf("ok %d, out of ports %d, per-source limit %d, table refused %d", results[OK].Load(), results[OutOfPorts].Load(), results[PerSourceLimit].Load(), results[TableRefused].Load())
	if results[OK].Load() == 0 || results[PerSourceLimit].Load() == 0 {
		t.Error("the stress missed a path")
	}
	total := 0
	for src, n := range conns {
		got := count(lim, src)
		if got != [2]int{n, len(held[src])} {
			t.Errorf("source %s: limiter %v, table %d connections on %d ports", flowtable.FormatAddr(src), got, n, len(held[src]))
		}
		if n > 40 || len(held[src]) > 25 {
			t.Errorf("source %s over its limits: %d connections, %d ports", flowtable.FormatAddr(src), n, len(held[src]))
		}
		total += n
	}
	if tab.Count() != total {
		t.Errorf("table %d, counted %d", tab.Count(), total)
	}
	expireAll(t, tab, as)
	if top := lim.Top(1); top.Sources != 0 || top.Conns != 0 || top.Ports != 0 {
		t.Errorf("after expiry: %+v", top)
	}
	for _, p := range lim.pairs {
		for i := range p.e {
			if p.e[i].n != 0 {
				t.Fatalf("pair entry %+v left", p.e[i])
			}
		}
	}
}

// TestLimiterRefusalsNoAllocs: refusals at either limit allocate nothing.
func TestLimiterRefusalsNoAllocs(t *testing.T) {
	tab := table(t, 1, 1000)
	lim := limiter(t, 1, 1000, 1, 1)
	as, _ := New(Pool{AddrLo: extA, AddrHi: extA}, 1, NewShared(1, lim))
	a, c := as[0], tab.Core(0)
	c.Enter()
	defer c.Exit()
	host := ip(10, 0, 0, 1)
	first := conn(flowtable.ProtoUDP, host, 5000, remote, 53)
	if _, res, _ := a.Allocate(c, &first, Options{}, 0); res != OK {
		t.Fatal(res)
	}
	nf := conn(flowtable.ProtoUDP, host, 6000, remote, 53)
	if n := testing.AllocsPerRun(100, func() {
		if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != PerSourceLimit {
			t.Fatal(res)
		}
	}); n != 0 {
		t.Errorf("%v allocations a connection refusal", n)
	}
	lim.SetLimit(0)
	if n := testing.AllocsPerRun(100, func() {
		if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != PerSourceLimit {
			t.Fatal(res)
		}
	}); n != 0 {
		t.Errorf("%v allocations a port refusal", n)
	}
	if s := lim.Stats(); s.RefusedConns != 101 || s.RefusedPorts != 101 {
		t.Errorf("refusals %+v", s)
	}
}

// TestReleasedOnEveryEnd: however a connection ends — deleted on the
// packet path, deleted or flushed by the control plane, evicted by early
// drop, expired — its owner's sweep reports it once and Release gives
// its source's counts back: after each way, the limiter's counts are the
// table's connections, and at the end nothing is counted.
func TestReleasedOnEveryEnd(t *testing.T) {
	tab := table(t, 1, 1000)
	lim := limiter(t, 1, tab.RecordsPerCore(), 0, 0)
	as, _ := New(Pool{AddrLo: extA, AddrHi: extA}, 1, NewShared(1, lim))
	a, c := as[0], tab.Core(0)
	host := ip(10, 0, 0, 1)
	var gone [64]flowtable.Gone
	released := 0
	sweep := func(now flowtable.Time) {
		for {
			c.Enter()
			n := c.Sweep(now, 2000, gone[:])
			for _, g := range gone[:n] {
				if !a.Release(&g.Orig, &g.Reply) {
					t.Fatalf("release %v", g.Reply)
				}
				released++
			}
			c.Exit()
			if n == 0 {
				return
			}
		}
	}
	open := func(sport uint16) flowtable.NewFlow {
		c.Enter()
		defer c.Exit()
		nf := conn(flowtable.ProtoUDP, host, sport, remote, 53)
		if _, res, _ := a.Allocate(c, &nf, Options{}, 0); res != OK {
			t.Fatalf("open %d: %v", sport, res)
		}
		return nf
	}
	check := func(how string) {
		t.Helper()
		sweep(0)
		if got, want := count(lim, host), (tab.Count()); got != [2]int{want, want} {
			t.Fatalf("after %s: limiter %v, table %d", how, got, want)
		}
	}
	var flows []flowtable.NewFlow
	for i := range 10 {
		flows = append(flows, open(uint16(5000+i)))
	}
	check("opening")
	c.Enter()
	c.Kill(c.Lookup(&flows[0].Orig, 0))
	c.Exit()
	check("a delete on the packet path")
	tab.Delete(flows[1].Reply)
	check("a delete through the control plane")
	tab.DeleteMatching(func(fi *flowtable.FlowInfo) bool { return fi.Orig.SrcPort == 5002 })
	check("conntrack -D")
	// Early drop: at the limit, a new connection evicts an unassured one.
	if err := tab.SetMax(tab.Count()); err != nil {
		t.Fatal(err)
	}
	open(6000)
	if s := tab.TotalStats(); s.EarlyDrop != 1 {
		t.Fatalf("early drops %d", s.EarlyDrop)
	}
	check("an early drop")
	tab.SetMax(1000)
	// Expiry: the rest, an hour on.
	sweep(flowtable.Ticks(time.Hour))
	if tab.Count() != 0 {
		t.Fatalf("%d left after expiry", tab.Count())
	}
	check("expiry")
	for i := range 5 {
		open(uint16(7000 + i))
	}
	if n := tab.Flush(); n != 5 {
		t.Fatalf("flushed %d", n)
	}
	check("a flush")
	if s := a.Stats(); int(s.Allocated) != released || s.Released != s.Allocated {
		t.Errorf("allocated %d, released %d (%d reports)", s.Allocated, s.Released, released)
	}
	if top := lim.Top(1); top.Sources != 0 || top.Conns != 0 || top.Ports != 0 {
		t.Errorf("limiter at the end: %+v", top)
	}
}

// FuzzLimiter: any sequence of acquires, releases, port reservations and
// limit changes on a limiter of 32 slots keeps its counts equal to a
// model's; a refusal at the limit comes only at the limit, and one for
// want of a slot only when both the source's buckets hold live sources.
// Each op is two bytes: the op and its argument.
func FuzzLimiter(f *testing.F) {
	f.Add([]byte{0, 1, 0, 1, 0, 2, 1, 0, 2, 0, 1, 1})
	f.Add([]byte{3, 2, 0, 1, 0, 1, 0, 1, 2, 0, 2, 1, 1, 0, 1, 0})
	seq := make([]byte, 0, 200)
	for i := range 100 {
		seq = append(seq, 0, byte(i))
	}
	f.Add(seq)
	f.Fuzz(func(t *testing.T, ops []byte) {
		l, err := NewSourceLimiter(LimiterConfig{Cores: 1, Conns: 1, Sources: 16})
		if err != nil {
			t.Fatal(err)
		}
		type held struct {
			src  uint32
			slot int
			port bool
		}
		var hs []held
		conns, ports := map[uint32]int{}, map[uint32]int{}
		for i := 0; i+2 <= len(ops); i += 2 {
			arg := ops[i+1]
			switch ops[i] % 4 {
			case 0:
				src := uint32(arg % 40)
				j, why := l.acquire(src)
				switch why {
				case limOK:
					hs = append(hs, held{src: src, slot: j})
					conns[src]++
				case limConns:
					if lim := l.Limit(); lim == 0 || conns[src] < lim {
						t.Fatalf("source %d refused at %d connections, limit %d", src, conns[src], lim)
					}
				case limFull:
					if conns[src] != 0 {
						t.Fatalf("source %d with %d connections had no slot", src, conns[src])
					}
					b1, b2 := l.home(src)
					for k := range uint64(srcWindow) {
						if v := l.slots[at(b1, b2, k)].key.Load(); v&countMask == 0 {
							t.Fatalf("source %d refused with slot %d free or dead", src, at(b1, b2, k))
						}
					}
				}
			case 1:
				if len(hs) == 0 {
					continue
				}
				k := int(arg) % len(hs)
				h := hs[k]
				hs = append(hs[:k], hs[k+1:]...)
				l.release(h.src, h.port)
				conns[h.src]--
				if h.port {
					ports[h.src]--
				}
			case 2:
				if len(hs) == 0 {
					continue
				}
				h := &hs[int(arg)%len(hs)]
				if h.port {
					continue
				}
				if l.reservePort(h.slot) {
					h.port = true
					ports[h.src]++
				} else if lim := l.PortLimit(); lim == 0 || ports[h.src] < lim {
					t.Fatalf("source %d refused a port at %d, limit %d", h.src, ports[h.src], lim)
				}
			case 3:
				l.SetLimit(int(arg % 4))
				l.SetPortLimit(int(arg >> 2 % 4))
			}
		}
		for src := range uint32(40) {
			if c, p := l.Count(src); c != conns[src] || p != ports[src] {
				t.Fatalf("source %d: %d connections %d ports, model %d %d", src, c, p, conns[src], ports[src])
			}
		}
	})
}
