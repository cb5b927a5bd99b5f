package flowtable

import (
	"errors"
	"testing"
	"time"
	"unsafe"
)

func ip(a, b, c, d byte) uint32 { return uint32(a)<<24 | uint32(b)<<16 | uint32(c)<<8 | uint32(d) }

var (
	inside   = ip(192, 168, 1, 2)
	external = ip(203, 0, 113, 1)
	remote   = ip(8, 8, 8, 8)
)

// snatFlow is a TCP connection from inside:sport to remote:53, source-NATed
// to external:extPort.
func snatFlow(sport, extPort uint16, st State) NewFlow {
	o := MakeTuple(ProtoTCP, inside, sport, remote, 53)
	r := MakeTuple(ProtoTCP, remote, 53, external, extPort)
	return NewFlow{Orig: o, Reply: r, Status: uint32(st) | FlagSrcNAT}
}

func newTable(t testing.TB, cfg Config) *Table {
	t.Helper()
	if cfg.Cores == 0 {
		cfg.Cores = 1
	}
	if cfg.Seed == 0 {
		cfg.Seed = 42
	}
	tab, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func mustInsert(t testing.TB, c *Core, nf NewFlow, now Time) Ref {
	t.Helper()
	r, res := c.Insert(&nf, now)
	if res != Inserted {
		t.Fatalf("insert %v: %v", nf.Orig, res)
	}
	return r
}

func TestLayout(t *testing.T) {
	if s := unsafe.Sizeof(Tuple{}); s != 16 {
		t.Errorf("Tuple is %d bytes, want 16", s)
	}
	if s := unsafe.Sizeof(Flow{}); s != 48 {
		t.Errorf("Flow is %d bytes, want 48", s)
	}
	if s := unsafe.Sizeof(bucket{}); s != 64 {
		t.Errorf("bucket is %d bytes, want one cache line", s)
	}
	if s := unsafe.Sizeof(pubStats{}); s%cacheLine != 0 {
		t.Errorf("pubStats is %d bytes, not a multiple of %d", s, cacheLine)
	}
	if s := unsafe.Sizeof(epochSlot{}); s != cacheLine {
		t.Errorf("epochSlot is %d bytes, want %d", s, cacheLine)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Capacity: 0, Cores: 1},
		{Capacity: 10, Cores: 0},
		{Capacity: 10, Cores: 256},
		{Capacity: 10, Cores: 1, Max: 11},
		{Capacity: 10, Cores: 1, Max: -1},
		{Capacity: 10, Cores: 1, Limbo: 3},
		{Capacity: 1 << 28, Cores: 1},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
}

func TestInsertLookupBothDirections(t *testing.T) {
	tab := newTable(t, Config{Capacity: 100})
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	nf := snatFlow(40000, 1024, TCPSynSent)
	r := mustInsert(t, c, nf, 1)
	if r.Dir() != DirOrig {
		t.Errorf("insert returned dir %v", r.Dir())
	}
	got := c.Lookup(&nf.Orig, 2)
	if got != r {
		t.Fatalf("lookup orig = %v, want %v", got, r)
	}
	rep := c.Lookup(&nf.Reply, 2)
	if rep == 0 || rep.Dir() != DirReply || tab.Flow(rep) != tab.Flow(r) {
		t.Fatalf("lookup reply = %v", rep)
	}
	f := tab.Flow(r)
	if f.Orig() != nf.Orig || f.Reply() != nf.Reply || f.State() != TCPSynSent || f.Status()&FlagSrcNAT == 0 {
		t.Errorf("record = %v %v %v %#x", f.Orig(), f.Reply(), f.State(), f.Status())
	}
	// The untranslated reverse of the original is not the reply tuple.
	rev := nf.Orig.Reverse()
	if c.Lookup(&rev, 2) != 0 {
		t.Error("untranslated reverse tuple found")
	}
	if tab.Count() != 1 {
		t.Errorf("count = %d", tab.Count())
	}
	if tab.Owner(r) != 0 {
		t.Errorf("owner = %d", tab.Owner(r))
	}
}

func TestInsertClashes(t *testing.T) {
	tab := newTable(t, Config{Capacity: 100})
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	a := snatFlow(40000, 1024, TCPSynSent)
	ra := mustInsert(t, c, a, 1)

	// Same original tuple: Exists, with the existing connection.
	b := a
	b.Reply.DstPort = 2000
	if r, res := c.Insert(&b, 1); res != Exists || r != ra {
		t.Errorf("same orig: %v %v", r, res)
	}
	// Another connection whose reply tuple is taken: ReplyClash.
	d := snatFlow(40001, 1024, TCPSynSent)
	if _, res := c.Insert(&d, 1); res != ReplyClash || !errors.Is(res.Err(), ErrReplyClash) {
		t.Errorf("reply clash: %v", res)
	}
	// A tuple that is another connection's reply tuple counts as existing.
	e := NewFlow{Orig: a.Reply, Reply: MakeTuple(ProtoTCP, 1, 1, 2, 2), Status: uint32(TCPSynSent)}
	if _, res := c.Insert(&e, 1); res != Exists {
		t.Errorf("orig equal to a reply tuple: %v", res)
	}
	// The original tuple's entry out of sight, as in the moment a
	// relocation copies it between buckets (a look before publishing may
	// miss it): its reply tuple's holder is the connection itself, which
	// exists, not a clash. Then the entry comes back.
	po := tab.at(&a.Orig)
	if !tab.unlink(&po, ra.idx()) {
		t.Fatal("the original tuple's entry was not in the index")
	}
	if r, res := c.Insert(&a, 1); res != Exists || r != ra {
		t.Errorf("same connection, original entry missed: %v %v", r, res)
	}
	if r, res := c.InsertRetry(&a, 1); res != Exists || r != ra {
		t.Errorf("same connection, original entry missed, retried: %v %v", r, res)
	}
	if !tab.link(&po, ra.idx()) {
		t.Fatal("the original tuple's entry could not be put back")
	}
	// Equal tuples and no state are refused.
	f := NewFlow{Orig: a.Orig, Reply: a.Orig, Status: uint32(TCPSynSent)}
	if _, res := c.Insert(&f, 1); res != BadFlow {
		t.Errorf("equal tuples: %v", res)
	}
	g := snatFlow(40002, 1030, StateNone)
	if _, res := c.Insert(&g, 1); res != BadFlow {
		t.Errorf("no state: %v", res)
	}
	if tab.Count() != 1 {
		t.Errorf("count = %d, want 1", tab.Count())
	}
}

// TestInsertRetry: the port allocator's second try with another reply
// tuple inserts as Insert would; and when the original tuple has been
// taken since the first try, the retry, which does not look for it first,
// still ends in Exists with the connection that holds it, and leaves the
// table as it was.
func TestInsertRetry(t *testing.T) {
	tab := newTable(t, Config{Capacity: 100})
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	mustInsert(t, c, snatFlow(40000, 1024, TCPSynSent), 1)
	d := snatFlow(40001, 1024, TCPSynSent)
	if _, res := c.Insert(&d, 1); res != ReplyClash {
		t.Fatalf("first try: %v", res)
	}
	d.Reply.DstPort = 1025
	rd, res := c.InsertRetry(&d, 1)
	if res != Inserted {
		t.Fatalf("retry: %v", res)
	}
	if r := c.Lookup(&d.Reply, 1); r != makeRef(rd.idx(), DirReply) {
		t.Fatalf("retried connection's reply tuple: %v", r)
	}

	// The original tuple taken between the tries.
	e := snatFlow(40002, 1024, TCPSynSent)
	if _, res := c.Insert(&e, 1); res != ReplyClash {
		t.Fatalf("first try: %v", res)
	}
	other := e
	other.Reply.DstPort = 3000
	ro := mustInsert(t, c, other, 1)
	before := tab.Count()
	e.Reply.DstPort = 1026
	if r, res := c.InsertRetry(&e, 1); res != Exists || r != ro {
		t.Fatalf("retry after the original tuple was taken: %v %v, want %v Exists", r, res, ro)
	}
	if tab.Count() != before {
		t.Fatalf("count %d after the refused retry, want %d", tab.Count(), before)
	}
	if r := c.Lookup(&e.Reply, 1); r != 0 {
		t.Fatalf("the refused retry's reply tuple is indexed: %v", r)
	}
}

func TestExpiry(t *testing.T) {
	tab := newTable(t, Config{Capacity: 100})
	c := tab.Core(0)
	to := Ticks(120 * time.Second) // syn_sent
	c.Enter()
	nf := snatFlow(40000, 1024, TCPSynSent)
	mustInsert(t, c, nf, 0)
	if c.Lookup(&nf.Orig, to) == 0 {
		t.Fatal("gone at exactly its timeout")
	}
	// Past the timeout it is invisible even though nobody swept it.
	if c.Lookup(&nf.Orig, to+1) != 0 || c.Lookup(&nf.Reply, to+1) != 0 {
		t.Fatal("expired connection visible")
	}
	if tab.Count() != 1 {
		t.Fatalf("count before sweep = %d", tab.Count())
	}
	var out [8]Gone
	n := c.Sweep(to+1, 100, out[:])
	if n != 1 || out[0].Reason != ReasonTimeout || out[0].Orig != nf.Orig || out[0].Reply != nf.Reply {
		t.Fatalf("sweep = %d %+v", n, out[0])
	}
	if tab.Count() != 0 {
		t.Errorf("count after sweep = %d", tab.Count())
	}
	// Sweeping again reports nothing more.
	if n := c.Sweep(to+2, 100, out[:]); n != 0 {
		t.Errorf("second sweep reported %d", n)
	}
	c.Exit()
	if s := c.Stats(); s.Expired != 1 || s.Insert != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestTouchAndReplyDirectionRefresh(t *testing.T) {
	tab := newTable(t, Config{Capacity: 100})
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	nf := snatFlow(40000, 1024, TCPEstablished)
	r := mustInsert(t, c, nf, 0)
	if err := tab.SetTimeout("nf_conntrack_tcp_timeout_established", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	tab.Flow(r).Touch(900)
	if c.Lookup(&nf.Reply, 1500) == 0 {
		t.Fatal("touched connection expired")
	}
	if c.Lookup(&nf.Reply, 1901) != 0 {
		t.Fatal("connection outlived its timeout after the touch")
	}
	// A core whose clock is behind the stamp does not see it expired.
	if c.Lookup(&nf.Orig, 800) == 0 {
		t.Fatal("stamp in this core's future treated as expired")
	}
}

func TestTimeoutChangeAppliesToExisting(t *testing.T) {
	tab := newTable(t, Config{Capacity: 100})
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	u := NewFlow{Orig: MakeTuple(ProtoUDP, inside, 5000, remote, 53), Reply: MakeTuple(ProtoUDP, remote, 53, external, 5000), Status: uint32(UDP)}
	mustInsert(t, c, u, 0)
	if c.Lookup(&u.Orig, Ticks(25*time.Second)) == 0 {
		t.Fatal("udp expired before 30s")
	}
	if err := tab.SetTimeout("nf_conntrack_udp_timeout", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if c.Lookup(&u.Orig, Ticks(25*time.Second)) != 0 {
		t.Fatal("lowered timeout not applied to the existing connection")
	}
	if err := tab.SetTimeout("nf_conntrack_udp_timeout", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if c.Lookup(&u.Orig, Ticks(25*time.Second)) == 0 {
		t.Fatal("raised timeout not applied")
	}
}

func TestTimeoutNamesAndDefaults(t *testing.T) {
	tab := newTable(t, Config{Capacity: 10})
	want := map[string]time.Duration{
		"nf_conntrack_tcp_timeout_established":    432000 * time.Second,
		"nf_conntrack_tcp_timeout_syn_sent":       120 * time.Second,
		"nf_conntrack_tcp_timeout_syn_recv":       60 * time.Second,
		"nf_conntrack_tcp_timeout_fin_wait":       120 * time.Second,
		"nf_conntrack_tcp_timeout_close_wait":     60 * time.Second,
		"nf_conntrack_tcp_timeout_last_ack":       30 * time.Second,
		"nf_conntrack_tcp_timeout_time_wait":      120 * time.Second,
		"nf_conntrack_tcp_timeout_close":          10 * time.Second,
		"nf_conntrack_tcp_timeout_unacknowledged": 300 * time.Second,
		"nf_conntrack_tcp_timeout_max_retrans":    300 * time.Second,
		"nf_conntrack_udp_timeout":                30 * time.Second,
		"nf_conntrack_udp_timeout_stream":         120 * time.Second,
		"nf_conntrack_icmp_timeout":               30 * time.Second,
		"nf_conntrack_generic_timeout":            600 * time.Second,
	}
	if len(TimeoutNames()) != len(want) {
		t.Errorf("names %v", TimeoutNames())
	}
	for name, d := range want {
		got, err := tab.Timeout(name)
		if err != nil || got != d {
			t.Errorf("%s = %v %v, want %v", name, got, err, d)
		}
		if dd, err := DefaultTimeout(name); err != nil || dd != d {
			t.Errorf("default %s = %v %v", name, dd, err)
		}
	}
	if tab.StateTimeout(TCPSynSent2) != 120*time.Second {
		t.Errorf("SYN_SENT2 not timed as SYN_SENT")
	}
	if err := tab.SetTimeout("nf_conntrack_bogus", time.Second); !errors.Is(err, ErrUnknownTimeout) {
		t.Errorf("unknown name: %v", err)
	}
	if _, err := tab.Timeout("x"); !errors.Is(err, ErrUnknownTimeout) {
		t.Errorf("unknown name: %v", err)
	}
	for _, d := range []time.Duration{0, time.Millisecond, MaxTimeout + Tick} {
		if err := tab.SetTimeout("nf_conntrack_udp_timeout", d); !errors.Is(err, ErrBadTimeout) {
			t.Errorf("timeout %v: %v", d, err)
		}
	}
	if got, _ := tab.Timeout("nf_conntrack_udp_timeout"); got != 30*time.Second {
		t.Errorf("rejected change altered the value: %v", got)
	}
}

func TestMaxAndTableFull(t *testing.T) {
	tab := newTable(t, Config{Capacity: 100, Max: 3})
	c := tab.Core(0)
	c.Enter()
	for i := range 3 {
		nf := snatFlow(uint16(40000+i), uint16(1024+i), TCPEstablished)
		nf.Status |= FlagAssured
		mustInsert(t, c, nf, 0)
	}
	nf := snatFlow(41000, 2000, TCPSynSent)
	if _, res := c.Insert(&nf, 0); res != Full || !errors.Is(res.Err(), ErrFull) {
		t.Fatalf("insert over max: %v", res)
	}
	if n, _ := tab.FullEvents(); n != 1 {
		t.Errorf("full events = %d", n)
	}
	// Rate limited: more drops within a second raise no new event.
	for i := range 5 {
		nf := snatFlow(uint16(41001+i), uint16(3000+i), TCPSynSent)
		c.Insert(&nf, 50)
	}
	if n, _ := tab.FullEvents(); n != 1 {
		t.Errorf("full events within a second = %d", n)
	}
	nf = snatFlow(41100, 4000, TCPSynSent)
	c.Insert(&nf, 101)
	if n, last := tab.FullEvents(); n != 2 || last != 101 {
		t.Errorf("full events after a second = %d at %d", n, last)
	}
	// Raising the limit at run time admits the connection.
	if err := tab.SetMax(4); err != nil {
		t.Fatal(err)
	}
	mustInsert(t, c, snatFlow(41000, 2000, TCPSynSent), 101)
	// Lowering it below the count evicts nothing but refuses new ones.
	if err := tab.SetMax(2); err != nil {
		t.Fatal(err)
	}
	if tab.Count() != 4 {
		t.Errorf("count after lowering max = %d", tab.Count())
	}
	if err := tab.SetMax(0); !errors.Is(err, ErrBadMax) {
		t.Errorf("SetMax(0) = %v", err)
	}
	if err := tab.SetMax(101); !errors.Is(err, ErrBadMax) {
		t.Errorf("SetMax(101) = %v", err)
	}
	if tab.Max() != 2 {
		t.Errorf("max = %d", tab.Max())
	}
	c.Exit()
	if s := c.Stats(); s.Drop != 7 || s.EarlyDrop != 0 || s.Insert != 4 {
		t.Errorf("stats %+v", s)
	}
}

func TestEarlyDropOnlyUnassured(t *testing.T) {
	// A one-bucket table puts every connection "near" the new one.
	tab := newTable(t, Config{Capacity: 4, Max: 4})
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	var refs []NewFlow
	for i := range 4 {
		nf := snatFlow(uint16(40000+i), uint16(1024+i), TCPEstablished)
		if i != 2 {
			nf.Status |= FlagAssured
		}
		mustInsert(t, c, nf, 0)
		refs = append(refs, nf)
	}
	// One unassured connection: the new one evicts it.
	nf := snatFlow(41000, 2000, TCPSynSent)
	mustInsert(t, c, nf, 0)
	if c.Lookup(&refs[2].Orig, 0) != 0 {
		t.Error("unassured connection survived early drop")
	}
	for _, i := range []int{0, 1, 3} {
		if c.Lookup(&refs[i].Orig, 0) == 0 {
			t.Errorf("assured connection %d evicted", i)
		}
	}
	if c.st[stEarlyDrop] != 1 || tab.Count() != 4 {
		t.Errorf("early_drop=%d count=%d", c.st[stEarlyDrop], tab.Count())
	}
	// Now the new, unassured one is the only candidate; assure it and
	// nothing can be evicted.
	r := c.Lookup(&nf.Orig, 0)
	f := tab.Flow(r)
	s := f.Status()
	if !f.UpdateStatus(s, s|FlagAssured) {
		t.Fatal("UpdateStatus failed")
	}
	nf2 := snatFlow(41001, 2001, TCPSynSent)
	if _, res := c.Insert(&nf2, 0); res != Full {
		t.Errorf("insert with only assured connections: %v", res)
	}
	if c.st[stDrop] != 1 {
		t.Errorf("drop = %d", c.st[stDrop])
	}
}

func TestUpdateStatusKeepsInternalBits(t *testing.T) {
	tab := newTable(t, Config{Capacity: 10})
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	r := mustInsert(t, c, snatFlow(1, 2, TCPSynSent), 0)
	f := tab.Flow(r)
	old := f.Status()
	// A caller cannot clear the confirmed bit or set dying.
	if !f.UpdateStatus(old, WithState(0, TCPEstablished)|flagDying|FlagSeenReply) {
		t.Fatal("update failed")
	}
	if s := f.Status(); s&flagConfirmed == 0 || s&flagDying != 0 || StatusState(s) != TCPEstablished || s&FlagSeenReply == 0 {
		t.Errorf("status %#x", s)
	}
	if f.UpdateStatus(old, old) {
		t.Error("update with a stale old value succeeded")
	}
}

func TestKillAndReuse(t *testing.T) {
	tab := newTable(t, Config{Capacity: 2, Limbo: 16})
	c := tab.Core(0)
	var out [4]Gone
	seen := map[uint32]bool{}
	for i := range 200 {
		c.Enter()
		nf := snatFlow(uint16(10000+i), uint16(20000+i), TCPSynSent)
		r := mustInsert(t, c, nf, 0)
		seen[r.idx()] = true
		if !c.Kill(r) {
			t.Fatal("kill failed")
		}
		if c.Kill(r) {
			t.Fatal("killed twice")
		}
		if c.Lookup(&nf.Orig, 0) != 0 {
			t.Fatal("killed connection visible")
		}
		n := c.Sweep(0, 100, out[:])
		if n != 1 || out[0].Reason != ReasonKilled || out[0].Orig != nf.Orig {
			t.Fatalf("sweep after kill: %d %+v", n, out[0])
		}
		c.Exit()
	}
	// Records were recycled through limbo: 200 connections in a share of
	// capacity+limbo records.
	if len(seen) > 2+16 {
		t.Errorf("used %d distinct records", len(seen))
	}
	if tab.Count() != 0 {
		t.Errorf("count %d", tab.Count())
	}
	if s := c.Stats(); s.Deleted != 200 {
		t.Errorf("deleted %d", s.Deleted)
	}
}

func TestReclaimWaitsForReaders(t *testing.T) {
	tab := newTable(t, Config{Capacity: 1, Cores: 2, Limbo: 16})
	owner, reader := tab.Core(0), tab.Core(1)
	owner.Enter()
	nf := snatFlow(1000, 2000, TCPSynSent)
	r := mustInsert(t, owner, nf, 0)
	idx := r.idx()
	owner.Exit()

	reader.Enter() // the reader now may hold r
	owner.Enter()
	owner.Kill(r)
	var out [1]Gone
	if owner.Sweep(0, 10, out[:]) != 1 {
		t.Fatal("not swept")
	}
	owner.Exit()
	for range 10 {
		owner.Enter()
		owner.Exit()
	}
	if tab.recs[idx].Status() == 0 {
		t.Fatal("record freed while a reader was inside its critical section")
	}
	if tab.Flow(r).Orig() != nf.Orig {
		t.Fatal("record overwritten under a reader")
	}
	reader.Exit()
	owner.Enter()
	owner.Exit()
	owner.Enter()
	owner.Exit()
	if tab.recs[idx].Status() != 0 {
		t.Fatal("record not freed after the reader left")
	}
}

// TestOneCoreAdmitsToMax: with every connection on one core (RSS hashing
// all flows to one queue), the table still admits up to its limit, and
// then, when that core's connections are gone, another core does too.
func TestOneCoreAdmitsToMax(t *testing.T) {
	const capacity = 1000
	tab := newTable(t, Config{Capacity: capacity, Cores: 4, Limbo: 16})
	for round, id := range []int{0, 3} {
		c := tab.Core(id)
		c.Enter()
		base := uint16(round * 10000)
		for i := range uint16(capacity) {
			nf := snatFlow(base+i, base+i, TCPEstablished)
			nf.Status |= FlagAssured
			mustInsert(t, c, nf, 0)
		}
		if tab.Count() != capacity {
			t.Fatalf("core %d: count %d", id, tab.Count())
		}
		// At the limit, with nothing evictable: refused as full, nothing
		// killed.
		nf := snatFlow(base+capacity, base+capacity, TCPEstablished)
		if _, res := c.Insert(&nf, 0); res != Full {
			t.Fatalf("core %d: insert beyond the limit: %v", id, res)
		}
		if tab.Count() != capacity || c.st[stEarlyDrop] != 0 || c.st[stDrop] != 1 {
			t.Fatalf("core %d: count %d, early_drop %d, drop %d", id, tab.Count(), c.st[stEarlyDrop], c.st[stDrop])
		}
		if n := listed(tab); n != capacity {
			t.Fatalf("core %d: %d listed", id, n)
		}
		if h := c.Held(); h < capacity || h >= capacity+chunkRecs {
			t.Fatalf("core %d holds %d records for %d connections", id, h, capacity)
		}
		c.Exit()
		if got := tab.Flush(); got != capacity {
			t.Fatalf("flushed %d", got)
		}
		drainCore(t, tab, id, capacity)
	}
	checkRecords(t, tab)
	// Every chunk is back in the common reserve but the one each core keeps
	// to allocate from.
	for _, c := range tab.cores {
		if c.Held() > chunkRecs {
			t.Errorf("core %d holds %d records with nothing in use", c.id, c.Held())
		}
	}
}

// listed counts the live connections List returns.
func listed(tab *Table) int {
	var buf [256]FlowInfo
	n := 0
	for cur := 0; cur >= 0; {
		var k int
		k, cur = tab.List(cur, buf[:])
		n += k
	}
	return n
}

// drainCore sweeps core id, in separate critical sections, until it has
// reported want connections and every retired record is free again.
func drainCore(t *testing.T, tab *Table, id, want int) {
	t.Helper()
	c := tab.Core(id)
	var gone [64]Gone
	got := 0
	for range 10 * tab.RecordsPerCore() {
		c.Enter()
		got += c.Sweep(0, 64, gone[:])
		c.Exit()
		if got == want && c.limboCount == 0 && c.goneCount == 0 {
			break
		}
	}
	c.Enter()
	c.Exit()
	if got != want || c.limboCount != 0 {
		t.Fatalf("core %d: reported %d of %d, %d in limbo", id, got, want, c.limboCount)
	}
}

// TestNoRecordEvictsNothing: an insert that finds no record refuses the
// connection without making room for it first, even at the limit, where
// making room would evict someone else's connection for nothing.
func TestNoRecordEvictsNothing(t *testing.T) {
	// 94 + 2·16 records: two chunks of 63.
	const capacity = 2*chunkRecs - 32
	tab := newTable(t, Config{Capacity: capacity, Cores: 2, Limbo: 16})
	if len(tab.chunks) != 2 {
		t.Fatalf("%d chunks", len(tab.chunks))
	}
	a, b := tab.Core(0), tab.Core(1)
	a.Enter()
	b.Enter()
	defer a.Exit()
	for i := range uint16(chunkRecs) {
		mustInsert(t, a, snatFlow(i, i, TCPSynSent), 0) // not assured: evictable
	}
	var live []NewFlow
	for i := range uint16(capacity - chunkRecs) {
		nf := snatFlow(1000+i, 1000+i, TCPSynSent)
		mustInsert(t, b, nf, 0)
		live = append(live, nf)
	}
	// b replaces its oldest connection with a new one until its chunk is
	// used up: its critical section keeps the killed ones' records from
	// being reused, and the count stays at the limit.
	killed := 0
	for i := uint16(0); b.Held() != chunkRecs || killed < chunkRecs-(capacity-chunkRecs); i++ {
		if !b.Kill(b.Lookup(&live[0].Orig, 0)) {
			t.Fatal("kill")
		}
		killed++
		live = live[1:]
		nf := snatFlow(2000+i, 2000+i, TCPSynSent)
		mustInsert(t, b, nf, 0)
		live = append(live, nf)
	}
	// At the limit, and every record in use: refused, nothing evicted.
	nf := snatFlow(3000, 3000, TCPSynSent)
	if _, res := b.Insert(&nf, 0); res != NoRecord {
		t.Fatalf("insert with no record: %v", res)
	}
	if tab.Count() != capacity || a.st[stEarlyDrop]+b.st[stEarlyDrop] != 0 || b.st[stDrop] != 1 {
		t.Errorf("count %d, early_drop %d, drop %d", tab.Count(), a.st[stEarlyDrop]+b.st[stEarlyDrop], b.st[stDrop])
	}
	if n := listed(tab); n != capacity {
		t.Errorf("%d listed", n)
	}
	// Once the killed connections' records are free, the same insert at
	// the limit evicts one and gets in.
	b.Exit()
	a.Exit()
	drainCore(t, tab, 1, killed)
	a.Enter()
	b.Enter()
	defer b.Exit()
	if _, res := b.Insert(&nf, 0); res != Inserted {
		t.Fatalf("insert at the limit with a record: %v", res)
	}
	if tab.Count() != capacity || a.st[stEarlyDrop]+b.st[stEarlyDrop] != 1 {
		t.Errorf("count %d, early_drop %d", tab.Count(), a.st[stEarlyDrop]+b.st[stEarlyDrop])
	}
}

// TestLookupBatchMatchesLookup: LookupBatch answers as lookup does, in
// one pass (a table in the caches) and in its passes (threePass).
func TestLookupBatchMatchesLookup(t *testing.T) {
	for _, threePass := range []bool{false, true} {
		lookupBatchMatchesLookup(t, threePass)
	}
}

func lookupBatchMatchesLookup(t *testing.T, threePass bool) {
	tab := newTable(t, Config{Capacity: 5000})
	tab.threePass = threePass
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	keys := make([]Tuple, 0, 300)
	for i := range 2000 {
		nf := snatFlow(uint16(i), uint16(30000+i), TCPEstablished)
		mustInsert(t, c, nf, 0)
		if i%10 == 0 {
			keys = append(keys, nf.Orig, nf.Reply)
		}
	}
	for i := range 60 {
		keys = append(keys, MakeTuple(ProtoUDP, uint32(i), 1, 2, 3)) // misses
	}
	refs := make([]Ref, len(keys))
	if found := c.LookupBatch(keys, refs, 1); found != 400 {
		t.Fatalf("threePass %v: LookupBatch found %d keys, want 400", threePass, found)
	}
	for i := range keys {
		if want := tab.lookup(&keys[i], 1, new(uint64)); refs[i] != want {
			t.Fatalf("threePass %v, key %d: batch %v, single %v", threePass, i, refs[i], want)
		}
		if i < 400 && refs[i] == 0 {
			t.Fatalf("key %d not found", i)
		}
	}
}

func TestAccounting(t *testing.T) {
	tab := newTable(t, Config{Capacity: 10, Acct: true})
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	nf := snatFlow(1, 2, TCPEstablished)
	mustInsert(t, c, nf, 0)
	for range 3 {
		tab.Account(c.Lookup(&nf.Orig, 0), 100)
	}
	tab.Account(c.Lookup(&nf.Reply, 0), 60)
	got := tab.Counters(c.Lookup(&nf.Orig, 0))
	if got != [2]Counter{{3, 300}, {1, 60}} {
		t.Errorf("counters %+v", got)
	}
	off := newTable(t, Config{Capacity: 10})
	off.Account(1<<1, 5) // no counters: a no-op
	if off.Counters(1<<1) != [2]Counter{} {
		t.Error("counters without accounting")
	}
}

func TestControlListDeleteFlush(t *testing.T) {
	tab := newTable(t, Config{Capacity: 1000, Cores: 2})
	now := tab.Now()
	var all []NewFlow
	for core := range 2 {
		c := tab.Core(core)
		c.Enter()
		for i := range 300 {
			nf := snatFlow(uint16(core*1000+i), uint16(core*1000+i+1), TCPEstablished)
			nf.Mark = uint32(core)
			mustInsert(t, c, nf, now)
			all = append(all, nf)
		}
		c.Exit()
	}
	var buf [7]FlowInfo
	listed := map[Tuple]FlowInfo{}
	for cur := 0; cur >= 0; {
		var n int
		n, cur = tab.List(cur, buf[:])
		for _, fi := range buf[:n] {
			listed[fi.Orig] = fi
		}
	}
	if len(listed) != 600 {
		t.Fatalf("listed %d", len(listed))
	}
	for _, nf := range all {
		fi, ok := listed[nf.Orig]
		if !ok || fi.Reply != nf.Reply || fi.Owner != int(fi.Mark) || fi.State() != TCPEstablished || !fi.Unreplied() || fi.Assured() {
			t.Fatalf("listed %+v for %v", fi, nf.Orig)
		}
		if fi.Expires <= 431990*time.Second || fi.Expires > 432000*time.Second {
			t.Fatalf("expires %v", fi.Expires)
		}
	}
	if fi, d, ok := tab.Get(all[5].Reply); !ok || d != DirReply || fi.Orig != all[5].Orig {
		t.Errorf("Get reply = %v %v %v", fi, d, ok)
	}
	if !tab.Delete(all[5].Reply) || tab.Delete(all[5].Orig) {
		t.Error("delete by reply tuple")
	}
	if n := tab.DeleteMatching(func(fi *FlowInfo) bool { return fi.Mark == 1 }); n != 300 {
		t.Errorf("deleted %d by mark", n)
	}
	if n := tab.Flush(); n != 299 {
		t.Errorf("flushed %d", n)
	}
	if tab.Count() != 0 {
		t.Errorf("count %d", tab.Count())
	}
	if s := tab.TotalStats(); s.Deleted != 600 || s.Insert != 600 {
		t.Errorf("stats %+v", s)
	}
	// The owners' sweeps report every one of them.
	gone := 0
	var out [64]Gone
	for core := range 2 {
		c := tab.Core(core)
		for range 20 { // one sweep a batch, as a worker does
			c.Enter()
			gone += c.Sweep(now, 64, out[:])
			c.Exit()
		}
	}
	if gone != 600 {
		t.Errorf("sweeps reported %d", gone)
	}
}

func TestNoAllocs(t *testing.T) {
	tab := newTable(t, Config{Capacity: 10000, Acct: true})
	c := tab.Core(0)
	keys := make([]Tuple, 64)
	for i := range 5000 {
		c.Enter()
		nf := snatFlow(uint16(i), uint16(i+1), TCPEstablished)
		mustInsert(t, c, nf, 0)
		if i < 64 {
			keys[i] = nf.Reply
		}
		c.Exit()
	}
	refs := make([]Ref, 64)
	var out [64]Gone
	port := uint16(50000)
	chunkFails := 0
	cases := map[string]func(){
		"lookup": func() {
			c.Enter()
			tab.Account(c.Lookup(&keys[3], 1), 64)
			c.Exit()
		},
		"lookup-batch": func() {
			c.Enter()
			c.LookupBatch(keys, refs, 1)
			c.Exit()
		},
		// Enough connections to take chunks from the reserve, and give
		// them back once freed.
		"chunks": func() {
			c.Enter()
			var rs [3 * chunkSize]Ref
			for i := range rs {
				nf := snatFlow(60000+uint16(i), 60000+uint16(i), TCPSynSent)
				var res InsertResult
				if rs[i], res = c.Insert(&nf, 1); res != Inserted {
					chunkFails++
				}
			}
			for _, r := range rs {
				if r == 0 || !c.Kill(r) {
					chunkFails++
				}
			}
			c.Exit()
			for range 4 {
				c.Enter()
				for c.Sweep(1, 64, out[:]) > 0 {
				}
				c.Exit()
			}
		},
		"insert-kill-sweep": func() {
			c.Enter()
			port++
			nf := snatFlow(port, port, TCPSynSent)
			r, _ := c.Insert(&nf, 1)
			c.Kill(r)
			c.Sweep(1, 64, out[:])
			c.Exit()
		},
	}
	for name, fn := range cases {
		if a := testing.AllocsPerRun(200, fn); a != 0 {
			t.Errorf("%s: %v allocations", name, a)
		}
	}
	if chunkFails != 0 {
		t.Errorf("chunks: %d inserts or kills failed", chunkFails)
	}
}

// TestEarlyDropSparseTable: with the limit far below the capacity the new
// tuple's buckets are empty, and the bounded walk finds an unassured
// connection to evict anyway — never an assured one.
func TestEarlyDropSparseTable(t *testing.T) {
	tab := newTable(t, Config{Capacity: 100000, Max: 3, Cores: 2})
	c := tab.Core(1)
	c.Enter()
	defer c.Exit()
	var flows []NewFlow
	for i := range 3 {
		nf := snatFlow(uint16(40000+i), uint16(1024+i), TCPEstablished)
		if i != 1 {
			nf.Status |= FlagAssured
		}
		// Insert through core 0's share too: the walk spans every share.
		o := tab.Core(i % 2)
		if o != c {
			o.Enter()
		}
		mustInsert(t, o, nf, 0)
		if o != c {
			o.Exit()
		}
		flows = append(flows, nf)
	}
	mustInsert(t, c, snatFlow(41000, 2000, TCPSynSent), 0)
	if c.st[stEarlyDrop] != 1 || tab.Count() != 3 {
		t.Fatalf("early_drop %d count %d", c.st[stEarlyDrop], tab.Count())
	}
	if c.Lookup(&flows[1].Orig, 0) != 0 || c.Lookup(&flows[0].Orig, 0) == 0 || c.Lookup(&flows[2].Orig, 0) == 0 {
		t.Error("wrong victim")
	}
	// Only assured ones (and the new, unassured one) left: the new one goes
	// next, then nothing can.
	mustInsert(t, c, snatFlow(41001, 2001, TCPSynSent), 0)
	r := c.Lookup(&flows[0].Orig, 0)
	_ = r
	for i := range 2 {
		nf := snatFlow(uint16(42000+i), uint16(3000+i), TCPSynSent)
		nf.Status |= FlagAssured
		c.Insert(&nf, 0)
	}
	if c.st[stDrop] == 0 {
		t.Error("no drop once only assured connections remained")
	}
	for _, i := range []int{0, 2} {
		if c.Lookup(&flows[i].Orig, 0) == 0 {
			t.Errorf("assured connection %d evicted", i)
		}
	}
}

func TestCoreStatsAreWorkersOnly(t *testing.T) {
	tab := newTable(t, Config{Capacity: 100, Cores: 3})
	if n := len(tab.CoreStats()); n != 3 {
		t.Errorf("CoreStats has %d entries for 3 cores", n)
	}
	if n := len(tab.Stats()); n != 4 {
		t.Errorf("Stats has %d entries (3 cores and the control plane)", n)
	}
}

// TestTimeoutClasses: a connection's timeout class picks its timeout, in
// every lookup (single, batched), the sweep and the control plane's view.
func TestTimeoutClasses(t *testing.T) {
	tab := newTable(t, Config{Capacity: 100})
	if err := tab.SetTimeout("nf_conntrack_tcp_timeout_max_retrans", 200*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := tab.SetTimeout("nf_conntrack_tcp_timeout_unacknowledged", 300*time.Second); err != nil {
		t.Fatal(err)
	}
	c := tab.Core(0)
	cases := []struct {
		class uint32
		st    State
		want  time.Duration
	}{
		{TimeoutOfState, TCPEstablished, 432000 * time.Second},
		{TimeoutUnacked, TCPEstablished, 300 * time.Second},
		{TimeoutRetrans, TCPEstablished, 200 * time.Second},
		{TimeoutClose, TCPEstablished, 10 * time.Second},
		{TimeoutUnacked, TCPSynRecv, 60 * time.Second}, // the state's is shorter
		{TimeoutRetrans, TCPLastAck, 30 * time.Second},
	}
	for i, tc := range cases {
		c.Enter()
		nf := snatFlow(uint16(41000+i), uint16(2000+i), tc.st)
		nf.Status |= tc.class
		r := mustInsert(t, c, nf, 0)
		if got := tab.StatusTimeout(tab.Flow(r).Status()); got != tc.want {
			t.Errorf("case %d: StatusTimeout %v, want %v", i, got, tc.want)
		}
		to := Ticks(tc.want)
		keys := []Tuple{nf.Orig, nf.Reply}
		refs := make([]Ref, 2)
		if c.Lookup(&nf.Orig, to) == 0 || c.LookupBatch(keys, refs, to) != 2 {
			t.Errorf("case %d: gone at its timeout", i)
		}
		if c.Lookup(&nf.Reply, to+1) != 0 || c.LookupBatch(keys, refs, to+1) != 0 {
			t.Errorf("case %d: visible past its timeout %v", i, tc.want)
		}
		var out [4]Gone
		if n := c.Sweep(to+1, 100, out[:]); n != 1 {
			t.Errorf("case %d: sweep took %d", i, n)
		}
		c.Exit()
	}
}

// TestProtoState: a connection's protocol state is set at insert from
// NewFlow.Proto, zero without.
func TestProtoState(t *testing.T) {
	tab := newTable(t, Config{Capacity: 10, Proto: true})
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	var init [ProtoWords]uint32
	for i := range init {
		init[i] = uint32(i*7 + 1)
	}
	nf := snatFlow(40000, 1024, TCPSynSent)
	nf.Proto = &init
	r := mustInsert(t, c, nf, 0)
	ps := tab.Proto(r)
	for i := range ps {
		if ps[i].Load() != init[i] {
			t.Fatalf("word %d = %d, want %d", i, ps[i].Load(), init[i])
		}
	}
	c.Kill(r)
	var out [4]Gone
	c.Sweep(0, 100, out[:])
	nf2 := snatFlow(40001, 1025, TCPSynSent)
	r2 := mustInsert(t, c, nf2, 0)
	ps2 := tab.Proto(r2)
	for i := range ps2 {
		if w := ps2[i].Load(); w != 0 {
			t.Fatalf("word %d = %d after an insert without state", i, w)
		}
	}
	if newTable(t, Config{Capacity: 10}).Proto(r) != nil {
		t.Fatal("a table without Proto returned state")
	}
}

// TestStalledEpochKeepsReserve: while a participant stalls inside its
// critical section, a core that churns connections fills its limbo and
// then its own chunks with dead records, and is refused (NoRecord); it
// takes nothing more from the reserve, which stays for the other cores.
// Once the participant leaves, the core's records come back.
func TestStalledEpochKeepsReserve(t *testing.T) {
	tab := newTable(t, Config{Capacity: 1024, Cores: 2, Limbo: 16})
	c, stalled := tab.Core(0), tab.Core(1)
	stalled.Enter()
	var res InsertResult
	n := 0
	for ; n < 1000; n++ {
		c.Enter()
		nf := snatFlow(uint16(n), uint16(n), TCPSynSent)
		var r Ref
		if r, res = c.Insert(&nf, 0); res != Inserted {
			c.Exit()
			break
		}
		c.Kill(r)
		c.Exit()
	}
	if res != NoRecord || c.Held() != chunkRecs {
		t.Fatalf("after %d connections: %v, core holds %d records", n, res, c.Held())
	}
	if n != chunkRecs {
		t.Errorf("%d connections in one chunk of %d", n, chunkRecs)
	}
	// The reserve is intact: the stalled core may take every other record.
	rest := tab.RecordsPerCore() - chunkRecs
	for i := range uint16(rest) {
		mustInsert(t, stalled, snatFlow(5000+i, 5000+i, TCPSynSent), 0)
	}
	stalled.Exit()
	if got := tab.Flush(); got != rest {
		t.Fatalf("flushed %d of %d", got, rest)
	}
	drainCore(t, tab, 1, rest)
	drainCore(t, tab, 0, chunkRecs)
	c.Enter()
	mustInsert(t, c, snatFlow(9000, 9000, TCPSynSent), 0)
	c.Exit()
	checkRecords(t, tab)
}
