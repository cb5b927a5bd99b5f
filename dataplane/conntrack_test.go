package dataplane

import (
	"testing"
	"time"

	"xnat/flowtable"
)

type seg struct {
	reply bool
	flags uint8
	state flowtable.State
}

const (
	fSYN    = 0x02
	fSYNACK = 0x12
	fACK    = 0x10
	fFIN    = 0x11 // FIN with ACK
	fRST    = 0x04
)

// runTCP sends a sequence of segments between A:40000 and the remote
// server:443 through MASQUERADE and checks the connection's state after
// each, and the timeout that then applies (Linux's defaults).
func runTCP(t *testing.T, name string, segs []seg, wantAssured bool, timeouts ...time.Duration) *testbed {
	t.Helper()
	tb := newTestbed(t, masqRules, 1500, 1)
	orig := flowtable.MakeTuple(flowtable.ProtoTCP, addrA, 40000, remote, 443)
	for i, s := range segs {
		var f []byte
		in := uint16(portIn)
		if s.reply {
			f = tcpPkt(macGW, macOut0, remote, 443, addrExt, 40000, s.flags, 1, 1).bytes(t)
			in = portOut
		} else {
			f = tcpPkt(macA, macIn0, addrA, 40000, remote, 443, s.flags, 1, 1).bytes(t)
		}
		r, _ := tb.run(f, in)
		if r.Action != ActForward {
			t.Fatalf("%s: segment %d (%#x): %v %v", name, i, s.flags, r.Action, r.Reason)
		}
		fi, _, ok := tb.tab.Get(orig)
		if s.state == 0 {
			if ok {
				t.Fatalf("%s: segment %d: connection still there in %v", name, i, fi.State())
			}
			continue
		}
		if !ok {
			t.Fatalf("%s: segment %d: no connection", name, i)
		}
		if fi.State() != s.state {
			t.Fatalf("%s: segment %d (%#x, reply %v): state %v, want %v", name, i, s.flags, s.reply, fi.State(), s.state)
		}
		want := tb.tab.StateTimeout(s.state)
		if i < len(timeouts) && timeouts[i] != 0 {
			want = timeouts[i]
		}
		if fi.Expires > want || fi.Expires < want-time.Second {
			t.Errorf("%s: segment %d: expires in %v, want %v", name, i, fi.Expires, want)
		}
	}
	fi, _, ok := tb.tab.Get(orig)
	if ok && fi.Assured() != wantAssured {
		t.Errorf("%s: assured %v, want %v", name, fi.Assured(), wantAssured)
	}
	return tb
}

func TestTCPStateSequences(t *testing.T) {
	hs := []seg{{false, fSYN, flowtable.TCPSynSent}, {true, fSYNACK, flowtable.TCPSynRecv}, {false, fACK, flowtable.TCPEstablished}}
	runTCP(t, "handshake", hs, true)
	runTCP(t, "data", append(hs, seg{false, fACK | 0x08, flowtable.TCPEstablished}, seg{true, fACK, flowtable.TCPEstablished}), true)
	runTCP(t, "close from inside", append(hs,
		seg{false, fFIN, flowtable.TCPFinWait},
		seg{true, fACK, flowtable.TCPCloseWait},
		seg{true, fFIN, flowtable.TCPLastAck},
		seg{false, fACK, flowtable.TCPTimeWait}), true)
	runTCP(t, "close from outside", append(hs,
		seg{true, fFIN, flowtable.TCPFinWait},
		seg{false, fACK, flowtable.TCPCloseWait},
		seg{false, fFIN, flowtable.TCPLastAck},
		seg{true, fACK, flowtable.TCPTimeWait}), true)
	runTCP(t, "simultaneous close", append(hs,
		seg{false, fFIN, flowtable.TCPFinWait},
		seg{true, fFIN, flowtable.TCPLastAck},
		seg{false, fACK, flowtable.TCPTimeWait}), true)
	runTCP(t, "reset", append(hs, seg{true, fRST | fACK, flowtable.TCPClose}), true)
	runTCP(t, "simultaneous open", []seg{
		{false, fSYN, flowtable.TCPSynSent},
		{true, fSYN, flowtable.TCPSynSent2},
		{false, fSYNACK, flowtable.TCPSynRecv},
		{true, fSYNACK, flowtable.TCPSynRecv},
		{false, fACK, flowtable.TCPEstablished}, // SYN_RECV to ESTABLISHED with a reply seen: assured
	}, true)
	// A reset as the only answer ends the connection at once (Linux).
	runTCP(t, "refused", []seg{{false, fSYN, flowtable.TCPSynSent}, {true, fRST | fACK, 0}}, false)
	// tcp_loose picks up a connection already established, unassured
	// and timed as unacknowledged (300 s) until it is answered; as in
	// Linux, the answer itself still finds it unreplied, and the segment
	// after assures it.
	unack := 300 * time.Second
	runTCP(t, "loose pickup", []seg{{false, fACK, flowtable.TCPEstablished}, {true, fACK, flowtable.TCPEstablished}, {false, fACK, flowtable.TCPEstablished}}, true,
		unack, unack, 0)
}

