package rules

import (
	"math/rand"
	"testing"
)

func randomModel(rnd *rand.Rand, n int) *Model {
	m := NewModel()
	addr := func() uint32 { return ip(10, 0, uint32(rnd.Intn(4)), uint32(rnd.Intn(8))) }
	port := func() uint16 { return uint16(rnd.Intn(12)) }
	mods := func(r *Rule, nat bool) {
		if rnd.Intn(3) == 0 {
			r.Src = Addr{IP: addr(), Mask: prefix([]int{0, 16, 24, 29, 30, 32}[rnd.Intn(6)]), Invert: rnd.Intn(5) == 0}
		}
		if rnd.Intn(3) == 0 {
			r.Dst = Addr{IP: addr(), Mask: prefix(30 + rnd.Intn(3)), Invert: rnd.Intn(5) == 0}
		}
		switch rnd.Intn(5) {
		case 0, 1:
			r.Proto = ProtoTCP
		case 2:
			r.Proto = ProtoUDP
		case 3:
			r.Proto = ProtoICMP
		}
		if rnd.Intn(6) == 0 && r.Proto != 0 {
			r.ProtoInvert = true
		}
		if rnd.Intn(4) == 0 && !nat {
			r.InIface = Iface{Name: []string{"eth0", "eth+", "wg0", "none9"}[rnd.Intn(4)], Invert: rnd.Intn(4) == 0}
		}
		if rnd.Intn(5) == 0 && !nat {
			r.OutIface = Iface{Name: []string{"eth1", "eth+", "wg0"}[rnd.Intn(3)], Invert: rnd.Intn(4) == 0}
		}
		if rnd.Intn(15) == 0 {
			r.Fragment = true
		}
		for k := rnd.Intn(3); k > 0; k-- {
			var mt Match
			switch rnd.Intn(9) {
			case 0:
				if (r.Proto == ProtoTCP || r.Proto == ProtoUDP) && !r.ProtoInvert {
					mt = Match{Kind: MatchTCP, SrcPort: AllPorts, DstPort: AllPorts}
					if r.Proto == ProtoUDP {
						mt.Kind = MatchUDP
					}
					lo := port()
					mt.DstPort = PortRange{lo, lo + uint16(rnd.Intn(3))}
					mt.DstPortInvert = rnd.Intn(5) == 0
					if rnd.Intn(3) == 0 {
						mt.SrcPort = PortRange{port(), 11}
					}
					if r.Proto == ProtoTCP && rnd.Intn(3) == 0 {
						mt.FlagsMask, mt.FlagsCmp = 0x17, 0x02
						mt.FlagsInvert = rnd.Intn(3) == 0
					}
				}
			case 1:
				if (r.Proto == ProtoTCP || r.Proto == ProtoUDP) && !r.ProtoInvert {
					mt = Match{Kind: MatchMultiport, Multi: uint8(1 + rnd.Intn(3)), Invert: rnd.Intn(4) == 0}
					for j := rnd.Intn(3) + 1; j > 0; j-- {
						lo := port()
						mt.Ports = append(mt.Ports, PortRange{lo, lo + uint16(rnd.Intn(2))})
					}
				}
			case 2:
				lo := addr()
				mt = Match{Kind: MatchIPRange, SrcRange: AddrRange{Lo: lo, Hi: lo + uint32(rnd.Intn(300)), Set: true, Invert: rnd.Intn(4) == 0}}
			case 3:
				mt = Match{Kind: MatchLength, LengthMin: uint16(rnd.Intn(100)), LengthMax: uint16(100 + rnd.Intn(100)), Invert: rnd.Intn(4) == 0}
			case 4:
				mt = Match{Kind: MatchLimit, LimitAvg: uint32(1 + rnd.Intn(20000)), LimitBurst: uint32(1 + rnd.Intn(4))}
			case 5:
				mt = Match{Kind: MatchMark, Mark: uint32(rnd.Intn(4)), MarkMask: 3, Invert: rnd.Intn(4) == 0}
			case 6:
				mt = Match{Kind: MatchConntrack, States: CtState(1 + rnd.Intn(0x7f)), Invert: rnd.Intn(4) == 0}
			case 7:
				if r.Proto == ProtoICMP && !r.ProtoInvert {
					mt = Match{Kind: MatchICMP, ICMPType: uint8(rnd.Intn(4)), ICMPCodeMin: 0, ICMPCodeMax: uint8(rnd.Intn(2) * 255)}
				}
			case 8:
				if !nat {
					mt = Match{Kind: MatchMAC, MAC: [6]byte{0, 0, 0, 0, 0, byte(rnd.Intn(2))}, Invert: rnd.Intn(3) == 0}
				}
			}
			if mt.Kind != 0 {
				r.Matches = append(r.Matches, mt)
			}
		}
	}
	users := []string{"u1", "u2", "u3"}
	for _, u := range users {
		chainOf(m, Filter, u)
		chainOf(m, NAT, "n"+u)
	}
	filterTarget := func(depth int) Target {
		switch k := rnd.Intn(12); {
		case k < 3:
			return Target{Kind: TargetAccept}
		case k < 5:
			return Target{Kind: TargetDrop}
		case k < 6:
			return Target{Kind: TargetReject, RejectWith: RejectType(rnd.Intn(7))}
		case k < 7:
			return Target{Kind: TargetMark, MarkValue: uint32(rnd.Intn(4)), MarkMask: 3}
		case k < 8:
			return Target{Kind: TargetLog, LogPrefix: "x"}
		case k < 9:
			return Target{Kind: TargetReturn}
		case k < 10:
			return Target{Kind: TargetConnmark, ConnmarkMode: uint8(1 + rnd.Intn(3)), MarkValue: 1, MarkMask: 1, NfMask: 3, CtMask: 3}
		case depth < len(users):
			kind := TargetJump
			if rnd.Intn(3) == 0 {
				kind = TargetGoto
			}
			return Target{Kind: kind, Chain: users[depth+rnd.Intn(len(users)-depth)]}
		}
		return Target{}
	}
	fill := func(c *Chain, count, depth int) {
		for i := 0; i < count; i++ {
			r := Rule{ID: NewRuleID(), Target: filterTarget(depth)}
			mods(&r, false)
			c.Rules = append(c.Rules, r)
		}
	}
	fill(chainOf(m, Filter, "FORWARD"), n, 0)
	for i, u := range users {
		fill(chainOf(m, Filter, u), n/3+1, i+1)
	}
	chainOf(m, Filter, "FORWARD").Policy = Policy(rnd.Intn(2))
	natTarget := func(hook Hook, depth int) Target {
		switch k := rnd.Intn(8); {
		case k < 2:
			return Target{Kind: TargetAccept}
		case k < 4:
			lo := addr()
			r := NATRange{MinAddr: lo, MaxAddr: lo + uint32(rnd.Intn(3)), Flags: NATMapIPs | NATFlags(rnd.Intn(2))*NATRandom}
			if hook == Prerouting {
				return Target{Kind: TargetDNAT, NAT: r}
			}
			if rnd.Intn(2) == 0 {
				return Target{Kind: TargetMasquerade}
			}
			return Target{Kind: TargetSNAT, NAT: r}
		case k < 5:
			return Target{Kind: TargetReturn}
		case k < 6:
			return Target{Kind: TargetMark, MarkValue: 1, MarkMask: 1}
		case depth < 1:
			return Target{Kind: TargetJump, Chain: []string{"nu1", "nu2"}[rnd.Intn(2)]}
		}
		return Target{}
	}
	for _, h := range []Hook{Prerouting, Postrouting} {
		c := chainOf(m, NAT, h.String())
		for i := 0; i < n; i++ {
			r := Rule{ID: NewRuleID(), Target: natTarget(h, 0)}
			mods(&r, true)
			c.Rules = append(c.Rules, r)
		}
	}
	// user nat chains are reached from PREROUTING only when they hold DNAT,
	// so give them only hook-neutral targets.
	for _, u := range []string{"nu1", "nu2"} {
		c := chainOf(m, NAT, u)
		for i := 0; i < n/3+1; i++ {
			t := natTarget(Prerouting, 1)
			if t.Kind == TargetDNAT {
				t = Target{Kind: TargetAccept}
			}
			r := Rule{ID: NewRuleID(), Target: t}
			mods(&r, true)
			c.Rules = append(c.Rules, r)
		}
	}
	return m
}

