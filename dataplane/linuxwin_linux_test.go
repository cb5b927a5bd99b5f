package dataplane

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"xnat/dataplane/header"
	"xnat/flowtable"
	"xnat/internal/netns"
)

// linuxRouter is a Linux router in a namespace, forwarding with conntrack
// between a client namespace (10.0.0.2 behind in0) and a server
// namespace (203.0.113.9 on out0), MASQUERADE out of out0, and INVALID
// dropped in FORWARD and INPUT by rules whose counters the tests read. The client
// and server namespaces have no addresses: frames are written into them
// with packet sockets, and what the router forwards there is dropped
// unanswered, so that only the test's segments reach conntrack.
type linuxRouter struct {
	t              *testing.T
	r, c, s        *netns.NS
	cMAC, sMAC     net.HardwareAddr
	rInMAC, rOutMA net.HardwareAddr
}

func newLinuxRouter(t *testing.T) *linuxRouter {
	tp := netns.New(t)
	lr := &linuxRouter{t: t, r: tp.NS("rt"), c: tp.NS("cl"), s: tp.NS("sv")}
	tp.Veth(lr.c, "c0", lr.r, "in0")
	tp.Veth(lr.r, "out0", lr.s, "s0")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var err error
	lr.cMAC, err = lr.c.MAC("c0")
	must(err)
	lr.sMAC, err = lr.s.MAC("s0")
	must(err)
	lr.rInMAC, err = lr.r.MAC("in0")
	must(err)
	lr.rOutMA, err = lr.r.MAC("out0")
	must(err)
	must(lr.r.AddAddr("in0", "10.0.0.1/24"))
	must(lr.r.AddAddr("out0", "203.0.113.1/24"))
	must(lr.r.AddNeigh("in0", "10.0.0.2", lr.cMAC))
	must(lr.r.AddNeigh("out0", "203.0.113.9", lr.sMAC))
	must(lr.r.SetSysctl("net.ipv4.ip_forward", "1"))
	for _, rule := range [][]string{
		{"-t", "nat", "-A", "POSTROUTING", "-o", "out0", "-j", "MASQUERADE"},
		{"-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"},
		// An INVALID segment from the server is not translated back, so
		// it is addressed to the router itself: INPUT sees it.
		{"-A", "INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"},
	} {
		if _, err := lr.r.Run("iptables", rule...); err != nil {
			t.Skipf("iptables in a namespace: %v", err)
		}
	}
	return lr
}

// link is the client's (c0) or the server's (s0) end of its link to the
// router: its namespace and interface index.
func (lr *linuxRouter) link(client bool) (*netns.NS, int) {
	lr.t.Helper()
	ns, link := lr.s, "s0"
	if client {
		ns, link = lr.c, "c0"
	}
	idx, err := ns.Index(link)
	if err != nil {
		lr.t.Fatal(err)
	}
	return ns, idx
}

// send writes a frame into the router from the client (in0) or the
// server (out0) side.
func (lr *linuxRouter) send(fromClient bool, frame []byte) {
	lr.t.Helper()
	ns, idx := lr.link(fromClient)
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: idx, Halen: 6})
	})
	if err != nil {
		lr.t.Fatal(err)
	}
}

// invalid is the INVALID drop rules' packet count (FORWARD and INPUT).
func (lr *linuxRouter) invalid() int {
	lr.t.Helper()
	n := 0
	for _, chain := range []string{"FORWARD", "INPUT"} {
		out, err := lr.r.Run("iptables", "-L", chain, "-v", "-x", "-n")
		if err != nil {
			lr.t.Fatal(err)
		}
		found := false
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 3 && f[2] == "DROP" {
				c, err := strconv.Atoi(f[0])
				if err != nil {
					lr.t.Fatalf("counter %q: %v", f[0], err)
				}
				n += c
				found = true
			}
		}
		if !found {
			lr.t.Fatalf("no INVALID rule in\n%s", out)
		}
	}
	return n
}

// state is the conntrack state of the TCP connection from client port
// sport, or "" when there is none.
func (lr *linuxRouter) state(sport uint16) string {
	lr.t.Helper()
	if f := lr.entry(sport); f != nil {
		return f[5]
	}
	return ""
}

// entry is the fields of the nf_conntrack line of the TCP connection
// from client port sport (the timeout left at 4, the state at 5), or nil
// when there is none.
func (lr *linuxRouter) entry(sport uint16) []string {
	lr.t.Helper()
	b, err := lr.r.ReadFile("/proc/thread-self/net/nf_conntrack")
	if err != nil {
		lr.t.Fatal(err)
	}
	key := []byte(fmt.Sprintf("sport=%d dport=443 ", sport))
	for _, line := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(line)); len(f) > 5 && f[2] == "tcp" && bytes.Contains(line, key) {
			return f
		}
	}
	return nil
}

