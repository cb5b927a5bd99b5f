package dataplane

import (
	"encoding/binary"
	"testing"

	"xnat/dataplane/header"
)

// TestNoAllocsPerBatch asserts the packet path allocates nothing: a batch
// of established traffic in both directions, and a batch of new
// connections (each creating a connection and allocating a port).
func TestNoAllocsPerBatch(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	p := tb.dp.Pipeline(0)
	const n = 64
	mk := func(gen func(i int) []byte) ([][]byte, [][]byte, []int, []uint16) {
		orig := make([][]byte, n)
		frames := make([][]byte, n)
		sizes := make([]int, n)
		in := make([]uint16, n)
		for i := range n {
			orig[i] = gen(i)
			frames[i] = make([]byte, len(orig[i]), 2048)
		}
		return orig, frames, sizes, in
	}
	reset := func(orig, frames [][]byte, sizes []int, in []uint16, port uint16) {
		for i := range frames {
			frames[i] = frames[i][:len(orig[i])]
			copy(frames[i], orig[i])
			sizes[i] = len(orig[i])
			in[i] = port
		}
	}
	out := make([]Result, n)
	// Establish 64 connections and learn their external ports.
	origOut, fOut, sOut, iOut := mk(func(i int) []byte {
		return udpPkt(macA, macIn0, addrA, uint16(20000+i), remote, 7000).bytes(t)
	})
	reset(origOut, fOut, sOut, iOut, portIn)
	p.Process(fOut, sOut, iOut, out)
	origBack, fBack, sBack, iBack := mk(func(i int) []byte {
		ext := binary.BigEndian.Uint16(fOut[i][offL4+header.UDPSrcPort:])
		return udpPkt(macGW, macOut0, remote, 7000, addrExt, ext).bytes(t)
	})
	est := testing.AllocsPerRun(100, func() {
		reset(origOut, fOut, sOut, iOut, portIn)
		p.Process(fOut, sOut, iOut, out)
		reset(origBack, fBack, sBack, iBack, portOut)
		p.Process(fBack, sBack, iBack, out)
	})
	for i := range out {
		if out[i].Action != ActForward {
			t.Fatalf("frame %d: %v %v", i, out[i].Action, out[i].Reason)
		}
	}
	if est != 0 {
		t.Errorf("established path: %v allocations per batch", est)
	}
	// Unreplied connections' traffic takes the established path.
	origU, fU, sU, iU := mk(func(i int) []byte {
		return udpPkt(macB, macIn0, addrB, uint16(30000+i), remote, 7000).bytes(t)
	})
	reset(origU, fU, sU, iU, portIn)
	p.Process(fU, sU, iU, out)
	fast := testing.AllocsPerRun(100, func() {
		reset(origU, fU, sU, iU, portIn)
		p.Process(fU, sU, iU, out)
	})
	if p.fastLast != n {
		t.Errorf("%d of %d frames took the established path", p.fastLast, n)
	}
	if fast != 0 {
		t.Errorf("established fast path: %v allocations per batch", fast)
	}
	// New connections: a fresh source port every round.
	round := 0
	origNew, fNew, sNew, iNew := mk(func(i int) []byte { return udpPkt(macB, macIn0, addrB, 1, remote, 7000).bytes(t) })
	newc := testing.AllocsPerRun(50, func() {
		round++
		reset(origNew, fNew, sNew, iNew, portIn)
		for i := range fNew {
			sp := uint16(round*n + i)
			binary.BigEndian.PutUint16(fNew[i][offL4+header.UDPSrcPort:], sp)
			binary.BigEndian.PutUint16(fNew[i][offL4+header.UDPChecksum:], 0) // no UDP checksum: the port changed
		}
		p.Process(fNew, sNew, iNew, out)
	})
	if newc != 0 {
		t.Errorf("new-connection path: %v allocations per batch", newc)
	}
	if c := tb.dp.TotalCounters(); c.Created < 50*n {
		t.Errorf("created %d connections", c.Created)
	}
}
