package dataplane

import (
	"math/rand/v2"
	"testing"

	"xnat/dataplane/header"
)

// TestICMPErrorOtherDestination: an error quoting a live connection whose
// outer destination is not the quoted datagram's source is INVALID: not
// forwarded (there, or anywhere).
func TestICMPErrorOtherDestination(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	r, out := tb.run(tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fSYN, 7, 0).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	quote := append([]byte(nil), out[offIP:offL4+header.TCPMinLen]...)
	router := ip4(198, 51, 100, 1)
	for _, dst := range []uint32{addrPeer, ip4(198, 51, 100, 200), addrA} {
		before := tb.tab.TotalStats().Invalid
		r, _ = tb.run(icmpPkt(macGW, macOut0, router, dst, 3, 1, 0, 0, quote).bytes(t), portOut)
		if r.Action == ActForward {
			t.Errorf("error to %v quoting a live connection forwarded on port %d", netIP(dst), r.Port)
		}
		if tb.tab.TotalStats().Invalid != before+1 {
			t.Errorf("error to %v not counted invalid", netIP(dst))
		}
	}
	// The one to the external address, from outside, goes to A.
	r, _ = tb.run(icmpPkt(macGW, macOut0, router, addrExt, 3, 1, 0, 0, quote).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
}

// TestICMPErrorSpoofedSourceFromInside: an inside host sends an error
// about a MASQUERADE'd connection with a forged outer source; it leaves
// with the external address as its source, as Linux rewrites it. The
// connection's own host's error is rewritten the same way.
func TestICMPErrorSpoofedSourceFromInside(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	r, out := tb.run(udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	ext := decode(t, out).udp.SrcPort
	r, out = tb.run(udpPkt(macGW, macOut0, remote, 7000, addrExt, uint16(ext)).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
	quote := append([]byte(nil), out[offIP:offL4+header.UDPLen]...) // what A received: remote:7000 -> A:5000
	// A forged source from outside the inside network is refused by the
	// strict reverse-path filter, as Linux's rp_filter=1 refuses it;
	// with the filter off it leaves rewritten like the others.
	forged := ip4(198, 51, 100, 99)
	r, _ = tb.run(icmpPkt(macB, macIn0, forged, remote, 3, 3, 0, 0, quote).bytes(t), portIn)
	if r.Action != ActDrop || r.Reason != ReasonRPFilter {
		t.Fatalf("forged source: %v (reason %v), want a drop as rp_filter", r.Action, r.Reason)
	}
	tb.dp.Settings.RPFilter.All.Store(RPFilterOff)
	for _, src := range []uint32{forged, addrB, addrA} {
		r, out = tb.run(icmpPkt(macB, macIn0, src, remote, 3, 3, 0, 0, quote).bytes(t), portIn)
		expect(t, r, ActForward, portOut)
		d := decode(t, out)
		ipEq(t, "outer src", d.ip.SrcIP, addrExt)
		ipEq(t, "outer dst", d.ip.DstIP, remote)
		ipEq(t, "quoted dst", d.inner.DstIP, addrExt)
		if dp := header.UDP(quotedL4(out)).DstPort(); dp != uint16(ext) {
			t.Errorf("quoted destination port %d, want %d", dp, ext)
		}
		if !validQuotedUDP(out[offQuote:]) {
			t.Error("quoted UDP checksum wrong")
		}
	}
	// Quoting the connection in the other direction (as if A's own
	// datagram came back to A): its outer destination is not that
	// datagram's source, so INVALID, and dropped as bound outside.
	r, out = tb.run(udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	quote = append([]byte(nil), out[offIP:offL4+header.UDPLen]...)
	r, _ = tb.run(icmpPkt(macB, macIn0, addrB, remote, 3, 3, 0, 0, quote).bytes(t), portIn)
	if r.Action != ActDrop {
		t.Errorf("error quoting the wrong direction: %v on port %d", r.Action, r.Port)
	}
}

// TestInvalidNoLeak: INVALID packets from inside that match no connection
// (an orphan reset, an orphan echo reply, an error about nothing, a
// mid-stream segment with loose pickup off) are dropped and counted as
// invalid, not sent out untranslated.
func TestInvalidNoLeak(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	tb.dp.Settings.TCPLoose.Store(false)
	quote := udpPkt(macGW, macOut0, remote, 53, addrExt, 9999).bytes(t)[offIP : offL4+header.UDPLen]
	for _, c := range []struct {
		name  string
		frame []byte
	}{
		{"orphan reset", tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fRST, 7, 0).bytes(t)},
		{"orphan reset/ACK", tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fRST|fACK, 7, 9).bytes(t)},
		{"orphan echo reply", icmpPkt(macA, macIn0, addrA, remote, 0, 0, 77, 1, []byte("pong")).bytes(t)},
		{"error about nothing", icmpPkt(macA, macIn0, addrA, remote, 3, 3, 0, 0, quote).bytes(t)},
		{"mid-stream ACK, loose off", tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fACK, 7, 9).bytes(t)},
	} {
		before := tb.tab.TotalStats().Invalid
		r, _ := tb.run(c.frame, portIn)
		if r.Action != ActDrop || r.Reason != ReasonInvalid {
			t.Errorf("%s: %v %v on port %d, want dropped as invalid", c.name, r.Action, r.Reason, r.Port)
		}
		if tb.tab.TotalStats().Invalid != before+1 {
			t.Errorf("%s: not counted invalid", c.name)
		}
	}
}

// TestNothingLeavesWithInsideSource: random traffic from inside (TCP with
// random flags and numbers, UDP, echo requests and replies, ICMP errors
// quoting live connections either way or nothing), beside live
// connections, never puts a frame on the outside port whose source, or
// whose quoted datagram's destination, is an inside address.
func TestNothingLeavesWithInsideSource(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, loose := range []bool{true, false} {
		tb := newTestbed(t, dnatRules, 1500, 1)
		tb.dp.Settings.TCPLoose.Store(loose)
		var quotes [][]byte
		// Live connections, their packets as the inside hosts see them.
		for i := range 8 {
			sport := uint16(41000 + i)
			r, out := tb.run(tcpPkt(macA, macIn0, addrA, sport, remote, 443, fSYN, 100, 0).bytes(t), portIn)
			expect(t, r, ActForward, portOut)
			ext := decode(t, out).tcp.SrcPort
			quotes = append(quotes, append([]byte(nil), out[offIP:offL4+header.TCPMinLen]...))
			r, out = tb.run(tcpPkt(macGW, macOut0, remote, 443, addrExt, uint16(ext), fSYNACK, 500, 101).bytes(t), portOut)
			expect(t, r, ActForward, portIn)
			quotes = append(quotes, append([]byte(nil), out[offIP:offL4+header.TCPMinLen]...))
		}
		inside := func(a uint32) bool { return a>>8 == addrA>>8 }
		hosts := []uint32{addrA, addrB}
		macs := [][6]byte{macA, macB}
		for range 3000 {
			h := rng.IntN(2)
			src, mac := hosts[h], macs[h]
			if rng.IntN(8) == 0 {
				src = rng.Uint32() // forged
			}
			var f []byte
			switch rng.IntN(5) {
			case 0, 1:
				f = tcpPkt(mac, macIn0, src, uint16(41000+rng.IntN(10)), remote, 443, uint8(rng.IntN(64)), rng.Uint32(), rng.Uint32()).bytes(t)
			case 2:
				f = udpPkt(mac, macIn0, src, uint16(5000+rng.IntN(4)), remote, 53).bytes(t)
			case 3:
				f = icmpPkt(mac, macIn0, src, remote, []uint8{0, 8}[rng.IntN(2)], 0, uint16(rng.IntN(4)), 1, []byte("x")).bytes(t)
			default:
				q := quotes[rng.IntN(len(quotes))]
				dst := remote
				if rng.IntN(4) == 0 {
					dst = rng.Uint32()
				}
				f = icmpPkt(mac, macIn0, src, dst, 3, uint8(rng.IntN(4)), 0, 0, q).bytes(t)
			}
			r, out := tb.run(f, portIn)
			if r.Action != ActForward || r.Port != portOut {
				continue
			}
			ip := header.IPv4(out[offIP:])
			if inside(ip.Src()) {
				t.Fatalf("loose %v: a frame left with source %v", loose, netIP(ip.Src()))
			}
			if ip.Protocol() == header.ProtoICMP && header.ICMPv4(out[offL4:]).Type() == 3 {
				if q := header.IPv4(out[offQuote:]); inside(q.Dst()) || inside(q.Src()) {
					t.Fatalf("loose %v: an error left quoting %v -> %v", loose, netIP(q.Src()), netIP(q.Dst()))
				}
			}
		}
	}
}
