package flowtable

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// State is a connection's protocol state. One enumeration covers every
// protocol; each state has its own timeout.
type State uint8

// The states. TCP's follow Linux's nf_conntrack_proto_tcp, including
// SYN_SENT2 (simultaneous open), which Linux times like SYN_SENT. UDP is
// UDP until it becomes a stream (UDPStream, after replies), ICMP and every
// other protocol have one state each; whether they have been replied to is
// the FlagSeenReply flag.
const (
	StateNone State = iota // a free record
	TCPSynSent
	TCPSynRecv
	TCPEstablished
	TCPFinWait
	TCPCloseWait
	TCPLastAck
	TCPTimeWait
	TCPClose
	TCPSynSent2
	UDP
	UDPStream
	ICMP
	Generic
	numStates
)

var stateNames = [numStates]string{
	StateNone:      "NONE",
	TCPSynSent:     "SYN_SENT",
	TCPSynRecv:     "SYN_RECV",
	TCPEstablished: "ESTABLISHED",
	TCPFinWait:     "FIN_WAIT",
	TCPCloseWait:   "CLOSE_WAIT",
	TCPLastAck:     "LAST_ACK",
	TCPTimeWait:    "TIME_WAIT",
	TCPClose:       "CLOSE",
	TCPSynSent2:    "SYN_SENT2",
	UDP:            "UDP",
	UDPStream:      "UDP_STREAM",
	ICMP:           "ICMP",
	Generic:        "GENERIC",
}

// String returns the state's conntrack name (TCP states as conntrack -L
// prints them).
func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// IsTCP reports whether s is a TCP state.
func (s State) IsTCP() bool { return s >= TCPSynSent && s <= TCPSynSent2 }

// The status word of a record: the state in the low four bits, then flags.
// Bits 16–31 belong to the caller (the dataplane keeps protocol details
// there, such as which side sent a FIN).
const (
	stateMask uint32 = 0xf

	// FlagSeenReply: a packet has been seen in the reply direction
	// (conntrack's IPS_SEEN_REPLY; a flow without it is [UNREPLIED]).
	FlagSeenReply uint32 = 1 << 4
	// FlagAssured: the connection is established enough never to be
	// evicted when the table is full (IPS_ASSURED).
	FlagAssured uint32 = 1 << 5
	// FlagSrcNAT and FlagDstNAT: the connection's source or destination
	// is translated (conntrack's SNAT and DNAT ctstates).
	FlagSrcNAT uint32 = 1 << 6
	FlagDstNAT uint32 = 1 << 7

	// flagConfirmed: both tuples are in the index and the insert won any
	// race; lookups ignore records without it.
	flagConfirmed uint32 = 1 << 8
	// flagDying: the record has been killed (expired, deleted or evicted)
	// and unlinked by whoever set this bit; lookups ignore it.
	flagDying uint32 = 1 << 9
	// flagRetired: the owner has put the dying record in limbo.
	flagRetired uint32 = 1 << 10
	// flagTimedOut: set with flagDying when the kill was an expiry.
	flagTimedOut uint32 = 1 << 11

	// The timeout class (two bits): which timeout runs from the last
	// packet. TimeoutOfState, the state's own; the others are the shorter
	// of the state's and nf_conntrack_tcp_timeout_unacknowledged
	// (TimeoutUnacked), or nf_conntrack_tcp_timeout_max_retrans
	// (TimeoutRetrans); TimeoutClose is nf_conntrack_tcp_timeout_close
	// whatever the state (Linux's timeout after a reset that leaves the
	// state as it was). A caller sets the class with the state.
	TimeoutOfState   uint32 = 0
	TimeoutUnacked   uint32 = 1 << 12
	TimeoutRetrans   uint32 = 2 << 12
	TimeoutClose     uint32 = 3 << 12
	TimeoutClassMask uint32 = 3 << 12

	// FlagUserShift is the first bit the caller may use; FlagUserMask
	// covers all of them.
	FlagUserShift        = 16
	FlagUserMask  uint32 = 0xffff << FlagUserShift

	// CallerFlags are the flag bits a caller may set at insert and change
	// with UpdateStatus.
	CallerFlags = FlagSeenReply | FlagAssured | FlagSrcNAT | FlagDstNAT | TimeoutClassMask | FlagUserMask
)

// timeoutIndex is the slot of timeouts that applies to a status word: the
// state in the low four bits, the timeout class in the next two.
func timeoutIndex(s uint32) uint32 { return s&stateMask | s>>classShift&classIndexMask }

// classShift and classIndexMask move a status word's timeout class next to
// its state, as timeoutIndex does (the assembly's CMPREC reads them from
// go_asm.h).
const (
	classShift     = 8
	classIndexMask = TimeoutClassMask >> classShift
)

// StatusState extracts the state from a status word.
func StatusState(s uint32) State { return State(s & stateMask) }

// WithState returns the status word s with its state replaced.
func WithState(s uint32, st State) uint32 { return s&^stateMask | uint32(st) }

