package dataplane

import (
	"testing"

	"xnat/flowtable"
	"xnat/portalloc"
)

// newLimitedTestbed is newTestbed with a per-source limiter.
func newLimitedTestbed(t *testing.T, cfg portalloc.LimiterConfig) (*testbed, *portalloc.SourceLimiter) {
	return newLimitedTestbedRules(t, cfg, masqRules)
}

func newLimitedTestbedRules(t *testing.T, cfg portalloc.LimiterConfig, ruleText string) (*testbed, *portalloc.SourceLimiter) {
	t.Helper()
	tab, err := flowtable.New(flowtable.Config{Capacity: 4096, Cores: 1, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	lim, err := portalloc.NewSourceLimiter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pools := NewPools(1, lim)
	env, err := NewEnv(EnvConfig{Snapshot: testSnapshot(1500), Inside: []string{"in0"}, Outside: []string{"out0"}, Model: model(t, ruleText), Pools: pools})
	if err != nil {
		t.Fatal(err)
	}
	return &testbed{t: t, tab: tab, dp: New(tab, pools, NewSettings(), env)}, lim
}

// TestPerSourceDrops: a host at its connection limit, or at its port
// limit, is dropped as per_source_limit; a host the limiter has no slot
// for as per_source_full; connections that end give their counts back
// through the core's sweep.
func TestPerSourceDrops(t *testing.T) {
	tb, lim := newLimitedTestbed(t, portalloc.LimiterConfig{Cores: 1, Conns: 4096, MaxConns: 2, MaxPorts: 1})
	f1 := udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t)
	r, _ := tb.run(f1, portIn)
	expect(t, r, ActForward, portOut)
	// Another server from the same port: the same external port.
	r, _ = tb.run(udpPkt(macA, macIn0, addrA, 5000, remote, 7001).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	if c, p := lim.Count(addrA); c != 2 || p != 1 {
		t.Fatalf("counts %d %d", c, p)
	}
	// A third connection: over per_source_max.
	r, _ = tb.run(udpPkt(macA, macIn0, addrA, 5000, remote, 7002).bytes(t), portIn)
	if r.Action != ActDrop || r.Reason != ReasonPerSource {
		t.Fatalf("third connection: %v %v", r.Action, r.Reason)
	}
	// One goes; a connection on a new port is over per_source_ports.
	if !tb.tab.Delete(flowtable.MakeTuple(flowtable.ProtoUDP, addrA, 5000, remote, 7001)) {
		t.Fatal("delete")
	}
	tb.dp.Pipeline(0).Idle()
	if c, p := lim.Count(addrA); c != 1 || p != 1 {
		t.Fatalf("counts after a delete %d %d", c, p)
	}
	r, _ = tb.run(udpPkt(macA, macIn0, addrA, 6000, remote, 7000).bytes(t), portIn)
	if r.Action != ActDrop || r.Reason != ReasonPerSource {
		t.Fatalf("a second port: %v %v", r.Action, r.Reason)
	}
	if c := tb.dp.TotalCounters(); c.Drops[ReasonPerSource] != 2 {
		t.Errorf("per_source_limit drops %d", c.Drops[ReasonPerSource])
	}
	if s := tb.dp.Pools.Stats(); s.PerSourceLimit != 2 {
		t.Errorf("pool stats %+v", s)
	}
	tb.tab.Flush()
	tb.dp.Pipeline(0).Idle()
	if c, p := lim.Count(addrA); c != 0 || p != 0 {
		t.Fatalf("counts after a flush %d %d", c, p)
	}

	// A limiter with room for 8 sources (16 slots): the 17th is refused.
	tb, _ = newLimitedTestbed(t, portalloc.LimiterConfig{Cores: 1, Conns: 4096, Sources: 8})
	for i := range 17 {
		r, _ := tb.run(udpPkt(macA, macIn0, ip4(10, 0, 0, byte(10+i)), 5000, remote, 7000).bytes(t), portIn)
		want := ActForward
		if i == 16 {
			want = ActDrop
		}
		if r.Action != want {
			t.Fatalf("source %d: %v %v", i, r.Action, r.Reason)
		}
		if i == 16 && r.Reason != ReasonPerSourceFull {
			t.Fatalf("source %d: %v", i, r.Reason)
		}
	}
	if c := tb.dp.TotalCounters(); c.Drops[ReasonPerSourceFull] != 1 || ReasonPerSourceFull.String() != "per_source_full" {
		t.Errorf("per_source_full drops %d (%s)", c.Drops[ReasonPerSourceFull], ReasonPerSourceFull)
	}
	if s := tb.dp.Pools.Stats(); s.LimiterFull != 1 {
		t.Errorf("pool stats %+v", s)
	}
}
