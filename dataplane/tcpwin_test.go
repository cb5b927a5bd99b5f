package dataplane

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"xnat/dataplane/header"
	"xnat/flowtable"
)

// dropInvalid: a filter that drops INVALID packets (so that a test sees
// conntrack's verdict in the result), over dnatRules.
const dropInvalid = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n" + dnatRules

// tcpEnd is one end of a test TCP connection: the frames it sends.
type tcpEnd struct {
	srcMAC, dstMAC [6]byte
	src, dst       uint32
	sport, dport   uint16
	in             uint16
}

// The ends of the two connections the window tests use: A:40000 to
// remote:443 through MASQUERADE (client inside), and remote:4000 to
// 203.0.113.1:8080, DNAT'd to 10.0.0.3:80 (client outside).
var (
	masqClient = tcpEnd{macA, macIn0, addrA, remote, 40000, 443, portIn}
	masqServer = tcpEnd{macGW, macOut0, remote, addrExt, 443, 40000, portOut}
	dnatClient = tcpEnd{macGW, macOut0, remote, addrExt, 4000, 8080, portOut}
	dnatServer = tcpEnd{macB, macIn0, addrB, remote, 80, 4000, portIn}
)

type tcpOpt struct {
	wscale   int // -1: none
	sackPerm bool
	sack     [][2]uint32
	ts       bool
}

func (e tcpEnd) seg(t testing.TB, flags uint8, seq, ack uint32, win uint16, n int, o tcpOpt) []byte {
	l := &layers.TCP{SrcPort: layers.TCPPort(e.sport), DstPort: layers.TCPPort(e.dport), Seq: seq, Ack: ack, Window: win,
		SYN: flags&0x02 != 0, ACK: flags&0x10 != 0, FIN: flags&0x01 != 0, RST: flags&0x04 != 0, PSH: flags&0x08 != 0}
	if o.wscale >= 0 && flags&0x02 != 0 {
		l.Options = append(l.Options, layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{byte(o.wscale)}})
	}
	if o.sackPerm {
		l.Options = append(l.Options, layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2})
	}
	if o.ts {
		l.Options = append(l.Options, layers.TCPOption{OptionType: layers.TCPOptionKindNop}, layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)})
	}
	if len(o.sack) > 0 {
		d := make([]byte, 0, 8*len(o.sack))
		for _, b := range o.sack {
			d = append(d, byte(b[0]>>24), byte(b[0]>>16), byte(b[0]>>8), byte(b[0]), byte(b[1]>>24), byte(b[1]>>16), byte(b[1]>>8), byte(b[1]))
		}
		l.Options = append(l.Options, layers.TCPOption{OptionType: layers.TCPOptionKindNop}, layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionLength: uint8(2 + len(d)), OptionData: d})
	}
	return pkt{srcMAC: e.srcMAC, dstMAC: e.dstMAC, src: e.src, dst: e.dst, l4: l, payload: make([]byte, n)}.bytes(t)
}

// tcpConv is a connection under test with its sequence numbers.
type tcpConv struct {
	t              *testing.T
	tb             *testbed
	client, server tcpEnd
	orig           flowtable.Tuple
	cseq, sseq     uint32 // next sequence number of each side
}

// The handshake's numbers: the client's ISN 1000, window 1000 scaled by
// 4 (wscale 2); the server's ISN 5000, window 500 scaled by 8 (wscale 3).
const (
	cISN, sISN     = 1000, 5000
	cWin, sWin     = 1000, 500
	cScale, sScale = 2, 3
)

var noOpt = tcpOpt{wscale: -1}

// handshake opens a connection with window scaling and SACK, and each
// side sends an ACK carrying its scaled window: the client's window is
// 4000 bytes, the server's 4000.
func handshake(t *testing.T, rules string, client, server tcpEnd) *tcpConv {
	t.Helper()
	c := &tcpConv{t: t, tb: newTestbed(t, rules, 1500, 1), client: client, server: server}
	c.orig = flowtable.MakeTuple(flowtable.ProtoTCP, client.src, client.sport, client.dst, client.dport)
	c.mustPass(c.client, fSYN, cISN, 0, cWin, 0, tcpOpt{wscale: cScale, sackPerm: true})
	c.mustPass(c.server, fSYNACK, sISN, cISN+1, sWin, 0, tcpOpt{wscale: sScale, sackPerm: true})
	c.mustPass(c.client, fACK, cISN+1, sISN+1, cWin, 0, noOpt)
	c.mustPass(c.server, fACK, sISN+1, cISN+1, sWin, 0, noOpt)
	c.cseq, c.sseq = cISN+1, sISN+1
	c.wantState(flowtable.TCPEstablished)
	return c
}

