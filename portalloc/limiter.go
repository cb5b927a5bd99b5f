package portalloc

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync/atomic"

	"xnat/internal/prefault"
)

// SourceLimiter counts, per inside source address, the connections it
// has through NAT and the external ports they hold, and refuses a new
// connection beyond xnat.per_source_max connections or
// xnat.per_source_ports ports (0: no limit). It is shared by all cores;
// the package documentation describes its table and its protocol.
type SourceLimiter struct {
	maxConns atomic.Int64
	maxPorts atomic.Int64
	slots    []srcSlot
	buckets  uint64 // of srcBucket slots
	k0, k1   uint64
	cores    int
	pairs    []*pairTable // per core
	refused  refTable
	st       *limStats
	memory   int64
}

// srcSlot is one entry of the limiter's table: the key word (address,
// bound, pending, connections) and the ports the source holds.
type srcSlot struct {
	key   atomic.Uint64
	ports atomic.Uint32
	_     uint32
}

// The key word: the address in the high half; bound while the slot
// belongs to that address; pending while a claim of it is being checked;
// the connection count in the low 30 bits. 0 is a free slot; bound with a
// count of 0 is a dead slot, still the address's but free for another.
const (
	keyBound   = 1 << 31
	keyPending = 1 << 30
	countMask  = keyPending - 1
	addrBound  = ^uint64(countMask | keyPending) // address and bound
)

// MaxSourceLimit is the largest per-source limit.
const MaxSourceLimit = countMask - 1

// Probe lengths: a source's slot is one of the srcBucket slots of one of
// its two buckets (srcWindow in all); its refusal count is one of
// refWindow consecutive slots from its home.
const (
	srcBucket = 8
	srcWindow = 2 * srcBucket
	refWindow = 8
	refSlots  = 4096
	// claimTries bounds how often an acquire starts over because another
	// core's claim of the same address was in flight.
	claimTries = 8
)

type limStats struct {
	refusedConns, refusedPorts, full atomic.Uint64
	_                                [128 - 24]byte
}

// ErrLimiter is returned for a bad limiter configuration.
var ErrLimiter = errors.New("invalid per-source limiter")

// LimiterConfig sizes a SourceLimiter and sets its limits.
type LimiterConfig struct {
	// Cores is the number of worker cores (one table of source and port
	// pairs each).
	Cores int
	// Conns is the most connections one core holds at once:
	// flowtable.Table.RecordsPerCore, every record of the flow table, as
	// any core may take them all from its common reserve.
	Conns int
	// Sources is how many inside addresses may have connections at once
	// (0: Cores·Conns, as many as there can be connections).
	Sources int
	// MaxConns and MaxPorts are xnat.per_source_max and
	// xnat.per_source_ports (0: no limit).
	MaxConns, MaxPorts int
}

// Limits of LimiterConfig.
const (
	maxLimiterSources = 1 << 26
	maxLimiterConns   = 1 << 30
)

// NewSourceLimiter makes a limiter. Its memory, committed at once, is 32
// bytes a source (a table of twice Sources slots) plus 32 bytes a
// connection (a table twice Conns a core), and 32 KiB of refusal counts:
// Memory says how much.
func NewSourceLimiter(cfg LimiterConfig) (*SourceLimiter, error) {
	if cfg.Cores < 1 || cfg.Cores > 1024 {
		return nil, fmt.Errorf("%w: %d cores (1 to 1024)", ErrLimiter, cfg.Cores)
	}
	if cfg.Conns < 1 || cfg.Conns > maxLimiterConns {
		return nil, fmt.Errorf("%w: %d connections a core (1 to %d)", ErrLimiter, cfg.Conns, maxLimiterConns)
	}
	if cfg.Sources == 0 {
		cfg.Sources = min(cfg.Cores*cfg.Conns, maxLimiterSources)
	}
	if cfg.Sources < 1 || cfg.Sources > maxLimiterSources {
		return nil, fmt.Errorf("%w: %d sources (1 to %d)", ErrLimiter, cfg.Sources, maxLimiterSources)
	}
	if err := checkLimit("per_source_max", cfg.MaxConns); err != nil {
		return nil, err
	}
	if err := checkLimit("per_source_ports", cfg.MaxPorts); err != nil {
		return nil, err
	}
	nb := max((2*uint64(cfg.Sources)+srcBucket-1)/srcBucket, 2)
	n := nb * srcBucket
	l := &SourceLimiter{slots: make([]srcSlot, n), buckets: nb, cores: cfg.Cores, st: new(limStats)}
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("limiter seed: %w", err)
	}
	l.k0, l.k1 = binary.LittleEndian.Uint64(seed[0:])|1, binary.LittleEndian.Uint64(seed[8:])|1
	l.refused.w = make([]atomic.Uint64, refSlots)
	prefault.Slice(l.slots)
	l.memory = int64(n)*16 + refSlots*8
	for c := range cfg.Cores {
		p := newPairTable(2*uint64(cfg.Conns), binary.LittleEndian.Uint64(seed[16:])^uint64(c)*0x9E3779B97F4A7C15)
		l.pairs = append(l.pairs, p)
		l.memory += int64(len(p.e)) * 16
	}
	l.maxConns.Store(int64(cfg.MaxConns))
	l.maxPorts.Store(int64(cfg.MaxPorts))
	return l, nil
}

