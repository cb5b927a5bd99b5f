package dataplane

import (
	"bytes"
	"testing"

	"xnat/flowtable"
)

// dnatRules: MASQUERADE out, a DNAT port in, and no filter rules, so the
// established path is open.
const dnatRules = `*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i out0 -d 203.0.113.1 -p tcp --dport 8080 -j DNAT --to-destination 10.0.0.3:80
-A PREROUTING -i out0 -d 203.0.113.1 -p udp --dport 5353 -j DNAT --to-destination 10.0.0.2
-A POSTROUTING -o out0 -j MASQUERADE
COMMIT
`

// checkEstablishedPath runs setup frames, then probe: once as the
// pipeline runs it and, when the established path took it, again with the
// path off, through handle. The path changes nothing in the connection
// but the last-seen time and its counters, so both runs must give the
// same result, the same bytes and the same change of the counters. It
// reports whether the path was taken.
func checkEstablishedPath(t *testing.T, setup [][]byte, setupIn []uint16, probe []byte, in uint16) bool {
	t.Helper()
	tb := newTestbed(t, dnatRules, 1500, 1)
	p := tb.dp.Pipeline(0)
	for i, f := range setup {
		tb.run(f, setupIn[i])
	}
	// The connection's counters (the testbed keeps them): the established
	// path must count the probe as handle does.
	var pm meta
	var key flowtable.Tuple
	parsed := p.parse(probe, &pm, &key) == ReasonNone
	countersOf := func() [2]flowtable.Counter {
		fi, _, _ := tb.tab.Get(key)
		return fi.Counters
	}
	before := countersOf()
	fast, fastOut := tb.run(probe, in)
	checkPublished(t, p)
	if p.fastLast == 0 {
		return false
	}
	afterFast := countersOf()
	p.noFast = true
	slow, slowOut := tb.run(probe, in)
	p.noFast = false
	checkPublished(t, p)
	if fast != slow || !bytes.Equal(fastOut, slowOut) {
		t.Fatalf("established path %+v\n%x\nhandle %+v\n%x", fast, fastOut, slow, slowOut)
	}
	if afterSlow := countersOf(); !parsed || afterFast == before || sub(afterFast, before) != sub(afterSlow, afterFast) {
		t.Fatalf("connection counters: %v before, %v after the established path, %v after handle", before, afterFast, afterSlow)
	}
	if fast.Action == ActForward && cleanInput(probe) {
		if err := checksumError(fastOut); err != "" {
			t.Fatalf("established path: %s", err)
		}
	}
	return true
}

// sub is a-b, direction by direction.
func sub(a, b [2]flowtable.Counter) [2]flowtable.Counter {
	for d := range a {
		a[d].Packets -= b[d].Packets
		a[d].Bytes -= b[d].Bytes
	}
	return a
}

// checkPublished holds what readers of a pipeline's counters see after a
// batch to the counters themselves: a batch the established path took
// whole publishes only the counters that path changes (storeFast).
func checkPublished(t *testing.T, p *Pipeline) {
	t.Helper()
	if got := p.d.Counters()[p.core]; got != p.cnt {
		t.Fatalf("published counters %+v\nafter batch %d, the pipeline's %+v", got, p.cnt.Batches, p.cnt)
	}
}

