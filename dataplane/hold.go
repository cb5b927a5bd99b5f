package dataplane

import (
	"time"

	"xnat/dataplane/header"
	"xnat/flowtable"
)

// Frames for a next hop not yet resolved are held, as Linux queues them
// on the neighbour entry while ARP resolves it (unres_qlen_bytes), and
// sent when it resolves: each core keeps, per next hop it is waiting
// for, a queue of its frames, already decided, translated and counted
// on their connection (the connection was created first); only their
// MAC addresses are missing. The frames stay in their buffers (UMEM
// frames: the worker keeps their descriptors by Result.Hold). When the
// kernel reports the resolution failed (after its probes), or when
// holdTimeout passes without an answer, each frame's translation is
// undone and it is answered with ICMP host unreachable, as Linux's
// arp_error_report does, within the ICMP error budget.

const (
	// HoldCapacity is the most frames one core holds at once: at most
	// HoldCapacity of a worker's UMEM frames are held.
	HoldCapacity = 256
	// pendMax is the most next hops one core waits for at once.
	pendMax = 32
	// holdTimeout is how long a frame waits when the kernel reports
	// nothing: beyond the kernel's own probes (mcast_solicit 3 ×
	// retrans_time 1 s), whose failure it notifies.
	holdTimeout = 5 * time.Second
)

// Release is the final decision for a frame the pipeline held: transmit
// (ActForward, ActReply) or drop, as for a Result.
type Release struct {
	Hold   uint16
	Result Result
}

type heldFrame struct {
	frame []byte
	size  int
	m     meta
	orig  flowtable.Tuple // the frame's tuple as received
	next  int16           // the next frame in its next hop's queue, -1
}

// pendNeigh is a next hop a core holds frames for.
type pendNeigh struct {
	ifindex    int
	ip         uint32
	port       uint16
	head, tail int16
	n, bytes   int
	since      int64  // when its first frame was held
	val0       uint64 // the neighbour table's value then
}

type holdState struct {
	held  [HoldCapacity]heldFrame
	free  [HoldCapacity]uint16
	nfree int
	pend  [pendMax]pendNeigh
	npend int
	// rel are the releases of the current call (Process, Idle,
	// DropHeld), for the caller to carry out; their slots are free again
	// at the next call.
	rel  [HoldCapacity]Release
	nrel int
}

func (h *holdState) init() {
	for i := range h.free {
		h.free[i] = uint16(HoldCapacity - 1 - i)
	}
	h.nfree = HoldCapacity
}

// recycle frees the slots of the last call's releases.
func (h *holdState) recycle() {
	for _, r := range h.rel[:h.nrel] {
		h.free[h.nfree] = r.Hold
		h.nfree++
	}
	h.nrel = 0
}

// Released returns the decisions for held frames that the last call to
// Process, Idle or DropHeld made: the caller transmits or drops each
// (its buffer is the one it was given with the frame Result.Hold named)
// before the next call.
func (p *Pipeline) Released() []Release { return p.held.rel[:p.held.nrel] }

// IsHeld reports whether slot i holds a frame.
func (p *Pipeline) IsHeld(i uint16) bool {
	return int(i) < HoldCapacity && p.held.held[i].frame != nil
}

// Held returns how many frames the pipeline holds.
func (p *Pipeline) Held() int { return HoldCapacity - p.held.nfree - p.held.nrel }

// DropHeld releases every held frame as a drop (no_neighbour): for a
// worker that stops. The releases are in Released.
func (p *Pipeline) DropHeld() {
	h := &p.held
	h.recycle()
	for h.npend > 0 {
		p.flushPend(h.npend-1, pendDrop)
	}
	p.pub.store(&p.cnt)
}

// pendFor returns the index of the next hop's queue, or -1.
func (h *holdState) pendFor(ifindex int, ip uint32) int {
	for i := range h.pend[:h.npend] {
		if h.pend[i].ip == ip && h.pend[i].ifindex == ifindex {
			return i
		}
	}
	return -1
}