// sendCase sends wc's segment from its side, with no options, and
// returns the result and how many packets the table counted INVALID.
func (c *tcpConv) sendCase(wc winCase) (Result, uint64) {
	before := c.tb.tab.TotalStats().Invalid
	from := c.server
	if wc.fromClient {
		from = c.client
	}
	r := c.send(from, wc.flags, wc.seq, wc.ack, wc.win, wc.n, noOpt)
	return r, c.tb.tab.TotalStats().Invalid - before
}

// send runs one segment and returns the result.
func (c *tcpConv) send(e tcpEnd, flags uint8, seq, ack uint32, win uint16, n int, o tcpOpt) Result {
	c.t.Helper()
	r, _ := c.tb.run(e.seg(c.t, flags, seq, ack, win, n, o), e.in)
	return r
}

func (c *tcpConv) mustPass(e tcpEnd, flags uint8, seq, ack uint32, win uint16, n int, o tcpOpt) {
	c.t.Helper()
	if r := c.send(e, flags, seq, ack, win, n, o); r.Action != ActForward {
		c.t.Fatalf("segment %#x seq %d ack %d len %d from %v: %v %v", flags, seq, ack, n, e.src, r.Action, r.Reason)
	}
}

func (c *tcpConv) info() flowtable.FlowInfo {
	c.t.Helper()
	fi, _, ok := c.tb.tab.Get(c.orig)
	if !ok {
		c.t.Fatal("connection gone")
	}
	return fi
}

func (c *tcpConv) wantState(s flowtable.State) {
	c.t.Helper()
	if fi := c.info(); fi.State() != s {
		c.t.Fatalf("state %v, want %v", fi.State(), s)
	}
}

// data sends n bytes each way, acknowledged, and checks both forwarded.
func (c *tcpConv) data(n int) {
	c.t.Helper()
	c.mustPass(c.client, fACK|0x08, c.cseq, c.sseq, cWin, n, noOpt)
	c.cseq += uint32(n)
	c.mustPass(c.server, fACK|0x08, c.sseq, c.cseq, sWin, n, noOpt)
	c.sseq += uint32(n)
	c.mustPass(c.client, fACK, c.cseq, c.sseq, cWin, 0, noOpt)
	c.mustPass(c.server, fACK, c.sseq, c.cseq, sWin, 0, noOpt)
}

// TestTCPWindowResetSpray: 200 resets at random sequence numbers, from
// the outside at the external port of a MASQUERADE'd and of a DNAT'd
// connection, leave both ESTABLISHED with their timeout, and they go on
// carrying data; the resets are INVALID. An exact reset still closes.
func TestTCPWindowResetSpray(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	for _, tc := range []struct {
		name     string
		client   tcpEnd
		server   tcpEnd
		attacker tcpEnd // sends as the outside end
	}{
		{"masquerade", masqClient, masqServer, masqServer},
		{"dnat", dnatClient, dnatServer, dnatClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := handshake(t, dropInvalid, tc.client, tc.server)
			c.data(100)
			before := c.tb.tab.TotalStats().Invalid
			outsideIsClient := tc.attacker == tc.client
			invalid := 0
			for i := range 200 {
				seq := rng.Uint32()
				// Keep clear of the window (a few kilobytes) around the
				// outside end's sequence numbers.
				next := c.sseq
				if outsideIsClient {
					next = c.cseq
				}
				if d := seq - next; d < 1<<20 || d > 0xfff00000 {
					seq += 1 << 30
				}
				flags := uint8(fRST)
				if i%2 == 1 {
					flags |= fACK
				}
				r := c.send(tc.attacker, flags, seq, rng.Uint32(), 0, 0, noOpt)
				if r.Action == ActDrop && r.Reason == ReasonInvalid {
					invalid++
				}
			}
			if invalid != 200 {
				t.Errorf("%d of 200 random resets INVALID", invalid)
			}
			if got := c.tb.tab.TotalStats().Invalid - before; got != 200 {
				t.Errorf("invalid counted %d times", got)
			}
			fi := c.info()
			if fi.State() != flowtable.TCPEstablished || !fi.Assured() || fi.Expires < time.Hour {
				t.Fatalf("after the spray: %v assured %v expires %v", fi.State(), fi.Assured(), fi.Expires)
			}
			c.data(200)
			c.wantState(flowtable.TCPEstablished)
			// The peer's own reset, at the sequence number the other side
			// acknowledged, closes it.
			from, seq := c.server, c.sseq
			if outsideIsClient {
				from, seq = c.client, c.cseq
			}
			c.mustPass(from, fRST, seq, 0, 0, 0, noOpt)
			c.wantState(flowtable.TCPClose)
		})
	}
}

