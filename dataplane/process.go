package dataplane

import (
	"math/bits"
	"time"

	"xnat/dataplane/header"
	"xnat/dataplane/rules"
	"xnat/flowtable"
)

// Process runs a batch of frames through the pipeline. frames[i] holds
// sizes[i] bytes received on port in[i]; its capacity bounds what a
// generated reply may use. out[i] receives the decision; forwarded and
// generated frames are rewritten in place. It allocates nothing.
func (p *Pipeline) Process(frames [][]byte, sizes []int, in []uint16, out []Result) {
	p.held.recycle()
	for len(frames) > 0 {
		n := min(len(frames), batchMax)
		p.process(frames[:n], sizes[:n], in[:n], out[:n])
		frames, sizes, in, out = frames[n:], sizes[n:], in[n:], out[n:]
	}
}

// Idle does a batch's housekeeping without frames: the core's bounded
// expiry sweep (ports of connections that left go back to their
// allocators), the Env pick-up, and the publication of the rule and
// pipeline counters; it counts as a batch in Counters.Batches. A worker
// calls it when its sockets received nothing, so that expiry and port
// reuse do not wait for traffic. It allocates nothing.
func (p *Pipeline) Idle() {
	p.held.recycle()
	p.process(nil, nil, nil, nil)
}

// process runs one batch of at most batchMax frames, stage by stage, each
// in the file named for it: parse (parse.go), one lookup of every key in
// the flow table, the established path (established.go) with the packets
// it leaves to handle (forward.go) and the new connections among them
// (newconn.go), then the expiry sweep and the counters' publication. The
// batch is one critical section of the flow table.
func (p *Pipeline) process(frames [][]byte, sizes []int, in []uint16, out []Result) {
	d := p.d
	p.env = d.env.Load()
	if p.env.gen != p.envGen {
		p.envGen = p.env.gen
		p.resetNextHops()
	}
	el := time.Since(d.start) // d.start is the table's: one clock reading
	p.nowNs = int64(el)
	p.now = flowtable.TimeAt(el)
	p.nowSec = uint32(el / time.Second)
	st := d.Settings
	p.tp = tcpParams{liberal: st.TCPBeLiberal.Load(), ignoreRst: st.TCPIgnoreInvalidRst.Load(),
		maxRetrans: uint32(min(max(st.TCPMaxRetrans.Load(), 0), 255))}
	p.ct.Enter()
	p.mc.Enter()
	p.neighCheck()
	p.sq = p.syncq.Load()
	if j := p.commitq.Load(); j != nil {
		p.commitStep(j)
	}

	// Count every frame in and parse it, the common ones on the fast path
	// and the rest (rest) on the full one; collect the keys to look up.
	// (The slices cut to the batch's length let the compiler drop bounds
	// checks.)
	sizes, in, out = sizes[:len(frames)], in[:len(frames)], out[:len(frames)]
	metas, keys, refs := p.meta[:len(frames)], p.keys[:len(frames)], p.refs[:len(frames)]
	rest, nk := p.parseFast(frames, sizes, in)
	for ; rest != 0; rest &= rest - 1 {
		i := bits.TrailingZeros64(rest)
		m := &metas[i]
		out[i] = Result{}
		frame := frames[i][:sizes[i]]
		if int(m.in) >= len(p.env.Ports) {
			m.kind = kDone
			p.finish(&out[i], ActDrop, ReasonNoPort, 0, 0)
			continue
		}
		if r := p.parse(frame, m, &keys[i]); r != ReasonNone {
			m.kind = kDone
			p.finish(&out[i], ActDrop, r, 0, 0)
			if r == ReasonNotIPv4 {
				out[i].Action = ActKernel
				p.cnt.ToKernel++
			}
			continue
		}
		if m.kind == kDone {
			continue
		}
		if p.routerMustNot(frame, m, &out[i]) {
			m.kind = kDone
			continue
		}
		if frame[int(m.l3)+header.IPv4TTL] <= 1 {
			p.ttlExceeded(frames[i], sizes[i], m, &out[i])
			m.kind = kDone
			continue
		}
		nk++
	}
	// Look the keys up together so their cache misses overlap.
	if nk > 0 {
		if found := p.ct.LookupBatch(keys, refs, p.now); found < len(frames) && p.lastAlloc != nil && d.Table.Prefetches() {
			p.prefetchReplies(metas, keys, refs)
		}
	}
	// With no rules in filter FORWARD and an ACCEPT policy, packets that
	// change nothing in their connection take the established path; its
	// policy counts are added once a batch.
	fwd, policyOnly := p.env.Rules.PolicyOnly(rules.Forward)
	// The established path takes the batch in order as far as it can; at a
	// packet it cannot take, handle takes that one and the established path
	// goes on after it, so every connection's packets are tracked in the
	// order they came.
	fast := policyOnly && fwd.Action == rules.Accept && !p.noFast
	p.fastPkts, p.fastBytes = 0, 0
	for i := 0; ; i++ {
		if fast {
			from := i
			i = p.established(i, frames, sizes, out)
			p.accountFast(from, i)
		}
		if i >= len(frames) {
			break
		}
		if m := &metas[i]; m.kind != kDone {
			out[i] = Result{}
			p.handle(frames[i], sizes[i], m, &keys[i], refs[i], &out[i])
		}
	}
	fastPkts := p.fastPkts
	p.env.Rules.CountPolicyN(rules.Forward, p.core, fastPkts, p.fastBytes)
	p.cnt.Forwarded += fastPkts
	p.fastLast = fastPkts

	// Expire connections and give their ports back.
	budget := int(d.Settings.SweepBudget.Load())
	if budget <= 0 {
		budget = max(p.sweepDue(p.ct.Held()+1), sweepMin)
	}
	n := p.ct.Sweep(p.now, budget, p.gone[:])
	for i := range p.gone[:n] {
		g := &p.gone[i]
		if a := d.Pools.allocator(auxPool(g.Aux), p.core); a != nil {
			a.Release(&g.Orig, &g.Reply)
		}
		if p.sq != nil {
			p.sq.push(SyncDestroy, &g.Orig, &g.Reply, g.Status, g.Mark)
		}
		if g.Status&(flagMapOut|flagMapIn|flagJoined) != 0 {
			p.leaveMappings(g)
		}
	}
	mapsGone := p.sweepMappings()
	p.env.Rules.Flush(p.core)
	p.mc.Exit()
	p.ct.Exit()
	p.cnt.Batches++
	if fastPkts == uint64(len(frames)) && p.held.nrel == 0 && !mapsGone {
		p.pub.storeFast(&p.cnt, len(p.env.Ports))
	} else {
		p.pub.store(&p.cnt)
	}
}

