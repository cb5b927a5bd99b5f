package worker

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"xnat/control/iptables"
	"xnat/dataplane"
	"xnat/dataplane/kernel"
	"xnat/dataplane/rules"
	"xnat/dataplane/topo"
	"xnat/dataplane/xdpprog"
	"xnat/flowtable"
	"xnat/internal/netns"
	"xnat/ring"
)

// bed is the worker tests' topology:
//
//	ns a: a0 10.1.0.2/24 ── veth ── ns x: x0 10.1.0.1/24 (inside)
//	                                      x1 10.2.0.1/24 (outside) ── veth ── ns c: c1 10.2.0.2/24
//
// x has ip_forward=0, so only the worker forwards; a0 and c1 send with
// full checksums (TX offload off). x has permanent neighbours for a and c,
// so no resolution is needed. nat POSTROUTING masquerades out of x1.
type bed struct {
	a, x, c *netns.NS
	dp      *dataplane.Dataplane
	filter  *xdpprog.Filter
	progs   []*xdpprog.Program
	u       *ring.UMEM
	w       *Worker
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func newBed(t *testing.T, poll ...ring.PollMode) *bed {
	return newBedConfig(t, ring.Config{Poll: append(poll, ring.PollSleep)[0], PollTimeout: 10 * time.Millisecond})
}

// newBedConfig is newBed with the UMEM's ring configuration.
func newBedConfig(t *testing.T, rcfg ring.Config) *bed {
	tp := netns.New(t)
	b := &bed{a: tp.NS("a"), x: tp.NS("x"), c: tp.NS("c")}
	tp.Veth(b.a, "a0", b.x, "x0")
	tp.Veth(b.x, "x1", b.c, "c1")
	check(t, b.x.SetSysctl("net.ipv4.ip_forward", "0"))
	check(t, b.a.AddAddr("a0", "10.1.0.2/24"))
	check(t, b.x.AddAddr("x0", "10.1.0.1/24"))
	check(t, b.x.AddAddr("x1", "10.2.0.1/24"))
	check(t, b.c.AddAddr("c1", "10.2.0.2/24"))
	check(t, b.a.AddRoute("0.0.0.0/0", "10.1.0.1", "a0"))
	check(t, b.a.SetTxChecksum("a0", false))
	check(t, b.c.SetTxChecksum("c1", false))
	aMAC, err := b.a.MAC("a0")
	check(t, err)
	cMAC, err := b.c.MAC("c1")
	check(t, err)
	check(t, b.x.AddNeigh("x0", "10.1.0.2", aMAC))
	check(t, b.x.AddNeigh("x1", "10.2.0.2", cMAC))

	model, _, err := iptables.Restore(strings.NewReader("*nat\n-A POSTROUTING -o x1 -j MASQUERADE\nCOMMIT\n"), rules.NewModel(), iptables.RestoreOptions{})
	check(t, err)
	snap, err := kernel.Dump(b.x.Netlink())
	check(t, err)
	tab, err := flowtable.New(flowtable.Config{Capacity: 4096, Cores: 1})
	check(t, err)
	pools := dataplane.NewPools(1, nil)
	env, err := dataplane.NewEnv(dataplane.EnvConfig{Snapshot: snap, Inside: []string{"x0"}, Outside: []string{"x1"}, Model: model, Pools: pools})
	check(t, err)
	b.dp = dataplane.New(tab, pools, dataplane.NewSettings(), env)

	b.filter, err = xdpprog.NewFilter(xdpprog.Options{Queues: 1})
	check(t, err)
	t.Cleanup(func() { b.filter.Close() })
	// Every port of the box's addresses is xnat's here (the daemon counts
	// the ones connections hold instead).
	check(t, b.filter.SetLocals([]xdpprog.Local{{Addr: [4]byte{10, 1, 0, 1}, Slot: xdpprog.SlotAll}, {Addr: [4]byte{10, 2, 0, 1}, Slot: xdpprog.SlotAll}}))
	ifx := []int{env.Ports[0].IfIndex, env.Ports[1].IfIndex}
	check(t, b.x.Do(func() error {
		for _, ix := range ifx {
			p, err := b.filter.Load()
			if err != nil {
				return err
			}
			b.progs = append(b.progs, p)
			if _, err := p.Attach(ix, xdpprog.AttachAuto, false); err != nil {
				return err
			}
		}
		b.u, err = ring.Open(rcfg, ring.Endpoint{Ifindex: ifx[0]}, ring.Endpoint{Ifindex: ifx[1]})
		return err
	}))
	t.Cleanup(func() {
		for _, p := range b.progs {
			p.Close()
		}
	})
	t.Cleanup(func() { b.u.Close() })
	for i, p := range b.progs {
		check(t, p.Register(0, b.u.Socket(i).FD()))
	}
	b.w, err = New(b.dp.Pipeline(0), b.u, []uint16{0, 1}, Config{CPU: -1})
	check(t, err)
	return b
}

// run runs the worker until the test ends.
func (b *bed) run(t *testing.T) {
	var wg sync.WaitGroup
	wg.Add(1)
	errc := make(chan error, 1)
	go func() {
		defer wg.Done()
		errc <- b.w.Run()
	}()
	t.Cleanup(func() {
		b.w.Stop()
		wg.Wait()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// echoServer answers every datagram on c's 10.2.0.2:port with the source
// address it saw followed by the payload.
func echoServer(t *testing.T, c *netns.NS, port int) {
	var conn *net.UDPConn
	check(t, c.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 2, 0, 2), Port: port})
		return err
	}))
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			reply := append([]byte(from.String()+"|"), buf[:n]...)
			if _, err := conn.WriteToUDP(reply, from); err != nil {
				return
			}
		}
	}()
}

