package rules

import (
	"fmt"
	"math/rand"
	"sync"
	"testing"
)

func ip(a, b, c, d uint32) uint32 { return a<<24 | b<<16 | c<<8 | d }

func rule(t Target, mods ...func(*Rule)) Rule {
	r := Rule{ID: NewRuleID(), Target: t}
	for _, f := range mods {
		f(&r)
	}
	return r
}

func chainOf(m *Model, t TableID, name string) *Chain {
	tb := &m.Tables[t]
	i := tb.Chain(name)
	if i < 0 {
		if err := tb.AddChain(name); err != nil {
			panic(err)
		}
		i = tb.Chain(name)
	}
	return &tb.Chains[i]
}

func tcpDport(p uint16) func(*Rule) {
	return func(r *Rule) {
		r.Proto = ProtoTCP
		r.Matches = append(r.Matches, Match{Kind: MatchTCP, SrcPort: AllPorts, DstPort: PortRange{p, p}})
	}
}

func src(a, mask uint32) func(*Rule) { return func(r *Rule) { r.Src = Addr{IP: a, Mask: mask} } }

// TestTraversal checks jumps, gotos, RETURN, non-terminal targets and the
// policy in iptables order.
func TestTraversal(t *testing.T) {
	m := NewModel()
	fwd := chainOf(m, Filter, "FORWARD")
	fwd.Policy = PolicyDrop
	chainOf(m, Filter, "sub")
	chainOf(m, Filter, "gone")
	chainOf(m, Filter, "sub").Rules = []Rule{
		rule(Target{Kind: TargetMark, MarkValue: 1, MarkMask: 0xffffffff}),
		rule(Target{Kind: TargetReturn}, src(ip(10, 0, 0, 1), 0xffffffff)),
		rule(Target{Kind: TargetGoto, Chain: "gone"}, src(ip(10, 0, 0, 2), 0xffffffff)),
		rule(Target{Kind: TargetAccept}),
	}
	chainOf(m, Filter, "gone").Rules = []Rule{
		rule(Target{Kind: TargetMark, MarkValue: 2, MarkMask: 0x2}),
	}
	fwd = chainOf(m, Filter, "FORWARD")
	fwd.Rules = []Rule{
		rule(Target{Kind: TargetJump, Chain: "sub"}),
		rule(Target{Kind: TargetAccept}, func(r *Rule) { r.Matches = []Match{{Kind: MatchMark, Mark: 3, MarkMask: 0xffffffff}} }),
		rule(Target{Kind: TargetReject, RejectWith: RejectHostProhibited}, src(ip(10, 0, 0, 1), 0xffffffff)),
	}
	rs, err := Compile(m, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		src  uint32
		want Verdict
		mark uint32
	}{
		{ip(10, 0, 0, 9), Verdict{Action: Accept}, 1},                               // sub: MARK 1, ACCEPT
		{ip(10, 0, 0, 1), Verdict{Action: Reject, Reject: RejectHostProhibited}, 1}, // RETURN, then REJECT
		{ip(10, 0, 0, 2), Verdict{Action: Accept}, 3},                               // goto gone: mark 1^2=3, end of gone returns to FORWARD rule 2
	}
	for _, c := range cases {
		p := Packet{Src: c.src, Proto: ProtoTCP, Length: 60}
		if got := rs.Filter(Forward, &p, 0, 0); got != c.want || p.Mark != c.mark {
			t.Errorf("src %s: verdict %v mark %d, want %v mark %d", FormatIP(c.src), got, p.Mark, c.want, c.mark)
		}
	}
	// A goto from a built-in chain whose target falls off its end takes the policy.
	m2 := NewModel()
	chainOf(m2, Filter, "g")
	f2 := chainOf(m2, Filter, "FORWARD")
	f2.Policy = PolicyDrop
	f2.Rules = []Rule{rule(Target{Kind: TargetGoto, Chain: "g"}), rule(Target{Kind: TargetAccept})}
	rs2, err := Compile(m2, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := Packet{Length: 1}
	if got := rs2.Filter(Forward, &p, 0, 0); got.Action != Drop {
		t.Errorf("goto then fall off: %v, want DROP (policy)", got)
	}
	rs2.Flush(0)
	if c, _ := rs2.PolicyCounters(Filter, "FORWARD"); c.Packets != 1 || c.Bytes != 1 {
		t.Errorf("policy counters %+v", c)
	}
}

// TestLimitDocumented checks -m limit --limit 6/m --limit-burst 5 against
// iptables' documentation: 5 match at once, then one per 10 s; after a
// quiet period the bucket refills one token per 10 s up to 5.
func TestLimitDocumented(t *testing.T) {
	m := NewModel()
	in := chainOf(m, Filter, "FORWARD")
	in.Policy = PolicyDrop
	in.Rules = []Rule{rule(Target{Kind: TargetAccept}, func(r *Rule) {
		r.Proto = ProtoICMP
		r.Matches = []Match{{Kind: MatchLimit, LimitAvg: LimitScale * 60 / 6, LimitBurst: 5}}
	})}
	rs, err := Compile(m, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const sec = int64(1e9)
	start := int64(1000 * sec)
	pass := func(now int64) bool {
		p := Packet{Proto: ProtoICMP, Length: 84}
		return rs.Filter(Forward, &p, 0, now).Action == Accept
	}
	// a ping per second for 35 s
	var got []int64
	for s := int64(0); s < 35; s++ {
		if pass(start + s*sec) {
			got = append(got, s)
		}
	}
	want := []int64{0, 1, 2, 3, 4, 10, 20, 30}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("passed at seconds %v, want %v", got, want)
	}
	// Quiet for 30 s after the pass at 30 (tokens: 0 → 3); pings resume
	// at 60 s: three pass, then one per 10 s.
	got = got[:0]
	for s := int64(60); s < 75; s++ {
		if pass(start + s*sec) {
			got = append(got, s)
		}
	}
	want = []int64{60, 61, 62, 70}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the pause passed at %v, want %v", got, want)
	}
}

