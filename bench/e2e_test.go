package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"xnat/bench/e2e"
	"xnat/internal/netns"
)

func TestParseE2E(t *testing.T) {
	o, err := ParseE2E([]string{"--target", "both", "--scenario", "all", "--flows", "1,1000", "--size", "64,1500", "--time", "1s", "--json", "--plot", "x.svg"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := o.Config
	if len(c.Targets) != 2 || len(c.Scenarios) != len(e2e.AllScenarios) || len(c.Flows) != 2 || c.Flows[1] != 1000 ||
		len(c.Sizes) != 2 || c.Sizes[1] != 1500 || c.Time != time.Second || !o.JSON || o.Plot != "x.svg" || c.Proto != e2e.UDP {
		t.Fatalf("parsed %+v", o)
	}
	for _, bad := range [][]string{
		{"--target", "pf"}, {"--scenario", "soak"}, {"--flows", "0"}, {"--flows", "a"}, {"--size", "9000"},
		{"--time", "0s"}, {"--proto", "sctp"}, {"--scenario", "loss", "--plot", "x.svg"}, {"extra"},
		{"--gen-cpus", "x"}, {"--dut-cpus", "99999"}, {"--sink-cpu", "-1"}, {"--pin=false", "--kernel-rps"},
	} {
		if _, err := ParseE2E(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestParseE2EFlood(t *testing.T) {
	o, err := ParseE2E([]string{"--scenario", "flood", "--target", "both", "--time", "3s", "--flood-pps", "1000", "--established", "50",
		"--legit-rate", "20", "--syn-sources", "1000", "--max-conns", "4096", "--settle", "11s", "--json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f := o.Flood
	if f == nil || f.Duration != 3*time.Second || f.FloodPPS != 1000 || f.Established != 50 || f.LegitRate != 20 ||
		f.SynSources != 1000 || f.MaxConns != 4096 || f.Settle != 11*time.Second || len(o.Config.Targets) != 2 || !o.JSON {
		t.Fatalf("parsed %+v, flood %+v", o, f)
	}
	if o, err := ParseE2E([]string{"--scenario", "flood"}, io.Discard); err != nil || o.Flood == nil || o.Flood.Established != e2e.DefaultEstablished {
		t.Fatalf("defaults: %+v, %v", o.Flood, err)
	}
	if o, err := ParseE2E([]string{"--scenario", "all"}, io.Discard); err != nil || o.Flood != nil {
		t.Fatalf("all: %+v, %v", o.Flood, err)
	}
	for _, bad := range [][]string{
		{"--flood-pps", "0"}, {"--flood-pps", "-5"}, {"--established", "0"}, {"--established", "100000"},
		{"--legit-rate", "-1"}, {"--syn-sources", "999999"}, {"--max-conns", "100"}, {"--settle", "-1s"},
	} {
		if _, err := ParseE2E(append([]string{"--scenario", "flood"}, bad...), io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestParseE2EPlacement(t *testing.T) {
	o, err := ParseE2E([]string{"--gen-cpus", "0", "--dut-cpus", "0", "--sink-cpu", "0", "--kernel-rps"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p := o.Config.Placement
	if p == nil || len(p.Gen) != 1 || p.Gen[0] != 0 || len(p.DUT) != 1 || p.DUT[0] != 0 || p.Sink != 0 || !o.Config.KernelRPS {
		t.Fatalf("placement %+v, rps %v", p, o.Config.KernelRPS)
	}
	if o, err = ParseE2E([]string{"--pin=false"}, io.Discard); err != nil || o.Config.Placement != nil {
		t.Fatalf("--pin=false: %+v, %v", o.Config.Placement, err)
	}
}

// xnat-bench e2e --json writes one decodable result per line, with the
// keys its documentation names.
func TestE2EJSONRun(t *testing.T) {
	netns.RequireRoot(t)
	var out bytes.Buffer
	if err := runE2E([]string{"--target", "kernel", "--scenario", "throughput", "--flows", "100", "--time", "300ms", "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&out)
	n := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		for _, k := range []string{"target", "scenario", "pps", "gbps", "loss", "p50_us", "p99_us", "new_per_sec"} {
			if _, ok := m[k]; !ok {
				t.Errorf("key %q missing: %s", k, sc.Text())
			}
		}
		if m["target"] != "kernel" || m["scenario"] != "throughput" || m["pps"].(float64) <= 0 || m["unaccounted"].(float64) != 0 {
			t.Errorf("result %s", sc.Text())
		}
		n++
	}
	if n != 1 {
		t.Fatalf("%d results, want 1", n)
	}
}

func TestParseE2EFailover(t *testing.T) {
	o, err := ParseE2E([]string{"--target", "xnat", "--scenario", "failover", "--udp-flows", "50", "--download", "10485760", "--json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Failover == nil || o.Failover.UDPFlows != 50 || o.Failover.Download != 10<<20 || o.Failover.Rate != 25<<20 || o.Failover.Dist != "dist" || !o.JSON {
		t.Fatalf("%+v", o.Failover)
	}
	for _, bad := range [][]string{
		{"--scenario", "failover"}, // target kernel
		{"--target", "both", "--scenario", "failover"},
		{"--target", "xnat", "--scenario", "failover", "--udp-flows", "0"},
		{"--target", "xnat", "--scenario", "failover", "--download", "10"},
		{"--target", "xnat", "--scenario", "failover", "--rate", "-1"},
	} {
		if _, err := ParseE2E(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseE2ESyncLoad(t *testing.T) {
	o, err := ParseE2E([]string{"--target", "xnat", "--scenario", "sync-load", "--new-conns", "20000", "--time", "500ms", "--proto", "tcp", "--json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s := o.SyncLoad
	if s == nil || s.NewConns != 20000 || s.Established != 1000 || s.Time != 500*time.Millisecond || s.Proto != e2e.TCP || s.Size != 64 || !o.JSON {
		t.Fatalf("%+v", s)
	}
	if o, err := ParseE2E([]string{"--target", "xnat", "--scenario", "sync-load", "--flows", "50"}, io.Discard); err != nil || o.SyncLoad.Established != 50 || o.SyncLoad.NewConns != 500000 {
		t.Fatalf("defaults: %+v, %v", o.SyncLoad, err)
	}
	if o, err := ParseE2E([]string{"--scenario", "throughput"}, io.Discard); err != nil || o.SyncLoad != nil {
		t.Fatalf("throughput: %+v, %v", o.SyncLoad, err)
	}
	for _, bad := range [][]string{
		{"--scenario", "sync-load"}, // target kernel
		{"--target", "both", "--scenario", "sync-load"},
		{"--target", "xnat", "--scenario", "sync-load", "--new-conns", "0"},
		{"--target", "xnat", "--scenario", "sync-load", "--new-conns", "-3"},
		{"--target", "xnat", "--scenario", "sync-load", "--new-conns", "99999999"},
		{"--target", "xnat", "--scenario", "sync-load", "--flows", "1,1000"},
		{"--target", "xnat", "--scenario", "sync-load", "--size", "64,1500"},
		{"--target", "xnat", "--scenario", "sync-load", "--time", "0s"},
	} {
		if _, err := ParseE2E(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// xnat-bench e2e --scenario sync-load --json, in a short run through a
// real xnatd built for the test: one line with the documented keys;
// every connection xnat created reached the peer's cache, and the
// established path ran with sync off and on.
func TestE2ESyncLoadRun(t *testing.T) {
	netns.RequireRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "xnatd"), "xnat/cmd/xnatd").CombinedOutput(); err != nil {
		t.Fatalf("building xnatd: %v\n%s", err, out)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	var out bytes.Buffer
	if err := runE2E([]string{"--target", "xnat", "--scenario", "sync-load", "--new-conns", "20000", "--flows", "100", "--time", "300ms", "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &m); err != nil {
		t.Fatalf("%q: %v", out.String(), err)
	}
	t.Logf("%s", out.String())
	for _, k := range []string{"target", "scenario", "new_per_sec", "conns", "synced_conns", "synced_conns_per_sec", "sync_lag_ms", "sync_lag_max_ms",
		"sync_msgs_per_sec", "sync_datagrams_per_sec", "sync_lost", "sync_retransmitted", "sync_table_resends",
		"established_pps_sync_on", "established_pps_sync_off", "established_ratio"} {
		if _, ok := m[k]; !ok {
			t.Errorf("key %q missing", k)
		}
	}
	num := func(k string) float64 { v, _ := m[k].(float64); return v }
	if m["scenario"] != "sync-load" || num("conns") <= 0 || num("synced_conns") != num("conns") || num("synced_conns_per_sec") <= 0 ||
		num("sync_msgs_per_sec") < num("synced_conns_per_sec") || num("established_pps_sync_on") <= 0 || num("established_pps_sync_off") <= 0 {
		t.Errorf("result %s", out.String())
	}
}
