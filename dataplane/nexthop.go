package dataplane

// The next-hop cache is in two parts, so that the part every packet reads
// stays small: nhDst maps a destination to an index into nh, in 8 bytes
// (the destination above, the index below, 0 for none), and nh holds the
// few distinct next hops themselves (a port and a MAC address), which many
// destinations share. A thousand destinations behind one gateway take 8 KB
// of nhDst and one nhEntry; a whole entry per destination (32 bytes) would
// make the cache alone as large as the first-level data cache, and a
// packet of BenchmarkPipelineCounted/udp miss there 8.2 times rather than
// 7.2 (callgrind's cache simulation, 32 KB 8-way).
//
// Both are per core and cleared whenever the Env changes (resetNextHops):
// a route change takes effect at the next batch. A neighbour change does
// not clear them: nhNb remembers which neighbour table entry each next
// hop was resolved from, and when the table changes, each core updates
// or retires only the entries whose neighbour changed
// (revalidateNextHops). A retired entry has an MTU of 0, which the
// established path refuses and nhHit does not return.
type nhEntry struct {
	port uint16
	mac  [6]byte
	// The egress port's MAC address and MTU, so that the established path
	// needs nothing else.
	srcMAC [6]byte
	mtu    uint16
}

// nhNeigh is where a next hop's address came from: its neighbour table
// slot and the value read there, and the egress MTU to restore to a
// retired entry whose neighbour is usable again.
type nhNeigh struct {
	slot int32
	mtu  uint16
	val  uint64
}

const (
	nhDstBits = 10
	nhDstSize = 1 << nhDstBits // destinations cached
	nhSize    = 256            // distinct next hops cached, entry 0 unused
)

// nextHop resolves where a destination is sent: the egress port and the
// next hop's MAC address, through the per-core next-hop cache (nhDst),
// which holds only what was resolved under the current Env. The entry it
// returns is good until the next call.
func (p *Pipeline) nextHop(dst uint32) (*nhEntry, Reason) {
	if nh := p.nhHit(dst); nh != nil {
		return nh, ReasonNone
	}
	return p.resolveNextHop(dst)
}

// nhHit returns dst's next hop from the cache, or nil.
func (p *Pipeline) nhHit(dst uint32) *nhEntry {
	if e := p.nhDst[nhSlot(dst)]; uint32(e>>32) == dst && uint8(e) != 0 {
		if nh := &p.nh[uint8(e)]; nh.mtu != 0 {
			return nh
		}
	}
	return nil
}

// nhSlot is the index in nhDst that dst would occupy.
func nhSlot(dst uint32) uint32 {
	return (dst * 0x9E3779B1) >> (32 - nhDstBits)
}

// resolveNextHop is nextHop on a cache miss: route and neighbour lookups,
// then the next hop found in nh or added to it, and dst's slot pointed at
// it. A full nh is emptied first, with every destination that pointed
// into it. A next hop without a usable neighbour (or whose frames this
// core still holds, so that they leave first) gives p.unres, its port
// and MTU without an address, and ReasonNoNeighbour: the caller decides
// the frame and holds it (deliver).
func (p *Pipeline) resolveNextHop(dst uint32) (*nhEntry, Reason) {
	port, nh, ok := p.env.lookupRoute(dst)
	if !ok {
		return nil, ReasonNoRoute
	}
	pt := &p.env.Ports[port]
	mtu := uint16(min(pt.MTU, 0xffff))
	slot, v := p.neighSlots.lookup(pt.IfIndex, nh)
	if neighState(v) != neighValid || p.held.npend > 0 && p.held.pendFor(pt.IfIndex, nh) >= 0 {
		p.unres = nhEntry{port: port, srcMAC: pt.MAC, mtu: mtu}
		p.unresIf, p.unresIP = pt.IfIndex, nh
		return &p.unres, ReasonNoNeighbour
	}
	want := nhEntry{port: port, mac: neighMAC(v), srcMAC: pt.MAC, mtu: mtu}
	i := 1
	for i < p.nhLen && p.nh[i] != want {
		i++
	}
	if i >= p.nhLen {
		if p.nhLen == nhSize {
			p.resetNextHops()
			i = 1
		}
		p.nh[i] = want
		p.nhNb[i] = nhNeigh{slot: int32(slot), mtu: mtu, val: v}
		p.nhLen = i + 1
	}
	p.nhDst[nhSlot(dst)] = uint64(dst)<<32 | uint64(i)
	return &p.nh[i], ReasonNone
}

// revalidateNextHops updates the cached next hops whose neighbour
// changed: a new address is taken over, an unusable neighbour retires
// the entry (MTU 0) until it is usable again.
func (p *Pipeline) revalidateNextHops() {
	s := p.neighSlots
	for i := 1; i < p.nhLen; i++ {
		nb := &p.nhNb[i]
		v := s.s[nb.slot].val.Load()
		if v == nb.val {
			continue
		}
		nb.val = v
		if neighState(v) == neighValid {
			p.nh[i].mac = neighMAC(v)
			p.nh[i].mtu = nb.mtu
		} else {
			p.nh[i].mtu = 0
		}
	}
}

// deliver sends a decided, translated frame to its next hop, or holds
// it while the next hop is resolved.
func (p *Pipeline) deliver(frame []byte, size int, m *meta, nh *nhEntry, out *Result) {
	if nh == &p.unres {
		p.hold(frame, size, m, out)
		return
	}
	p.emit(frame, size, m, nh.port, &nh.mac, out)
}

// resetNextHops empties the next-hop cache.
func (p *Pipeline) resetNextHops() {
	clear(p.nhDst[:])
	p.nhLen = 1
}

// NeighMiss is a next hop the pipeline needed and had no link-layer
// address for: the control path asks the kernel to resolve it.
type NeighMiss struct {
	IfIndex int
	IP      uint32
}

// neighMiss records a next hop to resolve in a small ring the control
// path drains. It is called when a core starts holding frames for the
// next hop (hold), so at most once per round of the kernel's probes per
// next hop and core, and again for a packet after a failure, which makes
// the kernel probe again, as a packet to a FAILED entry does in Linux.
func (p *Pipeline) neighMiss(ifindex int, ip uint32) {
	h, t := p.missHead.Load(), p.missTail.Load()
	if t-h == uint32(len(p.misses)) {
		return
	}
	p.misses[t%uint32(len(p.misses))] = NeighMiss{IfIndex: ifindex, IP: ip}
	p.missTail.Store(t + 1)
	if f := p.d.onMiss; f != nil {
		f()
	}
}

// DrainNeighMisses copies next hops waiting for resolution into out; the
// control path calls it (one reader per pipeline).
func (p *Pipeline) DrainNeighMisses(out []NeighMiss) int {
	n := 0
	h, t := p.missHead.Load(), p.missTail.Load()
	for ; h != t && n < len(out); h++ {
		out[n] = p.misses[h%uint32(len(p.misses))]
		n++
	}
	p.missHead.Store(h)
	return n
}