// TestTCPWindowSynSentReset: a SYN_SENT connection survives resets at
// random acknowledgement numbers; the server's real refusal (RST/ACK of
// the SYN) closes it.
func TestTCPWindowSynSentReset(t *testing.T) {
	c := &tcpConv{t: t, tb: newTestbed(t, dropInvalid, 1500, 1), client: masqClient, server: masqServer}
	c.orig = flowtable.MakeTuple(flowtable.ProtoTCP, addrA, 40000, remote, 443)
	c.mustPass(c.client, fSYN, cISN, 0, cWin, 0, tcpOpt{wscale: cScale, sackPerm: true})
	rng := rand.New(rand.NewPCG(1, 2))
	ignored := false
	for range 200 {
		ack := rng.Uint32()
		if d := ack - (cISN + 1); d < 1<<20 || d > 0xfff00000 {
			ack += 1 << 30
		}
		// An ACK beyond the SYN, or a sequence number beyond the window
		// the first such reset showed, is INVALID; an ACK far below the
		// SYN's Linux lets through as ignored (the client drops it). The
		// state stays.
		r := c.send(c.server, fRST|fACK, rng.Uint32(), ack, 0, 0, noOpt)
		if wantInvalid := !before(ack, cISN+2); wantInvalid && (r.Action != ActDrop || r.Reason != ReasonInvalid) || r.Action != ActForward && r.Reason != ReasonInvalid {
			t.Fatalf("reset with ack %d: %v %v", ack, r.Action, r.Reason)
		}
		if r.Action == ActForward {
			ignored = true
		}
		c.wantState(flowtable.TCPSynSent)
	}
	// The server's real refusal: a reset as the only answer ends the
	// connection; after resets let through (ignored), which count as
	// answers in Linux (TestTCPTimeoutsLinux), it closes it.
	c.mustPass(c.server, fRST|fACK, 0, cISN+1, 0, 0, noOpt)
	fi, _, ok := c.tb.tab.Get(c.orig)
	if ignored && (!ok || fi.State() != flowtable.TCPClose) || !ignored && ok {
		t.Fatalf("refused after resets (some ignored: %v): there %v, %v", ignored, ok, fi.State())
	}
}

// TestTCPWindowSequences: window scaling, retransmissions, keep-alives,
// zero windows and SACK keep a connection ESTABLISHED, every segment
// valid.
func TestTCPWindowSequences(t *testing.T) {
	for _, fast := range []bool{false, true} {
		c := handshake(t, dnatRules, masqClient, masqServer)
		c.tb.dp.Pipeline(0).noFast = !fast
		before := c.tb.tab.TotalStats().Invalid
		// Window scaling: the server's window is 500 << 3 = 4000 bytes;
		// the client fills it with four segments before any ACK (beyond
		// 500 bytes, which an unscaled window would refuse).
		for i := range 4 {
			c.mustPass(c.client, fACK|0x08, c.cseq+uint32(i*1000), c.sseq, cWin, 1000, noOpt)
		}
		// A retransmission of the second, then the ACK of all.
		c.mustPass(c.client, fACK|0x08, c.cseq+1000, c.sseq, cWin, 1000, noOpt)
		c.cseq += 4000
		c.mustPass(c.server, fACK, c.sseq, c.cseq, sWin, 0, noOpt)
		// The server's data to the client's 4000-byte window, a SACK
		// from the client for a later segment (right edge within what was
		// sent), a retransmission, the cumulative ACK.
		for i := range 3 {
			c.mustPass(c.server, fACK|0x08, c.sseq+uint32(i*1000), c.cseq, sWin, 1000, noOpt)
		}
		c.mustPass(c.client, fACK, c.cseq, c.sseq+1000, cWin, 0, tcpOpt{wscale: -1, ts: true, sack: [][2]uint32{{c.sseq + 2000, c.sseq + 3000}}})
		c.mustPass(c.server, fACK|0x08, c.sseq+1000, c.cseq, sWin, 1000, noOpt)
		c.sseq += 3000
		c.mustPass(c.client, fACK, c.cseq, c.sseq, cWin, 0, tcpOpt{wscale: -1, ts: true})
		// Keep-alives: one byte (or none) below the next sequence number,
		// and their answers.
		c.mustPass(c.client, fACK, c.cseq-1, c.sseq, cWin, 1, noOpt)
		c.mustPass(c.server, fACK, c.sseq, c.cseq, sWin, 0, noOpt)
		c.mustPass(c.client, fACK, c.cseq-1, c.sseq, cWin, 0, noOpt)
		c.mustPass(c.server, fACK, c.sseq, c.cseq, sWin, 0, noOpt)
		// A zero window, a window probe, the window reopened.
		c.mustPass(c.server, fACK, c.sseq, c.cseq, 0, 0, noOpt)
		if fi := c.info(); fi.Expires > 300*time.Second {
			t.Errorf("zero window: expires in %v, want max_retrans's 300 s", fi.Expires)
		}
		c.mustPass(c.client, fACK|0x08, c.cseq, c.sseq, cWin, 1, noOpt)
		c.mustPass(c.server, fACK, c.sseq, c.cseq, sWin, 0, noOpt)
		c.mustPass(c.client, fACK|0x08, c.cseq, c.sseq, cWin, 100, noOpt)
		c.cseq += 100
		c.mustPass(c.server, fACK, c.sseq, c.cseq, sWin, 0, noOpt)
		if got := c.tb.tab.TotalStats().Invalid - before; got != 0 {
			t.Errorf("fast %v: %d segments INVALID", fast, got)
		}
		fi := c.info()
		if fi.State() != flowtable.TCPEstablished || !fi.Assured() || fi.Expires < time.Hour {
			t.Errorf("fast %v: %v assured %v expires %v", fast, fi.State(), fi.Assured(), fi.Expires)
		}
	}
}