// Timeout names, in the order `sysctl net.netfilter` lists them, with Linux's defaults.
var timeoutDefs = []struct {
	name   string
	states []State
	dflt   time.Duration
}{
	{"nf_conntrack_generic_timeout", []State{Generic}, 600 * time.Second},
	{"nf_conntrack_icmp_timeout", []State{ICMP}, 30 * time.Second},
	{"nf_conntrack_tcp_timeout_close", []State{TCPClose}, 10 * time.Second},
	{"nf_conntrack_tcp_timeout_close_wait", []State{TCPCloseWait}, 60 * time.Second},
	{"nf_conntrack_tcp_timeout_established", []State{TCPEstablished}, 432000 * time.Second},
	{"nf_conntrack_tcp_timeout_fin_wait", []State{TCPFinWait}, 120 * time.Second},
	{"nf_conntrack_tcp_timeout_last_ack", []State{TCPLastAck}, 30 * time.Second},
	{"nf_conntrack_tcp_timeout_max_retrans", nil, 300 * time.Second},
	{"nf_conntrack_tcp_timeout_syn_recv", []State{TCPSynRecv}, 60 * time.Second},
	{"nf_conntrack_tcp_timeout_syn_sent", []State{TCPSynSent, TCPSynSent2}, 120 * time.Second},
	{"nf_conntrack_tcp_timeout_time_wait", []State{TCPTimeWait}, 120 * time.Second},
	{"nf_conntrack_tcp_timeout_unacknowledged", nil, 300 * time.Second},
	{"nf_conntrack_udp_timeout", []State{UDP}, 30 * time.Second},
	{"nf_conntrack_udp_timeout_stream", []State{UDPStream}, 120 * time.Second},
}

// ErrUnknownTimeout is returned for a timeout name the table does not have.
var ErrUnknownTimeout = errors.New("unknown timeout")

// ErrBadTimeout is returned for a timeout out of range.
var ErrBadTimeout = errors.New("timeout out of range")

// TimeoutNames lists the timeout names in sysctl order.
func TimeoutNames() []string {
	n := make([]string, len(timeoutDefs))
	for i, d := range timeoutDefs {
		n[i] = d.name
	}
	return n
}

// DefaultTimeout returns Linux's default for a timeout name.
func DefaultTimeout(name string) (time.Duration, error) {
	for _, d := range timeoutDefs {
		if d.name == name {
			return d.dflt, nil
		}
	}
	return 0, fmt.Errorf("%w %q", ErrUnknownTimeout, name)
}

// timeouts holds the timeout of every state under every timeout class,
// in ticks, indexed by timeoutIndex. Writers store, packet paths load: a
// change is seen by the next lookup, packet or sweep. It has a slot for
// every value of a status word's state and class bits, so that indexing
// it by them needs no bounds check; states past numStates stay zero.
type timeouts [64]atomic.Uint32

// timeoutSet is what the sysctls hold: a timeout per state and the two
// TCP timeouts that shorten a state's (unacknowledged, max_retrans).
type timeoutSet struct {
	state           [numStates]uint32
	unacked, retran uint32
}

func (set *timeoutSet) defaults() {
	for _, d := range timeoutDefs {
		set.set(d.name, uint32(Ticks(d.dflt)))
	}
}

func (set *timeoutSet) set(name string, v uint32) bool {
	switch name {
	case "nf_conntrack_tcp_timeout_unacknowledged":
		set.unacked = v
		return true
	case "nf_conntrack_tcp_timeout_max_retrans":
		set.retran = v
		return true
	}
	for _, d := range timeoutDefs {
		if d.name == name {
			for _, s := range d.states {
				set.state[s] = v
			}
			return true
		}
	}
	return false
}

func (set *timeoutSet) get(name string) (uint32, bool) {
	switch name {
	case "nf_conntrack_tcp_timeout_unacknowledged":
		return set.unacked, true
	case "nf_conntrack_tcp_timeout_max_retrans":
		return set.retran, true
	}
	for _, d := range timeoutDefs {
		if d.name == name {
			return set.state[d.states[0]], true
		}
	}
	return 0, false
}

// publish stores every slot of ts from set.
func (ts *timeouts) publish(set *timeoutSet) {
	for s := range numStates {
		v := set.state[s]
		ts[s].Store(v)
		ts[16|s].Store(min(v, set.unacked))
		ts[32|s].Store(min(v, set.retran))
		ts[48|s].Store(set.state[TCPClose])
	}
}

// SetTimeout sets a timeout by its sysctl name. It applies to existing
// connections from their next packet or expiry check.
func (t *Table) SetTimeout(name string, d time.Duration) error {
	if d < Tick || d > MaxTimeout {
		return fmt.Errorf("%w: %s=%v (from %v to %v)", ErrBadTimeout, name, d, Tick, MaxTimeout)
	}
	t.toMu.Lock()
	defer t.toMu.Unlock()
	if !t.toSet.set(name, uint32(Ticks(d))) {
		return fmt.Errorf("%w %q", ErrUnknownTimeout, name)
	}
	t.timeouts.publish(&t.toSet)
	return nil
}

// Timeout returns a timeout by its sysctl name.
func (t *Table) Timeout(name string) (time.Duration, error) {
	t.toMu.Lock()
	defer t.toMu.Unlock()
	if v, ok := t.toSet.get(name); ok {
		return Time(v).Duration(), nil
	}
	return 0, fmt.Errorf("%w %q", ErrUnknownTimeout, name)
}

// StatusTimeout returns the timeout that applies now to a connection
// with status word s (its state and timeout class).
func (t *Table) StatusTimeout(s uint32) time.Duration {
	return Time(t.timeouts[timeoutIndex(s)].Load()).Duration()
}

// StateTimeout returns the timeout that applies to a state now.
func (t *Table) StateTimeout(s State) time.Duration {
	if s >= numStates {
		return 0
	}
	return Time(t.timeouts[s].Load()).Duration()
}
