package dataplane

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

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
