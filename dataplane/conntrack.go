package dataplane

import (
	"xnat/dataplane/header"
	"xnat/flowtable"
)

// TCP packet classes, as Linux's get_conntrack_index orders them.
const (
	tcpSyn = iota
	tcpSynAck
	tcpFin
	tcpAck
	tcpRst
	tcpNone
)

func tcpIndex(flags uint8) int {
	switch {
	case flags&header.TCPRst != 0:
		return tcpRst
	case flags&header.TCPSyn != 0:
		if flags&header.TCPAck != 0 {
			return tcpSynAck
		}
		return tcpSyn
	case flags&header.TCPFin != 0:
		return tcpFin
	case flags&header.TCPAck != 0:
		return tcpAck
	}
	return tcpNone
}

// Pseudo-states of the transition table: invalid and ignore.
const (
	sIV = flowtable.State(0xfe)
	sIG = flowtable.State(0xff)
)

// tcpStates is Linux's TCP conntrack transition table
// (nf_conntrack_proto_tcp.c, tcp_conntracks): [direction][packet
// class][current state] → new state. Columns are NONE, SYN_SENT,
// SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE,
// SYN_SENT2.
var tcpStates = [2][6][10]flowtable.State{
	{ // original direction
		/*syn*/ {ss, ss, sIG, sIG, sIG, sIG, sIG, ss, ss, s2},
		/*synack*/ {sIV, sIV, sr, sIV, sIV, sIV, sIV, sIV, sIV, sr},
		/*fin*/ {sIV, sIV, fw, fw, la, la, la, tw, cl, sIV},
		/*ack*/ {es, sIV, es, es, cw, cw, tw, tw, cl, sIV},
		/*rst*/ {sIV, cl, cl, cl, cl, cl, cl, cl, cl, cl},
		/*none*/ {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
	},
	{ // reply direction
		/*syn*/ {sIV, s2, sIV, sIV, sIV, sIV, sIV, ss, sIV, s2},
		/*synack*/ {sIV, sr, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sr},
		/*fin*/ {sIV, sIV, fw, fw, la, la, la, tw, cl, sIV},
		/*ack*/ {sIV, sIG, sr, es, cw, cw, tw, tw, cl, sIG},
		/*rst*/ {sIV, cl, cl, cl, cl, cl, cl, cl, cl, cl},
		/*none*/ {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
	},
}

const (
	ss = flowtable.TCPSynSent
	sr = flowtable.TCPSynRecv
	es = flowtable.TCPEstablished
	fw = flowtable.TCPFinWait
	cw = flowtable.TCPCloseWait
	la = flowtable.TCPLastAck
	tw = flowtable.TCPTimeWait
	cl = flowtable.TCPClose
	s2 = flowtable.TCPSynSent2
)

// tcpColumn maps a flowtable TCP state to its table column.
func tcpColumn(s flowtable.State) int {
	if s == flowtable.TCPSynSent2 {
		return 9
	}
	if s.IsTCP() {
		return int(s)
	}
	return 0
}

// TCPTransition returns the state Linux's conntrack moves a TCP
// connection to from state s on a segment with the given flags in
// direction dir, and whether the segment is valid (an ignored segment is
// valid and keeps the state).
func TCPTransition(s flowtable.State, dir flowtable.Dir, flags uint8) (flowtable.State, bool) {
	n := tcpStates[dir][tcpIndex(flags)][tcpColumn(s)]
	switch n {
	case sIV:
		return s, false
	case sIG:
		return s, true
	}
	return n, true
}

// newTCPState is the state of a connection created by a segment with
// these flags: SYN_SENT for a SYN, ESTABLISHED for a mid-stream segment
// when loose pickup is on, else none (invalid).
func newTCPState(flags uint8, loose bool) (flowtable.State, bool) {
	if !tcpFlagsValid(flags) {
		return 0, false
	}
	n := tcpStates[0][tcpIndex(flags)][0]
	switch {
	case n == flowtable.TCPSynSent:
		return n, true
	case n == flowtable.TCPEstablished && loose:
		return n, true
	}
	return 0, false
}

// udpStreamAfter is how long (seconds) a UDP connection must have lived,
// with replies, before it is a stream (Linux: 2 seconds).
const udpStreamAfter = 2

// The flow-table caller word: the NAT pool in the low 16 bits, the
// creation time in seconds (modulo 65536) in the high 16.
func makeAux(pool uint16, nowSec uint32) uint32 { return uint32(pool) | nowSec<<16 }
func auxPool(aux uint32) uint16                 { return uint16(aux) }
func auxBorn(aux uint32) uint16                 { return uint16(aux >> 16) }

// ctVerdict is what tracking a packet on a connection decided.
type ctVerdict uint8

const (
	ctOK      ctVerdict = iota // tracked; forward as the filter says
	ctInvalid                  // not valid for the state: INVALID
	ctReopen                   // a SYN reopening a closed connection: kill it, start anew
	ctKill                     // forward this packet, then end the connection
	ctIgnore                   // forward as ctOK, but the connection is not refreshed
)

// quiet reports whether track would find a packet valid and change
// nothing in its connection's status word, only the last-seen time: a
// UDP packet of a stream (replied), or of an unreplied connection in its
// original direction; a TCP segment with ACK and none of SYN, FIN and RST on an
// ESTABLISHED connection that is assured, or unreplied with the segment in
// the original direction. The established path takes only such packets
// (TestQuietAgreesWithTrack holds the two together).
func quiet(status uint32, dir flowtable.Dir, kind, tcpFlags uint8) bool {
	st := flowtable.StatusState(status)
	unreplied := status&flowtable.FlagSeenReply == 0
	switch kind {
	case kUDP:
		orig := dir == flowtable.DirOrig
		return st == flowtable.UDPStream && (orig || !unreplied) || st == flowtable.UDP && unreplied && orig
	case kTCP:
		if st != flowtable.TCPEstablished || tcpFlags&(header.TCPSyn|header.TCPFin|header.TCPRst|header.TCPAck) != header.TCPAck {
			return false
		}
		const both = flowtable.FlagSeenReply | flowtable.FlagAssured
		return status&both == both || unreplied && dir == flowtable.DirOrig
	}
	return false
}

// quietSet is quiet as a table, for the established path: indexed by
// quietIndex, true where quiet is for a TCP segment with ACK alone among
// SYN, FIN, RST and ACK, or for any UDP packet. Its upper half, which
// notQuiet leads to, is all false.
var quietSet = func() (set [512]bool) {
	for i := range 256 {
		status, dir, kind := uint32(i)&0x3f, flowtable.Dir(i>>6&1), uint8(kUDP)
		if i&0x80 != 0 {
			kind = kTCP
		}
		set[i] = quiet(status, dir, kind, header.TCPAck)
	}
	return set
}()

// notQuiet is the quietBase of a packet the established path never takes.
const notQuiet = 0x100

// quietBase is a packet's part of its index in quietSet, which parse
// finds: 0 for UDP, 0x80 for a TCP segment with ACK alone among SYN, FIN,
// RST and ACK; for any other TCP segment, any other protocol, and any
// packet with IP options (ihl5 false), notQuiet.
func quietBase(kind, tcpFlags uint8, ihl5 bool) uint16 {
	switch {
	case !ihl5:
		return notQuiet
	case kind == kUDP:
		return 0
	case kind == kTCP && tcpFlags&(header.TCPSyn|header.TCPFin|header.TCPRst|header.TCPAck) == header.TCPAck:
		return 0x80
	}
	return notQuiet
}

// quietIndex is a packet's index in quietSet: the state, SEEN_REPLY and
// ASSURED (the low six bits of its connection's status word), the
// direction, and its quietBase.
func quietIndex(status uint32, dir flowtable.Dir, base uint16) uint {
	return (uint(status&0x3f) | uint(dir)<<6 | uint(base)) & 511
}

// track updates a connection with one packet in direction dir: the
// protocol state, SEEN_REPLY and ASSURED, and the last-seen time. It
// returns the verdict and whether the connection has now seen a reply.
func track(f *flowtable.Flow, dir flowtable.Dir, proto, tcpFlags uint8, now flowtable.Time, nowSec uint32) (ctVerdict, bool) {
	for try := 0; ; try++ {
		old := f.Status()
		st := flowtable.StatusState(old)
		nw := old
		v := ctOK
		seen := old&flowtable.FlagSeenReply != 0
		switch proto {
		case header.ProtoTCP:
			next, valid := TCPTransition(st, dir, tcpFlags)
			if !valid {
				v = ctInvalid
				break
			}
			if dir == flowtable.DirOrig && tcpIndex(tcpFlags) == tcpSyn && (st == flowtable.TCPTimeWait || st == flowtable.TCPClose) {
				return ctReopen, seen
			}
			// A reset as the first answer: the connection never was
			// (Linux kills it at once).
			if dir == flowtable.DirReply && !seen && tcpIndex(tcpFlags) == tcpRst {
				return ctKill, true
			}
			if seen && old&flowtable.FlagAssured == 0 && (st == flowtable.TCPSynRecv || st == flowtable.TCPEstablished) && next == flowtable.TCPEstablished {
				nw |= flowtable.FlagAssured
			}
			nw = flowtable.WithState(nw, next) &^ flowtable.TimeoutClassMask
			if dir == flowtable.DirOrig && !seen && next == flowtable.TCPEstablished {
				nw |= flowtable.TimeoutUnacked // picked up mid-stream, not answered yet
			}
		case header.ProtoUDP:
			if seen && st == flowtable.UDP && uint16(nowSec)-auxBorn(f.Aux()) >= udpStreamAfter {
				nw = flowtable.WithState(nw, flowtable.UDPStream) | flowtable.FlagAssured
			}
		}
		if dir == flowtable.DirReply {
			nw |= flowtable.FlagSeenReply
		}
		if nw == old || f.UpdateStatus(old, nw) || try == 8 {
			if v == ctOK {
				f.Touch(now)
			}
			return v, nw&flowtable.FlagSeenReply != 0
		}
	}
}

// tcpParams are the TCP tracking sysctls, read once a batch.
type tcpParams struct {
	liberal    bool   // nf_conntrack_tcp_be_liberal
	ignoreRst  bool   // nf_conntrack_tcp_ignore_invalid_rst
	maxRetrans uint32 // nf_conntrack_tcp_max_retrans
}

// trackTCP is track for a TCP segment of a connection whose window is
// tracked (ps): Linux's nf_conntrack_tcp_packet, the state transition
// with its special cases (ignored segments, reopening, resets) and
// tcp_in_window. An out-of-window segment is INVALID and changes
// nothing; an ignored one changes nothing but the notes Linux keeps of
// it, and does not refresh the connection.
func trackTCP(f *flowtable.Flow, ps *flowtable.ProtoState, dir flowtable.Dir, s *tcpSeg, tp *tcpParams, now flowtable.Time) (ctVerdict, bool) {
	old := f.Status()
	seen := old&flowtable.FlagSeenReply != 0
	if !tcpFlagsValid(s.flags) {
		return ctInvalid, seen
	}
	st := flowtable.StatusState(old)
	var w, w0 tcpWin
	w.load(ps)
	w0 = w
	index := s.index
	next := tcpStates[dir][index][tcpColumn(st)]
	switch next {
	case flowtable.TCPSynSent:
		if st < flowtable.TCPTimeWait {
			break
		}
		// A SYN in TIME_WAIT or CLOSE: a closed or aborted connection
		// reopened. Kill it and start anew.
		if (w.seen[0].flags|w.seen[1].flags)&twfCloseIni != 0 || w.lastDir() == dir && w.lastIndex() == tcpRst {
			return ctReopen, seen
		}
		fallthrough
	case sIG:
		// Ignored: conntrack may be out of step with the endpoints. A
		// SYN/ACK answering a SYN ignored before resynchronises it.
		if index == tcpSynAck && w.lastIndex() == tcpSyn && w.lastDir() != dir && s.ack == w.lastEnd {
			ld := w.lastDir()
			d := &w.seen[ld]
			d.end, d.maxEnd = w.lastEnd, w.lastEnd
			d.maxWin = max(uint32(w.lastWin()), 1)
			lf := w.lastFlags()
			d.flags = w.lastWScale()
			if lf&twlScale != 0 {
				d.flags |= twfScale
			}
			if lf&twlSackPerm != 0 {
				d.flags |= twfSackPerm
			}
			w.setLastFlags(lf &^ twlChallenge)
			w.seen[dir] = twDir{}
			st, next = flowtable.TCPSynSent, flowtable.TCPSynRecv
			break
		}
		w.setLastIndexDir(index, dir)
		w.lastSeq, w.lastEnd = s.seq, s.end
		w.last = w.last&^0xffff | uint32(s.win)
		if index == tcpSyn && dir == flowtable.DirOrig {
			o := synOptions(s.opts)
			var lf uint32
			if o&twfScale != 0 {
				lf |= twlScale
			}
			if o&twfSackPerm != 0 {
				lf |= twlSackPerm
			}
			if st == flowtable.TCPLastAck {
				lf |= twlChallenge
			}
			w.last = w.last&^(0xf<<20) | (o&twfScaleMsk)<<20
			w.setLastFlags(lf)
		}
		if st == flowtable.TCPSynSent && index == tcpAck && dir == flowtable.DirReply {
			w.lastAck = s.ack // perhaps a challenge ACK answering the SYN
		}
		w.store(ps, &w0)
		return ctIgnore, markSeen(f, dir, old)
	case sIV:
		return ctInvalid, seen
	case flowtable.TCPTimeWait:
		// A challenge ACK (RFC 5961) answering a SYN in LAST_ACK does not
		// acknowledge the last FIN.
		if st == flowtable.TCPLastAck && index == tcpAck && w.lastDir() != dir && w.lastIndex() == tcpSyn && w.lastFlags()&twlChallenge != 0 {
			w.setLastFlags(w.lastFlags() &^ twlChallenge)
			w.store(ps, &w0)
			return ctIgnore, markSeen(f, dir, old)
		}
	case flowtable.TCPSynSent2:
		w.setLastFlags(w.lastFlags() | twlSimOpen)
	case flowtable.TCPSynRecv:
		if dir == flowtable.DirReply && index == tcpAck && w.lastFlags()&twlSimOpen != 0 {
			next = flowtable.TCPEstablished
		}
	case flowtable.TCPClose:
		if index != tcpRst {
			break
		}
		if closing(st) {
			// Closing already, the connection's numbers may belong to
			// one before: the reset is taken without a check.
			goto inWindow
		}
		if r, ok := rstCheck(&w, st, dir, s, old, tp); ok {
			if r == ctInvalid {
				return ctInvalid, seen
			}
			if r == ctKill { // in window whatever the window says
				goto inWindow
			}
			if r == ctIgnore { // an inexact reset: the state stays, for the challenge ACK
				next = st
			}
		}
	}
	switch inWindow(&w, st, dir, s, tp.liberal, false) {
	case winIgnore:
		w.store(ps, &w0)
		return ctIgnore, markSeen(f, dir, old)
	case winInvalid:
		handleInvalid(f, &w, dir, index, old)
		w.store(ps, &w0)
		return ctInvalid, seen
	}
inWindow:
	w.setLastIndexDir(index, dir)
	if st != next && next == flowtable.TCPFinWait {
		w.seen[dir].flags |= twfCloseIni
	}
	class := w.timeoutClass(index, tp.maxRetrans)
	w.store(ps, &w0)
	v := ctOK
	if !seen {
		switch {
		case index == tcpRst:
			// A reset as the only answer: the connection never was.
			if dir == flowtable.DirReply {
				return ctKill, true
			}
			v = ctKill
		case index == tcpSyn && st == flowtable.TCPSynSent:
			// A retransmitted SYN does not renew the timeout.
			v = ctIgnore
		case next == flowtable.TCPEstablished && class == flowtable.TimeoutOfState:
			// Picked up mid-stream and not answered yet.
			class = flowtable.TimeoutUnacked
		}
	}
	for try := 0; ; try++ {
		nw := flowtable.WithState(old, next)&^flowtable.TimeoutClassMask | class
		if seen && old&flowtable.FlagAssured == 0 && (st == flowtable.TCPSynRecv || st == flowtable.TCPEstablished) && next == flowtable.TCPEstablished {
			nw |= flowtable.FlagAssured
		}
		if dir == flowtable.DirReply {
			nw |= flowtable.FlagSeenReply
		}
		if nw == old || f.UpdateStatus(old, nw) || try == 8 {
			if v != ctIgnore {
				f.Touch(now)
			}
			return v, nw&flowtable.FlagSeenReply != 0
		}
		old = f.Status()
		seen = old&flowtable.FlagSeenReply != 0
		if flowtable.StatusState(old) != st {
			// Another core's segment moved the state meanwhile: its
			// transition stands.
			if v != ctIgnore {
				f.Touch(now)
			}
			return v, seen
		}
	}
}

// closing reports whether a TCP state is one of a closing connection
// (Linux's tcp_can_early_drop).
func closing(st flowtable.State) bool {
	switch st {
	case flowtable.TCPFinWait, flowtable.TCPLastAck, flowtable.TCPTimeWait, flowtable.TCPClose, flowtable.TCPCloseWait:
		return true
	}
	return false
}

// markSeen sets SEEN_REPLY for a segment in the reply direction that
// conntrack let through without tracking it (ignored): as in Linux, any
// accepted reply counts. It returns whether the connection has now seen
// a reply.
func markSeen(f *flowtable.Flow, dir flowtable.Dir, old uint32) bool {
	if dir != flowtable.DirReply {
		return old&flowtable.FlagSeenReply != 0
	}
	for old&flowtable.FlagSeenReply == 0 && !f.UpdateStatus(old, old|flowtable.FlagSeenReply) {
		old = f.Status()
	}
	return true
}

// rstCheck is Linux's scrutiny of a reset before the window check. ok
// false: nothing special, the window decides. Else ctInvalid (a reset
// below the acknowledged data), ctIgnore (in window but not at the exact
// sequence number: the state stays ESTABLISHED, so that the endpoint's
// challenge ACK (RFC 5961) gets through), or ctKill (a reset answering a
// segment conntrack let through: accepted without the window check).
func rstCheck(w *tcpWin, st flowtable.State, dir flowtable.Dir, s *tcpSeg, status uint32, tp *tcpParams) (ctVerdict, bool) {
	established := st == flowtable.TCPEstablished
	assured := status&flowtable.FlagAssured != 0
	other := &w.seen[dir^1]
	var r ctVerdict
	ok := false
	if other.flags&twfMaxAck != 0 && w.lastIndex() != tcpSyn {
		switch {
		case s.seq == 0 && !established:
			// Most likely the answer to a SYN let through.
		case before(s.seq, other.maxAck) && !tp.ignoreRst:
			return ctInvalid, true
		case !established || s.seq == other.maxAck:
		case w.lastIndex() == tcpAck && w.lastDir() == dir && s.seq == w.lastEnd:
			// The end of a train of segments.
		default:
			r, ok = ctIgnore, true
		}
	}
	seenReply := status&flowtable.FlagSeenReply != 0
	if (seenReply && w.lastIndex() == tcpSyn || !assured && w.lastIndex() == tcpAck) && s.ack == w.lastEnd {
		// A reset answering a SYN or ACK let through (a SYN in window
		// then, or a half-open connection).
		return ctKill, true
	}
	if st == flowtable.TCPSynSent && w.lastIndex() == tcpAck && w.lastDir() == flowtable.DirReply && s.seq == w.lastAck {
		// A reset answering a challenge ACK let through (the reply's ACK
		// to a SYN, ignored).
		return ctKill, true
	}
	return r, ok
}

// handleInvalid is Linux's nf_tcp_handle_invalid: an assured connection
// whose FIN or reset is out of window, answering the other side's FIN or
// reset, is timed as unacknowledged, so that one whose endpoints and
// conntrack disagree does not linger for days.
func handleInvalid(f *flowtable.Flow, w *tcpWin, dir flowtable.Dir, index int, status uint32) {
	if status&flowtable.FlagAssured == 0 || index != tcpRst && index != tcpFin {
		return
	}
	if w.lastDir() != dir && (w.lastIndex() == tcpFin || w.lastIndex() == tcpRst) {
		if status&flowtable.TimeoutClassMask == flowtable.TimeoutOfState {
			f.UpdateStatus(status, status|flowtable.TimeoutUnacked)
		}
		return
	}
	w.setLastIndexDir(index, dir)
}
