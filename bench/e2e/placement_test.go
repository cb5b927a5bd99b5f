package e2e

import (
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"xnat/internal/cpuset"
)

func TestDefaultPlacement(t *testing.T) {
	if p := DefaultPlacement(1); p != nil {
		t.Fatalf("one CPU: %+v, want nil", p)
	}
	p := DefaultPlacement(2)
	want := &Placement{Gen: []int{0, 1}, Sink: 1, DUT: []int{1, 0}}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("two CPUs: %+v, want %+v", p, want)
	}
	// One queue: generator and device under test on different CPUs.
	if p.gen(0) == p.dut(1)[0] {
		t.Fatalf("generator and device under test share CPU %d", p.gen(0))
	}
	if got := p.dut(3); !reflect.DeepEqual(got, []int{1, 0, 1}) {
		t.Fatalf("dut(3) = %v", got)
	}
	var none *Placement
	if none.gen(0) != -1 || none.sink() != -1 || none.dut(2) != nil {
		t.Fatalf("nil placement pins something")
	}
}

func TestParseCPUList(t *testing.T) {
	good := map[string][]int{"0": {0}, "1,0": {1, 0}, "0-3": {0, 1, 2, 3}, " 2 , 0-1": {2, 0, 1}}
	for s, want := range good {
		got, err := ParseCPUList(s, 4)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "x", "4", "-1", "3-1", "0-", "1,,2", "0-9"} {
		if got, err := ParseCPUList(s, 4); !errors.Is(err, ErrConfig) {
			t.Errorf("%q: %v, %v; want ErrConfig", s, got, err)
		}
	}
}

// TestKernelRPS steers the device under test's receive processing and
// then runs a pinned throughput point through the kernel with it: the
// masks are in place and every frame is accounted for.
func TestKernelRPS(t *testing.T) {
	tp := newTestTopology(t, 1)
	cpu := runtime.NumCPU() - 1
	if err := steerRPS(tp, []int{cpu}); err != nil {
		t.Fatal(err)
	}
	want := strings.TrimLeft(cpuset.Mask([]int{cpu}), "0,")
	for _, ifc := range []string{DUTInIf, DUTOutIf} {
		got, err := tp.DUT.ReadSysfs(ifc + "/queues/rx-0/rps_cpus")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimLeft(strings.TrimSpace(got), "0,") != want {
			t.Fatalf("%s rps_cpus = %q, want %s", ifc, got, want)
		}
	}

	pl := &Placement{Gen: []int{0}, Sink: cpu, DUT: []int{cpu}}
	o, err := Run(Point{Target: "kernel", Proto: UDP, Size: 64, Flows: 50, Duration: 300 * time.Millisecond, Warmup: true, Placement: pl, KernelRPS: true})
	if err != nil {
		t.Fatal(err)
	}
	r := ResultOf(ScThroughput, o)
	t.Logf("%v", r.Row())
	if r.Sent == 0 || r.Received == 0 || r.Unaccounted != 0 {
		t.Fatalf("sent %d received %d drops %d unaccounted %d", r.Sent, r.Received, r.Drops, r.Unaccounted)
	}
	if _, err := RunScenarios(Config{Targets: []string{"kernel"}, Scenarios: []string{ScThroughput}, Flows: []int{1}, Sizes: []int{64}, Time: time.Second, KernelRPS: true}); !errors.Is(err, ErrConfig) {
		t.Fatalf("RPS without a placement: %v", err)
	}
}

// ParseCPUList takes command-line input: never a panic, and either an
// error wrapping ErrConfig or CPUs all below ncpu, as many as the list
// names.
func FuzzParseCPUList(f *testing.F) {
	for _, s := range []string{"0", "1,0", "0-3", " 2 , 0-1", "", "-", "3-1", "0-99999999999", "1,,2", "٣"} {
		f.Add(s, 4)
	}
	f.Fuzz(func(t *testing.T, s string, ncpu int) {
		if ncpu < 1 || ncpu > 4096 {
			return
		}
		cpus, err := ParseCPUList(s, ncpu)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("%q: error %v does not wrap ErrConfig", s, err)
			}
			return
		}
		if len(cpus) == 0 {
			t.Fatalf("%q: no CPUs and no error", s)
		}
		for _, c := range cpus {
			if c < 0 || c >= ncpu {
				t.Fatalf("%q: CPU %d outside 0..%d", s, c, ncpu-1)
			}
		}
	})
}
