package ha

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
)

// FilterSpec says which of this side's connections are sent to the peer,
// as conntrackd's General { Filter From Userspace { ... } } section does:
// each kind (protocol, address, TCP state) is either an Accept list (only
// what it names is sent) or an Ignore list (what it names is not), never
// both; an empty kind does not filter. A connection is sent when every
// kind lets it through.
type FilterSpec struct {
	// Protocols: "tcp", "udp", "icmp", another name of /etc/protocols
	// that ProtocolNumber knows, or a number 0 to 255.
	ProtocolAccept, ProtocolIgnore []string
	// Addresses: IPv4 addresses (a.b.c.d) or networks (a.b.c.d/n). A
	// connection matches when its original source or its reply source
	// (the real destination, after DNAT) is in the list.
	AddressAccept, AddressIgnore []string
	// TCP states, as conntrackd names them (case-insensitive):
	// syn_sent, syn_recv, established, fin_wait, close_wait, last_ack,
	// time_wait, close, listen (the kernel's SYN_SENT2). Only TCP
	// connections are filtered by state.
	StateAccept, StateIgnore []string
}

// ErrFilter is wrapped by every FilterSpec error.
var ErrFilter = errors.New("bad sync filter")

// Filter decides which connection messages leave for the peer. The zero
// Filter and a nil *Filter send everything. Allow is safe for concurrent
// use.
type Filter struct {
	protoSet, protoAccept bool
	protos                [256 / 64]uint64

	addrSet, addrAccept bool
	prefixes            []netip.Prefix

	stateSet, stateAccept bool
	states                uint16 // bit n: TCP state n (the kernel's numbering)
}

// protocolNames are the protocol names ProtocolNumber knows: those of
// /etc/protocols a connection tracker meets.
var protocolNames = map[string]uint8{
	"icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "egp": 8, "udp": 17, "dccp": 33,
	"ipv6": 41, "gre": 47, "esp": 50, "ah": 51, "ipv6-icmp": 58, "ospf": 89,
	"pim": 103, "vrrp": 112, "l2tp": 115, "sctp": 132, "udplite": 136,
}

// ProtocolNumber returns the number of a protocol name or number.
func ProtocolNumber(s string) (uint8, bool) {
	if n, ok := protocolNames[strings.ToLower(s)]; ok {
		return n, true
	}
	n, err := strconv.ParseUint(s, 10, 8)
	return uint8(n), err == nil
}

// tcpStateNames are conntrackd's TCP state keywords, by the kernel's
// number of the state (enum tcp_conntrack).
var tcpStateNames = [...]string{1: "syn_sent", 2: "syn_recv", 3: "established", 4: "fin_wait",
	5: "close_wait", 6: "last_ack", 7: "time_wait", 8: "close", 9: "listen"}

// TCPStateNames returns the TCP state names a filter takes, in the
// kernel's order.
func TCPStateNames() []string { return append([]string(nil), tcpStateNames[1:]...) }

// NewFilter checks spec and compiles it.
func NewFilter(spec FilterSpec) (*Filter, error) {
	f := &Filter{}
	pick := func(kind string, accept, ignore []string) ([]string, bool, bool, error) {
		switch {
		case len(accept) > 0 && len(ignore) > 0:
			return nil, false, false, fmt.Errorf("%w: %s_accept and %s_ignore are both given (one list per kind, as in conntrackd's Filter)", ErrFilter, kind, kind)
		case len(accept) > 0:
			return accept, true, true, nil
		case len(ignore) > 0:
			return ignore, true, false, nil
		}
		return nil, false, false, nil
	}
	list, set, acc, err := pick("protocol", spec.ProtocolAccept, spec.ProtocolIgnore)
	if err != nil {
		return nil, err
	}
	f.protoSet, f.protoAccept = set, acc
	for _, s := range list {
		n, ok := ProtocolNumber(s)
		if !ok {
			return nil, fmt.Errorf("%w: protocol %q (a name such as tcp, udp, icmp, sctp, or a number 0 to 255)", ErrFilter, s)
		}
		f.protos[n/64] |= 1 << (n % 64)
	}
	if list, set, acc, err = pick("address", spec.AddressAccept, spec.AddressIgnore); err != nil {
		return nil, err
	}
	f.addrSet, f.addrAccept = set, acc
	for _, s := range list {
		p, err := parseFilterAddr(s)
		if err != nil {
			return nil, err
		}
		f.prefixes = append(f.prefixes, p)
	}
	if list, set, acc, err = pick("state", spec.StateAccept, spec.StateIgnore); err != nil {
		return nil, err
	}
	f.stateSet, f.stateAccept = set, acc
	for _, s := range list {
		n := 0
		for i, name := range tcpStateNames {
			if i > 0 && strings.EqualFold(s, name) {
				n = i
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("%w: TCP state %q (%s)", ErrFilter, s, strings.Join(TCPStateNames(), ", "))
		}
		f.states |= 1 << n
	}
	return f, nil
}

func parseFilterAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return netip.Prefix{}, fmt.Errorf("%w: address %q (an IPv4 address or network a.b.c.d/n)", ErrFilter, s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("%w: address %q (an IPv4 address or network a.b.c.d/n)", ErrFilter, s)
	}
	return netip.PrefixFrom(a, 32), nil
}

// Empty reports whether the filter lets everything through.
func (f *Filter) Empty() bool { return f == nil || !f.protoSet && !f.addrSet && !f.stateSet }

// Allow reports whether a message of type t about c goes to the peer.
// The protocol and address of a connection never change, so they decide
// every message; its TCP state decides new and update messages only: a
// delete always goes (when the protocol and address let it), so that a
// connection the peer was sent in an accepted state does not stay in its
// cache after it ends in another.
func (f *Filter) Allow(t MsgType, c *Conn) bool {
	if f == nil {
		return true
	}
	if f.protoSet && (f.protos[c.Proto/64]&(1<<(c.Proto%64)) != 0) != f.protoAccept {
		return false
	}
	if f.addrSet {
		src := u32Addr(c.Src)
		rsrc, _, _, _ := c.ReplyTuple()
		dst := u32Addr(rsrc)
		match := false
		for _, p := range f.prefixes {
			if p.Contains(src) || p.Contains(dst) {
				match = true
				break
			}
		}
		if match != f.addrAccept {
			return false
		}
	}
	if f.stateSet && t != TypeDelete && c.Proto == protoTCP && c.Has&HasTCPState != 0 && c.TCPState < 16 {
		if (f.states&(1<<c.TCPState) != 0) != f.stateAccept {
			return false
		}
	}
	return true
}

func u32Addr(a uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
}

// FilteredSender is a Sender that passes on only the messages its
// Filter allows, and counts the others.
type FilteredSender struct {
	Out      Sender
	Filter   *Filter
	filtered atomic.Uint64
}

// Send passes the message on if the filter allows it.
func (s *FilteredSender) Send(t MsgType, c *Conn) {
	if !s.Filter.Allow(t, c) {
		s.filtered.Add(1)
		return
	}
	s.Out.Send(t, c)
}

// Flush flushes Out.
func (s *FilteredSender) Flush() error { return s.Out.Flush() }

// Filtered returns how many messages the filter kept back.
func (s *FilteredSender) Filtered() uint64 { return s.filtered.Load() }
