package dataplane

import (
	"sync"
	"sync/atomic"

	"xnat/dataplane/topo"
)

// NeighTable is the dataplane's copy of the kernel's IPv4 neighbours,
// shared by every core and changed one neighbour at a time as the
// kernel notifies them (Update), without rebuilding the Env: the cores
// read it without a lock. Each entry is two words: its key (interface
// index and address), written once when the entry is first seen and
// never changed, so a lookup's probe sequence is never broken, and its
// value (link-layer address, state and a version), replaced atomically.
// A neighbour the kernel deletes keeps its key with the state neighGone.
// Gen counts the changes a core must react to (an address or a usable
// state that changed): the state changes of the kernel's reachability
// machine (REACHABLE, STALE, DELAY, PROBE are all valid here) change
// nothing and cost the cores nothing.
//
// The table grows, and sheds its gone entries, by replacement: when its
// keys fill three quarters of the slots, the writer builds a new array
// with the live entries and swaps it in; a core that sees the array
// change empties its next-hop cache.
type NeighTable struct {
	mu    sync.Mutex // writers
	slots atomic.Pointer[neighSlots]
	gen   atomic.Uint64
	keys  int // keys in slots, under mu
	// wake, when set (Dataplane.UseNeighbours), is called after a change
	// that may let a core send or answer frames it holds: a neighbour
	// resolved or failed. It wakes the sleeping workers, so held frames
	// leave when the kernel reports the address, not at a poll timeout.
	wake atomic.Pointer[func()]
}

type neighSlots struct {
	mask uint32
	s    []neighSlot
}

type neighSlot struct {
	key atomic.Uint64 // ifindex<<32 | IPv4 address; 0 for a free slot
	val atomic.Uint64 // neighVal
}

// Neighbour states in a value's low four bits.
const (
	neighGone       = 0 // unknown or deleted
	neighIncomplete = 1 // being resolved
	neighValid      = 2 // the address is usable
	neighFailed     = 3 // resolution failed
)

// A value: the link-layer address in the high 48 bits, a 12-bit version
// (bumped by every change) and the state.
func neighVal(mac [6]byte, ver uint64, state uint64) uint64 {
	return uint64(mac[0])<<56 | uint64(mac[1])<<48 | uint64(mac[2])<<40 | uint64(mac[3])<<32 |
		uint64(mac[4])<<24 | uint64(mac[5])<<16 | (ver&0xfff)<<4 | state
}

func neighState(v uint64) uint64 { return v & 0xf }

func neighMAC(v uint64) [6]byte {
	return [6]byte{byte(v >> 56), byte(v >> 48), byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16)}
}

// neighSame reports whether two values say the same to the dataplane:
// the same state and, when valid, the same address.
func neighSame(a, b uint64) bool {
	if neighState(a) != neighState(b) {
		return false
	}
	return neighState(a) != neighValid || a>>16 == b>>16
}

const neighInitial = 1024 // slots of a new table

// NewNeighTable returns an empty table.
func NewNeighTable() *NeighTable {
	t := &NeighTable{}
	t.slots.Store(newNeighSlots(neighInitial))
	return t
}

func newNeighSlots(n int) *neighSlots {
	return &neighSlots{mask: uint32(n - 1), s: make([]neighSlot, n)}
}

func neighKey64(ifindex int, ip uint32) uint64 { return uint64(uint32(ifindex))<<32 | uint64(ip) }

func neighHash(key uint64) uint32 {
	return uint32((key * 0x9E3779B97F4A7C15) >> 32)
}

// find returns the slot holding key, or -1.
func (s *neighSlots) find(key uint64) int {
	for i, n := neighHash(key)&s.mask, 0; n <= int(s.mask); i, n = (i+1)&s.mask, n+1 {
		switch s.s[i].key.Load() {
		case key:
			return int(i)
		case 0:
			return -1
		}
	}
	return -1
}

// lookup returns the slot and value of a neighbour, or -1.
func (s *neighSlots) lookup(ifindex int, ip uint32) (int, uint64) {
	i := s.find(neighKey64(ifindex, ip))
	if i < 0 {
		return -1, 0
	}
	return i, s.s[i].val.Load()
}

// Update applies one neighbour as the kernel notified it (present false:
// deleted). Safe for concurrent use with the cores' reads.
func (t *NeighTable) Update(n topo.Neigh, present bool) {
	t.mu.Lock()
	release := t.set(n, present)
	t.mu.Unlock()
	if release {
		t.notify()
	}
}

