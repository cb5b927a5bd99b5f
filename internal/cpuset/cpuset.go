// Package cpuset parses and formats CPU lists as Linux writes them
// ("0,2,4-5"), for command-line flags and sysfs masks.
package cpuset

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxCPU bounds the CPU numbers Parse accepts (Linux's largest NR_CPUS is
// 8192), so that a range cannot ask for an unbounded list.
const MaxCPU = 8191

// ErrSyntax is returned (wrapped) for a list Parse cannot read.
var ErrSyntax = errors.New("bad CPU list")

// Parse reads "0", "0,2" or "0-3,6" into CPU numbers, in the order
// written. Every number lies in 0..MaxCPU.
func Parse(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 || a > MaxCPU {
			return nil, fmt.Errorf("%w: CPU %q in %q", ErrSyntax, part, s)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a || b > MaxCPU {
				return nil, fmt.Errorf("%w: range %q in %q", ErrSyntax, part, s)
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	return out, nil
}

// Format writes cpus as a comma-separated list ("1,0").
func Format(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// Mask writes cpus as the hexadecimal mask sysfs takes (rps_cpus):
// 32-bit words, most significant first, separated by commas.
func Mask(cpus []int) string {
	var words []uint32
	for _, c := range cpus {
		if c < 0 {
			continue
		}
		for len(words) <= c/32 {
			words = append(words, 0)
		}
		words[c/32] |= 1 << (c % 32)
	}
	if len(words) == 0 {
		return "00000000"
	}
	parts := make([]string, len(words))
	for i, w := range words {
		parts[len(words)-1-i] = fmt.Sprintf("%08x", w)
	}
	return strings.Join(parts, ",")
}
