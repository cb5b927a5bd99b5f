package iptables

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"xnat/dataplane/rules"
)

// parseIP parses a dotted-quad IPv4 address. Host names are not resolved.
func parseIP(s string) (uint32, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return 0, fmt.Errorf("invalid address %q (host names are %w; give a dotted-quad address)", s, rules.ErrUnsupported)
	}
	var a uint32
	for _, p := range parts {
		if p == "" || len(p) > 3 {
			return 0, fmt.Errorf("invalid address %q: %w", s, ErrBadValue)
		}
		n, err := strconv.ParseUint(p, 10, 8)
		if err != nil {
			return 0, fmt.Errorf("invalid address %q: %w", s, ErrBadValue)
		}
		a = a<<8 | uint32(n)
	}
	return a, nil
}

// parseNet parses ADDR[/LEN|/MASK] as -s and -d take it.
func parseNet(s string) (rules.Addr, error) {
	if strings.Contains(s, ",") {
		return rules.Addr{}, fmt.Errorf("address list %q: several addresses in one rule are %w (write one rule per address)", s, rules.ErrUnsupported)
	}
	addr, mask := s, ""
	if i := strings.IndexByte(s, '/'); i >= 0 {
		addr, mask = s[:i], s[i+1:]
	}
	ip, err := parseIP(addr)
	if err != nil {
		return rules.Addr{}, err
	}
	m := uint32(0xFFFFFFFF)
	if mask != "" {
		if strings.Contains(mask, ".") {
			m, err = parseIP(mask)
			if err != nil {
				return rules.Addr{}, fmt.Errorf("invalid mask %q: %w", mask, ErrBadValue)
			}
		} else {
			n, err := strconv.ParseUint(mask, 10, 8)
			if err != nil || n > 32 {
				return rules.Addr{}, fmt.Errorf("invalid mask %q: %w", mask, ErrBadValue)
			}
			m = prefixMask(int(n))
		}
	} else if strings.HasSuffix(s, "/") {
		return rules.Addr{}, fmt.Errorf("invalid mask in %q: %w", s, ErrBadValue)
	}
	return rules.Addr{IP: ip & m, Mask: m}, nil
}

func prefixMask(n int) uint32 {
	if n == 0 {
		return 0
	}
	return ^uint32(0) << (32 - n)
}

// maskLen returns the prefix length of a contiguous mask, or -1.
func maskLen(m uint32) int {
	n := bits.LeadingZeros32(^m)
	if prefixMask(n) != m {
		return -1
	}
	return n
}

// services is the small table of service names accepted for ports and
// printed by -L without -n.
var services = []struct {
	name string
	port uint16
}{
	{"ftp-data", 20}, {"ftp", 21}, {"ssh", 22}, {"telnet", 23}, {"smtp", 25}, {"domain", 53},
	{"bootps", 67}, {"bootpc", 68}, {"tftp", 69}, {"http", 80}, {"kerberos", 88}, {"pop3", 110},
	{"sunrpc", 111}, {"ntp", 123}, {"imap2", 143}, {"snmp", 161}, {"snmp-trap", 162}, {"bgp", 179},
	{"ldap", 389}, {"https", 443}, {"microsoft-ds", 445}, {"isakmp", 500}, {"syslog", 514},
	{"submission", 587}, {"ldaps", 636}, {"imaps", 993}, {"pop3s", 995}, {"openvpn", 1194},
	{"ms-sql-s", 1433}, {"mysql", 3306}, {"postgresql", 5432}, {"http-alt", 8080},
}

func serviceName(p uint16) string {
	for _, s := range services {
		if s.port == p {
			return s.name
		}
	}
	return ""
}

func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, fmt.Errorf("empty port: %w", ErrBadValue)
	}
	if s[0] >= '0' && s[0] <= '9' {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("invalid port %q: %w", s, ErrBadValue)
		}
		return uint16(n), nil
	}
	for _, sv := range services {
		if sv.name == s {
			return sv.port, nil
		}
	}
	return 0, fmt.Errorf("invalid port/service %q: %w", s, ErrBadValue)
}

