package flowtable

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"xnat/internal/prefault"
)

// Config sizes a table.
type Config struct {
	// Capacity is the number of connections the table can ever hold; it
	// sizes all memory at creation. Cores take records in chunks from one
	// common reserve, so any core may hold up to all of them.
	Capacity int
	// Max is the initial run-time limit (nf_conntrack_max), at most
	// Capacity; 0 means Capacity.
	Max int
	// Cores is the number of worker cores, each with its own Core handle.
	Cores int
	// Acct enables per-direction packet and byte counters
	// (nf_conntrack_acct); they cost 32 bytes per connection.
	Acct bool
	// Proto keeps ProtoWords words of protocol state per connection for
	// the caller, in a parallel array (the dataplane's TCP window
	// tracking); they cost 64 bytes per connection.
	Proto bool
	// Limbo is how many retired records each core may hold waiting for
	// the grace period; 0 means an eighth of Capacity/Cores, from 256 to
	// 4096. Cores·Limbo records are added to the table, so they do not eat
	// into Capacity.
	Limbo int
	// Seed fixes the hash secret (tests); 0 draws it from crypto/rand.
	Seed uint64
	// Start is the table's time zero (Now, Start); zero means the time of
	// New. Tables whose callers pass one time to both share it.
	Start time.Time
}

// Limits of the geometry.
const (
	slotsPerBucket = 16
	// indexLoad is the share of index slots in use when the table holds
	// Capacity connections (two slots each), and firstChoice how full a
	// tuple's first bucket may be before it goes to the emptier of its
	// two. Together they keep 90% of tuples in their first bucket, so most
	// lookups read one bucket. Rarely, both buckets of a new tuple are
	// full (one insert in 400 million: 40 tables of a million connections
	// under different hash keys, each churned by 10 million inserts;
	// BenchmarkChurnAtCapacity); relocate then moves one entry to its
	// other bucket.
	indexLoad   = 0.75
	firstChoice = 12
	minTagBits  = 4
)

// Errors from New.
var ErrConfig = errors.New("invalid flow table config")

// Dir is the direction of a packet relative to its connection.
type Dir uint8

const (
	DirOrig  Dir = 0 // the direction of the connection's first packet
	DirReply Dir = 1
)

func (d Dir) String() string {
	if d == DirReply {
		return "reply"
	}
	return "original"
}

// Ref names a connection and a direction: what a lookup returns. The zero
// Ref is "not found". Refs are pointer-free so batches of them cost the
// garbage collector nothing; a Ref is valid only inside the critical
// section (Core.Enter … Core.Exit) that produced it.
type Ref uint32

func makeRef(idx uint32, d Dir) Ref { return Ref((idx+1)<<1 | uint32(d)) }

func (r Ref) idx() uint32 { return uint32(r>>1) - 1 }

// Dir returns the direction the Ref was found in.
func (r Ref) Dir() Dir { return Dir(r & 1) }

// Flow is one connection record: 48 bytes, both tuples, status, times.
// The tuples never change while the record is live; the other fields are
// atomics because any core may touch a connection.
type Flow struct {
	orig, reply Tuple
	status      atomic.Uint32 // state | flags; see state.go
	last        atomic.Uint32 // Time of the last packet
	mark        atomic.Uint32 // ctmark
	aux         atomic.Uint32 // the caller's (free-list link while free)
}

// Orig returns the original-direction tuple.
func (f *Flow) Orig() Tuple { return f.orig }

// Reply returns the reply-direction tuple (after NAT).
func (f *Flow) Reply() Tuple { return f.reply }

// Tuple returns the tuple of direction d.
func (f *Flow) Tuple(d Dir) Tuple {
	if d == DirReply {
		return f.reply
	}
	return f.orig
}

// TuplePtr returns the tuple of direction d in place, without copying it.
// The tuples never change while the record is live: the pointer is good
// for as long as the Ref it came through, inside one critical section,
// and must not be written through.
func (f *Flow) TuplePtr(d Dir) *Tuple {
	return f.tupleAt(d)
}

// Status returns the status word: State in the low bits, then flags.
func (f *Flow) Status() uint32 { return f.status.Load() }

// State returns the protocol state.
func (f *Flow) State() State { return StatusState(f.status.Load()) }