// routerMustNot decides a packet a router never forwards (Env.martian):
// a broadcast or multicast one goes to the kernel, a martian is dropped;
// both are counted under their reason. It reports whether it decided.
func (p *Pipeline) routerMustNot(frame []byte, m *meta, out *Result) bool {
	ip := header.IPv4(frame[m.l3:])
	r := p.env.martian(ip.Src(), ip.Dst())
	if r == ReasonNone {
		return false
	}
	p.finish(out, ActDrop, r, 0, 0)
	if r == ReasonBroadcast {
		out.Action = ActKernel
		p.cnt.ToKernel++
	}
	return true
}

// finish records a frame's decision, and counts a drop under its reason.
func (p *Pipeline) finish(r *Result, a Action, reason Reason, port uint16, n int) {
	*r = Result{Action: a, Reason: reason, Port: port, Len: n}
	if a == ActDrop {
		p.cnt.Drops[reason]++
	}
}

// sweepPass is how long the paced sweep takes over a core's connections;
// sweepMax bounds one batch's share of it (a few microseconds of
// sequential reads), which only a core back from idle reaches. Every
// batch sweeps at least sweepMin records, so that small tables are swept
// within a few batches.
const (
	sweepPass = int64(time.Second)
	sweepMax  = 1024
	sweepMin  = 8
)

// sweepDue is the paced sweep budget: the part of a pass over share
// records that has fallen due since the last sweep. Time short of a whole
// record stays due for the next batch.
func (p *Pipeline) sweepDue(share int) int {
	return paceDue(&p.sweptNs, p.nowNs, sweepPass, share)
}

// paceDue is the part of a pass over share records, taking pass
// nanoseconds, that has fallen due between *swept and now, at most
// sweepMax; it moves *swept on by the time the records it hands out
// stand for, so time short of a whole record stays due. The connection
// sweep (sweepDue) and the mapping sweep (fullcone.go) pace with it.
func paceDue(swept *int64, now, pass int64, share int) int {
	el := now - *swept
	if el <= 0 {
		return 0
	}
	if el > pass { // after a long gap, one pass is due at most
		el = pass
		*swept = now - pass
	}
	due := int64(share) * el / pass
	if due == 0 {
		return 0
	}
	if due >= sweepMax {
		*swept = now
		return sweepMax
	}
	*swept += due * pass / int64(share)
	return int(due)
}