// parsePortRange parses P, P:Q, :Q, P: and ":" as --sport takes them.
func parsePortRange(s string) (rules.PortRange, error) {
	i := strings.IndexByte(s, ':')
	if i < 0 {
		p, err := parsePort(s)
		return rules.PortRange{Lo: p, Hi: p}, err
	}
	r := rules.AllPorts
	var err error
	if s[:i] != "" {
		if r.Lo, err = parsePort(s[:i]); err != nil {
			return r, err
		}
	}
	if s[i+1:] != "" {
		if r.Hi, err = parsePort(s[i+1:]); err != nil {
			return r, err
		}
	}
	if r.Lo > r.Hi {
		return r, fmt.Errorf("invalid port range %q (min > max): %w", s, ErrBadValue)
	}
	return r, nil
}

// parseUint32 parses a number as strtoul with base 0 does (0x.., 0.., decimal).
func parseUint32(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid number %q: %w", s, ErrBadValue)
	}
	return uint32(n), nil
}

// parseMarkMask parses VALUE[/MASK]; the mask defaults to 0xffffffff.
func parseMarkMask(s string) (v, m uint32, err error) {
	m = 0xFFFFFFFF
	val := s
	if i := strings.IndexByte(s, '/'); i >= 0 {
		val = s[:i]
		if m, err = parseUint32(s[i+1:]); err != nil {
			return
		}
	}
	v, err = parseUint32(val)
	return
}

func parseMAC(s string) ([6]byte, error) {
	var mac [6]byte
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return mac, fmt.Errorf("bad mac address %q: %w", s, ErrBadValue)
	}
	for i, p := range parts {
		if len(p) < 1 || len(p) > 2 {
			return mac, fmt.Errorf("bad mac address %q: %w", s, ErrBadValue)
		}
		n, err := strconv.ParseUint(p, 16, 8)
		if err != nil {
			return mac, fmt.Errorf("bad mac address %q: %w", s, ErrBadValue)
		}
		mac[i] = byte(n)
	}
	return mac, nil
}

// parseRate parses N[/second|/minute|/hour|/day] (any prefix of the unit)
// into iptables' average period (1/10000 s units).
func parseRate(s string) (uint32, error) {
	num, unit := s, ""
	mult := uint64(1)
	if i := strings.IndexByte(s, '/'); i >= 0 {
		num, unit = s[:i], strings.ToLower(s[i+1:])
		switch {
		case unit == "":
			return 0, fmt.Errorf("bad rate %q: %w", s, ErrBadValue)
		case strings.HasPrefix("second", unit):
			mult = 1
		case strings.HasPrefix("minute", unit):
			mult = 60
		case strings.HasPrefix("hour", unit):
			mult = 3600
		case strings.HasPrefix("day", unit):
			mult = 86400
		default:
			return 0, fmt.Errorf("bad rate %q (unit must be second, minute, hour or day): %w", s, ErrBadValue)
		}
	}
	r, err := strconv.ParseUint(num, 10, 32)
	if err != nil || r == 0 {
		return 0, fmt.Errorf("bad rate %q: %w", s, ErrBadValue)
	}
	avg := rules.LimitScale * mult / r
	if avg == 0 {
		return 0, fmt.Errorf("rate %q too fast: %w", s, ErrBadValue)
	}
	return uint32(avg), nil
}

var rateUnits = []struct {
	name string
	mult uint32
}{{"day", rules.LimitScale * 86400}, {"hour", rules.LimitScale * 3600}, {"min", rules.LimitScale * 60}, {"sec", rules.LimitScale}}

