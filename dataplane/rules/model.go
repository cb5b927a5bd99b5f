package rules

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync/atomic"
)

// TableID names one of the two tables xnat implements.
type TableID uint8

const (
	Filter TableID = iota
	NAT
	NumTables
)

var tableNames = [NumTables]string{"filter", "nat"}

func (t TableID) String() string {
	if t < NumTables {
		return tableNames[t]
	}
	return fmt.Sprintf("table(%d)", uint8(t))
}

// ParseTable returns the table with the given name. mangle, raw and
// security exist in iptables but not in xnat: they are reported as
// unsupported.
func ParseTable(name string) (TableID, error) {
	switch name {
	case "filter":
		return Filter, nil
	case "nat":
		return NAT, nil
	case "mangle", "raw", "security":
		return 0, fmt.Errorf("table %q: %w", name, ErrUnsupported)
	}
	return 0, fmt.Errorf("table %q: %w", name, ErrNoTable)
}

// Hook is a netfilter hook, the place a built-in chain is entered from.
type Hook uint8

const (
	Prerouting Hook = iota
	Input
	Forward
	Output
	Postrouting
	NumHooks
)

var hookNames = [NumHooks]string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

func (h Hook) String() string {
	if h < NumHooks {
		return hookNames[h]
	}
	return fmt.Sprintf("hook(%d)", uint8(h))
}

// BuiltinHooks lists the hooks that have a built-in chain in table t, in
// the order iptables lists them.
func BuiltinHooks(t TableID) []Hook {
	switch t {
	case Filter:
		return []Hook{Input, Forward, Output}
	case NAT:
		return []Hook{Prerouting, Input, Output, Postrouting}
	}
	return nil
}

// HookByName returns the hook of a built-in chain name of table t.
func HookByName(t TableID, name string) (Hook, bool) {
	for _, h := range BuiltinHooks(t) {
		if hookNames[h] == name {
			return h, true
		}
	}
	return 0, false
}

// Effective reports whether a built-in chain has any effect in xnat,
// which forwards packets and delivers none locally: filter FORWARD and
// nat PREROUTING/POSTROUTING carry the traffic. The other built-in chains
// are parsed, listed and saved but no packet traverses them unless the
// dataplane delivers to or sends from the gateway itself.
func Effective(t TableID, h Hook) bool {
	switch t {
	case Filter:
		return h == Forward
	case NAT:
		return h == Prerouting || h == Postrouting
	}
	return false
}

// Policy is a built-in chain's policy.
type Policy uint8

const (
	PolicyAccept Policy = iota
	PolicyDrop
)

func (p Policy) String() string {
	if p == PolicyDrop {
		return "DROP"
	}
	return "ACCEPT"
}

// Counters are a packet and a byte count (bytes are IP total lengths).
type Counters struct {
	Packets, Bytes uint64
}

// Model is a complete rule set: both tables, as iptables holds them. It is
// a plain value; control/iptables changes it copy-on-write (Clone) and
// Compile turns it into an immutable *Ruleset.
type Model struct {
	Tables [NumTables]Table
}

// Table is an ordered list of chains: the built-in chains first in
// BuiltinHooks order, then user-defined chains sorted by name (the order
// iptables lists and saves them in).
type Table struct {
	Chains []Chain
}

// Chain is a built-in or user-defined chain.
type Chain struct {
	Name     string
	Builtin  bool
	Hook     Hook     // when Builtin
	Policy   Policy   // when Builtin
	Counters Counters // policy counters, when Builtin
	Rules    []Rule
}

// Addr is an -s or -d match: packet address & Mask == IP & Mask, or its
// negation. Mask 0 and Invert false matches everything.
type Addr struct {
	IP, Mask uint32
	Invert   bool
}

// Iface is an -i or -o match. An empty Name matches everything; a name
// ending in '+' matches every interface with that prefix.
type Iface struct {
	Name   string
	Invert bool
}

// Rule is one rule: the IP header matches, the extension matches in the
// order they were given, and the target.
type Rule struct {
	// ID identifies the rule across rule-set replacements, so that its
	// counters carry over as iptables keeps them. Assigned by NewRuleID.
	ID uint64

	Src, Dst          Addr
	InIface, OutIface Iface
	Proto             uint8 // 0: any
	ProtoInvert       bool
	Fragment          bool // -f: non-first fragments only
	FragmentInvert    bool // ! -f: first fragments and unfragmented packets
	Matches           []Match
	Target            Target
	Counters          Counters
}

var lastRuleID atomic.Uint64

// NewRuleID returns a process-wide unique rule identity.
func NewRuleID() uint64 { return lastRuleID.Add(1) }

// MatchKind names an extension match module.
type MatchKind uint8

const (
	MatchTCP MatchKind = iota + 1
	MatchUDP
	MatchICMP
	MatchMultiport
	MatchIPRange
	MatchLength
	MatchLimit
	MatchMAC
	MatchMark
	MatchState
	MatchConntrack
	MatchComment
)

