package portalloc

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

type pairKey struct {
	k uint64
	x uint32
}

// pairModel runs ops against a pairTable and a map, and checks that
// they agree and that the table's invariant holds: every entry lies
// within pairWindow of its home, with no empty slot between.
type pairModel struct {
	t *testing.T
	p *pairTable
	m map[pairKey]uint32
}

func (pm *pairModel) add(key pairKey) {
	j, held := pm.p.find(key.k, key.x)
	if held != (pm.m[key] > 0) {
		pm.t.Fatalf("find %v: held %v, model %d", key, held, pm.m[key])
	}
	switch {
	case held:
		pm.p.e[j].n++
	case j < 0:
		return // window full: the caller passes the port over
	default:
		pm.p.put(j, key.k, key.x)
	}
	pm.m[key]++
}

func (pm *pairModel) drop(key pairKey) {
	j, held := pm.p.find(key.k, key.x)
	if held != (pm.m[key] > 0) {
		pm.t.Fatalf("find %v: held %v, model %d", key, held, pm.m[key])
	}
	if !held {
		return
	}
	if pm.p.e[j].n--; pm.p.e[j].n == 0 {
		pm.p.remove(j)
		delete(pm.m, key)
	} else {
		pm.m[key]--
	}
}

func (pm *pairModel) check() {
	n := uint64(len(pm.p.e))
	live := 0
	for j := range pm.p.e {
		e := &pm.p.e[j]
		if e.n == 0 {
			continue
		}
		live++
		key := pairKey{e.k, e.x}
		if pm.m[key] != e.n {
			pm.t.Fatalf("slot %d: %v count %d, model %d", j, key, e.n, pm.m[key])
		}
		h := pm.p.home(e.k, e.x)
		d := (uint64(j) + n - h) % n
		if d >= pairWindow {
			pm.t.Fatalf("slot %d: %d from its home", j, d)
		}
		for i := range d {
			if pm.p.e[(h+i)%n].n == 0 {
				pm.t.Fatalf("slot %d: gap %d slots after its home", j, i)
			}
		}
	}
	if live != len(pm.m) {
		pm.t.Fatalf("%d entries, model %d", live, len(pm.m))
	}
}

// TestPairTableModel: random adds and drops on a small table (many
// collisions, wrapping round its end) agree with a map.
func TestPairTableModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 20 {
		pm := &pairModel{t: t, p: newPairTable(uint64(40+round), rng.Uint64()), m: map[pairKey]uint32{}}
		keys := make([]pairKey, 60)
		for i := range keys {
			keys[i] = pairKey{uint64(rng.IntN(8))<<32 | uint64(rng.IntN(4)), pairX(uint16(rng.IntN(16)), rng.IntN(3))}
		}
		for range 4000 {
			k := keys[rng.IntN(len(keys))]
			if rng.IntN(5) < 3 {
				pm.add(k)
			} else {
				pm.drop(k)
			}
		}
		pm.check()
		for k := range pm.m {
			for pm.m[k] > 0 {
				pm.drop(k)
			}
		}
		pm.check()
	}
}

// FuzzPairTable: any sequence of adds and drops keeps the table and a
// map in agreement. Each op is three bytes: add or drop, and the key.
func FuzzPairTable(f *testing.F) {
	f.Add([]byte{0, 1, 2, 0, 1, 2, 1, 1, 2, 1, 1, 2})
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0, 0, 2, 1, 0, 1, 0, 0, 3})
	f.Fuzz(func(t *testing.T, ops []byte) {
		pm := &pairModel{t: t, p: newPairTable(33, 0x1234567), m: map[pairKey]uint32{}}
		for i := 0; i+3 <= len(ops); i += 3 {
			v := binary.LittleEndian.Uint16(ops[i+1:])
			k := pairKey{uint64(v>>8&7)<<32 | uint64(v>>4&15), pairX(v&15, int(v>>11&1))}
			if ops[i]&1 == 0 {
				pm.add(k)
			} else {
				pm.drop(k)
			}
		}
		pm.check()
	})
}
