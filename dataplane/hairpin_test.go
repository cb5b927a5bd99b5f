package dataplane

import (
	"testing"
)

// hairpinMasqRules: a service on inside host B published on the outside
// address, and inside clients masqueraded towards it, so that B answers
// through xnat (the recipe of iptables' documentation for hairpinning).
const hairpinMasqRules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 203.0.113.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.3:8000
-A POSTROUTING -s 10.0.0.0/24 -d 10.0.0.3/32 -p tcp -m tcp --dport 8000 -j MASQUERADE
COMMIT
`

// TestMasqueradeOutOfInsidePort: MASQUERADE out of the inside port takes
// that port's address, as Linux does; the reply comes back translated
// to the outside address and port the client aimed at.
func TestMasqueradeOutOfInsidePort(t *testing.T) {
	tb := newTestbed(t, hairpinMasqRules, 1500, 1)
	r, out := tb.run(tcpPkt(macA, macIn0, addrA, 41000, addrExt, 8080, 0x02, 100, 0).bytes(t), portIn)
	expect(t, r, ActForward, portIn)
	d := decode(t, out)
	ipEq(t, "SYN source", d.ip.SrcIP, addrIn0)
	ipEq(t, "SYN destination", d.ip.DstIP, addrB)
	macEq(t, "SYN destination MAC", d.eth.DstMAC, macB)
	if d.tcp.DstPort != 8000 {
		t.Fatalf("SYN destination port %d, want 8000", d.tcp.DstPort)
	}
	ext := uint16(d.tcp.SrcPort)
	r, out = tb.run(tcpPkt(macB, macIn0, addrB, 8000, addrIn0, ext, 0x12, 500, 101).bytes(t), portIn)
	expect(t, r, ActForward, portIn)
	d = decode(t, out)
	ipEq(t, "SYN-ACK source", d.ip.SrcIP, addrExt)
	ipEq(t, "SYN-ACK destination", d.ip.DstIP, addrA)
	macEq(t, "SYN-ACK destination MAC", d.eth.DstMAC, macA)
	if d.tcp.SrcPort != 8080 || d.tcp.DstPort != 41000 {
		t.Fatalf("SYN-ACK ports %d -> %d, want 8080 -> 41000", d.tcp.SrcPort, d.tcp.DstPort)
	}
	c := tb.dp.TotalCounters()
	if c.Drop(ReasonNoAddress) != 0 {
		t.Fatalf("no_address drops: %d", c.Drop(ReasonNoAddress))
	}
}
