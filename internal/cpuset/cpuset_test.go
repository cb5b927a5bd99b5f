package cpuset

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := map[string][]int{"0": {0}, "1,0": {1, 0}, "0-3": {0, 1, 2, 3}, " 2 , 0-1": {2, 0, 1}, "8191": {8191}, "5-5": {5}}
	for s, want := range good {
		got, err := Parse(s)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "x", "-1", "3-1", "0-", "-3", "1,,2", "8192", "0-8192", "1.5", "0x1"} {
		if got, err := Parse(s); !errors.Is(err, ErrSyntax) {
			t.Errorf("%q: %v, %v; want ErrSyntax", s, got, err)
		}
	}
}

func TestFormatAndMask(t *testing.T) {
	if got := Format([]int{1, 0, 12}); got != "1,0,12" {
		t.Errorf("Format = %q", got)
	}
	for _, c := range []struct {
		cpus []int
		want string
	}{
		{nil, "00000000"},
		{[]int{0}, "00000001"},
		{[]int{1}, "00000002"},
		{[]int{1, 0}, "00000003"},
		{[]int{33, 2}, "00000002,00000004"},
	} {
		if got := Mask(c.cpus); got != c.want {
			t.Errorf("Mask(%v) = %q, want %q", c.cpus, got, c.want)
		}
	}
}

// Parse takes command-line input: never a panic; either ErrSyntax or CPUs
// in range that Format writes back to a list Parse reads as the same.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "1,0", "0-3", " 2 , 0-1", "", "-", "3-1", "0-99999999999", "1,,2", "٣", "8191"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cpus, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("%q: error %v does not wrap ErrSyntax", s, err)
			}
			return
		}
		if len(cpus) == 0 {
			t.Fatalf("%q: no CPUs and no error", s)
		}
		for _, c := range cpus {
			if c < 0 || c > MaxCPU {
				t.Fatalf("%q: CPU %d out of range", s, c)
			}
		}
		again, err := Parse(Format(cpus))
		if err != nil || !reflect.DeepEqual(again, cpus) {
			t.Fatalf("%q: Format %q parses as %v, %v", s, Format(cpus), again, err)
		}
		m := Mask(cpus)
		words := strings.Split(m, ",")
		if want := cpus[0]/32 + 1; len(words) < want {
			t.Fatalf("%q: mask %q too short for CPU %d", s, m, cpus[0])
		}
		for _, w := range words {
			if _, err := strconv.ParseUint(w, 16, 32); err != nil || len(w) != 8 {
				t.Fatalf("%q: mask word %q", s, w)
			}
		}
	})
}
