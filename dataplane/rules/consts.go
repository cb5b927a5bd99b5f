package rules

import "strings"

// CtState is a set of conntrack state bits. A packet carries exactly one
// of CtNew, CtEstablished, CtRelated or CtInvalid, plus CtSNAT and/or
// CtDNAT when its connection is source- or destination-translated. A
// -m state / -m conntrack match holds any combination and matches when the
// packet has one of its bits.
type CtState uint8

const (
	CtNew CtState = 1 << iota
	CtEstablished
	CtRelated
	CtInvalid
	// CtUntracked never occurs in xnat (there is no raw table and no
	// NOTRACK): a rule may name it, as iptables-save files do, and it
	// simply never matches.
	CtUntracked
	CtSNAT
	CtDNAT
)

// ctNames lists the state names in the order iptables prints them.
var ctNames = []struct {
	bit  CtState
	name string
}{
	{CtInvalid, "INVALID"}, {CtNew, "NEW"}, {CtRelated, "RELATED"}, {CtEstablished, "ESTABLISHED"},
	{CtUntracked, "UNTRACKED"}, {CtSNAT, "SNAT"}, {CtDNAT, "DNAT"},
}

// String formats the set as iptables does: INVALID,NEW,RELATED,...
func (s CtState) String() string {
	var b strings.Builder
	for _, n := range ctNames {
		if s&n.bit != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(n.name)
		}
	}
	return b.String()
}

// CtStateByName returns the bit of one state name.
func CtStateByName(name string) (CtState, bool) {
	for _, n := range ctNames {
		if n.name == name {
			return n.bit, true
		}
	}
	return 0, false
}

// RejectType is what REJECT answers with.
type RejectType uint8

const (
	RejectPortUnreachable RejectType = iota // the default
	RejectNetUnreachable
	RejectHostUnreachable
	RejectProtoUnreachable
	RejectNetProhibited
	RejectHostProhibited
	RejectAdminProhibited
	RejectTCPReset
)

var rejectNames = [...]string{
	RejectPortUnreachable:  "icmp-port-unreachable",
	RejectNetUnreachable:   "icmp-net-unreachable",
	RejectHostUnreachable:  "icmp-host-unreachable",
	RejectProtoUnreachable: "icmp-proto-unreachable",
	RejectNetProhibited:    "icmp-net-prohibited",
	RejectHostProhibited:   "icmp-host-prohibited",
	RejectAdminProhibited:  "icmp-admin-prohibited",
	RejectTCPReset:         "tcp-reset",
}

func (r RejectType) String() string {
	if int(r) < len(rejectNames) {
		return rejectNames[r]
	}
	return "reject(?)"
}

// RejectByName accepts the names iptables accepts, aliases included.
func RejectByName(name string) (RejectType, bool) {
	for i, n := range rejectNames {
		if n == name {
			return RejectType(i), true
		}
	}
	switch name {
	case "net-unreach":
		return RejectNetUnreachable, true
	case "host-unreach":
		return RejectHostUnreachable, true
	case "port-unreach":
		return RejectPortUnreachable, true
	case "proto-unreach":
		return RejectProtoUnreachable, true
	case "net-prohib":
		return RejectNetProhibited, true
	case "host-prohib":
		return RejectHostProhibited, true
	case "admin-prohib":
		return RejectAdminProhibited, true
	case "tcp-rst":
		return RejectTCPReset, true
	}
	return 0, false
}

// ICMP returns the ICMP type and code the dataplane sends for an ICMP
// reject type (type 3, destination unreachable); ok is false for
// RejectTCPReset.
func (r RejectType) ICMP() (typ, code uint8, ok bool) {
	switch r {
	case RejectNetUnreachable:
		return 3, 0, true
	case RejectHostUnreachable:
		return 3, 1, true
	case RejectProtoUnreachable:
		return 3, 2, true
	case RejectPortUnreachable:
		return 3, 3, true
	case RejectNetProhibited:
		return 3, 9, true
	case RejectHostProhibited:
		return 3, 10, true
	case RejectAdminProhibited:
		return 3, 13, true
	}
	return 0, 0, false
}

// IP protocol numbers used by the matches.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// TCP flag bits as in the TCP header.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPUrg = 0x20
)

// Syslog levels, used by LOG (default 4, warning).
var LogLevelNames = [8]string{"emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"}

// DefaultLogLevel is LOG's level when --log-level is not given.
const DefaultLogLevel = 4

// MaxLogPrefix is the longest --log-prefix iptables accepts.
const MaxLogPrefix = 29

// MaxComment is the longest --comment iptables accepts.
const MaxComment = 255

// MaxChainName is the longest chain name iptables accepts.
const MaxChainName = 28

// MaxIfaceName is the longest interface name (IFNAMSIZ-1).
const MaxIfaceName = 15

// DefaultLimitAvg and DefaultLimitBurst are -m limit's defaults, 3/hour
// and 5.
const (
	LimitScale        = 10000
	DefaultLimitAvg   = LimitScale * 3600 / 3
	DefaultLimitBurst = 5
)
