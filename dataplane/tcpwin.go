package dataplane

import (
	"encoding/binary"

	"xnat/dataplane/header"
	"xnat/flowtable"
)

// TCP window tracking, as Linux's nf_conntrack_proto_tcp (tcp_in_window):
// per direction, the highest sequence number sent (td_end), the highest
// the receiver's window allows (td_maxend), the largest window seen
// (td_maxwin), the highest acknowledgement sent (td_maxack) and the
// window scale from the SYNs; and the last segment's particulars, for
// retransmissions and the reset checks. A segment outside the window is
// INVALID and leaves the connection as it was.
//
// The state lives in the connection's flowtable.ProtoState (64 bytes:
// one cache line a connection, in a parallel array kept when the table
// has Config.Proto). Any core may track a connection's packets, without
// a lock: a packet loads the words it reads and stores only the words it
// changed. Each bound is written by one direction's packets (td_end and
// td_maxack by the sender's, td_maxend by the receiver's), so the two
// directions on two cores do not undo each other's progress; what they
// share (the largest window, the flags, the last segment) may lose an
// update to a race, which can only make one later segment look out of
// window, or miss a retransmission.

// Word offsets in a connection's ProtoState.
const (
	twEnd     = iota // + twStride·direction
	twMaxEnd         //
	twMaxWin         //
	twMaxAck         //
	twFlags          // window scale (low 4 bits) | the tw* flags
	twStride         // words per direction
	twLastSeq = 2 * twStride
	twLastAck = twLastSeq + 1
	twLastEnd = twLastSeq + 2
	// twLast: the last window (16 bits), the last class (bits 16–18),
	// the last direction (bit 19), the last SYN's window scale (bits
	// 20–23), the last SYN's flags (bits 24–31: twl*).
	twLast    = twLastSeq + 3
	twRetrans = twLastSeq + 4
	twWords   = twRetrans + 1
)

// Per-direction flags (IP_CT_TCP_FLAG_*).
const (
	twfScale    = 1 << 4 // the SYN carried a window scale option
	twfSackPerm = 1 << 5 // SACK permitted
	twfCloseIni = 1 << 6 // this side sent the first FIN
	twfLiberal  = 1 << 7 // no window checks for this side
	twfUnacked  = 1 << 8 // data sent beyond what the other side acknowledged
	twfMaxAck   = 1 << 9 // td_maxack holds an acknowledgement
	twfScaleMsk = 0xf
)

// Flags of the last SYN (in twLast).
const (
	twlScale     = 1 << 0
	twlSackPerm  = 1 << 1
	twlChallenge = 1 << 2 // a challenge ACK may answer the SYN (LAST_ACK)
	twlSimOpen   = 1 << 3 // simultaneous open
)

// maxWScale is the largest window scale RFC 7323 allows.
const maxWScale = 14

// twDir is one direction's window state.
type twDir struct {
	end, maxEnd, maxWin, maxAck uint32
	flags                       uint32 // scale | twf*
}

func (d *twDir) scale() uint32 { return d.flags & twfScaleMsk }

// tcpWin is a connection's window state, loaded from its ProtoState (or
// built for a new connection).
type tcpWin struct {
	seen                      [2]twDir
	lastSeq, lastAck, lastEnd uint32
	last                      uint32 // see twLast
	retrans                   uint32
}

func (w *tcpWin) lastWin() uint16        { return uint16(w.last) }
func (w *tcpWin) lastIndex() int         { return int(w.last >> 16 & 7) }
func (w *tcpWin) lastDir() flowtable.Dir { return flowtable.Dir(w.last >> 19 & 1) }
func (w *tcpWin) lastWScale() uint32     { return w.last >> 20 & 0xf }
func (w *tcpWin) lastFlags() uint32      { return w.last >> 24 }

func (w *tcpWin) setLastIndexDir(index int, dir flowtable.Dir) {
	w.last = w.last&^(0xf<<16) | uint32(index)<<16 | uint32(dir)<<19
}

func (w *tcpWin) setLastFlags(f uint32) { w.last = w.last&0x00ffffff | f<<24 }

// load reads the window state from ps.
func (w *tcpWin) load(ps *flowtable.ProtoState) {
	for d := range 2 {
		b := d * twStride
		w.seen[d] = twDir{ps[b+twEnd].Load(), ps[b+twMaxEnd].Load(), ps[b+twMaxWin].Load(), ps[b+twMaxAck].Load(), ps[b+twFlags].Load()}
	}
	w.lastSeq, w.lastAck, w.lastEnd = ps[twLastSeq].Load(), ps[twLastAck].Load(), ps[twLastEnd].Load()
	w.last, w.retrans = ps[twLast].Load(), ps[twRetrans].Load()
}

