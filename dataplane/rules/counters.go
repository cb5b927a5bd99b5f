package rules

import (
	"fmt"
	"sync/atomic"
)

// Counters are kept per rule and per built-in chain policy ("slots"), per
// core, without an atomic read-modify-write per packet:
//
//   - each core adds to plain counters only it writes (own), and notes the
//     slots it touched in the current batch;
//   - Flush(core), at the end of the core's batch, publishes the touched
//     slots' running totals to that core's atomics (plain atomic stores);
//   - readers sum the published per-core values, add the base (counters
//     carried from the previous rule set or loaded with the rules) and
//     subtract the zero baseline;
//   - Zero stores the current sum as the new baseline; it never writes a
//     core's own counters.
//
// Each core's arrays are separate allocations, so cores never share a
// cache line while counting.

type ctr struct{ pkts, bytes uint64 }

type pubctr struct{ pkts, bytes atomic.Uint64 }

type coreState struct {
	_     [64]byte
	own   []ctr
	pub   []pubctr
	dirty []int32
	mark  []bool
	stack [MaxDepth]frame // the evaluator's return stack, owner-only
	_     [64]byte
}

func (cs *coreState) add(i int32, n uint64) { cs.addN(i, 1, n) }

func (cs *coreState) addN(i int32, pkts, bytes uint64) {
	c := &cs.own[i]
	c.pkts += pkts
	c.bytes += bytes
	if !cs.mark[i] {
		cs.mark[i] = true
		cs.dirty = append(cs.dirty, i) // capacity is the slot count: never grows
	}
}

type carry struct {
	slot, prevSlot int32
	pkts, bytes    uint64
}

type cnt struct {
	cores []*coreState
	base  []pubctr
	zero  []pubctr
	carry []carry
	prev  atomic.Pointer[Ruleset]
}

func (rs *Ruleset) slots() int { return len(rs.rules) + len(rs.chains) }

func (rs *Ruleset) initCounters(cores int, prev *Ruleset) {
	n := rs.slots()
	rs.cores = make([]*coreState, cores)
	for i := range rs.cores {
		rs.cores[i] = &coreState{
			own:   make([]ctr, n),
			pub:   make([]pubctr, n),
			dirty: make([]int32, 0, n),
			mark:  make([]bool, n),
		}
	}
	rs.base = make([]pubctr, n)
	rs.zero = make([]pubctr, n)
	var prevSlot map[uint64]int32
	if prev != nil {
		prevSlot = make(map[uint64]int32, len(prev.rules))
		for i, r := range prev.rules {
			if r.id != 0 {
				prevSlot[r.id] = int32(i)
			}
		}
	}
	for i, loc := range rs.locs {
		r := &rs.model.Tables[loc.table].Chains[loc.chain].Rules[loc.index]
		c := r.Counters
		if ps, ok := prevSlot[r.ID]; ok && r.ID != 0 {
			c = prev.read(ps)
			rs.carry = append(rs.carry, carry{int32(i), ps, c.Packets, c.Bytes})
		}
		rs.base[i].pkts.Store(c.Packets)
		rs.base[i].bytes.Store(c.Bytes)
	}
	for ci := range rs.chains {
		ch := &rs.chains[ci]
		if !ch.builtin {
			continue
		}
		slot := int32(len(rs.rules) + ci)
		c := rs.model.Tables[ch.table].Chains[rs.modelCh[ci]].Counters
		if prev != nil {
			if pci, ok := prev.byName[ch.table.String()+"/"+ch.name]; ok {
				ps := int32(len(prev.rules)) + pci
				c = prev.read(ps)
				rs.carry = append(rs.carry, carry{slot, ps, c.Packets, c.Bytes})
			}
		}
		rs.base[slot].pkts.Store(c.Packets)
		rs.base[slot].bytes.Store(c.Bytes)
	}
	if len(rs.carry) > 0 {
		rs.prev.Store(prev)
	}
}

// Settle adds to the carried counters what the previous rule set counted
// after Compile read it. Call it once no core evaluates with the previous
// rule set any more and every core has flushed its last batch on it; until
// then readers see the carried counters as of Compile.
func (rs *Ruleset) Settle() {
	prev := rs.prev.Swap(nil)
	if prev == nil {
		return
	}
	for _, c := range rs.carry {
		now := prev.read(c.prevSlot)
		rs.base[c.slot].pkts.Add(now.Packets - c.pkts)
		rs.base[c.slot].bytes.Add(now.Bytes - c.bytes)
	}
}