func prefix(n int) uint32 {
	if n <= 0 {
		return 0
	}
	return ^uint32(0) << (32 - n)
}

func randomPacket(rnd *rand.Rand) Packet {
	p := Packet{
		Src: ip(10, 0, uint32(rnd.Intn(4)), uint32(rnd.Intn(8))), Dst: ip(10, 0, uint32(rnd.Intn(4)), uint32(rnd.Intn(8))),
		SrcPort: uint16(rnd.Intn(14)), DstPort: uint16(rnd.Intn(14)), Length: uint16(rnd.Intn(250)),
		InIf: uint16(rnd.Intn(5)), OutIf: uint16(rnd.Intn(5)), Proto: []uint8{ProtoTCP, ProtoUDP, ProtoICMP, 47}[rnd.Intn(4)],
		ICMPType: uint8(rnd.Intn(4)), ICMPCode: uint8(rnd.Intn(3)), TCPFlags: uint8(rnd.Intn(64)),
		CtState:  []CtState{CtNew, CtEstablished, CtRelated, CtInvalid}[rnd.Intn(4)] | CtState(rnd.Intn(4))*CtSNAT,
		Fragment: rnd.Intn(10) == 0, Mark: uint32(rnd.Intn(4)), CtMark: uint32(rnd.Intn(4)),
	}
	p.SrcMAC[5] = byte(rnd.Intn(2))
	if rnd.Intn(8) == 0 {
		p.InIf = NoIface
	}
	return p
}

