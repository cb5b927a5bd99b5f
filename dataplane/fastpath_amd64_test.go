package dataplane

import (
	"testing"

	"golang.org/x/sys/unix"
)

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

// guardedMemory returns a page-end window of memory whose next page is
// unmapped: a slice of n bytes ending there (guarded(n)) faults on any
// access beyond its end.
func guardedMemory(t *testing.T) func(n int) []byte {
	t.Helper()
	page := unix.Getpagesize()
	mem, err := unix.Mmap(-1, 0, 2*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	if err := unix.Mprotect(mem[page:], unix.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	return func(n int) []byte { return mem[page-n : page : page] }
}

// TestParseFastReadsWithinFrames: each seed, cut to every length, placed
// so that its last byte is the last of a page whose next page is
// unmapped, goes through both loops of the parser's fast path: a read
// beyond a frame's size would fault there.
func TestParseFastReadsWithinFrames(t *testing.T) {
	guarded := guardedMemory(t)
	p := fastParser(t)
	for _, s := range parseSeeds(t) {
		for n := range len(s) + 1 {
			frame := guarded(n)
			copy(frame, s)
			checkParseFastBatch(t, p, [][]byte{frame}, []uint16{portIn})
		}
	}
}

// TestEstablishedPathWritesWithinFrames: the smallest frames the
// established path takes (TCP and UDP with no payload, with and without
// an 802.1Q tag), each ending where an unmapped page begins, are taken
// and forwarded: the path reads and writes nothing beyond them.
func TestEstablishedPathWritesWithinFrames(t *testing.T) {
	guarded := guardedMemory(t)
	for _, vlan := range []bool{false, true} {
		udp := udpPkt(macA, macIn0, addrA, 5000, remote, 7000)
		udp.payload, udp.vlan = nil, vlan
		syn := tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fSYN, 1, 0)
		synAck := tcpPkt(macGW, macOut0, remote, 443, addrExt, 40000, fSYNACK, 1, 2)
		ack := tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fACK, 2, 2)
		syn.vlan, synAck.vlan, ack.vlan = vlan, vlan, vlan
		for _, c := range []struct {
			setup []pkt
			ins   []uint16
			probe pkt
			size  int
		}{
			{[]pkt{udp}, []uint16{portIn}, udp, 42},
			{[]pkt{syn, synAck, ack}, []uint16{portIn, portOut, portIn}, ack, 54},
		} {
			tb := newTestbed(t, dnatRules, 1500, 1)
			for i, s := range c.setup {
				tb.run(s.bytes(t), c.ins[i])
			}
			size := c.size
			if vlan {
				size += 4
			}
			frame := guarded(size)
			copy(frame, c.probe.bytes(t))
			out := make([]Result, 1)
			p := tb.dp.Pipeline(0)
			p.Process([][]byte{frame}, []int{size}, []uint16{portIn}, out)
			if out[0].Action != ActForward || p.fastLast != 1 {
				t.Fatalf("vlan %v, %d bytes: %+v, established path took %d", vlan, size, out[0], p.fastLast)
			}
			if err := checksumError(frame); err != "" {
				t.Fatalf("vlan %v, %d bytes: %s", vlan, size, err)
			}
		}
	}
}
