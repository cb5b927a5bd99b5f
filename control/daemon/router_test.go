package daemon

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"xnat/control/conntrack"
	"xnat/dataplane"
	"xnat/dataplane/xdpprog"
	"xnat/flowtable"
	"xnat/internal/nattest"
	"xnat/internal/netns"
)

// The router tests run each scenario twice in the same topology (package
// nattest's): through xnat, and through Linux's own forwarding and
// iptables NAT with the same rules, so that each checks itself against
// what Linux does. The namespaces start with empty neighbour tables.

// router is the box under test: xnat (d set) or Linux (d nil).
type router struct {
	insA, insB, x, sv *netns.NS
	d                 *Daemon
}

// eachRouter runs f against xnat and against Linux with the same rules.
func eachRouter(t *testing.T, ruleText string, f func(t *testing.T, r *router)) {
	eachRouterWith(t, bedOpts{rules: ruleText}, f)
}

// eachRouterWith is eachRouter with xnat's bed options (noNeighbours is
// always set).
func eachRouterWith(t *testing.T, o bedOpts, f func(t *testing.T, r *router)) {
	ruleText := cmp.Or(o.rules, baseRules)
	t.Run("xnat", func(t *testing.T) {
		o.noNeighbours = true
		b := newBed(t, o)
		f(t, &router{insA: b.insA, insB: b.insB, x: b.x, sv: b.sv, d: b.d})
	})
	t.Run("linux", func(t *testing.T) {
		tp := nattest.New(t, nattest.Options{Queues: 2, NoNeighbours: true})
		must(t, tp.X.SetSysctl("net.ipv4.ip_forward", "1"))
		file := t.TempDir() + "/rules.v4"
		must(t, writeFile(file, ruleText))
		_, err := tp.X.Run("iptables-restore", file)
		must(t, err)
		f(t, &router{insA: tp.InsA, insB: tp.InsB, x: tp.X, sv: tp.Srv})
	})
}