// UpdateStatus replaces the status word if it still equals old, keeping
// the table's internal bits as they are now; only CallerFlags and the
// state may change. It reports whether the update happened; on false the
// caller re-reads and retries.
func (f *Flow) UpdateStatus(old, new uint32) bool {
	const internal = flagConfirmed | flagDying | flagRetired | flagTimedOut
	new = new&(stateMask|CallerFlags) | old&internal
	return f.status.CompareAndSwap(old, new)
}

// Touch records a packet at now: the last-seen time, from which the
// timeout runs.
func (f *Flow) Touch(now Time) {
	if Time(f.last.Load()) != now {
		f.last.Store(uint32(now))
	}
}

// LastSeen returns the time of the last packet.
func (f *Flow) LastSeen() Time { return Time(f.last.Load()) }

// Mark returns the connection mark.
func (f *Flow) Mark() uint32 { return f.mark.Load() }

// SetMark sets the connection mark.
func (f *Flow) SetMark(m uint32) { f.mark.Store(m) }

// Aux returns the caller's word.
func (f *Flow) Aux() uint32 { return f.aux.Load() }

// SetAux sets the caller's word.
func (f *Flow) SetAux(v uint32) { f.aux.Store(v) }

type bucket [slotsPerBucket]atomic.Uint32

// Counter is a packet and byte count.
type Counter struct {
	Packets, Bytes uint64
}

type acctEntry struct {
	pkts, bytes [2]atomic.Uint64
}

// ProtoWords is the size in 32-bit words of a connection's protocol
// state (Config.Proto): one cache line.
const ProtoWords = 16

// ProtoState is a connection's protocol state, kept for the caller: any
// core may load and store its words, as it may the caller word. Insert
// sets it from NewFlow.Proto (zero without) before the connection can be
// found.
type ProtoState [ProtoWords]atomic.Uint32

// Table is the connection table shared by all cores. Its methods are safe
// for concurrent use; each worker core works through its own Core.
type Table struct {
	h        hasher
	buckets  []bucket
	recs     []Flow
	acct     []acctEntry
	proto    []ProtoState
	nb       uint64 // number of buckets
	idxBits  uint32
	idxMask  uint32
	chunks   []chunk // per chunk of records: its owner and reserve link
	capacity int
	timeouts timeouts
	toMu     sync.Mutex // serialises timeout changes; guards toSet
	toSet    timeoutSet
	ep       *epochs
	cores    []*Core
	start    time.Time
	// threePass makes LookupBatch take its passes at any size, not the
	// one-pass lookup of a table in the caches: for tests of both.
	threePass bool

	_     [cacheLine]byte
	count atomic.Int64 // live connections: admitted and not yet killed
	_     [cacheLine - 8]byte
	max   atomic.Int64
	_     [cacheLine - 8]byte
	// relocs counts index relocations (relocate): a scan of a tuple's two
	// buckets that finds nothing reads it before and after, and scans
	// again if it moved, since an entry may have gone from the bucket not
	// yet read to the one already read. Written only when both of a new
	// tuple's buckets are full, so its line is all but read-only.
	relocs atomic.Uint64
	// relocating is 1 while a relocation is under way: one at a time, so
	// that two movers never copy one entry at once.
	relocating atomic.Uint32
	_          [cacheLine - 12]byte
	// pool is the common reserve: the chunks of records no core holds.
	pool chunkPool

	fullLast   atomic.Uint32 // Time of the last table-full event
	fullEvents atomic.Uint64 // rate-limited table-full events raised

	ctlMu   sync.Mutex // serialises the control plane's participant slot
	ctlCore *Core      // the control plane's handle (participant Cores)
}