// TestClassifierMatchesLinear is the correctness oracle: random rule sets
// × random packets, evaluated by the classifier and by the linear scan on
// two identically compiled rule sets, give the same verdicts, decisions,
// packet changes, counters and LOG records.
func TestClassifierMatchesLinear(t *testing.T) {
	ifaces := []string{"lo", "eth0", "eth1", "wg0"}
	for seed := int64(1); seed <= 40; seed++ {
		rnd := rand.New(rand.NewSource(seed))
		m := randomModel(rnd, 5+rnd.Intn(120))
		fast, err := Compile(m, ifaces, Options{ClassifyMin: 1})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		slow, err := Compile(m, ifaces, Options{ClassifyMin: -1})
		if err != nil {
			t.Fatal(err)
		}
		if !fast.Classified(Filter, "FORWARD") {
			t.Fatalf("seed %d: FORWARD not classified", seed)
		}
		now := int64(0)
		for i := 0; i < 3000; i++ {
			now += int64(rnd.Intn(3e8))
			p := randomPacket(rnd)
			p1, p2 := p, p
			for _, h := range []Hook{Prerouting, Postrouting} {
				d1, d2 := fast.NAT(h, &p1, 0, now), slow.NATLinear(h, &p2, 0, now)
				if d1 != d2 {
					t.Fatalf("seed %d packet %+v nat %v: classifier %+v, linear %+v", seed, p, h, d1, d2)
				}
			}
			v1, v2 := fast.Filter(Forward, &p1, 0, now), slow.FilterLinear(Forward, &p2, 0, now)
			if v1 != v2 || p1 != p2 {
				t.Fatalf("seed %d packet %+v: classifier %v %+v, linear %v %+v", seed, p, v1, p1, v2, p2)
			}
		}
		fast.Flush(0)
		slow.Flush(0)
		if a, b := fast.Model(), slow.Model(); !a.Equal(b) {
			t.Fatalf("seed %d: counters differ", seed)
		}
		var l1, l2 [DefaultLogCapacity]LogRecord
		n1, n2 := fast.LogRings().Drain(0, l1[:]), slow.LogRings().Drain(0, l2[:])
		if n1 != n2 || l1 != l2 {
			t.Fatalf("seed %d: LOG records differ (%d vs %d)", seed, n1, n2)
		}
	}
}

// TestClassifierLargeChain covers chains of more than 64 bitmap words
// (over 4096 rules), where the summary word is not used.
func TestClassifierLargeChain(t *testing.T) {
	m := NewModel()
	f := chainOf(m, Filter, "FORWARD")
	rnd := rand.New(rand.NewSource(3))
	for i := 0; i < 4200; i++ {
		r := rule(Target{Kind: []TargetKind{TargetAccept, TargetDrop, TargetNone}[rnd.Intn(3)]},
			src(ip(10, 0, uint32(rnd.Intn(64)), 0), 0xffffff00), tcpDport(uint16(rnd.Intn(300))))
		f.Rules = append(f.Rules, r)
	}
	f.Policy = PolicyDrop
	fast, err := Compile(m, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	slow, _ := Compile(m, nil, Options{ClassifyMin: -1})
	for i := 0; i < 3000; i++ {
		p := Packet{Src: ip(10, 0, uint32(rnd.Intn(70)), 1), Proto: ProtoTCP, DstPort: uint16(rnd.Intn(310)), Length: 40}
		p2 := p
		if a, b := fast.Filter(Forward, &p, 0, 0), slow.FilterLinear(Forward, &p2, 0, 0); a != b {
			t.Fatalf("packet %+v: %v vs %v", p, a, b)
		}
	}
	fast.Flush(0)
	slow.Flush(0)
	if !fast.Model().Equal(slow.Model()) {
		t.Fatal("counters differ")
	}
}
