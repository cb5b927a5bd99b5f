package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"xnat/control/iptables"
	"xnat/dataplane/header"
	"xnat/dataplane/kernel"
	"xnat/dataplane/xdpprog"
	"xnat/flowtable"
	"xnat/internal/nattest"
	"xnat/internal/netns"
)

// The tests of this file run each scenario twice in the same topology:
// once with xnat, once with Linux's own forwarding and iptables NAT in its
// place, so that a scenario that fails under xnat is known to pass where
// Linux is the reference.

// gateways names the two ways a scenario runs.
var gateways = []string{"xnat", "linux"}

// newGateway starts the scenario's gateway: xnat (newBed) or Linux
// (ip_forward=1 and iptables-restore of the same rules in xnat's
// namespace; b.d is nil).
func newGateway(t *testing.T, kind, rulesText string) *bed {
	t.Helper()
	if kind == "xnat" {
		return newBed(t, bedOpts{rules: rulesText})
	}
	tp := nattest.New(t, nattest.Options{Queues: 2})
	b := &bed{t: t, insA: tp.InsA, insB: tp.InsB, x: tp.X, sv: tp.Srv}
	b.rulesFile = t.TempDir() + "/rules.v4"
	must(t, writeFile(b.rulesFile, rulesText))
	must(t, b.x.SetSysctl("net.ipv4.ip_forward", "1"))
	if _, err := b.x.Run("iptables-restore", b.rulesFile); err != nil {
		t.Fatalf("iptables-restore (Linux NAT, the reference): %v", err)
	}
	return b
}

// iptables applies one iptables command: to xnat's rules through
// ReplaceRules (what xnatctl iptables does through the API), or to Linux's
// with iptables.
func (b *bed) iptables(line string) {
	b.t.Helper()
	if b.d == nil {
		if _, err := b.x.Run("iptables", strings.Fields(line)...); err != nil {
			b.t.Fatal(err)
		}
		return
	}
	cmd, err := iptables.ParseLine(line)
	must(b.t, err)
	m, err := iptables.Apply(b.d.Rules(), cmd)
	must(b.t, err)
	must(b.t, b.d.ReplaceRules(m))
}

// pingOnce sends one echo request of size bytes of payload from ns to
// dst and waits for the reply from dst with the same id and sequence.
func pingOnce(t *testing.T, ns *netns.NS, dst net.IP, size int, id, seq uint16) error {
	t.Helper()
	var fd int
	must(t, ns.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP); err != nil {
			return err
		}
		// Let the kernel fragment what the MTU does not hold, as ping -s.
		return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
	}))
	defer unix.Close(fd)
	tv := unix.Timeval{Usec: 100000}
	must(t, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv))
	m := make([]byte, 8+size)
	m[0] = 8
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	for i := range m[8:] {
		m[8+i] = byte(i)
	}
	binary.BigEndian.PutUint16(m[2:], header.Checksum(m, 0))
	var sa unix.SockaddrInet4
	copy(sa.Addr[:], dst.To4())
	if err := unix.Sendto(fd, m, 0, &sa); err != nil {
		return err
	}
	buf := make([]byte, 70000)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		p := buf[:n]
		ihl := int(p[0]&0xf) * 4
		if n < ihl+8 || p[ihl] != 0 || !net.IP(p[12:16]).Equal(dst) {
			continue
		}
		if binary.BigEndian.Uint16(p[ihl+4:]) != id || binary.BigEndian.Uint16(p[ihl+6:]) != seq {
			continue
		}
		if got := n - ihl - 8; got != size {
			return fmt.Errorf("echo reply with %d bytes of payload, want %d", got, size)
		}
		return nil
	}
	return fmt.Errorf("no echo reply from %s (%d bytes) within 2s", dst, size)
}

// boxClient is a UDP client on the gateway itself, on an ephemeral port.
func boxClient(t *testing.T, b *bed, dst *net.UDPAddr) *net.UDPConn {
	return udpDial(t, b.x, nil, dst)
}