// store writes to ps the words of w that differ from old (what load
// read), and only those.
func (w *tcpWin) store(ps *flowtable.ProtoState, old *tcpWin) {
	for d := range 2 {
		b := d * twStride
		n, o := &w.seen[d], &old.seen[d]
		if n.end != o.end {
			storeWord(&ps[b+twEnd], n.end)
		}
		if n.maxEnd != o.maxEnd {
			storeWord(&ps[b+twMaxEnd], n.maxEnd)
		}
		if n.maxWin != o.maxWin {
			storeWord(&ps[b+twMaxWin], n.maxWin)
		}
		if n.maxAck != o.maxAck {
			storeWord(&ps[b+twMaxAck], n.maxAck)
		}
		if n.flags != o.flags {
			storeWord(&ps[b+twFlags], n.flags)
		}
	}
	if w.lastSeq != old.lastSeq {
		storeWord(&ps[twLastSeq], w.lastSeq)
	}
	if w.lastAck != old.lastAck {
		storeWord(&ps[twLastAck], w.lastAck)
	}
	if w.lastEnd != old.lastEnd {
		storeWord(&ps[twLastEnd], w.lastEnd)
	}
	if w.last != old.last {
		storeWord(&ps[twLast], w.last)
	}
	if w.retrans != old.retrans {
		storeWord(&ps[twRetrans], w.retrans)
	}
}

// words returns w as the words of a ProtoState, for an insert.
func (w *tcpWin) words(out *[flowtable.ProtoWords]uint32) {
	*out = [flowtable.ProtoWords]uint32{}
	for d := range 2 {
		b := d * twStride
		s := &w.seen[d]
		out[b+twEnd], out[b+twMaxEnd], out[b+twMaxWin], out[b+twMaxAck], out[b+twFlags] = s.end, s.maxEnd, s.maxWin, s.maxAck, s.flags
	}
	out[twLastSeq], out[twLastAck], out[twLastEnd], out[twLast], out[twRetrans] = w.lastSeq, w.lastAck, w.lastEnd, w.last, w.retrans
}

// before and after compare sequence numbers modulo 2³² (RFC 1982).
func before(a, b uint32) bool { return int32(a-b) < 0 }
func after(a, b uint32) bool  { return int32(b-a) < 0 }

// tcpSeg is what window tracking reads of a segment.
type tcpSeg struct {
	seq, ack, end uint32
	win           uint16
	flags         uint8
	index         int
	// opts is the segment's options (nil without), within the frame.
	opts []byte
}

// readSeg reads a parsed TCP segment's numbers. Parsing has checked that
// the header and its options lie within the frame and the IP length.
func readSeg(frame []byte, m *meta, s *tcpSeg) {
	t := frame[m.l4:]
	be := binary.BigEndian
	s.seq = be.Uint32(t[header.TCPSeqNum:])
	s.ack = be.Uint32(t[header.TCPAckNum:])
	s.win = be.Uint16(t[header.TCPWindow:])
	s.flags = m.tcpFlags
	s.index = tcpIndex(m.tcpFlags)
	doff := int(t[header.TCPDataOffset]>>4) * 4
	s.opts = nil
	if doff > header.TCPMinLen {
		s.opts = t[header.TCPMinLen:doff]
	}
	n := uint32(int(m.ipLen) - int(m.l4-m.l3) - doff)
	if s.flags&header.TCPSyn != 0 {
		n++
	}
	if s.flags&header.TCPFin != 0 {
		n++
	}
	s.end = s.seq + n
}

// TCP option kinds.
const (
	optEnd      = 0
	optNop      = 1
	optWScale   = 3
	optSackPerm = 4
	optSack     = 5
	optTS       = 8
)

// synOptions reads a SYN's window scale and SACK-permitted options into
// flags (twfScale with the scale, twfSackPerm).
func synOptions(opts []byte) (flags uint32) {
	for i := 0; i < len(opts); {
		kind := opts[i]
		switch kind {
		case optEnd:
			return flags
		case optNop:
			i++
			continue
		}
		if i+1 >= len(opts) {
			return flags
		}
		l := int(opts[i+1])
		if l < 2 || i+l > len(opts) {
			return flags
		}
		switch {
		case kind == optSackPerm && l == 2:
			flags |= twfSackPerm
		case kind == optWScale && l == 3:
			flags = flags&^twfScaleMsk | twfScale | uint32(min(opts[i+2], maxWScale))
		}
		i += l
	}
	return flags
}