// New allocates a table.
func New(cfg Config) (*Table, error) {
	if cfg.Cores < 1 || cfg.Cores > 255 {
		return nil, fmt.Errorf("%w: cores=%d (1 to 255)", ErrConfig, cfg.Cores)
	}
	if cfg.Capacity < 1 {
		return nil, fmt.Errorf("%w: capacity=%d", ErrConfig, cfg.Capacity)
	}
	if cfg.Max == 0 {
		cfg.Max = cfg.Capacity
	}
	if cfg.Max < 1 || cfg.Max > cfg.Capacity {
		return nil, fmt.Errorf("%w: max=%d (1 to capacity %d)", ErrConfig, cfg.Max, cfg.Capacity)
	}
	if cfg.Limbo == 0 {
		cfg.Limbo = min(max(cfg.Capacity/cfg.Cores/8, 256), 4096)
	}
	if cfg.Limbo < 16 {
		return nil, fmt.Errorf("%w: limbo=%d (at least 16)", ErrConfig, cfg.Limbo)
	}
	// Capacity, plus Limbo records a core for records waiting out their
	// grace period, in whole chunks (each with one record of bookkeeping):
	// the records any core takes its chunks from.
	nchunks := (uint64(cfg.Capacity) + uint64(cfg.Limbo)*uint64(cfg.Cores) + chunkRecs - 1) / chunkRecs
	nrec := nchunks * chunkSize
	idxBits := uint32(bits.Len64(nrec))
	if idxBits > 32-minTagBits {
		return nil, fmt.Errorf("%w: capacity=%d is too large (at most %d)", ErrConfig, cfg.Capacity, (1<<(32-minTagBits)-1)/chunkSize*chunkRecs-cfg.Limbo*cfg.Cores)
	}
	nb := uint64(float64(2*cfg.Capacity)/(slotsPerBucket*indexLoad)) + 1
	if nb < 2 {
		nb = 2
	}
	t := &Table{
		buckets:  make([]bucket, nb),
		recs:     make([]Flow, nrec),
		nb:       nb,
		idxBits:  idxBits,
		idxMask:  1<<idxBits - 1,
		chunks:   make([]chunk, nchunks),
		capacity: cfg.Capacity,
		ep:       newEpochs(cfg.Cores + 1),
		start:    cfg.Start,
	}
	if t.start.IsZero() {
		t.start = time.Now()
	}
	if cfg.Acct {
		t.acct = make([]acctEntry, nrec)
	}
	if cfg.Proto {
		t.proto = make([]ProtoState, nrec)
	}
	hugePages(t.buckets)
	hugePages(t.recs)
	hugePages(t.acct)
	// Backed now, not at each insert into a fresh page: the kernel's page
	// clearing was a fifth of BenchmarkNewConnections' profile.
	prefault.Slice(t.buckets)
	prefault.Slice(t.recs)
	prefault.Slice(t.acct)
	hugePages(t.proto)
	prefault.Slice(t.proto)
	var seed [32]byte
	if cfg.Seed != 0 {
		for i := range 4 {
			binary.LittleEndian.PutUint64(seed[8*i:], cfg.Seed*0x9E3779B97F4A7C15+uint64(i)*0xBF58476D1CE4E5B9)
		}
	} else if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("flow table hash secret: %w", err)
	}
	t.h = hasher{
		s0: binary.LittleEndian.Uint64(seed[0:]) | 1,
		s1: binary.LittleEndian.Uint64(seed[8:]) | 1,
		s2: binary.LittleEndian.Uint64(seed[16:]),
		s3: binary.LittleEndian.Uint64(seed[24:]),
	}
	t.toSet.defaults()
	t.timeouts.publish(&t.toSet)
	t.max.Store(int64(cfg.Max))
	// Every chunk starts in the common reserve; lowest first, so a small
	// load stays in the first records.
	for i := len(t.chunks) - 1; i >= 0; i-- {
		t.pool.push(t.chunks, uint32(i))
	}
	t.cores = make([]*Core, cfg.Cores)
	for i := range t.cores {
		t.cores[i] = newCore(t, i, cfg.Limbo)
	}
	// The control plane is one more participant with a handle that holds
	// no records: it looks up, lists and kills, never inserts.
	t.ctlCore = newCore(t, cfg.Cores, 0)
	return t, nil
}

// Core returns core i's handle. Exactly one goroutine may use it.
func (t *Table) Core(i int) *Core { return t.cores[i] }

// Cores returns the number of worker cores.
func (t *Table) Cores() int { return len(t.cores) }

// RecordsPerCore is the most records one core may own at once: all of
// them (Capacity connections and the records awaiting their grace
// period), as every core takes its records from one common reserve.
func (t *Table) RecordsPerCore() int { return len(t.chunks) * chunkRecs }

// Capacity returns the capacity the table was built with.
func (t *Table) Capacity() int { return t.capacity }

// Max returns the run-time limit.
func (t *Table) Max() int { return int(t.max.Load()) }

// ErrBadMax is returned by SetMax for a limit out of range.
var ErrBadMax = errors.New("limit out of range")

