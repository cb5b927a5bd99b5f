package flowtable

import "sync/atomic"

// Records are handed to cores in chunks of chunkSize consecutive records.
// A core owns every record of the chunks it holds; the chunks no core holds
// are the common reserve (pool), a lock-free stack any core pops from and
// pushes to. A chunk's first record holds its owner's bookkeeping
// (chunkMeta), so that a core writes it in its own chunk's memory, never
// on a cache line with another core's; the other chunkRecs hold
// connections.
const (
	chunkShift = 6
	chunkSize  = 1 << chunkShift
	chunkRecs  = chunkSize - 1
)

// chunk is what any core may read of a chunk.
type chunk struct {
	owner    atomic.Uint32 // owning core's id + 1; 0 while in the pool
	poolNext atomic.Uint32 // next chunk in the pool (chunk+1; 0 ends it)
}

// chunkMeta is a chunk's bookkeeping, in the tuples of its first record,
// which no index slot ever names and whose status stays 0 (free), so no
// other core reads them. It belongs to the chunk's owner and passes to the
// next owner through the pool's CAS, which orders it.
type chunkMeta struct {
	free uint32 // head of the chunk's free list (record+1; 0 when empty)
	used uint16 // records off the free list: live, dying or in limbo
	fill uint16 // records [base+1, base+fill) used since the chunk was taken

	availNext, availPrev uint32 // the owner's chunks with free records (chunk+1)
	heldNext, heldPrev   uint32 // the owner's chunks, a ring (chunk+1)
}

// chunkPool is the common reserve: a Treiber stack of chunks. The head
// word is a version in the high 32 bits and the top chunk (+1) in the low,
// the version bumped at every change, so a pop that read a chunk's next
// link before another core popped and pushed that chunk back fails its CAS
// instead of installing a stale link (ABA).
type chunkPool struct {
	head atomic.Uint64
	_    [cacheLine - 8]byte
}

func (p *chunkPool) push(cs []chunk, ch uint32) {
	for {
		h := p.head.Load()
		cs[ch].poolNext.Store(uint32(h))
		if p.head.CompareAndSwap(h, (h>>32+1)<<32|uint64(ch+1)) {
			return
		}
	}
}

// pop takes a chunk from the pool; it returns chunk+1, or 0 when the pool
// is empty.
func (p *chunkPool) pop(cs []chunk) uint32 {
	for {
		h := p.head.Load()
		top := uint32(h)
		if top == 0 {
			return 0
		}
		next := cs[top-1].poolNext.Load()
		if p.head.CompareAndSwap(h, (h>>32+1)<<32|uint64(next)) {
			return top
		}
	}
}

// take moves a chunk from the pool to this core: it returns chunk+1, or 0
// when the pool is empty. Every record of a pooled chunk is free (status
// 0) and past its grace period.
func (c *Core) take() uint32 {
	t := c.t
	ch := t.pool.pop(t.chunks)
	if ch == 0 {
		return 0
	}
	t.chunks[ch-1].owner.Store(uint32(c.id) + 1)
	k := t.meta(ch)
	k.free, k.used, k.fill = 0, 0, 1
	// Into the ring of held chunks, before its head.
	if c.held == 0 {
		k.heldNext, k.heldPrev = ch, ch
		c.held = ch
	} else {
		h := t.meta(c.held)
		k.heldNext, k.heldPrev = c.held, h.heldPrev
		t.meta(h.heldPrev).heldNext = ch
		h.heldPrev = ch
	}
	c.nheld++
	c.pushAvail(ch)
	return ch
}

// giveBack returns a held chunk whose records are all free to the pool.
func (c *Core) giveBack(ch uint32) {
	t := c.t
	k := t.meta(ch)
	c.unlinkAvail(ch)
	if k.heldNext == ch {
		c.held = 0
	} else {
		t.meta(k.heldPrev).heldNext = k.heldNext
		t.meta(k.heldNext).heldPrev = k.heldPrev
		if c.held == ch {
			c.held = k.heldNext
		}
	}
	if c.cursor == ch {
		c.cursor, c.cursorOff = 0, 1
		if c.held != 0 {
			c.cursor = k.heldNext
		}
	}
	c.nheld--
	t.chunks[ch-1].owner.Store(0)
	t.pool.push(t.chunks, ch-1)
}

// pushAvail appends a held chunk to the list of those with free records.
func (c *Core) pushAvail(ch uint32) {
	t := c.t
	k := t.meta(ch)
	k.availNext, k.availPrev = 0, c.availTail
	if c.availTail == 0 {
		c.avail = ch
	} else {
		t.meta(c.availTail).availNext = ch
	}
	c.availTail = ch
}

// unlinkAvail removes a chunk from the list of those with free records.
func (c *Core) unlinkAvail(ch uint32) {
	t := c.t
	k := t.meta(ch)
	if k.availPrev == 0 {
		c.avail = k.availNext
	} else {
		t.meta(k.availPrev).availNext = k.availNext
	}
	if k.availNext == 0 {
		c.availTail = k.availPrev
	} else {
		t.meta(k.availNext).availPrev = k.availPrev
	}
	k.availNext, k.availPrev = 0, 0
}

// Held returns how many records for connections this core holds, in whole
// chunks: what one pass of its Sweep walks. Only the core's own goroutine
// may call it.
func (c *Core) Held() int { return int(c.nheld) * chunkRecs }

// owns reports whether this core owns record idx.
func (c *Core) owns(idx uint32) bool {
	return c.t.chunks[idx>>chunkShift].owner.Load() == uint32(c.id)+1
}