// TestEstablishedPathMatchesHandle: steady TCP and UDP traffic both ways,
// through MASQUERADE and DNAT, takes the established path and leaves it
// exactly as handle would have; the first packet, a state change, and IP
// options do not take it.
func TestEstablishedPathMatchesHandle(t *testing.T) {
	udpOut := udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t)
	udpBack := udpPkt(macGW, macOut0, remote, 7000, addrExt, 5000).bytes(t)
	syn := tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fSYN, 1, 0).bytes(t)
	synAck := tcpPkt(macGW, macOut0, remote, 443, addrExt, 40000, fSYNACK, 1, 2).bytes(t)
	ack := tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fACK, 2, 2).bytes(t)
	ackBack := tcpPkt(macGW, macOut0, remote, 443, addrExt, 40000, fACK|0x08, 2, 2).bytes(t)
	dnatSyn := tcpPkt(macGW, macOut0, remote, 4000, addrExt, 8080, fSYN, 1, 0).bytes(t)
	dnatSynAck := tcpPkt(macA, macIn0, addrA+1, 80, remote, 4000, fSYNACK, 1, 2).bytes(t)
	dnatAck := tcpPkt(macGW, macOut0, remote, 4000, addrExt, 8080, fACK, 2, 2).bytes(t)
	dnatData := tcpPkt(macA, macIn0, addrA+1, 80, remote, 4000, fACK|0x08, 2, 2).bytes(t)
	in, out := uint16(portIn), uint16(portOut)
	for _, c := range []struct {
		name  string
		setup [][]byte
		ins   []uint16
		probe []byte
		in    uint16
		taken bool
	}{
		{"udp first packet", nil, nil, udpOut, in, false},
		{"udp unreplied", [][]byte{udpOut}, []uint16{in}, udpOut, in, true},
		{"udp first reply", [][]byte{udpOut}, []uint16{in}, udpBack, out, false},
		{"udp replied", [][]byte{udpOut, udpBack}, []uint16{in, out}, udpBack, out, false}, // becomes a stream after 2 s: handle
		{"tcp syn again", [][]byte{syn}, []uint16{in}, syn, in, false},
		{"tcp ack out", [][]byte{syn, synAck, ack}, []uint16{in, out, in}, ack, in, true},
		{"tcp data back", [][]byte{syn, synAck, ack}, []uint16{in, out, in}, ackBack, out, true},
		{"dnat data in", [][]byte{dnatSyn, dnatSynAck, dnatAck}, []uint16{out, in, out}, dnatAck, out, true},
		{"dnat data out", [][]byte{dnatSyn, dnatSynAck, dnatAck}, []uint16{out, in, out}, dnatData, in, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := checkEstablishedPath(t, c.setup, c.ins, c.probe, c.in); got != c.taken {
				t.Errorf("established path taken: %v, want %v", got, c.taken)
			}
		})
	}
	// IP options: handle.
	opt := udpPkt(macA, macIn0, addrA, 5000, remote, 7000)
	opt.options = true
	if checkEstablishedPath(t, [][]byte{opt.bytes(t)}, []uint16{in}, opt.bytes(t), in) {
		t.Error("a packet with IP options took the established path")
	}
}

// FuzzEstablishedPath: two arbitrary frames set up connections, and a
// third, when it takes the established path, must come out as handle
// would make it.
func FuzzEstablishedPath(f *testing.F) {
	udpOut := udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(f)
	syn := tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fSYN, 1, 0).bytes(f)
	synAck := tcpPkt(macGW, macOut0, remote, 443, addrExt, 40000, fSYNACK, 1, 2).bytes(f)
	ack := tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fACK, 2, 2).bytes(f)
	f.Add(udpOut, udpOut, udpOut, byte(0))
	f.Add(syn, synAck, ack, byte(2))
	f.Add(syn, synAck, synAck, byte(2))
	f.Fuzz(func(t *testing.T, a, b, c []byte, ports byte) {
		if len(a) > 1600 || len(b) > 1600 || len(c) > 1600 {
			return
		}
		checkEstablishedPath(t, [][]byte{a, b}, []uint16{uint16(ports & 1), uint16(ports >> 1 & 1)}, c, uint16(ports>>2&1))
	})
}

// TestEstablishedPathKeepsOrder: in one batch, a quiet ACK, then a FIN
// from inside, then the outside's ACK of it, a quiet ACK again; the
// established path takes the first and must leave the rest to handle in
// order, so the connection ends where handle alone takes it (CLOSE_WAIT
// after FIN_WAIT), with the same bytes out.
func TestEstablishedPathKeepsOrder(t *testing.T) {
	syn := tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fSYN, 1, 0).bytes(t)
	synAck := tcpPkt(macGW, macOut0, remote, 443, addrExt, 40000, fSYNACK, 1, 2).bytes(t)
	ack := tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fACK, 2, 2).bytes(t)
	fin := tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fFIN, 2, 2).bytes(t)
	finAck := tcpPkt(macGW, macOut0, remote, 443, addrExt, 40000, fACK, 2, 3).bytes(t)
	orig := flowtable.MakeTuple(flowtable.ProtoTCP, addrA, 40000, remote, 443)
	batch := [][]byte{ack, fin, finAck, ack}
	ins := []uint16{portIn, portIn, portOut, portIn}
	var outs [2][]Result
	var bufs [2][][]byte
	var fast [2]uint64
	for run, noFast := range []bool{false, true} {
		tb := newTestbed(t, dnatRules, 1500, 1)
		p := tb.dp.Pipeline(0)
		for i, f := range [][]byte{syn, synAck, ack} {
			tb.run(f, [3]uint16{portIn, portOut, portIn}[i])
		}
		p.noFast = noFast
		frames, sizes := make([][]byte, len(batch)), make([]int, len(batch))
		for i, f := range batch {
			frames[i] = append(make([]byte, 0, 2048), f...)
			sizes[i] = len(f)
		}
		outs[run] = make([]Result, len(batch))
		p.Process(frames, sizes, ins, outs[run])
		checkPublished(t, p)
		bufs[run], fast[run] = frames, p.fastLast
		fi, _, ok := tb.tab.Get(orig)
		if !ok || fi.State() != flowtable.TCPCloseWait {
			t.Fatalf("noFast %v: connection %v (found %v), want CLOSE_WAIT", noFast, fi.State(), ok)
		}
	}
	if fast[0] != 1 || fast[1] != 0 {
		t.Fatalf("established path took %d and %d packets, want 1 and 0", fast[0], fast[1])
	}
	for i := range batch {
		if outs[0][i] != outs[1][i] || !bytes.Equal(bufs[0][i][:outs[0][i].Len], bufs[1][i][:outs[1][i].Len]) {
			t.Fatalf("packet %d: established path %+v, handle %+v", i, outs[0][i], outs[1][i])
		}
	}
}