// SetMax changes the run-time limit (nf_conntrack_max). Lowering it below
// the current count evicts nothing: new connections are refused until the
// count falls below the limit, as in Linux.
func (t *Table) SetMax(n int) error {
	if n < 1 || n > t.capacity {
		return fmt.Errorf("%w: %d (1 to capacity %d)", ErrBadMax, n, t.capacity)
	}
	t.max.Store(int64(n))
	return nil
}

// Count returns the number of live connections.
func (t *Table) Count() int { return int(t.count.Load()) }

// Now returns the table's clock.
func (t *Table) Now() Time { return Time(time.Since(t.start) / Tick) }

// Start returns the instant the table's clock counts from: a caller that
// reads the time since Start anyway converts it with TimeAt rather than
// read the clock twice.
func (t *Table) Start() time.Time { return t.start }

// TimeAt is the table's clock el after Start.
func TimeAt(el time.Duration) Time { return Time(el / Tick) }

// Flow returns the record a Ref names. Valid inside the critical section
// in which the Ref was obtained.
func (t *Table) Flow(r Ref) *Flow { return &t.recs[r.idx()] }

// Owner returns the core that owns (created, and expires) a connection.
func (t *Table) Owner(r Ref) int { return t.owner(r.idx()) }

// owner returns the core that owns record idx, or -1 if it is in the
// common reserve.
func (t *Table) owner(idx uint32) int { return int(t.chunks[idx>>chunkShift].owner.Load()) - 1 }

// HasProto reports whether the table keeps protocol state (Config.Proto).
func (t *Table) HasProto() bool { return t.proto != nil }

// Proto returns the connection's protocol state, or nil when the table
// keeps none. Valid inside the critical section in which the Ref was
// obtained.
func (t *Table) Proto(r Ref) *ProtoState {
	if t.proto == nil {
		return nil
	}
	return &t.proto[r.idx()]
}

// Account adds one packet of n bytes in direction r.Dir() to the
// connection's counters, when the table keeps them.
func (t *Table) Account(r Ref, n int) {
	if t.acct == nil {
		return
	}
	a := &t.acct[r.idx()]
	d := r.Dir()
	a.pkts[d].Add(1)
	a.bytes[d].Add(uint64(n))
}

// Counters returns the connection's per-direction counters (zero when
// accounting is off).
func (t *Table) Counters(r Ref) [2]Counter {
	var c [2]Counter
	if t.acct == nil {
		return c
	}
	a := &t.acct[r.idx()]
	for d := range 2 {
		c[d] = Counter{a.pkts[d].Load(), a.bytes[d].Load()}
	}
	return c
}

// place maps a hash to its two buckets and its tag.
func (t *Table) place(h uint64) (b1, b2 uint64, tag uint32) {
	b1 = uint64(uint32(h)) * t.nb >> 32
	b2 = uint64(uint32(h>>32)) * t.nb >> 32
	if b2 == b1 {
		b2++
		if b2 == t.nb {
			b2 = 0
		}
	}
	// The tag: a second mix of h, its bits above the index's (a mask, not
	// shifts by a variable count, which cost a compare each in Go).
	tag = uint32((h*0x9E3779B97F4A7C15)>>32) &^ t.idxMask
	if tag == 0 {
		tag = t.idxMask + 1 // never zero, so an empty slot never matches
	}
	return
}

// slotValue is a slot holding record idx under a tag from place (the tag
// already shifted into the high bits).
func slotValue(tag, idx uint32) uint32 { return tag | (idx + 1) }

// expired reports whether a record with status s, last seen at last, is
// past its timeout at now.
func (t *Table) expired(s uint32, last, now Time) bool {
	d, ok := since(now, last)
	return ok && uint32(d) > t.timeouts[timeoutIndex(s)].Load()
}

// liveAt reports whether f is confirmed, not dying and not expired.
func (t *Table) liveAt(f *Flow, now Time) bool {
	s := f.status.Load()
	return s&(flagConfirmed|flagDying) == flagConfirmed && !t.expired(s, Time(f.last.Load()), now)
}

// match compares k with both tuples of f.
func match(f *Flow, k *Tuple) (Dir, bool) {
	if f.orig.equal(k) {
		return DirOrig, true
	}
	if f.reply.equal(k) {
		return DirReply, true
	}
	return 0, false
}