// TestTCPWindowRetransTimeout: the same segment sent again and again
// (nf_conntrack_tcp_max_retrans times) shortens the timeout to
// nf_conntrack_tcp_timeout_max_retrans; an answer restores it.
func TestTCPWindowRetransTimeout(t *testing.T) {
	c := handshake(t, dnatRules, masqClient, masqServer)
	if err := c.tb.tab.SetTimeout("nf_conntrack_tcp_timeout_max_retrans", 200*time.Second); err != nil {
		t.Fatal(err)
	}
	c.data(10)
	for range 4 {
		c.mustPass(c.client, fACK, c.cseq, c.sseq, cWin, 0, noOpt)
	}
	if fi := c.info(); fi.Expires > 200*time.Second || fi.Expires < 199*time.Second {
		t.Errorf("after retransmissions: expires in %v, want 200 s", fi.Expires)
	}
	c.mustPass(c.server, fACK, c.sseq, c.cseq, sWin+1, 0, noOpt)
	if fi := c.info(); fi.Expires < time.Hour {
		t.Errorf("after an answer: expires in %v", fi.Expires)
	}
}

// TestTCPLooseUnacknowledged: a connection picked up from a mid-stream
// ACK and never answered is timed as unacknowledged (300 s) however many
// segments it sends, and expires then.
func TestTCPLooseUnacknowledged(t *testing.T) {
	tb := newTestbed(t, masqRules, 1500, 1)
	orig := flowtable.MakeTuple(flowtable.ProtoTCP, addrA, 40000, remote, 443)
	for i := range 10 {
		r, _ := tb.run(masqClient.seg(t, fACK|0x08, 7000+uint32(i*100), 9000, 1000, 100, noOpt), portIn)
		if r.Action != ActForward {
			t.Fatalf("segment %d: %v %v", i, r.Action, r.Reason)
		}
		fi, _, ok := tb.tab.Get(orig)
		if !ok || fi.State() != flowtable.TCPEstablished || fi.Expires > 300*time.Second || fi.Expires < 299*time.Second {
			t.Fatalf("segment %d: %v, expires in %v, want 300 s", i, fi.State(), fi.Expires)
		}
	}
	// The table's expiry: gone just after 300 s without an answer.
	c := tb.tab.Core(0)
	c.Enter()
	defer c.Exit()
	now := tb.tab.Now()
	if c.Lookup(&orig, now+flowtable.Ticks(299*time.Second)) == 0 {
		t.Error("gone before 300 s")
	}
	if c.Lookup(&orig, now+flowtable.Ticks(301*time.Second)) != 0 {
		t.Error("still there after 300 s")
	}
}

// winCase is one segment sent after handshake (over MASQUERADE: client
// inside, server outside) and conntrack's verdict on it.
type winCase struct {
	name       string
	fromClient bool
	flags      uint8
	seq, ack   uint32
	win        uint16
	n          int
	verdict    int // winAccept, winIgnore or winInvalid
	state      flowtable.State
}