// TestWorkerForwardsUDP: datagrams from a reach c masqueraded as x1's
// address and the answers come back, through the worker alone, with
// sleeping and with busy polling.
func TestWorkerForwardsUDP(t *testing.T) {
	for _, mode := range []ring.PollMode{ring.PollSleep, ring.PollBusy} {
		t.Run(mode.String(), func(t *testing.T) { testForwardsUDP(t, mode) })
	}
}

func testForwardsUDP(t *testing.T, mode ring.PollMode) {
	b := newBed(t, mode)
	echoServer(t, b.c, 7000)
	b.run(t)
	var conn *net.UDPConn
	check(t, b.a.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 1, 0, 2), Port: 40000}, &net.UDPAddr{IP: net.IPv4(10, 2, 0, 2), Port: 7000})
		return err
	}))
	defer conn.Close()
	const n = 50
	buf := make([]byte, 2048)
	for i := range n {
		msg := fmt.Appendf(nil, "datagram %d", i)
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		check(t, conn.SetReadDeadline(time.Now().Add(2*time.Second)))
		m, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: no answer: %v", i, err)
		}
		want := append([]byte("10.2.0.1:40000|"), msg...)
		if !bytes.Equal(buf[:m], want) {
			t.Fatalf("datagram %d: answer %q, want %q", i, buf[:m], want)
		}
	}
	// Counters are published at the end of every iteration.
	deadline := time.Now().Add(time.Second)
	for b.w.Stats().Tx < 2*n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	s := b.w.Stats()
	if s.Rx < 2*n || s.Tx < 2*n || s.Iterations == 0 || s.IdleWaits == 0 {
		t.Fatalf("worker stats %+v: want at least %d received and transmitted, iterations and idle waits", s, 2*n)
	}
	if s.Dropped != 0 || s.TxRefused != 0 || s.Kernel != 0 {
		t.Fatalf("worker stats %+v: nothing should be dropped", s)
	}
	c := b.dp.TotalCounters()
	if c.Created != 1 || c.Forwarded < 2*n {
		t.Fatalf("pipeline: %d connections created, %d forwarded; want 1 and at least %d", c.Created, c.Forwarded, 2*n)
	}
}

