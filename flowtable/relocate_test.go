package flowtable

import (
	"math/rand/v2"
	"testing"
)

// squeeze shrinks an empty table's index to nb buckets, so that both
// buckets of many tuples fill and inserts must relocate entries: at the
// real geometry that happens about once in a million inserts.
func squeeze(t testing.TB, tab *Table, nb int) {
	t.Helper()
	if tab.Count() != 0 || nb < 2 || nb > len(tab.buckets) {
		t.Fatalf("squeeze to %d buckets: table of %d buckets holds %d", nb, len(tab.buckets), tab.Count())
	}
	tab.buckets = tab.buckets[:nb]
	tab.nb = uint64(nb)
}

// checkIndex audits a quiescent table's index: every slot names a live
// record, under the tag and in one of the two buckets of one of its
// tuples, and every live record has exactly one slot for each tuple.
func checkIndex(t testing.TB, tab *Table) {
	t.Helper()
	mask := tab.idxMask
	slots := map[uint32]int{}
	for bi := range tab.buckets {
		for i := range tab.buckets[bi] {
			w := tab.buckets[bi][i].Load()
			if w == 0 {
				continue
			}
			idx := w&mask - 1
			f := &tab.recs[idx]
			if s := f.status.Load(); s&(flagConfirmed|flagDying) != flagConfirmed {
				t.Errorf("bucket %d slot %d: record %d is not live (status %#x)", bi, i, idx, s)
				continue
			}
			placed := false
			for _, k := range [2]*Tuple{&f.orig, &f.reply} {
				p := tab.at(k)
				placed = placed || p.tag == w&^mask && (p.b1 == uint64(bi) || p.b2 == uint64(bi))
			}
			if !placed {
				t.Errorf("bucket %d slot %d: record %d is not placed there", bi, i, idx)
			}
			slots[idx]++
		}
	}
	live := 0
	for idx := range tab.recs {
		f := &tab.recs[idx]
		if f.status.Load()&(flagConfirmed|flagDying) != flagConfirmed {
			continue
		}
		live++
		if n := slots[uint32(idx)]; n != 2 {
			t.Errorf("live record %d (%v / %v) has %d slots, want 2", idx, f.orig, f.reply, n)
		}
		for d, k := range [2]*Tuple{&f.orig, &f.reply} {
			if tab.lookup(k, 0, new(uint64)) != makeRef(uint32(idx), Dir(d)) {
				t.Errorf("live record %d: %v not found", idx, k)
			}
		}
	}
	if live != tab.Count() {
		t.Errorf("%d live records, count %d", live, tab.Count())
	}
}

