package kernel

import (
	"errors"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"xnat/dataplane/topo"
	"xnat/internal/netns"
)

func addr(s string) uint32 { return ip4(net.ParseIP(s).To4()) }

// waitFor polls the mirror's snapshot until cond holds, within a bound.
func waitFor(t *testing.T, m *Mirror, what string, cond func(*topo.Snapshot) bool) *topo.Snapshot {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		s := m.Snapshot()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot never showed %s: %+v", what, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func hasRoute(s *topo.Snapshot, dst string, gw uint32) bool {
	_, n, _ := net.ParseCIDR(dst)
	ones, _ := n.Mask.Size()
	for _, r := range s.Routes {
		if r.Dst.Addr == ip4(n.IP.To4()) && int(r.Dst.Len) == ones && r.Gateway == gw {
			return true
		}
	}
	return false
}

// neighRecorder keeps the last OnNeigh notification of every neighbour.
type neighRecorder struct {
	mu   sync.Mutex
	last map[[2]uint32]topo.Neigh
}

func (r *neighRecorder) on(n topo.Neigh, present bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[[2]uint32]topo.Neigh{}
	}
	if !present {
		n.State = 255
	}
	r.last[[2]uint32{uint32(n.IfIndex), n.IP}] = n
}

// waitNeigh waits for a notification of the neighbour that satisfies cond.
func (r *neighRecorder) wait(t *testing.T, what string, ifindex int, ip uint32, within time.Duration, cond func(topo.Neigh) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r.mu.Lock()
		n, ok := r.last[[2]uint32{uint32(ifindex), ip}]
		r.mu.Unlock()
		if ok && cond(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no notification of %s (last: %+v, %v)", what, n, ok)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func neigh(s *topo.Snapshot, ifindex int, ip uint32) (topo.Neigh, bool) {
	for _, n := range s.Neighs {
		if n.IfIndex == ifindex && n.IP == ip {
			return n, true
		}
	}
	return topo.Neigh{}, false
}

// TestMirrorFollowsKernel changes addresses, routes, neighbours and link
// state in a namespace and checks that the mirror's snapshots reflect
// each change within a bounded time, that OnChange is called for them,
// and that a snapshot already handed out never changes.
func TestMirrorFollowsKernel(t *testing.T) {
	tp := netns.New(t)
	x, y := tp.NS("x"), tp.NS("y")
	tp.Veth(x, "x0", y, "y0")
	var calls atomic.Int64
	var nr neighRecorder
	h := x.Handle()
	m, err := Start(Options{Namespace: &h, OnChange: func(*topo.Snapshot) { calls.Add(1) }, OnNeigh: nr.on})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	x0, err := x.Index("x0")
	if err != nil {
		t.Fatal(err)
	}
	mac, err := x.MAC("x0")
	if err != nil {
		t.Fatal(err)
	}
	first := waitFor(t, m, "x0 up", func(s *topo.Snapshot) bool {
		i, ok := s.Iface(x0)
		return ok && i.Up && i.Name == "x0"
	})
	firstCopy := deepCopy(first)
	if i, _ := first.IfaceByName("x0"); !reflect.DeepEqual(i.MAC[:], []byte(mac)) {
		t.Fatalf("MAC %v, want %v", i.MAC, mac)
	}
	if _, ok := first.IfaceByName("lo"); !ok {
		t.Fatal("lo missing")
	}

	must(t, x.AddAddr("x0", "10.5.0.1/24"))
	must(t, x.AddAddr("x0", "10.5.0.9/24")) // secondary
	waitFor(t, m, "addresses and connected route", func(s *topo.Snapshot) bool {
		i, _ := s.Iface(x0)
		return len(i.Addrs) == 2 && i.Addrs[0] == topo.Prefix{Addr: addr("10.5.0.1"), Len: 24} &&
			i.Addrs[1].Addr == addr("10.5.0.9") && hasRoute(s, "10.5.0.0/24", 0)
	})
	must(t, x.AddRoute("10.6.0.0/16", "10.5.0.2", "x0"))
	waitFor(t, m, "route via 10.5.0.2", func(s *topo.Snapshot) bool { return hasRoute(s, "10.6.0.0/16", addr("10.5.0.2")) })
	must(t, x.AddRoute("0.0.0.0/0", "10.5.0.2", "x0"))
	waitFor(t, m, "default route", func(s *topo.Snapshot) bool { return hasRoute(s, "0.0.0.0/0", addr("10.5.0.2")) })
	nmac := net.HardwareAddr{2, 0, 0, 0, 0, 0x42}
	// A neighbour is notified at once, without a dump.
	time.Sleep(5 * DefaultDebounce) // the route's dump is over
	dumps := m.Dumps()
	must(t, x.AddNeigh("x0", "10.5.0.2", nmac))
	nr.wait(t, "the neighbour", x0, addr("10.5.0.2"), time.Second, func(n topo.Neigh) bool {
		return n.State == topo.NeighValid && n.MAC == [6]byte(nmac)
	})
	time.Sleep(5 * DefaultDebounce)
	if m.Dumps() != dumps {
		t.Fatalf("a neighbour change made %d dumps", m.Dumps()-dumps)
	}

	must(t, x.DelRoute("10.6.0.0/16", "10.5.0.2", "x0"))
	waitFor(t, m, "route removed", func(s *topo.Snapshot) bool { return !hasRoute(s, "10.6.0.0/16", addr("10.5.0.2")) })
	must(t, x.DelAddr("x0", "10.5.0.9/24"))
	waitFor(t, m, "secondary address removed", func(s *topo.Snapshot) bool {
		i, _ := s.Iface(x0)
		return len(i.Addrs) == 1
	})
	must(t, x.SetLinkUp("x0", false))
	waitFor(t, m, "x0 down", func(s *topo.Snapshot) bool {
		i, ok := s.Iface(x0)
		return ok && !i.Up
	})
	if calls.Load() < 7 {
		t.Fatalf("OnChange called %d times", calls.Load())
	}
	if !reflect.DeepEqual(first, firstCopy) {
		t.Fatal("a snapshot handed out earlier changed")
	}
	n := calls.Load()
	must(t, m.Close())
	must(t, x.SetLinkUp("x0", true))
	time.Sleep(100 * time.Millisecond)
	if calls.Load() != n {
		t.Fatal("OnChange called after Close")
	}
	if err := m.Resolve(x0, addr("10.5.0.2")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Resolve after Close: %v", err)
	}
}

// TestResolveNeighbour asks the kernel to resolve a next hop without an
// entry and checks that the entry becomes valid with the peer's MAC
// (the kernel sent an ARP request and got the answer).
func TestResolveNeighbour(t *testing.T) {
	tp := netns.New(t)
	x, y := tp.NS("x"), tp.NS("y")
	tp.Veth(x, "x0", y, "y0")
	must(t, x.AddAddr("x0", "10.7.0.1/24"))
	must(t, y.AddAddr("y0", "10.7.0.2/24"))
	h := x.Handle()
	var nr neighRecorder
	m, err := Start(Options{Namespace: &h, OnNeigh: nr.on})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	x0, _ := x.Index("x0")
	ymac, _ := y.MAC("y0")
	if _, ok := neigh(m.Snapshot(), x0, addr("10.7.0.2")); ok {
		t.Fatal("neighbour known before resolution")
	}
	must(t, m.Resolve(x0, addr("10.7.0.2")))
	nr.wait(t, "the resolved neighbour", x0, addr("10.7.0.2"), 3*time.Second, func(n topo.Neigh) bool {
		return n.State == topo.NeighValid && n.MAC == [6]byte(ymac)
	})
	// An address nobody answers for is incomplete while the kernel
	// probes (the kernel sends no notification for that state: a dump
	// shows it), then failed, which is notified.
	must(t, m.Resolve(x0, addr("10.7.0.99")))
	s, err := Dump(x.Netlink())
	must(t, err)
	if n, ok := neigh(s, x0, addr("10.7.0.99")); !ok || n.State != topo.NeighIncomplete {
		t.Fatalf("neighbour being resolved: %+v %v", n, ok)
	}
	// The kernel gives up after mcast_solicit probes, retrans_time apart.
	nr.wait(t, "the failed resolution", x0, addr("10.7.0.99"), 6*time.Second, func(n topo.Neigh) bool {
		return n.State == topo.NeighFailed
	})
}

// TestResync injects a subscription failure: the mirror resubscribes,
// reports the failure, and keeps following the kernel.
func TestResync(t *testing.T) {
	tp := netns.New(t)
	x, y := tp.NS("x"), tp.NS("y")
	tp.Veth(x, "x0", y, "y0")
	h := x.Handle()
	errs := make(chan error, 4)
	m, err := Start(Options{Namespace: &h, OnError: func(err error) { errs <- err }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.fault <- errors.New("injected")
	if err := <-errs; err == nil {
		t.Fatal("no error reported")
	}
	if m.Resyncs() != 1 {
		t.Fatalf("resyncs %d", m.Resyncs())
	}
	x0, _ := x.Index("x0")
	must(t, x.AddAddr("x0", "10.8.0.1/24"))
	waitFor(t, m, "address after resync", func(s *topo.Snapshot) bool {
		i, _ := s.Iface(x0)
		return len(i.Addrs) == 1 && i.Addrs[0].Addr == addr("10.8.0.1")
	})
}

func TestParseLocalPorts(t *testing.T) {
	lp, err := ParseLocalPorts("32768\t60999\n", "8080,40000-40099\n")
	if err != nil {
		t.Fatal(err)
	}
	want := LocalPorts{Range: PortRange{32768, 60999}, Reserved: []PortRange{{8080, 8080}, {40000, 40099}}}
	if !reflect.DeepEqual(lp, want) {
		t.Fatalf("%+v", lp)
	}
	if lp, err := ParseLocalPorts("1024 65535", "\n"); err != nil || lp.Reserved != nil {
		t.Fatalf("empty reserved: %+v %v", lp, err)
	}
	for _, c := range [][2]string{{"1", ""}, {"a b", ""}, {"2000 1000", ""}, {"1 70000", ""}, {"1 2", "5-3"}, {"1 2", "x"}, {"1 2", "1-"}} {
		if _, err := ParseLocalPorts(c[0], c[1]); !errors.Is(err, ErrPortSyntax) {
			t.Errorf("%q %q: %v", c[0], c[1], err)
		}
	}
	cases := []struct {
		pool PortRange
		want []PortRange
	}{
		{PortRange{1024, 32767}, nil},
		{PortRange{61000, 65535}, nil},
		{PortRange{30000, 33000}, []PortRange{{32768, 33000}}},
		{PortRange{39990, 40200}, []PortRange{{39990, 39999}, {40100, 40200}}},
		{PortRange{40000, 40099}, nil},
		{PortRange{60990, 61010}, []PortRange{{60990, 60999}}},
		{PortRange{8080, 8080}, nil},
	}
	for _, c := range cases {
		if got := want.Overlap(c.pool); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Overlap(%v) = %v, want %v", c.pool, got, c.want)
		}
	}
}

// TestReadLocalPorts reads the sysctls of a namespace where they are set.
func TestReadLocalPorts(t *testing.T) {
	tp := netns.New(t)
	x := tp.NS("x")
	must(t, x.SetSysctl("net.ipv4.ip_local_port_range", "20000 30000"))
	must(t, x.SetSysctl("net.ipv4.ip_local_reserved_ports", "25000-25999,29999"))
	var lp LocalPorts
	must(t, x.Do(func() error {
		var err error
		lp, err = ReadLocalPorts()
		return err
	}))
	got := lp.Overlap(PortRange{24000, 40000})
	want := []PortRange{{24000, 24999}, {26000, 29998}, {30000, 30000}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("overlap %v, want %v (read %+v)", got, want, lp)
	}
}

func deepCopy(s *topo.Snapshot) *topo.Snapshot {
	c := &topo.Snapshot{Routes: append([]topo.Route(nil), s.Routes...), Neighs: append([]topo.Neigh(nil), s.Neighs...)}
	for _, i := range s.Ifaces {
		i.Addrs = append([]topo.Prefix(nil), i.Addrs...)
		c.Ifaces = append(c.Ifaces, i)
	}
	return c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
