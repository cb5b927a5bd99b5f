package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"xnat/control/sysctl"
	"xnat/dataplane"
	"xnat/dataplane/topo"
	"xnat/flowtable"
	"xnat/portalloc"
)

// TestConfigPerSourceLimits: per_source_max and per_source_ports in the
// config file are what xnat.per_source_max and xnat.per_source_ports read
// once the daemon has made its limiter: a limit kept in the file survives
// a restart. Values out of range are refused.
func TestConfigPerSourceLimits(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "xnatd.toml")
	must(t, os.WriteFile(p, []byte("inside = [\"in0\"]\noutside = [\"out0\"]\nqueues = 2\ncapacity = 4096\nper_source_max = 300\nper_source_ports = 120\n"), 0o644))
	c, err := LoadFile(p)
	must(t, err)
	c = c.WithDefaults()
	must(t, c.Validate())
	if c.PerSourceMax != 300 || c.PerSourcePorts != 120 {
		t.Fatalf("loaded %d %d", c.PerSourceMax, c.PerSourcePorts)
	}
	tab, err := flowtable.New(flowtable.Config{Capacity: c.Capacity, Cores: c.Queues})
	must(t, err)
	lim, err := newLimiter(&c, tab)
	must(t, err)
	tg := &sysctl.Target{Table: tab, Settings: dataplane.NewSettings(), Limiter: lim}
	for k, want := range map[string]int64{"xnat.per_source_max": 300, "xnat.per_source_ports": 120} {
		if v, err := sysctl.Get(tg, k); v != want || err != nil {
			t.Errorf("%s = %d %v, want %d", k, v, err, want)
		}
	}
	if lim.Cores() != 2 {
		t.Errorf("limiter for %d cores", lim.Cores())
	}
	// Absent: no limit.
	c0 := Config{Inside: []string{"in0"}, Outside: []string{"out0"}}.WithDefaults()
	must(t, c0.Validate())
	tab0, err := flowtable.New(flowtable.Config{Capacity: 1000, Cores: 1})
	must(t, err)
	lim0, err := newLimiter(&c0, tab0)
	must(t, err)
	if lim0.Limit() != 0 || lim0.PortLimit() != 0 {
		t.Errorf("default limits %d %d", lim0.Limit(), lim0.PortLimit())
	}
	for _, bad := range []struct {
		text, msg string
	}{
		{"per_source_max = -1", "per_source_max -1"},
		{"per_source_ports = 1073741823", "per_source_ports 1073741823"},
		{"per_source_ports = \"ten\"", "per_source_ports"},
	} {
		must(t, os.WriteFile(p, []byte("inside = [\"in0\"]\noutside = [\"out0\"]\n"+bad.text+"\n"), 0o644))
		c, err := LoadFile(p)
		if err == nil {
			c = c.WithDefaults()
			err = c.Validate()
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("%s: %v, want ErrConfig mentioning %q", bad.text, err, bad.msg)
		}
	}
}

// TestConfigHugeSNATPool: a rule set with an SNAT range of 65,536
// addresses compiles, as the daemon does it (check and start), in a
// moment and with next to no memory.
func TestConfigHugeSNATPool(t *testing.T) {
	snap := &topo.Snapshot{Ifaces: []topo.Iface{
		{Index: 2, Name: "in0", Up: true, MTU: 1500, Addrs: []topo.Prefix{{Addr: 0x0a000001, Len: 24}}},
		{Index: 3, Name: "out0", Up: true, MTU: 1500, Addrs: []topo.Prefix{{Addr: 0xc0000201, Len: 24}}},
	}}
	m, err := ParseRules([]byte("*nat\n-A POSTROUTING -o out0 -j SNAT --to-source 100.64.0.0-100.64.255.255\nCOMMIT\n"))
	must(t, err)
	c := Config{Inside: []string{"in0"}, Outside: []string{"out0"}, Queues: 2, Capacity: 1 << 16}.WithDefaults()
	tab, err := flowtable.New(flowtable.Config{Capacity: c.Capacity, Cores: c.Queues})
	must(t, err)
	lim, err := newLimiter(&c, tab)
	must(t, err)
	for _, pools := range []*dataplane.Pools{dataplane.NewPools(c.Queues, nil), dataplane.NewPools(c.Queues, lim)} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		env, err := dataplane.NewEnv(dataplane.EnvConfig{Snapshot: snap, Inside: c.Inside, Outside: c.Outside, Model: m, Pools: pools})
		took := time.Since(start)
		runtime.ReadMemStats(&after)
		must(t, err)
		if len(env.Rules.NATTargets()) != 1 {
			t.Fatalf("%d NAT targets", len(env.Rules.NATTargets()))
		}
		grew := after.TotalAlloc - before.TotalAlloc
		t.Logf("NewEnv: %v, %d bytes allocated, memory from the OS %d -> %d", took, grew, before.Sys, after.Sys)
		// The hairpin pool of the outside address is dense (378 KiB); the
		// SNAT pool costs nothing beyond its allocators.
		if grew > 4<<20 || after.Sys > before.Sys+16<<20 || took > 5*time.Second {
			t.Errorf("NewEnv with a 65,536-address pool: %v, %d bytes allocated, memory from the OS %d -> %d", took, grew, before.Sys, after.Sys)
		}
	}
}

// FuzzConfig: no config file makes LoadFile or Validate panic; what
// loads and validates has its per-source limits in range.
func FuzzConfig(f *testing.F) {
	f.Add([]byte("inside = [\"in0\"]\noutside = [\"out0\"]\nper_source_max = 10\nper_source_ports = 5\n"))
	f.Add([]byte("inside = [\"in0\"]\noutside = [\"out0\"]\nqueues = 2\ncapacity = 100\n[timeouts]\nnf_conntrack_udp_timeout = 5\n"))
	f.Add([]byte("per_source_max = 99999999999999999999\n"))
	f.Add([]byte("per_source_ports = -3\nmetrics = \"[::1]:9\"\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, text []byte) {
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, text, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadFile(p)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("LoadFile: %v is not ErrConfig", err)
			}
			return
		}
		c = c.WithDefaults()
		if err := c.Validate(); err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("Validate: %v is not ErrConfig", err)
			}
			return
		}
		if c.PerSourceMax < 0 || c.PerSourceMax > portalloc.MaxSourceLimit || c.PerSourcePorts < 0 || c.PerSourcePorts > portalloc.MaxSourceLimit {
			t.Fatalf("valid config with limits %d %d", c.PerSourceMax, c.PerSourcePorts)
		}
	})
}
