package dataplane

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"

	"xnat/dataplane/header"
	"xnat/flowtable"
)

// TestFastInWindow holds the established path's window step to the
// general one: for random window states and ACK segments near them,
// fastInWindow accepts exactly when inWindow in its fast mode does, and
// then leaves the same words and timeout class as the general path
// (inWindow, the last segment's class and direction, timeoutClass); when
// it refuses, it has changed nothing.
func TestFastInWindow(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	near := func(base uint32, spread int) uint32 { return base + uint32(rng.IntN(2*spread+1)-spread) }
	accepted := 0
	for i := range 200000 {
		base := rng.Uint32()
		var w tcpWin
		for d := range 2 {
			b := base + uint32(d)*uint32(rng.IntN(1<<20))
			sd := &w.seen[d]
			sd.end = b
			sd.maxWin = uint32(rng.IntN(3)) * uint32(rng.IntN(70000))
			sd.maxEnd = near(b+sd.maxWin, 3000)
			sd.maxAck = near(b, 5000)
			sd.flags = uint32(rng.IntN(15)) | uint32(rng.IntN(64))<<4&^twfCloseIni
		}
		w.lastSeq, w.lastAck, w.lastEnd = rng.Uint32(), rng.Uint32(), rng.Uint32()
		w.last, w.retrans = rng.Uint32(), uint32(rng.IntN(5))
		dir := flowtable.Dir(rng.IntN(2))
		snd, rcv := &w.seen[dir], &w.seen[dir^1]
		seq := near(snd.end, 6000)
		s := tcpSeg{seq: seq, ack: near(rcv.end, 8000), win: uint16(rng.IntN(3) * rng.IntN(65536)), flags: fACK, index: tcpAck}
		s.end = seq + uint32(rng.IntN(3)*rng.IntN(1500))
		if rng.IntN(8) == 0 { // a retransmission of the last segment
			w.last = w.last&^(0xffff|1<<19) | uint32(s.win) | uint32(dir)<<19
			w.lastSeq, w.lastAck, w.lastEnd = s.seq, s.ack, s.end
		}
		switch rng.IntN(4) {
		case 0: // a SACK block
			s.opts = []byte{optNop, optNop, optSack, 10, 0, 0, 0, 0, 0, 0, 0, 0}
			binary.BigEndian.PutUint32(s.opts[8:], near(rcv.end, 3000))
		case 1: // an aligned timestamp alone
			s.opts = []byte{optNop, optNop, optTS, 10, 1, 2, 3, 4, 5, 6, 7, 8}
		}
		status := uint32(flowtable.TCPEstablished)
		if rng.IntN(2) == 0 {
			status |= flowtable.FlagSeenReply | flowtable.FlagAssured
		}
		tp := tcpParams{liberal: rng.IntN(8) == 0, maxRetrans: uint32(rng.IntN(5))}

		var words [flowtable.ProtoWords]uint32
		w.words(&words)
		var fast flowtable.ProtoState
		for j := range words {
			fast[j].Store(words[j])
		}
		// The segment as a frame: the TCP header (and options) behind an
		// IPv4 header, its payload length given by the IP length.
		frame := make([]byte, offL4+header.TCPMinLen+len(s.opts))
		th := header.TCP(frame[offL4:])
		th.SetSeq(s.seq)
		th.SetAck(s.ack)
		th.SetWindow(s.win)
		th.SetDataOffset(header.TCPMinLen + len(s.opts))
		copy(frame[offL4+header.TCPMinLen:], s.opts)
		ipLen := uint16(header.IPv4MinLen + header.TCPMinLen + len(s.opts) + int(s.end-s.seq))
		class, ok := fastInWindow(&fast, dir, frame, offL4, ipLen, status, &tp)

		probe := w
		want := inWindow(&probe, flowtable.TCPEstablished, dir, &s, tp.liberal, true) == winAccept
		if ok != want {
			t.Fatalf("case %d: fastInWindow %v, inWindow (fast) %v\nstate %+v\nseg %+v dir %v liberal %v", i, ok, want, w, s, dir, tp.liberal)
		}
		var got [flowtable.ProtoWords]uint32
		for j := range got {
			got[j] = fast[j].Load()
		}
		if !ok {
			if got != words {
				t.Fatalf("case %d: refused, but the words changed", i)
			}
			continue
		}
		accepted++
		slow := w
		if inWindow(&slow, flowtable.TCPEstablished, dir, &s, tp.liberal, false) != winAccept {
			t.Fatalf("case %d: the general path does not accept", i)
		}
		slow.setLastIndexDir(tcpAck, dir)
		wantClass := slow.timeoutClass(tcpAck, tp.maxRetrans)
		if status&flowtable.FlagSeenReply == 0 && wantClass == flowtable.TimeoutOfState {
			wantClass = flowtable.TimeoutUnacked
		}
		var wantWords [flowtable.ProtoWords]uint32
		slow.words(&wantWords)
		if got != wantWords || class != wantClass {
			t.Fatalf("case %d: fast words %v class %#x\nwant %v class %#x\nstate %+v\nseg %+v dir %v", i, got, class, wantWords, wantClass, w, s, dir)
		}
	}
	t.Logf("%d of 200000 segments accepted", accepted)
}