// settle waits for the frames sent to be through the router (a veth
// hands them to the peer's backlog, processed by a softirq soon after).
func (lr *linuxRouter) settle() { time.Sleep(15 * time.Millisecond) }

// TestTCPWindowCasesLinux replays winCases through Linux's own
// conntrack (a router in a namespace) and checks that Linux gives each
// the verdict and leaves the state TestTCPWindowCases asserts of xnat.
func TestTCPWindowCasesLinux(t *testing.T) {
	lr := newLinuxRouter(t)
	lr.runWinCases(winCases, 42000)
}

// sysctlCases are winCases under nf_conntrack_tcp_be_liberal=1 (the
// first) and nf_conntrack_tcp_ignore_invalid_rst=1 (the second list).
var sysctlCases = [2][]winCase{
	{
		{"liberal: a window past the edge", false, fACK, 13002, 1001, sWin, 0, winAccept, flowtable.TCPEstablished},
		{"liberal: ACK of data not sent", false, fACK, 5001, 1002, sWin, 0, winAccept, flowtable.TCPEstablished},
		{"liberal: FIN beyond the window", false, fFIN, 20000, 1001, sWin, 0, winAccept, flowtable.TCPFinWait},
		{"liberal: reset beyond the window", false, fRST, 20000, 0, 0, 0, winAccept, flowtable.TCPEstablished},
		{"liberal: reset below the acknowledged data", false, fRST, 4000, 0, 0, 0, winInvalid, flowtable.TCPEstablished},
	},
	{
		{"ignore_invalid_rst: reset below the acknowledged data", false, fRST, 4000, 0, 0, 0, winAccept, flowtable.TCPEstablished},
		{"ignore_invalid_rst: reset beyond the window", false, fRST, 20000, 0, 0, 0, winInvalid, flowtable.TCPEstablished},
	},
}

// TestTCPSysctlsLinux runs sysctlCases through Linux's conntrack with the
// sysctl set, and through xnat with the setting.
func TestTCPSysctlsLinux(t *testing.T) {
	for i, key := range []string{"nf_conntrack_tcp_be_liberal", "nf_conntrack_tcp_ignore_invalid_rst"} {
		lr := newLinuxRouter(t)
		if err := lr.r.SetSysctl("net.netfilter."+key, "1"); err != nil {
			t.Fatal(err)
		}
		lr.runWinCases(sysctlCases[i], 44000)
		for _, wc := range sysctlCases[i] {
			c := handshake(t, dropInvalid, masqClient, masqServer)
			c.tb.dp.Settings.TCPBeLiberal.Store(i == 0)
			c.tb.dp.Settings.TCPIgnoreInvalidRst.Store(i == 1)
			r, invalid := c.sendCase(wc)
			if (wc.verdict == winInvalid) != (r.Action == ActDrop && r.Reason == ReasonInvalid && invalid == 1) {
				t.Errorf("%s: xnat %v %v, invalid +%d", wc.name, r.Action, r.Reason, invalid)
			}
			if fi, _, ok := c.tb.tab.Get(c.orig); !ok || fi.State() != wc.state {
				t.Errorf("%s: xnat state %v (there %v), want %v", wc.name, fi.State(), ok, wc.state)
			}
		}
	}
}