// hold keeps a decided frame for the next hop resolveNextHop could not
// resolve (p.unres): it goes at the end of that next hop's queue, whose
// oldest frames make room within unres_qlen_bytes.
func (p *Pipeline) hold(frame []byte, size int, m *meta, out *Result) {
	h := &p.held
	pi := h.pendFor(p.unresIf, p.unresIP)
	if pi < 0 {
		if h.npend == pendMax {
			p.finish(out, ActDrop, ReasonNeighQueueFull, 0, 0)
			return
		}
		pi = h.npend
		h.npend++
		_, v := p.neighSlots.lookup(p.unresIf, p.unresIP)
		h.pend[pi] = pendNeigh{ifindex: p.unresIf, ip: p.unresIP, port: p.unres.port, head: -1, tail: -1, since: p.nowNs, val0: v}
		p.neighMiss(p.unresIf, p.unresIP)
	}
	pn := &h.pend[pi]
	charge := cap(frame)
	limit := int(p.d.Settings.UnresQlenBytes.Load())
	for pn.n > 0 && pn.bytes+charge > limit {
		p.dropOldest(pn)
	}
	if charge > limit || h.nfree == 0 {
		p.finish(out, ActDrop, ReasonNeighQueueFull, 0, 0)
		if pn.n == 0 {
			p.removePend(pi)
		}
		return
	}
	h.nfree--
	i := h.free[h.nfree]
	hf := &h.held[i]
	hf.frame, hf.size, hf.m, hf.next = frame, size, *m, -1
	hf.orig = flowtable.Tuple{}
	if p.curKey != nil {
		hf.orig = *p.curKey
	}
	if pn.tail >= 0 {
		h.held[pn.tail].next = int16(i)
	} else {
		pn.head = int16(i)
	}
	pn.tail = int16(i)
	pn.n++
	pn.bytes += charge
	p.cnt.NeighQueued++
	*out = Result{Action: ActHold, Hold: i}
}

// release records a held frame's final decision.
func (p *Pipeline) release(i int16, r Result) {
	h := &p.held
	h.held[i].frame = nil
	h.rel[h.nrel] = Release{Hold: uint16(i), Result: r}
	h.nrel++
}

// dropOldest drops the frame at the head of a queue (neigh_queue_full).
func (p *Pipeline) dropOldest(pn *pendNeigh) {
	h := &p.held
	i := pn.head
	pn.head = h.held[i].next
	if pn.head < 0 {
		pn.tail = -1
	}
	pn.n--
	pn.bytes -= cap(h.held[i].frame)
	var r Result
	p.finish(&r, ActDrop, ReasonNeighQueueFull, 0, 0)
	p.release(i, r)
}

func (p *Pipeline) removePend(pi int) {
	h := &p.held
	h.npend--
	h.pend[pi] = h.pend[h.npend]
}

// What becomes of a queue's frames.
const (
	pendSend = iota // the next hop resolved: transmit them
	pendFail        // resolution failed: ICMP host unreachable
	pendDrop        // the worker stops
)

// flushPend releases queue pi's frames, in order, and removes it.
func (p *Pipeline) flushPend(pi int, how int) {
	h := &p.held
	pn := &h.pend[pi]
	var mac [6]byte
	if how == pendSend {
		_, v := p.neighSlots.lookup(pn.ifindex, pn.ip)
		mac = neighMAC(v)
	}
	for i := pn.head; i >= 0; {
		next := h.held[i].next
		switch how {
		case pendSend:
			p.sendHeld(i, pn.port, &mac)
		case pendFail:
			p.failHeld(i)
		default:
			var r Result
			p.finish(&r, ActDrop, ReasonNoNeighbour, 0, 0)
			p.release(i, r)
		}
		i = next
	}
	p.removePend(pi)
}

