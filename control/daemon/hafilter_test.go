package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"xnat/control/ha"
)

func TestHAFilterConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "xnatd.toml")
	must(t, os.WriteFile(p, []byte(`inside = ["eth1"]
outside = ["eth0"]

[ha]
local = "10.9.0.1"
peer = "10.9.0.2"
interface = "eth2"
check_port = 3790

[ha.filter]
protocol_accept = ["tcp", "udp"]
address_ignore = ["127.0.0.1", "10.99.0.0/24"]
state_accept = ["established", "close", "time_wait", "close_wait"]
`), 0o644))
	c, err := LoadFile(p)
	must(t, err)
	c = c.WithDefaults()
	must(t, c.Validate())
	f, err := c.HA.Filter.filter()
	must(t, err)
	est := &ha.Conn{Proto: 6, Src: 0x0a000002, Dst: 0xc0000201, SrcPort: 1, DstPort: 2, TCPState: 3, Has: ha.HasTCPState}
	syn := *est
	syn.TCPState = 1
	lo := *est
	lo.Src = 0x0a630005 // 10.99.0.5
	icmp := &ha.Conn{Proto: 1, Src: 0x0a000002, Dst: 0xc0000201}
	if !f.Allow(ha.TypeNew, est) || f.Allow(ha.TypeNew, &syn) || f.Allow(ha.TypeNew, &lo) || f.Allow(ha.TypeNew, icmp) {
		t.Fatal("the filter does not do what the section says")
	}
	if port, err := c.HA.checkPort(3780); err != nil || port != 3790 {
		t.Fatalf("check port %d %v", port, err)
	}
	if port, err := (&HAConfig{}).checkPort(3780); err != nil || port != 3781 {
		t.Fatalf("default check port %d %v", port, err)
	}

	// A misspelt key is an error at load.
	must(t, os.WriteFile(p, []byte("inside = [\"eth1\"]\noutside = [\"eth0\"]\n[ha]\nlocal = \"10.9.0.1\"\n[ha.filter]\nprotocols_accept = [\"tcp\"]\n"), 0o644))
	if _, err := LoadFile(p); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "ha.filter.protocols_accept") {
		t.Fatalf("misspelt key: %v", err)
	}

	base := HAConfig{Local: "10.9.0.1", Peer: "10.9.0.2", Interface: "eth2"}
	cases := map[string]func(h *HAConfig){
		"ha.filter: bad sync filter: protocol \"tcpp\"": func(h *HAConfig) { h.Filter = &HAFilterConfig{ProtocolAccept: []string{"tcpp"}} },
		"address \"10.0.0.0/40\"":                       func(h *HAConfig) { h.Filter = &HAFilterConfig{AddressIgnore: []string{"10.0.0.0/40"}} },
		"TCP state \"established2\"":                    func(h *HAConfig) { h.Filter = &HAFilterConfig{StateAccept: []string{"established2"}} },
		"state_accept and state_ignore": func(h *HAConfig) {
			h.Filter = &HAFilterConfig{StateAccept: []string{"close"}, StateIgnore: []string{"listen"}}
		},
		"check_port 3780":  func(h *HAConfig) { h.CheckPort = 3780 },
		"check_port 65536": func(h *HAConfig) { h.Port = 65535 },
		"check_port 70000": func(h *HAConfig) { h.CheckPort = 70000 },
	}
	for want, mod := range cases {
		h := base
		mod(&h)
		cfg := Config{Inside: []string{"in0"}, Outside: []string{"out0"}, HA: &h}.WithDefaults()
		err := cfg.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", want, err)
		}
	}
}

func TestPoolFingerprint(t *testing.T) {
	fp := func(text string) ha.Fingerprint {
		t.Helper()
		m, err := ParseRules([]byte(text))
		must(t, err)
		f, err := PoolFingerprint(m)
		must(t, err)
		return f
	}
	base := fp("*nat\n-A POSTROUTING -o eth0 -j SNAT --to-source 203.0.113.1\nCOMMIT\n")
	// Counters, comments, spacing and the order of options do not count.
	same := []string{
		"# saved\n*nat\n:POSTROUTING ACCEPT [12:3400]\n[5:600] -A POSTROUTING -o eth0 -j SNAT --to-source 203.0.113.1\nCOMMIT\n",
		"*nat\n-A POSTROUTING  -o eth0   -j SNAT --to-source 203.0.113.1\nCOMMIT\n*filter\nCOMMIT\n",
	}
	for _, s := range same {
		if got := fp(s); got != base {
			t.Errorf("%q: %s, want %s", s, got, base)
		}
	}
	differ := []string{
		"*nat\n-A POSTROUTING -o eth0 -j SNAT --to-source 203.0.113.2\nCOMMIT\n",
		"*nat\n-A POSTROUTING -o eth0 -p udp -j SNAT --to-source 203.0.113.1\nCOMMIT\n",
		"*nat\n-A POSTROUTING -o eth0 -p udp -j SNAT --to-source 203.0.113.1:1024-65535\nCOMMIT\n",
		"*nat\n-A POSTROUTING -o eth1 -j SNAT --to-source 203.0.113.1\nCOMMIT\n",
		"*nat\n-A POSTROUTING -o eth0 -j SNAT --to-source 203.0.113.1\nCOMMIT\n*filter\n-A FORWARD -p tcp --dport 25 -j DROP\nCOMMIT\n",
		"*nat\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n",
		"",
	}
	seen := map[ha.Fingerprint]string{base: "base"}
	for _, s := range differ {
		got := fp(s)
		if prev, ok := seen[got]; ok {
			t.Errorf("%q has the fingerprint of %q", s, prev)
		}
		seen[got] = s
	}
}