// Flush publishes what core counted since its last Flush. The dataplane
// calls it at the end of every batch, from the core's own goroutine.
func (rs *Ruleset) Flush(core int) {
	cs := rs.cores[core]
	for _, i := range cs.dirty {
		cs.pub[i].pkts.Store(cs.own[i].pkts)
		cs.pub[i].bytes.Store(cs.own[i].bytes)
		cs.mark[i] = false
	}
	cs.dirty = cs.dirty[:0]
}

func (rs *Ruleset) total(slot int32) Counters {
	c := Counters{rs.base[slot].pkts.Load(), rs.base[slot].bytes.Load()}
	for _, cs := range rs.cores {
		c.Packets += cs.pub[slot].pkts.Load()
		c.Bytes += cs.pub[slot].bytes.Load()
	}
	return c
}

func (rs *Ruleset) read(slot int32) Counters {
	c := rs.total(slot)
	c.Packets -= rs.zero[slot].pkts.Load()
	c.Bytes -= rs.zero[slot].bytes.Load()
	return c
}

func (rs *Ruleset) zeroSlot(slot int32) {
	c := rs.total(slot)
	rs.zero[slot].pkts.Store(c.Packets)
	rs.zero[slot].bytes.Store(c.Bytes)
}

func (rs *Ruleset) chainIndex(t TableID, chain string) (int32, error) {
	ci, ok := rs.byName[t.String()+"/"+chain]
	if !ok {
		return 0, fmt.Errorf("%s chain %q: %w", t, chain, ErrNoChain)
	}
	return ci, nil
}

// RuleCounters returns the published counters of rule index (0-based) of
// a chain.
func (rs *Ruleset) RuleCounters(t TableID, chain string, index int) (Counters, error) {
	ci, err := rs.chainIndex(t, chain)
	if err != nil {
		return Counters{}, err
	}
	ch := &rs.chains[ci]
	if index < 0 || index >= int(ch.n) {
		return Counters{}, fmt.Errorf("%s chain %s rule %d: %w", t, chain, index+1, ErrNoRule)
	}
	return rs.read(ch.first + int32(index)), nil
}

// PolicyCounters returns the counters of a built-in chain's policy.
func (rs *Ruleset) PolicyCounters(t TableID, chain string) (Counters, error) {
	ci, err := rs.chainIndex(t, chain)
	if err != nil {
		return Counters{}, err
	}
	if !rs.chains[ci].builtin {
		return Counters{}, fmt.Errorf("%s chain %q has no policy: %w", t, chain, ErrInvalid)
	}
	return rs.read(int32(len(rs.rules)) + ci), nil
}

// Zero zeroes the counters of every rule and the policy of a chain, or of
// every chain of the table when chain is "" (iptables -Z).
func (rs *Ruleset) Zero(t TableID, chain string) error {
	for ci := range rs.chains {
		ch := &rs.chains[ci]
		if ch.table != t || (chain != "" && ch.name != chain) {
			continue
		}
		for j := int32(0); j < ch.n; j++ {
			rs.zeroSlot(ch.first + j)
		}
		if ch.builtin {
			rs.zeroSlot(int32(len(rs.rules) + ci))
		}
		if chain != "" {
			return nil
		}
	}
	if chain != "" {
		return fmt.Errorf("%s chain %q: %w", t, chain, ErrNoChain)
	}
	return nil
}

// ZeroRule zeroes one rule's counters (iptables -Z CHAIN N).
func (rs *Ruleset) ZeroRule(t TableID, chain string, index int) error {
	ci, err := rs.chainIndex(t, chain)
	if err != nil {
		return err
	}
	ch := &rs.chains[ci]
	if index < 0 || index >= int(ch.n) {
		return fmt.Errorf("%s chain %s rule %d: %w", t, chain, index+1, ErrNoRule)
	}
	rs.zeroSlot(ch.first + int32(index))
	return nil
}

// Model returns a copy of the rule set's model with every rule's and
// policy's counters set to their current published values: what -L -v
// and iptables-save -c print.
func (rs *Ruleset) Model() *Model {
	m := rs.model.Clone()
	for i, loc := range rs.locs {
		m.Tables[loc.table].Chains[loc.chain].Rules[loc.index].Counters = rs.read(int32(i))
	}
	for ci := range rs.chains {
		ch := &rs.chains[ci]
		if ch.builtin {
			m.Tables[ch.table].Chains[rs.modelCh[ci]].Counters = rs.read(int32(len(rs.rules) + ci))
		}
	}
	return m
}
