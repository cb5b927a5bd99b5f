package flowtable

import (
	"testing"
	"time"
)

// fuzzModel is the reference for FuzzTableOps: the connections the table
// counts, and per owner the killed ones its sweep has yet to report.
type fuzzModel struct {
	live    map[int]*fuzzConn
	pending [2]map[[2]int]int // owner -> {key, reason} -> killed, not yet reported
	timeout Time
	now     Time
}

type fuzzConn struct {
	assured bool
	last    Time
	owner   int
}

func (m *fuzzModel) expired(c *fuzzConn) bool {
	d, ok := since(m.now, c.last)
	return ok && uint32(d) > uint32(m.timeout)
}

func (m *fuzzModel) kill(k int, r Reason) {
	c := m.live[k]
	delete(m.live, k)
	m.pending[c.owner][[2]int{k, int(r)}]++
}

// counted returns the keys of the records the table counts: confirmed and
// not dying.
func counted(tab *Table) map[int]bool {
	keys := map[int]bool{}
	for i := range tab.recs {
		f := &tab.recs[i]
		if s := f.status.Load(); s&(flagConfirmed|flagDying) == flagConfirmed {
			k, _ := stressKey(f)
			keys[k] = true
		}
	}
	return keys
}

// FuzzTableOps drives a two-core table with inserts, lookups, kills, clock
// steps, sweeps, limit and timeout changes, and checks each against the
// model: lookups exactly, inserts' results, which connection early drop
// evicted (expired ones first, never an assured one), every sweep report,
// and after every operation the exact set of counted connections.
func FuzzTableOps(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 0, 2, 1, 0, 3, 200, 4, 0, 4, 1})
	f.Add([]byte{5, 2, 0, 0, 0, 1, 0, 2, 0, 3, 1, 3, 2, 1, 4, 9})
	f.Add([]byte{5, 0, 0, 16, 0, 1, 3, 100, 0, 2, 6, 3, 3, 9, 0, 4, 7, 0, 4, 63})
	f.Add([]byte{0, 16, 0, 17, 0, 18, 5, 1, 0, 3, 2, 0, 4, 1, 4, 0, 3, 255, 0, 5})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 128 {
			ops = ops[:128]
		}
		tab, err := New(Config{Capacity: 16, Max: 12, Cores: 2, Limbo: 64, Seed: 7})
		if err != nil {
			t.Fatal(err)
		}
		m := &fuzzModel{live: map[int]*fuzzConn{}, timeout: Ticks(30 * time.Second)}
		m.pending[0], m.pending[1] = map[[2]int]int{}, map[[2]int]int{}
		var out [64]Gone
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i]%8, ops[i+1]
			core := int(arg>>3) & 1
			c := tab.Core(core)
			c.Enter()
			switch op {
			case 0: // insert key, on core, assured or not
				k := int(arg % 8)
				nf := stressFlow(k)
				assured := arg&16 != 0
				if assured {
					nf.Status |= FlagAssured
				}
				if mc, ok := m.live[k]; ok && m.expired(mc) {
					m.kill(k, ReasonTimeout) // the insert kills the expired holder
				}
				before := len(m.live)
				r, res := c.Insert(&nf, m.now)
				switch {
				case m.live[k] != nil:
					if res != Exists || r == 0 {
						t.Fatalf("op %d: insert of live key %d: %v", i, k, res)
					}
				case before < tab.Max():
					if res != Inserted {
						t.Fatalf("op %d: insert key %d under the limit: %v", i, k, res)
					}
					m.live[k] = &fuzzConn{assured: assured, last: m.now, owner: core}
				default:
					var expired, unassured bool
					for _, mc := range m.live {
						expired = expired || m.expired(mc)
						unassured = unassured || !mc.assured
					}
					if !expired && !unassured {
						if res != Full {
							t.Fatalf("op %d: insert at the limit with nothing evictable: %v", i, res)
						}
						break
					}
					if res != Inserted {
						t.Fatalf("op %d: insert at the limit with a victim available: %v", i, res)
					}
					// Find the victim: the counted key the model has and the table lost.
					now := counted(tab)
					victim := -1
					for vk := range m.live {
						if !now[vk] {
							if victim != -1 {
								t.Fatalf("op %d: two victims", i)
							}
							victim = vk
						}
					}
					if victim == -1 {
						t.Fatalf("op %d: insert at the limit evicted nothing", i)
					}
					vc := m.live[victim]
					if expired && !m.expired(vc) {
						t.Fatalf("op %d: evicted live key %d while an expired one was there", i, victim)
					}
					if !expired && vc.assured {
						t.Fatalf("op %d: evicted assured key %d", i, victim)
					}
					reason := ReasonKilled
					if expired {
						reason = ReasonTimeout
					}
					m.kill(victim, reason)
					m.live[k] = &fuzzConn{assured: assured, last: m.now, owner: core}
				}
			case 1: // lookup key in either direction
				k := int(arg % 8)
				nf := stressFlow(k)
				key := nf.Orig
				if arg&16 != 0 {
					key = nf.Reply
				}
				r := c.Lookup(&key, m.now)
				mc := m.live[k]
				if want := mc != nil && !m.expired(mc); (r != 0) != want {
					t.Fatalf("op %d: lookup key %d: found %v, want %v", i, k, r != 0, want)
				}
				checkIntegrity(t, tab, &key, r)
			case 2: // kill
				k := int(arg % 8)
				nf := stressFlow(k)
				if r := c.Lookup(&nf.Orig, m.now); r != 0 {
					if !c.Kill(r) {
						t.Fatalf("op %d: kill failed", i)
					}
					m.kill(k, ReasonKilled)
				}
			case 3: // the clock moves
				m.now += Time(arg)
			case 4: // sweep
				budget := int(arg>>4) + 1
				n := c.Sweep(m.now, budget, out[:])
				// What the sweep expired: counted by the model, no longer
				// by the table. Each must have been expired and this core's.
				now := counted(tab)
				for k, mc := range m.live {
					if !now[k] {
						if !m.expired(mc) || mc.owner != core {
							t.Fatalf("op %d: sweep of core %d killed key %d (model %+v)", i, core, k, mc)
						}
						m.kill(k, ReasonTimeout)
					}
				}
				for _, g := range out[:n] {
					f := Flow{orig: g.Orig, reply: g.Reply}
					k, ok := stressKey(&f)
					if !ok {
						t.Fatalf("op %d: sweep reported a torn record", i)
					}
					pk := [2]int{k, int(g.Reason)}
					if m.pending[core][pk] == 0 {
						t.Fatalf("op %d: core %d reported key %d (reason %d) it had not lost so", i, core, k, g.Reason)
					}
					m.pending[core][pk]--
				}
			case 5:
				if err := tab.SetMax(int(arg%12) + 1); err != nil {
					t.Fatal(err)
				}
			case 6:
				m.timeout = Time(arg%50) + 1
				if err := tab.SetTimeout("nf_conntrack_udp_timeout", m.timeout.Duration()); err != nil {
					t.Fatal(err)
				}
			case 7: // a packet in the reply direction refreshes the connection
				k := int(arg % 8)
				nf := stressFlow(k)
				if r := c.Lookup(&nf.Reply, m.now); r != 0 {
					tab.Flow(r).Touch(m.now)
					m.live[k].last = m.now
				}
			}
			c.Exit()
			got := counted(tab)
			if len(got) != len(m.live) || tab.Count() != len(m.live) {
				t.Fatalf("op %d: table counts %v (%d), model %d", i, got, tab.Count(), len(m.live))
			}
			for k := range m.live {
				if !got[k] {
					t.Fatalf("op %d: key %d counted by the model only", i, k)
				}
			}
		}
		// In the end everything expires and each owner reports every loss.
		m.now += Ticks(time.Hour)
		for core := range 2 {
			c := tab.Core(core)
			for k, mc := range m.live {
				if mc.owner == core {
					m.kill(k, ReasonTimeout)
				}
			}
			for range 4 {
				c.Enter()
				n := c.Sweep(m.now, 1000, out[:])
				for _, g := range out[:n] {
					f := Flow{orig: g.Orig, reply: g.Reply}
					k, _ := stressKey(&f)
					m.pending[core][[2]int{k, int(g.Reason)}]--
				}
				c.Exit()
			}
			for k, v := range m.pending[core] {
				if v != 0 {
					t.Fatalf("core %d: key %d: %d losses unreported", core, k, v)
				}
			}
		}
		if len(m.live) != 0 || tab.Count() != 0 {
			t.Fatalf("left: model %d, table %d", len(m.live), tab.Count())
		}
		checkRecords(t, tab)
	})
}
