package dataplane

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"xnat/dataplane/header"
	"xnat/flowtable"
)

// TestEstablishedPathRandomBatches runs the same batches through two
// pipelines, one with the established path and one with it off (noFast,
// every packet through handle), and requires the same results, frames and
// counters after every batch. The batches mix, in random order, quiet
// packets of a few hundred UDP and TCP connections both ways (some through
// DNAT, some with an 802.1Q tag, some UDP without a checksum, some whose
// translated UDP checksum computes to zero) with packets the path must
// stop at: replies to UDP, FINs, SYNs, new connections, IP options, a
// frame larger than the egress MTU, destinations not in the next-hop
// cache (which is emptied now and then, and where two destinations share
// a slot), TTL 1, malformed frames. And the path stores each connection's
// last-seen time.
func TestEstablishedPathRandomBatches(t *testing.T) {
	const outMTU = 1400
	var tbs [2]*testbed
	for i := range tbs {
		tbs[i] = newTestbed(t, dnatRules, outMTU, 1)
		// ICMP errors unlimited: the limiter follows the clock, which the
		// two pipelines read at different times.
		tbs[i].dp.Settings.ICMPRate.Store(1_000_000)
		tbs[i].dp.Settings.ICMPBurst.Store(1_000_000)
	}
	tbs[1].dp.Pipeline(0).noFast = true
	rng := rand.New(rand.NewPCG(4, 8))

	type probe struct {
		frame []byte
		in    uint16
	}
	// Set-up in three phases, each in batches of its own: a packet's
	// lookup comes before the batch's new connections are made, and a
	// reply cannot come in the batch of the packet it answers.
	var setup [3][]probe
	var probes []probe
	add := func(list *[]probe, p pkt, in uint16) {
		*list = append(*list, probe{p.bytes(t), in})
	}
	hosts := []struct {
		addr uint32
		mac  [6]byte
	}{{addrA, macA}, {addrB, macB}}
	for i := range 240 {
		h := hosts[i%2]
		rem := remote + uint32(i%5)
		sport, dport := uint16(20000+i), uint16(1000+i%7)
		if i%2 == 0 { // UDP: out, quiet while unreplied; half of them replied
			out := udpPkt(h.mac, macIn0, h.addr, sport, rem, dport)
			back := udpPkt(macGW, macOut0, rem, dport, addrExt, sport)
			add(&setup[0], out, portIn)
			add(&probes, out, portIn)
			if i%4 == 0 {
				add(&setup[1], back, portOut)
				add(&probes, back, portOut)
			} else { // no UDP checksum: zero stays zero
				z := out.bytes(t)
				binary.BigEndian.PutUint16(z[offL4+header.UDPChecksum:], 0)
				probes = append(probes, probe{z, portIn})
			}
			continue
		}
		// TCP: a handshake, then ACKs and data both ways.
		h = hosts[i/2%2]
		syn := tcpPkt(h.mac, macIn0, h.addr, sport, rem, dport, fSYN, 1, 0)
		synAck := tcpPkt(macGW, macOut0, rem, dport, addrExt, sport, fSYNACK, 1, 2)
		ack := tcpPkt(h.mac, macIn0, h.addr, sport, rem, dport, fACK, 2, 2)
		data := tcpPkt(macGW, macOut0, rem, dport, addrExt, sport, fACK|0x08, 2, 2)
		data.payload = make([]byte, 100+i)
		add(&setup[0], syn, portIn)
		add(&setup[1], synAck, portOut)
		add(&setup[2], ack, portIn)
		add(&probes, ack, portIn)
		add(&probes, data, portOut)
		switch i % 26 {
		case 1: // a FIN: the connection's state changes
			add(&probes, tcpPkt(h.mac, macIn0, h.addr, sport, rem, dport, fFIN|fACK, 2, 2), portIn)
		case 3: // a SYN again on an established connection
			add(&probes, syn, portIn)
		case 5: // larger than the outside's MTU, DF set
			big := ack
			big.payload, big.df = make([]byte, outMTU), true
			add(&probes, big, portIn)
		case 7: // IP options
			opt := ack
			opt.options = true
			add(&probes, opt, portIn)
		}
	}
	// DNAT: remote hosts reach 10.0.0.3:80 through 203.0.113.1:8080.
	for i := range 20 {
		rem, rport := remote+10+uint32(i), uint16(30000+i)
		syn := tcpPkt(macGW, macOut0, rem, rport, addrExt, 8080, fSYN, 1, 0)
		synAck := tcpPkt(macB, macIn0, addrB, 80, rem, rport, fSYNACK, 1, 2)
		ack := tcpPkt(macGW, macOut0, rem, rport, addrExt, 8080, fACK, 2, 2)
		data := tcpPkt(macB, macIn0, addrB, 80, rem, rport, fACK|0x08, 2, 2)
		add(&setup[0], syn, portOut)
		add(&setup[1], synAck, portIn)
		add(&setup[2], ack, portOut)
		add(&probes, ack, portOut)
		add(&probes, data, portIn)
	}
	// A remote host whose slot in the next-hop cache is A's: packets to
	// each evict the other's next hop, which is not the same one.
	coll := ip4(198, 51, 0, 0)
	for nhSlot(coll) != nhSlot(addrA) {
		coll++
	}
	for i := range 10 {
		out := udpPkt(macB, macIn0, addrB, uint16(45000+i), coll, 53)
		add(&setup[0], out, portIn)
		add(&probes, out, portIn)
	}
	// UDP whose translated checksum computes to zero, sent as 0xffff.
	for i := range 4 {
		f := zeroSumUDP(t, uint16(50000+i))
		setup[0] = append(setup[0], probe{f, portIn})
		probes = append(probes, probe{f, portIn})
	}
	// Packets the path stops at, beyond those above: a new connection
	// (quiet after), TTL 1, a destination not yet in the next-hop cache,
	// a frame too short for its headers.
	for i := range 30 {
		add(&probes, udpPkt(macA, macIn0, addrA, uint16(40000+i), remote, 53), portIn)
		ttl1 := udpPkt(macA, macIn0, addrA, 20002, remote+2, 1002)
		ttl1.ttl = 1
		add(&probes, ttl1, portIn)
		add(&probes, udpPkt(macA, macIn0, addrA, uint16(41000+i), remote+100+uint32(i), 1000), portIn)
		short := udpPkt(macA, macIn0, addrA, 20002, remote+2, 1002).bytes(t)
		probes = append(probes, probe{short[:30+i%12], portIn})
	}

	var results [2][]Result
	var zeroSums int
	var frames [2][][]byte
	runBoth := func(batch []probe) {
		t.Helper()
		for k, tb := range tbs {
			fr, sizes, ins := make([][]byte, len(batch)), make([]int, len(batch)), make([]uint16, len(batch))
			for i, b := range batch {
				fr[i] = append(make([]byte, 0, 2048), b.frame...)
				sizes[i], ins[i] = len(b.frame), b.in
			}
			results[k] = make([]Result, len(batch))
			tb.dp.Pipeline(0).Process(fr, sizes, ins, results[k])
			frames[k] = fr
		}
		pf, ph := tbs[0].dp.Pipeline(0), tbs[1].dp.Pipeline(0)
		for i := range batch {
			rf, rh := results[0][i], results[1][i]
			if rf != rh || !bytes.Equal(frames[0][i][:max(rf.Len, 0)], frames[1][i][:max(rh.Len, 0)]) {
				t.Fatalf("frame %d of the batch: established path %+v\n%x\nhandle %+v\n%x", i, rf, frames[0][i][:max(rf.Len, 0)], rh, frames[1][i][:max(rh.Len, 0)])
			}
		}
		for i, r := range results[0] {
			if f := frames[0][i]; r.Action == ActForward && r.Port == portOut && len(f) >= offL4+header.UDPLen &&
				f[offIP+header.IPv4Protocol] == header.ProtoUDP && binary.BigEndian.Uint16(f[offL4+header.UDPChecksum:]) == 0xffff {
				zeroSums++
			}
		}
		if pf.cnt != ph.cnt || ph.fastLast != 0 {
			t.Fatalf("counters: established path %+v (took %d)\nhandle %+v (took %d)", pf.cnt, pf.fastLast, ph.cnt, ph.fastLast)
		}
	}
	for _, phase := range setup {
		for i := 0; i < len(phase); i += 64 {
			runBoth(phase[i:min(i+64, len(phase))])
		}
	}
	// Touch: the established path stores each connection's last-seen
	// time, as the batch's clock reads it. The clock moves on first.
	time.Sleep(3 * flowtable.Tick)
	acks := setup[2]
	for len(acks) > 0 {
		chunk := acks[:min(len(acks), 64)]
		acks = acks[len(chunk):]
		runBoth(chunk)
		for k, tb := range tbs {
			p := tb.dp.Pipeline(0)
			if want := uint64(len(chunk)) * uint64(1-k); p.fastLast != want {
				t.Fatalf("pipeline %d: the established path took %d of %d ACKs, want %d", k, p.fastLast, len(chunk), want)
			}
			p.ct.Enter()
			for i := range chunk {
				if r := p.ct.Lookup(&p.keys[i], p.now); r == 0 || tb.tab.Flow(r).LastSeen() != p.now {
					t.Fatalf("pipeline %d: connection %v not last seen at the batch's clock %v", k, p.keys[i], p.now)
				}
			}
			p.ct.Exit()
		}
	}
	var taken, batches int
	for round := range 300 {
		if round%50 == 49 { // next hops found again (as after a change of routes)
			for _, tb := range tbs {
				tb.dp.Pipeline(0).resetNextHops()
			}
		}
		n := 1 + rng.IntN(64)
		batch := make([]probe, n)
		for i := range batch {
			batch[i] = probes[rng.IntN(len(probes))]
		}
		runBoth(batch)
		taken += int(tbs[0].dp.Pipeline(0).fastLast)
		batches++
	}
	// The comparison means something only if the path took much of it.
	if pa := tbs[0].dp.Pipeline(0); taken < batches*4 || zeroSums == 0 {
		t.Fatalf("the established path took %d packets in %d batches (counters %+v), %d UDP checksums sent as 0xffff", taken, batches, pa.cnt, zeroSums)
	}
}

