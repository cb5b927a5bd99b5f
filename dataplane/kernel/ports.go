package kernel

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// LocalPorts is the kernel's choice of ephemeral ports for its own
// sockets: net.ipv4.ip_local_port_range, less
// net.ipv4.ip_local_reserved_ports.
type LocalPorts struct {
	Range    PortRange
	Reserved []PortRange
}

// ErrPortSyntax is wrapped by errors parsing the sysctls.
var ErrPortSyntax = errors.New("kernel: bad port sysctl")

// Sysctl paths read by ReadLocalPorts.
const (
	LocalPortRangePath     = "/proc/sys/net/ipv4/ip_local_port_range"
	LocalReservedPortsPath = "/proc/sys/net/ipv4/ip_local_reserved_ports"
)

// ReadLocalPorts reads both sysctls of the calling thread's network
// namespace.
func ReadLocalPorts() (LocalPorts, error) {
	r, err := os.ReadFile(LocalPortRangePath)
	if err != nil {
		return LocalPorts{}, fmt.Errorf("kernel: %w", err)
	}
	res, err := os.ReadFile(LocalReservedPortsPath)
	if err != nil {
		return LocalPorts{}, fmt.Errorf("kernel: %w", err)
	}
	return ParseLocalPorts(string(r), string(res))
}

// ParseLocalPorts parses the text of ip_local_port_range ("32768\t60999")
// and ip_local_reserved_ports ("", "8080", "8080,9000-9100").
func ParseLocalPorts(rangeText, reservedText string) (LocalPorts, error) {
	var lp LocalPorts
	f := strings.Fields(rangeText)
	if len(f) != 2 {
		return lp, fmt.Errorf("%w: ip_local_port_range %q", ErrPortSyntax, rangeText)
	}
	lo, err1 := parsePort(f[0])
	hi, err2 := parsePort(f[1])
	if err := errors.Join(err1, err2); err != nil || lo > hi {
		return lp, fmt.Errorf("%w: ip_local_port_range %q", ErrPortSyntax, rangeText)
	}
	lp.Range = PortRange{lo, hi}
	for _, item := range strings.Split(strings.TrimSpace(reservedText), ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		a, b, isRange := strings.Cut(item, "-")
		lo, err := parsePort(a)
		hi := lo
		if err == nil && isRange {
			hi, err = parsePort(b)
		}
		if err != nil || lo > hi {
			return lp, fmt.Errorf("%w: ip_local_reserved_ports item %q", ErrPortSyntax, item)
		}
		lp.Reserved = append(lp.Reserved, PortRange{lo, hi})
	}
	return lp, nil
}

func parsePort(s string) (uint16, error) {
	v, err := strconv.ParseUint(s, 10, 16)
	return uint16(v), err
}

// Overlap returns the ports of pool that the kernel may pick as
// ephemeral ports for its own connections — inside ip_local_port_range
// and not reserved — as ranges in ascending order; nil if none. A NAT
// pool overlapping them lets the box's own sockets and xnat's translated
// connections take the same port: move the pool or add it to
// ip_local_reserved_ports.
func (lp LocalPorts) Overlap(pool PortRange) []PortRange {
	lo := max(pool.Lo, lp.Range.Lo)
	hi := min(pool.Hi, lp.Range.Hi)
	if lo > hi {
		return nil
	}
	var out []PortRange
	start := -1
	for p := int(lo); p <= int(hi); p++ {
		if lp.reserved(uint16(p)) {
			if start >= 0 {
				out = append(out, PortRange{uint16(start), uint16(p - 1)})
				start = -1
			}
			continue
		}
		if start < 0 {
			start = p
		}
	}
	if start >= 0 {
		out = append(out, PortRange{uint16(start), hi})
	}
	return out
}

func (lp LocalPorts) reserved(p uint16) bool {
	for _, r := range lp.Reserved {
		if p >= r.Lo && p <= r.Hi {
			return true
		}
	}
	return false
}
