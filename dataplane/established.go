package dataplane

import (
	"encoding/binary"

	"xnat/dataplane/header"
	"xnat/flowtable"
)

// established forwards, from frames[from] on, the packets that change
// nothing in their connection but the last-seen time (TCP or UDP, IPv4
// without options, quiet), while filter FORWARD has no rules and accepts
// (the caller checks that once a batch): the common case, decided and
// rewritten in a loop that makes no call. Frames already decided are
// passed over. It stops at the first packet it cannot take, having
// changed nothing for it (a state change, IP options, a next hop not in
// the cache, a packet too big for the egress MTU, a new connection, a TCP
// segment that is not plainly in its window), and
// returns its index, or len(frames). It adds the packets and IP bytes it
// forwarded to fastPkts and fastBytes, which the caller adds to Forwarded
// and the FORWARD policy's counters; handle then takes that packet from
// the start.
func (p *Pipeline) established(from int, frames [][]byte, sizes []int, out []Result) int {
	metas, keys, refs := p.meta[:len(frames)], p.keys[:len(frames)], p.refs[:len(frames)]
	sizes, out = sizes[:len(frames)], out[:len(frames)]
	tab := p.d.Table
	now := p.now
	be := binary.BigEndian
	win := tab.HasProto()
	i := from
	for ; i < len(frames); i++ {
		m := &metas[i]
		if m.kind == kDone {
			continue
		}
		ref := refs[i]
		if ref == 0 {
			break
		}
		f := tab.Flow(ref)
		dir := ref.Dir()
		status := f.Status()
		if !quietSet[quietIndex(status, dir, m.qbase)] { // TCP or UDP, no IP options
			break
		}
		other := f.TuplePtr(dir ^ 1)
		// An empty slot (0) matches only destination 0.0.0.0, and points
		// at nh[0], never written: its MTU of 0 refuses every packet.
		e := p.nhDst[nhSlot(other.Src)]
		nh := &p.nh[uint8(e)]
		if uint32(e>>32) != other.Src || m.ipLen > nh.mtu {
			break
		}
		if win && m.kind == kTCP {
			class, ok := fastInWindow(tab.Proto(ref), dir, frames[i], m.l4, m.ipLen, status, &p.tp)
			if !ok {
				break
			}
			if status&flowtable.TimeoutClassMask != class {
				// Lost to a concurrent change, the class waits for the
				// connection's next segment.
				f.UpdateStatus(status, status&^flowtable.TimeoutClassMask|class)
			}
		}
		f.Touch(now)
		// header.RewriteNAT, on fields found without bounds checks
		// (natFields: parse has checked them all). What the parser read of
		// the headers (the key, the meta's TTL and checksums) is what they
		// hold, so they are written, not read: with a batch's frames in a
		// UMEM's chunks of a power of two, their headers share a few sets
		// of the first-level cache, and a read would miss there.
		udp := m.kind == kUDP
		eth, ip, l4, csum := natFields(frames[i], m.l3, udp)
		k := &keys[i]
		ports := uint32(other.DstPort)<<16 | uint32(other.SrcPort)
		d := header.Delta(0).Add32(k.Src, other.Dst).Add32(k.Dst, other.Src)
		be.PutUint32(ip[header.IPv4SrcAddr:], other.Dst)
		be.PutUint32(ip[header.IPv4DstAddr:], other.Src)
		ip[header.IPv4TTL] = m.ttl - 1
		be.PutUint16(ip[header.IPv4Checksum:], d.DecTTL().Apply(m.ipCsum))
		be.PutUint32(l4[:], ports)
		d = d.Add32(uint32(k.SrcPort)<<16|uint32(k.DstPort), ports)
		be.PutUint16(csum[:], d.ApplyL4(m.l4Csum, udp))
		*(*[6]byte)(eth[header.EthernetDst:]) = nh.mac
		*(*[6]byte)(eth[header.EthernetSrc:]) = nh.srcMAC
		size := sizes[i]
		out[i] = Result{Action: ActForward, Port: nh.port, Len: size}
		pc := &p.cnt.Ports[nh.port]
		pc.TxPackets++
		pc.TxBytes += uint64(size)
		p.fastPkts++
		p.fastBytes += uint64(m.ipLen)
	}
	return i
}

// accountFast adds the packets the established path forwarded, frames
// from up to to, to their connections' counters (nf_conntrack_acct),
// when the table keeps them: every one of them not decided already went
// that way. A pass of its own, so the established loop carries no flag
// and no table for it.
func (p *Pipeline) accountFast(from, to int) {
	tab := p.d.Table
	if !tab.Acct() {
		return
	}
	metas, refs := p.meta[:to], p.refs[:to]
	for j := from; j < to; j++ {
		if metas[j].kind != kDone {
			tab.Account(refs[j], int(metas[j].ipLen))
		}
	}
}
