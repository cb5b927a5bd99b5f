package daemon

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"xnat/dataplane"
	"xnat/dataplane/header"
	"xnat/flowtable"
	"xnat/internal/nattest"
	"xnat/internal/netns"
)

// icmpSocket is a raw ICMP socket in a namespace.
type icmpSocket struct{ fd int }

func openICMP(t *testing.T, ns *netns.NS) *icmpSocket {
	t.Helper()
	s := &icmpSocket{fd: -1}
	must(t, ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		s.fd = fd
		tv := unix.Timeval{Usec: 200000}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}))
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

func (s *icmpSocket) echo(dst net.IP, id, seq uint16) error {
	m := make([]byte, 16)
	m[0] = 8
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], "xnatping")
	binary.BigEndian.PutUint16(m[2:], header.Checksum(m, 0))
	var sa unix.SockaddrInet4
	copy(sa.Addr[:], dst.To4())
	return unix.Sendto(s.fd, m, 0, &sa)
}

// icmpMsg is a received ICMP message.
type icmpMsg struct {
	src, dst  net.IP
	typ, code uint8
	id, seq   uint16
}

// recv returns the next ICMP message of type typ within timeout.
func (s *icmpSocket) recv(typ uint8, timeout time.Duration) (icmpMsg, error) {
	buf := make([]byte, 2048)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			continue
		}
		p := buf[:n]
		ihl := int(p[0]&0xf) * 4
		if n < ihl+8 || p[ihl] != typ {
			continue
		}
		m := icmpMsg{src: net.IP(append([]byte(nil), p[12:16]...)), dst: net.IP(append([]byte(nil), p[16:20]...)),
			typ: p[ihl], code: p[ihl+1], id: binary.BigEndian.Uint16(p[ihl+4:]), seq: binary.BigEndian.Uint16(p[ihl+6:])}
		return m, nil
	}
	return icmpMsg{}, fmt.Errorf("no ICMP type %d within %v", typ, timeout)
}

// TestPingThroughMasquerade: ICMP echo from an inside host reaches the
// server from xnat's external address with a translated identifier, and
// the reply comes back to the host with its own identifier.
func TestPingThroughMasquerade(t *testing.T) {
	b := newBed(t, bedOpts{})
	cli := openICMP(t, b.insA)
	srv := openICMP(t, b.sv)
	const id = 0x1234
	for seq := uint16(1); seq <= 3; seq++ {
		must(t, cli.echo(ipSrv, id, seq))
		req, err := srv.recv(8, 2*time.Second)
		must(t, err)
		if !req.src.Equal(ipExt) || req.seq != seq {
			t.Fatalf("server saw echo request from %s seq %d, want from %s seq %d", req.src, req.seq, ipExt, seq)
		}
		if req.id < 1024 {
			t.Fatalf("server saw identifier %d, want one from the pool (1024-65535)", req.id)
		}
		rep, err := cli.recv(0, 2*time.Second)
		must(t, err)
		if !rep.src.Equal(ipSrv) || !rep.dst.Equal(ipA) || rep.id != id || rep.seq != seq {
			t.Fatalf("client got echo reply %+v, want from %s to %s id %#x seq %d", rep, ipSrv, ipA, id, seq)
		}
	}
	c := b.d.Dataplane().TotalCounters()
	if c.Created != 1 || c.Forwarded < 6 {
		t.Fatalf("%d connections created, %d frames forwarded; want 1 and at least 6", c.Created, c.Forwarded)
	}
}

