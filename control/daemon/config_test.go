package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"xnat/dataplane"
	"xnat/dataplane/rules"
	"xnat/dataplane/topo"
	"xnat/dataplane/xdpprog"
)

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "xnatd.toml")
	must(t, os.WriteFile(p, []byte(`inside = ["eth1", "eth2"]
outside = ["eth0"]
queues = 2
cpus = [2, 3]
capacity = 1048576
max_conns = 262144
rules = "rules.v4"
socket = "/run/xnat.sock"
poll = "busy"
bind = "copy"
xdp_mode = "generic"
local_ports = "refuse"

[timeouts]
nf_conntrack_tcp_timeout_established = 7200
nf_conntrack_udp_timeout = 30
`), 0o644))
	c, err := LoadFile(p)
	must(t, err)
	want := Config{Inside: []string{"eth1", "eth2"}, Outside: []string{"eth0"}, Queues: 2, CPUs: []int{2, 3},
		Capacity: 1048576, MaxConns: 262144, Rules: filepath.Join(dir, "rules.v4"), Socket: "/run/xnat.sock",
		Poll: "busy", Bind: "copy", XDPMode: "generic", LocalPorts: "refuse",
		Timeouts: map[string]int64{"nf_conntrack_tcp_timeout_established": 7200, "nf_conntrack_udp_timeout": 30}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("LoadFile:\n%+v\nwant\n%+v", c, want)
	}
	must(t, c.Validate())

	for text, msg := range map[string]string{
		"queues = \"two\"":    "queues",
		"inside = [\"a\"]\nx": "expected",
		"[timeout]\na = 1":    "unknown key timeout",
	} {
		must(t, os.WriteFile(p, []byte(text), 0o644))
		if _, err := LoadFile(p); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), msg) {
			t.Errorf("LoadFile(%q) = %v, want ErrConfig mentioning %q", text, err, msg)
		}
	}
	if _, err := LoadFile(filepath.Join(dir, "missing.toml")); !errors.Is(err, ErrConfig) {
		t.Errorf("missing file: %v", err)
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Inside: []string{"in0"}, Outside: []string{"out0"}}.WithDefaults()
	must(t, ok.Validate())
	if ok.Queues != DefaultQueues || ok.Capacity != DefaultCapacity || ok.MaxConns != DefaultCapacity ||
		ok.Poll != "sleep" || ok.Bind != "auto" || ok.XDPMode != "auto" || ok.LocalPorts != "warn" {
		t.Fatalf("defaults: %+v", ok)
	}
	cases := map[string]func(c *Config){
		"inside and one outside":   func(c *Config) { c.Outside = nil },
		"named twice":              func(c *Config) { c.Outside = []string{"in0"} },
		"interface name":           func(c *Config) { c.Inside = []string{"a/b"} },
		"queues 65":                func(c *Config) { c.Queues = 65 },
		"2 CPUs for 1 queues":      func(c *Config) { c.CPUs = []int{0, 1} },
		"CPU -1":                   func(c *Config) { c.CPUs = []int{-1} },
		"CPU 1 given twice":        func(c *Config) { c.Queues, c.CPUs = 2, []int{1, 1} },
		"max_conns 300000":         func(c *Config) { c.MaxConns = 300000 },
		"capacity 0":               func(c *Config) { c.Capacity = 0; c.MaxConns = 1 },
		"timeout \"nf_bogus\"":     func(c *Config) { c.Timeouts = map[string]int64{"nf_bogus": 1} },
		"nf_conntrack_udp_timeout": func(c *Config) { c.Timeouts = map[string]int64{"nf_conntrack_udp_timeout": 0} },
		"poll":                     func(c *Config) { c.Poll = "spin" },
		"bind":                     func(c *Config) { c.Bind = "fast" },
		"xdp_mode":                 func(c *Config) { c.XDPMode = "offload" },
		"local_ports":              func(c *Config) { c.LocalPorts = "ignore" },
		"interfaces (at most 15)": func(c *Config) {
			for i := range 16 {
				c.Inside = append(c.Inside, "in"+string(rune('a'+i)))
			}
		},
	}
	for want, mod := range cases {
		c := ok
		c.Inside = append([]string(nil), ok.Inside...)
		mod(&c)
		err := c.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Validate = %v", want, err)
		}
	}
}

// TestPortSets: the XDP port sets hold the pools' ranges (default or
// --to-ports) and DNAT rules' destination ports; a DNAT rule without a
// port claims its protocol's every port.
func TestPortSets(t *testing.T) {
	snap := &topo.Snapshot{Ifaces: []topo.Iface{
		{Index: 2, Name: "in0", Up: true, MTU: 1500, Addrs: []topo.Prefix{{Addr: 0x0a000001, Len: 24}}},
		{Index: 3, Name: "out0", Up: true, MTU: 1500, Addrs: []topo.Prefix{{Addr: 0xc0000201, Len: 24}}},
	}}
	compile := func(text string) (*rules.Model, *rules.Ruleset) {
		m, err := ParseRules([]byte(text))
		must(t, err)
		env, err := dataplane.NewEnv(dataplane.EnvConfig{Snapshot: snap, Inside: []string{"in0"}, Outside: []string{"out0"}, Model: m, Pools: dataplane.NewPools(1, nil)})
		must(t, err)
		return m, env.Rules
	}
	const tcp, udp, icmp = 0, 1, 2
	type probe struct {
		set  int
		port uint16
		in   bool
	}
	for _, c := range []struct {
		rules  string
		probes []probe
	}{
		{"*nat\n-A POSTROUTING -o out0 -j MASQUERADE\nCOMMIT\n", []probe{
			{tcp, 1023, false}, {tcp, 1024, true}, {udp, 65535, true}, {icmp, 1024, true}, {icmp, 80, false}}},
		{"*nat\n-A POSTROUTING -o out0 -p udp -j MASQUERADE --to-ports 40000-40999\nCOMMIT\n", []probe{
			{udp, 39999, false}, {udp, 40000, true}, {tcp, 40999, true}, {icmp, 41000, false}}},
		{"*nat\n-A PREROUTING -p tcp --dport 443 -j DNAT --to-destination 10.0.0.2\n-A PREROUTING -p udp -m multiport --dports 53,100:101 -j DNAT --to-destination 10.0.0.2\nCOMMIT\n", []probe{
			{tcp, 443, true}, {tcp, 444, false}, {udp, 53, true}, {udp, 101, true}, {udp, 102, false}, {udp, 443, false},
			{tcp, 2000, true}}}, // hairpinning's default pool
		{"*nat\n-A PREROUTING -d 192.0.2.1 -j DNAT --to-destination 10.0.0.2\nCOMMIT\n", []probe{
			{tcp, 22, true}, {udp, 1, true}, {icmp, 22, false}}},
		{"*filter\n-A FORWARD -j ACCEPT\nCOMMIT\n", []probe{{tcp, 2000, false}, {udp, 2000, false}}},
	} {
		m, rs := compile(c.rules)
		sets := portSets(m, rs)
		for _, p := range c.probes {
			if got := sets[p.set].Has(p.port); got != p.in {
				t.Errorf("%q: set %d port %d: %v, want %v", c.rules, p.set, p.port, got, p.in)
			}
		}
	}
	var empty xdpprog.PortSet
	if empty.Has(0) {
		t.Fatal("empty set has port 0")
	}
}