// notify calls the wake function, if any.
func (t *NeighTable) notify() {
	if f := t.wake.Load(); f != nil {
		(*f)()
	}
}

// Sync makes the table what a full dump of the kernel's neighbours says:
// every neighbour of the list is set, every other one is gone.
func (t *NeighTable) Sync(list []topo.Neigh) {
	release := false
	defer func() {
		if release {
			t.notify()
		}
	}()
	t.mu.Lock()
	defer t.mu.Unlock()
	in := make(map[uint64]bool, len(list))
	for _, n := range list {
		in[neighKey64(n.IfIndex, n.IP)] = true
		release = t.set(n, true) || release
	}
	s := t.slots.Load()
	for i := range s.s {
		if k := s.s[i].key.Load(); k != 0 && !in[k] {
			t.set(topo.Neigh{IfIndex: int(k >> 32), IP: uint32(k)}, false)
		}
	}
}

// Gen counts the changes the cores react to.
func (t *NeighTable) Gen() uint64 { return t.gen.Load() }

// Lookup returns what the table holds for a neighbour: its state and
// address (state NeighIncomplete and false when unknown or deleted).
func (t *NeighTable) Lookup(ifindex int, ip uint32) (topo.Neigh, bool) {
	_, v := t.slots.Load().lookup(ifindex, ip)
	n := topo.Neigh{IfIndex: ifindex, IP: ip}
	switch neighState(v) {
	case neighValid:
		n.State, n.MAC = topo.NeighValid, neighMAC(v)
	case neighFailed:
		n.State = topo.NeighFailed
	case neighIncomplete:
	default:
		return n, false
	}
	return n, true
}

// set is Update under mu. It reports whether the change may release
// held frames: the neighbour is now valid or failed, and was not before
// (every failure counts).
func (t *NeighTable) set(n topo.Neigh, present bool) bool {
	if n.IfIndex <= 0 || n.IfIndex > 0xffffffff {
		return false
	}
	state := uint64(neighGone)
	if present {
		switch n.State {
		case topo.NeighValid:
			state = neighValid
		case topo.NeighFailed:
			state = neighFailed
		default:
			state = neighIncomplete
		}
	}
	key := neighKey64(n.IfIndex, n.IP)
	s := t.slots.Load()
	i := s.find(key)
	if i < 0 {
		if state == neighGone {
			return false
		}
		if (t.keys+1)*4 > len(s.s)*3 {
			s = t.rebuild(s)
		}
		i = int(neighHash(key) & s.mask)
		for s.s[i].key.Load() != 0 {
			i = (i + 1) & int(s.mask)
		}
		// The value first: a core that finds the key finds its value.
		s.s[i].val.Store(neighVal(n.MAC, 1, state))
		s.s[i].key.Store(key)
		t.keys++
		t.gen.Add(1)
		return state == neighValid || state == neighFailed
	}
	old := s.s[i].val.Load()
	v := neighVal(n.MAC, (old>>4&0xfff)+1, state)
	// Every failure counts: the kernel reports one after each round of
	// probes, and the cores answer the frames held meanwhile.
	if neighSame(old, v) && state != neighFailed {
		return false
	}
	s.s[i].val.Store(v)
	t.gen.Add(1)
	return state == neighValid || state == neighFailed
}

// rebuild swaps in a new array holding s's live entries, twice as large
// when they fill half of s.
func (t *NeighTable) rebuild(s *neighSlots) *neighSlots {
	live := 0
	for i := range s.s {
		if s.s[i].key.Load() != 0 && neighState(s.s[i].val.Load()) != neighGone {
			live++
		}
	}
	size := len(s.s)
	for (live+1)*2 > size {
		size *= 2
	}
	ns := newNeighSlots(size)
	for i := range s.s {
		k, v := s.s[i].key.Load(), s.s[i].val.Load()
		if k == 0 || neighState(v) == neighGone {
			continue
		}
		j := neighHash(k) & ns.mask
		for ns.s[j].key.Load() != 0 {
			j = (j + 1) & ns.mask
		}
		ns.s[j].val.Store(v)
		ns.s[j].key.Store(k)
	}
	t.keys = live
	t.slots.Store(ns)
	t.gen.Add(1)
	return ns
}