// TestWorkerStepNoAllocs: an iteration of the loop with frames flowing
// (received, processed, transmitted, completed, refilled) allocates
// nothing.
func TestWorkerStepNoAllocs(t *testing.T) {
	b := newBed(t)
	// No Go server at c (AllocsPerRun counts every goroutine's
	// allocations): c's kernel answers with ICMP port unreachable, which
	// comes back through the worker as well.
	var conn *net.UDPConn
	check(t, b.a.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(10, 2, 0, 2), Port: 7000})
		return err
	}))
	defer conn.Close()
	// Queue datagrams on the socket's RX ring before measuring; the
	// worker does not run meanwhile.
	const queued = 600
	msg := make([]byte, 100)
	for range queued {
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	before := b.w.cnt.rx
	const runs = 5
	allocs := testing.AllocsPerRun(runs, func() { b.w.step() })
	got := b.w.cnt.rx - before
	if got < (runs+1)*uint64(b.w.cfg.Batch) {
		t.Fatalf("only %d frames received during the measurement (want %d): the iterations measured were not carrying traffic", got, (runs+1)*b.w.cfg.Batch)
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per iteration with %d frames flowing, want 0", allocs, got)
	}
	if b.w.cnt.tx < got {
		t.Fatalf("%d frames transmitted of %d received", b.w.cnt.tx, got)
	}
}

// TestNewRefusesBadConfig: mismatched ports and batch sizes are refused
// before anything runs.
func TestNewRefusesBadConfig(t *testing.T) {
	b := newBed(t)
	cases := []struct {
		ports []uint16
		cfg   Config
	}{
		{[]uint16{0}, Config{CPU: -1}},
		{[]uint16{0, 0}, Config{CPU: -1}},
		{[]uint16{0, dataplane.MaxPorts}, Config{CPU: -1}},
		{[]uint16{0, 1}, Config{CPU: -1, Batch: MaxBatch + 1}},
		{[]uint16{0, 1}, Config{CPU: 1 << 20}},
	}
	for _, c := range cases {
		if _, err := New(b.dp.Pipeline(0), b.u, c.ports, c.cfg); err == nil {
			t.Errorf("New(ports %v, %+v) accepted", c.ports, c.cfg)
		}
	}
	if _, err := New(nil, b.u, []uint16{0, 1}, Config{}); err == nil {
		t.Error("New without a pipeline accepted")
	}
}

// TestWorkerIdleSweeps: with no traffic at all, an idle worker still
// expires connections (Pipeline.Idle) and gives their ports back; Stop
// ends Run within the poll timeout.
func TestWorkerIdleSweeps(t *testing.T) {
	b := newBed(t)
	check(t, b.dp.Table.SetTimeout("nf_conntrack_udp_timeout", time.Second))
	echoServer(t, b.c, 7000)
	var conn *net.UDPConn
	check(t, b.a.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(10, 2, 0, 2), Port: 7000})
		return err
	}))
	defer conn.Close()
	done := make(chan error, 1)
	go func() { done <- b.w.Run() }()
	if _, err := conn.Write([]byte("once")); err != nil {
		t.Fatal(err)
	}
	check(t, conn.SetReadDeadline(time.Now().Add(2*time.Second)))
	if _, err := conn.Read(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	if n := b.dp.Table.Count(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
	batches := b.dp.TotalCounters().Batches
	deadline := time.Now().Add(3 * time.Second)
	for b.dp.Table.Count() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle worker did not expire the connection")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := b.dp.Table.TotalStats(); st.Expired != 1 {
		t.Fatalf("expired %d, want 1", st.Expired)
	}
	if ps := b.dp.Pools.Stats(); ps.PortsInUse != 0 || ps.Released != 1 {
		t.Fatalf("ports in use %d, released %d after the expiry; want 0 and 1", ps.PortsInUse, ps.Released)
	}
	if c := b.dp.TotalCounters(); c.Batches <= batches+10 {
		t.Fatalf("%d idle batches in a second, want sweeps at every poll timeout", c.Batches-batches)
	}
	start := time.Now()
	b.w.Stop()
	select {
	case err := <-done:
		check(t, err)
	case <-time.After(time.Second):
		t.Fatal("Run did not return after Stop")
	}
	if el := time.Since(start); el > 200*time.Millisecond {
		t.Fatalf("Stop took %v with a 10 ms poll timeout", el)
	}
}