// runWinCases replays cases through the router, each on a fresh
// connection (client ports from portBase) after the handshake of
// handshake, and checks Linux's verdict and state.
func (lr *linuxRouter) runWinCases(cases []winCase, portBase uint16) {
	t := lr.t
	t.Helper()
	client := func(sport uint16) tcpEnd {
		var e tcpEnd
		copy(e.srcMAC[:], lr.cMAC)
		copy(e.dstMAC[:], lr.rInMAC)
		e.src, e.dst, e.sport, e.dport = ip4(10, 0, 0, 2), ip4(203, 0, 113, 9), sport, 443
		return e
	}
	server := func(sport uint16) tcpEnd {
		var e tcpEnd
		copy(e.srcMAC[:], lr.sMAC)
		copy(e.dstMAC[:], lr.rOutMA)
		e.src, e.dst, e.sport, e.dport = ip4(203, 0, 113, 9), ip4(203, 0, 113, 1), 443, sport
		return e
	}
	for i, wc := range cases {
		sport := portBase + uint16(i)
		c, s := client(sport), server(sport)
		inv := lr.invalid()
		lr.send(true, c.seg(t, fSYN, cISN, 0, cWin, 0, tcpOpt{wscale: cScale, sackPerm: true}))
		lr.settle()
		lr.send(false, s.seg(t, fSYNACK, sISN, cISN+1, sWin, 0, tcpOpt{wscale: sScale, sackPerm: true}))
		lr.settle()
		lr.send(true, c.seg(t, fACK, cISN+1, sISN+1, cWin, 0, noOpt))
		lr.settle()
		lr.send(false, s.seg(t, fACK, sISN+1, cISN+1, sWin, 0, noOpt))
		lr.settle()
		if got := lr.invalid() - inv; got != 0 || lr.state(sport) != flowtable.TCPEstablished.String() {
			t.Fatalf("%s: handshake: %d INVALID, state %q", wc.name, got, lr.state(sport))
		}
		from := s
		if wc.fromClient {
			from = c
		}
		lr.send(wc.fromClient, from.seg(t, wc.flags, wc.seq, wc.ack, wc.win, wc.n, noOpt))
		lr.settle()
		got := lr.invalid() - inv
		if want := map[bool]int{true: 1, false: 0}[wc.verdict == winInvalid]; got != want {
			t.Errorf("%s: Linux counted %d INVALID, want %d", wc.name, got, want)
		}
		if st := lr.state(sport); st != wc.state.String() {
			t.Errorf("%s: Linux left state %q, want %v", wc.name, st, wc.state)
		}
	}
}

// timeoutCase is a sequence of segments on a fresh connection (client
// port sport; with hs, after the handshake of TestTCPWindowCasesLinux)
// and the timeout Linux then gives it, with max_retrans at 200 s and
// unacknowledged at 250 s so that the two show apart.
type timeoutCase struct {
	name string
	hs   bool
	segs []winCase
	want time.Duration
}

var timeoutCases = []timeoutCase{
	// Picked up and not answered: no window recorded yet counts as a zero
	// window (max_retrans), and the unacknowledged timeout caps it.
	{"picked up mid-stream, unanswered", false, []winCase{{fromClient: true, flags: fACK | 0x08, seq: 7000, ack: 9000, win: 1000, n: 100}}, 200 * time.Second},
	{"picked up, the answer", false, []winCase{{fromClient: true, flags: fACK | 0x08, seq: 7000, ack: 9000, win: 1000, n: 100},
		{flags: fACK, seq: 9000, ack: 7100, win: 1000}}, 250 * time.Second},
	{"picked up, answered, then assured", false, []winCase{{fromClient: true, flags: fACK | 0x08, seq: 7000, ack: 9000, win: 1000, n: 100},
		{flags: fACK, seq: 9000, ack: 7100, win: 1000}, {fromClient: true, flags: fACK, seq: 7100, ack: 9000, win: 1000}}, 432000 * time.Second},
	{"data not yet acknowledged", true, []winCase{{fromClient: true, flags: fACK | 0x08, seq: 1001, ack: 5001, win: cWin, n: 100}}, 250 * time.Second},
	{"data acknowledged", true, []winCase{{fromClient: true, flags: fACK | 0x08, seq: 1001, ack: 5001, win: cWin, n: 100},
		{flags: fACK, seq: 5001, ack: 1101, win: sWin}}, 432000 * time.Second},
	{"zero window", true, []winCase{{flags: fACK, seq: 5001, ack: 1001, win: 0}}, 200 * time.Second},
	{"retransmissions", true, []winCase{{fromClient: true, flags: fACK, seq: 1001, ack: 5001, win: cWin}, {fromClient: true, flags: fACK, seq: 1001, ack: 5001, win: cWin},
		{fromClient: true, flags: fACK, seq: 1001, ack: 5001, win: cWin}, {fromClient: true, flags: fACK, seq: 1001, ack: 5001, win: cWin}}, 200 * time.Second},
	{"reset in window, not exact", true, []winCase{{flags: fRST, seq: 5500}}, 10 * time.Second},
	// Closing, a reset is taken whatever its sequence number.
	{"reset out of window while closing", true, []winCase{{flags: fFIN, seq: 5001, ack: 1001, win: sWin}, {fromClient: true, flags: fRST, seq: 0x40000000}}, 10 * time.Second},
	// The server's challenge ACK to a SYN is let through (ignored); the
	// client's reset answering it closes the connection.
	{"reset answering a challenge ACK", false, []winCase{{fromClient: true, flags: fSYN, seq: cISN, win: cWin},
		{flags: fACK, seq: 7777, ack: 12345, win: sWin}, {fromClient: true, flags: fRST, seq: 12345}}, 10 * time.Second},
	// A reset with an ACK far below the SYN's is let through (ignored),
	// and counts as a reply: the server's real refusal then closes the
	// connection rather than ending it.
	{"refusal after an ignored reset", false, []winCase{{fromClient: true, flags: fSYN, seq: cISN, win: cWin},
		{flags: fRST | fACK, seq: 5, ack: 1<<32 + cISN + 1 - 100000}, {flags: fRST | fACK, seq: 0, ack: cISN + 1}}, 10 * time.Second},
}

