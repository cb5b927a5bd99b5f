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

	// FlagUserShift is the first bit the caller may use; FlagUserMask
	// covers all of them.
	FlagUserShift        = 16
	FlagUserMask  uint32 = 0xffff << FlagUserShift

	// CallerFlags are the flag bits a caller may set at insert and change
	// with UpdateStatus.
	CallerFlags = FlagSeenReply | FlagAssured | FlagSrcNAT | FlagDstNAT | FlagUserMask
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
	{"nf_conntrack_tcp_timeout_syn_recv", []State{TCPSynRecv}, 60 * time.Second},
	{"nf_conntrack_tcp_timeout_syn_sent", []State{TCPSynSent, TCPSynSent2}, 120 * time.Second},
	{"nf_conntrack_tcp_timeout_time_wait", []State{TCPTimeWait}, 120 * time.Second},
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

// timeouts holds one timeout per state, in ticks. Writers store, packet
// paths load: a change is seen by the next lookup, packet or sweep. It has
// a slot for every value of a status word's state bits, so that indexing
// it by them needs no bounds check; those past numStates stay zero.
type timeouts [stateMask + 1]atomic.Uint32

func (ts *timeouts) setDefaults() {
	for _, d := range timeoutDefs {
		for _, s := range d.states {
			ts[s].Store(uint32(Ticks(d.dflt)))
		}
	}
}

// SetTimeout sets a timeout by its sysctl name. It applies to existing
// connections from their next packet or expiry check.
func (t *Table) SetTimeout(name string, d time.Duration) error {
	if d < Tick || d > MaxTimeout {
		return fmt.Errorf("%w: %s=%v (from %v to %v)", ErrBadTimeout, name, d, Tick, MaxTimeout)
	}
	for _, def := range timeoutDefs {
		if def.name == name {
			for _, s := range def.states {
				t.timeouts[s].Store(uint32(Ticks(d)))
			}
			return nil
		}
	}
	return fmt.Errorf("%w %q", ErrUnknownTimeout, name)
}

// Timeout returns a timeout by its sysctl name.
func (t *Table) Timeout(name string) (time.Duration, error) {
	for _, def := range timeoutDefs {
		if def.name == name {
			return Time(t.timeouts[def.states[0]].Load()).Duration(), nil
		}
	}
	return 0, fmt.Errorf("%w %q", ErrUnknownTimeout, name)
}

// StateTimeout returns the timeout that applies to a state now.
func (t *Table) StateTimeout(s State) time.Duration {
	if s >= numStates {
		return 0
	}
	return Time(t.timeouts[s].Load()).Duration()
}