// formatRate prints an average period as iptables does: the largest unit
// in which the rate is an exact-enough integer.
func formatRate(avg uint32) string {
	if avg == 0 {
		return "+Inf"
	}
	i := 1
	for ; i < len(rateUnits); i++ {
		m := rateUnits[i].mult
		if avg > m || m/avg < m%avg {
			break
		}
	}
	return fmt.Sprintf("%d/%s", rateUnits[i-1].mult/avg, rateUnits[i-1].name)
}

var tcpFlagNames = []struct {
	name string
	bit  uint8
}{{"FIN", 0x01}, {"SYN", 0x02}, {"RST", 0x04}, {"PSH", 0x08}, {"ACK", 0x10}, {"URG", 0x20}, {"ALL", 0x3F}, {"NONE", 0}}

func parseTCPFlags(s string) (uint8, error) {
	var f uint8
	for _, n := range strings.Split(s, ",") {
		ok := false
		for _, t := range tcpFlagNames {
			if strings.EqualFold(t.name, n) {
				f |= t.bit
				ok = true
				break
			}
		}
		if !ok {
			return 0, fmt.Errorf("unknown TCP flag %q: %w", n, ErrBadValue)
		}
	}
	return f, nil
}

func formatTCPFlags(f uint8) string {
	var names []string
	for f != 0 {
		for _, t := range tcpFlagNames {
			if f&t.bit != 0 {
				names = append(names, t.name)
				f &^= t.bit
				break
			}
		}
	}
	if len(names) == 0 {
		return "NONE"
	}
	return strings.Join(names, ",")
}

// icmp type names, as iptables knows them.
var icmpNames = []struct {
	name            string
	typ, cmin, cmax uint8
}{
	{"any", 0xFF, 0, 0xFF},
	{"echo-reply", 0, 0, 0xFF},
	{"destination-unreachable", 3, 0, 0xFF},
	{"network-unreachable", 3, 0, 0},
	{"host-unreachable", 3, 1, 1},
	{"protocol-unreachable", 3, 2, 2},
	{"port-unreachable", 3, 3, 3},
	{"fragmentation-needed", 3, 4, 4},
	{"source-route-failed", 3, 5, 5},
	{"network-unknown", 3, 6, 6},
	{"host-unknown", 3, 7, 7},
	{"network-prohibited", 3, 9, 9},
	{"host-prohibited", 3, 10, 10},
	{"TOS-network-unreachable", 3, 11, 11},
	{"TOS-host-unreachable", 3, 12, 12},
	{"communication-prohibited", 3, 13, 13},
	{"host-precedence-violation", 3, 14, 14},
	{"precedence-cutoff", 3, 15, 15},
	{"source-quench", 4, 0, 0xFF},
	{"redirect", 5, 0, 0xFF},
	{"network-redirect", 5, 0, 0},
	{"host-redirect", 5, 1, 1},
	{"TOS-network-redirect", 5, 2, 2},
	{"TOS-host-redirect", 5, 3, 3},
	{"echo-request", 8, 0, 0xFF},
	{"router-advertisement", 9, 0, 0xFF},
	{"router-solicitation", 10, 0, 0xFF},
	{"time-exceeded", 11, 0, 0xFF},
	{"ttl-zero-during-transit", 11, 0, 0},
	{"ttl-zero-during-reassembly", 11, 1, 1},
	{"parameter-problem", 12, 0, 0xFF},
	{"ip-header-bad", 12, 0, 0},
	{"required-option-missing", 12, 1, 1},
	{"timestamp-request", 13, 0, 0xFF},
	{"timestamp-reply", 14, 0, 0xFF},
	{"address-mask-request", 17, 0, 0xFF},
	{"address-mask-reply", 18, 0, 0xFF},
}

