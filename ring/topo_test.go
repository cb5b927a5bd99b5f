package ring_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/asavie/xdp"
	"github.com/cilium/ebpf/link"

	"xnat/internal/netns"
	"xnat/ring"
)

// fwdTopo is the forwarding topology of the ring tests:
//
//	ns a: a0 10.0.1.2/24 ── veth ── ns b: b0 10.0.1.1/24   (AF_XDP socket 0, RX)
//	                                       b1 10.0.2.1/24   (AF_XDP socket 1, TX) ── veth ── ns c: c1 10.0.2.2/24
//
// b has ip_forward=0: only the test's user-space forwarder moves
// packets from b0 to b1. a and c have static neighbour entries for b's
// addresses, because the test program on b0 redirects everything,
// ARP included, to the socket.
type fwdTopo struct {
	a, b, c          *netns.NS
	b0, b1           int // ifindexes in b
	b1MAC, c1MAC     net.HardwareAddr
	prog             *xdp.Program
	attachMode       string
	srcPort, dstPort int
}

func newFwdTopo(t *testing.T) *fwdTopo {
	t.Helper()
	tp := netns.New(t)
	f := &fwdTopo{a: tp.NS("a"), b: tp.NS("b"), c: tp.NS("c"), srcPort: 4000, dstPort: 5000}
	tp.Veth(f.a, "a0", f.b, "b0")
	tp.Veth(f.b, "b1", f.c, "c1")
	var err error
	check := func(e error) {
		t.Helper()
		if e != nil {
			t.Fatal(e)
		}
	}
	check(f.b.SetSysctl("net.ipv4.ip_forward", "0"))
	check(f.a.AddAddr("a0", "10.0.1.2/24"))
	check(f.b.AddAddr("b0", "10.0.1.1/24"))
	check(f.b.AddAddr("b1", "10.0.2.1/24"))
	check(f.c.AddAddr("c1", "10.0.2.2/24"))
	check(f.a.AddRoute("10.0.2.0/24", "10.0.1.1", "a0"))
	check(f.c.AddRoute("10.0.1.0/24", "10.0.2.1", "c1"))
	// Ends sending into xnat carry full checksums.
	check(f.a.SetTxChecksum("a0", false))
	b0MAC, err := f.b.MAC("b0")
	check(err)
	f.b1MAC, err = f.b.MAC("b1")
	check(err)
	f.c1MAC, err = f.c.MAC("c1")
	check(err)
	check(f.a.AddNeigh("a0", "10.0.1.1", b0MAC))
	check(f.c.AddNeigh("c1", "10.0.2.1", f.b1MAC))
	f.b0, err = f.b.Index("b0")
	check(err)
	f.b1, err = f.b.Index("b1")
	check(err)
	return f
}

// attach loads asavie/xdp's redirect-by-queue program (libbpf's default
// AF_XDP program) and attaches it to b0 with cilium/ebpf's AttachXDP,
// native mode first, generic if the driver refuses.
func (f *fwdTopo) attach(t *testing.T) {
	t.Helper()
	prog, err := xdp.NewProgram(1)
	if err != nil {
		t.Fatalf("loading the redirect program: %v", err)
	}
	f.prog = prog
	t.Cleanup(func() { prog.Close() })
	var l link.Link
	err = f.b.Do(func() error {
		var derr error
		l, derr = link.AttachXDP(link.XDPOptions{Program: prog.Program, Interface: f.b0, Flags: link.XDPDriverMode})
		if derr == nil {
			f.attachMode = "native"
			return nil
		}
		var gerr error
		l, gerr = link.AttachXDP(link.XDPOptions{Program: prog.Program, Interface: f.b0, Flags: link.XDPGenericMode})
		if gerr == nil {
			f.attachMode = "generic"
			return nil
		}
		return errors.Join(derr, gerr)
	})
	if err != nil {
		t.Fatalf("attaching XDP to b0: %v", err)
	}
	t.Cleanup(func() { l.Close() })
}

// open opens a UMEM with sockets on b0 and b1 (queue 0), from inside b,
// and registers socket 0 with the program.
func (f *fwdTopo) open(t *testing.T, cfg ring.Config) *ring.UMEM {
	t.Helper()
	var u *ring.UMEM
	err := f.b.Do(func() error {
		var err error
		u, err = ring.Open(cfg, ring.Endpoint{Ifindex: f.b0}, ring.Endpoint{Ifindex: f.b1})
		return err
	})
	if err != nil {
		t.Fatalf("ring.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := u.Close(); err != nil {
			t.Errorf("UMEM.Close: %v", err)
		}
	})
	if f.prog != nil {
		if err := f.prog.Register(0, u.Socket(0).FD()); err != nil {
			t.Fatalf("registering the socket: %v", err)
		}
	}
	return u
}

// receiver is a UDP socket in c counting datagrams whose payload is
// intact.
type receiver struct {
	conn   *net.UDPConn
	tokens chan struct{} // one per datagram received, for the sender's window
	got    chan int      // total received, at the end
	bad    chan error
}