// BenchmarkFastInWindow is the established path's window step on a
// connection carrying data: each iteration a 1000-byte segment one way
// and its ACK the other, both in window (make instructions counts it
// under callgrind with scripts/instructions.sh's method by hand: two
// runs, the difference over the difference of b.N).
func BenchmarkFastInWindow(b *testing.B) {
	tab, err := flowtable.New(flowtable.Config{Capacity: 16, Cores: 1, Proto: true})
	if err != nil {
		b.Fatal(err)
	}
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	var w tcpWin
	w.seen[0] = twDir{end: 1001, maxEnd: 1001 + 65535<<7, maxWin: 65535 << 7, flags: 7 | twfScale | twfSackPerm}
	w.seen[1] = twDir{end: 5001, maxEnd: 5001 + 65535<<7, maxWin: 65535 << 7, flags: 7 | twfScale | twfSackPerm}
	var words [flowtable.ProtoWords]uint32
	w.words(&words)
	nf := flowtable.NewFlow{Orig: flowtable.MakeTuple(flowtable.ProtoTCP, 1, 1, 2, 2), Reply: flowtable.MakeTuple(flowtable.ProtoTCP, 2, 2, 3, 1),
		Status: uint32(flowtable.TCPEstablished) | flowtable.FlagSeenReply | flowtable.FlagAssured, Proto: &words}
	ref, res := c.Insert(&nf, 0)
	if res != flowtable.Inserted {
		b.Fatal(res)
	}
	ps := tab.Proto(ref)
	status := nf.Status
	tp := tcpParams{maxRetrans: 3}
	const optLen = 12 // an aligned timestamp, as most segments carry
	data := make([]byte, offL4+header.TCPMinLen+optLen+1000)
	ack := make([]byte, offL4+header.TCPMinLen+optLen)
	for _, f := range [][]byte{data, ack} {
		th := header.TCP(f[offL4:])
		th.SetDataOffset(header.TCPMinLen + optLen)
		th.SetWindow(65535)
		copy(f[offL4+header.TCPMinLen:], []byte{optNop, optNop, optTS, 10})
	}
	dth, ath := header.TCP(data[offL4:]), header.TCP(ack[offL4:])
	seq := uint32(1001)
	dth.SetAck(5001)
	ath.SetSeq(5001)
	b.ResetTimer()
	for range b.N {
		dth.SetSeq(seq)
		if _, ok := fastInWindow(ps, flowtable.DirOrig, data, offL4, uint16(len(data)-offIP), status, &tp); !ok {
			b.Fatal("data segment refused")
		}
		seq += 1000
		ath.SetAck(seq)
		if _, ok := fastInWindow(ps, flowtable.DirReply, ack, offL4, uint16(len(ack)-offIP), status, &tp); !ok {
			b.Fatal("ACK refused")
		}
	}
}

// FuzzTCPOptions: the option parsers read any bytes without a panic; a
// SYN's window scale is at most 14; options holding one aligned
// timestamp give the ACK as the SACK edge, by the scan as by the fast
// check.
func FuzzTCPOptions(f *testing.F) {
	f.Add([]byte{optNop, optNop, optTS, 10, 0, 0, 0, 1, 0, 0, 0, 2}, uint32(100))
	f.Add([]byte{2, 4, 5, 0xb4, optSackPerm, 2, optTS, 10, 0, 0, 0, 1, 0, 0, 0, 0, optNop, optWScale, 3, 7}, uint32(0))
	f.Add([]byte{optNop, optNop, optSack, 18, 0, 0, 0, 10, 0, 0, 0, 20, 0, 0, 0, 30, 0, 0, 0, 40}, uint32(5))
	f.Add([]byte{optWScale, 3, 200, optSack, 1}, uint32(1))
	f.Add([]byte{optSack, 255}, uint32(1))
	f.Fuzz(func(t *testing.T, opts []byte, ack uint32) {
		fl := synOptions(opts)
		if fl&twfScaleMsk > maxWScale {
			t.Fatalf("window scale %d", fl&twfScaleMsk)
		}
		e := sackEdge(opts, ack)
		if len(opts) == 12 && binary.BigEndian.Uint32(opts) == tsAligned && e != ack {
			t.Fatalf("timestamp options gave SACK edge %d, ACK %d", e, ack)
		}
	})
}