// sendHeld transmits a held frame to its now resolved next hop.
func (p *Pipeline) sendHeld(i int16, port uint16, mac *[6]byte) {
	hf := &p.held.held[i]
	var r Result
	if int(port) >= len(p.env.Ports) {
		p.finish(&r, ActDrop, ReasonNoPort, 0, 0)
		p.release(i, r)
		return
	}
	eth := header.Ethernet(hf.frame)
	eth.SetDst(*mac)
	eth.SetSrc(p.env.Ports[port].MAC)
	p.cnt.Forwarded++
	pc := &p.cnt.Ports[port]
	pc.TxPackets++
	pc.TxBytes += uint64(hf.size)
	p.release(i, Result{Action: ActForward, Port: port, Len: hf.size})
}

// failHeld answers a held frame whose next hop could not be resolved
// with ICMP host unreachable (RFC 1812 5.2.7.1), its translation undone
// so that the error quotes what its sender sent.
func (p *Pipeline) failHeld(i int16) {
	hf := &p.held.held[i]
	var r Result
	m := &hf.m
	if m.kind == kICMPError || int(m.in) >= len(p.env.Ports) {
		p.finish(&r, ActDrop, ReasonNeighFailed, 0, 0)
	} else {
		// Linux answers the packet as it was when it waited, translated:
		// the error goes to its source, and when that is the box's own
		// address (source NAT) the error leaves from it, translated back
		// to the sender with the packet it quotes.
		src := p.env.Ports[m.in].Primary()
		if ts := header.IPv4(hf.frame[m.l3:]).Src(); ts != hf.orig.Src {
			if _, local := p.env.local[ts]; local {
				src = ts
			}
		}
		untranslate(hf.frame, m, &hf.orig)
		p.icmpErrorFrom(src, hf.frame, hf.size, m, header.ICMPDestUnreach, header.ICMPHostUnreach, 0, ReasonNeighFailed, &r)
	}
	p.release(i, r)
}

// untranslate puts a translated frame's addresses and ports (or ICMP
// identifier) back to its tuple as received, with incremental checksum
// updates; its TTL stays decremented, as in the datagram Linux quotes.
func untranslate(frame []byte, m *meta, k *flowtable.Tuple) {
	d := setAddrs(header.IPv4(frame[m.l3:]), k.Src, k.Dst)
	l4 := frame[m.l4 : int(m.l3)+int(m.ipLen)]
	switch m.kind {
	case kTCP:
		rewritePorts(l4, header.TCPChecksum, false, k.SrcPort, k.DstPort, d)
	case kUDP:
		rewritePorts(l4, header.UDPChecksum, true, k.SrcPort, k.DstPort, d)
	case kICMPQuery:
		id := k.DstPort
		if header.ICMPIsRequest(m.icmpType) {
			id = k.SrcPort
		}
		setICMPID(header.ICMPv4(l4), id)
	}
}

// neighCheck runs at the start of every batch: when the neighbour table
// changed, the next-hop cache's entries whose neighbour changed are
// updated (a new address) or retired (no longer usable), and the queues
// whose next hop resolved are sent, those whose resolution failed since
// they began answered; queues older than holdTimeout fail.
func (p *Pipeline) neighCheck() {
	t := p.d.neigh
	h := &p.held
	if g := t.gen.Load(); g != p.neighGen || p.neighSlots == nil {
		p.neighGen = g
		if s := t.slots.Load(); s != p.neighSlots {
			p.neighSlots = s
			p.resetNextHops()
		} else {
			p.revalidateNextHops()
		}
		for pi := h.npend - 1; pi >= 0; pi-- {
			pn := &h.pend[pi]
			_, v := p.neighSlots.lookup(pn.ifindex, pn.ip)
			switch {
			case neighState(v) == neighValid:
				p.flushPend(pi, pendSend)
			case neighState(v) == neighFailed && v != pn.val0:
				p.flushPend(pi, pendFail)
			}
		}
	}
	for pi := h.npend - 1; pi >= 0; pi-- {
		if p.nowNs-h.pend[pi].since > int64(holdTimeout) {
			p.flushPend(pi, pendFail)
		}
	}
}
