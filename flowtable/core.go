package flowtable

import (
	"errors"
	"math/bits"
	"sync/atomic"
)

// Stats are one core's counters, named as `conntrack -S` names them where
// they apply.
type Stats struct {
	Found         uint64 // lookups that found a connection
	Invalid       uint64 // packets the caller could not track (CountInvalid)
	Insert        uint64 // connections inserted
	InsertFailed  uint64 // inserts that lost a race or found no index slot
	Drop          uint64 // new connections refused: table full and nothing evictable
	EarlyDrop     uint64 // unassured connections evicted to make room
	SearchRestart uint64 // lookups redone after a concurrent insert of the same tuple
	Expired       uint64 // connections that timed out (counted by the owner)
	Deleted       uint64 // connections killed other than by timeout or eviction
}

// Indices of the per-core counters, in Stats' field order.
const (
	stFound = iota
	stInvalid
	stInsert
	stInsertFailed
	stDrop
	stEarlyDrop
	stSearchRestart
	stExpired
	stDeleted
	numStats
)

func statsFrom(a *[numStats]uint64) Stats {
	return Stats{a[stFound], a[stInvalid], a[stInsert], a[stInsertFailed], a[stDrop], a[stEarlyDrop], a[stSearchRestart], a[stExpired], a[stDeleted]}
}

// Add adds o to s.
func (s *Stats) Add(o Stats) {
	s.Found += o.Found
	s.Invalid += o.Invalid
	s.Insert += o.Insert
	s.InsertFailed += o.InsertFailed
	s.Drop += o.Drop
	s.EarlyDrop += o.EarlyDrop
	s.SearchRestart += o.SearchRestart
	s.Expired += o.Expired
	s.Deleted += o.Deleted
}

// pubStats is a core's counters as readers see them: published with
// atomic stores at the end of each critical section, on lines no other
// core writes.
type pubStats struct {
	v [numStats]atomic.Uint64
	_ [2*cacheLine - numStats*8]byte
}

type limboEntry struct {
	idx   uint32
	epoch uint32
}

// Core is one worker core's handle on the table: the chunks of records it
// holds, their free lists, its limbo, its sweep cursor and its counters.
// Exactly one goroutine uses a Core; every record access happens between
// Enter and Exit.
type Core struct {
	t  *Table
	id int
	// The chunks this core holds (chunks.go): a ring of all of them, and
	// a list of those with free records, allocated from front to back.
	held, nheld      uint32
	avail, availTail uint32
	cursor           uint32 // sweep position: chunk+1 and offset in it
	cursorOff        uint32
	evictCursor      uint32 // where the fallback eviction scan goes on

	limbo      []limboEntry // ring of retired records, oldest first
	limboHead  int
	limboCount int

	// Connections this core killed itself and retired at once, waiting
	// for the next Sweep to report them.
	gone      []Gone
	goneHead  int
	goneCount int

	st  [numStats]uint64 // owner-only, plain
	pub *pubStats        // published copy

	// scratch for LookupBatch
	bb   [batchMax]probe
	sink uint32
}

func newCore(t *Table, id int, limbo int) *Core {
	return &Core{
		t: t, id: id,
		limbo: make([]limboEntry, limbo),
		gone:  make([]Gone, min(limbo, goneQueue)),
		pub:   new(pubStats),
	}
}

// ID returns the core's index.
func (c *Core) ID() int { return c.id }

// Enter begins a critical section: Refs and *Flow obtained after it stay
// valid until Exit. A worker enters once per batch.
func (c *Core) Enter() { c.t.ep.enter(c.id) }

// Exit ends the critical section, publishes this core's counters and
// frees retired records whose grace period has passed. A worker exits at
// the end of every batch and before it blocks.
func (c *Core) Exit() {
	c.t.ep.exit(c.id)
	for i, v := range c.st {
		if c.pub.v[i].Load() != v {
			c.pub.v[i].Store(v)
		}
	}
	c.reclaim()
}

// Stats returns the counters this core has published.
func (c *Core) Stats() Stats {
	var a [numStats]uint64
	for i := range a {
		a[i] = c.pub.v[i].Load()
	}
	return statsFrom(&a)
}

// CountInvalid counts a packet the caller could not track (conntrack's
// "invalid").
func (c *Core) CountInvalid() { c.st[stInvalid]++ }