// After handshake, the client's td_end is 1001 and td_maxend 5001 (the
// server acknowledged 1001 with a window of 500·8), its td_maxwin 4000
// (1000·4), its td_maxack 5001; the server's td_end is 5001, td_maxend
// 9001, td_maxwin 4000, td_maxack 1001.
var winCases = []winCase{
	{"data at the next sequence number", false, fACK | 0x08, 5001, 1001, sWin, 100, winAccept, flowtable.TCPEstablished},
	{"data ending at the window's edge", false, fACK | 0x08, 8901, 1001, sWin, 100, winAccept, flowtable.TCPEstablished},
	{"starting just past the edge (overrun)", false, fACK, 9002, 1001, sWin, 0, winIgnore, flowtable.TCPEstablished},
	{"a window past the edge", false, fACK, 13002, 1001, sWin, 0, winInvalid, flowtable.TCPEstablished},
	{"ACK of data not sent", false, fACK, 5001, 1002, sWin, 0, winInvalid, flowtable.TCPEstablished},
	{"ACK at the lower bound", false, fACK, 5001, 1<<32 + 1001 - 4000, sWin, 0, winAccept, flowtable.TCPEstablished},
	{"ACK below the lower bound", false, fACK, 5001, 1<<32 + 1001 - 4001, sWin, 0, winIgnore, flowtable.TCPEstablished},
	{"retransmission within the window", false, fACK | 0x08, 4901, 1001, sWin, 100, winAccept, flowtable.TCPEstablished},
	{"old data below the window", false, fACK | 0x08, 900, 1001, sWin, 10, winIgnore, flowtable.TCPEstablished},
	{"reset at the acknowledged sequence number", false, fRST, 5001, 0, 0, 0, winAccept, flowtable.TCPClose},
	{"reset/ACK with ACK zero", false, fRST | fACK, 5001, 0, 0, 0, winAccept, flowtable.TCPClose},
	{"reset in window, not exact", false, fRST, 5500, 0, 0, 0, winAccept, flowtable.TCPEstablished},
	{"reset below the acknowledged data", false, fRST, 4000, 0, 0, 0, winInvalid, flowtable.TCPEstablished},
	{"reset beyond the window", false, fRST, 20000, 0, 0, 0, winInvalid, flowtable.TCPEstablished},
	{"reset/ACK beyond the window", false, fRST | fACK, 0x80001234, 1001, 0, 0, winInvalid, flowtable.TCPEstablished},
	{"FIN at the next sequence number", false, fFIN, 5001, 1001, sWin, 0, winAccept, flowtable.TCPFinWait},
	{"FIN beyond the window", false, fFIN, 20000, 1001, sWin, 0, winInvalid, flowtable.TCPEstablished},
	{"SYN from the server", false, fSYN, 7000, 0, sWin, 0, winInvalid, flowtable.TCPEstablished},
	{"SYN from the client (ignored)", true, fSYN, 77777, 0, cWin, 0, winIgnore, flowtable.TCPEstablished},
	{"SYN and FIN", false, fSYN | 0x01, 5001, 0, sWin, 0, winInvalid, flowtable.TCPEstablished},
	{"no flags", false, 0, 5001, 0, sWin, 0, winInvalid, flowtable.TCPEstablished},
	{"client keep-alive", true, fACK, 1000, 5001, cWin, 0, winAccept, flowtable.TCPEstablished},
	{"client data within the window", true, fACK | 0x08, 1001, 5001, cWin, 1000, winAccept, flowtable.TCPEstablished},
	{"client data past the window", true, fACK | 0x08, 9002, 5001, cWin, 100, winInvalid, flowtable.TCPEstablished},
}

// TestTCPWindowCases runs each case of winCases on a fresh connection:
// INVALID segments are dropped (the filter drops INVALID) and counted,
// the others forwarded, and the state is as Linux leaves it.
func TestTCPWindowCases(t *testing.T) {
	for _, wc := range winCases {
		for _, fast := range []bool{false, true} {
			c := handshake(t, dropInvalid, masqClient, masqServer)
			c.tb.dp.Pipeline(0).noFast = !fast
			r, invalid := c.sendCase(wc)
			switch wc.verdict {
			case winInvalid:
				if r.Action != ActDrop || r.Reason != ReasonInvalid || invalid != 1 {
					t.Errorf("%s (fast %v): %v %v, invalid +%d; want INVALID", wc.name, fast, r.Action, r.Reason, invalid)
				}
			default:
				if r.Action != ActForward || invalid != 0 {
					t.Errorf("%s (fast %v): %v %v, invalid +%d; want forwarded", wc.name, fast, r.Action, r.Reason, invalid)
				}
			}
			fi, _, ok := c.tb.tab.Get(c.orig)
			if !ok || fi.State() != wc.state {
				t.Errorf("%s (fast %v): state %v (there %v), want %v", wc.name, fast, fi.State(), ok, wc.state)
			}
		}
	}
}

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