// TestTCPWindowTwoCores: a connection's two directions tracked at once on
// two cores, the client's data on one and the server's ACKs of what it
// has seen forwarded on the other, with no lock: no segment is INVALID
// (each window bound has one writer) and the connection stays
// ESTABLISHED. Under -race, it also shows the window words are only
// touched atomically.
func TestTCPWindowTwoCores(t *testing.T) {
	c := &tcpConv{t: t, tb: newTestbed(t, dropInvalid, 1500, 2), client: masqClient, server: masqServer}
	c.orig = flowtable.MakeTuple(flowtable.ProtoTCP, addrA, 40000, remote, 443)
	// With two cores each has its own ports: the server answers the one
	// the SYN went out with.
	r, out := c.tb.runOn(0, c.client.seg(t, fSYN, cISN, 0, cWin, 0, tcpOpt{wscale: cScale, sackPerm: true}), portIn)
	expect(t, r, ActForward, portOut)
	c.server.dport = uint16(decode(t, out).tcp.SrcPort)
	c.mustPass(c.server, fSYNACK, sISN, cISN+1, sWin, 0, tcpOpt{wscale: sScale, sackPerm: true})
	c.mustPass(c.client, fACK, cISN+1, sISN+1, cWin, 0, noOpt)
	c.mustPass(c.server, fACK, sISN+1, cISN+1, sWin, 0, noOpt)
	before := c.tb.tab.TotalStats().Invalid
	const n = 2000
	// sent: the client's next sequence number, published once its
	// segment is through; acked: the highest ACK the server's segments
	// carried through.
	var sent, acked atomic.Uint32
	var clientDone atomic.Bool
	sent.Store(cISN + 1)
	acked.Store(cISN + 1)
	errs := make(chan error, 2)
	go func() {
		defer clientDone.Store(true)
		seq := uint32(cISN + 1)
		for i := range n {
			// Within the server's window (4000 bytes past its last ACK).
			for seq+100-acked.Load() > 3000 {
				runtime.Gosched()
			}
			r, _ := c.tb.runOn(0, c.client.seg(t, fACK|0x08, seq, sISN+1, cWin, 100, noOpt), portIn)
			if r.Action != ActForward {
				errs <- fmt.Errorf("data %d: %v %v", i, r.Action, r.Reason)
				return
			}
			seq += 100
			sent.Store(seq)
		}
		errs <- nil
	}()
	go func() {
		for !clientDone.Load() {
			ack := sent.Load()
			r, _ := c.tb.runOn(1, c.server.seg(t, fACK, sISN+1, ack, sWin, 0, noOpt), portOut)
			if r.Action != ActForward {
				errs <- fmt.Errorf("ACK %d: %v %v", ack, r.Action, r.Reason)
				return
			}
			acked.Store(ack)
		}
		errs <- nil
	}()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := c.tb.tab.TotalStats().Invalid - before; got != 0 {
		t.Errorf("%d segments INVALID", got)
	}
	c.wantState(flowtable.TCPEstablished)
}

// TestNoAllocsTCPWindow: TCP segments tracked with their window allocate
// nothing, on the established path and on handle's, in window or not
// (resets at random sequence numbers), and for new connections.
func TestNoAllocsTCPWindow(t *testing.T) {
	c := handshake(t, dnatRules, masqClient, masqServer) // no filter rules: the established path runs
	p := c.tb.dp.Pipeline(0)
	batch := func(gen func(i int) []byte) ([][]byte, [][]byte, []int, []uint16) {
		orig, frames := make([][]byte, 64), make([][]byte, 64)
		sizes, in := make([]int, 64), make([]uint16, 64)
		for i := range orig {
			orig[i] = gen(i)
			frames[i] = make([]byte, len(orig[i]), 2048)
		}
		return orig, frames, sizes, in
	}
	out := make([]Result, 64)
	run := func(orig, frames [][]byte, sizes []int, in []uint16, port uint16) {
		for i := range frames {
			frames[i] = frames[i][:len(orig[i])]
			copy(frames[i], orig[i])
			sizes[i], in[i] = len(orig[i]), port
		}
		p.Process(frames, sizes, in, out)
	}
	data := func(i int) []byte {
		return c.client.seg(t, fACK|0x08, c.cseq, c.sseq, cWin, 10, tcpOpt{wscale: -1, ts: true})
	}
	rst := func(i int) []byte { return c.server.seg(t, fRST, 0x40000000+uint32(i)*7919, 0, 0, 0, noOpt) }
	fresh := func(i int) []byte {
		e := c.client
		e.sport = uint16(50000 + i)
		return e.seg(t, fSYN, cISN, 0, cWin, 0, tcpOpt{wscale: cScale, sackPerm: true})
	}
	for _, tc := range []struct {
		name   string
		gen    func(int) []byte
		port   uint16
		noFast bool
	}{
		{"in window, established path", data, portIn, false},
		{"in window, handle", data, portIn, true},
		{"resets out of window", rst, portOut, false},
		{"new connections", fresh, portIn, false},
	} {
		orig, frames, sizes, in := batch(tc.gen)
		p.noFast = tc.noFast
		run(orig, frames, sizes, in, tc.port) // the first run creates what it creates
		if n := testing.AllocsPerRun(50, func() { run(orig, frames, sizes, in, tc.port) }); n != 0 {
			t.Errorf("%s: %v allocations a batch", tc.name, n)
		}
		if tc.name == "in window, established path" && p.fastLast != 64 {
			t.Errorf("%s: %d of 64 took the established path", tc.name, p.fastLast)
		}
	}
}
