package ha

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"xnat/dataplane"
	"xnat/flowtable"
)

func TestAnnouncementCodec(t *testing.T) {
	fp := Fingerprint(sha256.Sum256([]byte("pools")))
	for _, ask := range []bool{false, true} {
		a := Announcement{Ask: ask, Fingerprint: fp}
		b := a.Append(nil)
		if len(b) != AnnouncementLen {
			t.Fatalf("%d bytes", len(b))
		}
		got, err := ParseAnnouncement(b)
		if err != nil || got != a {
			t.Fatalf("%+v %v", got, err)
		}
	}
	good := (&Announcement{Fingerprint: fp}).Append(nil)
	mod := func(i int, v byte) []byte {
		b := bytes.Clone(good)
		b[i] = v
		return b
	}
	for name, b := range map[string][]byte{
		"short":    good[:39],
		"long":     append(bytes.Clone(good), 0),
		"magic":    mod(0, 'X'),
		"version":  mod(4, 2),
		"kind":     mod(5, 3),
		"reserved": mod(7, 1),
		// A conntrackd message (an ALIVE header) is no announcement.
		"conntrackd": AppendControl(nil, FlagAlive, 1, 0, 0),
	} {
		if _, err := ParseAnnouncement(b); !errors.Is(err, ErrAnnouncement) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzAnnouncement: any datagram is an announcement that encodes back to
// itself, or an ErrAnnouncement; never a panic.
func FuzzAnnouncement(f *testing.F) {
	f.Add((&Announcement{Ask: true, Fingerprint: Fingerprint{1, 2, 3}}).Append(nil))
	f.Add((&Announcement{}).Append(nil))
	f.Add(AppendControl(nil, FlagAck, 7, 1, 6))
	f.Add([]byte("xnHA"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAnnouncement(b)
		if err != nil {
			if !errors.Is(err, ErrAnnouncement) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if got := a.Append(nil); !bytes.Equal(got, b) {
			t.Fatalf("%x re-encodes as %x", b, got)
		}
	})
}

// freePort returns a UDP port free on the loopback addresses.
func freePort(t *testing.T) uint16 {
	t.Helper()
	for range 20 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		p := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		c.Close()
		ok := true
		for _, a := range []string{"127.0.0.2", "127.0.0.3"} {
			for _, port := range []uint16{p, p + 1} {
				c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(fmt.Sprintf("%s:%d", a, port))))
				if err != nil {
					ok = false
					continue
				}
				c.Close()
			}
		}
		if ok && p < 65535 {
			return p
		}
	}
	t.Fatal("no free port pair")
	return 0
}

type loopNode struct {
	*Node
	changes chan PeerState
}

// startLoopNode runs a node on a loopback address (no namespace needed):
// sync on port, pool check on port+1.
func startLoopNode(t *testing.T, local, peer string, port uint16, cfg NodeConfig, src EventSource, tab *flowtable.Table) *loopNode {
	t.Helper()
	cfg.Link.Local = netip.AddrPortFrom(netip.MustParseAddr(local), port)
	cfg.Link.Peer = netip.AddrPortFrom(netip.MustParseAddr(peer), port)
	cfg.Link.Tick = 50 * time.Millisecond
	cfg.Poll = 5 * time.Millisecond
	if cfg.Check.Port == 0 {
		cfg.Check.Port = port + 1
	}
	cfg.Check.Interval = 50 * time.Millisecond
	if cfg.Check.Grace == 0 {
		cfg.Check.Grace = 300 * time.Millisecond
	}
	ln := &loopNode{changes: make(chan PeerState, 16)}
	cfg.OnPeer = func(_, s PeerState) {
		select {
		case ln.changes <- s:
		default:
		}
	}
	n, err := NewNode(cfg, src, tab)
	if err != nil {
		t.Fatal(err)
	}
	ln.Node = n
	runNode(t, n)
	return ln
}

func waitState(t *testing.T, n *loopNode, want PeerState) {
	t.Helper()
	waitFor(t, "peer state "+want.String(), func() (bool, string) {
		st := n.Status()
		return n.PeerState() == want && st.Check.State == want, fmt.Sprintf("%+v", st.Check)
	})
}

