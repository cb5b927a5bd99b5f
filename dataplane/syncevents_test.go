package dataplane

import (
	"testing"

	"xnat/dataplane/header"
	"xnat/flowtable"
)

// TestSyncEvents: with sync on, a core reports a connection's creation,
// each change of its state or flags (not its other packets) and its
// removal, each with both tuples as they were; with sync off it reports
// nothing.
func TestSyncEvents(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	tb.dp.Settings.SweepBudget.Store(4096)
	drain := func() []SyncEvent {
		out := make([]SyncEvent, 64)
		return out[:tb.dp.DrainSync(0, out)]
	}
	syn := tcpPkt(macA, macIn0, addrA, 40000, remote, 80, header.TCPSyn, 1, 0).bytes(t)
	tb.run(syn, portIn)
	if ev := drain(); len(ev) != 0 {
		t.Fatalf("events with sync off: %+v", ev)
	}
	tb.tab.Flush()
	tb.run(udpPkt(macA, macIn0, addrA, 1, remote, 2).bytes(t), portIn) // sweeps the flushed one

	tb.dp.EnableSync()
	orig := flowtable.MakeTuple(flowtable.ProtoTCP, addrA, 40000, remote, 80)
	r, out := tb.run(syn, portIn)
	expect(t, r, ActForward, portOut)
	ext := uint16(decode(t, out).tcp.SrcPort)
	reply := flowtable.MakeTuple(flowtable.ProtoTCP, remote, 80, addrExt, ext)
	steps := []struct {
		p     []byte
		in    uint16
		kind  SyncKind
		state flowtable.State
		flags uint32
	}{
		{nil, 0, SyncNew, flowtable.TCPSynSent, 0},
		{tcpPkt(macGW, macOut0, remote, 80, addrExt, ext, header.TCPSyn|header.TCPAck, 100, 2).bytes(t), portOut, SyncUpdate, flowtable.TCPSynRecv, flowtable.FlagSeenReply},
		{tcpPkt(macA, macIn0, addrA, 40000, remote, 80, header.TCPAck, 2, 101).bytes(t), portIn, SyncUpdate, flowtable.TCPEstablished, flowtable.FlagSeenReply | flowtable.FlagAssured},
	}
	for i, s := range steps {
		if s.p != nil {
			tb.run(s.p, s.in)
		}
		ev := drain()
		if len(ev) != 1 {
			t.Fatalf("step %d: %d events %+v", i, len(ev), ev)
		}
		e := ev[0]
		if e.Kind != s.kind || e.Orig != orig || e.Reply != reply || flowtable.StatusState(e.Status) != s.state ||
			e.Status&(flowtable.FlagSeenReply|flowtable.FlagAssured) != s.flags || e.Status&flowtable.FlagSrcNAT == 0 {
			t.Fatalf("step %d: %+v", i, e)
		}
	}
	// Established traffic reports nothing.
	data := tcpPkt(macA, macIn0, addrA, 40000, remote, 80, header.TCPAck|header.TCPPsh, 2, 101).bytes(t)
	back := tcpPkt(macGW, macOut0, remote, 80, addrExt, ext, header.TCPAck, 101, 2).bytes(t)
	for range 10 {
		tb.run(data, portIn)
		tb.run(back, portOut)
	}
	if ev := drain(); len(ev) != 0 {
		t.Fatalf("established packets reported: %+v", ev)
	}
	// Deleted: the next batch's sweep reports it gone.
	if !tb.tab.Delete(orig) {
		t.Fatal("delete")
	}
	tb.run(udpPkt(macA, macIn0, addrA, 3, remote, 4).bytes(t), portIn)
	ev := drain()
	var gone, created int
	for _, e := range ev {
		switch {
		case e.Kind == SyncDestroy && e.Orig == orig && e.Reply == reply:
			gone++
		case e.Kind == SyncNew && e.Orig.Proto == flowtable.ProtoUDP:
			created++
		default:
			t.Fatalf("unexpected event %+v", e)
		}
	}
	if gone != 1 || created != 1 {
		t.Fatalf("events %+v", ev)
	}
	if tb.dp.SyncDrops() != 0 {
		t.Fatalf("drops %d", tb.dp.SyncDrops())
	}
}