// TestUDPSameSourcePort: both inside hosts talk to the server from source
// port 5000; the server sees both from the external address on two
// different ports, and each host gets its own answers.
func TestUDPSameSourcePort(t *testing.T) {
	b := newBed(t, bedOpts{})
	udpEcho(t, b.sv, ipSrv, 7000)
	srv := &net.UDPAddr{IP: ipSrv, Port: 7000}
	ca := udpDial(t, b.insA, &net.UDPAddr{IP: ipA, Port: 5000}, srv)
	cb := udpDial(t, b.insB, &net.UDPAddr{IP: ipB, Port: 5000}, srv)
	seen := map[string]string{}
	for i := range 5 {
		for name, c := range map[string]*net.UDPConn{"A": ca, "B": cb} {
			msg := fmt.Sprintf("%s-%d", name, i)
			got, err := ask(c, msg, 1)
			if err != nil {
				t.Fatalf("host %s datagram %d: %v", name, i, err)
			}
			from, payload, _ := strings.Cut(got, "|")
			if payload != msg {
				t.Fatalf("host %s got %q, want its own %q", name, payload, msg)
			}
			if prev, ok := seen[name]; ok && prev != from {
				t.Fatalf("host %s seen from %s then %s", name, prev, from)
			}
			seen[name] = from
		}
	}
	hostA, portA, _ := net.SplitHostPort(seen["A"])
	hostB, portB, _ := net.SplitHostPort(seen["B"])
	if hostA != ipExt.String() || hostB != ipExt.String() {
		t.Fatalf("server saw %s and %s, want both from %s", seen["A"], seen["B"], ipExt)
	}
	if portA == portB {
		t.Fatalf("both hosts seen on port %s: one must be remapped", portA)
	}
	pa, _ := strconv.Atoi(portA)
	pb, _ := strconv.Atoi(portB)
	if pa < 1024 || pb < 1024 {
		t.Fatalf("external ports %d and %d, want both in the pool", pa, pb)
	}
	t.Logf("host A seen as %s, host B as %s", seen["A"], seen["B"])
	if n := b.d.Table().Count(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

// TestTCPTransfer: a TCP connection through MASQUERADE carries 10 MB each
// way intact; the server sees the external address.
func TestTCPTransfer(t *testing.T) {
	b := newBed(t, bedOpts{})
	peers := tcpServer(t, b.sv, ipSrv, 9000)
	c, err := tcpDial(t, b.insA, fmtAddr(ipSrv, 9000), 2*time.Second)
	must(t, err)
	peer := <-peers
	if host, _, _ := net.SplitHostPort(peer); host != ipExt.String() {
		t.Fatalf("server saw %s, want %s", peer, ipExt)
	}
	const size = 10 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	want := sha256.Sum256(data)
	must(t, c.SetDeadline(time.Now().Add(30*time.Second)))
	began := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		errc <- err
	}()
	h := sha256.New()
	n, err := io.CopyN(h, c, size)
	if err != nil {
		t.Fatalf("read %d of %d bytes back: %v", n, size, err)
	}
	must(t, <-errc)
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatalf("10 MB came back altered: sha256 %x, want %x", got, want)
	}
	el := time.Since(began)
	t.Logf("10 MB each way in %v (%.0f MB/s each way; an observation on veth in copy mode, not a benchmark)", el, float64(size)/1e6/el.Seconds())
	if fi, _, ok := b.d.Table().Get(flowtable.MakeTuple(flowtable.ProtoTCP, ip4(ipA), port(c.LocalAddr()), ip4(ipSrv), 9000)); !ok || !fi.Assured() || fi.State() != flowtable.TCPEstablished {
		t.Fatalf("connection in the table: %+v found %v, want ESTABLISHED and ASSURED", fi, ok)
	}
}

func ip4(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }

func port(a net.Addr) uint16 {
	switch a := a.(type) {
	case *net.TCPAddr:
		return uint16(a.Port)
	case *net.UDPAddr:
		return uint16(a.Port)
	}
	return 0
}