// TestTCPTimeoutsLinux runs timeoutCases through Linux's conntrack and
// through xnat, and finds the timeouts Linux gives in both.
func TestTCPTimeoutsLinux(t *testing.T) {
	lr := newLinuxRouter(t)
	for key, v := range map[string]string{"net.netfilter.nf_conntrack_tcp_timeout_max_retrans": "200", "net.netfilter.nf_conntrack_tcp_timeout_unacknowledged": "250"} {
		if err := lr.r.SetSysctl(key, v); err != nil {
			t.Fatal(err)
		}
	}
	end := func(mac, dst net.HardwareAddr, src, dstIP uint32, sport, dport uint16) tcpEnd {
		var e tcpEnd
		copy(e.srcMAC[:], mac)
		copy(e.dstMAC[:], dst)
		e.src, e.dst, e.sport, e.dport = src, dstIP, sport, dport
		return e
	}
	for i, tc := range timeoutCases {
		sport := uint16(43000 + i)
		lc := end(lr.cMAC, lr.rInMAC, ip4(10, 0, 0, 2), ip4(203, 0, 113, 9), sport, 443)
		ls := end(lr.sMAC, lr.rOutMA, ip4(203, 0, 113, 9), ip4(203, 0, 113, 1), 443, sport)
		xc, xs := masqClient, masqServer
		xc.sport, xs.dport = sport, sport
		tb := newTestbed(t, masqRules, 1500, 1)
		for _, k := range []string{"nf_conntrack_tcp_timeout_max_retrans", "nf_conntrack_tcp_timeout_unacknowledged"} {
			d := map[bool]time.Duration{true: 200 * time.Second, false: 250 * time.Second}[strings.Contains(k, "retrans")]
			if err := tb.tab.SetTimeout(k, d); err != nil {
				t.Fatal(err)
			}
		}
		segs := tc.segs
		if tc.hs {
			segs = append([]winCase{
				{fromClient: true, flags: fSYN, seq: cISN, win: cWin},
				{flags: fSYNACK, seq: sISN, ack: cISN + 1, win: sWin},
				{fromClient: true, flags: fACK, seq: cISN + 1, ack: sISN + 1, win: cWin},
				{flags: fACK, seq: sISN + 1, ack: cISN + 1, win: sWin},
			}, segs...)
		}
		for j, s := range segs {
			o := noOpt
			if s.flags&fSYN != 0 {
				o = tcpOpt{wscale: cScale, sackPerm: true}
				if !s.fromClient {
					o.wscale = sScale
				}
			}
			le, xe, xin := ls, xs, uint16(portOut)
			if s.fromClient {
				le, xe, xin = lc, xc, portIn
			}
			lr.send(s.fromClient, le.seg(t, s.flags, s.seq, s.ack, s.win, s.n, o))
			lr.settle()
			if r, _ := tb.run(xe.seg(t, s.flags, s.seq, s.ack, s.win, s.n, o), xin); r.Action != ActForward {
				t.Fatalf("%s: segment %d: xnat %v %v", tc.name, j, r.Action, r.Reason)
			}
		}
		lt := lr.timeout(sport)
		fi, _, ok := tb.tab.Get(flowtable.MakeTuple(flowtable.ProtoTCP, addrA, sport, remote, 443))
		if !ok {
			t.Fatalf("%s: no connection in xnat", tc.name)
		}
		if lt > tc.want || lt < tc.want-2*time.Second {
			t.Errorf("%s: Linux's timeout %v, want %v", tc.name, lt, tc.want)
		}
		if fi.Expires > tc.want || fi.Expires < tc.want-2*time.Second {
			t.Errorf("%s: xnat's timeout %v, Linux's %v", tc.name, fi.Expires, lt)
		}
	}
}