var matchNames = map[MatchKind]string{
	MatchTCP: "tcp", MatchUDP: "udp", MatchICMP: "icmp", MatchMultiport: "multiport",
	MatchIPRange: "iprange", MatchLength: "length", MatchLimit: "limit", MatchMAC: "mac",
	MatchMark: "mark", MatchState: "state", MatchConntrack: "conntrack", MatchComment: "comment",
}

func (k MatchKind) String() string {
	if n, ok := matchNames[k]; ok {
		return n
	}
	return fmt.Sprintf("match(%d)", uint8(k))
}

// MatchByName returns the match module with the given -m name.
func MatchByName(name string) (MatchKind, bool) {
	for k, n := range matchNames {
		if n == name {
			return k, true
		}
	}
	return 0, false
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// AllPorts is the range a port match that was not given has.
var AllPorts = PortRange{0, 65535}

// Multiport modes.
const (
	MultiSource uint8 = iota + 1
	MultiDest
	MultiEither
)

// AddrRange is an -m iprange range.
type AddrRange struct {
	Lo, Hi uint32
	Set    bool
	Invert bool
}

// Match is one extension match. Kind says which fields are meaningful.
type Match struct {
	Kind MatchKind

	// tcp, udp: ports; AllPorts when not given.
	SrcPort, DstPort             PortRange
	SrcPortInvert, DstPortInvert bool
	// tcp: --tcp-flags mask comp (--syn is FIN,SYN,RST,ACK SYN).
	FlagsMask, FlagsCmp uint8
	FlagsInvert         bool

	// icmp: type 255 with codes 0-255 is "any".
	ICMPType, ICMPCodeMin, ICMPCodeMax uint8

	// multiport: mode and up to 15 ports (a range counts twice).
	Multi uint8
	Ports []PortRange

	// iprange
	SrcRange, DstRange AddrRange

	// length: IP total length range.
	LengthMin, LengthMax uint16

	// limit: average period in 1/10000 s per packet (iptables' unit) and
	// burst.
	LimitAvg, LimitBurst uint32

	// mac
	MAC [6]byte

	// mark: (mark & MarkMask) == Mark.
	Mark, MarkMask uint32

	// state, conntrack
	States CtState

	// comment
	Comment string

	// Invert negates the whole match for the single-option modules
	// (icmp, multiport, length, mac, mark, state, conntrack).
	Invert bool
}

// TargetKind names a rule's target.
type TargetKind uint8

const (
	TargetNone TargetKind = iota // no -j: the rule only counts
	TargetAccept
	TargetDrop
	TargetReturn
	TargetJump // -j to a user-defined chain
	TargetGoto // -g to a user-defined chain
	TargetReject
	TargetLog
	TargetMark
	TargetConnmark
	TargetSNAT
	TargetDNAT
	TargetMasquerade
	TargetFullCone // FULLCONENAT (xt_FULLCONENAT): endpoint-independent mapping and filtering
)

var targetNames = [...]string{
	TargetNone: "", TargetAccept: "ACCEPT", TargetDrop: "DROP", TargetReturn: "RETURN",
	TargetJump: "jump", TargetGoto: "goto", TargetReject: "REJECT", TargetLog: "LOG",
	TargetMark: "MARK", TargetConnmark: "CONNMARK", TargetSNAT: "SNAT", TargetDNAT: "DNAT",
	TargetMasquerade: "MASQUERADE", TargetFullCone: "FULLCONENAT",
}

func (k TargetKind) String() string {
	if int(k) < len(targetNames) {
		return targetNames[k]
	}
	return fmt.Sprintf("target(%d)", uint8(k))
}

// TargetByName returns the built-in target with the given -j name.
func TargetByName(name string) (TargetKind, bool) {
	for k, n := range targetNames {
		if n == name && n != "" && n != "jump" && n != "goto" {
			return TargetKind(k), true
		}
	}
	return 0, false
}

// Connmark modes.
const (
	ConnmarkSet uint8 = iota + 1
	ConnmarkSave
	ConnmarkRestore
)

// NATFlags are the flags of a NAT range.
type NATFlags uint8

const (
	NATMapIPs         NATFlags = 1 << iota // an address range was given
	NATProtoSpecified                      // a port range was given
	NATRandom
	NATRandomFully
	NATPersistent
)

// NATRange is a SNAT/DNAT/MASQUERADE range.
type NATRange struct {
	MinAddr, MaxAddr uint32
	MinPort, MaxPort uint16
	Flags            NATFlags
}

// Target is what a matching rule does.
type Target struct {
	Kind  TargetKind
	Chain string // TargetJump, TargetGoto

	RejectWith RejectType

	LogLevel  uint8
	LogPrefix string

	// MARK: mark = (mark &^ MarkMask) ^ MarkValue.
	// CONNMARK set: ctmark = (ctmark &^ MarkMask) ^ MarkValue.
	MarkValue, MarkMask uint32
	// CONNMARK
	ConnmarkMode   uint8
	NfMask, CtMask uint32

	NAT NATRange
}

// Terminal reports whether the target ends the traversal of the table.
func (k TargetKind) Terminal() bool {
	switch k {
	case TargetAccept, TargetDrop, TargetReject, TargetSNAT, TargetDNAT, TargetMasquerade, TargetFullCone:
		return true
	}
	return false
}

// NewModel returns the rule set of a freshly booted box: every built-in
// chain empty with policy ACCEPT.
func NewModel() *Model {
	m := &Model{}
	for t := TableID(0); t < NumTables; t++ {
		for _, h := range BuiltinHooks(t) {
			m.Tables[t].Chains = append(m.Tables[t].Chains, Chain{Name: hookNames[h], Builtin: true, Hook: h})
		}
	}
	return m
}

// Clone returns a deep copy.
func (m *Model) Clone() *Model {
	n := &Model{}
	for t := range m.Tables {
		n.Tables[t] = m.Tables[t].Clone()
	}
	return n
}

// Clone returns a deep copy of the table.
func (t Table) Clone() Table {
	n := Table{Chains: make([]Chain, len(t.Chains))}
	for i, c := range t.Chains {
		n.Chains[i] = c
		n.Chains[i].Rules = make([]Rule, len(c.Rules))
		for j, r := range c.Rules {
			n.Chains[i].Rules[j] = r.Clone()
		}
	}
	return n
}

// Clone returns a deep copy of the rule (same ID).
func (r Rule) Clone() Rule {
	if r.Matches != nil {
		ms := make([]Match, len(r.Matches))
		for i, m := range r.Matches {
			ms[i] = m
			if m.Ports != nil {
				ms[i].Ports = append([]PortRange(nil), m.Ports...)
			}
		}
		r.Matches = ms
	}
	return r
}

// Chain returns the index of the named chain in the table, or -1.
func (t *Table) Chain(name string) int {
	for i := range t.Chains {
		if t.Chains[i].Name == name {
			return i
		}
	}
	return -1
}

// AddChain inserts a user-defined chain at its sorted position.
func (t *Table) AddChain(name string) error {
	if t.Chain(name) >= 0 {
		return fmt.Errorf("chain %q: %w", name, ErrChainExists)
	}
	i := len(t.Chains)
	for j := range t.Chains {
		if !t.Chains[j].Builtin && t.Chains[j].Name > name {
			i = j
			break
		}
	}
	t.Chains = append(t.Chains, Chain{})
	copy(t.Chains[i+1:], t.Chains[i:])
	t.Chains[i] = Chain{Name: name}
	return nil
}

// SortChains restores the canonical order (built-ins, then user chains by
// name), after a rename.
func (t *Table) SortChains() {
	sort.SliceStable(t.Chains, func(i, j int) bool {
		a, b := &t.Chains[i], &t.Chains[j]
		if a.Builtin != b.Builtin {
			return a.Builtin
		}
		if a.Builtin {
			return a.Hook < b.Hook
		}
		return a.Name < b.Name
	})
}

// References counts the rules in the table that jump or go to chain name.
func (t *Table) References(name string) int {
	n := 0
	for _, c := range t.Chains {
		for _, r := range c.Rules {
			if (r.Target.Kind == TargetJump || r.Target.Kind == TargetGoto) && r.Target.Chain == name {
				n++
			}
		}
	}
	return n
}

// Equal reports whether two models hold the same rule set, rule IDs aside.
func (m *Model) Equal(o *Model) bool {
	return reflect.DeepEqual(stripIDs(m), stripIDs(o))
}

// SameRule reports whether two rules have the same specification (what
// iptables -D compares), ignoring ID and counters.
func SameRule(a, b Rule) bool {
	a.ID, b.ID = 0, 0
	a.Counters, b.Counters = Counters{}, Counters{}
	if len(a.Matches) == 0 {
		a.Matches = nil
	}
	if len(b.Matches) == 0 {
		b.Matches = nil
	}
	return reflect.DeepEqual(a, b)
}

func stripIDs(m *Model) *Model {
	c := m.Clone()
	for t := range c.Tables {
		for i := range c.Tables[t].Chains {
			ch := &c.Tables[t].Chains[i]
			if len(ch.Rules) == 0 {
				ch.Rules = nil
			}
			for j := range ch.Rules {
				ch.Rules[j].ID = 0
				if len(ch.Rules[j].Matches) == 0 {
					ch.Rules[j].Matches = nil
				}
			}
		}
	}
	return c
}

// Errors callers tell apart with errors.Is.
var (
	ErrUnsupported   = errors.New("not supported by xnat")
	ErrNoTable       = errors.New("no such table")
	ErrNoChain       = errors.New("no such chain")
	ErrChainExists   = errors.New("chain already exists")
	ErrChainInUse    = errors.New("chain is referenced by rules")
	ErrChainNotEmpty = errors.New("chain is not empty")
	ErrBuiltinChain  = errors.New("built-in chain")
	ErrNoRule        = errors.New("no such rule")
	ErrInvalid       = errors.New("invalid rule")
	ErrLoop          = errors.New("chain loop")
	ErrTooDeep       = errors.New("chain jumps nested too deeply")
	ErrTooMany       = errors.New("too many interfaces")
)