func TestTCPLooseOffAndInvalid(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	tb.dp.Settings.TCPLoose.Store(false)
	r, _ := tb.run(tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fACK, 1, 1).bytes(t), portIn)
	// Untracked and INVALID, counted: the filter (policy ACCEPT) lets it
	// through, but untranslated it would carry an inside address out, so
	// it is dropped as invalid.
	if r.Action != ActDrop || r.Reason != ReasonInvalid || tb.tab.Count() != 0 {
		t.Errorf("mid-stream ACK without loose: %v, %d connections", r.Action, tb.tab.Count())
	}
	if tb.tab.TotalStats().Invalid == 0 {
		tb.dp.Pipeline(0).ct.Enter()
		tb.dp.Pipeline(0).ct.Exit()
	}
	if s := tb.tab.TotalStats(); s.Invalid != 1 {
		t.Errorf("invalid %d", s.Invalid)
	}
	// With a rule dropping INVALID, it is dropped as invalid.
	tb2 := newTestbed(t, "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n"+masqRules, 1500, 1)
	tb2.dp.Settings.TCPLoose.Store(false)
	r, _ = tb2.run(tcpPkt(macA, macIn0, addrA, 40000, remote, 443, fACK, 1, 1).bytes(t), portIn)
	if r.Action != ActDrop || r.Reason != ReasonInvalid {
		t.Errorf("INVALID with a drop rule: %v %v", r.Action, r.Reason)
	}
}

func TestTCPReopenAfterTimeWait(t *testing.T) {
	hs := []seg{{false, fSYN, flowtable.TCPSynSent}, {true, fSYNACK, flowtable.TCPSynRecv}, {false, fACK, flowtable.TCPEstablished},
		{false, fFIN, flowtable.TCPFinWait}, {true, fFIN, flowtable.TCPLastAck}, {false, fACK, flowtable.TCPTimeWait},
		{false, fSYN, flowtable.TCPSynSent}}
	runTCP(t, "reopen", hs, false)
}

