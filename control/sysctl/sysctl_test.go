package sysctl

import (
	"errors"
	"testing"

	"xnat/dataplane"
	"xnat/flowtable"
	"xnat/portalloc"
)

func target(t *testing.T) *Target {
	tab, err := flowtable.New(flowtable.Config{Capacity: 1000, Cores: 1})
	if err != nil {
		t.Fatal(err)
	}
	lim, err := portalloc.NewSourceLimiter(portalloc.LimiterConfig{Cores: 1, Conns: 16})
	if err != nil {
		t.Fatal(err)
	}
	return &Target{Table: tab, Settings: dataplane.NewSettings(), Limiter: lim}
}

func TestDefaultsAndNames(t *testing.T) {
	tg := target(t)
	want := map[string]int64{
		"net.netfilter.nf_conntrack_max":                        1000,
		"net.netfilter.nf_conntrack_count":                      0,
		"net.netfilter.nf_conntrack_tcp_loose":                  1,
		"net.netfilter.nf_conntrack_tcp_timeout_established":    432000,
		"net.netfilter.nf_conntrack_udp_timeout":                30,
		"net.netfilter.nf_conntrack_udp_timeout_stream":         120,
		"net.netfilter.nf_conntrack_icmp_timeout":               30,
		"net.netfilter.nf_conntrack_generic_timeout":            600,
		"net.netfilter.nf_conntrack_tcp_be_liberal":             0,
		"net.netfilter.nf_conntrack_tcp_ignore_invalid_rst":     0,
		"net.netfilter.nf_conntrack_tcp_max_retrans":            3,
		"net.netfilter.nf_conntrack_tcp_timeout_max_retrans":    300,
		"net.netfilter.nf_conntrack_tcp_timeout_unacknowledged": 300,
		"xnat.per_source_max":                                   0,
		"xnat.per_source_ports":                                 0,
		"xnat.tcp_loose":                                        1,
	}
	all := All(tg)
	if len(all) != len(keys) || len(all) < 20 {
		t.Errorf("%d keys", len(all))
	}
	for name, v := range want {
		got, err := Get(tg, name)
		if err != nil || got != v {
			t.Errorf("%s = %d %v, want %d", name, got, err, v)
		}
	}
}

func TestSetIsAllOrNothing(t *testing.T) {
	tg := target(t)
	ok := []Assignment{{"net.netfilter.nf_conntrack_max", 500}, {"net.netfilter.nf_conntrack_udp_timeout", 10}, {"xnat.per_source_max", 50}, {"xnat.per_source_ports", 20}}
	if err := Set(tg, ok); err != nil {
		t.Fatal(err)
	}
	if tg.Table.Max() != 500 || tg.Limiter.Limit() != 50 || tg.Limiter.PortLimit() != 20 {
		t.Errorf("not applied: max %d limit %d ports %d", tg.Table.Max(), tg.Limiter.Limit(), tg.Limiter.PortLimit())
	}
	for _, bad := range []struct {
		as   []Assignment
		want error
	}{
		{[]Assignment{{"net.netfilter.nf_conntrack_max", 600}, {"net.netfilter.nf_conntrack_max", 2000}}, ErrValue},
		{[]Assignment{{"net.netfilter.nf_conntrack_udp_timeout", 20}, {"net.netfilter.nf_conntrack_count", 5}}, ErrReadOnly},
		{[]Assignment{{"net.netfilter.nf_conntrack_udp_timeout", 20}, {"net.netfilter.bogus", 5}}, ErrUnknown},
		{[]Assignment{{"xnat.tcp_loose", 2}}, ErrValue},
		{[]Assignment{{"xnat.per_source_max", 10}, {"xnat.per_source_ports", -1}}, ErrValue},
		{[]Assignment{{"xnat.per_source_ports", portalloc.MaxSourceLimit + 1}}, ErrValue},
		{[]Assignment{{"net.netfilter.nf_conntrack_tcp_be_liberal", 2}}, ErrValue},
		{[]Assignment{{"net.netfilter.nf_conntrack_tcp_max_retrans", 256}}, ErrValue},
		{[]Assignment{{"net.netfilter.nf_conntrack_udp_timeout", 0}}, ErrValue},
	} {
		if err := Set(tg, bad.as); !errors.Is(err, bad.want) {
			t.Errorf("%v: %v, want %v", bad.as, err, bad.want)
		}
	}
	// Nothing of the rejected sets was applied.
	if v, _ := Get(tg, "net.netfilter.nf_conntrack_max"); v != 500 {
		t.Errorf("max %d after rejected changes", v)
	}
	if v, _ := Get(tg, "net.netfilter.nf_conntrack_udp_timeout"); v != 10 {
		t.Errorf("udp timeout %d after rejected changes", v)
	}
	if v, _ := Get(tg, "xnat.per_source_max"); v != 50 {
		t.Errorf("per_source_max %d after rejected changes", v)
	}
	if v, _ := Get(tg, "xnat.per_source_ports"); v != 20 {
		t.Errorf("per_source_ports %d after rejected changes", v)
	}
}

