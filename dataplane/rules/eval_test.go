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