// timeout is the time left of the TCP connection from client port sport.
func (lr *linuxRouter) timeout(sport uint16) time.Duration {
	lr.t.Helper()
	f := lr.entry(sport)
	if f == nil {
		lr.t.Fatalf("no connection from port %d", sport)
	}
	s, err := strconv.Atoi(f[4])
	if err != nil {
		lr.t.Fatalf("timeout %q: %v", f[4], err)
	}
	return time.Duration(s) * time.Second
}

// capture opens a packet socket on the client's (c0) or the server's (s0)
// link, for frames the router forwards there; it is closed with the test.
func (lr *linuxRouter) capture(client bool) int {
	lr.t.Helper()
	ns, idx := lr.link(client)
	fd := -1
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: idx}); err != nil {
			return err
		}
		tv := unix.Timeval{Usec: 100000}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		lr.t.Fatal(err)
	}
	lr.t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// icmpErrors returns the ICMP errors (type 3) read from fd within 200 ms.
func icmpErrors(fd int) [][]byte {
	var got [][]byte
	buf := make([]byte, 2048)
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil || n < offQuote+header.IPv4MinLen {
			continue
		}
		if ip := header.IPv4(buf[offIP:]); ip.Protocol() == header.ProtoICMP && buf[offL4] == 3 {
			got = append(got, append([]byte(nil), buf[:n]...))
		}
	}
	return got
}

// TestICMPErrorRelayLinux checks the ICMP error relay rules xnat follows
// against Linux's router: an error from outside whose outer destination
// is the external address reaches the client; one quoting the same
// datagram but sent to another address is INVALID; an error the client
// sends with a forged outer source leaves with the router's address as
// its source.
func TestICMPErrorRelayLinux(t *testing.T) {
	lr := newLinuxRouter(t)
	other := "203.0.113.77"
	if err := lr.r.AddNeigh("out0", other, lr.sMAC); err != nil {
		t.Fatal(err)
	}
	srv, ext, cl := ip4(203, 0, 113, 9), ip4(203, 0, 113, 1), ip4(10, 0, 0, 2)
	var cMAC, sMAC, rIn, rOut [6]byte
	copy(cMAC[:], lr.cMAC)
	copy(sMAC[:], lr.sMAC)
	copy(rIn[:], lr.rInMAC)
	copy(rOut[:], lr.rOutMA)
	atClient, atServer := lr.capture(true), lr.capture(false)
	// A datagram out, and its answer back, as the client receives it.
	lr.send(true, udpPkt(cMAC, rIn, cl, 5000, srv, 7000).bytes(t))
	lr.settle()
	lr.send(false, udpPkt(sMAC, rOut, srv, 7000, ext, 5000).bytes(t))
	lr.settle()
	out := udpPkt(sMAC, rOut, ext, 5000, srv, 7000).bytes(t) // what left the router
	quoteOut := append([]byte(nil), out[offIP:offL4+header.UDPLen]...)
	in := udpPkt(rIn, cMAC, srv, 7000, cl, 5000).bytes(t) // what reached the client
	quoteIn := append([]byte(nil), in[offIP:offL4+header.UDPLen]...)
	icmpErrors(atClient)
	icmpErrors(atServer)

	// To the external address: relayed to the client.
	lr.send(false, icmpPkt(sMAC, rOut, srv, ext, 3, 3, 0, 0, quoteOut).bytes(t))
	if got := icmpErrors(atClient); len(got) != 1 || header.IPv4(got[0][offIP:]).Dst() != cl {
		t.Errorf("Linux relayed %d errors to the client", len(got))
	}
	// To another address: INVALID, relayed nowhere.
	inv := lr.invalid()
	lr.send(false, icmpPkt(sMAC, rOut, srv, ip4(203, 0, 113, 77), 3, 3, 0, 0, quoteOut).bytes(t))
	if got := len(icmpErrors(atClient)) + len(icmpErrors(atServer)); got != 0 || lr.invalid() != inv+1 {
		t.Errorf("error to another address: relayed %d, INVALID +%d", got, lr.invalid()-inv)
	}
	// From the client with a forged source: out with the router's.
	lr.send(true, icmpPkt(cMAC, rIn, ip4(198, 51, 100, 99), srv, 3, 3, 0, 0, quoteIn).bytes(t))
	got := icmpErrors(atServer)
	if len(got) != 1 {
		t.Fatalf("Linux relayed %d errors to the server", len(got))
	}
	if src := header.IPv4(got[0][offIP:]).Src(); src != ext {
		t.Errorf("Linux sent the forged error from %v, want %v", netIP(src), netIP(ext))
	}
}