// Lookup finds the live connection a tuple belongs to, in either
// direction. It returns 0 when there is none.
func (c *Core) Lookup(k *Tuple, now Time) Ref {
	r := c.t.lookup(k, now, &c.st[stSearchRestart])
	if r != 0 {
		c.st[stFound]++
	}
	return r
}

// batchMax is the largest batch LookupBatch resolves in one pass; longer
// batches are taken batchMax keys at a time.
const batchMax = 64

// probe is one key's place in a LookupBatch: its two buckets, its tag and
// the candidate record found under the tag (noCand while none). The
// assembly tag scan reads it by offset (tagscan_amd64.s); a test holds the
// layout to those offsets.
type probe struct {
	b1, b2 uint64
	tag    uint32
	idx    uint32
}

// noCand is probe.idx while no slot of the probed buckets holds the tag.
const noCand = ^uint32(0)

// LookupBatch looks up keys[i] into refs[i] (0 when not found). It first
// computes every key's buckets and touches them, then the candidate
// records, and only then compares, so the cache misses of the whole batch
// overlap instead of following one another. It returns how many keys it
// found.
func (c *Core) LookupBatch(keys []Tuple, refs []Ref, now Time) (found int) {
	refs = refs[:len(keys)]
	for len(keys) > 0 {
		n := min(len(keys), batchMax)
		found += c.lookupBatch(keys[:n], refs[:n], now)
		keys, refs = keys[n:], refs[n:]
	}
	return found
}

// touchAbove is the number of live connections above which LookupBatch
// touches each key's bucket and record before comparing: 16384 records
// and their buckets take about a megabyte, the size of this machine's L2.
const touchAbove = 16384

func (c *Core) lookupBatch(keys []Tuple, refs []Ref, now Time) int {
	t := c.t
	bb := c.bb[:len(keys)]
	keys, refs = keys[:len(bb)], refs[:len(bb)]
	mask := t.idxMask
	var sink uint32
	moved := t.relocs.Load()
	// The passes alternate computing with touching: each touch loop is a
	// handful of instructions an iteration, so the core keeps dozens of
	// misses in flight instead of the few a long loop body allows.
	// Hash, and prefetch each first bucket as soon as it is known, so
	// those misses overlap the hashing of the keys after (a prefetch,
	// unlike a load, does not hold up the instructions behind it). The
	// touch loop then waits for lines already on their way, and stays the
	// whole story where no prefetch is written.
	// The prefetches and touch loops are for a table beyond the caches;
	// below touchAbove live connections its lines are already at hand, and
	// they would be instructions spent for nothing.
	touch := t.count.Load() > touchAbove
	if !touch {
		if found, ok := t.lookupSmall(keys, refs, now); ok {
			return c.lookupDone(keys, refs, now, found, moved)
		}
	}
	t.hashProbes(keys, bb, touch)
	if touch {
		for i := range bb { // touch first buckets
			sink += t.buckets[bb[i].b1][0].Load()
		}
	}
	// Find each key's candidate in its first bucket, then, for the few
	// not there, in its second. The vector scan also prefetches each
	// candidate record and each second bucket it will need, so those
	// misses start while the scan goes on; the touch loops below then
	// wait for lines already on their way.
	if tagScan(t.buckets, t.recs, bb, mask, false) > 0 {
		for i := range bb {
			if bb[i].idx == noCand {
				sink += t.buckets[bb[i].b2][0].Load()
			}
		}
		tagScan(t.buckets, t.recs, bb, mask, true)
	}
	for i := range bb { // touch candidate records: a 48-byte record may span two lines
		if !touch {
			break
		}
		if idx := bb[i].idx; idx != noCand {
			f := &t.recs[idx]
			sink += f.orig.Src + f.status.Load()
		}
	}
	// Compare each candidate with its key; the few that fail (a tag that
	// matched another tuple, or a dead record under the same tag) are
	// looked for again through both buckets.
	found, rescan := t.compareProbes(keys, bb, refs, now)
	for ; rescan != 0; rescan &= rescan - 1 {
		i := bits.TrailingZeros64(rescan) & (batchMax - 1)
		b := &bb[i]
		r := t.scanBoth(b.b1, b.b2, b.tag, &keys[i], now)
		refs[i] = r
		if r != 0 {
			found++
		}
	}
	c.sink += sink
	return c.lookupDone(keys, refs, now, found, moved)
}

