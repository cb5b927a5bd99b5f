package dataplane

import (
	"context"
	"fmt"
	"sync/atomic"

	"xnat/flowtable"
	"xnat/portalloc"
)

// CommitResult counts what a Commit did with each connection.
type CommitResult struct {
	// Committed: inserted with its translation, its external port marked
	// used in the allocator of the core that owns it.
	Committed int
	// Exists: the table had the connection already (same original tuple)
	// with the same translation.
	Exists int
	// Replaced: the table had the connection with another translation
	// (its packets reached this box after the addresses moved and before
	// the commit, and it was given a port of its own): the peer's record,
	// the one both ends know, replaced it. Counted in Committed too.
	Replaced int
	// NoPool: the connection's external endpoint is in none of this box's
	// NAT pools (its rules or pools differ from the peer's).
	NoPool int
	// Refused: the port was taken towards the same remote endpoint, a
	// per-source limit refused it, or the table had no room.
	Refused int
}

// commitPerBatch bounds the connections a core inserts per batch for a
// commit, so that its packets wait for a few hundred inserts at most.
const commitPerBatch = 256

// commitJob is one core's share of a Commit: written by Commit before it
// is published on the core's commitq, then read and advanced by that
// core alone; the counts are atomic so that a cancelled Commit can read
// them while the core finishes its batch.
type commitJob struct {
	flows []commitFlow
	next  int
	stop  atomic.Bool
	done  chan struct{}

	committed, exists, replaced, refused atomic.Int64
}

type commitFlow struct {
	nf   flowtable.NewFlow
	pool uint16 // 0: no source NAT
}

// committedTCP is the window state of a committed TCP connection: none
// seen yet, and no window checks in either direction, as Linux treats a
// connection conntrackd commits without window tracking. Each
// direction's next segment picks the window up (inWindow, mid-stream).
var committedTCP = func() (w [flowtable.ProtoWords]uint32) {
	w[twFlags] = twfSackPerm | twfLiberal
	w[twStride+twFlags] = twfSackPerm | twfLiberal
	return
}()

// Commit inserts connections decided elsewhere (an HA peer's external
// cache, as conntrackd -c commits it), each keeping its exact
// translation. A source-NAT connection goes to the core whose slice of
// the pool holds its external port: that core's allocator marks the port
// used (portalloc.Allocator.Reserve: counts, steering of the box's own
// addresses, the per-source limiter) and inserts the record through that
// core's share of the table, so the port comes back to it when the
// connection ends. Other connections go to core 0.
//
// Allocators are plain memory each core owns, so Commit does not touch
// them: it hands each core its share on a one-slot queue that the core
// takes at the start of its next batches (commitPerBatch connections a
// batch), between packets, and waits until every core is done. The cores
// must be running (their workers call Idle when there is no traffic); if
// ctx ends first, Commit returns what was committed so far with ctx's
// error, and the cores stop at their next batch.
func (d *Dataplane) Commit(ctx context.Context, flows []flowtable.NewFlow) (CommitResult, error) {
	d.commitMu.Lock()
	defer d.commitMu.Unlock()
	var res CommitResult
	jobs := make([]*commitJob, len(d.pipes))
	for i := range jobs {
		jobs[i] = &commitJob{done: make(chan struct{})}
	}
	proto := d.Table.HasProto()
	for i := range flows {
		nf := flows[i]
		nf.Aux = 0
		nf.Proto = nil
		if nf.Orig.Proto == flowtable.ProtoTCP && proto {
			nf.Proto = &committedTCP
		}
		core, pool := 0, uint16(0)
		if nf.Status&flowtable.FlagSrcNAT != 0 {
			var ok bool
			pool, core, ok = d.Pools.owner(nf.Orig.Proto, nf.Reply.Dst, nf.Reply.DstPort)
			if !ok {
				res.NoPool++
				continue
			}
		}
		jobs[core].flows = append(jobs[core].flows, commitFlow{nf: nf, pool: pool})
	}
	for c, j := range jobs {
		if len(j.flows) > 0 {
			d.pipes[c].commitq.Store(j)
			d.pipes[c].wake()
		} else {
			close(j.done)
		}
	}
	var err error
	for c, j := range jobs {
		select {
		case <-j.done:
		case <-ctx.Done():
			err = fmt.Errorf("commit: %w", ctx.Err())
			for c2, j2 := range jobs[c:] {
				j2.stop.Store(true)
				d.pipes[c+c2].commitq.CompareAndSwap(j2, nil)
			}
		}
		if err != nil {
			break
		}
	}
	for _, j := range jobs {
		res.Committed += int(j.committed.Load())
		res.Exists += int(j.exists.Load())
		res.Replaced += int(j.replaced.Load())
		res.Refused += int(j.refused.Load())
	}
	return res, err
}

// CommitPending reports whether this core has a commit's connections yet
// to insert: its worker, idle, runs Idle again at once rather than
// sleeping a poll timeout between two commitPerBatch steps.
func (p *Pipeline) CommitPending() bool { return p.commitq.Load() != nil }

// commitStep inserts the next commitPerBatch connections of a commit, at
// the start of a batch (inside the table's critical section), and
// signals the end of the core's share.
func (p *Pipeline) commitStep(j *commitJob) {
	if !j.stop.Load() {
		end := min(j.next+commitPerBatch, len(j.flows))
		for ; j.next < end; j.next++ {
			p.commitOne(&j.flows[j.next], j)
		}
	}
	if j.next == len(j.flows) || j.stop.Load() {
		if p.commitq.CompareAndSwap(j, nil) {
			close(j.done)
		}
	}
}

func (p *Pipeline) commitOne(cf *commitFlow, j *commitJob) {
	nf := &cf.nf
	nf.Aux = makeAux(cf.pool, p.nowSec)
	for try := 0; ; try++ {
		var ref flowtable.Ref
		var res flowtable.InsertResult
		if cf.pool != 0 {
			a := p.d.Pools.allocator(cf.pool, p.core)
			var ar portalloc.Result
			ref, ar, res = a.Reserve(p.ct, nf, p.now)
			if ar != portalloc.OK && ar != portalloc.TableRefused {
				j.refused.Add(1)
				return
			}
		} else {
			ref, res = p.ct.Insert(nf, p.now)
		}
		switch res {
		case flowtable.Inserted:
			j.committed.Add(1)
			if try > 0 {
				j.replaced.Add(1)
			}
		case flowtable.Exists:
			// Created here meanwhile: kept if it has the peer's
			// translation, else replaced by the peer's record (its own
			// port goes back when the sweep takes the killed record).
			if f := p.d.Table.Flow(ref); try == 0 && ref != 0 && f.Orig() == nf.Orig && f.Reply() != nf.Reply && p.ct.Kill(ref) {
				continue
			}
			// Its port may have been given out before the address was
			// the box's, and so be held by nobody: hold it now.
			if cf.pool != 0 {
				p.d.Pools.allocator(cf.pool, p.core).Rehold(nf.Orig.Proto, nf.Reply.Dst, nf.Reply.DstPort)
			}
			j.exists.Add(1)
		default:
			j.refused.Add(1)
		}
		return
	}
}