// scanBoth is scan over a tuple's first bucket, then its second.
func (t *Table) scanBoth(b1, b2 uint64, tag uint32, k *Tuple, now Time) Ref {
	if r := t.scan(&t.buckets[b1], tag, k, now); r != 0 {
		return r
	}
	return t.scan(&t.buckets[b2], tag, k, now)
}

// scan looks for a live record under k in one bucket.
func (t *Table) scan(b *bucket, tag uint32, k *Tuple, now Time) Ref {
	mask := t.idxMask
	for i := range b {
		v := b[i].Load()
		if v&^mask != tag {
			continue
		}
		idx := v&mask - 1
		f := &t.recs[idx]
		if d, ok := match(f, k); ok && t.liveAt(f, now) {
			return makeRef(idx, d)
		}
	}
	return 0
}

// lookup finds the live record holding k. A scan that found nothing while
// an entry was relocated is done again, and counted in *restarts.
func (t *Table) lookup(k *Tuple, now Time, restarts *uint64) Ref {
	// The assembly answers most lookups; an absent answer stands only if
	// no entry moved meanwhile.
	moved := t.relocs.Load()
	if r, sure := t.lookupOne(k, now); sure && (r != 0 || t.relocs.Load() == moved) {
		return r
	}
	b1, b2, tag := t.place(t.h.hash(k))
	for ; ; *restarts++ {
		moved := t.relocs.Load()
		if r := t.scanBoth(b1, b2, tag, k, now); r != 0 {
			return r
		}
		if t.relocs.Load() == moved {
			return 0
		}
	}
}

// at is a tuple's place in the index: its two buckets and its tag (a
// probe's first three fields).
func (t *Table) at(k *Tuple) probe {
	var p probe
	p.b1, p.b2, p.tag = t.place(t.h.hash(k))
	return p
}

// claimFree stores v in a free slot of b, as the match free saw them,
// taken by CAS, so one filled meanwhile is passed over; when every one of
// them was taken meanwhile, it matches the bucket again.
func claimFree(b *bucket, v, free uint32) bool {
	for m := free; m != 0; m &= m - 1 {
		if b[bits.TrailingZeros32(m)&(slotsPerBucket-1)].CompareAndSwap(0, v) {
			return true
		}
	}
	if free == 0 {
		return false
	}
	for m := bucketMatch(b, 0, 0); m != 0; m &= m - 1 {
		if b[bits.TrailingZeros32(m)&(slotsPerBucket-1)].CompareAndSwap(0, v) {
			return true
		}
	}
	return false
}

// link publishes record idx under the tuple whose place is at: in its
// first bucket while that holds fewer than firstChoice, else in the
// emptier of its two. One match reads both buckets' free slots.
func (t *Table) link(at *probe, idx uint32) bool {
	v := slotValue(at.tag, idx)
	p, q := &t.buckets[at.b1], &t.buckets[at.b2]
	fp, fq := bucketMatch2(p, q, 0, 0)
	if slotsPerBucket-bits.OnesCount32(fp) >= firstChoice && bits.OnesCount32(fq) > bits.OnesCount32(fp) {
		p, q, fp, fq = q, p, fq, fp
	}
	return claimFree(p, v, fp) || claimFree(q, v, fq) ||
		t.relocate(at.b1, v) || t.relocate(at.b2, v)
}

// relocate makes room for v in bucket bi, which was full: it moves one of
// the bucket's entries to that entry's other bucket (one cuckoo step) and
// puts v in the freed slot. The entry is copied first, then the counter
// relocs is raised, then the entry's old slot is given v by CAS; so the
// entry is in the index throughout, and a scan that read the buckets in
// the wrong order around the move sees relocs change and scans again.
// Should the entry leave the old slot meanwhile (its killer unlinked it),
// the CAS fails and the copy is taken back, so a killer's one unlink
// leaves no copy behind. One relocation runs at a time; an insert that
// finds another under way does not wait for it but fails (IndexFull).
func (t *Table) relocate(bi uint64, v uint32) bool {
	if !t.relocating.CompareAndSwap(0, 1) {
		return false
	}
	defer t.relocating.Store(0)
	b := &t.buckets[bi]
	mask := t.idxMask
	for i := range b {
		w := b[i].Load()
		if w == 0 {
			if b[i].CompareAndSwap(0, v) {
				return true
			}
			continue
		}
		f := &t.recs[w&mask-1]
		if f.status.Load()&flagDying != 0 {
			continue // its killer is unlinking it
		}
		alt, ok := t.otherBucket(f, w, bi)
		if !ok {
			continue
		}
		a := &t.buckets[alt]
		for m := bucketMatch(a, 0, 0); m != 0; m &= m - 1 {
			j := bits.TrailingZeros32(m) & (slotsPerBucket - 1)
			if !a[j].CompareAndSwap(0, w) {
				continue
			}
			t.relocs.Add(1)
			if b[i].CompareAndSwap(w, v) {
				return true
			}
			a[j].CompareAndSwap(w, 0)
			break
		}
	}
	return false
}