// lookupDone ends a batch's lookup: an entry relocated during the batch
// may have been missed, so when relocs moved every key not found is
// looked for again, one by one (lookup scans until relocs holds still);
// then the found keys are counted.
func (c *Core) lookupDone(keys []Tuple, refs []Ref, now Time, found int, moved uint64) int {
	t := c.t
	if found < len(keys) && t.relocs.Load() != moved {
		c.st[stSearchRestart]++
		for i := range refs {
			if refs[i] == 0 {
				if refs[i] = t.lookup(&keys[i], now, &c.st[stSearchRestart]); refs[i] != 0 {
					found++
				}
			}
		}
	}
	c.st[stFound] += uint64(found)
	return found
}

// NewFlow describes a connection to insert.
type NewFlow struct {
	Orig, Reply Tuple
	// Status is the initial state and caller flags (CallerFlags).
	Status uint32
	Mark   uint32
	Aux    uint32
	// Proto is the connection's initial protocol state (Config.Proto);
	// nil means zero.
	Proto *[ProtoWords]uint32
}

// InsertResult says how an insert ended.
type InsertResult uint8

const (
	// Inserted: the connection is in the table.
	Inserted InsertResult = iota
	// Exists: a live connection already has the original tuple (in either
	// direction); its Ref is returned.
	Exists
	// ReplyClash: a live connection already has the reply tuple; the
	// caller (the port allocator) tries another.
	ReplyClash
	// Full: the table is at its limit and no unassured connection near the
	// new one could be evicted. Counted as drop and raised as an event.
	Full
	// NoRecord: no free record in this core's chunks nor in the common
	// reserve (records are waiting to be swept or for their grace period).
	// Counted as drop.
	NoRecord
	// IndexFull: both index buckets of a tuple are full. Counted as
	// insert_failed.
	IndexFull
	// BadFlow: the original and reply tuples are equal, or the state is
	// not a connection state.
	BadFlow
)

// Errors matching the insert results, for callers that want errors.
var (
	ErrExists     = errors.New("connection exists")
	ErrReplyClash = errors.New("reply tuple in use")
	ErrFull       = errors.New("table full, dropping packet")
	ErrNoRecord   = errors.New("no free record: records await their sweep or grace period")
	ErrIndexFull  = errors.New("index buckets full")
	ErrBadFlow    = errors.New("bad flow: equal tuples or no state")
)

// Err returns the result as an error; nil for Inserted.
func (r InsertResult) Err() error {
	switch r {
	case Inserted:
		return nil
	case Exists:
		return ErrExists
	case ReplyClash:
		return ErrReplyClash
	case Full:
		return ErrFull
	case NoRecord:
		return ErrNoRecord
	case IndexFull:
		return ErrIndexFull
	}
	return ErrBadFlow
}

func (r InsertResult) String() string {
	if r == Inserted {
		return "inserted"
	}
	return r.Err().Error()
}

// goneQueue is how many self-killed connections a core keeps for its next
// Sweep to report; beyond that, they wait for the sweep cursor.
const goneQueue = 256

// earlyDropRange is how many buckets past each of the new tuple's two
// Insert looks in for a connection to evict.
const earlyDropRange = 2

// Insert adds a connection owned by this core. On Exists it returns the
// live connection that already has the original tuple.
func (c *Core) Insert(nf *NewFlow, now Time) (Ref, InsertResult) {
	return c.insert(nf, now, true)
}

// InsertRetry is Insert for a connection whose original tuple an Insert
// on this core refused a moment ago with ReplyClash, now with another
// reply tuple (the port allocator's next candidate). The original tuple
// was free then, so only the reply tuple is looked for before publishing;
// a connection that has taken the original tuple since is found after
// publishing, as a racing insert on another core is, and reported as
// Exists (counted, as such a race is, under insert_failed and
// search_restart; at the table's limit, room may have been made for the
// refused connection first, as for a racing one).
func (c *Core) InsertRetry(nf *NewFlow, now Time) (Ref, InsertResult) {
	return c.insert(nf, now, false)
}