func (f *fwdTopo) listen(t *testing.T, window int) *receiver {
	t.Helper()
	r := &receiver{tokens: make(chan struct{}, window), got: make(chan int, 1), bad: make(chan error, 1)}
	err := f.c.Do(func() error {
		var err error
		r.conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 0, 2, 2), Port: f.dstPort})
		if err == nil {
			err = r.conn.SetReadBuffer(4 << 20)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.conn.Close() })
	for range window {
		r.tokens <- struct{}{}
	}
	return r
}

// run receives until want datagrams arrived or the deadline passes; each
// payload must be the 8-byte sequence number followed by its pattern.
func (r *receiver) run(want int, deadline time.Duration) {
	buf := make([]byte, 2048)
	n := 0
	defer func() { r.got <- n }()
	_ = r.conn.SetReadDeadline(time.Now().Add(deadline))
	for n < want {
		m, err := r.conn.Read(buf)
		if err != nil {
			return
		}
		if err := checkPayload(buf[:m]); err != nil {
			select {
			case r.bad <- err:
			default:
			}
		}
		n++
		select {
		case r.tokens <- struct{}{}:
		default:
		}
	}
}

const payloadLen = 64

func fillPayload(p []byte, seq uint64) {
	binary.BigEndian.PutUint64(p, seq)
	for i := 8; i < len(p); i++ {
		p[i] = byte(seq) + byte(i)
	}
}

func checkPayload(p []byte) error {
	if len(p) != payloadLen {
		return fmt.Errorf("payload of %d bytes, want %d", len(p), payloadLen)
	}
	seq := binary.BigEndian.Uint64(p)
	for i := 8; i < len(p); i++ {
		if p[i] != byte(seq)+byte(i) {
			return fmt.Errorf("payload of datagram %d corrupted at byte %d", seq, i)
		}
	}
	return nil
}

// send sends n datagrams from a to c's listener, never more than the
// receiver's window ahead of it.
func (f *fwdTopo) send(t *testing.T, r *receiver, n int) error {
	var conn *net.UDPConn
	err := f.a.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 0, 1, 2), Port: f.srcPort},
			&net.UDPAddr{IP: net.IPv4(10, 0, 2, 2), Port: f.dstPort})
		return err
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	p := make([]byte, payloadLen)
	for i := range n {
		select {
		case <-r.tokens:
		case <-time.After(5 * time.Second):
			return fmt.Errorf("no progress after %d datagrams sent", i)
		}
		fillPayload(p, uint64(i))
		if _, err := conn.Write(p); err != nil {
			return fmt.Errorf("sending datagram %d: %w", i, err)
		}
	}
	return nil
}

// forward rewrites a frame received on b0 for b1: Ethernet addresses
// for the hop to c, TTL decremented with the IPv4 checksum updated
// incrementally (RFC 1624).
func (f *fwdTopo) forward(p []byte) bool {
	if len(p) < 34 || p[12] != 0x08 || p[13] != 0x00 || p[22] <= 1 {
		return false
	}
	copy(p[0:6], f.c1MAC)
	copy(p[6:12], f.b1MAC)
	// HC' = ~(~HC + ~m + m'), m the 16-bit word holding TTL and protocol.
	old := uint16(p[22])<<8 | uint16(p[23])
	p[22]--
	nw := uint16(p[22])<<8 | uint16(p[23])
	sum := uint32(^binary.BigEndian.Uint16(p[24:26])) + uint32(^old) + uint32(nw)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[24:26], ^uint16(sum))
	return true
}

// buildUDP writes into p an Ethernet/IPv4/UDP frame from b1 to c's
// listener carrying payload and returns its length.
func (f *fwdTopo) buildUDP(p []byte, payload []byte) int {
	copy(p[0:6], f.c1MAC)
	copy(p[6:12], f.b1MAC)
	p[12], p[13] = 0x08, 0x00
	ip := p[14:34]
	total := 20 + 8 + len(payload)
	ip[0], ip[1] = 0x45, 0
	binary.BigEndian.PutUint16(ip[2:], uint16(total))
	ip[4], ip[5], ip[6], ip[7] = 0, 0, 0x40, 0 // id 0, DF
	ip[8], ip[9] = 64, 17
	ip[10], ip[11] = 0, 0
	copy(ip[12:16], net.IPv4(10, 0, 2, 1).To4())
	copy(ip[16:20], net.IPv4(10, 0, 2, 2).To4())
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(ip, 0)))
	udp := p[34 : 34+8+len(payload)]
	binary.BigEndian.PutUint16(udp[0:], uint16(f.srcPort))
	binary.BigEndian.PutUint16(udp[2:], uint16(f.dstPort))
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp[6], udp[7] = 0, 0
	copy(udp[8:], payload)
	pseudo := sum16(ip[12:20], 0) + 17 + uint32(len(udp))
	c := ^fold(sum16(udp, pseudo))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], c)
	return 14 + total
}

func sum16(b []byte, s uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