// tsAligned is the first word of the options of a segment whose only
// option is a timestamp, aligned as most stacks send it (RFC 7323
// appendix A): NOP, NOP, kind 8, length 10.
const tsAligned = optNop<<24 | optNop<<16 | optTS<<8 | 10

// sackEdge returns the highest right edge of the segment's SACK blocks
// that lies after ack, or ack. A segment whose only option is an aligned
// timestamp (the common case) is answered without a scan.
func sackEdge(opts []byte, ack uint32) uint32 {
	if len(opts) == 12 && opts[0] == optNop && opts[1] == optNop && opts[2] == optTS && opts[3] == 10 {
		return ack
	}
	sack := ack
	for i := 0; i < len(opts); {
		kind := opts[i]
		switch kind {
		case optEnd:
			return sack
		case optNop:
			i++
			continue
		}
		if i+1 >= len(opts) {
			return sack
		}
		l := int(opts[i+1])
		if l < 2 || i+l > len(opts) {
			return sack
		}
		if kind == optSack && l >= 10 && (l-2)%8 == 0 {
			for j := i + 2; j+8 <= i+l; j += 8 {
				if r := binary.BigEndian.Uint32(opts[j+4:]); after(r, sack) {
					sack = r
				}
			}
		}
		i += l
	}
	return sack
}

// initSender sets a direction's window state from its SYN (or the
// SYN/ACK answering one), as Linux's tcp_init_sender: window scaling
// holds only when both SYNs offered it.
func initSender(sender, receiver *twDir, s *tcpSeg) {
	sender.end, sender.maxEnd = s.end, s.end
	sender.maxWin = max(uint32(s.win), 1)
	sender.flags = sender.flags&^(twfScaleMsk|twfScale|twfSackPerm) | synOptions(s.opts)
	if sender.flags&twfScale == 0 || receiver.flags&twfScale == 0 {
		sender.flags &^= twfScaleMsk
		receiver.flags &^= twfScaleMsk
	}
}

// Window verdicts (Linux's nf_ct_tcp_action).
const (
	winAccept  = iota // in window; the state was updated
	winIgnore         // let through, the connection untouched (not even refreshed)
	winInvalid        // out of window: INVALID
	winSlow           // (fast only) not a plain in-window segment: nothing changed
)

// maxAckWindow is how far below the receiver's end an acknowledgement may
// lag (Linux's MAXACKWINDOW).
func maxAckWindow(d *twDir) uint32 {
	if d.maxWin != 0 {
		return d.maxWin
	}
	return 66000
}