func (c *Core) insert(nf *NewFlow, now Time, checkOrig bool) (Ref, InsertResult) {
	t := c.t
	if st := StatusState(nf.Status); nf.Orig == nf.Reply || st == StateNone || st >= numStates {
		return 0, BadFlow
	}
	// Each tuple's buckets and tag, found once for every look, link and
	// unlink below.
	po, pr := t.at(&nf.Orig), t.at(&nf.Reply)
	// Cheap checks first: almost every clash is caught here, before
	// anything is published. An expired holder is killed on the way.
	if checkOrig {
		if r := c.holder(&nf.Orig, &po, now); r != 0 {
			return r, Exists
		}
	}
	if r := c.holder(&nf.Reply, &pr, now); r != 0 {
		// The holder may be this very connection, its original tuple's
		// entry missed above while another core relocated it (the looks
		// before publishing may miss one): then it exists.
		if t.recs[r.idx()].orig == nf.Orig {
			return makeRef(r.idx(), DirOrig), Exists
		}
		return 0, ReplyClash
	}
	// The record first, then the count: at the limit, admit may evict a
	// connection, and it must not do so for an insert that then finds no
	// record.
	idx, ok := c.alloc()
	if !ok {
		c.st[stDrop]++
		return 0, NoRecord
	}
	if !c.admit(&nf.Orig, now) {
		c.release(idx)
		return 0, Full
	}
	f := &t.recs[idx]
	f.orig, f.reply = nf.Orig, nf.Reply
	f.mark.Store(nf.Mark)
	f.aux.Store(nf.Aux)
	f.last.Store(uint32(now))
	if t.acct != nil {
		a := &t.acct[idx]
		for d := range 2 {
			a.pkts[d].Store(0)
			a.bytes[d].Store(0)
		}
	}
	if t.proto != nil {
		ps := &t.proto[idx]
		for i := range ps {
			var v uint32
			if nf.Proto != nil {
				v = nf.Proto[i]
			}
			ps[i].Store(v)
		}
	}
	f.status.Store(nf.Status & (stateMask | CallerFlags))

	if !t.link(&po, idx) {
		c.release(idx)
		t.count.Add(-1)
		c.st[stInsertFailed]++
		return 0, IndexFull
	}
	if !t.link(&pr, idx) {
		t.unlink(&po, idx)
		c.withdraw(idx)
		c.st[stInsertFailed]++
		return 0, IndexFull
	}
	// Another core may have inserted the same tuple at the same time. Each
	// inserter publishes, then looks: with sequentially consistent atomics
	// at least one of two racing inserters sees the other, and whoever
	// sees a rival withdraws, so two never both win.
	// holder's looks before publishing may miss an entry being relocated;
	// these may not: when an entry moved while they found nothing, they
	// look again.
	var rivalOrig, rivalReply bool
	for {
		moved := t.relocs.Load()
		rivalOrig = c.rival(&f.orig, &po, idx, now)
		rivalReply = !rivalOrig && c.rival(&f.reply, &pr, idx, now)
		if rivalOrig || rivalReply || t.relocs.Load() == moved {
			break
		}
	}
	if rivalOrig || rivalReply {
		t.unlink(&po, idx)
		t.unlink(&pr, idx)
		c.withdraw(idx)
		c.st[stInsertFailed]++
		if rivalReply {
			return 0, ReplyClash
		}
		c.st[stSearchRestart]++
		if r := t.lookup(&nf.Orig, now, &c.st[stSearchRestart]); r != 0 {
			c.st[stFound]++
			return r, Exists
		}
		return 0, Exists
	}
	f.status.Or(flagConfirmed)
	c.st[stInsert]++
	return makeRef(idx, DirOrig), Inserted
}

// holder returns the live connection holding k (whose place is at),
// killing an expired one found on the way (it is invisible to lookups
// already; killing it lets its slot and port go back).
func (c *Core) holder(k *Tuple, at *probe, now Time) Ref {
	t := c.t
	b1, b2, tag := at.b1, at.b2, at.tag
	// A new connection's tuples are usually absent, so both buckets are
	// read: start both loads now so their misses overlap.
	c.sink += t.buckets[b1][0].Load() + t.buckets[b2][0].Load()
	bs := [2]*bucket{&t.buckets[b1], &t.buckets[b2]}
	var ms [2]uint32
	ms[0], ms[1] = bucketMatch2(bs[0], bs[1], tag, t.idxMask)
	for bi, b := range bs {
		for m := ms[bi]; m != 0; m &= m - 1 {
			v := b[bits.TrailingZeros32(m)&(slotsPerBucket-1)].Load()
			if v&^t.idxMask != tag {
				continue
			}
			idx := v&t.idxMask - 1
			f := &t.recs[idx]
			d, ok := match(f, k)
			if !ok {
				continue
			}
			if c.standing(idx, now) != standLive {
				continue
			}
			return makeRef(idx, d)
		}
	}
	return 0
}

