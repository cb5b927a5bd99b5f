package dataplane

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"xnat/dataplane/header"
	"xnat/flowtable"
	"xnat/portalloc"
)

// runCores calls every core's Idle, as workers without traffic do, until
// stop is closed.
func runCores(dp *Dataplane, stop chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for c := range dp.Cores() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				dp.Pipeline(c).Idle()
				time.Sleep(100 * time.Microsecond)
			}
		}()
	}
	return &wg
}

// TestCommit: connections committed from an HA peer's cache keep their
// external ports, each on the core that owns its port, with the port
// counted in that core's allocator and steered to xnat on the box's own
// address; their packets then flow both ways through the established
// translation, and a second commit finds them there.
func TestCommit(t *testing.T) {
	const cores = 2
	tab, err := flowtable.New(flowtable.Config{Capacity: 4096, Cores: cores, Seed: 5, Acct: true, Proto: true})
	if err != nil {
		t.Fatal(err)
	}
	// The steering's layout: per slot, three protocol classes of 65536
	// 16-bit counts, two to a word.
	steer, err := portalloc.NewSteering(make([]uint32, 3*65536/2), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := steer.SetAddrs(map[uint32]uint32{addrExt: 0}); err != nil {
		t.Fatal(err)
	}
	pools := NewPools(cores, nil)
	pools.SetSteering(steer)
	env, err := NewEnv(EnvConfig{Snapshot: testSnapshot(1500), Inside: []string{"in0"}, Outside: []string{"out0"}, Model: model(t, masqRules), Pools: pools})
	if err != nil {
		t.Fatal(err)
	}
	tb := &testbed{t: t, tab: tab, dp: New(tab, pools, NewSettings(), env)}
	id, _, ok := pools.owner(flowtable.ProtoTCP, addrExt, 20000)
	if !ok {
		t.Fatal("no pool for the outside address")
	}
	allocs := (*pools.list.Load())[id-1].allocs
	lo0, hi0 := allocs[0].Slice()
	lo1, hi1 := allocs[1].Slice()

	type conn struct {
		proto       uint8
		sport, ext  uint16
		established bool
	}
	conns := []conn{
		{flowtable.ProtoTCP, 40000, lo0 + 7, true},
		{flowtable.ProtoTCP, 40001, hi1 - 3, true},
		{flowtable.ProtoUDP, 40002, lo1 + 11, false},
		{flowtable.ProtoUDP, 40003, hi0 - 1, false},
	}
	var flows []flowtable.NewFlow
	for _, c := range conns {
		o := flowtable.MakeTuple(c.proto, addrA, c.sport, remote, 80)
		r := flowtable.MakeTuple(c.proto, remote, 80, addrExt, c.ext)
		st := uint32(flowtable.UDPStream)
		if c.proto == flowtable.ProtoTCP {
			st = uint32(flowtable.TCPEstablished)
		}
		flows = append(flows, flowtable.NewFlow{Orig: o, Reply: r, Status: st | flowtable.FlagSeenReply | flowtable.FlagAssured | flowtable.FlagSrcNAT})
	}
	// An endpoint in no pool of this box's, and a connection without NAT.
	foreign := flows[0]
	foreign.Orig.SrcPort, foreign.Reply.Dst = 40100, ip4(192, 0, 2, 99)
	plain := flowtable.NewFlow{Orig: flowtable.MakeTuple(flowtable.ProtoUDP, addrA, 40200, remote, 53), Status: uint32(flowtable.UDP)}
	plain.Reply = plain.Orig.Reverse()
	flows = append(flows, foreign, plain)

	stop := make(chan struct{})
	wg := runCores(tb.dp, stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := tb.dp.Commit(ctx, flows)
	if err != nil || res != (CommitResult{Committed: 5, NoPool: 1}) {
		t.Fatalf("commit: %+v %v", res, err)
	}
	res, err = tb.dp.Commit(ctx, flows)
	close(stop)
	wg.Wait()
	if err != nil || res != (CommitResult{Exists: 5, NoPool: 1}) {
		t.Fatalf("second commit: %+v %v", res, err)
	}
	for _, c := range conns {
		core := 0
		if c.ext >= lo1 && c.ext <= hi1 {
			core = 1
		}
		if n := allocs[core].Uses(c.proto, addrExt, c.ext); n != 1 {
			t.Fatalf("port %d: %d uses on core %d", c.ext, n, core)
		}
		if n := allocs[1-core].Uses(c.proto, addrExt, c.ext); n != 0 {
			t.Fatalf("port %d: %d uses on core %d, not its owner", c.ext, n, 1-core)
		}
		if n := steer.Count(addrExt, c.proto, c.ext); n != 1 {
			t.Fatalf("port %d: steering count %d", c.ext, n)
		}
		var out, back []byte
		if c.proto == flowtable.ProtoTCP {
			// Mid-stream data both ways, on either core: forwarded with the
			// committed port, never refused as out of window.
			out = tcpPkt(macA, macIn0, addrA, c.sport, remote, 80, header.TCPAck|header.TCPPsh, 1000, 5000).bytes(t)
			back = tcpPkt(macGW, macOut0, remote, 80, addrExt, c.ext, header.TCPAck, 5000, 1010).bytes(t)
		} else {
			out = udpPkt(macA, macIn0, addrA, c.sport, remote, 80).bytes(t)
			back = udpPkt(macGW, macOut0, remote, 80, addrExt, c.ext).bytes(t)
		}
		for core := range cores {
			r, f := tb.runOn(core, out, portIn)
			expect(t, r, ActForward, portOut)
			d := decode(t, f)
			sport := uint16(0)
			if d.tcp != nil {
				sport = uint16(d.tcp.SrcPort)
			} else {
				sport = uint16(d.udp.SrcPort)
			}
			ipEq(t, "outbound source", d.ip.SrcIP, addrExt)
			if sport != c.ext {
				t.Fatalf("outbound from %d left with port %d, committed %d", c.sport, sport, c.ext)
			}
			r, f = tb.runOn(core, back, portOut)
			expect(t, r, ActForward, portIn)
			d = decode(t, f)
			ipEq(t, "reply destination", d.ip.DstIP, addrA)
		}
	}
	if n := tb.dp.TotalCounters().Created; n != 0 {
		t.Fatalf("%d connections created by the packets of committed ones", n)
	}
}

// TestCommitCancelled: with no core running, Commit gives up when its
// context ends, and the cores drop the job at their next batch.
func TestCommitCancelled(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	nf := flowtable.NewFlow{Orig: flowtable.MakeTuple(flowtable.ProtoUDP, addrA, 1, remote, 2), Status: uint32(flowtable.UDP)}
	nf.Reply = nf.Orig.Reverse()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := tb.dp.Commit(ctx, []flowtable.NewFlow{nf}); err == nil {
		t.Fatal("commit without running cores returned no error")
	}
	tb.dp.Pipeline(0).Idle()
	if tb.dp.Pipeline(0).commitq.Load() != nil || tb.tab.Count() != 0 {
		t.Fatal("a cancelled commit was carried out")
	}
}

// TestCommitConcurrentTraffic: a commit while cores forward packets
// (run it with -race).
func TestCommitConcurrentTraffic(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 2)
	var flows []flowtable.NewFlow
	for i := range 2000 {
		o := flowtable.MakeTuple(flowtable.ProtoUDP, addrA, uint16(10000+i), remote, 53)
		r := flowtable.MakeTuple(flowtable.ProtoUDP, remote, 53, addrExt, uint16(20000+i))
		flows = append(flows, flowtable.NewFlow{Orig: o, Reply: r, Status: uint32(flowtable.UDP) | flowtable.FlagSrcNAT})
	}
	var stopped atomic.Bool
	var wg sync.WaitGroup
	for c := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := udpPkt(macB, macIn0, addrB, uint16(c+1), remote, 9).bytes(t)
			buf := make([]byte, len(p), 2048)
			out := make([]Result, 1)
			for !stopped.Load() {
				copy(buf, p)
				tb.dp.Pipeline(c).Process([][]byte{buf[:len(p)]}, []int{len(p)}, []uint16{portIn}, out)
			}
		}()
	}
	res, err := tb.dp.Commit(context.Background(), flows)
	stopped.Store(true)
	wg.Wait()
	if err != nil || res.Committed != len(flows) {
		t.Fatalf("commit: %+v %v", res, err)
	}
	if n := tb.tab.Count(); n != len(flows)+2 {
		t.Fatalf("%d connections in the table, want %d", n, len(flows)+2)
	}
}

