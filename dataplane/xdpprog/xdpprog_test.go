package xdpprog

import (
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"xnat/internal/netns"
	"xnat/ring"
)

// frame builds test frames.
type frame struct {
	vlan      bool
	etherType uint16
	src, dst  [4]byte
	proto     byte
	ihl       int // words; 5 if 0
	version   byte
	fragOff   uint16
	mf        bool
	l4        []byte
	cut       int // bytes to cut off the end
}

func (f frame) bytes() []byte {
	b := make([]byte, 12, 128)
	copy(b[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(b[6:12], []byte{2, 0, 0, 0, 0, 1})
	if f.vlan {
		b = append(b, 0x81, 0x00, 0x00, 0x07)
	}
	et := f.etherType
	if et == 0 {
		et = 0x0800
	}
	b = binary.BigEndian.AppendUint16(b, et)
	if et == 0x0800 {
		ihl := f.ihl
		if ihl == 0 {
			ihl = 5
		}
		v := f.version
		if v == 0 {
			v = 4
		}
		ip := make([]byte, max(ihl*4, 20))
		ip[0] = v<<4 | byte(ihl&0xf)
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)+len(f.l4)))
		frag := f.fragOff
		if f.mf {
			frag |= 0x2000
		}
		binary.BigEndian.PutUint16(ip[6:], frag)
		ip[8], ip[9] = 64, f.proto
		copy(ip[12:16], f.src[:])
		copy(ip[16:20], f.dst[:])
		b = append(b, ip...)
		b = append(b, f.l4...)
	} else {
		b = append(b, make([]byte, 46)...)
	}
	if len(b) < 14 {
		return b
	}
	return b[:len(b)-f.cut]
}

func ports(sport, dport uint16, n int) []byte {
	l4 := make([]byte, max(n, 4))
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	return l4[:n]
}

func icmpEcho(typ byte, id uint16) []byte {
	l4 := make([]byte, 16)
	l4[0] = typ
	binary.BigEndian.PutUint16(l4[4:], id)
	return l4
}

// icmpError embeds the IPv4 header of a datagram the box sent and the
// first 8 bytes of its payload.
func icmpError(typ byte, innerProto byte, innerL4 []byte) []byte {
	inner := frame{proto: innerProto, src: local, dst: remote, l4: innerL4}.bytes()[14:]
	return append([]byte{typ, 0, 0, 0, 0, 0, 0, 0}, inner...)
}

var (
	local  = [4]byte{10, 0, 0, 1}
	remote = [4]byte{192, 0, 2, 9}
)