// How a record stands for the insert path (standing).
const (
	standGone        = iota // dying, or expired and killed now
	standLive               // confirmed and not expired
	standUnconfirmed        // published by an insert not yet confirmed
)

// standing tells how record idx stands at now, killing it when it has
// expired: only from the very status found expired (Table.kill), so a
// record that a packet or a shared record's new user changed meanwhile
// is looked at again.
func (c *Core) standing(idx uint32, now Time) int {
	t := c.t
	f := &t.recs[idx]
	for {
		s := f.status.Load()
		switch {
		case s&flagDying != 0:
			return standGone
		case s&flagConfirmed == 0:
			return standUnconfirmed
		case !t.expired(s, Time(f.last.Load()), now):
			return standLive
		case c.killOwn(idx, s, flagTimedOut):
			c.st[stExpired]++
			return standGone
		}
	}
}

// rival reports whether a record other than idx, not dying, holds k
// (whose place is at).
func (c *Core) rival(k *Tuple, at *probe, idx uint32, now Time) bool {
	t := c.t
	b1, b2, tag := at.b1, at.b2, at.tag
	bs := [2]*bucket{&t.buckets[b1], &t.buckets[b2]}
	var ms [2]uint32
	ms[0], ms[1] = bucketMatch2(bs[0], bs[1], tag, t.idxMask)
	for bi, b := range bs {
		for m := ms[bi]; m != 0; m &= m - 1 {
			v := b[bits.TrailingZeros32(m)&(slotsPerBucket-1)].Load()
			if v&^t.idxMask != tag || v&t.idxMask-1 == idx {
				continue
			}
			o := v&t.idxMask - 1
			f := &t.recs[o]
			if _, ok := match(f, k); !ok {
				continue
			}
			if st := c.standing(o, now); st == standLive || st == standUnconfirmed {
				return true
			}
		}
	}
	return false
}

// admit counts a new connection against the limit. At the limit it makes
// room near the new tuple: first by killing a connection there that has
// already expired (only nobody has swept it yet), then by evicting one
// that is not ASSURED.
func (c *Core) admit(orig *Tuple, now Time) bool {
	t := c.t
	if t.count.Add(1) <= t.max.Load() {
		return true
	}
	switch c.makeRoom(orig, now) {
	case roomExpired:
		c.st[stExpired]++
		return true
	case roomEvicted:
		c.st[stEarlyDrop]++
		return true
	}
	t.count.Add(-1)
	c.st[stDrop]++
	t.raiseFull(now)
	return false
}

type room uint8

const (
	roomNone room = iota
	roomExpired
	roomEvicted
)

// makeRoom kills one connection in the buckets around the new tuple's, as
// Linux's early_drop looks near the new connection's hash: an expired one
// if there is any, else one that is not ASSURED; failing that, anywhere
// (evictScan). ASSURED connections are never evicted.
func (c *Core) makeRoom(orig *Tuple, now Time) room {
	t := c.t
	b1, b2, _ := t.place(t.h.hash(orig))
	victim, victimStatus := ^uint32(0), uint32(0)
	for _, start := range [2]uint64{b1, b2} {
		for j := uint64(0); j <= earlyDropRange; j++ {
			b := &t.buckets[(start+j)%t.nb]
			for i := range b {
				v := b[i].Load()
				if v == 0 {
					continue
				}
				idx := v&t.idxMask - 1
				f := &t.recs[idx]
				s := f.status.Load()
				if s&(flagConfirmed|flagDying) != flagConfirmed {
					continue
				}
				if t.expired(s, Time(f.last.Load()), now) {
					if c.killOwn(idx, s, flagTimedOut) {
						return roomExpired
					}
					continue
				}
				if s&FlagAssured == 0 && victim == ^uint32(0) {
					victim, victimStatus = idx, s
				}
			}
		}
	}
	if victim != ^uint32(0) && c.killOwn(victim, victimStatus, 0) {
		return roomEvicted
	}
	return c.evictScan(now)
}

