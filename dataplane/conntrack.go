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
			nw = flowtable.WithState(nw, next)
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
