package dataplane

import "testing"

// TestParseFastAsmSizeBeyondCapacity: a size beyond its frame's capacity
// (where parseFastGo panics slicing) leaves the frame to the full path,
// which panics the same way, and the assembly reads nothing of it and
// counts nothing.
func TestParseFastAsmSizeBeyondCapacity(t *testing.T) {
	p := fastParser(t)
	udp := udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t)
	frames := [][]byte{udp[:42:42], udp}
	sizes := []int{len(udp), len(udp)}
	in := []uint16{portIn, portIn}
	before := p.cnt.Ports[portIn]
	if rest := parseFastAMD64(p, &frames[0], &sizes[0], &in[0], 2, len(p.env.Ports)); rest != 1 {
		t.Fatalf("rest %#b, want the first frame only", rest)
	}
	if got := p.cnt.Ports[portIn]; got.RxPackets-before.RxPackets != 1 || got.RxBytes-before.RxBytes != uint64(len(udp)) {
		t.Fatalf("receive counters %+v after %+v: want the second frame alone", got, before)
	}
}