// evictScanBudget bounds the fallback search for a victim.
const evictScanBudget = 256

// evictScan is the fallback when nothing near the new tuple can go: when
// the limit is far below the capacity the buckets are sparse, and Linux's
// neighbourhood-only search would refuse the connection although
// unassured ones fill the table. It walks the records of every core's
// chunks from where its last walk stopped, at most evictScanBudget of them, for
// an expired or an unassured connection.
func (c *Core) evictScan(now Time) room {
	t := c.t
	n := uint32(len(t.recs))
	i := c.evictCursor % n
	for budget := evictScanBudget; budget > 0; budget-- {
		if t.chunks[i>>chunkShift].owner.Load() == 0 {
			// Skip a chunk in the common reserve: all its records are free.
			i = ((i | (chunkSize - 1)) + 1) % n
			continue
		}
		idx := i
		i = (i + 1) % n
		f := &t.recs[idx]
		s := f.status.Load()
		if s&(flagConfirmed|flagDying) != flagConfirmed {
			continue
		}
		if t.expired(s, Time(f.last.Load()), now) {
			if c.killOwn(idx, s, flagTimedOut) {
				c.evictCursor = i
				return roomExpired
			}
			continue
		}
		if s&FlagAssured == 0 && c.killOwn(idx, s, 0) {
			c.evictCursor = i
			return roomEvicted
		}
	}
	c.evictCursor = i
	return roomNone
}

// alloc takes a record from this core's chunks, or a chunk from the
// common reserve when they have no free record and its limbo has room.
func (c *Core) alloc() (uint32, bool) {
	t := c.t
	ch := c.avail
	if ch == 0 {
		// A full limbo means the grace period is held up (a participant
		// stalled in a critical section): while it is, this core's dead
		// records pile up in its own chunks, and it takes no more from
		// the reserve, which stays for the other cores.
		if c.limboCount == len(c.limbo) {
			c.reclaim() // may free records of this core's chunks
			if ch = c.avail; ch == 0 && c.limboCount == len(c.limbo) {
				return 0, false
			}
		}
		if ch == 0 {
			if ch = c.take(); ch == 0 {
				return 0, false
			}
		}
	}
	k := t.meta(ch)
	var idx uint32
	if k.free != 0 {
		idx = k.free - 1
		k.free = t.recs[idx].aux.Load()
	} else {
		idx = (ch-1)<<chunkShift + uint32(k.fill)
		k.fill++
	}
	k.used++
	if k.used == chunkRecs {
		c.unlinkAvail(ch)
	}
	return idx, true
}

// release puts a record that no other core can have seen (never
// published, or past its grace period) on its chunk's free list. A chunk
// left with no record in use goes back to the common reserve, unless it
// is the only one this core has free records in.
func (c *Core) release(idx uint32) {
	t := c.t
	f := &t.recs[idx]
	f.status.Store(0)
	ch := idx>>chunkShift + 1
	k := t.meta(ch)
	f.aux.Store(k.free)
	k.free = idx + 1
	if k.used == chunkRecs {
		c.pushAvail(ch)
	}
	k.used--
	if k.used == 0 && (c.avail != ch || k.availNext != 0) {
		c.giveBack(ch)
	}
}

// withdraw abandons a record that was published but never confirmed:
// other cores may have read it, so it goes through limbo.
func (c *Core) withdraw(idx uint32) {
	f := &c.t.recs[idx]
	f.status.Or(flagDying)
	c.t.count.Add(-1)
	if c.retire(idx) {
		f.status.Or(flagRetired)
	}
}

// retire puts a dying, unlinked record in limbo. It reports false when
// limbo is full; the sweep retries later.
func (c *Core) retire(idx uint32) bool {
	if c.limboCount == len(c.limbo) {
		c.reclaim()
		if c.limboCount == len(c.limbo) {
			return false
		}
	}
	i := (c.limboHead + c.limboCount) % len(c.limbo)
	c.limbo[i] = limboEntry{idx: idx, epoch: uint32(c.t.ep.global.Load())}
	c.limboCount++
	return true
}