// TestRelocate churns connections through an index squeezed to 94% full
// at the table's limit, so inserts keep finding both buckets full, and
// checks after every step that every live connection is found in both
// directions (one by one and batched) and that the index holds exactly
// its two slots; at the end, with everything gone, the index is empty.
func TestRelocate(t *testing.T) {
	const live = 480
	tab := newTable(t, Config{Capacity: 2048, Max: live, Limbo: 256})
	squeeze(t, tab, 64) // 1024 slots for at most 960 entries
	c := tab.Core(0)
	rng := rand.New(rand.NewPCG(3, 4))
	in := map[int]Ref{}
	var refused int
	var gone [64]Gone
	for step := range 6000 {
		c.Enter()
		k := rng.IntN(4096)
		if r, ok := in[k]; ok {
			if !c.Kill(r) {
				t.Fatalf("step %d: kill of key %d failed", step, k)
			}
			delete(in, k)
		} else if len(in) < live {
			nf := stressFlow(k)
			r, res := c.Insert(&nf, 0)
			switch res {
			case Inserted:
				in[k] = r
			case IndexFull:
				refused++
			default:
				t.Fatalf("step %d: insert of key %d: %v", step, k, res)
			}
		}
		c.Sweep(0, 64, gone[:])
		c.Exit()
		if step%500 == 0 || step == 5999 {
			checkIndex(t, tab)
			keys := make([]Tuple, 0, 2*len(in))
			for k := range in {
				nf := stressFlow(k)
				keys = append(keys, nf.Orig, nf.Reply)
			}
			refs := make([]Ref, len(keys))
			c.Enter()
			c.LookupBatch(keys, refs, 0)
			c.Exit()
			for i, r := range refs {
				if r == 0 || tab.Flow(r).Tuple(r.Dir()) != keys[i] {
					t.Fatalf("step %d: batched lookup of %v: %v", step, keys[i], r)
				}
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	moves := tab.relocs.Load()
	t.Logf("%d relocations, %d inserts refused with both buckets full after one", moves, refused)
	if moves < 100 {
		t.Errorf("only %d relocations: the squeeze did not fill buckets", moves)
	}
	if s := tab.TotalStats(); s.InsertFailed != uint64(refused) {
		t.Errorf("insert_failed %d, refused %d", s.InsertFailed, refused)
	}
	for k, r := range in {
		if !c.Kill(r) {
			t.Fatalf("kill of key %d failed", k)
		}
	}
	for i := range tab.buckets {
		if m := bucketMatch(&tab.buckets[i], 0, 0); m != 1<<slotsPerBucket-1 {
			t.Fatalf("bucket %d not empty after every connection left (free mask %#x)", i, m)
		}
	}
}

// TestRelocateUnderLookups looks up connections that stay in the table,
// one by one and in batches, on one core while another churns other
// connections through a squeezed index, relocating the steady ones'
// entries between their buckets all the time. No lookup may miss.
func TestRelocateUnderLookups(t *testing.T) {
	const (
		steady = 100 // 200 entries
		churn  = 140 // 280 more, of 512 slots
	)
	// The churn runs until it has relocated enough entries, not for a
	// number of operations: when the machine is loaded and the looking
	// goroutine is preempted inside its critical section, the churner's
	// retired records wait for the epoch and its inserts are refused
	// (NoRecord) for a while, relocating nothing.
	want, maxOps := uint64(50000), 20_000_000
	if raceEnabled {
		want = 10000
	}
	tab := newTable(t, Config{Capacity: 2048, Cores: 2, Limbo: 512})
	squeeze(t, tab, 32)
	keys := make([]Tuple, 0, 2*steady)
	c := tab.Core(1)
	c.Enter()
	for k := range steady {
		nf := stressFlow(k)
		mustInsert(t, c, nf, 0)
		keys = append(keys, nf.Orig, nf.Reply)
	}
	c.Exit()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := tab.Core(0)
		rng := rand.New(rand.NewPCG(5, 6))
		in := map[int]Ref{}
		var gone [64]Gone
		for ops := 0; tab.relocs.Load() < want && ops < maxOps; ops++ {
			c.Enter()
			k := steady + rng.IntN(2*churn)
			if r, ok := in[k]; ok {
				c.Kill(r)
				delete(in, k)
			} else {
				nf := stressFlow(k)
				if r, res := c.Insert(&nf, 0); res == Inserted {
					in[k] = r
				}
			}
			c.Sweep(0, 16, gone[:])
			c.Exit()
		}
	}()
	var refs [2 * steady]Ref
	misses, rounds := 0, 0
	for running := true; running; rounds++ {
		select {
		case <-done:
			running = false
		default:
		}
		c.Enter()
		for i := range keys {
			if c.Lookup(&keys[i], 0) == 0 {
				misses++
			}
		}
		c.LookupBatch(keys, refs[:], 0)
		for _, r := range refs {
			if r == 0 {
				misses++
			}
		}
		c.Exit()
	}
	moves := tab.relocs.Load()
	t.Logf("%d rounds of %d lookups during %d relocations; search_restart %d", rounds, 4*steady, moves, tab.TotalStats().SearchRestart)
	if misses != 0 {
		t.Errorf("%d lookups of connections in the table missed", misses)
	}
	if moves < want {
		t.Errorf("only %d relocations in %d operations", moves, maxOps)
	}
	checkIndex(t, tab)
}
