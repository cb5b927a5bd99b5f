package dataplane

import (
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"xnat/dataplane/header"
	"xnat/dataplane/topo"
)

// fuzzRules: dnatRules (established_test.go) and two REJECT rules.
const fuzzRules = `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p tcp --dport 22 -j REJECT --reject-with tcp-reset
-A FORWARD -p udp --dport 9 -j REJECT
COMMIT
` + dnatRules

// cleanInput reports whether gopacket decodes a frame without error and
// its checksums are right: the pipeline promises valid output checksums
// only for valid input (like a router, it updates checksums, it does not
// repair them).
func cleanInput(frame []byte) bool {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if p.ErrorLayer() != nil || p.Layer(layers.LayerTypeIPv4) == nil {
		return false
	}
	return checksumError(frame) == ""
}

// FuzzPipeline feeds arbitrary frames, on either port, to a pipeline with
// NAT, DNAT and REJECT rules, two frames at a time so that the second can
// hit the connection the first made. Nothing may panic or read out of
// bounds; every frame forwarded or generated from a valid input must
// decode and carry valid checksums.
func FuzzPipeline(f *testing.F) {
	seeds := [][]byte{
		udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(f),
		udpPkt(macGW, macOut0, remote, 7000, addrExt, 5000).bytes(f),
		tcpPkt(macA, macIn0, addrA, 40000, remote, 443, 0x02, 1, 0).bytes(f),
		tcpPkt(macGW, macOut0, remote, 443, addrExt, 40000, 0x12, 1, 2).bytes(f),
		tcpPkt(macGW, macOut0, remote, 4000, addrExt, 8080, 0x02, 1, 0).bytes(f),
		tcpPkt(macA, macIn0, addrA, 40001, remote, 22, 0x02, 1, 0).bytes(f),
		icmpPkt(macA, macIn0, addrA, remote, 8, 0, 99, 1, []byte("x")).bytes(f),
		icmpPkt(macGW, macOut0, remote, addrExt, 0, 0, 99, 1, []byte("x")).bytes(f),
	}
	ttl := udpPkt(macA, macIn0, addrA, 5000, remote, 7000)
	ttl.ttl = 1
	seeds = append(seeds, ttl.bytes(f))
	sent := udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(f)
	seeds = append(seeds, icmpPkt(macGW, macOut0, remote, addrExt, 3, 3, 0, 0, sent[offIP:offL4+header.UDPLen]).bytes(f))
	// To inside hosts without a neighbour entry: held, then answered.
	seeds = append(seeds, udpPkt(macA, macIn0, addrA, 5000, ip4(10, 0, 0, 99), 7000).bytes(f),
		tcpPkt(macGW, macOut0, remote, 4000, addrExt, 8080, 0x02, 1, 0).bytes(f),
		icmpPkt(macA, macIn0, addrA, ip4(10, 0, 0, 98), 8, 0, 99, 1, []byte("x")).bytes(f),
		udpPkt(macA, macIn0, addrA, 5000, ip4(203, 0, 113, 50), 7000).bytes(f))
	for i, s := range seeds {
		f.Add(s, seeds[(i+1)%len(seeds)], byte(i))
	}
	// A DNAT connection from an outside peer not resolved yet: the
	// answer is held translated.
	peer := ip4(203, 0, 113, 50)
	f.Add(tcpPkt(macPeer, macOut0, peer, 4000, addrExt, 8080, 0x02, 1, 0).bytes(f),
		tcpPkt(macB, macIn0, addrB, 80, peer, 4000, 0x12, 9, 2).bytes(f), byte(1))
	// With bit 2 of ports, the rules are FULLCONENAT's: the first frame
	// from inside makes a mapping the second, from outside, may reach.
	f.Add(udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(f),
		udpPkt(macGW, macOut0, remote3, 9, addrExt, 5000).bytes(f), byte(6))
	f.Add(tcpPkt(macA, macIn0, addrA, 40000, remote, 443, 0x02, 1, 0).bytes(f),
		tcpPkt(macGW, macOut0, remote3, 9, addrExt, 40000, 0x02, 1, 0).bytes(f), byte(6))
	f.Add(udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(f),
		udpPkt(macB, macIn0, addrB, 6000, addrExt, 5000).bytes(f), byte(4))
	f.Fuzz(func(t *testing.T, a, b []byte, ports byte) {
		if len(a) > 1600 || len(b) > 1600 {
			return
		}
		ruleText := fuzzRules
		if ports&4 != 0 {
			ruleText = fullConeRules
		}
		tb := newTestbed(t, ruleText, 1500, 1)
		frames := [][]byte{make([]byte, len(a), 2048), make([]byte, len(b), 2048)}
		copy(frames[0], a)
		copy(frames[1], b)
		clean := []bool{cleanInput(a), cleanInput(b)}
		sizes := []int{len(a), len(b)}
		in := []uint16{uint16(ports & 1), uint16(ports >> 1 & 1)}
		out := make([]Result, 2)
		p := tb.dp.Pipeline(0)
		p.Process(frames, sizes, in, out)
		// A frame held for a next hop is answered when its resolution
		// fails: its translation undone, an ICMP error over it.
		byHold := map[uint16]int{}
		for i, r := range out {
			if r.Action == ActHold {
				byHold[r.Hold] = i
			}
		}
		if len(byHold) > 0 {
			for _, pn := range p.held.pend[:p.held.npend] {
				tb.dp.Neighbours().Update(topo.Neigh{IfIndex: pn.ifindex, IP: pn.ip, State: topo.NeighFailed}, true)
			}
			p.Idle()
			if len(p.Released()) != len(byHold) {
				t.Fatalf("%d frames held, %d released on failure", len(byHold), len(p.Released()))
			}
			for _, rl := range p.Released() {
				i, ok := byHold[rl.Hold]
				if !ok {
					t.Fatalf("release of a slot never held: %+v", rl)
				}
				out[i] = rl.Result
			}
		}
		for i, r := range out {
			switch r.Action {
			case ActForward, ActReply:
				if r.Len < 34 || r.Len > cap(frames[i]) || int(r.Port) >= 2 {
					t.Fatalf("frame %d: result %+v", i, r)
				}
				got := frames[i][:r.Len]
				if !clean[i] {
					continue
				}
				if p := gopacket.NewPacket(got, layers.LayerTypeEthernet, gopacket.Default); p.ErrorLayer() != nil {
					t.Fatalf("frame %d: %v output does not decode: %v\n%x", i, r.Action, p.ErrorLayer().Error(), got)
				}
				if err := checksumError(got); err != "" {
					t.Fatalf("frame %d (%v): %s", i, r.Action, err)
				}
			case ActDrop:
				if r.Reason == ReasonNone {
					t.Fatalf("frame %d dropped without a reason", i)
				}
			}
		}
	})
}