// reclaim frees the records in limbo whose grace period has passed: two
// epoch advances after their retirement, every participant has been
// outside a critical section at least once, so none can still hold them.
func (c *Core) reclaim() {
	if c.limboCount == 0 {
		return
	}
	g := uint32(c.t.ep.global.Load())
	if int32(g-c.limbo[c.limboHead].epoch) < 2 {
		g = uint32(c.t.ep.tryAdvance())
	}
	for c.limboCount > 0 {
		e := c.limbo[c.limboHead]
		if int32(g-e.epoch) < 2 {
			return
		}
		c.release(e.idx)
		c.limboHead = (c.limboHead + 1) % len(c.limbo)
		c.limboCount--
	}
}

// killOwn kills record idx (from status from, as Table.kill does) for a
// packet path of this core; when this core owns it, it is retired at
// once and its report queued, so it need not wait for the sweep cursor
// to come round.
func (c *Core) killOwn(idx, from, why uint32) bool {
	t := c.t
	if !t.kill(idx, from, why) {
		return false
	}
	if c.goneCount == len(c.gone) || !c.owns(idx) {
		return true
	}
	f := &t.recs[idx]
	s := f.status.Load()
	if !c.retire(idx) {
		return true
	}
	f.status.Or(flagRetired)
	reason := ReasonKilled
	if why&flagTimedOut != 0 {
		reason = ReasonTimeout
	}
	c.gone[(c.goneHead+c.goneCount)%len(c.gone)] = Gone{Orig: f.orig, Reply: f.reply, Status: s, Mark: f.mark.Load(), Aux: f.aux.Load(), Reason: reason}
	c.goneCount++
	return true
}

// Kill ends a connection now: it disappears from lookups at once, and its
// owner's sweep reports it and frees its record. It returns false if the
// connection was already gone.
func (c *Core) Kill(r Ref) bool {
	if c.killOwn(r.idx(), 0, 0) {
		c.st[stDeleted]++
		return true
	}
	return false
}

// Reason says why a connection left the table.
type Reason uint8

const (
	ReasonTimeout Reason = iota // expired (whoever noticed)
	ReasonKilled                // deleted, evicted, or flushed
)

// Gone describes a connection that has left the table, as the owner's
// sweep reports it: enough to give back its NAT port.
type Gone struct {
	Orig, Reply Tuple
	Status      uint32
	Mark, Aux   uint32
	Reason      Reason
}

// Sweep examines up to budget of this core's records from where the last
// sweep stopped: it expires connections past their timeout, retires
// killed ones, and reports each connection that left into out. It returns
// how many it reported; it stops early when out is full. Call it between
// Enter and Exit.
func (c *Core) Sweep(now Time, budget int, out []Gone) int {
	t := c.t
	n := 0
	for ; c.goneCount > 0 && n < len(out); n++ {
		out[n] = c.gone[c.goneHead]
		c.goneHead = (c.goneHead + 1) % len(c.gone)
		c.goneCount--
	}
	c.reclaim()
	for ; budget > 0 && n < len(out) && c.held != 0; budget-- {
		if c.cursor == 0 {
			c.cursor, c.cursorOff = c.held, 1
		}
		k := t.meta(c.cursor)
		if c.cursorOff >= uint32(k.fill) {
			c.cursor, c.cursorOff = k.heldNext, 1
			continue
		}
		idx := (c.cursor-1)<<chunkShift + c.cursorOff
		f := &t.recs[idx]
		s := f.status.Load()
		if s == 0 || s&flagRetired != 0 {
			c.cursorOff++
			continue
		}
		if s&flagDying == 0 {
			if s&flagConfirmed == 0 || !t.expired(s, Time(f.last.Load()), now) {
				c.cursorOff++
				continue
			}
			// Killed only from the status it was found expired with: a
			// packet that changed it meanwhile (a state change, a shared
			// record's new user) keeps it for the next look.
			if !t.kill(idx, s, flagTimedOut) {
				c.cursorOff++
				continue
			}
			c.st[stExpired]++
			s = f.status.Load()
		}
		reason := ReasonKilled
		if s&flagTimedOut != 0 {
			reason = ReasonTimeout
		}
		if !c.retire(idx) {
			return n // limbo full: try again after the next grace period
		}
		f.status.Or(flagRetired)
		c.cursorOff++
		if s&flagConfirmed != 0 {
			out[n] = Gone{Orig: f.orig, Reply: f.reply, Status: s, Mark: f.mark.Load(), Aux: f.aux.Load(), Reason: reason}
			n++
		}
	}
	return n
}
