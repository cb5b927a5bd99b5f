package dataplane

import (
	"encoding/binary"
	"testing"

	"xnat/dataplane/header"
)

// fragment cuts a whole datagram (an untagged frame without IP options)
// into the first fragment carrying data bytes of its payload, or into
// the later one carrying the rest, with the header checksum recomputed.
func fragment(whole []byte, data int, first bool) []byte {
	ipLen := int(binary.BigEndian.Uint16(whole[offIP+header.IPv4TotalLen:]))
	var f []byte
	if first {
		f = append([]byte(nil), whole[:offL4+data]...)
	} else {
		f = append(append([]byte(nil), whole[:offL4]...), whole[offL4+data:offIP+ipLen]...)
	}
	ip := header.IPv4(f[offIP:])
	ip.SetTotalLen(uint16(len(f) - offIP))
	if first {
		ip.SetFlagsFrag(header.IPv4MoreFragments)
	} else {
		ip.SetFlagsFrag(uint16(data / 8))
	}
	ip.SetChecksum(0)
	ip.SetChecksum(ip.ComputeChecksum())
	return f
}

// TestFirstFragmentTranslated: the first fragment of a UDP datagram
// creates the connection and is translated, its UDP checksum (over the
// whole datagram) updated so that the reassembled datagram checks; the
// later fragment is counted and dropped.
func TestFirstFragmentTranslated(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	p := udpPkt(macA, macIn0, addrA, 40000, remote, 5300)
	p.payload = make([]byte, 200)
	for i := range p.payload {
		p.payload[i] = byte(i * 7)
	}
	whole := p.bytes(t)
	const firstData = 8 + 96 // the UDP header and 96 bytes: a multiple of 8
	r, out := tb.run(fragment(whole, firstData, true), portIn)
	expect(t, r, ActForward, portOut)
	ip := header.IPv4(out[offIP:])
	if ip.Src() != addrExt || !ip.MoreFragments() || !ip.IsValidChecksum() {
		t.Fatalf("first fragment: source %s, MF %v, checksum valid %v", netIP(ip.Src()), ip.MoreFragments(), ip.IsValidChecksum())
	}
	// Reassembled: the translated first fragment's data and the rest as sent.
	re := append(append([]byte(nil), out[:offL4+firstData]...), whole[offL4+firstData:]...)
	rip := header.IPv4(re[offIP:])
	rip.SetTotalLen(uint16(len(re) - offIP))
	rip.SetFlagsFrag(0)
	rip.SetChecksum(0)
	rip.SetChecksum(rip.ComputeChecksum())
	d := decode(t, re) // checks the UDP checksum over the whole datagram
	if d.udp == nil || uint16(d.udp.DstPort) != 5300 {
		t.Fatalf("reassembled datagram: %+v", d.udp)
	}
	if got := tb.tab.Count(); got != 1 {
		t.Fatalf("connections after the first fragment: %d, want 1", got)
	}
	r, _ = tb.run(fragment(whole, firstData, false), portIn)
	if r.Action != ActDrop || r.Reason != ReasonFragment {
		t.Fatalf("later fragment: %v %v, want drop (fragment)", r.Action, r.Reason)
	}
	if c := tb.dp.TotalCounters(); c.Drop(ReasonFragment) != 1 {
		t.Fatalf("fragment drops %d, want 1", c.Drop(ReasonFragment))
	}
}