func TestUDPBecomesStream(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	orig := flowtable.MakeTuple(flowtable.ProtoUDP, addrA, 5000, remote, 7000)
	out := udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t)
	back := udpPkt(macGW, macOut0, remote, 7000, addrExt, 5000).bytes(t)
	tb.run(out, portIn)
	fi, _, _ := tb.tab.Get(orig)
	if fi.State() != flowtable.UDP || !fi.Unreplied() || fi.Expires > 30*time.Second {
		t.Fatalf("new: %v unreplied %v expires %v", fi.State(), fi.Unreplied(), fi.Expires)
	}
	tb.run(back, portOut)
	tb.run(out, portIn)
	fi, _, _ = tb.tab.Get(orig)
	if fi.State() != flowtable.UDP || fi.Unreplied() || fi.Assured() {
		t.Fatalf("replied, young: %v unreplied %v assured %v", fi.State(), fi.Unreplied(), fi.Assured())
	}
	// Two seconds on, traffic both ways makes it a stream, assured, with
	// the stream timeout (Linux since 5.x).
	tb.dp.start = tb.dp.start.Add(-3 * time.Second)
	tb.run(out, portIn)
	fi, _, _ = tb.tab.Get(orig)
	if fi.State() != flowtable.UDPStream || !fi.Assured() || fi.Expires <= 30*time.Second {
		t.Fatalf("stream: %v assured %v expires %v", fi.State(), fi.Assured(), fi.Expires)
	}
}

func TestTwoCoresReplyOnOtherCore(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 2)
	r, out := tb.runOn(0, udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	ext := uint16(decode(t, out).udp.SrcPort)
	r, out = tb.runOn(1, udpPkt(macGW, macOut0, remote, 7000, addrExt, ext).bytes(t), portOut)
	expect(t, r, ActForward, portIn)
	ipEq(t, "reply dst", decode(t, out).ip.DstIP, addrA)
	// Core 1 allocates from its own slice of the pool.
	r, out = tb.runOn(1, udpPkt(macB, macIn0, addrB, 5000, remote, 7000).bytes(t), portIn)
	expect(t, r, ActForward, portOut)
	if p := decode(t, out).udp.SrcPort; p < 33280 {
		t.Errorf("core 1 allocated %d, outside its slice", p)
	}
}

func TestDeletedConnectionStartsAnew(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	f := udpPkt(macA, macIn0, addrA, 5000, remote, 7000).bytes(t)
	tb.run(f, portIn)
	orig := flowtable.MakeTuple(flowtable.ProtoUDP, addrA, 5000, remote, 7000)
	if !tb.tab.Delete(orig) {
		t.Fatal("delete")
	}
	tb.run(f, portIn)
	if c := tb.dp.TotalCounters(); c.Created != 2 {
		t.Errorf("created %d after delete and a new packet", c.Created)
	}
	// The deleted one's port went back when its owner swept it.
	if s := tb.dp.Pools.Stats(); s.Released != 1 || s.PortsInUse != 1 {
		t.Errorf("pool stats %+v", s)
	}
}

func TestTableFullDropsAndCounts(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	if err := tb.tab.SetMax(3); err != nil {
		t.Fatal(err)
	}
	// Three established, assured connections fill the table.
	for i := range 3 {
		sp := uint16(41000 + i)
		tb.run(tcpPkt(macA, macIn0, addrA, sp, remote, 443, fSYN, 1, 0).bytes(t), portIn)
		tb.run(tcpPkt(macGW, macOut0, remote, 443, addrExt, sp, fSYNACK, 1, 2).bytes(t), portOut)
		tb.run(tcpPkt(macA, macIn0, addrA, sp, remote, 443, fACK, 2, 2).bytes(t), portIn)
	}
	r, _ := tb.run(tcpPkt(macA, macIn0, addrA, 42000, remote, 443, fSYN, 1, 0).bytes(t), portIn)
	if r.Action != ActDrop || r.Reason != ReasonTableFull {
		t.Fatalf("fourth connection: %v %v", r.Action, r.Reason)
	}
	// The three keep working.
	for i := range 3 {
		r, _ := tb.run(tcpPkt(macGW, macOut0, remote, 443, addrExt, uint16(41000+i), fACK, 3, 2).bytes(t), portOut)
		expect(t, r, ActForward, portIn)
	}
	if n, _ := tb.tab.FullEvents(); n != 1 {
		t.Errorf("table-full events %d", n)
	}
	// Unassured ones are evicted instead (early drop).
	tb2 := newTestbed(t, masqRules, 1500, 1)
	tb2.tab.SetMax(3)
	for i := range 4 {
		r, _ := tb2.run(udpPkt(macA, macIn0, addrA, uint16(5000+i), remote, 7000).bytes(t), portIn)
		expect(t, r, ActForward, portOut)
	}
	if s := tb2.tab.TotalStats(); s.EarlyDrop != 1 || tb2.tab.Count() != 3 {
		t.Errorf("early_drop %d count %d", s.EarlyDrop, tb2.tab.Count())
	}
}