// inWindow is Linux's tcp_in_window: it checks the segment against the
// window of the connection in state st and, when it is in window, updates
// w. liberal is nf_conntrack_tcp_be_liberal. fast asks for a plain answer:
// any case but an in-window segment (or one a liberal connection accepts
// as it is) returns winSlow with w unchanged.
func inWindow(w *tcpWin, st flowtable.State, dir flowtable.Dir, s *tcpSeg, liberal, fast bool) int {
	sender, receiver := &w.seen[dir], &w.seen[dir^1]
	seq, ack, end := s.seq, s.ack, s.end
	win := uint32(s.win)
	syn, hasAck, rst := s.flags&header.TCPSyn != 0, s.flags&header.TCPAck != 0, s.flags&header.TCPRst != 0
	sack := ack
	if receiver.flags&twfSackPerm != 0 && s.opts != nil {
		sack = sackEdge(s.opts, ack)
	}
	liberal = liberal || sender.flags&twfLiberal != 0
	if sender.maxWin == 0 {
		if fast {
			return winSlow
		}
		if syn {
			initSender(sender, receiver, s)
			if !hasAck { // simultaneous open
				return winAccept
			}
		} else {
			// Mid-stream: what the segment says is all there is.
			sender.end = end
			sw := win << sender.scale()
			sender.maxWin = max(sw, 1)
			sender.maxEnd = end + sender.maxWin
			if receiver.maxWin == 0 {
				receiver.end, receiver.maxEnd = sack, sack
			} else if sack == receiver.end+1 {
				receiver.end++ // the answer to a keep-alive
			}
		}
	} else if syn && after(end, sender.end) && (st == flowtable.TCPSynSent || st == flowtable.TCPSynRecv) {
		if fast {
			return winSlow
		}
		// A new SYN (or SYN/ACK) with a higher sequence number: start
		// this direction anew.
		initSender(sender, receiver, s)
		if dir == flowtable.DirReply && !hasAck {
			return winAccept
		}
	}
	if !hasAck || rst && ack == 0 {
		// No ACK (or a reset's ACK of zero, from broken stacks): as if it
		// acknowledged what was sent.
		ack, sack = receiver.end, receiver.end
	}
	if rst && seq == 0 && st == flowtable.TCPSynSent {
		// A reset answering a SYN.
		seq, end = sender.end, sender.end
	}
	if !before(seq, sender.maxEnd+1) {
		// Beyond the receiver's window.
		overshot := end - sender.maxEnd + 1
		ackOK := after(sack, receiver.end-maxAckWindow(sender)-1)
		inRecv := receiver.maxWin != 0 && after(end, sender.end-receiver.maxWin-1)
		if inRecv && ackOK && overshot <= receiver.maxWin && before(sack, receiver.end+1) {
			// A sender overrunning the window by less than one window:
			// the data is counted, so that its ACK is not over the bound,
			// but the segment is not (Linux ignores it).
			if liberal {
				return winAccept
			}
			if fast {
				return winSlow
			}
			sender.end = end
			sender.flags |= twfUnacked
			return winIgnore
		}
		return invalidUnless(liberal, fast)
	}
	if !before(sack, receiver.end+1) {
		// Acknowledges data not seen yet.
		return invalidUnless(liberal, fast)
	}
	if receiver.maxWin != 0 && !after(end, sender.end-receiver.maxWin-1) {
		// Below the window: already acknowledged data, retransmitted.
		return ignoreUnless(liberal, fast)
	}
	if !after(sack, receiver.end-maxAckWindow(sender)-1) {
		// An acknowledgement far behind: a segment overly delayed.
		return ignoreUnless(liberal, fast)
	}

	if !syn {
		win <<= sender.scale()
	}
	// The sender.
	if sw := win + (sack - ack); sender.maxWin < sw {
		sender.maxWin = sw
	}
	if after(end, sender.end) {
		sender.end = end
		sender.flags |= twfUnacked
	}
	if hasAck {
		if sender.flags&twfMaxAck == 0 {
			sender.maxAck = ack
			sender.flags |= twfMaxAck
		} else if after(ack, sender.maxAck) {
			sender.maxAck = ack
		}
	}
	// The receiver.
	if receiver.maxWin != 0 && after(end, sender.maxEnd) {
		receiver.maxWin += end - sender.maxEnd
	}
	if after(sack+win, receiver.maxEnd-1) {
		receiver.maxEnd = sack + win
		if win == 0 {
			receiver.maxEnd++
		}
	}
	if ack == receiver.end {
		receiver.flags &^= twfUnacked
	}
	// Retransmissions: the same segment again, in the same direction.
	if s.index == tcpAck {
		if w.lastDir() == dir && w.lastSeq == s.seq && w.lastAck == ack && w.lastEnd == end && w.lastWin() == s.win {
			w.retrans = min(w.retrans+1, 255)
		} else {
			w.last = w.last&^(0xffff|1<<19) | uint32(s.win) | uint32(dir)<<19
			w.lastSeq, w.lastAck, w.lastEnd = s.seq, ack, end
			w.retrans = 0
		}
	}
	return winAccept
}

// invalidUnless and ignoreUnless are the verdicts on a segment out of
// window: accepted, unchanged, when tracking is liberal (Linux's
// nf_tcp_log_invalid); else invalid or ignored, or, asked for a plain
// answer, winSlow.
func invalidUnless(liberal, fast bool) int {
	switch {
	case liberal:
		return winAccept
	case fast:
		return winSlow
	}
	return winInvalid
}

func ignoreUnless(liberal, fast bool) int {
	switch {
	case liberal:
		return winAccept
	case fast:
		return winSlow
	}
	return winIgnore
}

