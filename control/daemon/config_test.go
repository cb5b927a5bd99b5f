package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"xnat/dataplane/kernel"
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

// TestDNATGroups: each interface's DNAT groups take the destination, the
// protocol and the ports of the DNAT rules reachable from PREROUTING
// whose -i (or a jump's) matches the interface, and nothing else.
func TestDNATGroups(t *testing.T) {
	const ext, in = 0xc0000201, 0x0a000001
	type probe struct {
		iface string
		addr  uint32
		proto uint8
		port  uint16
		in    bool
	}
	const tcp, udp, icmp, gre = 6, 17, 1, 47
	many := "*nat\n"
	for i := range 70 {
		many += fmt.Sprintf("-A PREROUTING -d 198.51.100.%d -p tcp --dport %d -j DNAT --to-destination 10.0.0.2\n", i+1, 1000+i)
	}
	many += "COMMIT\n"
	for _, c := range []struct {
		rules  string
		probes []probe
	}{
		{"*nat\n-A PREROUTING -i out0 -p tcp --dport 2222 -j DNAT --to-destination 10.0.0.2:22\nCOMMIT\n", []probe{
			{"out0", ext, tcp, 2222, true}, {"out0", in, tcp, 2222, true}, {"in0", in, tcp, 2222, false},
			{"out0", ext, tcp, 2223, false}, {"out0", ext, udp, 2222, false}, {"out0", ext, icmp, 0, false}}},
		{"*nat\n-A PREROUTING -d 192.0.2.1 -p udp -m multiport --dports 53,100:101 -j DNAT --to-destination 10.0.0.2\nCOMMIT\n", []probe{
			{"out0", ext, udp, 53, true}, {"in0", ext, udp, 101, true}, {"out0", ext, udp, 102, false},
			{"out0", in, udp, 53, false}, {"out0", ext, tcp, 53, false}}},
		{"*nat\n-A PREROUTING -d 192.0.2.1 -j DNAT --to-destination 10.0.0.2\nCOMMIT\n", []probe{
			{"out0", ext, tcp, 22, true}, {"in0", ext, udp, 1, true}, {"out0", ext, icmp, 0, true}, {"out0", ext, gre, 0, true},
			{"out0", in, tcp, 22, false}}},
		{"*nat\n:FWD - [0:0]\n-A PREROUTING -i out0 -j FWD\n-A FWD -p tcp --dport 80 -j DNAT --to-destination 10.0.0.2\nCOMMIT\n", []probe{
			{"out0", ext, tcp, 80, true}, {"in0", ext, tcp, 80, false}}},
		{"*nat\n-A PREROUTING ! -i out0 -p tcp --dport 80 -j DNAT --to-destination 10.0.0.2\n-A PREROUTING -i out+ -p udp --dport 81 -j DNAT --to-destination 10.0.0.2\nCOMMIT\n", []probe{
			{"in0", ext, tcp, 80, true}, {"out0", ext, tcp, 80, false}, {"out0", ext, udp, 81, true}, {"in0", ext, udp, 81, false}}},
		{"*nat\n-A PREROUTING ! -d 192.0.2.0/24 -p tcp ! --dport 22 -j DNAT --to-destination 10.0.0.2\nCOMMIT\n", []probe{
			{"out0", in, tcp, 23, true}, {"out0", in, tcp, 22, true}, {"out0", ext, tcp, 23, false}}},
		{"*nat\n-A POSTROUTING -o out0 -j MASQUERADE\n-A PREROUTING -p tcp --dport 80 -j ACCEPT\nCOMMIT\n", []probe{
			{"out0", ext, tcp, 80, false}, {"out0", ext, tcp, 2000, false}}},
		{many, []probe{{"out0", 0xc6336401, tcp, 1000, true}, {"out0", 0xc6336446, tcp, 1069, true}, {"out0", ext, udp, 1000, false}}},
	} {
		m, err := ParseRules([]byte(c.rules))
		must(t, err)
		for _, p := range c.probes {
			gs, err := dnatGroups(m, p.iface)
			must(t, err)
			if len(gs) > xdpprog.MaxDNATGroups {
				t.Fatalf("%d groups", len(gs))
			}
			if got := groupsMatch(gs, heldKey{p.addr, p.proto, p.port}); got != p.in {
				t.Errorf("%q on %s: %+v taken %v, want %v", c.rules, p.iface, p, got, p.in)
			}
		}
	}
}