// TestFreshPing: the first ping through MASQUERADE of a router whose
// neighbour tables are empty is answered, like the two after it: the
// echo request waits for the server's address to be resolved rather
// than being dropped.
func TestFreshPing(t *testing.T) {
	// xnatd's periodic work and its workers' sleeps are made far longer
	// than the first echo may take: only the core's request for the
	// neighbour and the kernel's answer waking the worker make it prompt.
	const slow = 3 * time.Second
	eachRouterWith(t, bedOpts{controlInterval: slow, pollTimeout: slow}, func(t *testing.T, r *router) {
		cli := openICMP(t, r.insA)
		const id = 0x4242
		got := 0
		for seq := uint16(1); seq <= 3; seq++ {
			sent := time.Now()
			must(t, cli.echo(ipSrv, id, seq))
			if rep, err := cli.recv(0, 2*time.Second); err == nil && rep.seq == seq {
				got++
				rtt := time.Since(sent)
				t.Logf("echo %d: %v", seq, rtt.Round(10*time.Microsecond))
				if rtt > time.Second {
					t.Errorf("echo %d answered after %v", seq, rtt)
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		if got != 3 {
			t.Fatalf("%d echo replies of 3", got)
		}
		if r.d != nil {
			c := r.d.Dataplane().TotalCounters()
			if c.NeighQueued == 0 || c.Drop(dataplane.ReasonNoNeighbour) != 0 {
				t.Fatalf("neigh_queued %d, no_neighbour %d: the first request should have been held", c.NeighQueued, c.Drop(dataplane.ReasonNoNeighbour))
			}
		}
	})
}

// TestFreshUDPOneShot: a single UDP request from an inside host, with no
// neighbour known on either side, gets its answer, and the connection is
// in the table (conntrack -L).
func TestFreshUDPOneShot(t *testing.T) {
	eachRouter(t, baseRules, func(t *testing.T, r *router) {
		udpEcho(t, r.sv, ipSrv, 7000)
		c := udpDial(t, r.insB, &net.UDPAddr{IP: ipB, Port: 5353}, &net.UDPAddr{IP: ipSrv, Port: 7000})
		got, err := ask(c, "one shot", 1)
		if err != nil {
			t.Fatalf("no answer to the only request: %v", err)
		}
		if from, _, _ := strings.Cut(got, "|"); !strings.HasPrefix(from, ipExt.String()+":") {
			t.Fatalf("server saw %s, want xnat's outside address", from)
		}
		if r.d == nil {
			return
		}
		out := make([]flowtable.FlowInfo, 64)
		n, _ := r.d.Table().List(0, out)
		found := false
		var listing bytes.Buffer
		for i := range out[:n] {
			fi := &out[i]
			must(t, conntrack.WriteEntry(&listing, fi, false))
			o := fi.Orig
			if o.Proto == flowtable.ProtoUDP && o.Src == addrOf(ipB) && o.SrcPort == 5353 && o.Dst == addrOf(ipSrv) && o.DstPort == 7000 &&
				fi.Reply.Dst == addrOf(ipExt) && fi.Status&flowtable.FlagSeenReply != 0 {
				found = true
			}
		}
		if !found {
			t.Fatalf("the exchange's connection is not in the table:\n%s", listing.String())
		}
	})
}

func addrOf(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }

// hairpinRules: a service on insB (10.0.2.2:8000) published on the
// outside address, and the inside network masqueraded towards it, out of
// the inside interface it lies behind (x0b, 10.0.2.1).
const hairpinRules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 192.0.2.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.2.2:8000
-A POSTROUTING -s 10.0.1.0/24 -d 10.0.2.2/32 -p tcp -m tcp --dport 8000 -j MASQUERADE
-A POSTROUTING -o x1 -j MASQUERADE
COMMIT
`

// fileServer serves payload to every connection on ns's ip:port and
// reports each peer's address.
func fileServer(t *testing.T, ns *netns.NS, ip net.IP, port int, payload []byte) <-chan string {
	var ln *net.TCPListener
	must(t, ns.Do(func() error {
		var err error
		ln, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: ip, Port: port})
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	peers := make(chan string, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peers <- c.RemoteAddr().String()
			go func() {
				defer c.Close()
				_, _ = c.Write(payload)
			}()
		}
	}()
	return peers
}

// fetch reads everything a TCP server sends.
func fetch(t *testing.T, ns *netns.NS, addr string) []byte {
	c, err := nattest.TCPDial(t, ns, addr, 3*time.Second)
	must(t, err)
	must(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	b, err := io.ReadAll(c)
	must(t, err)
	return b
}

func testPayload() []byte {
	b := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestHairpinMasquerade: the hairpin recipe (DNAT to an inside host,
// MASQUERADE of the inside network towards it) moves a file from one
// inside host to another through the outside address; the server sees
// the connection from the inside interface's address, as with Linux.
func TestHairpinMasquerade(t *testing.T) {
	payload := testPayload()
	eachRouter(t, hairpinRules, func(t *testing.T, r *router) {
		peers := fileServer(t, r.insB, ipB, 8000, payload)
		got := fetch(t, r.insA, fmtAddr(ipExt, 8080))
		if sha256.Sum256(got) != sha256.Sum256(payload) {
			t.Fatalf("received %d bytes that differ from the %d sent", len(got), len(payload))
		}
		if peer := <-peers; !strings.HasPrefix(peer, "10.0.2.1:") {
			t.Fatalf("the server saw the client as %s, want x0b's address 10.0.2.1", peer)
		}
		if r.d != nil {
			if c := r.d.Dataplane().TotalCounters(); c.Drop(dataplane.ReasonNoAddress) != 0 {
				n := c.Drop(dataplane.ReasonNoAddress)
				t.Fatalf("no_address drops: %d", n)
			}
		}
	})
}

// TestHairpinAutomatic: with only the DNAT rule, xnat translates a
// hairpinned connection's source to the outside address the client
// aimed at, so the server answers through xnat.
func TestHairpinAutomatic(t *testing.T) {
	const dnatOnly = `*nat
-A PREROUTING -d 192.0.2.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.2.2:8000
-A POSTROUTING -o x1 -j MASQUERADE
COMMIT
`
	payload := testPayload()
	b := newBed(t, bedOpts{rules: dnatOnly, noNeighbours: true})
	peers := fileServer(t, b.insB, ipB, 8000, payload)
	got := fetch(t, b.insA, fmtAddr(ipExt, 8080))
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("received %d bytes that differ from the %d sent", len(got), len(payload))
	}
	if peer := <-peers; !strings.HasPrefix(peer, ipExt.String()+":") {
		t.Fatalf("the server saw the client as %s, want the outside address", peer)
	}
}

// capture counts, on a link of a namespace, the UDP datagrams to a port
// of ports (any address), with or without an 802.1Q tag: an AF_PACKET
// socket sees every frame.
func capture(t *testing.T, ns *netns.NS, link string, ports ...uint16) *atomic.Int64 {
	ix, err := ns.Index(link)
	must(t, err)
	var fd int
	must(t, ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		tv := unix.Timeval{Usec: 100000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ix})
	}))
	var n atomic.Int64
	done := make(chan struct{})
	var stopped atomic.Bool
	t.Cleanup(func() {
		stopped.Store(true)
		<-done
		unix.Close(fd)
	})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for !stopped.Load() {
			m, _, err := unix.Recvfrom(fd, buf, 0)
			l3 := 14
			if m >= 18 && binary.BigEndian.Uint16(buf[12:]) == unix.ETH_P_8021Q { // a tag in the frame counts too
				l3 = 18
			}
			if err != nil || m < l3+20+8 || binary.BigEndian.Uint16(buf[l3-2:]) != unix.ETH_P_IP || buf[l3+9] != unix.IPPROTO_UDP {
				continue
			}
			l4 := l3 + int(buf[l3]&0xf)*4
			if l4+4 > m {
				continue
			}
			dp := binary.BigEndian.Uint16(buf[l4+2:])
			for _, p := range ports {
				if dp == p {
					n.Add(1)
				}
			}
		}
	}()
	return &n
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sendUDP sends one datagram from ns to dst:port (broadcast allowed).
func sendUDP(t *testing.T, ns *netns.NS, dst net.IP, port int) {
	must(t, ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, 8); err != nil {
			return err
		}
		var sa unix.SockaddrInet4
		copy(sa.Addr[:], dst.To4())
		sa.Port = port
		return unix.Sendto(fd, []byte("must not be forwarded"), 0, &sa)
	}))
}

// TestBroadcastNotForwarded: limited and directed broadcasts and
// multicast from an inside host never leave through another interface,
// though the router has a default route that would take them, and xnat
// counts them (broadcast).
func TestBroadcastNotForwarded(t *testing.T) {
	eachRouter(t, baseRules, func(t *testing.T, r *router) {
		must(t, r.x.AddRoute("0.0.0.0/0", "192.0.2.2", "x1"))
		const port = 9999
		out := capture(t, r.sv, "s0", port)
		other := capture(t, r.insB, "b0", port)
		dsts := []net.IP{
			net.IPv4(255, 255, 255, 255),
			net.IPv4(10, 0, 2, 255), // x0b's subnet's directed broadcast
			net.IPv4(224, 0, 0, 251),
			net.IPv4(239, 1, 2, 3),
		}
		// Unicast datagrams before and after them show the path works (its
		// next hop resolved) and that the captures see what crosses it.
		udpEcho(t, r.sv, ipSrv, port)
		c := udpDial(t, r.insA, nil, &net.UDPAddr{IP: ipSrv, Port: port})
		if _, err := ask(c, "unicast", 4); err != nil {
			t.Fatalf("unicast: %v", err)
		}
		for _, dst := range dsts {
			sendUDP(t, r.insA, dst, port)
		}
		if _, err := ask(c, "unicast", 4); err != nil {
			t.Fatalf("unicast: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
		if n := out.Load(); n != 2 {
			t.Fatalf("%d datagrams to port %d reached the server's link, want only the 2 unicast ones", n, port)
		}
		if n := other.Load(); n != 0 {
			t.Fatalf("%d datagrams to port %d reached the other inside host's link", n, port)
		}
		if r.d != nil {
			// The XDP program passes them to the kernel and counts them;
			// one that reached xnat anyway is counted there.
			c := r.d.Dataplane().TotalCounters()
			n := c.Drop(dataplane.ReasonBroadcast)
			for _, p := range r.d.Stats().Programs {
				n += p.Counters[xdpprog.CtrPassBroadcast]
			}
			if n < uint64(len(dsts)) {
				t.Fatalf("broadcast count %d, want at least %d", n, len(dsts))
			}
		}
	})
}

// TestUnresolvableNextHop: a packet whose next hop never answers ARP is
// answered, once the kernel's probes have failed, with ICMP host
// unreachable, as Linux sends it.
func TestUnresolvableNextHop(t *testing.T) {
	eachRouter(t, baseRules, func(t *testing.T, r *router) {
		must(t, r.x.AddRoute("198.51.100.0/24", "192.0.2.77", "x1"))
		if r.d != nil {
			eventually(t, "the route in xnat's view", func() bool {
				for _, rt := range r.d.Snapshot().Routes {
					if rt.Dst.Addr == addrOf(net.IPv4(198, 51, 100, 0)) && rt.Dst.Len == 24 {
						return true
					}
				}
				return false
			})
		}
		cli := openICMP(t, r.insA)
		c := udpDial(t, r.insA, &net.UDPAddr{IP: ipA, Port: 6000}, &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 7000})
		if _, err := c.Write([]byte("nobody home")); err != nil {
			t.Fatal(err)
		}
		m, err := cli.recv(3, 8*time.Second)
		if err != nil && r.d != nil {
			c := r.d.Dataplane().TotalCounters()
			t.Logf("counters %+v stats %+v", c, r.d.Stats())
		}
		must(t, err)
		// From the masqueraded source: Linux answers the translated
		// packet, and translates the error back.
		if m.code != 1 || !m.src.Equal(ipExt) || !m.dst.Equal(ipA) {
			t.Fatalf("ICMP %+v, want host unreachable (code 1) from %s to %s", m, ipExt, ipA)
		}
		if r.d != nil {
			if c := r.d.Dataplane().TotalCounters(); c.Drop(dataplane.ReasonNeighFailed) != 1 || c.Replies != 1 {
				t.Fatalf("neigh_failed %d, replies %d; want 1 and 1", c.Drop(dataplane.ReasonNeighFailed), c.Replies)
			}
		}
	})
}
