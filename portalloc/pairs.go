package portalloc

import (
	"math/bits"

	"xnat/internal/prefault"
)

// pairTable counts, for one core, the connections each inside source has
// on each external endpoint (address, port and protocol class) of that
// core's slices: how the limiter knows when a source takes a port it did
// not hold, or gives back its last connection on one. Only its core
// reads and writes it: plain memory. It is an open-addressing table with
// linear probing, an entry at most pairWindow slots from its home, and
// deletion by backward shift (no tombstones: a search stops at the first
// empty slot). It is sized at twice the connections the core may hold,
// with a keyed hash, so a full window is rare; an endpoint whose window is
// full is passed over as if taken.
type pairTable struct {
	e      []pairEntry
	k0, k1 uint64
}

type pairEntry struct {
	k uint64 // source<<32 | external address
	x uint32 // port<<16 | class
	n uint32 // connections; 0: empty
}

const pairWindow = 32

func newPairTable(n uint64, seed uint64) *pairTable {
	n = max(n, pairWindow)
	t := &pairTable{e: make([]pairEntry, n), k0: seed | 1, k1: bits.RotateLeft64(seed, 29) ^ 0x9E3779B97F4A7C15 | 1}
	prefault.Slice(t.e)
	return t
}

func pairX(port uint16, cl int) uint32 { return uint32(port)<<16 | uint32(cl) }

func (t *pairTable) home(k uint64, x uint32) uint64 {
	hi, lo := bits.Mul64(k^t.k0, uint64(x)<<32^t.k1)
	hi, _ = bits.Mul64(hi^lo, uint64(len(t.e)))
	return hi
}

func (t *pairTable) next(j uint64) uint64 {
	if j++; j == uint64(len(t.e)) {
		return 0
	}
	return j
}

// find returns the entry of (k, x) and true, or the slot where it would
// go and false, or -1 and false when its window is full.
func (t *pairTable) find(k uint64, x uint32) (int, bool) {
	j := t.home(k, x)
	for range pairWindow {
		e := &t.e[j]
		if e.n == 0 {
			return int(j), false
		}
		if e.k == k && e.x == x {
			return int(j), true
		}
		j = t.next(j)
	}
	return -1, false
}

// put starts the entry of (k, x) with one connection at slot j, which
// find returned for it.
func (t *pairTable) put(j int, k uint64, x uint32) { t.e[j] = pairEntry{k: k, x: x, n: 1} }

// remove empties slot j and shifts back the entries after it that may
// move closer to their homes, so that no search meets a gap before its
// entry.
func (t *pairTable) remove(j int) {
	i := uint64(j)
	n := uint64(len(t.e))
	for k, left := t.next(i), n-1; left > 0; k, left = t.next(k), left-1 {
		e := &t.e[k]
		if e.n == 0 {
			break
		}
		// e may move to i when its home is not cyclically within (i, k].
		h := t.home(e.k, e.x)
		if (k+n-h)%n >= (k+n-i)%n {
			t.e[i] = *e
			i = k
		}
	}
	t.e[i] = pairEntry{}
}
