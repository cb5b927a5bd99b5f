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

// send writes a frame into the router from the client (in0) or the
// server (out0) side.
func (lr *linuxRouter) send(fromClient bool, frame []byte) {
	lr.t.Helper()
	ns, link := lr.s, "s0"
	if fromClient {
		ns, link = lr.c, "c0"
	}
	idx, err := ns.Index(link)
	if err != nil {
		lr.t.Fatal(err)
	}
	err = ns.Do(func() error {
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
	b, err := lr.r.ReadFile("/proc/thread-self/net/nf_conntrack")
	if err != nil {
		lr.t.Fatal(err)
	}
	key := []byte(fmt.Sprintf("sport=%d dport=443 ", sport))
	for _, line := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(line)); len(f) > 5 && f[2] == "tcp" && bytes.Contains(line, key) {
			return f[5]
		}
	}
	return ""
}

// settle waits for the frames sent to be through the router (a veth
// hands them to the peer's backlog, processed by a softirq soon after).
func (lr *linuxRouter) settle() { time.Sleep(15 * time.Millisecond) }

// TestTCPWindowCasesLinux replays winCases through Linux's own
// conntrack (a router in a namespace) and checks that Linux gives each
// the verdict and leaves the state TestTCPWindowCases asserts of xnat.
func TestTCPWindowCasesLinux(t *testing.T) {
	lr := newLinuxRouter(t)
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
	for i, wc := range winCases {
		sport := uint16(42000 + i)
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