// unresolvedServer makes the dataplane forget the server's neighbour (c,
// with its address filled in, resolves it again), starts the echo server
// on 10.2.0.2:7000 and dials it from 10.1.0.2:40001.
func (b *bed) unresolvedServer(t *testing.T) (*dataplane.NeighTable, topo.Neigh, *net.UDPConn) {
	x1, err := b.x.Index("x1")
	check(t, err)
	cMAC, err := b.c.MAC("c1")
	check(t, err)
	nt := b.dp.Neighbours()
	c := topo.Neigh{IfIndex: x1, IP: 0x0a020002}
	nt.Update(c, false)
	c.MAC = [6]byte(cMAC)
	echoServer(t, b.c, 7000)
	var conn *net.UDPConn
	check(t, b.a.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 1, 0, 2), Port: 40001}, &net.UDPAddr{IP: net.IPv4(10, 2, 0, 2), Port: 7000})
		return err
	}))
	t.Cleanup(func() { conn.Close() })
	return nt, c, conn
}

// TestWorkerHoldsUntilResolved: datagrams to a next hop the dataplane has
// no address for are held in their UMEM frames (an audit finds them in
// the pipeline), sent in order once the neighbour resolves, and a frame
// still held when the worker stops goes back to the UMEM.
func TestWorkerHoldsUntilResolved(t *testing.T) {
	b := newBed(t)
	nt, c, conn := b.unresolvedServer(t)
	for i := range 3 {
		if _, err := conn.Write(fmt.Appendf(nil, "held %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for b.w.pipe.Held() < 3 && time.Now().Before(deadline) {
		b.w.step()
		time.Sleep(time.Millisecond)
	}
	if b.w.pipe.Held() != 3 || len(b.w.Held()) != 3 {
		t.Fatalf("%d frames held (%d descriptors), want 3", b.w.pipe.Held(), len(b.w.Held()))
	}
	acc, err := b.u.Audit(b.w.Held())
	check(t, err)
	if acc.Pipeline != 3 {
		t.Fatalf("audit: %+v, want 3 frames in the pipeline", acc)
	}
	c.State = topo.NeighValid
	nt.Update(c, true)
	buf := make([]byte, 2048)
	got := 0
	for got < 3 {
		if b.w.step() == 0 {
			b.w.idle()
		}
		check(t, conn.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
		n, err := conn.Read(buf)
		if err != nil {
			if time.Now().After(deadline.Add(2 * time.Second)) {
				t.Fatalf("%d answers of 3", got)
			}
			continue
		}
		if want := fmt.Sprintf("10.2.0.1:40001|held %d", got); string(buf[:n]) != want {
			t.Fatalf("answer %q, want %q", buf[:n], want)
		}
		got++
	}
	if s := b.w.Stats(); s.Held != 3 {
		t.Fatalf("worker stats %+v: want 3 held", s)
	}
	// Held when the worker stops: released to the UMEM.
	nt.Update(c, false)
	if _, err := conn.Write([]byte("never")); err != nil {
		t.Fatal(err)
	}
	for b.w.pipe.Held() < 1 && time.Now().Before(deadline.Add(4*time.Second)) {
		b.w.step()
		time.Sleep(time.Millisecond)
	}
	if b.w.pipe.Held() != 1 {
		t.Fatal("the last datagram was not held")
	}
	b.w.Stop()
	check(t, b.w.Run())
	if b.w.pipe.Held() != 0 {
		t.Fatalf("%d frames held after Run returned", b.w.pipe.Held())
	}
	acc, err = b.u.Audit(nil)
	check(t, err)
	if acc.Pipeline != 0 {
		t.Fatalf("audit after stop: %+v", acc)
	}
}