func TestNATDecisionAndPick(t *testing.T) {
	m := NewModel()
	pre := chainOf(m, NAT, "PREROUTING")
	rng := NATRange{MinAddr: ip(192, 168, 1, 1), MaxAddr: ip(192, 168, 1, 10), MinPort: 80, MaxPort: 100, Flags: NATMapIPs | NATProtoSpecified}
	pre.Rules = []Rule{
		rule(Target{Kind: TargetAccept}, src(ip(10, 0, 0, 1), 0xffffffff)),
		rule(Target{Kind: TargetDNAT, NAT: rng}, func(r *Rule) {
			r.Dst = Addr{IP: ip(15, 45, 23, 67), Mask: 0xffffffff}
			tcpDport(80)(r)
		}),
	}
	post := chainOf(m, NAT, "POSTROUTING")
	post.Rules = []Rule{rule(Target{Kind: TargetMasquerade}, func(r *Rule) { r.OutIface = Iface{Name: "eth0"} })}
	rs, err := Compile(m, []string{"lo", "eth0", "eth1"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := Packet{Src: ip(1, 2, 3, 4), Dst: ip(15, 45, 23, 67), Proto: ProtoTCP, SrcPort: 5555, DstPort: 80, OutIf: 1}
	d := rs.NAT(Prerouting, &p, 0, 0)
	if d.Kind != NATDNAT || d.Range != rng {
		t.Fatalf("DNAT decision %+v", d)
	}
	seen := map[uint32]bool{}
	for h := uint32(0); h < 1000; h++ {
		a, port := d.Pick(h * 2654435761)
		if a < rng.MinAddr || a > rng.MaxAddr || port < 80 || port > 100 {
			t.Fatalf("pick %d: %s:%d out of range", h, FormatIP(a), port)
		}
		if a2, p2 := d.Pick(h * 2654435761); a2 != a || p2 != port {
			t.Fatal("pick not deterministic")
		}
		seen[a] = true
	}
	if len(seen) != 10 {
		t.Errorf("picked %d of 10 backends", len(seen))
	}
	p.Src = ip(10, 0, 0, 1)
	if d := rs.NAT(Prerouting, &p, 0, 0); d.Kind != NATAccept {
		t.Errorf("ACCEPT in nat: %+v", d)
	}
	if d := rs.NAT(Postrouting, &p, 0, 0); d.Kind != NATMasquerade {
		t.Errorf("MASQUERADE -o eth0: %+v", d)
	}
	p.OutIf = 2
	if d := rs.NAT(Postrouting, &p, 0, 0); d.Kind != NATNone {
		t.Errorf("MASQUERADE -o eth0 on eth1: %+v", d)
	}
	// Stable target IDs across a recompilation that adds a target first.
	m2 := m.Clone()
	c := chainOf(m2, NAT, "POSTROUTING")
	c.Rules = append([]Rule{rule(Target{Kind: TargetSNAT, NAT: NATRange{MinAddr: 1, MaxAddr: 1, Flags: NATMapIPs}})}, c.Rules...)
	rs2, err := Compile(m2, []string{"lo", "eth0", "eth1"}, Options{Prev: rs})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[NATKind]uint16{}
	for _, nt := range rs.NATTargets() {
		ids[nt.Kind] = nt.ID
	}
	for _, nt := range rs2.NATTargets() {
		if old, ok := ids[nt.Kind]; ok && old != nt.ID {
			t.Errorf("%v target ID changed %d → %d", nt.Kind, old, nt.ID)
		}
		if nt.Kind == NATSNAT && (nt.ID == ids[NATDNAT] || nt.ID == ids[NATMasquerade]) {
			t.Errorf("new SNAT target reuses ID %d", nt.ID)
		}
	}
}

func TestInterfaceWildcards(t *testing.T) {
	m := NewModel()
	f := chainOf(m, Filter, "FORWARD")
	f.Rules = []Rule{
		rule(Target{Kind: TargetDrop}, func(r *Rule) { r.InIface = Iface{Name: "eth+"} }),
		rule(Target{Kind: TargetReject}, func(r *Rule) { r.OutIface = Iface{Name: "wg0", Invert: true} }),
		rule(Target{Kind: TargetDrop}, func(r *Rule) { r.InIface = Iface{Name: "absent0"} }),
	}
	rs, err := Compile(m, []string{"lo", "eth0", "eth12", "wg0", "ppp0"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		in, out uint16
		want    Action
	}{{1, 3, Drop}, {2, 3, Drop}, {4, 3, Accept}, {4, 0, Reject}, {4, NoIface, Reject}, {0, 3, Accept}} {
		p := Packet{InIf: c.in, OutIf: c.out}
		if got := rs.Filter(Forward, &p, 0, 0).Action; got != c.want {
			t.Errorf("in %d out %d: %v, want %v", c.in, c.out, got, c.want)
		}
	}
}

func TestLogRecords(t *testing.T) {
	m := NewModel()
	f := chainOf(m, Filter, "FORWARD")
	f.Rules = []Rule{rule(Target{Kind: TargetLog, LogPrefix: "FWD: ", LogLevel: 6})}
	rings := NewLogRings(2, 4, 2, 2) // 2 per second, burst 2, ring of 4
	rs, err := Compile(m, nil, Options{Cores: 2, Log: rings})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		p := Packet{Src: uint32(i), Length: 40}
		rs.Filter(Forward, &p, 1, int64(i)) // 10 packets within 10 ns: burst of 2 passes
	}
	var out [8]LogRecord
	n := rings.Drain(1, out[:])
	if n != 2 || out[0].PrefixString() != "FWD: " || out[0].Level != 6 || out[1].Packet.Src != 1 || out[0].Hook != Forward {
		t.Fatalf("drained %d: %+v", n, out[:n])
	}
	if lim, full := rings.Dropped(1); lim != 8 || full != 0 {
		t.Errorf("dropped %d rate-limited %d full, want 8 0", lim, full)
	}
	if n := rings.Drain(0, out[:]); n != 0 {
		t.Errorf("core 0 ring has %d records", n)
	}
}

// randomModel builds a random filter FORWARD/user-chain and nat rule set
// exercising every match and target.
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

func TestZeroAllocs(t *testing.T) {
	rnd := rand.New(rand.NewSource(7))
	m := randomModel(rnd, 200)
	rs, err := Compile(m, []string{"lo", "eth0", "eth1", "wg0"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pkts := make([]Packet, 64)
	for i := range pkts {
		pkts[i] = randomPacket(rnd)
	}
	i := 0
	allocs := testing.AllocsPerRun(2000, func() {
		p := pkts[i%len(pkts)]
		i++
		rs.NAT(Prerouting, &p, 0, int64(i))
		rs.Filter(Forward, &p, 0, int64(i))
		rs.NAT(Postrouting, &p, 0, int64(i))
		rs.FilterLinear(Forward, &p, 0, int64(i))
		if i%32 == 0 {
			rs.Flush(0)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per evaluation", allocs)
	}
}

// TestCountersConcurrent runs cores, a reader and a zeroer concurrently
// (run with -race) and checks the totals are exact once quiet.
func TestCountersConcurrent(t *testing.T) {
	m := NewModel()
	f := chainOf(m, Filter, "FORWARD")
	for i := 0; i < 20; i++ {
		f.Rules = append(f.Rules, rule(Target{}, tcpDport(uint16(i))))
	}
	f.Rules = append(f.Rules, rule(Target{Kind: TargetAccept}))
	const cores, per = 2, 20000
	rs, err := Compile(m, nil, Options{Cores: cores})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for c := 0; c < cores; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				p := Packet{Proto: ProtoTCP, DstPort: uint16(i % 20), Length: 100}
				rs.Filter(Forward, &p, c, 0)
				if i%64 == 63 {
					rs.Flush(c)
				}
			}
			rs.Flush(c)
		}(c)
	}
	var rw sync.WaitGroup
	rw.Add(1)
	go func() {
		defer rw.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i := 0; i < 21; i++ {
				if c, err := rs.RuleCounters(Filter, "FORWARD", i); err != nil || c.Bytes != c.Packets*100 && c.Bytes > c.Packets*100+200 {
					// pkts and bytes are published separately; they never
					// differ by more than a flush's worth.
					_ = c
				}
			}
			_ = rs.Zero(Filter, "FORWARD")
			_ = rs.Model()
		}
	}()
	wg.Wait()
	close(stop)
	rw.Wait()
	if err := rs.Zero(Filter, ""); err != nil {
		t.Fatal(err)
	}
	for c := 0; c < cores; c++ {
		for i := 0; i < 100; i++ {
			p := Packet{Proto: ProtoTCP, DstPort: 3, Length: 100}
			rs.Filter(Forward, &p, c, 0)
		}
		rs.Flush(c)
	}
	got, _ := rs.RuleCounters(Filter, "FORWARD", 3)
	if got != (Counters{200, 20000}) {
		t.Fatalf("after zero, rule 4 counters %+v, want 200 packets 20000 bytes", got)
	}
	got, _ = rs.RuleCounters(Filter, "FORWARD", 20)
	if got != (Counters{200, 20000}) {
		t.Fatalf("after zero, last rule %+v", got)
	}
}

// TestCountersCarryOver: rules that survive a replacement keep their
// counters, new ones start at zero (or their loaded counters).
func TestCountersCarryOver(t *testing.T) {
	m := NewModel()
	f := chainOf(m, Filter, "FORWARD")
	keep := rule(Target{Kind: TargetAccept}, tcpDport(22))
	f.Rules = []Rule{keep}
	rs, err := Compile(m, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		p := Packet{Proto: ProtoTCP, DstPort: 22, Length: 10}
		rs.Filter(Forward, &p, 0, 0)
	}
	rs.Flush(0)
	m2 := m.Clone()
	f2 := chainOf(m2, Filter, "FORWARD")
	f2.Rules = append([]Rule{rule(Target{Kind: TargetDrop}, tcpDport(23))}, f2.Rules...)
	rs2, err := Compile(m2, nil, Options{Prev: rs})
	if err != nil {
		t.Fatal(err)
	}
	// Packets still counted by the old set before the swap completes.
	p := Packet{Proto: ProtoTCP, DstPort: 22, Length: 10}
	rs.Filter(Forward, &p, 0, 0)
	rs.Flush(0)
	rs2.Settle()
	if c, _ := rs2.RuleCounters(Filter, "FORWARD", 1); c != (Counters{6, 60}) {
		t.Errorf("carried counters %+v, want 6/60", c)
	}
	if c, _ := rs2.RuleCounters(Filter, "FORWARD", 0); c != (Counters{}) {
		t.Errorf("new rule counters %+v", c)
	}
	if c, _ := rs2.PolicyCounters(Filter, "FORWARD"); c != (Counters{}) {
		t.Errorf("policy counters %+v", c)
	}
}

func TestValidateErrors(t *testing.T) {
	bad := []struct {
		name string
		mod  func(m *Model)
	}{
		{"loop", func(m *Model) {
			chainOf(m, Filter, "a").Rules = []Rule{rule(Target{Kind: TargetJump, Chain: "b"})}
			chainOf(m, Filter, "b").Rules = []Rule{rule(Target{Kind: TargetJump, Chain: "a"})}
		}},
		{"dnat in postrouting", func(m *Model) {
			chainOf(m, NAT, "POSTROUTING").Rules = []Rule{rule(Target{Kind: TargetDNAT, NAT: NATRange{MinAddr: 1, MaxAddr: 1, Flags: NATMapIPs}})}
		}},
		{"snat via user chain from prerouting", func(m *Model) {
			chainOf(m, NAT, "x").Rules = []Rule{rule(Target{Kind: TargetSNAT, NAT: NATRange{MinAddr: 1, MaxAddr: 1, Flags: NATMapIPs}})}
			chainOf(m, NAT, "PREROUTING").Rules = []Rule{rule(Target{Kind: TargetJump, Chain: "x"})}
		}},
		{"drop in nat", func(m *Model) { chainOf(m, NAT, "PREROUTING").Rules = []Rule{rule(Target{Kind: TargetDrop})} }},
		{"missing chain", func(m *Model) {
			chainOf(m, Filter, "FORWARD").Rules = []Rule{rule(Target{Kind: TargetJump, Chain: "nope"})}
		}},
		{"mac in postrouting", func(m *Model) {
			chainOf(m, NAT, "POSTROUTING").Rules = []Rule{rule(Target{}, func(r *Rule) { r.Matches = []Match{{Kind: MatchMAC}} })}
		}},
	}
	for _, b := range bad {
		m := NewModel()
		b.mod(m)
		if _, err := Compile(m, nil, Options{}); err == nil {
			t.Errorf("%s: compiled", b.name)
		}
	}
	// deep but legal nesting, and the limit
	m := NewModel()
	prev := "FORWARD"
	for i := 0; i < MaxDepth+1; i++ {
		name := fmt.Sprintf("c%02d", i)
		chainOf(m, Filter, name)
		chainOf(m, Filter, prev).Rules = []Rule{rule(Target{Kind: TargetJump, Chain: name})}
		prev = name
	}
	if _, err := Compile(m, nil, Options{}); err == nil {
		t.Error("nesting deeper than MaxDepth compiled")
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

func TestPolicyOnlyCountsLikeFilter(t *testing.T) {
	m := NewModel()
	rs, err := Compile(m, []string{"in0"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, ok := rs.PolicyOnly(Forward)
	if !ok || v.Action != Accept {
		t.Fatalf("empty FORWARD: %v %v", v, ok)
	}
	rs.CountPolicy(Forward, 0, 100)
	rs.Filter(Forward, &Packet{Length: 50, InIf: NoIface, OutIf: NoIface}, 0, 0)
	rs.CountPolicyN(Forward, 0, 3, 1000)
	rs.CountPolicyN(Forward, 0, 0, 0)
	rs.Flush(0)
	c, err := rs.PolicyCounters(Filter, "FORWARD")
	if err != nil || c.Packets != 5 || c.Bytes != 1150 {
		t.Errorf("policy counters %+v %v", c, err)
	}
}