// TestPoolAddrs: the box's addresses that pools translate to are the
// outside interfaces' primaries and the local addresses in SNAT ranges;
// only pools on them are checked against the kernel's ports.
func TestPoolAddrs(t *testing.T) {
	snap := &topo.Snapshot{Ifaces: []topo.Iface{
		{Index: 2, Name: "in0", Up: true, MTU: 1500, Addrs: []topo.Prefix{{Addr: 0x0a000001, Len: 24}}},
		{Index: 3, Name: "out0", Up: true, MTU: 1500, Addrs: []topo.Prefix{{Addr: 0xc0000201, Len: 24}, {Addr: 0xc0000202, Len: 24}}},
	}}
	m, err := ParseRules([]byte("*nat\n-A POSTROUTING -s 10.1.0.0/16 -p udp -j SNAT --to-source 192.0.2.2:5000-6000\n-A POSTROUTING -s 10.2.0.0/16 -j SNAT --to-source 203.0.113.1-203.0.113.9\nCOMMIT\n"))
	must(t, err)
	locals := localAddrs(snap)
	if got := poolAddrs(snap, m, []string{"out0"}, locals); len(got) != 2 || got[0] != 0xc0000201 || got[1] != 0xc0000202 {
		t.Fatalf("pool addresses %x", got)
	}
	if got := localPoolPorts(m, locals); len(got) != 1 || got[0] != (kernel.PortRange{Lo: 5000, Hi: 6000}) {
		t.Fatalf("pools on local addresses: %v", got)
	}
	lp := kernel.LocalPorts{Range: kernel.PortRange{Lo: 32768, Hi: 60999}}
	if _, err := checkLocalPorts([]kernel.PortRange{{Lo: 40000, Hi: 50000}}, lp, "warn", 2, false); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "ip_local_reserved_ports=40000-50000") {
		t.Fatalf("a pool within the kernel's ports: %v", err)
	}
	facts, err := checkLocalPorts([]kernel.PortRange{{Lo: 1024, Hi: 65535}}, lp, "warn", 2, false)
	if err != nil || len(facts) != 2 || facts[1].Level != slog.LevelWarn || !strings.Contains(facts[1].Msg, overlapMsg) {
		t.Fatalf("default pool: %v %v", facts, err)
	}
	if _, err := checkLocalPorts([]kernel.PortRange{{Lo: 1024, Hi: 65535}}, lp, "refuse", 2, false); !errors.Is(err, ErrConfig) {
		t.Fatalf("refuse: %v", err)
	}
	// An HA pair's floating pool keeps every port: no error for a pool
	// within the kernel's ports, and the warning says to reserve them.
	if facts, err := checkLocalPorts([]kernel.PortRange{{Lo: 40000, Hi: 50000}}, lp, "warn", 2, true); err != nil || len(facts) != 2 || facts[1].Level != slog.LevelWarn || !strings.Contains(facts[1].Msg, "keeps the whole pool") {
		t.Fatalf("floating pool: %v %v", facts, err)
	}
	lp.Reserved = []kernel.PortRange{{Lo: 32768, Hi: 60999}}
	if facts, err := checkLocalPorts([]kernel.PortRange{{Lo: 1024, Hi: 65535}}, lp, "refuse", 2, false); err != nil || facts[1].Level != slog.LevelInfo {
		t.Fatalf("every kernel port reserved: %v %v", facts, err)
	}
}
