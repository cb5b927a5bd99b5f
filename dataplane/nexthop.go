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
// a route or neighbour change takes effect at the next batch.
type nhEntry struct {
	port uint16
	mac  [6]byte
	// The egress port's MAC address and MTU, so that the established path
	// needs nothing else.
	srcMAC [6]byte
	mtu    uint16
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
		return &p.nh[uint8(e)]
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
// into it.
func (p *Pipeline) resolveNextHop(dst uint32) (*nhEntry, Reason) {
	port, nh, ok := p.env.lookupRoute(dst)
	if !ok {
		return nil, ReasonNoRoute
	}
	mac, ok := p.env.neigh[neighKey{port, nh}]
	if !ok {
		p.neighMiss(p.env.Ports[port].IfIndex, nh)
		return nil, ReasonNoNeighbour
	}
	pt := &p.env.Ports[port]
	want := nhEntry{port: port, mac: mac, srcMAC: pt.MAC, mtu: uint16(min(pt.MTU, 0xffff))}
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
		p.nhLen = i + 1
	}
	p.nhDst[nhSlot(dst)] = uint64(dst)<<32 | uint64(i)
	return &p.nh[i], ReasonNone
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

// neighMiss records a next hop to resolve, at most once a second per
// address in a row, in a small ring the control path drains.
func (p *Pipeline) neighMiss(ifindex int, ip uint32) {
	if ip == p.lastMiss && p.now-p.lastMissT < 100 {
		return
	}
	p.lastMiss, p.lastMissT = ip, p.now
	h, t := p.missHead.Load(), p.missTail.Load()
	if t-h == uint32(len(p.misses)) {
		return
	}
	p.misses[t%uint32(len(p.misses))] = NeighMiss{IfIndex: ifindex, IP: ip}
	p.missTail.Store(t + 1)
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
