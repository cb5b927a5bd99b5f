package iptables

import (
	"fmt"
	"strings"
)

// IP protocol names.
//
// iptables names a rule's protocol in two steps: its own short table of
// protocols that have extensions (builtinProtos), then the system's
// protocols database (getprotobynumber, normally /etc/protocols). -L -n
// skips the database; iptables-save, -S and -L use both, and print the
// number when neither knows it. Parsing accepts a number (as strtoul with
// base 0 reads it: 47, 0x2f, 057), "all", a database name or a built-in
// name, in any case (iptables lowercases -p's argument).
//
// xnat reads no file at run time: protocolDB holds the names a stock
// Linux system's database gives, so the listings are the same whichever
// machine xnatctl runs on.

// builtinProtos is iptables' own table (libxtables' chain protocols), in
// its order: the first entry for a number is the name printed.
var builtinProtos = []struct {
	name string
	num  uint8
}{
	{"tcp", 6}, {"sctp", 132}, {"udp", 17}, {"udplite", 136}, {"icmp", 1},
	{"ipv6-icmp", 58}, {"icmpv6", 58}, {"esp", 50}, {"ah", 51},
	{"mobility-header", 135}, {"ipv6-mh", 135}, {"mh", 135},
	{"dccp", 33}, {"ipcomp", 108}, {"all", 0},
}

// protocolDB is the protocols database: the IANA keyword of each assigned
// IPv4 protocol number, lowercased, for the numbers a Linux system's
// /etc/protocols lists (Debian's netbase 6.4 has these). Number 0 ("ip",
// also "hopopt") is a rule without -p and is never printed by name.
var protocolDB = [256]string{
	0: "ip", 1: "icmp", 2: "igmp", 3: "ggp", 4: "ipencap", 5: "st", 6: "tcp",
	8: "egp", 9: "igp", 12: "pup", 17: "udp", 20: "hmp", 22: "xns-idp",
	27: "rdp", 29: "iso-tp4", 33: "dccp", 36: "xtp", 37: "ddp", 38: "idpr-cmtp",
	41: "ipv6", 43: "ipv6-route", 44: "ipv6-frag", 45: "idrp", 46: "rsvp",
	47: "gre", 50: "esp", 51: "ah", 57: "skip", 58: "ipv6-icmp",
	59: "ipv6-nonxt", 60: "ipv6-opts", 73: "rspf", 81: "vmtp", 88: "eigrp",
	89: "ospf", 93: "ax.25", 94: "ipip", 97: "etherip", 98: "encap",
	103: "pim", 108: "ipcomp", 112: "vrrp", 115: "l2tp", 124: "isis",
	132: "sctp", 133: "fc", 135: "mobility-header", 136: "udplite",
	137: "mpls-in-ip", 138: "manet", 139: "hip", 140: "shim6", 141: "wesp",
	142: "rohc", 143: "ethernet",
}

// protoByName maps every accepted name to its number.
var protoByName = func() map[string]uint8 {
	m := map[string]uint8{"hopopt": 0}
	for n, name := range protocolDB {
		if name != "" {
			m[name] = uint8(n)
		}
	}
	for _, p := range builtinProtos {
		if _, ok := m[p.name]; !ok {
			m[p.name] = p.num
		}
	}
	return m
}()

// parseProto parses -p's argument.
func parseProto(s string) (uint8, error) {
	if n, ok := parseProtoNumber(s); ok {
		return n, nil
	}
	if n, ok := protoByName[strings.ToLower(s)]; ok {
		return n, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (a name such as tcp, udp, icmp, gre, esp, or a number 0-255): %w", s, ErrBadValue)
}

// parseProtoNumber reads a protocol number as iptables does (strtoul with
// base 0: leading blanks and "+" allowed, 0x hexadecimal, 0 octal; the
// whole word must be the number, at most 255).
func parseProtoNumber(s string) (uint8, bool) {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	s = strings.TrimPrefix(s, "+")
	base := uint(10)
	switch {
	case len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, s = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, s = 8, s[1:]
	}
	if s == "" {
		return 0, false
	}
	var n uint
	for i := 0; i < len(s); i++ {
		var d uint
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			d = uint(c - '0')
		case c >= 'a' && c <= 'f':
			d = uint(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = uint(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		n = n*base + d
		if n > 255 {
			return 0, false
		}
	}
	return uint8(n), true
}

// protoName returns the name iptables prints for a protocol: the built-in
// name, else (unless numeric) the database's; "" when neither has one.
func protoName(n uint8, numeric bool) string {
	for _, p := range builtinProtos {
		if p.num == n {
			return p.name
		}
	}
	if numeric || n == 0 {
		return ""
	}
	return protocolDB[n]
}