// TestEstablishedPathExactFrames: the established path writes its fields
// without bounds checks (natFields), on what parse found. Frames of the
// smallest sizes it takes — TCP with no payload, UDP with none — each
// ending where an unmapped page begins (guardedMemory), so any access
// beyond one faults, must take it and come out as handle makes them, with
// checksums that verify. The same frames with an 802.1Q tag are dropped
// (vlan) by both, untouched.
func TestEstablishedPathExactFrames(t *testing.T) {
	guarded := guardedMemory(t)
	in := uint16(portIn)
	for _, vlan := range []bool{false, true} {
		udp := udpPkt(macA, macIn0, addrA, 5000, remote, 7000)
		udp.payload, udp.vlan = nil, vlan
		syn := tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fSYN, 1, 0)
		synAck := tcpPkt(macGW, macOut0, remote, 443, addrExt, 40000, fSYNACK, 1, 2)
		ack := tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fACK, 2, 2)
		syn.vlan, synAck.vlan, ack.vlan = vlan, vlan, vlan
		for _, c := range []struct {
			name  string
			setup [][]byte
			ins   []uint16
			probe []byte
			size  int
		}{
			{"udp", [][]byte{udp.bytes(t)}, []uint16{in}, udp.bytes(t), 42},
			{"tcp", [][]byte{syn.bytes(t), synAck.bytes(t), ack.bytes(t)}, []uint16{in, portOut, in}, ack.bytes(t), 54},
		} {
			want := c.size
			if vlan {
				want += 4
			}
			// gopacket pads to Ethernet's 60 bytes; the IPv4 total
			// length ends the packet before that, as on a veth, which
			// sends frames unpadded.
			if len(c.probe) < want {
				t.Fatalf("%s vlan %v: probe of %d bytes, want %d", c.name, vlan, len(c.probe), want)
			}
			c.probe = c.probe[:want]
			var res [2]Result
			var bufs [2][]byte
			for run, noFast := range []bool{false, true} {
				tb := newTestbed(t, dnatRules, 1500, 1)
				p := tb.dp.Pipeline(0)
				for i, f := range c.setup {
					tb.run(f, c.ins[i])
				}
				p.noFast = noFast
				buf := guarded(len(c.probe))
				copy(buf, c.probe)
				out := make([]Result, 1)
				p.Process([][]byte{buf}, []int{len(buf)}, []uint16{in}, out)
				if fast := p.fastLast == 1; fast != (!noFast && !vlan) {
					t.Fatalf("%s vlan %v noFast %v: established path took %d packets", c.name, vlan, noFast, p.fastLast)
				}
				res[run], bufs[run] = out[0], append([]byte(nil), buf...)
			}
			if vlan {
				if res[0] != res[1] || res[0].Action != ActDrop || res[0].Reason != ReasonVLAN || !bytes.Equal(bufs[0], c.probe) || !bytes.Equal(bufs[1], c.probe) {
					t.Fatalf("%s vlan: %+v %+v, want untouched drops (vlan)", c.name, res[0], res[1])
				}
				continue
			}
			if res[0] != res[1] || res[0].Action != ActForward || !bytes.Equal(bufs[0], bufs[1]) {
				t.Fatalf("%s vlan %v: established path %+v\n%x\nhandle %+v\n%x", c.name, vlan, res[0], bufs[0], res[1], bufs[1])
			}
			if err := checksumError(bufs[0]); err != "" {
				t.Fatalf("%s vlan %v: %s", c.name, vlan, err)
			}
		}
	}
}
