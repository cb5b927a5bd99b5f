package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
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
	if err := s.Run([]string{"--flows", "1000,3000", "--proto", "tcp", "--time", "20ms", "--new", "--json"}, &out); err != nil {
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
		if r.Flows != []int{1000, 3000}[i] || r.Proto != "tcp" || r.Batch != 64 || r.Mpps <= 0 || r.NsPerPkt <= 0 || r.NewPerSec <= 0 || r.HarnessNsPerPkt <= 0 {
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
	for _, bad := range [][]string{{"--flows", "0"}, {"--proto", "icmp"}, {"--batch", "300"}, {"--time", "0s"}, {"extra"}} {
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
	if r.Flows != 5000 || r.BytesPerFlow <= 0 || r.LookupNs <= 0 || r.LookupBatchNs <= 0 || r.InsertDeleteNs <= 0 ||
		r.ParallelSpeedup <= 0 || r.VsMutexMap <= 0 || r.VsMutexMapBatched <= 0 || r.PeerMixedMops <= 0 {
		t.Fatalf("%s", out.String())
	}
	for _, bad := range [][]string{{"--flows", "10"}, {"--workers", "0"}, {"--time", "-1s"}, {"extra"}} {
		if err := s.Run(bad, &out); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