func parseICMPType(s string) (typ, cmin, cmax uint8, err error) {
	for _, n := range icmpNames {
		if strings.EqualFold(n.name, s) {
			return n.typ, n.cmin, n.cmax, nil
		}
	}
	if s == "ttl-exceeded" {
		return 11, 0, 0xFF, nil
	}
	t, c := s, ""
	if i := strings.IndexByte(s, '/'); i >= 0 {
		t, c = s[:i], s[i+1:]
	}
	tn, e := strconv.ParseUint(t, 10, 8)
	if e != nil {
		return 0, 0, 0, fmt.Errorf("invalid ICMP type %q: %w", s, ErrBadValue)
	}
	typ, cmin, cmax = uint8(tn), 0, 0xFF
	if c != "" {
		lo, hi := c, c
		if j := strings.IndexByte(c, ':'); j >= 0 {
			lo, hi = c[:j], c[j+1:]
		}
		l, e1 := strconv.ParseUint(lo, 10, 8)
		h, e2 := strconv.ParseUint(hi, 10, 8)
		if e1 != nil || e2 != nil || l > h {
			return 0, 0, 0, fmt.Errorf("invalid ICMP code in %q: %w", s, ErrBadValue)
		}
		cmin, cmax = uint8(l), uint8(h)
	}
	if typ == 0xFF && (cmin != 0 || cmax != 0xFF) {
		// 255/N is a real type/code pair; only 255 with all codes is "any".
		return typ, cmin, cmax, nil
	}
	return typ, cmin, cmax, nil
}

func icmpName(typ, cmin, cmax uint8) string {
	for _, n := range icmpNames {
		if n.typ == typ && n.cmin == cmin && n.cmax == cmax {
			return n.name
		}
	}
	return ""
}

// parseNATRange parses ADDR[-ADDR][:PORT[-PORT]].
func parseNATRange(s string) (rules.NATRange, error) {
	var r rules.NATRange
	addrs, ports := s, ""
	if i := strings.IndexByte(s, ':'); i >= 0 {
		addrs, ports = s[:i], s[i+1:]
	}
	if addrs == "" {
		return r, fmt.Errorf("range %q without an address: port-only translation is %w", s, rules.ErrUnsupported)
	}
	lo, hi := addrs, addrs
	if i := strings.IndexByte(addrs, '-'); i >= 0 {
		lo, hi = addrs[:i], addrs[i+1:]
	}
	var err error
	if r.MinAddr, err = parseIP(lo); err != nil {
		return r, err
	}
	if r.MaxAddr, err = parseIP(hi); err != nil {
		return r, err
	}
	if r.MinAddr > r.MaxAddr {
		return r, fmt.Errorf("address range %q is reversed: %w", addrs, ErrBadValue)
	}
	r.Flags |= rules.NATMapIPs
	if i := strings.IndexByte(s, ':'); i >= 0 {
		pr, err := parsePortDash(ports)
		if err != nil {
			return r, err
		}
		r.MinPort, r.MaxPort = pr.Lo, pr.Hi
		r.Flags |= rules.NATProtoSpecified
	}
	return r, nil
}

// parsePortDash parses PORT[-PORT] (NAT and --to-ports syntax).
func parsePortDash(s string) (rules.PortRange, error) {
	if strings.Contains(s, "/") {
		return rules.PortRange{}, fmt.Errorf("port range %q: port shifting (/BASE) is %w", s, rules.ErrUnsupported)
	}
	lo, hi := s, s
	if i := strings.IndexByte(s, '-'); i >= 0 {
		lo, hi = s[:i], s[i+1:]
	}
	a, err := parsePort(lo)
	if err != nil {
		return rules.PortRange{}, err
	}
	b, err := parsePort(hi)
	if err != nil {
		return rules.PortRange{}, err
	}
	if a > b || (a == 0 && lo != "0") {
		return rules.PortRange{}, fmt.Errorf("invalid port range %q: %w", s, ErrBadValue)
	}
	if a == 0 {
		return rules.PortRange{}, fmt.Errorf("invalid port range %q: port 0: %w", s, ErrBadValue)
	}
	return rules.PortRange{Lo: a, Hi: b}, nil
}
