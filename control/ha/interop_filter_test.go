package ha

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"xnat/dataplane"
	"xnat/flowtable"
)

// TestInteropFilterConntrackd: an xnat node with a filter (TCP and UDP
// only, not 10.1.0.66, TCP only when established) and the pool check,
// its peer a real conntrackd. conntrackd's external cache gets the two
// connections the filter lets through, from the events and again from
// the whole-table send its resync request asks for; the three others are
// counted as filtered. conntrackd never announces its pools: xnat takes
// it as unchecked, and conntrackd counts no malformed message (the check
// goes to a port it does not listen on).
func TestInteropFilterConntrackd(t *testing.T) {
	lnx, x := syncLink(t, "lnx", "x")
	cd := startConntrackd(t, lnx, "10.9.0.1", "10.9.0.2", "s0")

	ext := a4("198.51.100.1")
	mk := func(proto uint8, src string, sport uint16, st flowtable.State) flowtable.NewFlow {
		dport := uint16(80)
		if proto == 1 {
			dport = 0
		}
		return flowtable.NewFlow{Orig: flowtable.MakeTuple(proto, a4(src), sport, a4("198.51.100.2"), dport),
			Reply:  flowtable.MakeTuple(proto, a4("198.51.100.2"), dport, ext, sport+10000),
			Status: uint32(st) | flowtable.FlagSeenReply | flowtable.FlagAssured | flowtable.FlagSrcNAT}
	}
	flows := []flowtable.NewFlow{
		mk(6, "10.1.0.2", 40000, flowtable.TCPEstablished), // sent
		mk(17, "10.1.0.3", 40001, flowtable.UDPStream),     // sent
		mk(6, "10.1.0.4", 40002, flowtable.TCPSynSent),     // state
		mk(17, "10.1.0.66", 40003, flowtable.UDPStream),    // address
		mk(1, "10.1.0.5", 40004, flowtable.ICMP),           // protocol
	}
	tab, err := flowtable.New(flowtable.Config{Capacity: 1024, Cores: 1, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	core := tab.Core(0)
	core.Enter()
	for i := range flows {
		if _, res := core.Insert(&flows[i], tab.Now()); res != flowtable.Inserted {
			t.Fatal(res)
		}
	}
	core.Exit()
	f, err := NewFilter(FilterSpec{ProtocolAccept: []string{"tcp", "udp"}, AddressIgnore: []string{"10.1.0.66"},
		StateAccept: []string{"established", "fin_wait", "close_wait", "last_ack", "time_wait", "close"}})
	if err != nil {
		t.Fatal(err)
	}
	src := &lockedSource{f: fakeSource{q: make([][]dataplane.SyncEvent, 1)}}
	var n *Node
	if err := x.Do(func() error {
		var err error
		n, err = NewNode(NodeConfig{
			Link: LinkConfig{Local: netip.AddrPortFrom(netip.MustParseAddr("10.9.0.2"), syncPort),
				Peer: netip.AddrPortFrom(netip.MustParseAddr("10.9.0.1"), syncPort), Interface: "s1", Session: Config{Window: 20}},
			Filter: f,
			Check:  CheckConfig{Port: syncPort + 1, Fingerprint: Fingerprint{7}, Interval: 200 * time.Millisecond, Grace: time.Second},
		}, src, tab)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	runNode(t, n)

	for _, nf := range flows {
		src.add(dataplane.SyncEvent{Kind: dataplane.SyncNew, Orig: nf.Orig, Reply: nf.Reply, Status: nf.Status})
	}
	external := func() (bool, string) {
		out := cd.Ctl(t, "-e")
		ok := strings.Count(out, "\n") == 2 && strings.Contains(out, "sport=40000") && strings.Contains(out, "sport=40001")
		return ok, out
	}
	waitFor(t, "the accepted connections in conntrackd's external cache", external)
	if st := n.Status(); st.Filtered != 3 {
		t.Fatalf("filtered %d, want 3: %+v", st.Filtered, st)
	}

	// conntrackd asks for everything: the whole-table send is filtered too.
	waitFor(t, "an empty external cache", func() (bool, string) {
		cd.Ctl(t, "-f", "external")
		out := cd.Ctl(t, "-e")
		return strings.TrimSpace(out) == "", out
	})
	cd.Ctl(t, "-n")
	waitFor(t, "the resync", external)
	waitFor(t, "conntrackd taken as unchecked", func() (bool, string) {
		st := n.Status()
		return st.Check.State == PeerUnchecked && st.Filtered == 6 && st.Link.ResyncRecv == 1, fmt.Sprintf("%+v", st)
	})
	if st := n.Status(); st.Check.Sent == 0 || st.Check.Received != 0 || st.Link.Malformed != 0 || st.CheckError != "" {
		t.Fatalf("node %+v", st)
	}
	if s := cd.Ctl(t, "-s"); !strings.Contains(s, "0 Malformed msgs") {
		t.Fatalf("conntrackd counted malformed messages from xnat:\n%s", s)
	}
}