// TestCommitReplaces: a connection its packets created on this box
// before the commit, with a port of its own, gives way to the peer's
// record: its packets then leave with the peer's port.
func TestCommitReplaces(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	out := udpPkt(macA, macIn0, addrA, 40500, remote, 80).bytes(t)
	r, f := tb.run(out, portIn)
	expect(t, r, ActForward, portOut)
	if p := uint16(decode(t, f).udp.SrcPort); p != 40500 {
		t.Fatalf("created with port %d", p)
	}
	nf := flowtable.NewFlow{Orig: flowtable.MakeTuple(flowtable.ProtoUDP, addrA, 40500, remote, 80),
		Reply: flowtable.MakeTuple(flowtable.ProtoUDP, remote, 80, addrExt, 41000), Status: uint32(flowtable.UDP) | flowtable.FlagSrcNAT}
	same := nf
	same.Orig.SrcPort, same.Reply.DstPort = 40501, 40501
	tb.run(udpPkt(macA, macIn0, addrA, 40501, remote, 80).bytes(t), portIn)
	stop := make(chan struct{})
	wg := runCores(tb.dp, stop)
	res, err := tb.dp.Commit(context.Background(), []flowtable.NewFlow{nf, same})
	close(stop)
	wg.Wait()
	if err != nil || res != (CommitResult{Committed: 1, Replaced: 1, Exists: 1}) {
		t.Fatalf("commit: %+v %v", res, err)
	}
	r, f = tb.run(out, portIn)
	expect(t, r, ActForward, portOut)
	if p := uint16(decode(t, f).udp.SrcPort); p != 41000 {
		t.Fatalf("after the commit the flow leaves with port %d, want the peer's 41000", p)
	}
}