// zeroSumUDP is a UDP packet from A's port sport to remote:53 whose
// checksum, once MASQUERADE has translated A to the external address (the
// port kept), computes to zero and so is sent as 0xffff (RFC 768): its
// two payload bytes are found by trying them all.
func zeroSumUDP(t *testing.T, sport uint16) []byte {
	t.Helper()
	p := udpPkt(macA, macIn0, addrA, sport, remote, 53)
	p.payload = []byte{0, 0}
	f := p.bytes(t)
	udp := f[offL4 : offL4+header.UDPLen+2]
	pseudo := header.PseudoSum(addrA, remote, header.ProtoUDP, uint16(len(udp)))
	d := header.Delta(0).Add32(addrA, addrExt).Add32(remote, remote).Add32(uint32(sport)<<16|53, uint32(sport)<<16|53)
	for w := range 1 << 16 {
		binary.BigEndian.PutUint16(udp[header.UDPLen:], uint16(w))
		binary.BigEndian.PutUint16(udp[header.UDPChecksum:], 0)
		c := header.Checksum(udp, pseudo)
		binary.BigEndian.PutUint16(udp[header.UDPChecksum:], c)
		if c != 0 && d.ApplyL4(c, true) == 0xffff {
			return f
		}
	}
	t.Fatal("no payload makes the translated checksum zero")
	return nil
}
