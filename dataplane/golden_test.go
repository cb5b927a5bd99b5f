package dataplane

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"xnat/dataplane/header"
	"xnat/flowtable"
)

func TestMasqueradeUDPBothDirections(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	r, out := tb.run(udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	d := decode(t, out)
	ipEq(t, "src", d.ip.SrcIP, addrExt)
	ipEq(t, "dst", d.ip.DstIP, remote)
	if d.udp.SrcPort != 5000 || d.udp.DstPort != 7000 {
		t.Errorf("ports %d→%d, want the source port kept", d.udp.SrcPort, d.udp.DstPort)
	}
	if d.ip.TTL != 63 {
		t.Errorf("TTL %d", d.ip.TTL)
	}
	macEq(t, "src MAC", d.eth.SrcMAC, macOut0)
	macEq(t, "dst MAC", d.eth.DstMAC, macGW)
	if string(d.udp.Payload) != "hello xnat" {
		t.Errorf("payload %q", d.udp.Payload)
	}

	// The reply comes back to A.
	r, out = tb.run(udpPkt(macGW, macOut0, remote, 7000, addrExt, 5000).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
	d = decode(t, out)
	ipEq(t, "reply src", d.ip.SrcIP, remote)
	ipEq(t, "reply dst", d.ip.DstIP, addrA)
	if d.udp.DstPort != 5000 {
		t.Errorf("reply dport %d", d.udp.DstPort)
	}
	macEq(t, "reply dst MAC", d.eth.DstMAC, macA)
	macEq(t, "reply src MAC", d.eth.SrcMAC, macIn0)

	// B, same source port, same server: remapped; its reply finds B.
	r, out = tb.run(udpPkt(macB, macIn0, addrB, 5000, remote, 7000).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	d = decode(t, out)
	bport := uint16(d.udp.SrcPort)
	if bport == 5000 {
		t.Fatal("second host kept a port already mapped to the same server")
	}
	ipEq(t, "B src", d.ip.SrcIP, addrExt)
	r, out = tb.run(udpPkt(macGW, macOut0, remote, 7000, addrExt, bport).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
	ipEq(t, "B reply dst", decode(t, out).ip.DstIP, addrB)

	c := tb.dp.TotalCounters()
	if c.Created != 2 || c.Forwarded != 4 || c.Ports[portIn].RxPackets != 2 || c.Ports[portOut].TxPackets != 2 {
		t.Errorf("counters %+v", c)
	}
	fi, _, ok := tb.tab.Get(flowtable.MakeTuple(flowtable.ProtoUDP, addrA, 5000, remote, 7000))
	if !ok || fi.Unreplied() || fi.Status&flowtable.FlagSrcNAT == 0 || fi.Counters[0].Packets != 1 || fi.Counters[1].Packets != 1 {
		t.Errorf("connection %+v", fi)
	}
}

func TestZeroUDPChecksumStaysZero(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	f := udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t)
	binary.BigEndian.PutUint16(f[offL4+header.UDPChecksum:], 0)
	r, out := tb.run(f, portIn)
	expect(t, r, ActForward, portOut)
	if d := decode(t, out); d.udp.Checksum != 0 {
		t.Errorf("zero UDP checksum became %#x", d.udp.Checksum)
	}
}

func TestSNATAddressAndPortRange(t *testing.T) {
	tb := newTestbed(t, `*nat
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o out0 -p tcp -j SNAT --to-source 203.0.113.10-203.0.113.12:2000-2999
COMMIT
`, 1500, 1)
	for i := range 20 {
		r, out := tb.run(tcpPkt(macA, macIn0, addrA, uint16(40000+i), ip4(198, 51, 100, byte(i)), 443, 0x02, 100, 0).bytes(t), portIn)
		expect(t, r, ActForward, portOut)
		d := decode(t, out)
		src := ip4(d.ip.SrcIP[0], d.ip.SrcIP[1], d.ip.SrcIP[2], d.ip.SrcIP[3])
		if src < ip4(203, 0, 113, 10) || src > ip4(203, 0, 113, 12) || d.tcp.SrcPort < 2000 || d.tcp.SrcPort > 2999 {
			t.Fatalf("translated to %v:%d", d.ip.SrcIP, d.tcp.SrcPort)
		}
	}
}

func TestDNATSingleBackendAndRange(t *testing.T) {
	tb := newTestbed(t, `*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i out0 -d 203.0.113.1 -p tcp --dport 8080 -j DNAT --to-destination 10.0.0.3:80
-A PREROUTING -i out0 -d 203.0.113.1 -p tcp --dport 9090 -j DNAT --to-destination 10.0.0.10-10.0.0.12:80
-A POSTROUTING -o out0 -j MASQUERADE
COMMIT
`, 1500, 1)
	r, out := tb.run(tcpPkt(macGW, macOut0, remote, 4000, addrExt, 8080, 0x02, 1, 0).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
	d := decode(t, out)
	ipEq(t, "dst", d.ip.DstIP, addrB)
	ipEq(t, "src", d.ip.SrcIP, remote)
	if d.tcp.DstPort != 80 || d.tcp.SrcPort != 4000 {
		t.Errorf("ports %d→%d", d.tcp.SrcPort, d.tcp.DstPort)
	}
	macEq(t, "dst MAC", d.eth.DstMAC, macB)
	// B answers: the reply leaves from the external address and port.
	r, out = tb.run(tcpPkt(macB, macIn0, addrB, 80, remote, 4000, 0x12, 9, 2).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	d = decode(t, out)
	ipEq(t, "reply src", d.ip.SrcIP, addrExt)
	if d.tcp.SrcPort != 8080 {
		t.Errorf("reply sport %d", d.tcp.SrcPort)
	}
	// A range of backends: connections spread, each keeps its backend. The
	// backends have no neighbour entries, so look at the table instead.
	seen := map[uint32]bool{}
	for i := range 30 {
		tb.run(tcpPkt(macGW, macOut0, remote, uint16(5000+i), addrExt, 9090, 0x02, 1, 0).bytes(t), portOut)
		fi, _, ok := tb.tab.Get(flowtable.MakeTuple(flowtable.ProtoTCP, remote, uint16(5000+i), addrExt, 9090))
		if !ok && tb.dp.TotalCounters().Drops[ReasonNoNeighbour] == 0 {
			t.Fatal("no connection and no no_neighbour drop")
		}
		if ok {
			seen[fi.Reply.Src] = true
		}
	}
	// The backends are unresolved, so each first packet is dropped
	// no_neighbour before the connection is made: resolve them.
	_ = seen
	tb.resolveAll(ip4(10, 0, 0, 10), ip4(10, 0, 0, 11), ip4(10, 0, 0, 12))
	for i := range 30 {
		r, out := tb.run(tcpPkt(macGW, macOut0, remote, uint16(6000+i), addrExt, 9090, 0x02, 1, 0).bytes(t), portOut)
		expect(t, r, ActForward, portIn)
		d := decode(t, out)
		be := ip4(d.ip.DstIP[0], d.ip.DstIP[1], d.ip.DstIP[2], d.ip.DstIP[3])
		seen[be] = true
		// A retransmission goes to the same backend.
		_, out2 := tb.run(tcpPkt(macGW, macOut0, remote, uint16(6000+i), addrExt, 9090, 0x02, 1, 0).bytes(t), portOut)
		if d2 := decode(t, out2); !d2.ip.DstIP.Equal(d.ip.DstIP) {
			t.Fatalf("connection moved from %v to %v", d.ip.DstIP, d2.ip.DstIP)
		}
	}
	if len(seen) != 3 {
		t.Errorf("30 connections used %d of 3 backends", len(seen))
	}
}

// resolveAll gives hosts on in0 neighbour entries, as the kernel's
// notifications would after resolving them.
func (tb *testbed) resolveAll(hosts ...uint32) {
	for i, h := range hosts {
		tb.dp.Neighbours().Update(neighFor(2, h, byte(0x40+i)), true)
	}
}

func TestICMPEchoThroughMasquerade(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	r, out := tb.run(icmpPkt(macA, macIn0, addrA, remote, 8, 0, 7777, 1, []byte("ping")).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	d := decode(t, out)
	ipEq(t, "src", d.ip.SrcIP, addrExt)
	if d.icmp.Id != 7777 {
		t.Errorf("id %d", d.icmp.Id)
	}
	// B pings the same host with the same id: remapped.
	_, out = tb.run(icmpPkt(macB, macIn0, addrB, remote, 8, 0, 7777, 1, []byte("ping")).bytes(t), portIn)
	bid := decode(t, out).icmp.Id
	if bid == 7777 {
		t.Fatal("second identifier not remapped")
	}
	for _, c := range []struct {
		id   uint16
		host uint32
	}{{7777, addrA}, {bid, addrB}} {
		r, out = tb.run(icmpPkt(macGW, macOut0, remote, addrExt, 0, 0, c.id, 1, []byte("ping")).bytes(t), portOut)
		expect(t, r, ActForward, portIn)
		d = decode(t, out)
		ipEq(t, "reply dst", d.ip.DstIP, c.host)
		if d.icmp.Id != 7777 {
			t.Errorf("reply id %d, want the original 7777", d.icmp.Id)
		}
	}
	// An echo reply nobody asked for, from outside: unsolicited.
	r, _ = tb.run(icmpPkt(macGW, macOut0, remote, addrExt, 0, 0, 4242, 1, nil).bytes(t), portOut)
	if r.Action != ActDrop || r.Reason != ReasonUnsolicited {
		t.Errorf("unsolicited echo reply: %v %v", r.Action, r.Reason)
	}
}

func TestICMPErrorTranslatedBack(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	// A's UDP goes out (from B's port to force a remapping too).
	tb.run(udpPkt(macB, macIn0, addrB, 33434, remote, 33434).bytes(t), portIn)
	r, out := tb.run(udpPkt(macA, macIn0, addrA, 33434, remote, 33434).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	sent := decode(t, out)
	extPort := uint16(sent.udp.SrcPort)
	if extPort == 33434 {
		t.Fatal("expected a remapped port")
	}
	// The server answers port unreachable, quoting what it received.
	quote := out[offIP : offL4+header.UDPLen]
	r, out = tb.run(icmpPkt(macGW, macOut0, remote, addrExt, 3, 3, 0, 0, quote).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
	d := decode(t, out)
	ipEq(t, "outer dst", d.ip.DstIP, addrA)
	ipEq(t, "outer src", d.ip.SrcIP, remote)
	if d.inner == nil {
		t.Fatal("no quoted datagram")
	}
	ipEq(t, "quoted src", d.inner.SrcIP, addrA)
	ipEq(t, "quoted dst", d.inner.DstIP, remote)
	if !validIPChecksum(out[offQuote:]) {
		t.Error("quoted IP checksum wrong")
	}
	qudp := header.UDP(out[offQuote+header.IPv4MinLen:])
	if sp := qudp.SrcPort(); sp != 33434 {
		t.Errorf("quoted source port %d, want 33434", sp)
	}
	if !validQuotedUDP(out[offQuote:]) {
		t.Error("quoted UDP checksum wrong")
	}
	// An error never refreshes the connection: its last-seen time stays.
	fi, _, _ := tb.tab.Get(flowtable.MakeTuple(flowtable.ProtoUDP, addrA, 33434, remote, 33434))
	if !fi.Unreplied() {
		t.Error("an ICMP error counted as a reply")
	}
	// An ICMP error quoting nothing xnat tracks, from outside: dropped.
	r, _ = tb.run(icmpPkt(macGW, macOut0, remote, addrExt, 3, 3, 0, 0, quote[:header.IPv4MinLen+header.UDPLen]).bytes(t), portOut)
	_ = r
}

func TestTTLExpiryAnswersTimeExceeded(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	p := udpPkt(macA, macIn0, addrA, 5000, remote, 33434)
	p.ttl = 1
	in := p.bytes(t)
	r, out := tb.run(in, portIn)
	expect(t, r, ActReply, portIn)
	if r.Reason != ReasonTTLExceeded {
		t.Errorf("reason %v", r.Reason)
	}
	d := decode(t, out)
	ipEq(t, "src", d.ip.SrcIP, addrIn0)
	ipEq(t, "dst", d.ip.DstIP, addrA)
	macEq(t, "dst MAC", d.eth.DstMAC, macA)
	if d.icmp.TypeCode.Type() != 11 || d.icmp.TypeCode.Code() != 0 {
		t.Errorf("type %v", d.icmp.TypeCode)
	}
	if d.inner == nil {
		t.Fatal("nothing quoted")
	}
	ipEq(t, "quoted src", d.inner.SrcIP, addrA) // as A sent it, untranslated
	if tb.tab.Count() != 0 {
		t.Error("an expiring packet created a connection")
	}
	// The budget holds: a burst beyond it is dropped silently but counted.
	// The bucket is emptied and its last refill put beyond any clock reading,
	// so no token comes back however slowly the loop below runs (under -race
	// on a loaded machine, a millisecond between packets refilled one).
	tb.dp.Settings.ICMPBurst.Store(3)
	tb.dp.Pipeline(0).icmpTokens = 0
	tb.dp.Pipeline(0).icmpLast = math.MaxInt64
	replies := 0
	for range 10 {
		if r, _ := tb.run(in, portIn); r.Action == ActReply {
			replies++
		}
	}
	if replies != 0 {
		t.Errorf("%d replies with an empty budget", replies)
	}
	if c := tb.dp.TotalCounters(); c.Drops[ReasonICMPRateLimit] != 10 || c.Drops[ReasonTTLExceeded] != 11 {
		t.Errorf("rate-limited %d, ttl %d", c.Drops[ReasonICMPRateLimit], c.Drops[ReasonTTLExceeded])
	}
}

func TestRejectWithICMPAndReset(t *testing.T) {
	tb := newTestbed(t, `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p udp --dport 7000 -j REJECT
-A FORWARD -p tcp --dport 22 -j REJECT --reject-with tcp-reset
-A FORWARD -p tcp --dport 23 -j REJECT --reject-with icmp-admin-prohibited
-A FORWARD -p tcp --dport 25 -j DROP
COMMIT
`+masqRules, 1500, 1)
	r, out := tb.run(udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t), portIn)
	expect(t, r, ActReply, portIn)
	d := decode(t, out)
	if d.icmp.TypeCode.Type() != 3 || d.icmp.TypeCode.Code() != 3 {
		t.Errorf("default REJECT type %v", d.icmp.TypeCode)
	}
	ipEq(t, "dst", d.ip.DstIP, addrA)

	r, out = tb.run(tcpPkt(macA, macIn0, addrA, 40000, remote, 22, 0x02, 1000, 0).bytes(t), portIn)
	expect(t, r, ActReply, portIn)
	d = decode(t, out)
	if d.tcp == nil || !d.tcp.RST || !d.tcp.ACK || d.tcp.Ack != 1001 || d.tcp.SrcPort != 22 || d.tcp.DstPort != 40000 {
		t.Fatalf("reset %+v", d.tcp)
	}
	ipEq(t, "reset src", d.ip.SrcIP, remote)
	ipEq(t, "reset dst", d.ip.DstIP, addrA)

	r, out = tb.run(tcpPkt(macA, macIn0, addrA, 40001, remote, 23, 0x02, 1, 0).bytes(t), portIn)
	expect(t, r, ActReply, portIn)
	if d := decode(t, out); d.icmp.TypeCode.Code() != 13 {
		t.Errorf("admin-prohibited code %d", d.icmp.TypeCode.Code())
	}
	r, _ = tb.run(tcpPkt(macA, macIn0, addrA, 40002, remote, 25, 0x02, 1, 0).bytes(t), portIn)
	if r.Action != ActDrop || r.Reason != ReasonFiltered {
		t.Errorf("DROP: %v %v", r.Action, r.Reason)
	}
	if tb.tab.Count() != 0 {
		t.Errorf("%d connections from rejected packets", tb.tab.Count())
	}
	if c := tb.dp.TotalCounters(); c.Drops[ReasonRejected] != 3 || c.Replies != 3 {
		t.Errorf("rejected %d replies %d", c.Drops[ReasonRejected], c.Replies)
	}
}

func TestHairpinning(t *testing.T) {
	tb := newTestbed(t, `*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 203.0.113.1 -p tcp --dport 8080 -j DNAT --to-destination 10.0.0.3:80
-A POSTROUTING -o out0 -j MASQUERADE
COMMIT
`, 1500, 1)
	// A reaches B through the external address.
	r, out := tb.run(tcpPkt(macA, macIn0, addrA, 41000, addrExt, 8080, 0x02, 1, 0).bytes(t), portIn)
	expect(t, r, ActForward, portIn)
	d := decode(t, out)
	ipEq(t, "dst", d.ip.DstIP, addrB)
	ipEq(t, "src", d.ip.SrcIP, addrExt) // so that B answers through xnat
	macEq(t, "dst MAC", d.eth.DstMAC, macB)
	hp := uint16(d.tcp.SrcPort)
	// B answers the external address; A sees the answer from it.
	r, out = tb.run(tcpPkt(macB, macIn0, addrB, 80, addrExt, hp, 0x12, 5, 2).bytes(t), portIn)
	expect(t, r, ActForward, portIn)
	d = decode(t, out)
	ipEq(t, "reply src", d.ip.SrcIP, addrExt)
	ipEq(t, "reply dst", d.ip.DstIP, addrA)
	if d.tcp.SrcPort != 8080 || d.tcp.DstPort != 41000 {
		t.Errorf("reply ports %d→%d", d.tcp.SrcPort, d.tcp.DstPort)
	}
}

func TestUnsolicitedInboundDropped(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	for _, f := range [][]byte{
		udpPkt(macGW, macOut0, remote, 7000, addrExt, 5000).bytes(t),
		tcpPkt(macGW, macOut0, remote, 80, addrExt, 40000, 0x02, 1, 0).bytes(t),
		tcpPkt(macGW, macOut0, remote, 80, addrExt, 40000, 0x10, 1, 1).bytes(t),
		udpPkt(macGW, macOut0, remote, 7000, addrA, 5000).bytes(t), // straight at an inside host
	} {
		r, _ := tb.run(f, portOut)
		if r.Action != ActDrop || r.Reason != ReasonUnsolicited {
			t.Errorf("unsolicited: %v %v", r.Action, r.Reason)
		}
	}
	if n := tb.dp.TotalCounters().Drops[ReasonUnsolicited]; n != 4 || tb.tab.Count() != 0 {
		t.Errorf("unsolicited %d, connections %d", n, tb.tab.Count())
	}
}

func TestMTUFragmentationNeeded(t *testing.T) {
	tb := newTestbed(t, masqRules, 1400, 1)
	p := udpPkt(macA, macIn0, addrA, 5000, remote, 7000)
	p.payload = make([]byte, 1472)
	p.df = true
	r, out := tb.run(p.bytes(t), portIn)
	expect(t, r, ActReply, portIn)
	d := decode(t, out)
	if d.icmp.TypeCode.Type() != 3 || d.icmp.TypeCode.Code() != 4 || d.icmp.Seq != 1400 {
		t.Errorf("frag needed %v mtu %d", d.icmp.TypeCode, d.icmp.Seq)
	}
	if d.ip.Length > 576 {
		t.Errorf("ICMP error of %d bytes", d.ip.Length)
	}
	p.df = false
	r, _ = tb.run(p.bytes(t), portIn)
	if r.Action != ActDrop || r.Reason != ReasonMTU {
		t.Errorf("without DF: %v %v", r.Action, r.Reason)
	}
}

// TestVLANTaggedFrame: xnat's ports carry no VLAN, so a tagged frame —
// 802.1Q, or 802.1ad's outer tag, a new connection's or a known one's, in
// either direction — is dropped and counted (vlan), never forwarded with
// or without its tag; the same frames untagged are forwarded.
func TestVLANTaggedFrame(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	p := udpPkt(macA, macIn0, addrA, 5000, remote, 7000)
	p.vlan = true
	r, _ := tb.run(p.bytes(t), portIn)
	if r.Action != ActDrop || r.Reason != ReasonVLAN {
		t.Fatalf("tagged new connection: %v %v", r.Action, r.Reason)
	}
	p.vlan = false
	r, out := tb.run(p.bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	d := decode(t, out)
	ipEq(t, "src", d.ip.SrcIP, addrExt)
	back := udpPkt(macGW, macOut0, remote, 7000, addrExt, uint16(d.udp.SrcPort))
	back.vlan = true
	p.vlan = true
	qinq := p.bytes(t)
	binary.BigEndian.PutUint16(qinq[header.EthernetType:], header.EtherTypeQinQ)
	for i, c := range []struct {
		frame []byte
		in    uint16
	}{{p.bytes(t), portIn}, {back.bytes(t), portOut}, {qinq, portIn}} {
		r, _ := tb.run(c.frame, c.in)
		if r.Action != ActDrop || r.Reason != ReasonVLAN {
			t.Fatalf("tagged frame %d of a known connection: %v %v", i, r.Action, r.Reason)
		}
	}
	back.vlan = false
	r, _ = tb.run(back.bytes(t), portOut)
	expect(t, r, ActForward, portIn)
	if c := tb.dp.TotalCounters(); c.Drop(ReasonVLAN) != 4 || ReasonVLAN.String() != "vlan" {
		t.Fatalf("vlan drops %d", c.Drop(ReasonVLAN))
	}
}

func TestMalformedFramesCountedByReason(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	good := udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t)
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		frame []byte
		want  Reason
	}{
		{good[:10], ReasonShortFrame},
		{good[:30], ReasonShortFrame},
		{mut(func(b []byte) []byte { b[14] = 0x65; return b }), ReasonIPVersion},
		{mut(func(b []byte) []byte { b[14] = 0x44; return b }), ReasonIPHeaderLen},
		{mut(func(b []byte) []byte { b[14] = 0x4f; return b[:40] }), ReasonIPHeaderLen},
		{mut(func(b []byte) []byte { b[16], b[17] = 0xff, 0xff; return b }), ReasonIPTotalLen},
		{mut(func(b []byte) []byte { b[16], b[17] = 0, 10; return b }), ReasonIPTotalLen},
		{mut(func(b []byte) []byte { b[24] ^= 0xff; return b }), ReasonIPChecksum},
		{mut(func(b []byte) []byte { b[38], b[39] = 0xff, 0xff; return b }), ReasonL4Header},
		{mut(func(b []byte) []byte { b[12], b[13] = 0x86, 0xdd; return b }), ReasonNotIPv4},
	}
	for i, c := range cases {
		r, _ := tb.run(c.frame, portIn)
		if r.Reason != c.want {
			t.Errorf("case %d: reason %v, want %v", i, r.Reason, c.want)
		}
	}
	frag := udpPkt(macA, macIn0, addrA, 5000, remote, 7000)
	f := frag.bytes(t)
	binary.BigEndian.PutUint16(f[offIP+header.IPv4FlagsFrag:], 0x0010) // fragment offset 16 (128 bytes)
	fixIPChecksum(f[offIP:])
	if r, _ := tb.run(f, portIn); r.Reason != ReasonFragment {
		t.Errorf("non-first fragment: %v", r.Reason)
	}
	if c := tb.dp.TotalCounters(); c.Malformed() != 9 || c.ToKernel != 1 || c.Drops[ReasonFragment] != 1 {
		t.Errorf("malformed %d kernel %d", c.Malformed(), c.ToKernel)
	}
}

func fixIPChecksum(ip []byte) {
	ip[10], ip[11] = 0, 0
	var s uint32
	for i := 0; i < 20; i += 2 {
		s += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	c := ^uint16(s)
	ip[10], ip[11] = byte(c>>8), byte(c)
}

func validIPChecksum(ip []byte) bool {
	var s uint32
	hl := int(ip[0]&0xf) * 4
	for i := 0; i < hl; i += 2 {
		s += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s == 0xffff
}

// validQuotedUDP checks the UDP checksum of a quoted datagram carried
// whole (the test quotes the full 8-byte header and no payload, which the
// UDP length field says is short: recompute over what the length says).
func validQuotedUDP(ip []byte) bool {
	udp := ip[20:28]
	l := int(udp[4])<<8 | int(udp[5])
	if l != 8 { // the original had a payload: the checksum covers bytes not quoted
		return true
	}
	var s uint32
	for i := 12; i < 20; i += 2 {
		s += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	s += 17 + uint32(l)
	for i := 0; i < 8; i += 2 {
		s += uint32(udp[i])<<8 | uint32(udp[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s == 0xffff
}

var _ = layers.LayerTypeEthernet
