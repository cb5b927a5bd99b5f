package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"xnat/dataplane"
	"xnat/flowtable"
)

// TestPipelineScenarioJSON runs the pipeline scenario small: every row
// has its keys, figures that are positive, and no allocation per packet;
// the new-connection figure comes from passes repeated until it has been
// timed long enough (a thousand connections alone take well under a
// millisecond).
func TestPipelineScenarioJSON(t *testing.T) {
	s, err := Lookup("pipeline")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := s.Run([]string{"--flows", "1000,3000", "--proto", "tcp", "--ports", "distinct", "--time", "20ms", "--new", "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), out.String())
	}
	for i, l := range lines {
		var r PipelineResult
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		if r.Flows != []int{1000, 3000}[i] || r.Impl != flowtable.ActiveImpl().String() || r.Proto != "tcp" || r.Ports != "distinct" || r.Batch != 64 || r.Mpps <= 0 || r.NsPerPkt <= 0 || r.NewPerSec <= 0 || r.HarnessNsPerPkt <= 0 {
			t.Fatalf("line %d: %s", i, l)
		}
		// The figure is the whole process's mallocs over the window, a
		// stray one of the runtime's (or the race detector's) included;
		// an allocation in the packet path would make it 1 or more. The
		// exact zero is dataplane's AllocsPerRun tests' to assert.
		if r.AllocsPerPkt >= 0.01 {
			t.Errorf("line %d: %v allocations a packet", i, r.AllocsPerPkt)
		}
	}
	// --impl go,auto measures each size under go, then under auto.
	out.Reset()
	if err := s.Run([]string{"--flows", "1000", "--time", "20ms", "--impl", "go,auto", "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("--impl go,auto: %d lines: %q", len(lines), out.String())
	}
	for i, l := range lines {
		var r PipelineResult
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.Impl != []string{"go", flowtable.ActiveImpl().String()}[i] || r.Mpps <= 0 {
			t.Fatalf("--impl go,auto, line %d: %v: %s", i, err, l)
		}
	}
	for _, bad := range [][]string{{"--flows", "0"}, {"--proto", "icmp"}, {"--ports", "some"}, {"--batch", "300"}, {"--time", "0s"}, {"--impl", "sse"}, {"--impl", "go,"}, {"extra"}} {
		if err := s.Run(bad, &out); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestFlowtableScenarioJSON runs the flowtable scenario small, the
// insert+delete loop and the mixed workloads included.
func TestFlowtableScenarioJSON(t *testing.T) {
	s, err := Lookup("flowtable")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := s.Run([]string{"--flows", "5000", "--time", "30ms", "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	var r FlowtableResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.Flows != 5000 || r.Impl != flowtable.ActiveImpl().String() || r.BytesPerFlow <= 0 || r.LookupNs <= 0 || r.LookupBatchNs <= 0 || r.InsertDeleteNs <= 0 ||
		r.ParallelSpeedup <= 0 || r.VsMutexMap <= 0 || r.VsMutexMapBatched <= 0 || r.PeerMixedMops <= 0 {
		t.Fatalf("%s", out.String())
	}
	active := flowtable.ActiveImpl()
	out.Reset()
	if err := s.Run([]string{"--flows", "5000", "--time", "10ms", "--impl", "go", "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Impl != "go" || r.LookupNs <= 0 {
		t.Fatalf("--impl go: %v: %s", err, out.String())
	}
	if flowtable.ActiveImpl() != active {
		t.Errorf("after --impl go: %v in use, want %v back", flowtable.ActiveImpl(), active)
	}
	for _, bad := range [][]string{{"--flows", "10"}, {"--workers", "0"}, {"--time", "-1s"}, {"--impl", "fast"}, {"extra"}} {
		if err := s.Run(bad, &out); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestPipelineBedPorts checks what --ports promises: with shared source
// ports nearly every connection's kept port is taken and the allocator
// searches; with distinct ones every connection keeps its port.
func TestPipelineBedPorts(t *testing.T) {
	const n = 4096
	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = make([]byte, 0, 2048)
	}
	sizes, in, out := make([]int, 64), make([]uint16, 64), make([]dataplane.Result, 64)
	for _, ports := range []string{"shared", "distinct"} {
		b, err := newPipelineBed(n, "udp", ports, NATMasquerade, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.create(n, 64, frames, sizes, in, out); err != nil {
			t.Fatal(err)
		}
		st := b.Pools.Stats()
		if st.Allocated != n {
			t.Fatalf("%s: %d allocated, want %d", ports, st.Allocated, n)
		}
		if want := map[string]uint64{"shared": 256, "distinct": n}[ports]; st.Preserved != want {
			t.Errorf("%s: %d connections kept their port, want %d", ports, st.Preserved, want)
		}
	}
}