// The paced sweep takes a core's share once per sweepPass, in the
// batches' own time: small steps carry over, a long gap is capped.
func TestSweepDuePacing(t *testing.T) {
	var p Pipeline
	const share = 1000 // one record due per millisecond
	p.nowNs = 400_000
	if got := p.sweepDue(share); got != 0 {
		t.Fatalf("0.4 ms in: %d due, want 0", got)
	}
	p.nowNs = 1_200_000 // the 0.4 ms carried over counts
	if got := p.sweepDue(share); got != 1 {
		t.Fatalf("1.2 ms in: %d due, want 1", got)
	}
	total := 1
	for p.nowNs < sweepPass {
		p.nowNs += 70_000
		total += p.sweepDue(share)
	}
	if total < share-1 || total > share+1 {
		t.Errorf("one pass took %d records of %d", total, share)
	}
	p.nowNs += 10 * sweepPass // back from a long idle: capped
	if got := p.sweepDue(1_000_000); got != sweepMax {
		t.Errorf("after a gap: %d, want %d", got, sweepMax)
	}
	if got := p.sweepDue(1_000_000); got != 0 {
		t.Errorf("right after the capped sweep: %d, want 0", got)
	}
	// Days without a batch, at the largest share: one pass is due, and
	// share × elapsed does not overflow into a negative budget.
	p.nowNs += 1_000_000 * sweepPass
	if got := p.sweepDue(10_000_000); got != sweepMax {
		t.Errorf("after days: %d, want %d", got, sweepMax)
	}
	// A small share after a gap: its whole pass once, then nothing.
	p.nowNs += 10 * sweepPass
	if got := p.sweepDue(100); got != 100 {
		t.Errorf("small share after a gap: %d, want 100", got)
	}
	if got := p.sweepDue(100); got != 0 {
		t.Errorf("small share right after its pass: %d, want 0", got)
	}
	p.nowNs -= 5 // a clock reading behind the last sweep: nothing due
	if got := p.sweepDue(share); got != 0 {
		t.Errorf("clock behind: %d", got)
	}
}

