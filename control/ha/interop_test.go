package ha

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"xnat/flowtable"
	"xnat/internal/conntrackd"
	"xnat/internal/netns"
)

// The interoperability tests run a real conntrackd (Debian's conntrackd
// package; scripts/deps.sh installs it) in a namespace, with a FTFW UDP
// link to xnat's Link in another.

const syncPort = conntrackd.Port

func needTools(t *testing.T) { conntrackd.RequireTools(t) }

func run(t *testing.T, ns *netns.NS, name string, args ...string) string {
	t.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// startConntrackd starts conntrackd in ns with a FTFW UDP link.
func startConntrackd(t *testing.T, ns *netns.NS, local, peer, dev string) *conntrackd.Daemon {
	t.Helper()
	return conntrackd.Start(t, ns, local, peer, conntrackd.UDP(local, peer, dev))
}

// syncLink checks the tools the namespace tests need and makes two
// namespaces, named a and b, joined by a sync link: s0 10.9.0.1/24 in the
// first, s1 10.9.0.2/24 in the second.
func syncLink(t *testing.T, a, b string) (*netns.NS, *netns.NS) {
	t.Helper()
	needTools(t)
	tp := netns.New(t)
	na, nb := tp.NS(a), tp.NS(b)
	tp.Veth(na, "s0", nb, "s1")
	addr(t, na, "s0", "10.9.0.1/24")
	addr(t, nb, "s1", "10.9.0.2/24")
	return na, nb
}

// waitFor polls f until it reports true.
func waitFor(t *testing.T, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok, last := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last seen:\n%s", what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// recorder is a Handler that keeps what it receives in a cache and
// answers a resync with its own table.
type recorder struct {
	cache *Cache
	mu    sync.Mutex
	link  *Link
	table []Conn
	asked int
}

func (r *recorder) Conn(t MsgType, c *Conn) { r.cache.Apply(t, c) }
func (r *recorder) Resync() {
	r.mu.Lock()
	table := append([]Conn(nil), r.table...)
	r.asked++
	r.mu.Unlock()
	for i := range table {
		r.link.Send(TypeUpdate, &table[i])
	}
	_ = r.link.Flush()
}

// openLink opens xnat's end of the sync link inside ns and runs it until
// the test ends.
func openLink(t *testing.T, ns *netns.NS, local, peer, dev string, rec *recorder) *Link {
	t.Helper()
	return openLinkWith(t, ns, LinkConfig{
		Local:     netip.AddrPortFrom(netip.MustParseAddr(local), syncPort),
		Peer:      netip.AddrPortFrom(netip.MustParseAddr(peer), syncPort),
		Interface: dev,
		Session:   Config{Window: 20},
	}, rec)
}

func openLinkWith(t *testing.T, ns *netns.NS, cfg LinkConfig, rec *recorder) *Link {
	t.Helper()
	var l *Link
	if err := ns.Do(func() error {
		var err error
		l, err = Listen(cfg, rec)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	rec.link = l
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("link: %v", err)
		}
	})
	return l
}

func addr(t *testing.T, ns *netns.NS, dev, cidr string) {
	t.Helper()
	run(t, ns, "ip", "addr", "add", cidr, "dev", dev)
}

func a4(s string) uint32 {
	b := netip.MustParseAddr(s).As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// TestInteropToConntrackd: xnat's connections, sent on the link, land in
// conntrackd's external cache with their translation (conntrackd -e),
// go when xnat deletes them, come back when conntrackd asks for a resync
// (conntrackd -n), and conntrackd -c commits them to its kernel's table
// (conntrack -L).
func TestInteropToConntrackd(t *testing.T) {
	lnx, x := syncLink(t, "lnx", "x")
	// NAT loaded in conntrackd's namespace, so committed connections keep
	// their translation.
	run(t, lnx, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "s0", "-j", "MASQUERADE")
	cd := startConntrackd(t, lnx, "10.9.0.1", "10.9.0.2", "s0")
	rec := &recorder{cache: NewCache()}
	l := openLink(t, x, "10.9.0.2", "10.9.0.1", "s1", rec)

	flows := []flowtable.FlowInfo{
		{ // TCP, masqueraded to a new port
			Orig:    flowtable.MakeTuple(6, a4("10.1.0.2"), 40000, a4("198.51.100.2"), 80),
			Reply:   flowtable.MakeTuple(6, a4("198.51.100.2"), 80, a4("198.51.100.1"), 20001),
			Status:  uint32(flowtable.TCPEstablished) | flowtable.FlagSeenReply | flowtable.FlagAssured | flowtable.FlagSrcNAT,
			Expires: 3000 * time.Second,
		},
		{ // UDP, source address kept its port
			Orig:    flowtable.MakeTuple(17, a4("10.1.0.3"), 5353, a4("198.51.100.9"), 53),
			Reply:   flowtable.MakeTuple(17, a4("198.51.100.9"), 53, a4("198.51.100.1"), 5353),
			Status:  uint32(flowtable.UDPStream) | flowtable.FlagSeenReply | flowtable.FlagAssured | flowtable.FlagSrcNAT,
			Mark:    42,
			Expires: 100 * time.Second,
		},
		{ // UDP, DNAT'd to an inside server
			Orig:    flowtable.MakeTuple(17, a4("203.0.113.7"), 33000, a4("198.51.100.1"), 8053),
			Reply:   flowtable.MakeTuple(17, a4("10.1.0.10"), 53, a4("203.0.113.7"), 33000),
			Status:  uint32(flowtable.UDP) | flowtable.FlagDstNAT,
			Expires: 25 * time.Second,
		},
	}
	// conntrackd -e prints the original tuple, state, flags and mark (its
	// external cache keeps the translation as NAT attributes, which it does
	// not print); the commit below shows the translation in the kernel.
	want := []string{
		"tcp      6 ESTABLISHED src=10.1.0.2 dst=198.51.100.2 sport=40000 dport=80 [ASSURED] ",
		"udp      17 src=10.1.0.3 dst=198.51.100.9 sport=5353 dport=53 [ASSURED] mark=42 ",
		"udp      17 src=203.0.113.7 dst=198.51.100.1 sport=33000 dport=8053 [UNREPLIED] ",
	}
	for i := range flows {
		c := FromFlow(&flows[i])
		rec.mu.Lock()
		rec.table = append(rec.table, c)
		rec.mu.Unlock()
		l.Send(TypeNew, &c)
	}
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	external := func(n int) func() (bool, string) {
		return func() (bool, string) {
			out := cd.Ctl(t, "-e")
			for _, w := range want[:n] {
				if !strings.Contains(out, w) {
					return false, out
				}
			}
			return strings.Count(out, "\n") == n, out
		}
	}
	waitFor(t, "conntrackd's external cache to hold xnat's connections", external(3))
	waitFor(t, "conntrackd's ACKs", func() (bool, string) {
		st := l.Stats()
		return st.Unacked == 0 && st.AckRecv > 0, fmt.Sprintf("%+v", st)
	})

	// A delete removes the connection from conntrackd's external cache.
	last := FromFlow(&flows[2])
	rec.mu.Lock()
	rec.table = rec.table[:2]
	rec.mu.Unlock()
	l.Send(TypeDelete, &last)
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delete", external(2))
	if out := cd.Ctl(t, "-e"); strings.Contains(out, "sport=33000") {
		t.Fatalf("deleted connection still in conntrackd's external cache:\n%s", out)
	}

	// conntrackd -f external empties its cache; -n asks xnat for
	// everything again.
	waitFor(t, "an empty external cache", func() (bool, string) {
		cd.Ctl(t, "-f", "external")
		out := cd.Ctl(t, "-e")
		return strings.TrimSpace(out) == "", out
	})
	cd.Ctl(t, "-n")
	waitFor(t, "the resync", external(2))
	if st := l.Stats(); st.ResyncRecv == 0 || st.Malformed != 0 {
		t.Fatalf("stats after resync: %+v", st)
	}
	// Commit to the kernel (the last thing: conntrackd 1.4.7 ignores a
	// flush after a commit): conntrack -L shows the translations.
	cd.Ctl(t, "-c")
	waitFor(t, "the committed connections in the kernel", func() (bool, string) {
		out := run(t, lnx, "conntrack", "-L")
		ok := strings.Contains(out, "src=10.1.0.2 dst=198.51.100.2 sport=40000 dport=80 src=198.51.100.2 dst=198.51.100.1 sport=80 dport=20001") &&
			strings.Contains(out, "src=10.1.0.3 dst=198.51.100.9 sport=5353 dport=53 src=198.51.100.9 dst=198.51.100.1 sport=53 dport=5353")
		return ok, out
	})

	if out := run(t, lnx, "conntrack", "-L"); strings.Contains(out, "sport=33000") {
		t.Fatalf("deleted connection committed:\n%s", out)
	}
}

// TestInteropFromConntrackd: Linux NATs real traffic (MASQUERADE to a
// port range, DNAT, a connmark), conntrackd sends the kernel's
// connections, and xnat's link turns them into flow-table records whose
// reply tuple is the translation the server saw; a kernel delete removes
// one; a resync request brings them all back.
func TestInteropFromConntrackd(t *testing.T) {
	needTools(t)
	tp := netns.New(t)
	in, lnx, out, x := tp.NS("in"), tp.NS("lnx"), tp.NS("out"), tp.NS("x")
	tp.Veth(in, "i0", lnx, "l0")
	tp.Veth(lnx, "l1", out, "o0")
	tp.Veth(lnx, "s0", x, "s1")
	addr(t, in, "i0", "10.1.0.2/24")
	addr(t, lnx, "l0", "10.1.0.1/24")
	addr(t, lnx, "l1", "198.51.100.1/24")
	addr(t, out, "o0", "198.51.100.2/24")
	addr(t, lnx, "s0", "10.9.0.1/24")
	addr(t, x, "s1", "10.9.0.2/24")
	run(t, in, "ip", "route", "add", "default", "via", "10.1.0.1")
	if err := lnx.SetSysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	for _, rule := range [][]string{
		{"-t", "nat", "-A", "POSTROUTING", "-o", "l1", "-p", "udp", "-j", "MASQUERADE", "--to-ports", "20000-20010"},
		{"-t", "nat", "-A", "POSTROUTING", "-o", "l1", "-p", "tcp", "-j", "MASQUERADE", "--to-ports", "21000-21010"},
		{"-t", "nat", "-A", "PREROUTING", "-i", "l0", "-p", "udp", "--dport", "5353", "-j", "DNAT", "--to-destination", "198.51.100.2:5000"},
		{"-t", "mangle", "-A", "PREROUTING", "-i", "l0", "-p", "udp", "-j", "CONNMARK", "--set-mark", "7"},
	} {
		run(t, lnx, "iptables", rule...)
	}
	cd := startConntrackd(t, lnx, "10.9.0.1", "10.9.0.2", "s0")
	rec := &recorder{cache: NewCache()}
	l := openLink(t, x, "10.9.0.2", "10.9.0.1", "s1", rec)

	// The server: UDP echo and a TCP listener, each noting the address it
	// saw the client as.
	var srvU *net.UDPConn
	var srvT *net.TCPListener
	if err := out.Do(func() error {
		var err error
		if srvU, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(198, 51, 100, 2), Port: 5000}); err != nil {
			return err
		}
		srvT, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(198, 51, 100, 2), Port: 80})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srvU.Close(); srvT.Close() })
	seen := make(chan netip.AddrPort, 8)
	go func() {
		buf := make([]byte, 100)
		for {
			n, from, err := srvU.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			seen <- from
			_, _ = srvU.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	go func() {
		for {
			c, err := srvT.AcceptTCP()
			if err != nil {
				return
			}
			seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort()
			t.Cleanup(func() { c.Close() })
		}
	}()

	// The client: one masqueraded UDP flow, one DNAT'd, one TCP connection
	// left open.
	type flow struct {
		name   string
		local  netip.AddrPort
		server netip.AddrPort // what the server saw
	}
	var flows []flow
	for _, dst := range []string{"198.51.100.2:5000", "10.1.0.1:5353"} {
		var c *net.UDPConn
		if err := in.Do(func() error {
			var err error
			c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 10)); err != nil {
			t.Fatalf("udp echo via %s: %v", dst, err)
		}
		flows = append(flows, flow{"udp " + dst, c.LocalAddr().(*net.UDPAddr).AddrPort(), <-seen})
	}
	var tc *net.TCPConn
	if err := in.Do(func() error {
		c, err := net.DialTimeout("tcp4", "198.51.100.2:80", 5*time.Second)
		if err == nil {
			tc = c.(*net.TCPConn)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	flows = append(flows, flow{"tcp", tc.LocalAddr().(*net.TCPAddr).AddrPort(), <-seen})

	check := func(cache *Cache) (bool, string) {
		var report strings.Builder
		ok := true
		for _, f := range flows {
			var got *Conn
			for _, c := range cache.List() {
				if c.Src == a4(f.local.Addr().String()) && c.SrcPort == f.local.Port() {
					got = &c
					break
				}
			}
			if got == nil {
				fmt.Fprintf(&report, "%s: not received\n", f.name)
				ok = false
				continue
			}
			nf, err := got.NewFlow()
			if err != nil {
				fmt.Fprintf(&report, "%s: %v\n", f.name, err)
				ok = false
				continue
			}
			fmt.Fprintf(&report, "%s: %s\n", f.name, got)
			r := nf.Reply
			if r.Dst != a4(f.server.Addr().String()) || r.DstPort != f.server.Port() || r.Src != a4("198.51.100.2") || nf.Status&flowtable.FlagSeenReply == 0 || nf.Status&flowtable.FlagSrcNAT == 0 {
				ok = false
				fmt.Fprintf(&report, "  reply %v, server saw %v, status %#x\n", r, f.server, nf.Status)
			}
			switch f.name {
			case "tcp":
				if flowtable.StatusState(nf.Status) != flowtable.TCPEstablished || r.SrcPort != 80 || nf.Mark != 0 {
					ok = false
				}
			case "udp 10.1.0.1:5353":
				if nf.Status&flowtable.FlagDstNAT == 0 || r.SrcPort != 5000 || nf.Mark != 7 || nf.Orig.Dst != a4("10.1.0.1") {
					ok = false
				}
			default:
				if nf.Status&flowtable.FlagDstNAT != 0 || r.SrcPort != 5000 || nf.Mark != 7 {
					ok = false
				}
			}
		}
		return ok, report.String()
	}
	waitFor(t, "xnat to hold Linux's connections with their translation", func() (bool, string) { return check(rec.cache) })
	_, report := check(rec.cache)
	t.Logf("received from conntrackd:\n%s", report)

	// The kernel forgets the masqueraded UDP flow: conntrackd sends the
	// delete.
	u := flows[0].local
	run(t, lnx, "conntrack", "-D", "-p", "udp", "--orig-port-src", fmt.Sprint(u.Port()))
	waitFor(t, "the delete", func() (bool, string) {
		for _, c := range rec.cache.List() {
			if c.SrcPort == u.Port() && c.Proto == 17 {
				return false, c.String()
			}
		}
		return true, ""
	})

	// A resync request: conntrackd sends its whole table again.
	rec.cache.Flush()
	if err := l.RequestResync(); err != nil {
		t.Fatal(err)
	}
	flows = flows[1:]
	waitFor(t, "the resync", func() (bool, string) { return check(rec.cache) })
	// xnat acknowledges on its timer what fell short of a window.
	waitFor(t, "xnat's ACK", func() (bool, string) {
		st := l.Stats()
		return st.AckSent > 0, fmt.Sprintf("%+v", st)
	})
	st := l.Stats()
	if st.Malformed != 0 || st.Unsupported != 0 || st.MsgRecv == 0 || st.Lost != 0 {
		t.Fatalf("link stats: %+v", st)
	}
	if s := cd.Ctl(t, "-s"); !strings.Contains(s, "0 Malformed msgs") {
		t.Fatalf("conntrackd counted malformed messages from xnat:\n%s", s)
	}
}

// TestInteropMulticast runs the link over multicast, both ways, with a
// real conntrackd configured with Sync { Multicast { ... } }.
func TestInteropMulticast(t *testing.T) {
	lnx, x := syncLink(t, "lnx", "x")
	cd := conntrackd.Start(t, lnx, "10.9.0.1", "10.9.0.2", fmt.Sprintf(`Multicast {
		IPv4_address 225.0.0.50
		Group %d
		IPv4_interface 10.9.0.1
		Interface s0
		Checksum on
	}`, syncPort))
	rec := &recorder{cache: NewCache()}
	l := openLinkWith(t, x, LinkConfig{
		Local:     netip.AddrPortFrom(netip.MustParseAddr("10.9.0.2"), syncPort),
		Peer:      netip.AddrPortFrom(netip.MustParseAddr("10.9.0.1"), 0),
		Group:     netip.MustParseAddr("225.0.0.50"),
		Interface: "s1",
	}, rec)

	// xnat to conntrackd.
	fi := flowtable.FlowInfo{
		Orig:    flowtable.MakeTuple(6, a4("10.1.0.2"), 40000, a4("198.51.100.2"), 443),
		Reply:   flowtable.MakeTuple(6, a4("198.51.100.2"), 443, a4("198.51.100.1"), 20001),
		Status:  uint32(flowtable.TCPEstablished) | flowtable.FlagSeenReply | flowtable.FlagAssured | flowtable.FlagSrcNAT,
		Expires: time.Hour,
	}
	c := FromFlow(&fi)
	l.Send(TypeNew, &c)
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "conntrackd's external cache", func() (bool, string) {
		out := cd.Ctl(t, "-e")
		return strings.Contains(out, "tcp      6 ESTABLISHED src=10.1.0.2 dst=198.51.100.2 sport=40000 dport=443 [ASSURED]"), out
	})

	// conntrackd to xnat: a connection put in its kernel's table.
	run(t, lnx, "conntrack", "-I", "-p", "udp", "-s", "10.1.0.5", "-d", "198.51.100.7", "--sport", "1234", "--dport", "53",
		"-t", "100", "-u", "SEEN_REPLY")
	waitFor(t, "xnat's cache", func() (bool, string) {
		got, ok := rec.cache.Get(flowtable.MakeTuple(17, a4("10.1.0.5"), 1234, a4("198.51.100.7"), 53))
		return ok && got.Status&IPSSeenReply != 0 && got.Timeout > 0, fmt.Sprintf("%v %+v\nlink %+v\n%s%s", ok, got, l.Stats(), cd.Ctl(t, "-s"), run(t, lnx, "conntrack", "-L"))
	})
	waitFor(t, "both sides acknowledged", func() (bool, string) {
		st := l.Stats()
		return st.Unacked == 0 && st.AckSent > 0 && st.Malformed == 0, fmt.Sprintf("%+v", st)
	})
}
