package ha

import (
	"errors"
	"strings"
	"testing"

	"xnat/dataplane"
	"xnat/flowtable"
)

func TestFilterAllow(t *testing.T) {
	tcp := func(src, dst string, st flowtable.State) *Conn {
		return &Conn{Proto: 6, Src: a4(src), Dst: a4(dst), SrcPort: 40000, DstPort: 443, TCPState: uint8(st), Has: HasTCPState,
			SNAT: a4("198.51.100.1"), SPAT: 20000}
	}
	udp := &Conn{Proto: 17, Src: a4("10.0.0.2"), Dst: a4("192.0.2.1"), SrcPort: 53, DstPort: 53}
	icmp := &Conn{Proto: 1, Src: a4("10.0.0.2"), Dst: a4("192.0.2.1"), SrcPort: 7}
	// DNAT to an inside server: the reply's source is the real destination.
	dnat := &Conn{Proto: 17, Src: a4("203.0.113.7"), Dst: a4("198.51.100.1"), SrcPort: 33000, DstPort: 8053,
		DNAT: a4("10.1.0.10"), DPAT: 53, Has: HasDNAT | HasDPAT}
	est := tcp("10.0.0.2", "192.0.2.1", flowtable.TCPEstablished)
	syn := tcp("10.0.0.2", "192.0.2.1", flowtable.TCPSynSent)
	lo := tcp("127.0.0.1", "192.0.2.1", flowtable.TCPEstablished)

	type check struct {
		t    MsgType
		c    *Conn
		want bool
	}
	cases := []struct {
		name   string
		spec   FilterSpec
		checks []check
	}{
		{"empty", FilterSpec{}, []check{{TypeNew, est, true}, {TypeNew, udp, true}, {TypeDelete, icmp, true}}},
		{"protocol accept", FilterSpec{ProtocolAccept: []string{"TCP", "udp"}},
			[]check{{TypeNew, est, true}, {TypeUpdate, udp, true}, {TypeNew, icmp, false}, {TypeDelete, icmp, false}}},
		{"protocol ignore by number", FilterSpec{ProtocolIgnore: []string{"17"}},
			[]check{{TypeNew, est, true}, {TypeNew, udp, false}, {TypeNew, icmp, true}}},
		{"address ignore", FilterSpec{AddressIgnore: []string{"127.0.0.1", "10.1.0.0/24"}},
			[]check{{TypeNew, est, true}, {TypeNew, lo, false}, {TypeDelete, lo, false}, {TypeNew, dnat, false}}},
		{"address accept network", FilterSpec{AddressAccept: []string{"10.0.0.0/8"}},
			[]check{{TypeNew, est, true}, {TypeNew, lo, false}, {TypeNew, dnat, true}, {TypeNew, udp, true}}},
		{"address accept host bits", FilterSpec{AddressAccept: []string{"192.0.2.77/24"}},
			[]check{{TypeNew, est, true}, {TypeNew, dnat, false}}},
		{"state accept", FilterSpec{StateAccept: []string{"ESTABLISHED", "time_wait"}},
			[]check{{TypeNew, est, true}, {TypeNew, syn, false}, {TypeUpdate, syn, false},
				{TypeDelete, syn, true}, {TypeNew, udp, true}, {TypeNew, icmp, true},
				{TypeNew, &Conn{Proto: 6, Src: 1, Dst: 2}, true}}},
		{"state ignore", FilterSpec{StateIgnore: []string{"syn_sent", "listen"}},
			[]check{{TypeNew, est, true}, {TypeNew, syn, false}, {TypeNew, tcp("10.0.0.2", "192.0.2.1", flowtable.TCPSynSent2), false}}},
		{"all three", FilterSpec{ProtocolAccept: []string{"tcp"}, AddressIgnore: []string{"127.0.0.0/8"}, StateAccept: []string{"established"}},
			[]check{{TypeNew, est, true}, {TypeNew, lo, false}, {TypeNew, syn, false}, {TypeNew, udp, false}}},
	}
	for _, tc := range cases {
		f, err := NewFilter(tc.spec)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if f.Empty() != (tc.name == "empty") {
			t.Errorf("%s: Empty %v", tc.name, f.Empty())
		}
		for i, c := range tc.checks {
			if got := f.Allow(c.t, c.c); got != c.want {
				t.Errorf("%s #%d: %v %s: %v, want %v", tc.name, i, c.t, c.c, got, c.want)
			}
		}
	}
	var nilFilter *Filter
	if !nilFilter.Allow(TypeNew, est) || !nilFilter.Empty() {
		t.Fatal("a nil filter must send everything")
	}
}