// timeoutClass is the timeout a connection gets after an in-window
// segment of class index, as Linux picks it: max_retrans after that many
// retransmissions, close after a reset, unacknowledged while data is
// unacknowledged, max_retrans while the last window was zero, else the
// state's own (each only when shorter than the state's: the table takes
// the shorter).
func (w *tcpWin) timeoutClass(index int, maxRetrans uint32) uint32 {
	switch {
	case w.retrans >= maxRetrans:
		return flowtable.TimeoutRetrans
	case index == tcpRst:
		return flowtable.TimeoutClose
	case (w.seen[0].flags|w.seen[1].flags)&twfUnacked != 0:
		return flowtable.TimeoutUnacked
	case w.lastWin() == 0:
		return flowtable.TimeoutRetrans
	}
	return flowtable.TimeoutOfState
}

// tcpValidFlags is Linux's tcp_valid_flags: the flag combinations (ECE,
// CWR and PSH aside) a segment may carry.
var tcpValidFlags = func() (v [256]bool) {
	const syn, rst, fin, ack, urg = header.TCPSyn, header.TCPRst, header.TCPFin, header.TCPAck, header.TCPUrg
	for _, f := range []uint8{syn, syn | urg, syn | ack, rst, rst | ack, fin | ack, fin | ack | urg, ack, ack | urg} {
		v[f] = true
	}
	return
}()

// tcpFlagsValid reports whether a segment's flags are a valid combination.
func tcpFlagsValid(flags uint8) bool {
	return tcpValidFlags[flags&^(header.TCPPsh|0x40|0x80)]
}

// newTCPWin is the window state of a connection its first segment
// creates (Linux's tcp_new, then tcp_in_window on that segment): from a
// SYN, the sender's window and options; from a segment picked up
// mid-stream, what it shows, with SACK assumed and no window checks
// (nf_conntrack_tcp_loose connections are tracked liberally).
func newTCPWin(w *tcpWin, s *tcpSeg, st flowtable.State) {
	*w = tcpWin{}
	o := &w.seen[0]
	o.end = s.end
	o.maxWin = max(uint32(s.win), 1)
	if st == flowtable.TCPSynSent {
		o.maxEnd = s.end
		o.flags = synOptions(s.opts)
	} else {
		o.maxEnd = s.end + o.maxWin
		o.flags = twfSackPerm | twfLiberal
		w.seen[1].flags = twfSackPerm | twfLiberal
	}
	inWindow(w, flowtable.StateNone, flowtable.DirOrig, s, false, false)
	w.setLastIndexDir(s.index, flowtable.DirOrig)
}

// newTCPProto prepares a new TCP connection's window state (p.protoInit,
// when the table keeps it) and timeout class (p.newTCPClass) from its
// first segment: a connection picked up mid-stream is timed as
// unacknowledged until the other side answers.
func (p *Pipeline) newTCPProto(frame []byte, m *meta, st flowtable.State) {
	p.newTCPClass = flowtable.TimeoutOfState
	if st == flowtable.TCPEstablished {
		p.newTCPClass = flowtable.TimeoutUnacked
	}
	if !p.d.Table.HasProto() {
		return
	}
	var s tcpSeg
	var w tcpWin
	readSeg(frame, m, &s)
	newTCPWin(&w, &s, st)
	w.words(&p.protoInit)
	// As Linux times it: a window not yet seen counts as zero.
	if c := w.timeoutClass(s.index, p.tp.maxRetrans); c != flowtable.TimeoutOfState {
		p.newTCPClass = c
	}
}

