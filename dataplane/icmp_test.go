package dataplane

import (
	"testing"
	"time"

	"xnat/dataplane/header"
)

// quotedL4 returns the transport header of the datagram an ICMP error
// frame quotes.
func quotedL4(frame []byte) []byte {
	inner := frame[offQuote:]
	return inner[header.IPv4(inner).HeaderLen():]
}

// TestICMPErrorAboutTCP: a router past the gateway answers time exceeded
// about a translated TCP segment; the error reaches A with the quoted
// segment's address, port and checksum translated back.
func TestICMPErrorAboutTCP(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	tb.run(tcpPkt(macB, macIn0, addrB, 40000, remote, 443, fSYN, 7, 0).bytes(t), portIn)
	r, out := tb.run(tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fSYN, 7, 0).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	ext := decode(t, out).tcp.SrcPort
	router := ip4(198, 51, 100, 1)
	quote := append([]byte(nil), out[offIP:offL4+header.TCPMinLen]...) // IP header and the whole TCP header
	r, out = tb.run(icmpPkt(macGW, macOut0, router, addrExt, 11, 0, 0, 0, quote).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
	d := decode(t, out)
	ipEq(t, "outer src", d.ip.SrcIP, router) // the router is not translated
	ipEq(t, "outer dst", d.ip.DstIP, addrA)
	ipEq(t, "quoted src", d.inner.SrcIP, addrA)
	q := quotedL4(out)
	if sp := header.TCP(q).SrcPort(); sp != 40000 || uint16(ext) == 40000 {
		t.Errorf("quoted source port %d (external was %d)", sp, ext)
	}
	// The quoted TCP checksum is valid for the translated quote.
	inner := header.IPv4(out[offQuote : offQuote+header.IPv4MinLen+header.TCPMinLen])
	sum := header.Sum(inner[header.IPv4MinLen:], header.PseudoSum(inner.Src(), inner.Dst(), header.ProtoTCP, header.TCPMinLen))
	if sum != 0xffff {
		t.Errorf("quoted TCP checksum wrong after translation (sum %#x)", sum)
	}
	if !validIPChecksum(inner) {
		t.Error("quoted IP checksum wrong")
	}
}

// TestICMPErrorAboutPing: time exceeded about a translated echo request
// (a traceroute with ping) comes back with the quoted identifier restored.
func TestICMPErrorAboutPing(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	tb.run(icmpPkt(macB, macIn0, addrB, remote, 8, 0, 321, 1, []byte("tr")).bytes(t), portIn)
	r, out := tb.run(icmpPkt(macA, macIn0, addrA, remote, 8, 0, 321, 1, []byte("tr")).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	if decode(t, out).icmp.Id == 321 {
		t.Fatal("expected a remapped id")
	}
	quote := append([]byte(nil), out[offIP:offL4+header.ICMPLen+2]...) // the whole echo: headers and "tr"
	r, out = tb.run(icmpPkt(macGW, macOut0, ip4(198, 51, 100, 1), addrExt, 11, 0, 0, 0, quote).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
	d := decode(t, out)
	ipEq(t, "outer dst", d.ip.DstIP, addrA)
	q := quotedL4(out)
	if id := header.ICMPv4(q).ID(); id != 321 {
		t.Errorf("quoted id %d, want 321", id)
	}
	if header.Sum(q[:header.ICMPLen+2], 0) != 0xffff {
		t.Error("quoted ICMP checksum wrong")
	}
}

// TestICMPErrorFromInside: an inside server behind DNAT answers port
// unreachable to the outside client; the error leaves with the external
// address as its source and the quote translated to what the client sent.
func TestICMPErrorFromInside(t *testing.T) {
	tb := newTestbed(t, `*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i out0 -d 203.0.113.1 -p udp --dport 5353 -j DNAT --to-destination 10.0.0.3:53
-A POSTROUTING -o out0 -j MASQUERADE
COMMIT
`, 1500, 1)
	r, out := tb.run(udpPkt(macGW, macOut0, remote, 6000, addrExt, 5353).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
	quote := append([]byte(nil), out[offIP:offL4+header.UDPLen]...) // what B received: remote:6000 -> B:53
	r, out = tb.run(icmpPkt(macB, macIn0, addrB, remote, 3, 3, 0, 0, quote).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	d := decode(t, out)
	ipEq(t, "outer src", d.ip.SrcIP, addrExt)
	ipEq(t, "outer dst", d.ip.DstIP, remote)
	ipEq(t, "quoted dst", d.inner.DstIP, addrExt)
	ipEq(t, "quoted src", d.inner.SrcIP, remote)
	q := quotedL4(out)
	if dp := header.UDP(q).DstPort(); dp != 5353 {
		t.Errorf("quoted destination port %d, want 5353", dp)
	}
	if !validQuotedUDP(out[offQuote:]) {
		t.Error("quoted UDP checksum wrong")
	}
}

// TestICMPBudgetRefill: the ICMP error budget refills at its rate, and the
// time not yet worth a token is carried to the next refill; after a quiet
// spell long enough that quiet time × rate leaves int64 (three hours at
// the sysctl's largest rate), it refills whole, where the product turned
// negative and refills stopped for good.
func TestICMPBudgetRefill(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	p := tb.dp.Pipeline(0)
	s := tb.dp.Settings
	s.ICMPRate.Store(1000)
	s.ICMPBurst.Store(5)
	p.icmpTokens, p.icmpLast, p.nowNs = 0, 0, 2_500_000 // 2.5 ms: 2 tokens, 0.5 ms carried
	if !p.icmpAllowed() || p.icmpTokens != 1 || p.icmpLast != 2_000_000 {
		t.Fatalf("after 2.5 ms at 1000/s: %d tokens left, last refill %d ns", p.icmpTokens, p.icmpLast)
	}
	p.nowNs = 3_000_000 // 0.5 ms later: one more
	if n := allowedOf(p, 5); n != 2 {
		t.Fatalf("after 3 ms: the budget gave %d, want 2", n)
	}
	s.ICMPRate.Store(1_000_000)
	p.icmpTokens, p.icmpLast = 0, 0
	p.nowNs = int64(3 * time.Hour)
	if n := allowedOf(p, 10); n != 5 {
		t.Fatalf("after three quiet hours: the budget gave %d, want the burst, 5", n)
	}
}

// allowedOf is how many of n ICMP errors in a row the budget allows.
func allowedOf(p *Pipeline, n int) int {
	allowed := 0
	for range n {
		if p.icmpAllowed() {
			allowed++
		}
	}
	return allowed
}
