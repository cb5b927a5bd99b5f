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
	"xnat/flowtable"
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

func icmpSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func (s *icmpSocket) echo(dst net.IP, id, seq uint16) error {
	m := make([]byte, 16)
	m[0] = 8
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], "xnatping")
	binary.BigEndian.PutUint16(m[2:], icmpSum(m))
	var sa unix.SockaddrInet4
	copy(sa.Addr[:], dst.To4())
	return unix.Sendto(s.fd, m, 0, &sa)
}

// icmpMsg is a received ICMP message.
type icmpMsg struct {
	src, dst  net.IP
	typ, code uint8
	id, seq   uint16
	quotedDst net.IP // errors: the quoted datagram's destination
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

var (
	_ = errors.New
	_ = syscall.ECONNREFUSED
	_ = unsafe.Sizeof(0)
	_ = dataplane.ReasonNone
)