// TestQuietAgreesWithTrack holds the established path's shortcut to the
// tracker: for every state, flag word, direction and TCP flag set, a
// packet quiet calls quiet is one track finds valid and leaves the status
// word as it was. It also checks that the shortcut covers the steady
// states it is for.
func TestQuietAgreesWithTrack(t *testing.T) {
	tab, err := flowtable.New(flowtable.Config{Capacity: 64, Cores: 1})
	if err != nil {
		t.Fatal(err)
	}
	now := tab.Now()
	const born = 100
	nf := flowtable.NewFlow{
		Orig:   flowtable.MakeTuple(flowtable.ProtoUDP, 1, 1, 2, 2),
		Reply:  flowtable.MakeTuple(flowtable.ProtoUDP, 2, 2, 1, 1),
		Status: uint32(flowtable.UDP),
		Aux:    makeAux(0, born),
	}
	ref, res := tab.Core(0).Insert(&nf, now)
	if res != flowtable.Inserted {
		t.Fatal(res)
	}
	f := tab.Flow(ref)
	set := func(st uint32) {
		for old := f.Status(); !f.UpdateStatus(old, st); old = f.Status() {
		}
	}
	caller := []uint32{0, flowtable.FlagSeenReply, flowtable.FlagAssured, flowtable.FlagSeenReply | flowtable.FlagAssured,
		flowtable.FlagSeenReply | flowtable.FlagAssured | flowtable.FlagSrcNAT | flowtable.FlagDstNAT}
	quiets := 0
	for st := flowtable.State(1); st < 16; st++ {
		for _, fl := range caller {
			for _, dir := range []flowtable.Dir{flowtable.DirOrig, flowtable.DirReply} {
				for _, kind := range []uint8{kUDP, kTCP} {
					proto := uint8(flowtable.ProtoUDP)
					if kind == kTCP {
						proto = flowtable.ProtoTCP
					}
					for flags := 0; flags < 256; flags++ {
						if kind == kUDP && flags > 0 {
							break
						}
						status := uint32(st) | fl
						if kind == kTCP && st == flowtable.TCPEstablished && fl&flowtable.FlagSeenReply == 0 {
							status |= flowtable.TimeoutUnacked // as picked up mid-stream
						}
						set(status)
						before := f.Status()
						if !quiet(before, dir, kind, uint8(flags)) {
							continue
						}
						quiets++
						for _, sec := range []uint32{born, born + udpStreamAfter + 3} {
							set(status)
							v, seen := track(f, dir, proto, uint8(flags), now, sec)
							if v != ctOK || f.Status() != before || seen != (before&flowtable.FlagSeenReply != 0) {
								t.Fatalf("state %v flags %#x dir %v kind %d tcp %#x at %d s: quiet, but track gave %v, status %#x → %#x",
									st, fl, dir, kind, flags, sec, v, before, f.Status())
							}
						}
					}
				}
			}
		}
	}
	// The steady states the shortcut is for.
	for _, c := range []struct {
		status uint32
		dir    flowtable.Dir
		kind   uint8
		flags  uint8
	}{
		{uint32(flowtable.UDPStream) | flowtable.FlagSeenReply | flowtable.FlagAssured, flowtable.DirReply, kUDP, 0},
		{uint32(flowtable.UDP), flowtable.DirOrig, kUDP, 0},
		{uint32(flowtable.TCPEstablished) | flowtable.FlagSeenReply | flowtable.FlagAssured, flowtable.DirOrig, kTCP, fACK},
		{uint32(flowtable.TCPEstablished) | flowtable.FlagSeenReply | flowtable.FlagAssured, flowtable.DirReply, kTCP, fACK | 0x08},
		{uint32(flowtable.TCPEstablished), flowtable.DirOrig, kTCP, fACK},
	} {
		if !quiet(c.status, c.dir, c.kind, c.flags) {
			t.Errorf("status %#x dir %v kind %d flags %#x: not quiet", c.status, c.dir, c.kind, c.flags)
		}
	}
	t.Logf("%d quiet cases checked", quiets)
}

// TestQuietSet holds the established path's table to quiet for every
// status word's tracked bits, direction, protocol and TCP flag set.
func TestQuietSet(t *testing.T) {
	if flowtable.FlagSeenReply|flowtable.FlagAssured|0xf != 0x3f {
		t.Fatal("the state, SEEN_REPLY and ASSURED are no longer the status word's low six bits")
	}
	for status := uint32(0); status < 1<<12; status++ {
		for _, dir := range []flowtable.Dir{flowtable.DirOrig, flowtable.DirReply} {
			for _, kind := range []uint8{kUDP, kTCP} {
				for flags := 0; flags < 256; flags++ {
					if kind == kUDP && flags > 0 {
						break
					}
					got := quietSet[quietIndex(status, dir, quietBase(kind, uint8(flags), true))]
					if quietSet[quietIndex(status, dir, quietBase(kind, uint8(flags), false))] {
						t.Fatalf("status %#x dir %v kind %d flags %#x: quiet with IP options", status, dir, kind, flags)
					}
					if want := quiet(status, dir, kind, uint8(flags)); got != want {
						t.Fatalf("status %#x dir %v kind %d flags %#x: table %v, quiet %v", status, dir, kind, flags, got, want)
					}
				}
			}
		}
	}
}