// recvErr reads one queued error of a socket with IP_RECVERR: the ICMP
// type and code and the address of the node that sent the error.
func recvErr(fd int, timeout time.Duration) (typ, code uint8, from net.IP, err error) {
	buf := make([]byte, 512)
	oob := make([]byte, 512)
	deadline := time.Now().Add(timeout)
	for {
		_, oobn, _, _, rerr := unix.Recvmsg(fd, buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if rerr == nil {
			msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
			if perr != nil {
				return 0, 0, nil, perr
			}
			for _, m := range msgs {
				if m.Header.Level != unix.SOL_IP || m.Header.Type != unix.IP_RECVERR {
					continue
				}
				const eeSize = int(unsafe.Sizeof(unix.SockExtendedErr{}))
				if len(m.Data) < eeSize+8 {
					return 0, 0, nil, errors.New("short IP_RECVERR message")
				}
				ee := (*unix.SockExtendedErr)(unsafe.Pointer(&m.Data[0]))
				if ee.Origin != unix.SO_EE_ORIGIN_ICMP {
					return 0, 0, nil, fmt.Errorf("error origin %d, want ICMP", ee.Origin)
				}
				off := m.Data[eeSize:]
				return ee.Type, ee.Code, net.IP(append([]byte(nil), off[4:8]...)), nil
			}
		}
		if time.Now().After(deadline) {
			return 0, 0, nil, fmt.Errorf("no queued error within %v (last: %v)", timeout, rerr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestICMPErrorsTranslated: a UDP datagram to a closed server port brings
// back ICMP port unreachable translated to the inside host, whose connected
// socket reports ECONNREFUSED; a datagram with TTL 1 gets ICMP time
// exceeded from xnat's inside address and one with TTL 2 the server's port
// unreachable (traceroute through xnat).
func TestICMPErrorsTranslated(t *testing.T) {
	b := newBed(t, bedOpts{})
	c := udpDial(t, b.insA, &net.UDPAddr{IP: ipA, Port: 6000}, &net.UDPAddr{IP: ipSrv, Port: 9})
	_, err := ask(c, "anyone?", 2)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("read on a connected socket to a closed port: %v, want ECONNREFUSED", err)
	}
	if c := b.d.Dataplane().TotalCounters(); c.Forwarded < 2 {
		t.Fatalf("%d frames forwarded, want the datagram and the ICMP error", c.Forwarded)
	}

	// traceroute: UDP with IP_TTL 1 then 2, errors read with IP_RECVERR.
	var fd int
	must(t, b.insA.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_RECVERR, 1); err != nil {
			return err
		}
		return unix.Connect(fd, &unix.SockaddrInet4{Port: 33434, Addr: [4]byte{192, 0, 2, 2}})
	}))
	defer unix.Close(fd)
	hops := []struct {
		ttl       int
		typ, code uint8
		from      net.IP
	}{
		{1, 11, 0, ipGwA}, // time exceeded in transit, from xnat's ingress address
		{2, 3, 3, ipSrv},  // port unreachable from the server, translated back
	}
	for _, h := range hops {
		must(t, unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TTL, h.ttl))
		if _, err := unix.Write(fd, []byte("probe")); err != nil {
			t.Fatalf("TTL %d: %v", h.ttl, err)
		}
		typ, code, from, err := recvErr(fd, 2*time.Second)
		if err != nil {
			t.Fatalf("TTL %d: %v", h.ttl, err)
		}
		if typ != h.typ || code != h.code || !from.Equal(h.from) {
			t.Fatalf("TTL %d: ICMP type %d code %d from %s, want type %d code %d from %s", h.ttl, typ, code, from, h.typ, h.code, h.from)
		}
	}
	if n := b.drops(dataplane.ReasonTTLExceeded); n != 1 {
		t.Fatalf("ttl_exceeded = %d, want 1", n)
	}
}