// TestSysctlNoLimiter: without a limiter both per-source keys read 0 and
// refuse a change.
func TestSysctlNoLimiter(t *testing.T) {
	tg := target(t)
	tg.Limiter = nil
	for _, k := range []string{"xnat.per_source_max", "xnat.per_source_ports"} {
		if v, err := Get(tg, k); v != 0 || err != nil {
			t.Errorf("%s = %d %v", k, v, err)
		}
		if err := Set(tg, []Assignment{{k, 5}}); !errors.Is(err, ErrReadOnly) {
			t.Errorf("set %s: %v", k, err)
		}
	}
}

func TestParseAssignment(t *testing.T) {
	a, err := ParseAssignment(" net.netfilter.nf_conntrack_max = 42 ")
	if err != nil || a.Name != "net.netfilter.nf_conntrack_max" || a.Value != 42 {
		t.Errorf("%+v %v", a, err)
	}
	for _, s := range []string{"", "=5", "x", "x=", "x=1.5", "x=abc"} {
		if _, err := ParseAssignment(s); !errors.Is(err, ErrValue) {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func FuzzParseAssignment(f *testing.F) {
	f.Add("net.netfilter.nf_conntrack_max=10")
	f.Add("a = -1")
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := ParseAssignment(s); err != nil && !errors.Is(err, ErrValue) {
			t.Fatal(err)
		}
	})
}

func TestTCPTrackingKeys(t *testing.T) {
	tg := target(t)
	if err := Set(tg, []Assignment{{"net.netfilter.nf_conntrack_tcp_be_liberal", 1}, {"net.netfilter.nf_conntrack_tcp_ignore_invalid_rst", 1},
		{"net.netfilter.nf_conntrack_tcp_max_retrans", 5}, {"net.netfilter.nf_conntrack_tcp_timeout_unacknowledged", 120}}); err != nil {
		t.Fatal(err)
	}
	s := tg.Settings
	if !s.TCPBeLiberal.Load() || !s.TCPIgnoreInvalidRst.Load() || s.TCPMaxRetrans.Load() != 5 {
		t.Errorf("not applied: liberal %v ignore_invalid_rst %v max_retrans %d", s.TCPBeLiberal.Load(), s.TCPIgnoreInvalidRst.Load(), s.TCPMaxRetrans.Load())
	}
	if d, _ := tg.Table.Timeout("nf_conntrack_tcp_timeout_unacknowledged"); d.Seconds() != 120 {
		t.Errorf("unacknowledged timeout %v", d)
	}
}

// TestRPFilterKeys: net.ipv4.conf.{all,default,IF}.rp_filter read and
// set the dataplane's reverse-path filter, each interface by its port ID,
// a dot in its name written as a slash; values beyond 0 to 2 are refused.
func TestRPFilterKeys(t *testing.T) {
	tg := target(t)
	tg.Ifaces = []string{"eth1", "eth0.100"}
	rp := &tg.Settings.RPFilter
	for name, want := range map[string]int64{"net.ipv4.conf.all.rp_filter": 1, "net.ipv4.conf.default.rp_filter": 1,
		"net.ipv4.conf.eth1.rp_filter": 0, "net.ipv4.conf.eth0/100.rp_filter": 0} {
		if v, err := Get(tg, name); v != want || err != nil {
			t.Errorf("%s = %d %v, want %d", name, v, err, want)
		}
	}
	if n := len(All(tg)); n != len(Keys())+2 {
		t.Errorf("%d values for %d fixed keys and 2 interfaces", n, len(Keys()))
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(Set(tg, []Assignment{{"net.ipv4.conf.all.rp_filter", 0}, {"net.ipv4.conf.eth0/100.rp_filter", 2}, {"net.ipv4.conf.default.rp_filter", 2}}))
	if rp.All.Load() != 0 || rp.If[1].Load() != 2 || rp.If[0].Load() != 0 || rp.Default.Load() != 2 || rp.Mode(1) != 2 || rp.Mode(0) != 0 {
		t.Errorf("not applied: all %d, if %d %d, default %d", rp.All.Load(), rp.If[0].Load(), rp.If[1].Load(), rp.Default.Load())
	}
	for _, bad := range []Assignment{{"net.ipv4.conf.eth1.rp_filter", 3}, {"net.ipv4.conf.all.rp_filter", -1}} {
		if err := Set(tg, []Assignment{{"net.ipv4.conf.eth1.rp_filter", 1}, bad}); !errors.Is(err, ErrValue) {
			t.Errorf("%v: %v", bad, err)
		}
	}
	if rp.If[0].Load() != 0 {
		t.Errorf("a refused set changed eth1 to %d", rp.If[0].Load())
	}
	for _, name := range []string{"net.ipv4.conf.eth2.rp_filter", "net.ipv4.conf.eth0.100.rp_filter", "net.ipv4.conf.lo.rp_filter"} {
		if _, err := Get(tg, name); !errors.Is(err, ErrUnknown) {
			t.Errorf("%s: %v, want unknown", name, err)
		}
	}
	if RPFilterKey("eth0.100") != "net.ipv4.conf.eth0/100.rp_filter" {
		t.Errorf("key %s", RPFilterKey("eth0.100"))
	}
}

func TestFullConeKeys(t *testing.T) {
	tg := target(t)
	if v, err := Get(tg, "xnat.fullcone_max"); err != nil || v != 0 {
		t.Fatalf("without a mapping table: %d %v", v, err)
	}
	if err := Set(tg, []Assignment{{"xnat.fullcone_max", 5}}); err == nil {
		t.Fatal("xnat.fullcone_max set without a mapping table")
	}
	m, err := flowtable.New(flowtable.Config{Capacity: 2048, Cores: 1})
	if err != nil {
		t.Fatal(err)
	}
	tg.Mappings = m
	if v, _ := Get(tg, "xnat.fullcone_capacity"); v != 2048 {
		t.Fatalf("capacity %d", v)
	}
	if err := Set(tg, []Assignment{{"xnat.fullcone_max", 100}}); err != nil || m.Max() != 100 {
		t.Fatalf("set: %v, max %d", err, m.Max())
	}
	for _, bad := range []int64{0, 2049, -1} {
		if err := Set(tg, []Assignment{{"xnat.fullcone_max", bad}}); !errors.Is(err, ErrValue) {
			t.Errorf("xnat.fullcone_max=%d: %v", bad, err)
		}
	}
	if err := Set(tg, []Assignment{{"xnat.fullcone_count", 1}}); !errors.Is(err, ErrReadOnly) {
		t.Errorf("xnat.fullcone_count set: %v", err)
	}
}
