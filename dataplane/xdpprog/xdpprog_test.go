package xdpprog

import (
	"encoding/binary"
	"errors"
	"sync/atomic"
	"testing"

	"xnat/internal/netns"
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

// icmpError embeds the IPv4 header of a datagram the box sent from src
// and the first 8 bytes of its payload.
func icmpError(typ byte, src [4]byte, innerProto byte, innerL4 []byte) []byte {
	inner := frame{proto: innerProto, src: src, dst: remote, l4: innerL4}.bytes()[14:]
	return append([]byte{typ, 0, 0, 0, 0, 0, 0, 0}, inner...)
}

var (
	local  = [4]byte{10, 0, 0, 1}   // slot 0
	local2 = [4]byte{10, 0, 0, 2}   // slot 1
	local3 = [4]byte{10, 0, 0, 3}   // no slot
	local4 = [4]byte{10, 0, 0, 4}   // every port xnat's
	local5 = [4]byte{10, 1, 0, 1}   // no slot, outside 10.0.0.0/24
	bcast  = [4]byte{10, 1, 0, 255} // a directed broadcast of one of the box's subnets
	remote = [4]byte{192, 0, 2, 9}
)

// addUse changes the use count of (slot, proto, port) by delta, as the
// port allocators do.
func addUse(t *testing.T, f *Filter, slot uint32, proto Proto, port uint16, delta int32) {
	t.Helper()
	words := f.UseCounts()
	i := (int(slot)*SlotBytes + int(proto)*ProtoCountBytes + int(port)*2) / 4
	shift := 16 * uint(port&1)
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		shift = 16 - shift
	}
	atomic.AddUint32(&words[i], uint32(delta)<<shift)
}