// TestDNATAndHairpin: the server reaches the inside web server through
// the DNAT port of the external address and is seen with its own address;
// the other inside host reaches it the same way (hairpinning) and is seen
// from the external address.
func TestDNATAndHairpin(t *testing.T) {
	b := newBed(t, bedOpts{})
	peers := tcpServer(t, b.insA, ipA, 80)
	for _, tc := range []struct {
		name   string
		ns     *netns.NS
		seenAs net.IP
	}{{"from outside", b.sv, ipSrv}, {"hairpin from insB", b.insB, ipExt}} {
		c, err := tcpDial(t, tc.ns, fmtAddr(ipExt, 8080), 2*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		peer := <-peers
		if host, _, _ := net.SplitHostPort(peer); host != tc.seenAs.String() {
			t.Fatalf("%s: inside server saw %s, want %s", tc.name, peer, tc.seenAs)
		}
		if err := roundTrip(c, []byte("GET / "+tc.name)); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := c.RemoteAddr().String(); got != fmtAddr(ipExt, 8080) {
			t.Fatalf("%s: connected to %s", tc.name, got)
		}
	}
}

// TestUnsolicited: packets from outside to ports of the external address
// that no connection holds and no DNAT rule takes are the kernel's (which
// answers them: port unreachable, reset), not xnat's, and reach nobody
// inside. Packets a DNAT rule's ports take but its other matches refuse
// are xnat's: dropped and counted unsolicited.
func TestUnsolicited(t *testing.T) {
	const withSource = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -s 203.0.113.0/24 -p udp -m udp --dport 5555 -j DNAT --to-destination 10.0.1.2:5555
-A POSTROUTING -o x1 -j MASQUERADE
COMMIT
`
	b := newBed(t, bedOpts{rules: withSource})
	// An inside listener on the same ports proves nothing leaks inwards.
	inner := nattest.ListenUDP(t, b.insA, ipA, 40000)
	c := udpDial(t, b.sv, nil, &net.UDPAddr{IP: ipExt, Port: 40000})
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := ask(c, "anyone?", 1); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("UDP to a port of the external address no connection holds: %v, want the kernel's port unreachable (ECONNREFUSED)", err)
	}
	if _, err := tcpDial(t, b.sv, fmtAddr(ipExt, 40001), 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("TCP to a port of the external address no connection holds: %v, want the kernel's reset (ECONNREFUSED)", err)
	}
	if n := b.drops(dataplane.ReasonUnsolicited); n != 0 {
		t.Fatalf("xnat took %d of the kernel's packets", n)
	}
	// The DNAT rule's port from a source it does not take.
	d := udpDial(t, b.sv, nil, &net.UDPAddr{IP: ipExt, Port: 5555})
	const n = 5
	for i := range n {
		if _, err := d.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "unsolicited drops", func() bool { return b.drops(dataplane.ReasonUnsolicited) == n })
	must(t, inner.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	if _, _, err := inner.ReadFrom(make([]byte, 64)); err == nil {
		t.Fatal("an unsolicited datagram reached the inside host")
	}
	if b.d.Table().Count() != 0 {
		t.Fatalf("%d connections created by unsolicited packets", b.d.Table().Count())
	}
}

// TestTableFullAssured: with the limit at N and N established (ASSURED)
// TCP connections, connection N+1 is dropped and counted table_full while
// the first N keep working.
func TestTableFullAssured(t *testing.T) {
	const limit = 4
	b := newBed(t, bedOpts{maxConns: limit})
	tcpServer(t, b.sv, ipSrv, 9000)
	var conns []net.Conn
	for i := range limit {
		c, err := tcpDial(t, b.insA, fmtAddr(ipSrv, 9000), 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		must(t, roundTrip(c, []byte("hello")))
		conns = append(conns, c)
	}
	eventually(t, "all connections ASSURED", func() bool {
		for _, c := range conns {
			fi, _, ok := b.d.Table().Get(flowtable.MakeTuple(flowtable.ProtoTCP, ip4(ipA), port(c.LocalAddr()), ip4(ipSrv), 9000))
			if !ok || !fi.Assured() {
				return false
			}
		}
		return true
	})
	if _, err := tcpDial(t, b.insA, fmtAddr(ipSrv, 9000), 500*time.Millisecond); err == nil {
		t.Fatalf("connection %d got through a full table", limit+1)
	}
	if n := b.drops(dataplane.ReasonTableFull); n < 1 {
		t.Fatalf("table_full = %d, want at least 1 (the SYN)", n)
	}
	st := b.d.Table().TotalStats()
	if st.Drop < 1 || st.EarlyDrop != 0 {
		t.Fatalf("table stats drop %d early_drop %d, want drop >= 1 and no early drop", st.Drop, st.EarlyDrop)
	}
	for i, c := range conns {
		if err := roundTrip(c, []byte("still here")); err != nil {
			t.Fatalf("connection %d after the table filled: %v", i+1, err)
		}
	}
	if n := b.d.Table().Count(); n != limit {
		t.Fatalf("%d connections, want %d", n, limit)
	}
	eventually(t, "table full event", func() bool { _, ok := b.event("table full"); return ok })
}

// TestTableFullEarlyDrop: with unassured connections (unanswered UDP)
// filling the table, a new connection evicts one of them (early_drop) and
// works.
func TestTableFullEarlyDrop(t *testing.T) {
	const limit = 4
	b := newBed(t, bedOpts{maxConns: limit})
	// A sink that never answers keeps its connections unreplied.
	nattest.ListenUDP(t, b.sv, ipSrv, 9999)
	conns := make([]*net.UDPConn, limit)
	for i := range conns {
		conns[i] = udpDial(t, b.insA, &net.UDPAddr{IP: ipA, Port: 20000 + i}, &net.UDPAddr{IP: ipSrv, Port: 9999})
	}
	// A flow's datagram is sent again while the table lacks its
	// connection: a datagram lost before xnat on a loaded machine must not
	// stand for an early-drop failure. The table full, the last ones sent
	// are given time to arrive: one arriving after the new connection
	// evicted its flow's would evict another.
	eventually(t, "the table to fill", func() bool {
		for i, c := range conns {
			if _, _, ok := b.d.Table().Get(flowtable.MakeTuple(flowtable.ProtoUDP, ip4(ipA), uint16(20000+i), ip4(ipSrv), 9999)); ok {
				continue
			}
			if _, err := c.Write([]byte("unanswered")); err != nil {
				t.Fatal(err)
			}
		}
		return b.d.Table().Count() == limit
	})
	time.Sleep(100 * time.Millisecond)
	udpEcho(t, b.sv, ipSrv, 7000)
	c := udpDial(t, b.insA, &net.UDPAddr{IP: ipA, Port: 21000}, &net.UDPAddr{IP: ipSrv, Port: 7000})
	got, err := ask(c, "new", 1)
	if err != nil || !strings.HasSuffix(got, "|new") {
		t.Fatalf("new connection into a table full of unassured ones: %q, %v", got, err)
	}
	st := b.d.Table().TotalStats()
	if st.EarlyDrop != 1 || st.Drop != 0 {
		t.Fatalf("early_drop %d drop %d, want 1 and 0", st.EarlyDrop, st.Drop)
	}
	if n := b.drops(dataplane.ReasonTableFull); n != 0 {
		t.Fatalf("table_full = %d, want 0", n)
	}
	if n := b.d.Table().Count(); n != limit {
		t.Fatalf("%d connections, want %d", n, limit)
	}
}

// TestNoNeighbour: without a neighbour entry for the server, xnat's first
// packet to it is held while the kernel is asked to resolve it, and then
// sent: the first request is answered.
func TestNoNeighbour(t *testing.T) {
	b := newBed(t, bedOpts{noNeigh: true})
	udpEcho(t, b.sv, ipSrv, 7000)
	c := udpDial(t, b.insA, &net.UDPAddr{IP: ipA, Port: 5000}, &net.UDPAddr{IP: ipSrv, Port: 7000})
	got, err := ask(c, "first", 1)
	if err != nil || !strings.HasSuffix(got, "|first") {
		t.Fatalf("first request: %q, %v", got, err)
	}
	if s := b.d.Stats(); s.Resolves < 1 || s.ResolveErrors != 0 {
		t.Fatalf("%d resolution requests, %d errors; want at least 1 and none", s.Resolves, s.ResolveErrors)
	}
	if c := b.d.Dataplane().TotalCounters(); c.NeighQueued != 1 || c.Drop(dataplane.ReasonNoNeighbour) != 0 {
		t.Fatalf("neigh_queued %d, no_neighbour %d; want 1 and 0", c.NeighQueued, c.Drop(dataplane.ReasonNoNeighbour))
	}
}

// TestMasqueradeAddressChange: when the outside address goes away, the
// connections masqueraded through it are flushed; new ones use the
// interface's current address. Taking the link down flushes too.
func TestMasqueradeAddressChange(t *testing.T) {
	b := newBed(t, bedOpts{})
	udpEcho(t, b.sv, ipSrv, 7000)
	c := udpDial(t, b.insA, &net.UDPAddr{IP: ipA, Port: 5000}, &net.UDPAddr{IP: ipSrv, Port: 7000})
	got, err := ask(c, "before", 1)
	if err != nil || !strings.HasPrefix(got, "192.0.2.1:") {
		t.Fatalf("before the change: %q, %v", got, err)
	}
	must(t, b.x.DelAddr("x1", "192.0.2.1/24"))
	must(t, b.x.AddAddr("x1", "192.0.2.3/24"))
	eventually(t, "the flush", func() bool { return b.d.Stats().Flushed == 1 })
	if n := b.d.Table().Count(); n != 0 {
		t.Fatalf("%d connections after the flush", n)
	}
	got, err = ask(c, "after", 4)
	if err != nil || !strings.HasPrefix(got, "192.0.2.3:") {
		t.Fatalf("after the change the server saw %q (%v), want the new address 192.0.2.3", got, err)
	}
	if e, ok := b.event("flushed masqueraded"); !ok || !strings.Contains(fmt.Sprint(e.Args), "address removed") {
		t.Fatalf("flush event %+v", e)
	}
	must(t, b.x.SetLinkUp("x1", false))
	eventually(t, "the flush on link down", func() bool { return b.d.Stats().Flushed == 2 })
	if n := b.d.Table().Count(); n != 0 {
		t.Fatalf("%d connections after link down", n)
	}
}