func newFilter(t *testing.T) *Filter {
	t.Helper()
	netns.RequireRoot(t)
	f, err := NewFilter(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.SetLocals([][4]byte{local, {10, 0, 0, 2}}); err != nil {
		t.Fatal(err)
	}
	var tcp, udp, icmp PortSet
	tcp.AddRange(40000, 40009)
	udp.Add(5353)
	icmp.Add(777)
	for _, s := range []struct {
		p   Proto
		set *PortSet
	}{{TCP, &tcp}, {UDP, &udp}, {ICMP, &icmp}} {
		if err := f.SetPorts(s.p, s.set); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func load(t *testing.T, f *Filter) *Program {
	t.Helper()
	p, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// runCase runs one frame and checks the verdict and that exactly the
// expected counters moved by one.
func runCase(t *testing.T, p *Program, name string, b []byte, wantRet uint32, want ...int) {
	t.Helper()
	before, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	ret, err := p.Run(b)
	if err != nil {
		t.Fatalf("%s: run: %v", name, err)
	}
	after, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var exp [NumCounters]uint64
	for _, c := range want {
		exp[c] = 1
	}
	for i := range after.Counters {
		if d := after.Counters[i] - before.Counters[i]; d != exp[i] {
			t.Errorf("%s: counter %d moved by %d, want %d (ret %d)", name, i, d, exp[i], ret)
		}
	}
	if ret != wantRet {
		t.Errorf("%s: verdict %d, want %d", name, ret, wantRet)
	}
}

// TestBranches runs the program with BPF_PROG_TEST_RUN on a crafted
// frame for every branch. No socket is registered, so every packet meant
// for xnat is passed and counted as a failed redirect as well as by the
// reason it was meant for xnat.
func TestBranches(t *testing.T) {
	f := newFilter(t)
	p := load(t, f)
	fwd := []int{CtrToXnatForward, CtrRedirectFailed}
	loc := []int{CtrToXnatLocal, CtrRedirectFailed}
	pl := []int{CtrPassLocal}
	bad := []int{CtrPassMalformed}
	other := []int{CtrPassNotIPv4}
	for _, c := range []struct {
		name string
		b    []byte
		want []int
	}{
		{"arp", frame{etherType: 0x0806}.bytes(), other},
		{"ipv6", frame{etherType: 0x86dd}.bytes(), other},
		{"vlan arp", frame{vlan: true, etherType: 0x0806}.bytes(), other},
		{"forward udp", frame{proto: 17, src: remote, dst: [4]byte{8, 8, 8, 8}, l4: ports(1, 53, 8)}.bytes(), fwd},
		{"forward vlan", frame{vlan: true, proto: 6, src: remote, dst: [4]byte{8, 8, 4, 4}, l4: ports(1, 443, 20)}.bytes(), fwd},
		{"forward gre", frame{proto: 47, src: remote, dst: [4]byte{8, 8, 4, 4}}.bytes(), fwd},
		{"forward l4 cut short", frame{proto: 6, src: remote, dst: [4]byte{8, 8, 4, 4}, l4: ports(1, 2, 2)}.bytes(), fwd},
		{"local tcp pool port", frame{proto: 6, src: remote, dst: local, l4: ports(80, 40005, 20)}.bytes(), loc},
		{"local tcp pool edge", frame{proto: 6, src: remote, dst: local, l4: ports(80, 40009, 20)}.bytes(), loc},
		{"local tcp other port", frame{proto: 6, src: remote, dst: local, l4: ports(50000, 22, 20)}.bytes(), pl},
		{"local tcp next to pool", frame{proto: 6, src: remote, dst: local, l4: ports(50000, 40010, 20)}.bytes(), pl},
		{"second local address", frame{proto: 17, src: remote, dst: [4]byte{10, 0, 0, 2}, l4: ports(53, 5353, 8)}.bytes(), loc},
		{"local udp set port", frame{proto: 17, src: remote, dst: local, l4: ports(53, 5353, 8)}.bytes(), loc},
		{"local udp other port", frame{proto: 17, src: remote, dst: local, l4: ports(53, 53, 8)}.bytes(), pl},
		{"local udp port in tcp set", frame{proto: 17, src: remote, dst: local, l4: ports(53, 40001, 8)}.bytes(), pl},
		{"local vlan tcp", frame{vlan: true, proto: 6, src: remote, dst: local, l4: ports(80, 40000, 20)}.bytes(), loc},
		{"local ip options", frame{ihl: 6, proto: 6, src: remote, dst: local, l4: ports(80, 40001, 20)}.bytes(), loc},
		{"local max ip options", frame{ihl: 15, proto: 17, src: remote, dst: local, l4: ports(80, 5353, 8)}.bytes(), loc},
		{"echo reply set id", frame{proto: 1, src: remote, dst: local, l4: icmpEcho(0, 777)}.bytes(), loc},
		{"echo reply other id", frame{proto: 1, src: remote, dst: local, l4: icmpEcho(0, 778)}.bytes(), pl},
		{"echo request set id", frame{proto: 1, src: remote, dst: local, l4: icmpEcho(8, 777)}.bytes(), loc},
		{"echo request other id", frame{proto: 1, src: remote, dst: local, l4: icmpEcho(8, 1)}.bytes(), pl},
		{"icmp timestamp", frame{proto: 1, src: remote, dst: local, l4: icmpEcho(13, 777)}.bytes(), pl},
		{"unreachable about nat udp", frame{proto: 1, src: remote, dst: local, l4: icmpError(3, 17, ports(5353, 53, 8))}.bytes(), loc},
		{"unreachable about own udp", frame{proto: 1, src: remote, dst: local, l4: icmpError(3, 17, ports(9999, 53, 8))}.bytes(), pl},
		{"time exceeded about nat tcp", frame{proto: 1, src: remote, dst: local, l4: icmpError(11, 6, ports(40002, 80, 8))}.bytes(), loc},
		{"param problem about own tcp", frame{proto: 1, src: remote, dst: local, l4: icmpError(12, 6, ports(22, 80, 8))}.bytes(), pl},
		{"unreachable about nat ping", frame{proto: 1, src: remote, dst: local, l4: icmpError(3, 1, icmpEcho(8, 777)[:8])}.bytes(), loc},
		{"unreachable about own ping", frame{proto: 1, src: remote, dst: local, l4: icmpError(3, 1, icmpEcho(8, 3)[:8])}.bytes(), pl},
		{"unreachable about gre", frame{proto: 1, src: remote, dst: local, l4: icmpError(3, 47, make([]byte, 8))}.bytes(), pl},
		{"unreachable inner cut", frame{proto: 1, src: remote, dst: local, l4: icmpError(3, 17, ports(5353, 53, 8)), cut: 4}.bytes(), bad},
		{"unreachable inner header cut", frame{proto: 1, src: remote, dst: local, l4: icmpError(3, 17, ports(5353, 53, 8)), cut: 20}.bytes(), bad},
		{"local gre", frame{proto: 47, src: remote, dst: local, l4: make([]byte, 8)}.bytes(), pl},
		{"local non-first fragment", frame{proto: 17, src: remote, dst: local, fragOff: 100, l4: make([]byte, 8)}.bytes(), loc},
		{"local last fragment", frame{proto: 6, src: remote, dst: local, fragOff: 1, l4: make([]byte, 8)}.bytes(), loc},
		{"local first fragment other port", frame{proto: 17, src: remote, dst: local, mf: true, l4: ports(1, 53, 8)}.bytes(), pl},
		{"local first fragment set port", frame{proto: 17, src: remote, dst: local, mf: true, l4: ports(1, 5353, 8)}.bytes(), loc},
		{"ethernet only", frame{etherType: 0x0800}.bytes()[:14], bad},
		{"vlan tag cut", append(frame{etherType: 0x0806}.bytes()[:12], 0x81, 0x00, 0x00)[:15], bad},
		{"ipv4 header cut", frame{proto: 17, src: remote, dst: local, l4: ports(1, 5353, 8)}.bytes()[:30], bad},
		{"ip version 6 in ipv4", frame{version: 6, proto: 17, src: remote, dst: local, l4: ports(1, 5353, 8)}.bytes(), bad},
		{"ihl 4", frame{ihl: 4, proto: 17, src: remote, dst: local}.bytes(), bad},
		{"ihl past the frame", frame{ihl: 15, proto: 17, src: remote, dst: local}.bytes()[:14+40], bad},
		{"local tcp ports cut", frame{proto: 6, src: remote, dst: local, l4: ports(1, 40000, 3)}.bytes(), bad},
		{"local icmp cut", frame{proto: 1, src: remote, dst: local, l4: icmpEcho(0, 777)[:6]}.bytes(), bad},
	} {
		runCase(t, p, c.name, c.b, xdpPass, c.want...)
	}

	// The maps are live: removing the address makes the same frame a
	// forwarded one, emptying the set makes a pool port a local one.
	b := frame{proto: 6, src: remote, dst: local, l4: ports(80, 40005, 20)}.bytes()
	if err := f.SetLocals([][4]byte{{10, 0, 0, 2}}); err != nil {
		t.Fatal(err)
	}
	runCase(t, p, "address removed", b, xdpPass, fwd...)
	if err := f.SetLocals([][4]byte{local}); err != nil {
		t.Fatal(err)
	}
	runCase(t, p, "address back", b, xdpPass, loc...)
	if err := f.SetPorts(TCP, &PortSet{}); err != nil {
		t.Fatal(err)
	}
	runCase(t, p, "tcp set emptied", b, xdpPass, pl...)
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Redirected() != 0 || st.Passed() == 0 || st.RedirectFailed() == 0 {
		t.Fatalf("summary: redirected %d passed %d failed %d", st.Redirected(), st.Passed(), st.RedirectFailed())
	}
}

func TestPortSet(t *testing.T) {
	var s PortSet
	s.AddRange(65530, 65535)
	s.Add(0)
	for _, p := range []uint16{0, 65530, 65535} {
		if !s.Has(p) {
			t.Errorf("missing %d", p)
		}
	}
	for _, p := range []uint16{1, 65529} {
		if s.Has(p) {
			t.Errorf("has %d", p)
		}
	}
}

// vethPair is namespace a (a0 10.0.1.2) and namespace b (b0 10.0.1.1,
// where the program is attached), with IPv4 forwarding off in b.
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

// TestRedirectVerdict registers a bound AF_XDP socket for queue 0 and
// checks that BPF_PROG_TEST_RUN now returns XDP_REDIRECT for the frames
// meant for xnat and still XDP_PASS for the others.
func TestRedirectVerdict(t *testing.T) {
	f := newFilter(t)
	p := load(t, f)
	_, b, b0 := vethPair(t)
	var u *ring.UMEM
	if err := b.Do(func() error {
		var err error
		u, err = ring.Open(ring.Config{NumFrames: 64, FillSize: 16, CompletionSize: 16, RxSize: 16, TxSize: 16}, ring.Endpoint{Ifindex: b0})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := p.Register(0, u.Socket(0).FD()); err != nil {
		t.Fatal(err)
	}
	runCase(t, p, "forward", frame{proto: 17, src: remote, dst: [4]byte{8, 8, 8, 8}, l4: ports(1, 53, 8)}.bytes(), xdpRedirect, CtrToXnatForward)
	runCase(t, p, "local pool", frame{proto: 6, src: remote, dst: local, l4: ports(80, 40003, 20)}.bytes(), xdpRedirect, CtrToXnatLocal)
	runCase(t, p, "local other", frame{proto: 6, src: remote, dst: local, l4: ports(80, 22, 20)}.bytes(), xdpPass, CtrPassLocal)
	if err := p.Unregister(0); err != nil {
		t.Fatal(err)
	}
	runCase(t, p, "unregistered", frame{proto: 6, src: remote, dst: local, l4: ports(80, 40003, 20)}.bytes(), xdpPass, CtrToXnatLocal, CtrRedirectFailed)
}

// TestOnVeth attaches the program to a veth end in a namespace with an
// AF_XDP socket on its queue, and sends real traffic from the peer: ARP
// and UDP to the box's own service reach the kernel; UDP to a NAT port
// and UDP to be forwarded reach the socket, not the kernel. Close
// detaches within its bound.
func TestOnVeth(t *testing.T) {
	f := newFilter(t)
	a, b, b0 := vethPair(t)
	if err := f.SetLocals([][4]byte{{10, 0, 1, 1}}); err != nil {
		t.Fatal(err)
	}
	var udp PortSet
	udp.Add(6000)
	if err := f.SetPorts(UDP, &udp); err != nil {
		t.Fatal(err)
	}
	p := load(t, f)
	var mode AttachMode
	var u *ring.UMEM
	var svc *net.UDPConn
	if err := b.Do(func() error {
		var err error
		if mode, err = p.Attach(b0, AttachAuto); err != nil {
			return err
		}
		if u, err = ring.Open(ring.Config{NumFrames: 256, FillSize: 64, CompletionSize: 64, RxSize: 64, TxSize: 64}, ring.Endpoint{Ifindex: b0}); err != nil {
			return err
		}
		svc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 0, 1, 1), Port: 7777})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	defer svc.Close()
	t.Logf("attached in %v mode", mode)
	if mode != AttachNative {
		t.Errorf("veth took XDP in %v mode; native expected on Linux 6.x", mode)
	}
	if err := p.Register(0, u.Socket(0).FD()); err != nil {
		t.Fatal(err)
	}
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

// TestReplaceLeftover leaves a program attached through netlink with
// its file descriptor closed — what a crashed run leaves — and checks
// that Attach replaces it; a program held by a live BPF link is not
// replaced (ErrBusy); Close leaves the interface clean.
func TestReplaceLeftover(t *testing.T) {
	f := newFilter(t)
	_, b, b0 := vethPair(t)
	var leftoverID uint32
	if err := b.Do(func() error {
		lp, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.XDP, License: "MIT",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
		})
		if err != nil {
			return err
		}
		defer lp.Close()
		l, err := netlink.LinkByIndex(b0)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(l, lp.FD(), unix.XDP_FLAGS_SKB_MODE)
	}); err != nil {
		t.Fatal(err)
	}
	leftoverID = progID(t, b, b0)
	if leftoverID == 0 {
		t.Fatal("leftover program not attached")
	}
	p := load(t, f)
	if err := b.Do(func() error { _, err := p.Attach(b0, AttachAuto); return err }); err != nil {
		t.Fatalf("attach over a leftover: %v", err)
	}
	if p.Replaced() != leftoverID {
		t.Fatalf("Replaced() = %d, want %d", p.Replaced(), leftoverID)
	}
	id, err := p.ID()
	if err != nil {
		t.Fatal(err)
	}
	if got := progID(t, b, b0); got != id {
		t.Fatalf("interface runs program %d, ours is %d", got, id)
	}
	q := load(t, f)
	err = b.Do(func() error { _, err := q.Attach(b0, AttachAuto); return err })
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
	if _, err := p.Attach(b0, AttachAuto); !errors.Is(err, ErrClosed) {
		t.Fatalf("Attach after Close: %v", err)
	}
}
