package dataplane

import (
	"sync/atomic"

	"xnat/flowtable"
)

// SyncKind says what happened to a connection, for state sync.
type SyncKind uint8

// The events a core reports when sync is on: a connection was created,
// changed state or flags (SEEN_REPLY, ASSURED, a TCP state; not every
// packet), or left the table (expired, killed or evicted).
const (
	SyncNew SyncKind = iota + 1
	SyncUpdate
	SyncDestroy
)

// SyncEvent is one connection event: a copy of the connection as it was
// then, so the reader never touches a record the table may have reused.
type SyncEvent struct {
	Orig, Reply  flowtable.Tuple
	Status, Mark uint32
	Kind         SyncKind
}

// syncRing is each core's event ring size: enough for the new connections
// of many batches between two reads of the sync goroutine.
const syncRing = 1 << 14

// syncQueue is one core's single-producer single-consumer ring of
// events: the core writes, one sync goroutine reads. When it is full the
// event is dropped and counted; the reader then sends the whole table.
type syncQueue struct {
	head  atomic.Uint32 // next to read, written by the reader
	_     [60]byte
	tail  atomic.Uint32 // next to write, written by the core
	drops atomic.Uint64
	ev    [syncRing]SyncEvent
}

func (q *syncQueue) push(kind SyncKind, orig, reply *flowtable.Tuple, status, mark uint32) {
	t := q.tail.Load()
	if t-q.head.Load() == syncRing {
		q.drops.Add(1)
		return
	}
	e := &q.ev[t%syncRing]
	e.Orig, e.Reply, e.Status, e.Mark, e.Kind = *orig, *reply, status, mark, kind
	q.tail.Store(t + 1)
}

// EnableSync makes every core report connection events (SyncEvent) from
// its next batch on, for DrainSync to read. Events cost a copy per new,
// changed or gone connection; the established path does not report.
func (d *Dataplane) EnableSync() {
	for _, p := range d.pipes {
		if p.syncq.Load() == nil {
			p.syncq.Store(new(syncQueue))
		}
	}
}

// DrainSync moves core c's pending events into out and returns how many.
// One goroutine at a time may drain a given core.
func (d *Dataplane) DrainSync(c int, out []SyncEvent) int {
	if c < 0 || c >= len(d.pipes) {
		return 0
	}
	q := d.pipes[c].syncq.Load()
	if q == nil {
		return 0
	}
	h, t := q.head.Load(), q.tail.Load()
	n := 0
	for ; h != t && n < len(out); h++ {
		out[n] = q.ev[h%syncRing]
		n++
	}
	q.head.Store(h)
	return n
}

// SyncDrops returns how many events the cores dropped on full rings.
func (d *Dataplane) SyncDrops() uint64 {
	var n uint64
	for _, p := range d.pipes {
		if q := p.syncq.Load(); q != nil {
			n += q.drops.Load()
		}
	}
	return n
}

// Cores returns how many pipelines (cores) the dataplane has.
func (d *Dataplane) Cores() int { return len(d.pipes) }

// syncVisible are the status bits whose change is an update event: the
// state (the low four bits) and the SEEN_REPLY and ASSURED flags.
const syncVisible = 0xf | flowtable.FlagSeenReply | flowtable.FlagAssured
