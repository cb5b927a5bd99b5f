package xdpprog

import (
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"xnat/internal/netns"
	"xnat/ring"
)

func vethPair(t *testing.T) (a, b *netns.NS, b0 int) {
	t.Helper()
	tp := netns.New(t)
	a, b = tp.NS("a"), tp.NS("b")
	tp.Veth(a, "a0", b, "b0")
	for _, err := range []error{
		b.SetSysctl("net.ipv4.ip_forward", "0"),
		a.AddAddr("a0", "10.0.1.2/24"),
		b.AddAddr("b0", "10.0.1.1/24"),
		a.AddRoute("10.0.9.0/24", "10.0.1.1", "a0"),
		a.SetTxChecksum("a0", false),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	var err error
	b0, err = b.Index("b0")
	if err != nil {
		t.Fatal(err)
	}
	return a, b, b0
}

// registerXSK opens an AF_XDP socket of frames frames (rings of a
// quarter of that) on queue 0 of interface b0 in ns, and registers it
// with p for queue 0; it is closed when the test ends.
func registerXSK(t *testing.T, p *Program, ns *netns.NS, b0, frames int) *ring.UMEM {
	t.Helper()
	var u *ring.UMEM
	if err := ns.Do(func() error {
		var err error
		q := uint32(frames / 4)
		u, err = ring.Open(ring.Config{NumFrames: uint32(frames), FillSize: q, CompletionSize: q, RxSize: q, TxSize: q}, ring.Endpoint{Ifindex: b0})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	if err := p.Register(0, u.Socket(0).FD()); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestRedirectVerdict registers a bound AF_XDP socket for queue 0 and
// checks that BPF_PROG_TEST_RUN now returns XDP_REDIRECT for the frames
// meant for xnat and still XDP_PASS for the others.
func TestRedirectVerdict(t *testing.T) {
	f := newFilter(t)
	p := load(t, f)
	_, b, b0 := vethPair(t)
	registerXSK(t, p, b, b0, 64)
	runCase(t, p, "forward", frame{proto: 17, src: remote, dst: [4]byte{8, 8, 8, 8}, l4: ports(1, 53, 8)}.bytes(), xdpRedirect, CtrToXnatForward)
	runCase(t, p, "local pool", frame{proto: 6, src: remote, dst: local, l4: ports(80, 40003, 20)}.bytes(), xdpRedirect, CtrToXnatLocal)
	runCase(t, p, "local other", frame{proto: 6, src: remote, dst: local, l4: ports(80, 22, 20)}.bytes(), xdpPass, CtrPassLocal)
	if err := p.Unregister(0); err != nil {
		t.Fatal(err)
	}
	runCase(t, p, "unregistered", frame{proto: 6, src: remote, dst: local, l4: ports(80, 40003, 20)}.bytes(), xdpDrop, CtrToXnatLocal, CtrRedirectFailed)
}

// TestOnVeth attaches the program to a veth end in a namespace with an
// AF_XDP socket on its queue, and sends real traffic from the peer: ARP
// and UDP to the box's own service reach the kernel; UDP to a NAT port
// and UDP to be forwarded reach the socket, not the kernel. Close
// detaches within its bound.
func TestOnVeth(t *testing.T) {
	f := newFilter(t)
	a, b, b0 := vethPair(t)
	if err := f.SetLocals([]Local{{[4]byte{10, 0, 1, 1}, 2}}); err != nil {
		t.Fatal(err)
	}
	addUse(t, f, 2, UDP, 6000, 1)
	p := load(t, f)
	var mode AttachMode
	var svc *net.UDPConn
	if err := b.Do(func() error {
		var err error
		if mode, err = p.Attach(b0, AttachAuto, false); err != nil {
			return err
		}
		svc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 0, 1, 1), Port: 7777})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	t.Logf("attached in %v mode", mode)
	if mode != AttachNative {
		t.Errorf("veth took XDP in %v mode; native expected on Linux 6.x", mode)
	}
	u := registerXSK(t, p, b, b0, 256)
	send := func(dst string, port int) {
		t.Helper()
		if err := a.Do(func() error {
			c, err := net.Dial("udp4", net.JoinHostPort(dst, itoa(port)))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("xnat"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// To the box's own service: ARP is resolved by b's kernel, the
	// datagram is passed to it.
	send("10.0.1.1", 7777)
	buf := make([]byte, 64)
	_ = svc.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := svc.Read(buf); err != nil || string(buf[:n]) != "xnat" {
		t.Fatalf("the kernel's service got %q, %v", buf[:n], err)
	}
	send("10.0.1.1", 6000) // a NAT port
	send("10.0.9.9", 5000) // to be forwarded
	descs := make([]ring.Desc, 8)
	got := 0
	deadline := time.Now().Add(3 * time.Second)
	var dports []uint16
	for got < 2 && time.Now().Before(deadline) {
		n := u.Socket(0).Receive(descs)
		for _, d := range descs[:n] {
			fr := u.Frame(d)
			if len(fr) >= 38 && fr[23] == 17 {
				dports = append(dports, binary.BigEndian.Uint16(fr[36:38]))
			}
		}
		u.Release(descs[:n])
		got += n
		if n == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if len(dports) != 2 || dports[0] != 6000 || dports[1] != 5000 {
		t.Fatalf("socket received UDP to ports %v, want [6000 5000]", dports)
	}
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("counters %v", st.Counters)
	if st.Counters[CtrPassNotIPv4] == 0 || st.Counters[CtrPassLocal] != 1 || st.Counters[CtrToXnatLocal] != 1 ||
		st.Counters[CtrToXnatForward] != 1 || st.Redirected() != 2 || st.RedirectFailed() != 0 {
		t.Fatalf("counters %v", st.Counters)
	}
	if err := b.Do(p.Close); err != nil {
		t.Fatal(err)
	}
	if attached(t, b, b0) {
		t.Fatal("program still attached after Close")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func attached(t *testing.T, ns *netns.NS, ifindex int) bool {
	t.Helper()
	l, err := ns.Netlink().LinkByIndex(ifindex)
	if err != nil {
		t.Fatal(err)
	}
	x := l.Attrs().Xdp
	return x != nil && x.Attached
}

func progID(t *testing.T, ns *netns.NS, ifindex int) uint32 {
	t.Helper()
	l, err := ns.Netlink().LinkByIndex(ifindex)
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil {
		return x.ProgId
	}
	return 0
}

// attachNetlink attaches prog to ifindex through netlink in generic
// mode, as other tools (and crashed runs of older tools) leave programs.
func attachNetlink(t *testing.T, ns *netns.NS, ifindex int, prog *ebpf.Program) uint32 {
	t.Helper()
	if err := ns.Do(func() error {
		l, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(l, prog.FD(), unix.XDP_FLAGS_SKB_MODE)
	}); err != nil {
		t.Fatal(err)
	}
	id := progID(t, ns, ifindex)
	if id == 0 {
		t.Fatal("program not attached through netlink")
	}
	return id
}

// TestReplaceLeftover: another program's XDP program is not replaced
// unless asked (ErrForeign, the program stays); asked, it is, and
// Replaced reports it. An xnat program left attached through netlink is
// replaced without asking. A program held by a live BPF link is never
// replaced (ErrBusy). Close leaves the interface clean.
func TestReplaceLeftover(t *testing.T) {
	f := newFilter(t)
	_, b, b0 := vethPair(t)
	other, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "other_xdp", Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	otherID := attachNetlink(t, b, b0, other)
	other.Close()
	if a, ok, err := queryIn(b, b0); err != nil || !ok || a.Name != "other_xdp" || a.ID != otherID || a.Mode != AttachGeneric {
		t.Fatalf("Query: %+v %v %v", a, ok, err)
	}
	p := load(t, f)
	err = b.Do(func() error { _, err := p.Attach(b0, AttachAuto, false); return err })
	if !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), "other_xdp") {
		t.Fatalf("attach over another program's XDP program: %v, want ErrForeign naming it", err)
	}
	if got := progID(t, b, b0); got != otherID {
		t.Fatalf("a refused attach changed the program from %d to %d", otherID, got)
	}
	if err := b.Do(func() error { _, err := p.Attach(b0, AttachAuto, true); return err }); err != nil {
		t.Fatalf("attach with replace: %v", err)
	}
	if p.Replaced() != otherID {
		t.Fatalf("Replaced() = %d, want %d", p.Replaced(), otherID)
	}
	id, err := p.ID()
	if err != nil {
		t.Fatal(err)
	}
	if got := progID(t, b, b0); got != id {
		t.Fatalf("interface runs program %d, ours is %d", got, id)
	}
	q := load(t, f)
	err = b.Do(func() error { _, err := q.Attach(b0, AttachAuto, true); return err })
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("attach over a live link: %v, want ErrBusy", err)
	}
	if got := progID(t, b, b0); got != id {
		t.Fatalf("a refused attach changed the program to %d", got)
	}
	start := time.Now()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > detachTimeout {
		t.Fatalf("Close took %v", d)
	}
	if attached(t, b, b0) {
		t.Fatal("program still attached after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := p.Attach(b0, AttachAuto, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("Attach after Close: %v", err)
	}

	// An xnat program left attached through netlink is replaced.
	left := load(t, f)
	leftID := attachNetlink(t, b, b0, left.prog)
	left.Close()
	r := load(t, f)
	if err := b.Do(func() error { _, err := r.Attach(b0, AttachAuto, false); return err }); err != nil {
		t.Fatalf("attach over a leftover xnat program: %v", err)
	}
	if r.Replaced() != leftID {
		t.Fatalf("Replaced() = %d, want the leftover %d", r.Replaced(), leftID)
	}
	if err := b.Do(r.Close); err != nil {
		t.Fatal(err)
	}
}

func queryIn(ns *netns.NS, ifindex int) (a Attached, ok bool, err error) {
	err = ns.Do(func() error {
		var qerr error
		a, ok, qerr = Query(ifindex)
		return qerr
	})
	return a, ok, err
}

// TestUnservedQueueDrops: a veth with two queues, the program attached
// with a socket on queue 0 only, and the kernel forwarding (ip_forward=1):
// datagrams to be forwarded that arrive on queue 1 are dropped and
// counted, never forwarded by the kernel untranslated; those on queue 0
// reach the socket. With the program detached the same datagrams do
// reach the far host, so the topology itself forwards.
func TestUnservedQueueDrops(t *testing.T) {
	netns.RequireRoot(t)
	tp := netns.New(t)
	a, b, c := tp.NS("a"), tp.NS("b"), tp.NS("c")
	for _, err := range []error{
		tp.AddVeth(a, "a0", b, "b0", 2),
		tp.AddVeth(b, "b1", c, "c0", 1),
		b.SetSysctl("net.ipv4.ip_forward", "1"),
		a.AddAddr("a0", "10.0.1.2/24"),
		b.AddAddr("b0", "10.0.1.1/24"),
		b.AddAddr("b1", "10.0.2.1/24"),
		c.AddAddr("c0", "10.0.2.2/24"),
		a.AddRoute("10.0.2.0/24", "10.0.1.1", "a0"),
		c.AddRoute("10.0.1.0/24", "10.0.2.1", "c0"),
		a.SetTxChecksum("a0", false),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	b0, err := b.Index("b0")
	if err != nil {
		t.Fatal(err)
	}
	var sink *net.UDPConn
	if err := c.Do(func() error {
		var err error
		sink, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 0, 2, 2), Port: 9000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	// send sends one datagram from each of n source ports (flows spread
	// over a0's two transmit queues, which are b0's receive queues).
	send := func(n int) {
		t.Helper()
		if err := a.Do(func() error {
			for i := range n {
				conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 0, 1, 2), Port: 20000 + i}, &net.UDPAddr{IP: net.IPv4(10, 0, 2, 2), Port: 9000})
				if err != nil {
					return err
				}
				_, err = conn.Write([]byte("flow"))
				conn.Close()
				if err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	received := func(wait time.Duration) int {
		n := 0
		buf := make([]byte, 64)
		for {
			_ = sink.SetReadDeadline(time.Now().Add(wait))
			if _, err := sink.Read(buf); err != nil {
				return n
			}
			n++
		}
	}
	// The kernel alone forwards them.
	const flows = 32
	send(flows)
	if n := received(500 * time.Millisecond); n != flows {
		t.Fatalf("without xnat's program the far host got %d of %d datagrams", n, flows)
	}

	f := newFilter(t)
	if err := f.SetLocals([]Local{{[4]byte{10, 0, 1, 1}, NoSlot}, {[4]byte{10, 0, 2, 1}, NoSlot}}); err != nil {
		t.Fatal(err)
	}
	p := load(t, f)
	if err := b.Do(func() error {
		_, err := p.Attach(b0, AttachAuto, false)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	u := registerXSK(t, p, b, b0, 256)
	send(flows)
	if n := received(500 * time.Millisecond); n != 0 {
		t.Fatalf("%d datagrams were forwarded by the kernel, untranslated, while xnat's program was attached", n)
	}
	descs := make([]ring.Desc, 64)
	onSocket := 0
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		n := u.Socket(0).Receive(descs)
		u.Release(descs[:n])
		onSocket += n
		u.Socket(0).Fill()
		if n == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d flows: %d on queue 0's socket, %d dropped for want of a socket on queue 1", flows, onSocket, st.RedirectFailed())
	if st.RedirectFailed() == 0 || onSocket == 0 {
		t.Fatalf("counters %v, %d on the socket: want flows on both queues", st.Counters, onSocket)
	}
	if uint64(onSocket)+st.RedirectFailed() != st.Counters[CtrToXnatForward] {
		t.Fatalf("%d on the socket and %d dropped, of %d meant for xnat", onSocket, st.RedirectFailed(), st.Counters[CtrToXnatForward])
	}
}