func checkLimit(name string, n int) error {
	if n < 0 || n > MaxSourceLimit {
		return fmt.Errorf("%w: %s %d (0 to %d)", ErrLimiter, name, n, MaxSourceLimit)
	}
	return nil
}

// Memory returns the bytes the limiter's tables take.
func (l *SourceLimiter) Memory() int64 { return l.memory }

// Cores returns the number of cores the limiter was made for.
func (l *SourceLimiter) Cores() int { return l.cores }

// SetLimit changes xnat.per_source_max (0 turns it off); connections
// already over a lowered limit stay.
func (l *SourceLimiter) SetLimit(n int) error {
	if err := checkLimit("per_source_max", n); err != nil {
		return err
	}
	l.maxConns.Store(int64(n))
	return nil
}

// Limit returns xnat.per_source_max.
func (l *SourceLimiter) Limit() int { return int(l.maxConns.Load()) }

// SetPortLimit changes xnat.per_source_ports (0 turns it off); ports
// already held over a lowered limit stay.
func (l *SourceLimiter) SetPortLimit(n int) error {
	if err := checkLimit("per_source_ports", n); err != nil {
		return err
	}
	l.maxPorts.Store(int64(n))
	return nil
}

// PortLimit returns xnat.per_source_ports.
func (l *SourceLimiter) PortLimit() int { return int(l.maxPorts.Load()) }

// home returns the first slots of src's two buckets, from a keyed hash,
// so that inside hosts cannot choose addresses that crowd a bucket.
func (l *SourceLimiter) home(src uint32) (b1, b2 uint64) {
	h := l.hash(src)
	b1, b2 = uint64(uint32(h))*l.buckets>>32, h>>32*l.buckets>>32
	if b1 == b2 {
		b2 = (b2 + 1) % l.buckets
	}
	return b1 * srcBucket, b2 * srcBucket
}

func (l *SourceLimiter) hash(src uint32) uint64 {
	hi, lo := bits.Mul64(uint64(src)^l.k0, l.k1)
	return hi ^ lo
}

// at is the i-th slot of the window of buckets b1 and b2.
func at(b1, b2, i uint64) uint64 {
	if i < srcBucket {
		return b1 + i
	}
	return b2 + i - srcBucket
}

// acquire results
const (
	limOK = iota
	limConns
	limFull
)

// acquire counts one more connection for src and returns its slot, or
// refuses it (limConns: at its limit; limFull: no slot for it). It reads
// the srcWindow slots of src's two buckets, claimTries times over at the
// very most. A new source's slot is taken in the bucket with more free
// or dead slots: with that greedy two-choice rule, at the load the
// limiter is sized for (half its slots), finding both buckets full is
// vanishingly rare.
func (l *SourceLimiter) acquire(src uint32) (int, int) {
	want := uint64(src)<<32 | keyBound
	b1, b2 := l.home(src)
	for range claimTries {
		var avail [2]int // first free or dead slot of each bucket, +1
		var nav [2]int   // free or dead slots in each bucket
		var availV [2]uint64
		busy, found := false, false
		for i := range uint64(srcWindow) {
			j := at(b1, b2, i)
			s := &l.slots[j]
			v := s.key.Load()
			if v&addrBound == want {
				found = true
				if v&keyPending != 0 {
					busy = true // another core's claim: wait for its outcome
					break
				}
				for {
					c := v & countMask
					if lim := uint64(l.maxConns.Load()); lim > 0 && c >= lim || c == countMask-1 {
						l.refuse(src, &l.st.refusedConns)
						return -1, limConns
					}
					if s.key.CompareAndSwap(v, v+1) {
						return int(j), limOK
					}
					v = s.key.Load()
					if v&addrBound != want || v&keyPending != 0 {
						busy = true // the dead slot went to another address
						break
					}
				}
				break
			}
			if v&(keyPending|countMask) == 0 { // free or dead
				b := i / srcBucket
				if nav[b] == 0 {
					avail[b], availV[b] = int(j)+1, v
				}
				nav[b]++
			}
		}
		if busy || found {
			continue
		}
		b := 0
		if nav[1] > nav[0] {
			b = 1
		}
		if nav[b] == 0 {
			break
		}
		j := avail[b] - 1
		s := &l.slots[j]
		if !s.key.CompareAndSwap(availV[b], want|keyPending|1) {
			continue
		}
		if l.rival(want, b1, b2, uint64(j)) {
			s.key.Store(0) // withdraw: no one else writes a pending slot
			continue
		}
		s.key.Store(want | 1)
		return j, limOK
	}
	l.refuse(src, &l.st.full)
	return -1, limFull
}

