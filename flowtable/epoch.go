package flowtable

import "sync/atomic"

// cacheLine is the stride that keeps one core's hot words away from
// another's. 128 rather than 64: Intel's adjacent-line prefetcher pulls
// cache lines in pairs, so 64-byte neighbours still contend.
const cacheLine = 128

// epochs is the quiescent-state/epoch scheme that keeps a record from
// being reused while another participant may still read it. See doc.go.
type epochs struct {
	global atomic.Uint64
	_      [cacheLine - 8]byte
	slots  []epochSlot
}

// epochSlot is one participant's announcement: 0 while it is outside a
// critical section, epoch<<1|1 while inside one.
type epochSlot struct {
	v atomic.Uint64
	_ [cacheLine - 8]byte
}

func newEpochs(participants int) *epochs {
	e := &epochs{slots: make([]epochSlot, participants)}
	e.global.Store(1)
	return e
}

// enter announces that participant p may from now on hold references to
// records. The global epoch is read before the announcement and every
// record access comes after it (all Go atomics are sequentially
// consistent), so no record visible to p can be freed before p exits.
func (e *epochs) enter(p int) {
	e.slots[p].v.Store(e.global.Load()<<1 | 1)
}

// exit announces that p holds no references.
func (e *epochs) exit(p int) {
	e.slots[p].v.Store(0)
}

// tryAdvance moves the global epoch forward by one if every participant
// inside a critical section has announced the current epoch. It returns
// the global epoch after the attempt.
func (e *epochs) tryAdvance() uint64 {
	g := e.global.Load()
	for i := range e.slots {
		v := e.slots[i].v.Load()
		if v&1 == 1 && v>>1 != g {
			return g
		}
	}
	if e.global.CompareAndSwap(g, g+1) {
		return g + 1
	}
	return e.global.Load()
}