func TestFilterErrors(t *testing.T) {
	cases := map[string]FilterSpec{
		"both given":           {ProtocolAccept: []string{"tcp"}, ProtocolIgnore: []string{"udp"}},
		`protocol "tcpx"`:      {ProtocolAccept: []string{"tcpx"}},
		`protocol "256"`:       {ProtocolIgnore: []string{"256"}},
		`address "10.0.0"`:     {AddressIgnore: []string{"10.0.0"}},
		`address "::1"`:        {AddressIgnore: []string{"::1"}},
		`address "1.2.3.4/33"`: {AddressAccept: []string{"1.2.3.4/33"}},
		`TCP state "open"`:     {StateAccept: []string{"open"}},
		"state_accept and":     {StateAccept: []string{"close"}, StateIgnore: []string{"listen"}},
	}
	for want, spec := range cases {
		_, err := NewFilter(spec)
		if !errors.Is(err, ErrFilter) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", want, err)
		}
	}
}

// TestFilteredExporter: the exporter's events and a whole-table send go
// through the filter: the peer gets the connections it lets through, the
// others are counted.
func TestFilteredExporter(t *testing.T) {
	tab, err := flowtable.New(flowtable.Config{Capacity: 1024, Cores: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFilter(FilterSpec{ProtocolAccept: []string{"tcp"}, AddressIgnore: []string{"10.0.0.66"}})
	if err != nil {
		t.Fatal(err)
	}
	backup := newPeer(t, Config{})
	out := &FilteredSender{Out: &pipe{t: t, s: NewSession(Config{}, backup), to: backup}, Filter: f}
	src := &fakeSource{q: make([][]dataplane.SyncEvent, 1)}
	ext := a4("198.51.100.1")
	flow := func(proto uint8, src string, i int) flowtable.NewFlow {
		st := flowtable.TCPEstablished
		if proto == 17 {
			st = flowtable.UDP
		}
		return flowtable.NewFlow{Orig: flowtable.MakeTuple(proto, a4(src), uint16(1000+i), a4("192.0.2.1"), 443),
			Reply:  flowtable.MakeTuple(proto, a4("192.0.2.1"), 443, ext, uint16(30000+i)),
			Status: uint32(st) | flowtable.FlagSrcNAT}
	}
	kept := flow(6, "10.0.0.2", 1)
	flows := []flowtable.NewFlow{kept, flow(17, "10.0.0.2", 2), flow(6, "10.0.0.66", 3)}
	for _, nf := range flows {
		src.q[0] = append(src.q[0], dataplane.SyncEvent{Kind: dataplane.SyncNew, Orig: nf.Orig, Reply: nf.Reply, Status: nf.Status})
	}
	e := NewExporter(src, out, tab)
	if _, err := e.Poll(); err != nil {
		t.Fatal(err)
	}
	if _, ok := backup.cache.Get(kept.Orig); !ok || backup.cache.Len() != 1 || out.Filtered() != 2 {
		t.Fatalf("after events: cache %d, filtered %d", backup.cache.Len(), out.Filtered())
	}

	core := tab.Core(0)
	core.Enter()
	for _, nf := range flows {
		if _, res := core.Insert(&nf, tab.Now()); res != flowtable.Inserted {
			t.Fatal(res)
		}
	}
	core.Exit()
	backup.cache.Flush()
	if n := SendTable(tab, out); n != 3 {
		t.Fatalf("listed %d", n)
	}
	if err := out.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, ok := backup.cache.Get(kept.Orig); !ok || backup.cache.Len() != 1 || out.Filtered() != 4 {
		t.Fatalf("after a table send: cache %d, filtered %d", backup.cache.Len(), out.Filtered())
	}
}