func newFilter(t *testing.T) *Filter {
	t.Helper()
	netns.RequireRoot(t)
	f, err := NewFilter(Options{MaxSlots: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.SetLocals([]Local{{local, 0}, {local2, 1}, {local3, NoSlot}, {local4, SlotAll}, {local5, NoSlot}, {bcast, SlotBroadcast}}); err != nil {
		t.Fatal(err)
	}
	for p := uint16(40000); p <= 40009; p++ {
		addUse(t, f, 0, TCP, p, 1)
	}
	addUse(t, f, 0, TCP, 40005, 1) // two holders
	addUse(t, f, 1, UDP, 5353, 1)
	addUse(t, f, 0, ICMP, 777, 1)
	return f
}

func set(ports ...uint16) *PortSet {
	var s PortSet
	for _, p := range ports {
		s.Add(p)
	}
	return &s
}

// testGroups are the DNAT groups of TestBranches: TCP 2222 on every
// address of 10.0.0.0/24, UDP 5000-5001 on 10.0.0.1, everything on
// 10.0.0.3 (a 1:1 DNAT), TCP 8080 on any address outside 10.0.0.0/24.
var testGroups = []Group{
	{Addr: 0x0a000000, Mask: 0xffffff00, Proto: 6, Ports: set(2222)},
	{Addr: 0x0a000001, Mask: 0xffffffff, Proto: 17, Ports: set(5000, 5001)},
	{Addr: 0x0a000003, Mask: 0xffffffff},
	{Addr: 0x0a000000, Mask: 0xffffff00, Invert: true, Proto: 6, Ports: set(8080)},
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

type branchCase struct {
	name string
	b    []byte
	want []int
}

// TestBranches runs the program with BPF_PROG_TEST_RUN on a crafted
// frame for every branch. No socket is registered, so every packet meant
// for xnat is dropped and counted as a failed redirect as well as by the
// reason it was meant for xnat; every other one is passed.
func TestBranches(t *testing.T) {
	f := newFilter(t)
	p := load(t, f)
	if err := p.SetDNAT(testGroups); err != nil {
		t.Fatal(err)
	}
	fwd := []int{CtrToXnatForward, CtrRedirectFailed}
	loc := []int{CtrToXnatLocal, CtrRedirectFailed}
	pl := []int{CtrPassLocal}
	pb := []int{CtrPassBroadcast}
	bad := []int{CtrPassMalformed}
	other := []int{CtrPassNotIPv4}
	pv := []int{CtrPassVLAN}
	tcp := func(dst [4]byte, dport uint16) []byte {
		return frame{proto: 6, src: remote, dst: dst, l4: ports(50000, dport, 20)}.bytes()
	}
	udp := func(dst [4]byte, dport uint16) []byte {
		return frame{proto: 17, src: remote, dst: dst, l4: ports(53, dport, 8)}.bytes()
	}
	icmp := func(dst [4]byte, l4 []byte) []byte { return frame{proto: 1, src: remote, dst: dst, l4: l4}.bytes() }
	for _, c := range []branchCase{
		{"arp", frame{etherType: 0x0806}.bytes(), other},
		{"ipv6", frame{etherType: 0x86dd}.bytes(), other},
		{"vlan arp", frame{vlan: true, etherType: 0x0806}.bytes(), pv},
		{"802.1ad", frame{etherType: 0x88a8}.bytes(), pv},
		{"forward udp", udp([4]byte{8, 8, 8, 8}, 53), fwd},
		{"vlan, to forward", frame{vlan: true, proto: 6, src: remote, dst: [4]byte{8, 8, 4, 4}, l4: ports(1, 443, 20)}.bytes(), pv},
		{"forward gre", frame{proto: 47, src: remote, dst: [4]byte{8, 8, 4, 4}}.bytes(), fwd},
		{"forward l4 cut short", frame{proto: 6, src: remote, dst: [4]byte{8, 8, 4, 4}, l4: ports(1, 2, 2)}.bytes(), fwd},
		{"forward non-first fragment", frame{proto: 17, src: remote, dst: [4]byte{8, 8, 8, 8}, fragOff: 100, l4: make([]byte, 8)}.bytes(), fwd},
		{"forward non-first fragment at udp 68's place", frame{proto: 17, src: remote, dst: [4]byte{8, 8, 8, 8}, fragOff: 100, l4: ports(67, 68, 8)}.bytes(), fwd},
		{"forward udp to 67", udp([4]byte{8, 8, 8, 8}, 67), fwd},
		{"forward udp cut short", frame{proto: 17, src: remote, dst: [4]byte{8, 8, 8, 8}, l4: ports(67, 68, 3)}.bytes(), fwd},

		// The kernel's whatever the address: multicast, the limited
		// broadcast, DHCP to a client.
		{"dhcp offer to an address not yet the box's", frame{proto: 17, src: remote, dst: [4]byte{10, 9, 9, 9}, l4: ports(67, 68, 8)}.bytes(), pl},
		{"dhcp offer with ip options", frame{ihl: 7, proto: 17, src: remote, dst: [4]byte{10, 9, 9, 9}, l4: ports(67, 68, 8)}.bytes(), pl},
		{"limited broadcast", udp([4]byte{255, 255, 255, 255}, 68), pb},
		{"limited broadcast tcp", frame{proto: 6, src: remote, dst: [4]byte{255, 255, 255, 255}, l4: ports(1, 40005, 20)}.bytes(), pb},
		{"vrrp", frame{proto: 112, src: remote, dst: [4]byte{224, 0, 0, 18}, l4: make([]byte, 8)}.bytes(), pb},
		{"ospf", frame{proto: 89, src: remote, dst: [4]byte{224, 0, 0, 5}, l4: make([]byte, 8)}.bytes(), pb},
		{"multicast udp", udp([4]byte{239, 255, 255, 250}, 1900), pb},
		{"directed broadcast of a subnet", udp(bcast, 9999), pb},
		{"top of class d", udp([4]byte{239, 255, 255, 255}, 5353), pb},
		{"class e is forwarded", udp([4]byte{240, 0, 0, 1}, 5353), fwd},
		{"below class d is forwarded", udp([4]byte{223, 255, 255, 255}, 5353), fwd},

		// Use counts: per address, protocol and port.
		{"held tcp port", tcp(local, 40005), loc},
		{"held tcp port, range edge", tcp(local, 40009), loc},
		{"held tcp port, range start", tcp(local, 40000), loc},
		{"tcp port next to held ones", tcp(local, 40010), pl},
		{"tcp own service", tcp(local, 22), pl},
		{"tcp port held on another address", tcp(local2, 40005), pl},
		{"held udp port", udp(local2, 5353), loc},
		{"udp port held on another address", udp(local, 5353), pl},
		{"udp port held for tcp", udp(local, 40001), pl},
		{"address without a slot", tcp(local5, 40005), pl},
		{"address with every port", udp(local4, 9999), loc},
		{"address with every port, tcp", tcp(local4, 1), loc},
		{"address with every port, echo reply", icmp(local4, icmpEcho(0, 4242)), loc},
		{"address with every port, echo request", icmp(local4, icmpEcho(8, 4242)), pl},
		{"vlan, held port", frame{vlan: true, proto: 6, src: remote, dst: local, l4: ports(80, 40000, 20)}.bytes(), pv},
		{"ip options held port", frame{ihl: 6, proto: 6, src: remote, dst: local, l4: ports(80, 40001, 20)}.bytes(), loc},
		{"max ip options held port", frame{ihl: 15, proto: 17, src: remote, dst: local2, l4: ports(80, 5353, 8)}.bytes(), loc},

		// DNAT groups.
		{"dnat tcp port", tcp(local, 2222), loc},
		{"dnat tcp port, other address of the prefix", tcp(local2, 2222), loc},
		{"dnat tcp port, address outside the prefix", tcp(local5, 2222), pl},
		{"dnat port, other protocol", udp(local, 2222), pl},
		{"dnat neighbouring port", tcp(local, 2223), pl},
		{"dnat udp ports", udp(local, 5001), loc},
		{"dnat udp ports, other address", udp(local2, 5001), pl},
		{"dnat every protocol: gre", frame{proto: 47, src: remote, dst: local3, l4: make([]byte, 8)}.bytes(), loc},
		{"dnat every protocol: echo request", icmp(local3, icmpEcho(8, 1)), loc},
		{"dnat every protocol: tcp", tcp(local3, 1), loc},
		{"dnat inverted prefix", tcp(local5, 8080), loc},
		{"dnat inverted prefix, address inside", tcp(local, 8080), pl},

		// ICMP.
		{"echo reply held id", icmp(local, icmpEcho(0, 777)), loc},
		{"echo reply other id", icmp(local, icmpEcho(0, 778)), pl},
		{"echo reply id held on another address", icmp(local2, icmpEcho(0, 777)), pl},
		{"echo request held id", icmp(local, icmpEcho(8, 777)), pl},
		{"echo request", icmp(local2, icmpEcho(8, 1)), pl},
		{"icmp timestamp", icmp(local, icmpEcho(13, 777)), pl},
		{"unreachable about held udp", icmp(local2, icmpError(3, local2, 17, ports(5353, 53, 8))), loc},
		{"unreachable about own udp", icmp(local2, icmpError(3, local2, 17, ports(9999, 53, 8))), pl},
		{"time exceeded about held tcp", icmp(local, icmpError(11, local, 6, ports(40002, 80, 8))), loc},
		{"param problem about own tcp", icmp(local, icmpError(12, local, 6, ports(22, 80, 8))), pl},
		{"unreachable about held ping", icmp(local, icmpError(3, local, 1, icmpEcho(8, 777)[:8])), loc},
		{"unreachable about own ping", icmp(local, icmpError(3, local, 1, icmpEcho(8, 3)[:8])), pl},
		{"unreachable about a dnat connection's reply", icmp(local, icmpError(3, local, 6, ports(2222, 5555, 8))), loc},
		{"unreachable about gre", icmp(local, icmpError(3, local, 47, make([]byte, 8))), pl},
		{"unreachable inner cut", frame{proto: 1, src: remote, dst: local2, l4: icmpError(3, local2, 17, ports(5353, 53, 8)), cut: 4}.bytes(), bad},
		{"unreachable inner header cut", frame{proto: 1, src: remote, dst: local2, l4: icmpError(3, local2, 17, ports(5353, 53, 8)), cut: 20}.bytes(), bad},

		// Other protocols and fragments.
		{"local gre", frame{proto: 47, src: remote, dst: local, l4: make([]byte, 8)}.bytes(), pl},
		{"local non-first fragment", frame{proto: 17, src: remote, dst: local2, fragOff: 100, l4: ports(53, 5353, 8)}.bytes(), pl},
		{"local last fragment", frame{proto: 6, src: remote, dst: local, fragOff: 1, l4: ports(80, 40005, 8)}.bytes(), pl},
		{"local non-first fragment, every port xnat's", frame{proto: 17, src: remote, dst: local4, fragOff: 185, l4: make([]byte, 8)}.bytes(), pl},
		{"local first fragment own port", frame{proto: 17, src: remote, dst: local, mf: true, l4: ports(1, 53, 8)}.bytes(), pl},
		{"local first fragment held port", frame{proto: 17, src: remote, dst: local2, mf: true, l4: ports(1, 5353, 8)}.bytes(), loc},

		// Malformed.
		{"ethernet only", frame{etherType: 0x0800}.bytes()[:14], bad},
		{"vlan tag cut", append(frame{etherType: 0x0806}.bytes()[:12], 0x81, 0x00, 0x00)[:15], pv},
		{"ipv4 header cut", udp(local, 5353)[:30], bad},
		{"ip version 6 in ipv4", frame{version: 6, proto: 17, src: remote, dst: local, l4: ports(1, 5353, 8)}.bytes(), bad},
		{"ihl 4", frame{ihl: 4, proto: 17, src: remote, dst: local}.bytes(), bad},
		{"ihl past the frame", frame{ihl: 15, proto: 17, src: remote, dst: local}.bytes()[:14+40], bad},
		{"local tcp ports cut", frame{proto: 6, src: remote, dst: local, l4: ports(1, 40000, 3)}.bytes(), bad},
		{"local icmp cut", frame{proto: 1, src: remote, dst: local, l4: icmpEcho(0, 777)[:6]}.bytes(), bad},
	} {
		ret := uint32(xdpPass)
		if c.want[0] == CtrToXnatForward || c.want[0] == CtrToXnatLocal {
			ret = xdpDrop
		}
		runCase(t, p, c.name, c.b, ret, c.want...)
	}

	// The maps are live: removing the address makes the same frame a
	// forwarded one; a count back to 0 gives the port to the kernel; new
	// DNAT groups replace the old ones.
	b := tcp(local, 40003)
	if err := f.SetLocals([]Local{{local2, 1}}); err != nil {
		t.Fatal(err)
	}
	runCase(t, p, "address removed", b, xdpDrop, fwd...)
	if err := f.SetLocals([]Local{{local, 0}, {local2, 1}}); err != nil {
		t.Fatal(err)
	}
	runCase(t, p, "address back", b, xdpDrop, loc...)
	addUse(t, f, 0, TCP, 40003, -1)
	runCase(t, p, "count back to 0", b, xdpPass, pl...)
	addUse(t, f, 0, TCP, 40005, -1)
	runCase(t, p, "one holder of two left", tcp(local, 40005), xdpDrop, loc...)
	if err := p.SetDNAT([]Group{{Addr: 0x0a000001, Mask: 0xffffffff, Proto: 6, Ports: set(2223)}}); err != nil {
		t.Fatal(err)
	}
	runCase(t, p, "dnat group removed", tcp(local, 2222), xdpPass, pl...)
	runCase(t, p, "dnat group added", tcp(local, 2223), xdpDrop, loc...)
	runCase(t, p, "dnat groups after the first unused", udp(local, 5001), xdpPass, pl...)
	// Every group slot in use: the last one is still checked.
	many := make([]Group, MaxDNATGroups)
	for i := range many {
		many[i] = Group{Addr: 0x0a000001, Mask: 0xffffffff, Proto: 17, Ports: set(uint16(6000 + i))}
	}
	if err := p.SetDNAT(many); err != nil {
		t.Fatal(err)
	}
	runCase(t, p, "last of 64 groups", udp(local, 6000+MaxDNATGroups-1), xdpDrop, loc...)
	runCase(t, p, "past 64 groups", udp(local, 6000+MaxDNATGroups), xdpPass, pl...)
	if err := p.SetDNAT(append(many, many[0])); !errors.Is(err, ErrGroups) {
		t.Fatalf("65 groups: %v, want ErrGroups", err)
	}
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