const steerRules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i x1 -p tcp -m tcp --dport 2222 -j DNAT --to-destination 10.0.1.2:22
-A POSTROUTING -o x1 -j MASQUERADE
COMMIT
`

// TestBoxOwnTraffic: with MASQUERADE on the default pool and masqueraded
// traffic flowing, the box's own UDP clients on ephemeral ports of the
// external address get every answer; pings of the box's inside and
// outside addresses, small and fragmented, are answered; a TCP service on
// the box's inside address answers from inside while a DNAT rule for its
// port on the outside interface forwards that port from outside.
func TestBoxOwnTraffic(t *testing.T) {
	for _, gw := range gateways {
		t.Run(gw, func(t *testing.T) {
			b := newGateway(t, gw, steerRules)
			udpEcho(t, b.sv, ipSrv, 7000)
			srv := &net.UDPAddr{IP: ipSrv, Port: 7000}

			// Masqueraded flows from both inside hosts, kept busy while
			// the box's own clients talk.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var inside []*net.UDPConn
			for i := range 40 {
				ns, ip := b.insA, ipA
				if i%2 == 1 {
					ns, ip = b.insB, ipB
				}
				inside = append(inside, udpDial(t, ns, &net.UDPAddr{IP: ip, Port: 30000 + i}, srv))
			}
			errc := make(chan error, 1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for round := 0; ; round++ {
					for i, c := range inside {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := ask(c, fmt.Sprintf("inside %d/%d", i, round), 3); err != nil {
							select {
							case errc <- fmt.Errorf("masqueraded flow %d: %w", i, err):
							default:
							}
							return
						}
					}
				}
			}()

			const clients, each = 16, 8
			var ports []int
			for i := range clients {
				c := boxClient(t, b, srv)
				ports = append(ports, c.LocalAddr().(*net.UDPAddr).Port)
				buf := make([]byte, 512)
				for j := range each {
					msg := fmt.Sprintf("box %d/%d", i, j)
					if _, err := c.Write([]byte(msg)); err != nil {
						t.Fatal(err)
					}
					must(t, c.SetReadDeadline(time.Now().Add(time.Second)))
					n, err := c.Read(buf)
					if err != nil {
						t.Fatalf("the box's own client on port %d: answer %d of %d lost: %v", ports[i], j+1, each, err)
					}
					if want := fmtAddr(ipExt, ports[i]) + "|" + msg; string(buf[:n]) != want {
						t.Fatalf("the box's own client got %q, want %q", buf[:n], want)
					}
				}
			}
			close(stop)
			wg.Wait()
			select {
			case err := <-errc:
				t.Fatal(err)
			default:
			}
			t.Logf("%d clients on the box, ports %v, each got its %d answers", clients, ports, each)

			// Pings of the box, plain and fragmented (ping -s 3000).
			for _, p := range []struct {
				from *netns.NS
				dst  net.IP
				size int
			}{{b.insA, ipGwA, 56}, {b.sv, ipExt, 56}, {b.insA, ipGwA, 3000}, {b.sv, ipExt, 3000}} {
				if err := pingOnce(t, p.from, p.dst, p.size, 0x4242, uint16(p.size)); err != nil {
					t.Fatalf("ping -s %d %s: %v", p.size, p.dst, err)
				}
			}

			// Broadcasts to the box: the subnet's and the limited one.
			bsock := nattest.ListenUDP(t, b.x, nil, 6767)
			sendUDP(t, b.insA, net.IPv4(10, 0, 1, 255), 6767)
			sendUDP(t, b.insA, net.IPv4bcast, 6767)
			for i := range 2 {
				must(t, bsock.SetReadDeadline(time.Now().Add(time.Second)))
				if _, _, err := bsock.ReadFrom(make([]byte, 64)); err != nil {
					t.Fatalf("broadcast %d of 2 to the box: %v", i+1, err)
				}
			}

			// The box's own TCP service on its inside address, port 2222,
			// reached from inside; the same port from outside is DNAT's.
			nattest.TCPGreeter(t, b.x, fmtAddr(ipGwA, 2222), "the box")
			nattest.TCPGreeter(t, b.insA, fmtAddr(ipA, 22), "insA")
			if got, err := nattest.Greeting(b.insA, fmtAddr(ipGwA, 2222)); err != nil || got != "hello from the box" {
				t.Fatalf("the box's service on its inside address from inside: %q, %v", got, err)
			}
			if got, err := nattest.Greeting(b.sv, fmtAddr(ipExt, 2222)); err != nil || got != "hello from insA" {
				t.Fatalf("the DNAT port from outside: %q, %v", got, err)
			}
			if b.d == nil {
				return
			}
			st := b.d.Stats()
			for _, p := range st.Programs {
				t.Logf("%s: %v", p.Interface, p.Counters)
				if p.Counters[xdpprog.CtrRedirectFailed] != 0 {
					t.Errorf("%s: %d frames found no socket", p.Interface, p.Counters[xdpprog.CtrRedirectFailed])
				}
			}
			// No port xnat gave out is one the kernel may pick.
			lp, err := b.d.localPorts()
			must(t, err)
			var buf [256]flowtable.FlowInfo
			n, _ := b.d.Table().List(0, buf[:])
			for _, fi := range buf[:n] {
				if fi.Status&flowtable.FlagSrcNAT == 0 || fi.Reply.Dst != ip4(ipExt) {
					continue
				}
				if p := fi.Reply.DstPort; len(lp.Overlap(kernel.PortRange{Lo: p, Hi: p})) != 0 {
					t.Fatalf("xnat gave out port %d, one of the kernel's ephemeral ports %v", p, lp.Range)
				}
			}
		})
	}
}

// TestDNATRuleChange: a DNAT rule added with iptables (the API's
// ReplaceRules) forwards at once, with no kernel event to help; deleted,
// it stops at once and the port is the box's own service's again.
func TestDNATRuleChange(t *testing.T) {
	const rulesText = "*nat\n-A POSTROUTING -o x1 -j MASQUERADE\nCOMMIT\n"
	for _, gw := range gateways {
		t.Run(gw, func(t *testing.T) {
			b := newGateway(t, gw, rulesText)
			nattest.TCPGreeter(t, b.x, fmtAddr(ipExt, 2222), "the box")
			nattest.TCPGreeter(t, b.insA, fmtAddr(ipA, 22), "insA")
			if got, err := nattest.Greeting(b.sv, fmtAddr(ipExt, 2222)); err != nil || got != "hello from the box" {
				t.Fatalf("before the rule: %q, %v", got, err)
			}
			const rule = "-t nat -A PREROUTING -i x1 -p tcp --dport 2222 -j DNAT --to-destination 10.0.1.2:22"
			b.iptables(rule)
			if got, err := nattest.Greeting(b.sv, fmtAddr(ipExt, 2222)); err != nil || got != "hello from insA" {
				t.Fatalf("right after the rule was added: %q, %v", got, err)
			}
			b.iptables(strings.Replace(rule, "-A", "-D", 1))
			if got, err := nattest.Greeting(b.sv, fmtAddr(ipExt, 2222)); err != nil || got != "hello from the box" {
				t.Fatalf("right after the rule was deleted: %q, %v", got, err)
			}
		})
	}
}

// TestRemovedRuleKeepsConnections: a TCP connection masqueraded through a
// pool and one forwarded by a DNAT rule keep working after their rules
// are removed, until they close; the ports they held are the kernel's
// again once they are gone.
func TestRemovedRuleKeepsConnections(t *testing.T) {
	// A rule of neither connection stays: with no NAT rule left at all,
	// Linux (nf_tables) stops translating its live connections too.
	const rulesText = `*nat