// TestPoolCheckPair: two xnat nodes on loopback. With the same
// fingerprint they find each other the same and the backup takes the
// primary's connections; when the backup's rules change (another
// fingerprint), each finds the other differs, the backup drops what it
// held and refuses the primary's new connections; the rules made equal
// again, the backup asks for the table and holds it whole.
func TestPoolCheckPair(t *testing.T) {
	port := freePort(t)
	ext := a4("198.51.100.1")
	tab, flow := natTable(t, ext, 20)
	fpA := Fingerprint(sha256.Sum256([]byte("rules A")))
	fpB := Fingerprint(sha256.Sum256([]byte("rules B")))
	owns := func(proto uint8, addr uint32, port uint16) bool { return addr == ext }
	src := &lockedSource{f: fakeSource{q: make([][]dataplane.SyncEvent, 1)}}
	primary := startLoopNode(t, "127.0.0.2", "127.0.0.3", port, NodeConfig{Check: CheckConfig{Fingerprint: fpA}, Owns: owns}, src, tab)
	backup := startLoopNode(t, "127.0.0.3", "127.0.0.2", port, NodeConfig{Check: CheckConfig{Fingerprint: fpA}, Owns: owns}, nil, nil)
	waitState(t, primary, PeerSame)
	waitState(t, backup, PeerSame)
	cacheLen := func(n int) func() (bool, string) {
		return func() (bool, string) {
			st := backup.Status()
			return st.Cache == n, fmt.Sprintf("%+v", st)
		}
	}
	// The backup asks for the table once it knows the peer is the same.
	waitFor(t, "the primary's table", cacheLen(20))

	// The backup's rules change: both sides see the difference.
	backup.SetFingerprint(fpB)
	waitState(t, backup, PeerDiffers)
	waitState(t, primary, PeerDiffers)
	if st := backup.Status(); st.Cache != 0 || st.FlushedPeerDiffers != 20 {
		t.Fatalf("a differing peer's connections kept: %+v", st)
	}
	for i := 20; i < 30; i++ {
		nf := flow(i)
		src.add(dataplane.SyncEvent{Kind: dataplane.SyncNew, Orig: nf.Orig, Reply: nf.Reply, Status: nf.Status})
	}
	waitFor(t, "the primary's events refused", func() (bool, string) {
		st := backup.Status()
		return st.RefusedPeerDiffers == 10, fmt.Sprintf("%+v", st)
	})
	if st := backup.Status(); st.Cache != 0 || st.Check.PeerFingerprint != fpA.String() || st.Check.Fingerprint != fpB.String() {
		t.Fatalf("backup %+v", st)
	}

	// Equal again: the backup asks for the table and takes it.
	backup.SetFingerprint(fpA)
	waitState(t, backup, PeerSame)
	waitState(t, primary, PeerSame)
	waitFor(t, "the table after the rules agree", cacheLen(20))
	pst, bst := primary.Status(), backup.Status()
	if pst.Check.Bad != 0 || bst.Check.Bad != 0 || pst.Link.Malformed != 0 || bst.Link.Malformed != 0 || bst.RefusedOutsidePools != 0 {
		t.Fatalf("primary %+v\nbackup %+v", pst, bst)
	}
}

// TestPoolCheckConntrackdPeer: a peer that never announces (a bare
// link, as a conntrackd is) is unchecked once the grace period is over;
// each of its connections is checked against the NAT pools: one outside
// them is refused and counted, one inside is kept, a connection without
// source NAT is kept.
func TestPoolCheckConntrackdPeer(t *testing.T) {
	port := freePort(t)
	ext := a4("198.51.100.1")
	owns := func(proto uint8, addr uint32, p uint16) bool { return addr == ext && p >= 20000 && p < 30000 }
	n := startLoopNode(t, "127.0.0.2", "127.0.0.3", port, NodeConfig{Check: CheckConfig{Fingerprint: Fingerprint{1}}, Owns: owns}, nil, nil)
	rec := &recorder{cache: NewCache()}
	l, err := Listen(LinkConfig{Local: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), port),
		Peer: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), port)}, rec)
	if err != nil {
		t.Fatal(err)
	}
	rec.link = l
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitState(t, n, PeerUnchecked)
	// Once unchecked, the node asks the peer for its table.
	waitFor(t, "the node's resync request", func() (bool, string) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.asked > 0, fmt.Sprintf("asked %d", rec.asked)
	})
	in := Conn{Proto: 17, Src: a4("10.0.0.2"), Dst: a4("192.0.2.1"), SrcPort: 1000, DstPort: 53, SNAT: ext, SPAT: 20001, Has: HasSNAT | HasSPAT}
	outPort := in
	outPort.SrcPort, outPort.SPAT = 1001, 40000
	outAddr := in
	outAddr.SrcPort, outAddr.SNAT = 1002, a4("198.51.100.9")
	plain := Conn{Proto: 6, Src: a4("10.0.0.2"), Dst: a4("10.0.0.3"), SrcPort: 22, DstPort: 5000, TCPState: 3, Has: HasTCPState}
	for _, c := range []*Conn{&in, &outPort, &outAddr, &plain} {
		l.Send(TypeNew, c)
	}
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the peer's connections", func() (bool, string) {
		st := n.Status()
		return st.Cache == 2 && st.RefusedOutsidePools == 2, fmt.Sprintf("%+v", st)
	})
	for _, c := range []*Conn{&in, &plain} {
		if _, ok := n.Cache().Get(c.Orig()); !ok {
			t.Errorf("%s not kept", c)
		}
	}
	// A delete of a kept connection is applied.
	l.Send(TypeDelete, &in)
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delete", func() (bool, string) { return n.Cache().Len() == 1, "" })
	if st := n.Status(); st.Check.Received != 0 || st.Check.PeerFingerprint != "" || st.Link.Malformed != 0 {
		t.Fatalf("%+v", st)
	}
}

// TestPoolCheckForeign: announcements from another address than the
// peer's, and datagrams that are not announcements, are counted and
// change nothing.
func TestPoolCheckForeign(t *testing.T) {
	port := freePort(t)
	n := startLoopNode(t, "127.0.0.2", "127.0.0.3", port, NodeConfig{Check: CheckConfig{Fingerprint: Fingerprint{1}, Grace: time.Hour}}, nil, nil)
	send := func(from string, b []byte) {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(from)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.WriteToUDP(b, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: int(port + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	send("127.0.0.4", (&Announcement{Fingerprint: Fingerprint{2}}).Append(nil))
	send("127.0.0.3", []byte("not an announcement"))
	waitFor(t, "the datagrams counted", func() (bool, string) {
		st := n.Status().Check
		return st.Foreign == 1 && st.Bad == 1, fmt.Sprintf("%+v", st)
	})
	if s := n.PeerState(); s != PeerWaiting {
		t.Fatalf("state %v", s)
	}
}
