package e2e

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"xnat/internal/cpuset"
)

// Placement pins a run's busy threads to CPUs, so that a measurement does
// not depend on where the scheduler happens to put them and so that the
// device under test gets the same CPUs whichever target it is.
//
// The generator of queue q runs on Gen[q%len(Gen)], the sink (or
// reflector) on Sink, and the device under test's work for queue q on
// DUT[q%len(DUT)]: xnat's worker of queue q through xnatd --cpus; the
// kernel's forwarding, when Point.KernelRPS is set, through RPS on the
// device under test's interfaces (rps_cpus = the DUT CPUs), which moves
// it out of the generator's sendto, where veth otherwise runs it.
type Placement struct {
	Gen  []int
	Sink int
	DUT  []int
}

// DefaultPlacement is the placement for a machine with ncpu CPUs: the
// generators from CPU 0 up, the device under test from the last CPU down
// (with one queue: generator on 0, device under test on the last), and
// the sink on the last CPU, beside the device under test and away from
// the generator, which never idles. With one CPU it returns nil: nothing
// to place.
func DefaultPlacement(ncpu int) *Placement {
	if ncpu < 2 {
		return nil
	}
	p := &Placement{Sink: ncpu - 1}
	for c := range ncpu {
		p.Gen = append(p.Gen, c)
		p.DUT = append(p.DUT, ncpu-1-c)
	}
	return p
}

// ParseCPUList parses "0", "0,2" or "0-3" into CPU numbers below ncpu.
func ParseCPUList(s string, ncpu int) ([]int, error) {
	cpus, err := cpuset.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	for _, c := range cpus {
		if c >= ncpu {
			return nil, fmt.Errorf("%w: CPU %d (this machine has 0 to %d)", ErrConfig, c, ncpu-1)
		}
	}
	return cpus, nil
}

// gen returns the CPU of queue q's generator, -1 for none.
func (p *Placement) gen(q int) int {
	if p == nil || len(p.Gen) == 0 {
		return -1
	}
	return p.Gen[q%len(p.Gen)]
}

// sink returns the sink's CPU, -1 for none.
func (p *Placement) sink() int {
	if p == nil {
		return -1
	}
	return p.Sink
}

// dut returns the device under test's CPU for each of queues queues, nil
// for none.
func (p *Placement) dut(queues int) []int {
	if p == nil || len(p.DUT) == 0 {
		return nil
	}
	out := make([]int, queues)
	for q := range out {
		out[q] = p.DUT[q%len(p.DUT)]
	}
	return out
}

// pinThread locks the calling goroutine to its thread and the thread to
// cpu; cpu < 0 leaves both alone. The goroutine must end without
// unlocking: its thread then exits rather than carry the pinning to
// other goroutines.
func pinThread(cpu int) error {
	if cpu < 0 {
		return nil
	}
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("e2e: pinning to CPU %d: %w", cpu, err)
	}
	return nil
}
