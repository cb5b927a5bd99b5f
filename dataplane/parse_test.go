package dataplane

import (
	"testing"

	"xnat/flowtable"
)

// parseSeeds are frames of every shape parse knows: the fast path's own
// (TCP and UDP), and the ones it must leave to parse (a VLAN tag, IP
// options, ICMP, a TTL of one, a later fragment).
func parseSeeds(t testing.TB) [][]byte {
	udp := udpPkt(macA, macIn0, addrA, 5000, remote, 7000)
	tcp := tcpPkt(macA, macIn0, addrA, 40000, remote, 443, 0x10, 1, 2)
	vlan, opts, ttl := udp, tcp, udp
	vlan.vlan, opts.options, ttl.ttl = true, true, 1
	frag := udp.bytes(t)
	frag[20] = 0x01 // fragment offset 8 bytes (the checksum no longer verifies: parse says which is wrong)
	return [][]byte{
		udp.bytes(t), tcp.bytes(t), vlan.bytes(t), opts.bytes(t), ttl.bytes(t), frag,
		icmpPkt(macA, macIn0, addrA, remote, 8, 0, 99, 1, []byte("x")).bytes(t),
		tcpPkt(macGW, macOut0, remote, 443, addrExt, 40000, 0x12, 1, 2).bytes(t),
	}
}

// fastParser is a pipeline ready for parseFast alone.
func fastParser(t testing.TB) *Pipeline {
	tb := newTestbed(t, masqRules, 1500, 1)
	p := tb.dp.Pipeline(0)
	p.env = tb.dp.Env()
	return p
}

// checkParseFast holds parseFast to parse on one frame: where the fast
// path takes a frame, parse must accept it and fill the same meta and key;
// and every frame parse accepts as untagged TCP or UDP without IP options
// and with a TTL above one, the fast path must take.
func checkParseFast(t *testing.T, p *Pipeline, frame []byte) {
	p.meta[0], p.keys[0] = meta{}, flowtable.Tuple{}
	rest, n := p.parseFast([][]byte{frame}, []int{len(frame)}, []uint16{portIn})
	took := rest == 0
	if took != (n == 1) {
		t.Fatalf("parseFast: rest %#x, took %d", rest, n)
	}
	fm, fk := p.meta[0], p.keys[0]
	sm := meta{in: portIn}
	var sk flowtable.Tuple
	r := p.parse(frame, &sm, &sk)
	if took {
		if r != ReasonNone {
			t.Fatalf("parseFast took % x, parse says %v", frame, r)
		}
		if fm != sm || fk != sk {
			t.Fatalf("parseFast and parse disagree on % x:\nfast  %+v %v\nparse %+v %v", frame, fm, fk, sm, sk)
		}
		return
	}
	common := r == ReasonNone && (sm.kind == kTCP || sm.kind == kUDP) && sm.l3 == 14 && sm.l4 == 34 && frame[14+8] > 1
	if common {
		t.Fatalf("parseFast left % x to parse, which found the common case: %+v", frame, sm)
	}
}

func TestParseFast(t *testing.T) {
	p := fastParser(t)
	seeds := parseSeeds(t)
	for i, s := range seeds {
		checkParseFast(t, p, s)
		// Every shorter frame, and every single-byte change in the headers.
		for n := range len(s) {
			checkParseFast(t, p, s[:n])
		}
		for j := range min(len(s), 64) {
			for _, v := range []byte{0, 1, 0x45, 0x80, 0xff} {
				b := append([]byte(nil), s...)
				b[j] = v
				checkParseFast(t, p, b)
			}
		}
		if rest, _ := p.parseFast([][]byte{s}, []int{len(s)}, []uint16{portIn}); i < 2 && rest != 0 {
			t.Fatalf("parseFast did not take seed %d, a plain %s packet", i, [2]string{"UDP", "TCP"}[i])
		}
	}
}

// FuzzParseFast holds parseFast to parse on arbitrary frames.
func FuzzParseFast(f *testing.F) {
	for _, s := range parseSeeds(f) {
		f.Add(s)
	}
	p := fastParser(f)
	f.Fuzz(func(t *testing.T, frame []byte) { checkParseFast(t, p, frame) })
}

// TestRxCountersMixedBatch: a batch whose frames come from both ports, in
// runs and alone, is counted frame by frame on the port it came from (the
// parser counts runs); a frame from a port the environment lacks is
// dropped as no_port, and counted on no port.
func TestRxCountersMixedBatch(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	p := tb.dp.Pipeline(0)
	udp := udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t)
	short := udp[:20]
	ins := []uint16{portIn, portIn, portOut, portIn, portOut, portOut, 9, portIn}
	frames := make([][]byte, len(ins))
	sizes := make([]int, len(ins))
	var want [2]PortCounters
	for i, in := range ins {
		f := udp
		if i%3 == 1 {
			f = short
		}
		frames[i] = append(make([]byte, 0, 2048), f...)
		sizes[i] = len(f)
		if int(in) < len(want) {
			want[in].RxPackets++
			want[in].RxBytes += uint64(len(f))
		}
	}
	out := make([]Result, len(ins))
	p.Process(frames, sizes, ins, out)
	if out[6].Action != ActDrop || out[6].Reason != ReasonNoPort {
		t.Errorf("frame from port 9: %+v, want a no_port drop", out[6])
	}
	c := tb.dp.TotalCounters()
	for port := range want {
		if c.Ports[port].RxPackets != want[port].RxPackets || c.Ports[port].RxBytes != want[port].RxBytes {
			t.Errorf("port %d: rx %d packets %d bytes, want %d and %d", port,
				c.Ports[port].RxPackets, c.Ports[port].RxBytes, want[port].RxPackets, want[port].RxBytes)
		}
	}
}