// rival reports whether a slot of src's window other than mine is bound
// to src, in any state.
func (l *SourceLimiter) rival(want, b1, b2, mine uint64) bool {
	for i := range uint64(srcWindow) {
		j := at(b1, b2, i)
		if j != mine && l.slots[j].key.Load()&addrBound == want {
			return true
		}
	}
	return false
}

// slot returns src's slot, which holds a connection of it (the caller's).
func (l *SourceLimiter) slot(src uint32) int {
	want := uint64(src)<<32 | keyBound
	b1, b2 := l.home(src)
	for i := range uint64(srcWindow) {
		j := at(b1, b2, i)
		if v := l.slots[j].key.Load(); v&^countMask == want && v&countMask != 0 {
			return int(j)
		}
	}
	return -1
}

// release counts one connection of src less, and one port less if port.
// The slot dies (stays src's, with no connections, free for another
// address) when the last connection goes.
func (l *SourceLimiter) release(src uint32, port bool) {
	j := l.slot(src)
	if j < 0 {
		return // never counted: a caller's mistake, not a packet's
	}
	s := &l.slots[j]
	if port {
		s.ports.Add(^uint32(0))
	}
	s.key.Add(^uint64(0)) // held by this connection: only counts change
}

// unacquire gives back a connection acquire counted in slot j that was
// not made after all.
func (l *SourceLimiter) unacquire(j int) { l.slots[j].key.Add(^uint64(0)) }

// reservePort takes one port more for the source of slot j (whose
// connection the caller holds), unless that reaches xnat.per_source_ports.
func (l *SourceLimiter) reservePort(j int) bool {
	s := &l.slots[j]
	lim := uint32(min(uint64(l.maxPorts.Load()), countMask))
	for {
		p := s.ports.Load()
		if lim > 0 && p >= lim || p == countMask {
			return false
		}
		if s.ports.CompareAndSwap(p, p+1) {
			return true
		}
	}
}

// unreservePort gives back a port reservePort took.
func (l *SourceLimiter) unreservePort(j int) { l.slots[j].ports.Add(^uint32(0)) }

// refuse counts a refusal of src: in total (by reason) and for src.
func (l *SourceLimiter) refuse(src uint32, why *atomic.Uint64) {
	why.Add(1)
	l.refused.add(src, l.hash(src)>>40)
}

// refusePorts counts a refusal of a connection of src at its port limit.
func (l *SourceLimiter) refusePorts(src uint32) { l.refuse(src, &l.st.refusedPorts) }

// Count returns how many connections src has and how many ports they
// hold.
func (l *SourceLimiter) Count(src uint32) (conns, ports int) {
	want := uint64(src)<<32 | keyBound
	b1, b2 := l.home(src)
	for i := range uint64(srcWindow) {
		s := &l.slots[at(b1, b2, i)]
		if v := s.key.Load(); v&^countMask == want && v&countMask != 0 {
			return int(v & countMask), int(s.ports.Load())
		}
	}
	return 0, 0
}

// LimiterStats are a limiter's counters.
type LimiterStats struct {
	RefusedConns uint64 // connections refused at xnat.per_source_max
	RefusedPorts uint64 // connections refused at xnat.per_source_ports
	Full         uint64 // connections refused for want of a slot for their source
}

// Stats returns the limiter's counters.
func (l *SourceLimiter) Stats() LimiterStats {
	return LimiterStats{RefusedConns: l.st.refusedConns.Load(), RefusedPorts: l.st.refusedPorts.Load(), Full: l.st.full.Load()}
}

// SourceUse is one inside address's share.
type SourceUse struct {
	Addr    uint32
	Conns   int
	Ports   int
	Refused uint64 // refusals since start (see Top)
}

