package dataplane

import (
	"math/bits"
	"math/rand/v2"
	"testing"

	"xnat/dataplane/header"
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
	frag[offIP+header.IPv4FlagsFrag+1] = 0x01 // fragment offset 8 bytes (the checksum no longer verifies: parse says which is wrong)
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

// checkParseFast holds parseFast to parse on one frame (checkParseFastBatch).
func checkParseFast(t *testing.T, p *Pipeline, frame []byte) {
	t.Helper()
	checkParseFastBatch(t, p, [][]byte{frame}, []uint16{portIn})
}

// checkParseFastBatch holds parseFast to parse on a batch: where the fast
// path takes a frame, parse must accept it and fill the same meta and key;
// every frame parse accepts as untagged TCP or UDP without IP options and
// with a TTL above one, from a port the environment has, the fast path
// must take; every frame's port is in its meta; and each port the
// environment has counts the frames received on it, and their bytes.
func checkParseFastBatch(t *testing.T, p *Pipeline, frames [][]byte, in []uint16) {
	t.Helper()
	sizes := make([]int, len(frames))
	for i, f := range frames {
		sizes[i] = len(f)
	}
	var want Counters
	for i, f := range frames {
		if int(in[i]) < len(p.env.Ports) {
			want.Ports[in[i]].RxPackets++
			want.Ports[in[i]].RxBytes += uint64(len(f))
		}
	}
	clear(p.meta[:])
	clear(p.keys[:])
	before := p.cnt
	rest, took := p.parseFast(frames, sizes, in)
	if n := len(frames) - bits.OnesCount64(rest); took != n || rest>>len(frames) != 0 {
		t.Fatalf("parseFast: rest %#x for %d frames, took %d", rest, len(frames), took)
	}
	for port := range p.cnt.Ports {
		got := p.cnt.Ports[port]
		got.RxPackets -= before.Ports[port].RxPackets
		got.RxBytes -= before.Ports[port].RxBytes
		if got.RxPackets != want.Ports[port].RxPackets || got.RxBytes != want.Ports[port].RxBytes {
			t.Fatalf("port %d: received %d frames, %d bytes; want %d and %d", port,
				got.RxPackets, got.RxBytes, want.Ports[port].RxPackets, want.Ports[port].RxBytes)
		}
	}
	for i, frame := range frames {
		fm, fk := p.meta[i], p.keys[i]
		if fm.in != in[i] {
			t.Fatalf("frame %d: port %d in its meta, received on %d", i, fm.in, in[i])
		}
		sm := meta{in: in[i]}
		var sk flowtable.Tuple
		r := p.parse(frame, &sm, &sk)
		if rest&(1<<i) == 0 {
			if r != ReasonNone {
				t.Fatalf("parseFast took % x, parse says %v", frame, r)
			}
			if fm != sm || fk != sk {
				t.Fatalf("parseFast and parse disagree on % x:\nfast  %+v %v\nparse %+v %v", frame, fm, fk, sm, sk)
			}
			continue
		}
		common := r == ReasonNone && (sm.kind == kTCP || sm.kind == kUDP) && sm.l3 == offIP && sm.l4 == offL4 &&
			frame[offIP+header.IPv4TTL] > 1 && int(in[i]) < len(p.env.Ports)
		if common {
			t.Fatalf("parseFast left % x to parse, which found the common case: %+v", frame, sm)
		}
	}
}

// TestParseFastBatches runs random batches of the seeds, cut short or
// with a header byte changed (an IPv4 header's checksum then made good
// half the time), from random ports (one the environment lacks among
// them), through parseFast, frame by frame held to parse
// (checkParseFastBatch).
func TestParseFastBatches(t *testing.T) {
	p := fastParser(t)
	seeds := parseSeeds(t)
	rng := rand.New(rand.NewPCG(3, 5))
	for range 2000 {
		n := 1 + rng.IntN(batchMax)
		frames, in := make([][]byte, n), make([]uint16, n)
		for i := range frames {
			f := append([]byte(nil), seeds[rng.IntN(len(seeds))]...)
			switch rng.IntN(4) {
			case 0:
				f = f[:rng.IntN(len(f)+1)]
			case 1:
				j := rng.IntN(min(len(f), 64))
				f[j] = byte(rng.Uint32())
				// A changed IPv4 header's checksum made good half the
				// time, so the checks after it are reached.
				if j >= offIP && j < offL4 && f[offIP] == header.IPv4VersionIHL5 && rng.IntN(2) == 0 {
					ip := header.IPv4(f[offIP:offL4])
					ip.SetChecksum(0)
					ip.SetChecksum(header.Checksum(ip, 0))
				}
			}
			frames[i] = f
			in[i] = [...]uint16{portIn, portIn, portOut, 7}[rng.IntN(4)]
		}
		checkParseFastBatch(t, p, frames, in)
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