// TestSyncEventsFullRing: a full ring drops and counts; reading frees it.
func TestSyncEventsFullRing(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	tb.dp.EnableSync()
	q := tb.dp.pipes[0].syncq.Load()
	k := flowtable.MakeTuple(17, 1, 2, 3, 4)
	for range syncRing + 5 {
		q.push(SyncNew, &k, &k, 0, 0)
	}
	if tb.dp.SyncDrops() != 5 {
		t.Fatalf("drops %d", tb.dp.SyncDrops())
	}
	out := make([]SyncEvent, syncRing)
	if n := tb.dp.DrainSync(0, out); n != syncRing {
		t.Fatalf("drained %d", n)
	}
	q.push(SyncNew, &k, &k, 0, 0)
	if n := tb.dp.DrainSync(0, out); n != 1 || tb.dp.DrainSync(7, out) != 0 {
		t.Fatalf("drained %d", n)
	}
}

// TestSyncEventsNoAllocs: with sync on, batches of new connections, of
// their replies (an update each) and of their removal (a destroy each)
// allocate nothing, and every event is reported.
func TestSyncEventsNoAllocs(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	tb.dp.Settings.SweepBudget.Store(4096)
	tb.dp.EnableSync()
	p := tb.dp.Pipeline(0)
	const n = 64
	const runs = 20
	var orig, back [runs + 1][n][]byte
	for r := range runs + 1 {
		for i := range n {
			orig[r][i] = udpPkt(macA, macIn0, addrA, uint16(1000+r*n+i), remote, 53).bytes(t)
		}
	}
	frames, sizes, in, out := make([][]byte, n), make([]int, n), make([]uint16, n), make([]Result, n)
	for i := range frames {
		frames[i] = make([]byte, 0, 2048)
	}
	load := func(src [n][]byte, port uint16) {
		for i := range frames {
			frames[i] = append(frames[i][:0], src[i]...)
			sizes[i], in[i] = len(src[i]), port
		}
	}
	evs := make([]SyncEvent, 4*n)
	var counts [4]int
	count := func() {
		k := tb.dp.DrainSync(0, evs)
		for _, e := range evs[:k] {
			counts[e.Kind]++
		}
	}
	r := 0
	allocs := testing.AllocsPerRun(runs, func() {
		load(orig[r], portIn)
		p.Process(frames, sizes, in, out)
		count()
		r++
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch of new connections", allocs)
	}
	if counts[SyncNew] != (runs+1)*n {
		t.Fatalf("events %v, want %d new", counts, (runs+1)*n)
	}
	// Replies: the learnt external ports.
	for r := range runs + 1 {
		for i := range n {
			fi, _, ok := tb.tab.Get(flowtable.MakeTuple(17, addrA, uint16(1000+r*n+i), remote, 53))
			if !ok {
				t.Fatal("connection missing")
			}
			back[r][i] = udpPkt(macGW, macOut0, remote, 53, addrExt, fi.Reply.DstPort).bytes(t)
		}
	}
	r = 0
	allocs = testing.AllocsPerRun(runs, func() {
		load(back[r], portOut)
		p.Process(frames, sizes, in, out)
		count()
		r++
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch of replies", allocs)
	}
	if counts[SyncUpdate] != (runs+1)*n {
		t.Fatalf("events %v, want %d updates", counts, (runs+1)*n)
	}
	// A flush: the sweeps of the next batches (replies to nothing now,
	// dropped) report every connection gone, 128 a batch at most.
	tb.tab.Flush()
	allocs = testing.AllocsPerRun(12, func() {
		load(back[0], portOut)
		p.Process(frames, sizes, in, out)
		count()
	})
	if allocs != 0 {
		t.Errorf("%v allocations in a batch that sweeps", allocs)
	}
	if counts[SyncDestroy] != (runs+1)*n {
		t.Fatalf("events %v, want %d destroyed", counts, (runs+1)*n)
	}
}

// TestSyncRingConcurrent: one core writing while the sync goroutine
// reads: every event is read once, in order, or counted as dropped.
func TestSyncRingConcurrent(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	tb.dp.EnableSync()
	q := tb.dp.pipes[0].syncq.Load()
	const total = 200000
	done := make(chan struct{})
	go func() {
		defer close(done)
		k := flowtable.MakeTuple(17, 1, 2, 3, 4)
		for i := range total {
			q.push(SyncNew, &k, &k, uint32(i), 0)
		}
	}()
	out := make([]SyncEvent, 512)
	got, last := 0, -1
	for finished := false; ; {
		select {
		case <-done:
			finished = true
		default:
		}
		n := tb.dp.DrainSync(0, out)
		for _, e := range out[:n] {
			if int(e.Status) <= last {
				t.Fatalf("event %d after %d", e.Status, last)
			}
			last = int(e.Status)
		}
		got += n
		if finished && n == 0 {
			break
		}
	}
	if uint64(got)+tb.dp.SyncDrops() != total {
		t.Fatalf("read %d + dropped %d != %d", got, tb.dp.SyncDrops(), total)
	}
}