-A PREROUTING -i x1 -p udp -m udp --dport 9 -j DNAT --to-destination 10.0.1.2:9
-A PREROUTING -i x1 -p tcp -m tcp --dport 2222 -j DNAT --to-destination 10.0.1.2:22
-A POSTROUTING -o x1 -j MASQUERADE
COMMIT
`
	for _, gw := range gateways {
		t.Run(gw, func(t *testing.T) {
			b := newGateway(t, gw, rulesText)
			tcpServer(t, b.sv, ipSrv, 9000)
			tcpServer(t, b.insA, ipA, 22)
			masq, err := tcpDial(t, b.insA, fmtAddr(ipSrv, 9000), 2*time.Second)
			must(t, err)
			dnat, err := tcpDial(t, b.sv, fmtAddr(ipExt, 2222), 2*time.Second)
			must(t, err)
			for _, c := range []net.Conn{masq, dnat} {
				must(t, roundTrip(c, []byte("before")))
			}
			var extPort uint16
			if b.d != nil {
				fi, _, ok := b.d.Table().Get(flowtable.MakeTuple(flowtable.ProtoTCP, ip4(ipA), port(masq.LocalAddr()), ip4(ipSrv), 9000))
				if !ok {
					t.Fatal("masqueraded connection not in the table")
				}
				extPort = fi.Reply.DstPort
			}
			// Rule by rule: iptables-nft's -F of the nat table makes Linux
			// drop the translation of live connections.
			b.iptables("-t nat -D POSTROUTING -o x1 -j MASQUERADE")
			b.iptables("-t nat -D PREROUTING -i x1 -p tcp --dport 2222 -j DNAT --to-destination 10.0.1.2:22")
			for i := range 20 {
				for name, c := range map[string]net.Conn{"masqueraded": masq, "DNAT": dnat} {
					if err := roundTrip(c, []byte(fmt.Sprintf("after %d", i))); err != nil {
						t.Fatalf("%s connection after its rule was removed: %v", name, err)
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
			if b.d == nil {
				return
			}
			if n := b.d.Table().Count(); n != 2 {
				t.Fatalf("%d connections, want the 2", n)
			}
			held := b.d.steer.Count(ip4(ipExt), flowtable.ProtoTCP, extPort)
			dheld := b.d.steer.Count(ip4(ipExt), flowtable.ProtoTCP, 2222)
			if held != 1 || dheld != 1 {
				t.Fatalf("held: masqueraded port %d %d times, DNAT port %d times; want 1 and 1", extPort, held, dheld)
			}
			// Gone (conntrack -D), they let go of their ports.
			masq.Close()
			dnat.Close()
			b.d.Table().Flush()
			eventually(t, "the ports to be let go", func() bool {
				return b.d.steer.Count(ip4(ipExt), flowtable.ProtoTCP, extPort) == 0 &&
					b.d.steer.Count(ip4(ipExt), flowtable.ProtoTCP, 2222) == 0
			})
		})
	}
}

// TestQueuesAndMTURefused: xnat refuses interfaces with more receive
// queues than workers, and an MTU its frames do not hold, naming the
// fixes.
func TestQueuesAndMTURefused(t *testing.T) {
	tp := nattest.New(t, nattest.Options{Queues: 2})
	must(t, tp.X.Do(func() error {
		_, err := Prepare(Config{Inside: nattest.Inside, Outside: nattest.Outside, Queues: 1})
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "--queues 2") || !strings.Contains(err.Error(), "ethtool -L x0a") {
			return fmt.Errorf("2 receive queues, 1 worker: %v", err)
		}
		_, err = Prepare(Config{Inside: nattest.Inside, Outside: nattest.Outside, Queues: 2})
		return err
	}))
	must(t, setMTU(tp.X, "x1", 9000))
	must(t, tp.X.Do(func() error {
		_, err := Prepare(Config{Inside: nattest.Inside, Outside: nattest.Outside, Queues: 2})
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "interface x1: MTU 9000") || !strings.Contains(err.Error(), "mtu 3822") {
			return fmt.Errorf("MTU 9000: %v", err)
		}
		return nil
	}))
}

// TestLocalPortsCheckedOnChange: the NAT pools are checked against the
// kernel's ephemeral ports on every rule change, with the sysctls read
// again: refused while they overlap (local_ports = "refuse"), accepted
// once the ports are reserved; with "warn" the overlap a change brings is
// reported.
func TestLocalPortsCheckedOnChange(t *testing.T) {
	const filterOnly = "*filter\n-A FORWARD -j ACCEPT\nCOMMIT\n"
	masq, err := ParseRules([]byte("*nat\n-A POSTROUTING -o x1 -j MASQUERADE\nCOMMIT\n"))
	must(t, err)
	b := newBed(t, bedOpts{rules: filterOnly, localPorts: "refuse"})
	err = b.d.ReplaceRules(masq)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), overlapMsg) {
		t.Fatalf("MASQUERADE over the kernel's ports with local_ports refuse: %v", err)
	}
	must(t, b.x.SetSysctl("net.ipv4.ip_local_reserved_ports", "32768-60999"))
	must(t, b.d.ReplaceRules(masq))

	w := newBed(t, bedOpts{rules: filterOnly})
	if _, ok := w.event(overlapMsg); ok {
		t.Fatal("overlap reported without a pool on the box's addresses")
	}
	must(t, w.d.ReplaceRules(masq))
	if _, ok := w.event(overlapMsg); !ok {
		t.Fatal("the overlap a rule change brought was not reported")
	}
}

// TestUnservedQueue: with the kernel forwarding (ip_forward=1) and a
// receive queue no worker serves, the traffic on it is dropped by the XDP
// program and counted: nothing reaches the server untranslated, while the
// served queue's traffic is translated. (Prepare refuses such a
// configuration; the plan is changed after it, as a queue added at run
// time or a worker gone would leave it.)
func TestUnservedQueue(t *testing.T) {
	tp := nattest.New(t, nattest.Options{Queues: 2})
	b := &bed{t: t, insA: tp.InsA, insB: tp.InsB, x: tp.X, sv: tp.Srv}
	must(t, b.x.SetSysctl("net.ipv4.ip_forward", "1"))
	rulesFile := t.TempDir() + "/rules.v4"
	must(t, writeFile(rulesFile, baseRules))
	must(t, b.x.Do(func() error {
		plan, err := Prepare(Config{Inside: nattest.Inside, Outside: nattest.Outside, Queues: 2, Rules: rulesFile, Capacity: 4096})
		if err != nil {
			return err
		}
		if e, ok := findFact(plan.Facts, "the kernel forwards IPv4"); !ok || !strings.Contains(fmt.Sprint(e.Args), "x0a") {
			return fmt.Errorf("no warning about the kernel's forwarding: %v", plan.Facts)
		}
		plan.Config.Queues, plan.Config.CPUs = 1, nil
		b.d, err = Start(plan, Options{OnEvent: b.record, PollTimeout: 20 * time.Millisecond})
		return err
	}))
	t.Cleanup(func() { must(t, b.d.Stop()) })

	sink := nattest.ListenUDP(t, b.sv, ipSrv, 9999)
	const flows = 48
	for i := range flows {
		c := udpDial(t, b.insA, &net.UDPAddr{IP: ipA, Port: 20000 + i}, &net.UDPAddr{IP: ipSrv, Port: 9999})
		if _, err := c.Write([]byte("flow")); err != nil {
			t.Fatal(err)
		}
	}
	from := map[string]int{}
	buf := make([]byte, 64)
	for {
		must(t, sink.SetReadDeadline(time.Now().Add(500*time.Millisecond)))
		_, addr, err := sink.ReadFromUDP(buf)
		if err != nil {
			break
		}
		from[addr.IP.String()]++
	}
	var failed uint64
	for _, p := range b.d.Stats().Programs {
		if p.Interface == "x0a" {
			failed = p.Counters[xdpprog.CtrRedirectFailed]
		}
	}
	t.Logf("%d flows: the server saw %v; %d dropped on the unserved queue", flows, from, failed)
	if from[ipA.String()] != 0 {
		t.Fatalf("%d datagrams reached the server untranslated", from[ipA.String()])
	}
	if from[ipExt.String()] == 0 || failed == 0 || uint64(from[ipExt.String()])+failed != flows {
		t.Fatalf("translated %d, dropped %d, of %d flows: want both queues used and every flow accounted for", from[ipExt.String()], failed, flows)
	}
}

func findFact(facts []Event, msg string) (Event, bool) {
	for _, e := range facts {
		if strings.Contains(e.Msg, msg) {
			return e, true
		}
	}
	return Event{}, false
}

// recreateOutside deletes x1 (and with it s0) and makes the pair again,
// addressed as before, with the server's new MAC as xnat's neighbour.
func recreateOutside(t *testing.T, b *bed, queues int) {
	t.Helper()
	l, err := b.x.Link("x1")
	must(t, err)
	must(t, b.x.Netlink().LinkDel(l))
	time.Sleep(100 * time.Millisecond) // traffic meanwhile goes nowhere
	must(t, b.x.Netlink().LinkAdd(&netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: "x1", NumTxQueues: queues, NumRxQueues: queues},
		PeerName:  "s0", PeerNamespace: netlink.NsFd(b.sv.Handle()),
		PeerNumTxQueues: uint32(queues), PeerNumRxQueues: uint32(queues),
	}))
	must(t, b.x.AddAddr("x1", "192.0.2.1/24"))
	must(t, b.sv.AddAddr("s0", "192.0.2.2/24"))
	must(t, b.sv.SetTxChecksum("s0", false))
	must(t, b.x.SetLinkUp("x1", true))
	must(t, b.sv.SetLinkUp("s0", true))
	mac, err := b.sv.MAC("s0")
	must(t, err)
	must(t, b.x.AddNeigh("x1", "192.0.2.2", mac))
}

// TestInterfaceRecreated: the outside veth deleted and created again
// (a new ifindex) while a flow runs: xnat attaches to it again and the
// flow resumes; link down and up resumes it too; after Stop nothing is
// left attached.
func TestInterfaceRecreated(t *testing.T) {
	b := newBed(t, bedOpts{})
	udpEcho(t, b.sv, ipSrv, 7000)
	c := udpDial(t, b.insA, &net.UDPAddr{IP: ipA, Port: 5000}, &net.UDPAddr{IP: ipSrv, Port: 7000})
	if got, err := ask(c, "before", 1); err != nil || !strings.HasPrefix(got, ipExt.String()) {
		t.Fatalf("before: %q, %v", got, err)
	}
	old, err := b.x.Index("x1")
	must(t, err)
	// Traffic runs through the change: another host's flow, its answers
	// lost while x1 is gone.
	stop := make(chan struct{})
	done := make(chan int)
	bc := udpDial(t, b.insB, &net.UDPAddr{IP: ipB, Port: 5001}, &net.UDPAddr{IP: ipSrv, Port: 7000})
	go func() {
		answered := 0
		for {
			select {
			case <-stop:
				done <- answered
				return
			default:
			}
			if _, err := ask(bc, "during", 1); err == nil {
				answered++
			}
		}
	}()
	recreateOutside(t, b, 2)
	nw, err := b.x.Index("x1")
	must(t, err)
	if nw == old {
		t.Fatalf("x1 kept ifindex %d", old)
	}
	var got string
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, err = ask(c, "after", 1); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no forwarding 5 s after x1 came back (ifindex %d→%d): %v; events %v", old, nw, err, b.eventsText())
		}
	}
	if !strings.HasPrefix(got, ipExt.String()) {
		t.Fatalf("after: %q", got)
	}
	close(stop)
	t.Logf("the flow running through the change had %d answers", <-done)
	if !xdpOn(t, b.x, "x1") {
		t.Fatal("no XDP program on the new x1")
	}
	if b.d.Stats().IOChanges == 0 {
		t.Fatal("no re-attachment counted")
	}
	t.Logf("events:%s", b.eventsText())

	must(t, b.x.SetLinkUp("x1", false))
	time.Sleep(100 * time.Millisecond)
	must(t, b.x.SetLinkUp("x1", true))
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, err = ask(c, "after up", 1); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no forwarding 5 s after x1 came up: %v", err)
		}
	}
	must(t, b.d.Stop())
	for _, l := range []string{"x0a", "x0b", "x1"} {
		if xdpOn(t, b.x, l) {
			t.Fatalf("%s still has an XDP program after Stop", l)
		}
	}
}

func xdpOn(t *testing.T, ns *netns.NS, name string) bool {
	l, err := ns.Link(name)
	must(t, err)
	x := l.Attrs().Xdp
	return x != nil && x.Attached
}

func (b *bed) eventsText() string {
	b.evMu.Lock()
	defer b.evMu.Unlock()
	var sb strings.Builder
	for _, e := range b.events {
		fmt.Fprintf(&sb, "\n%s %s %v", e.Level, e.Msg, e.Args)
	}
	return sb.String()
}

// TestMTUChange: frames of an MTU the AF_XDP frames do not hold are
// refused at start with the largest MTU named; raised at run time, the
// MTU gets larger frames and large datagrams pass.
func TestMTUChange(t *testing.T) {
	if _, err := frameSizeFor(9000); err == nil || !strings.Contains(err.Error(), "mtu 3822") {
		t.Fatalf("MTU 9000: %v", err)
	}
	if fs, err := frameSizeFor(1500); err != nil || fs != 2048 {
		t.Fatalf("MTU 1500: %d %v", fs, err)
	}
	if fs, err := frameSizeFor(3000); err != nil || fs != 4096 {
		t.Fatalf("MTU 3000: %d %v", fs, err)
	}
	b := newBed(t, bedOpts{})
	udpEcho(t, b.sv, ipSrv, 7000)
	c := udpDial(t, b.insA, &net.UDPAddr{IP: ipA, Port: 5000}, &net.UDPAddr{IP: ipSrv, Port: 7000})
	big := strings.Repeat("x", 2500)
	// Peers first: an XDP veth bounds its peer's MTU by its own.
	for _, l := range []struct {
		ns   *netns.NS
		name string
	}{{b.x, "x0a"}, {b.insA, "a0"}, {b.x, "x1"}, {b.sv, "s0"}} {
		must(t, setMTU(l.ns, l.name, 3000))
	}
	eventually(t, "larger frames", func() bool { return b.d.Stats().IOChanges > 0 })
	var got string
	var err error
	for range 10 {
		if got, err = ask(c, big, 1); err == nil {
			break
		}
	}
	if err != nil || !strings.HasSuffix(got, "|"+big) {
		t.Fatalf("a 2500-byte datagram at MTU 3000: %d bytes, %v; events %v", len(got), err, b.eventsText())
	}
	if e, ok := b.event("interfaces re-attached"); !ok || !strings.Contains(fmt.Sprint(e.Args), "frame_size 4096") {
		t.Fatalf("re-attachment event %+v", e)
	}
}

func setMTU(ns *netns.NS, name string, mtu int) error {
	l, err := ns.Link(name)
	if err != nil {
		return err
	}
	return ns.Netlink().LinkSetMTU(l, mtu)
}