// otherBucket returns the other bucket of the tuple of f that slot value w
// in bucket bi stands for. It reports false when both of f's tuples could
// own the slot (same tag, both placed in bi): moving it could then leave
// one tuple's unlink looking in the wrong bucket.
func (t *Table) otherBucket(f *Flow, w uint32, bi uint64) (uint64, bool) {
	tag := w &^ t.idxMask
	var alt uint64
	n := 0
	for _, k := range [2]*Tuple{&f.orig, &f.reply} {
		p := t.at(k)
		switch {
		case p.tag != tag:
		case p.b1 == bi:
			alt, n = p.b2, n+1
		case p.b2 == bi:
			alt, n = p.b1, n+1
		}
	}
	return alt, n == 1
}

// unlink removes record idx's entry under the tuple whose place is at.
// Only the one who set the record's dying bit (or an inserter
// withdrawing) unlinks, so the slot value cannot be reused meanwhile.
func (t *Table) unlink(at *probe, idx uint32) bool {
	v := slotValue(at.tag, idx)
	p, q := &t.buckets[at.b1], &t.buckets[at.b2]
	for {
		moved := t.relocs.Load()
		mp, mq := bucketMatch2(p, q, v, 0)
		for _, bm := range [2]struct {
			b *bucket
			m uint32
		}{{p, mp}, {q, mq}} {
			for m := bm.m; m != 0; m &= m - 1 {
				if bm.b[bits.TrailingZeros32(m)&(slotsPerBucket-1)].CompareAndSwap(v, 0) {
					return true
				}
			}
		}
		if t.relocs.Load() == moved {
			return false
		}
	}
}

// kill marks a confirmed live record dying (with flagTimedOut when why
// says it expired), unlinks it and uncounts it. from is the status the
// caller found the record in and decided on (expired, or unassured for
// an eviction): the record is killed only from that very word, so a
// packet, a state change or a shared record's new user (AddUser) that
// changed it meanwhile keeps it. from 0 kills from whatever status the
// record has (a delete). It reports false when the record is not
// confirmed, is dying already, or changed from from.
func (t *Table) kill(idx, from, why uint32) bool {
	f := &t.recs[idx]
	for {
		s := f.status.Load()
		if s&(flagConfirmed|flagDying) != flagConfirmed || from != 0 && s != from {
			return false
		}
		if f.status.CompareAndSwap(s, s|flagDying|why) {
			break
		}
	}
	t.unlinkDead(idx)
	return true
}

// unlinkDead unlinks both tuples of a record whose dying bit the caller
// set, and uncounts it.
func (t *Table) unlinkDead(idx uint32) {
	f := &t.recs[idx]
	po, pr := t.at(&f.orig), t.at(&f.reply)
	t.unlink(&po, idx)
	t.unlink(&pr, idx)
	t.count.Add(-1)
}

// raiseFull records a table-full drop: at most one event per second.
func (t *Table) raiseFull(now Time) {
	last := t.fullLast.Load()
	if t.fullEvents.Load() != 0 {
		if d, ok := since(now, Time(last)); ok && d < Ticks(time.Second) {
			return
		}
	}
	if t.fullLast.CompareAndSwap(last, uint32(now)) {
		t.fullEvents.Add(1)
	}
}

// FullEvents returns how many rate-limited "table full, dropping packet"
// events have been raised (at most one a second) and when the last one was.
// The control plane polls it and reads the drop counters for the count.
func (t *Table) FullEvents() (n uint64, last Time) {
	return t.fullEvents.Load(), Time(t.fullLast.Load())
}