// fastInWindow is the established path's window step: inWindow, then
// the timeout class, for a quiet TCP segment (an ACK of an ESTABLISHED
// connection, assured or not answered yet) in direction dir of a
// connection with protocol state ps and status word status. The segment
// is frame's, its TCP header at l4 behind an IPv4 header without options
// of ipLen bytes in all. It works on the connection's words in place: it
// loads what it compares and stores what changes. For a segment in
// window (or accepted unchanged by liberal tracking) it returns the
// timeout class and true; for any other (out of window, ignored, a first
// segment of a direction), false with nothing changed, for handle to
// take. TestFastInWindow holds it to inWindow.
func fastInWindow(ps *flowtable.ProtoState, dir flowtable.Dir, frame []byte, l4, ipLen uint16, status uint32, tp *tcpParams) (uint32, bool) {
	th := tcpFields(frame, l4)
	be := binary.BigEndian
	seq, ack, rawWin := be.Uint32(th[header.TCPSeqNum:]), be.Uint32(th[header.TCPAckNum:]), be.Uint16(th[header.TCPWindow:])
	doff := uint16(th[header.TCPDataOffset]>>4) * 4
	end := seq + uint32(ipLen-header.IPv4MinLen-doff)
	sp, rp := tcpDir(ps, dir), tcpDir(ps, dir^1)
	sFlags, rFlags := sp[twFlags].Load(), rp[twFlags].Load()
	sEnd, sMaxEnd, sMaxWin := sp[twEnd].Load(), sp[twMaxEnd].Load(), sp[twMaxWin].Load()
	rEnd, rMaxWin := rp[twEnd].Load(), rp[twMaxWin].Load()
	if sMaxWin == 0 {
		return 0, false
	}
	sack := ack
	// Options other than an aligned timestamp alone (the common case) may
	// hold SACK blocks.
	if doff > header.TCPMinLen && rFlags&twfSackPerm != 0 &&
		(doff != header.TCPMinLen+12 || be.Uint32(tcpFields(frame, l4+header.TCPMinLen)[:4]) != tsAligned) {
		sack = sackEdge(frame[l4+header.TCPMinLen:l4+doff], ack)
	}
	last := ps[twLast].Load()
	retrans := ps[twRetrans].Load()
	// sMaxWin, not zero, is the lag an ACK may have (maxAckWindow).
	if !before(seq, sMaxEnd+1) || !before(sack, rEnd+1) ||
		rMaxWin != 0 && !after(end, sEnd-rMaxWin-1) || !after(sack, rEnd-sMaxWin-1) {
		// Out of window: accepted unchanged only by liberal tracking.
		if !tp.liberal && sFlags&twfLiberal == 0 {
			return 0, false
		}
		if nl := last&^(0xf<<16) | uint32(tcpAck)<<16 | uint32(dir)<<19; nl != last {
			storeWord(&ps[twLast], nl)
			last = nl
		}
	} else {
		oFlags, oRFlags := sFlags, rFlags
		win := uint32(rawWin) << (sFlags & twfScaleMsk)
		if sw := win + (sack - ack); sMaxWin < sw {
			storeWord(&sp[twMaxWin], sw)
		}
		if after(end, sEnd) {
			storeWord(&sp[twEnd], end)
			sFlags |= twfUnacked
		}
		if sFlags&twfMaxAck == 0 {
			storeWord(&sp[twMaxAck], ack)
			sFlags |= twfMaxAck
		} else if after(ack, sp[twMaxAck].Load()) {
			storeWord(&sp[twMaxAck], ack)
		}
		if rMaxWin != 0 && after(end, sMaxEnd) {
			storeWord(&rp[twMaxWin], rMaxWin+end-sMaxEnd)
		}
		if rMaxEnd := rp[twMaxEnd].Load(); after(sack+win, rMaxEnd-1) {
			v := sack + win
			if win == 0 {
				v++
			}
			storeWord(&rp[twMaxEnd], v)
		}
		if ack == rEnd {
			rFlags &^= twfUnacked
		}
		if sFlags != oFlags {
			storeWord(&sp[twFlags], sFlags)
		}
		if rFlags != oRFlags {
			storeWord(&rp[twFlags], rFlags)
		}
		// Retransmissions: the same segment again, in the same direction.
		if flowtable.Dir(last>>19&1) == dir && uint16(last) == rawWin && ps[twLastSeq].Load() == seq && ps[twLastAck].Load() == ack && ps[twLastEnd].Load() == end {
			if retrans < 255 {
				retrans++
				storeWord(&ps[twRetrans], retrans)
			}
		} else {
			storeWord(&ps[twLastSeq], seq)
			storeWord(&ps[twLastAck], ack)
			storeWord(&ps[twLastEnd], end)
			if retrans != 0 {
				retrans = 0
				storeWord(&ps[twRetrans], 0)
			}
		}
		if nl := last&^(0xffff|0xf<<16) | uint32(rawWin) | uint32(tcpAck)<<16 | uint32(dir)<<19; nl != last {
			storeWord(&ps[twLast], nl)
			last = nl
		}
	}
	// The timeout class (timeoutClass), a connection not answered yet
	// timed as unacknowledged.
	var class uint32
	switch {
	case retrans >= tp.maxRetrans:
		class = flowtable.TimeoutRetrans
	case (sFlags|rFlags)&twfUnacked != 0:
		class = flowtable.TimeoutUnacked
	case uint16(last) == 0:
		class = flowtable.TimeoutRetrans
	}
	if status&flowtable.FlagSeenReply == 0 && class == flowtable.TimeoutOfState {
		class = flowtable.TimeoutUnacked
	}
	return class, true
}
