package api_test

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"

	"xnat/control/api/apitest"
	"xnat/control/daemon"
	"xnat/control/ha"
	"xnat/flowtable"
)

func u32(ip []byte) uint32 { return binary.BigEndian.Uint32(ip) }

// TestHAFilter: xnatd with an [ha.filter] that ignores inside host B
// sends A's connection to the peer, not B's, and counts B's events as
// filtered. The peer, a bare link as a conntrackd is, never announces
// its pools: xnatd reports it unchecked and refuses its connection whose
// external endpoint is outside xnatd's NAT pools, keeping the one inside.
func TestHAFilter(t *testing.T) {
	h := apitest.HASync()
	h.Filter = &daemon.HAFilterConfig{AddressIgnore: []string{apitest.IPB.String()}, ProtocolAccept: []string{"udp", "tcp"}}
	b := apitest.New(t, apitest.Options{HA: h})
	peer := b.StartHAPeer()
	b.UDPEcho(7000)
	for _, ns := range []struct {
		name string
		ip   []byte
	}{{"B", apitest.IPB}, {"A", apitest.IPA}} {
		nsh := b.InsA
		if ns.name == "B" {
			nsh = b.InsB
		}
		conn := b.UDPDial(nsh, ns.ip, 0, 7000)
		if _, err := apitest.Ask(conn, "one"); err != nil {
			t.Fatal(err)
		}
	}
	// B's events went into the ring before A's, so once A's connection
	// is at the peer, B's have been through the filter.
	srcA, srcB := u32(apitest.IPA.To4()), u32(apitest.IPB.To4())
	apitest.Eventually(t, "A's connection at the peer", func() bool {
		for _, c := range peer.Cache.List() {
			if c.Src == srcA && c.DstPort == 7000 {
				return true
			}
		}
		return false
	})
	for _, c := range peer.Cache.List() {
		if c.Src == srcB {
			t.Fatalf("a filtered connection reached the peer: %s", c.String())
		}
	}
	cl := b.Client()
	bg := context.Background()
	st, err := cl.HAStatus(bg)
	must(t, err)
	if st.Filtered == 0 {
		t.Fatalf("nothing counted as filtered: %+v", st)
	}

	apitest.Eventually(t, "the peer taken as unchecked", func() bool {
		st, err := cl.HAStatus(bg)
		return err == nil && st.Check.State == ha.PeerUnchecked
	})
	ext := u32(apitest.IPExt.To4())
	in := ha.Conn{Proto: 17, Src: 0x0a000905, Dst: 0xc6336402, SrcPort: 5353, DstPort: 53, SNAT: ext, SPAT: 20001, Has: ha.HasSNAT | ha.HasSPAT}
	out := in
	out.SrcPort, out.SNAT = 5354, 0xc6336401 // 198.51.100.1: no pool of xnatd's
	peer.Link.Send(ha.TypeNew, &in)
	peer.Link.Send(ha.TypeNew, &out)
	must(t, peer.Link.Flush())
	apitest.Eventually(t, "the peer's connections checked", func() bool {
		st, err := cl.HAStatus(bg)
		return err == nil && st.Cache == 1 && st.RefusedOutsidePools == 1
	})
	if l, err := cl.HACache(bg); err != nil || len(l.Conns) != 1 || l.Conns[0] != in.String() {
		t.Fatalf("cache %v %v", l, err)
	}
}

// TestHAPoolCheck: the peer is another xnat node (in inside host A's
// namespace) whose rules differ: xnatd reports it and refuses its
// connections; when the peer's rules become xnatd's (its fingerprint is
// the same), xnatd asks it for its table and keeps it. A rule-set
// replacement changes xnatd's fingerprint, and the peer sees the
// difference.
func TestHAPoolCheck(t *testing.T) {
	b := apitest.New(t, apitest.Options{HA: apitest.HASync()})
	cl := b.Client()
	bg := context.Background()
	tab, err := flowtable.New(flowtable.Config{Capacity: 64, Cores: 1, Seed: 1})
	must(t, err)
	ext := u32(apitest.IPExt.To4())
	nf := flowtable.NewFlow{Orig: flowtable.MakeTuple(17, 0x0a000905, 5353, 0xc6336402, 53),
		Reply:  flowtable.MakeTuple(17, 0xc6336402, 53, ext, 20002),
		Status: uint32(flowtable.UDPStream) | flowtable.FlagSeenReply | flowtable.FlagAssured | flowtable.FlagSrcNAT}
	core := tab.Core(0)
	core.Enter()
	if _, res := core.Insert(&nf, tab.Now()); res != flowtable.Inserted {
		t.Fatal(res)
	}
	core.Exit()

	var peer *ha.Node
	must(t, b.InsA.Do(func() error {
		var err error
		peer, err = ha.NewNode(ha.NodeConfig{
			Link:  ha.LinkConfig{Local: netip.MustParseAddrPort("10.0.1.2:3780"), Peer: netip.MustParseAddrPort("10.0.1.1:3780"), Interface: "a0"},
			Check: ha.CheckConfig{Port: 3781, Fingerprint: ha.Fingerprint{0xee}},
		}, nil, tab)
		return err
	}))
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- peer.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("peer: %v", err)
		}
	})

	apitest.Eventually(t, "xnatd finding the peer differs", func() bool {
		st, err := cl.HAStatus(bg)
		return err == nil && st.Check.State == ha.PeerDiffers && peer.PeerState() == ha.PeerDiffers
	})
	must(t, peer.SendBulk())
	apitest.Eventually(t, "the differing peer's connection refused", func() bool {
		st, err := cl.HAStatus(bg)
		return err == nil && st.RefusedPeerDiffers == 1 && st.Cache == 0
	})

	fp, err := daemon.PoolFingerprint(b.D.Rules())
	must(t, err)
	st, err := cl.HAStatus(bg)
	must(t, err)
	if st.Check.Fingerprint != fp.String() || st.Check.PeerFingerprint != (ha.Fingerprint{0xee}).String() {
		t.Fatalf("fingerprints %+v, want %s", st.Check, fp)
	}
	peer.SetFingerprint(fp)
	apitest.Eventually(t, "the peer's table after the rules agree", func() bool {
		st, err := cl.HAStatus(bg)
		return err == nil && st.Check.State == ha.PeerSame && st.Cache == 1
	})

	m, err := daemon.ParseRules([]byte("*nat\n-A POSTROUTING -o x1 -j SNAT --to-source " + apitest.IPExt.String() + "\nCOMMIT\n"))
	must(t, err)
	must(t, b.D.ReplaceRules(m))
	apitest.Eventually(t, "the peer seeing xnatd's new rules", func() bool { return peer.PeerState() == ha.PeerDiffers })
	st, err = cl.HAStatus(bg)
	must(t, err)
	if nfp, _ := daemon.PoolFingerprint(m); st.Check.Fingerprint != nfp.String() || st.Link.Malformed != 0 {
		t.Fatalf("after the rules changed: %+v", st)
	}
	if ps := peer.Status(); ps.Check.Bad != 0 || ps.Link.Malformed != 0 {
		t.Fatalf("peer %+v", ps)
	}
}