// TopSources are the inside addresses with the most connections, the
// most ports and the most refusals.
type TopSources struct {
	Sources  int // inside addresses with connections now
	Conns    int // their connections
	Ports    int // the ports they hold
	ByConns  []SourceUse
	ByPorts  []SourceUse
	Refused  []SourceUse
	Limit    int // xnat.per_source_max
	PortsMax int // xnat.per_source_ports
	LimiterStats
}

// Top returns the n inside addresses with the most connections, the n
// with the most ports and the n with the most refusals. Counts of
// connections and ports are each read atomically, a source at a time,
// while traffic flows. Refusals are counted per address in a table of
// 4096 (sources beyond it take the place of the least refused in their
// neighbourhood, inheriting its count: a heavy refuser is always there,
// its count an upper bound). It reads the whole table: a control-plane
// call.
func (l *SourceLimiter) Top(n int) TopSources {
	n = max(n, 0)
	t := TopSources{Limit: l.Limit(), PortsMax: l.PortLimit(), LimiterStats: l.Stats()}
	var all []SourceUse
	for i := range l.slots {
		s := &l.slots[i]
		v := s.key.Load()
		if v&keyBound == 0 || v&keyPending != 0 || v&countMask == 0 {
			continue
		}
		u := SourceUse{Addr: uint32(v >> 32), Conns: int(v & countMask), Ports: int(s.ports.Load())}
		t.Sources++
		t.Conns += u.Conns
		t.Ports += u.Ports
		all = append(all, u)
	}
	refused := l.refused.snapshot()
	for i := range all {
		all[i].Refused = refused[all[i].Addr]
	}
	top := func(by func(a, b SourceUse) int) []SourceUse {
		s := slices.Clone(all)
		slices.SortFunc(s, func(a, b SourceUse) int {
			if c := by(a, b); c != 0 {
				return c
			}
			return cmp.Compare(a.Addr, b.Addr)
		})
		return s[:min(n, len(s))]
	}
	t.ByConns = top(func(a, b SourceUse) int { return cmp.Compare(b.Conns, a.Conns) })
	t.ByPorts = top(func(a, b SourceUse) int { return cmp.Compare(b.Ports, a.Ports) })
	byAddr := make(map[uint32]SourceUse, len(all))
	for _, u := range all {
		byAddr[u.Addr] = u
	}
	for a, r := range refused {
		u := byAddr[a]
		u.Addr, u.Refused = a, r
		t.Refused = append(t.Refused, u)
	}
	slices.SortFunc(t.Refused, func(a, b SourceUse) int {
		if c := cmp.Compare(b.Refused, a.Refused); c != 0 {
			return c
		}
		return cmp.Compare(a.Addr, b.Addr)
	})
	t.Refused = t.Refused[:min(n, len(t.Refused))]
	return t
}

// refTable counts refusals per inside address: words of address and
// count (0: empty), refWindow of them from an address's home. An address
// finding its window full takes the slot of the least count, adding one
// to it (the Space-Saving algorithm's rule), so the table stays bounded
// and keeps the heaviest. Concurrent first refusals of one address may
// take two slots; the snapshot adds them up.
type refTable struct {
	w []atomic.Uint64
}

func (t *refTable) add(src uint32, h uint64) {
	mask := uint64(len(t.w) - 1)
	key := uint64(src) << 32
	for range 4 {
		empty, least := -1, -1
		var leastV uint64
		found := false
		for i := range uint64(refWindow) {
			j := (h + i) & mask
			v := t.w[j].Load()
			if v != 0 && v&^0xffffffff == key {
				if uint32(v) == ^uint32(0) || t.w[j].CompareAndSwap(v, v+1) {
					return
				}
				found = true
				break
			}
			if v == 0 {
				if empty < 0 {
					empty = int(j)
				}
			} else if least < 0 || uint32(v) < uint32(leastV) {
				least, leastV = int(j), v
			}
		}
		switch {
		case found:
		case empty >= 0:
			if t.w[empty].CompareAndSwap(0, key|1) {
				return
			}
		case uint32(leastV) < ^uint32(0):
			if t.w[least].CompareAndSwap(leastV, key|uint64(uint32(leastV)+1)) {
				return
			}
		default:
			return
		}
	}
}

func (t *refTable) snapshot() map[uint32]uint64 {
	m := map[uint32]uint64{}
	for i := range t.w {
		if v := t.w[i].Load(); v != 0 {
			m[uint32(v>>32)] += uint64(uint32(v))
		}
	}
	return m
}
