package daemon

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHAConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "xnatd.toml")
	must(t, os.WriteFile(p, []byte(`inside = ["eth1"]
outside = ["eth0"]

[ha]
mode = "ftfw"
transport = "multicast"
local = "10.9.0.1"
peer = "10.9.0.2"
group = "225.0.0.50"
interface = "eth2"
`), 0o644))
	c, err := LoadFile(p)
	must(t, err)
	c = c.WithDefaults()
	must(t, c.Validate())
	lc, err := c.HA.linkConfig()
	must(t, err)
	if lc.Local != netip.MustParseAddrPort("10.9.0.1:3780") || lc.Peer.Addr() != netip.MustParseAddr("10.9.0.2") ||
		lc.Group != netip.MustParseAddr("225.0.0.50") || lc.Interface != "eth2" {
		t.Fatalf("%+v", lc)
	}

	if (Config{}).HA.Enabled() {
		t.Fatal("no [ha] section is enabled")
	}
	base := HAConfig{Local: "10.9.0.1", Peer: "10.9.0.2", Interface: "eth2", Port: 3781}
	if lc, err := base.linkConfig(); err != nil || lc.Peer != netip.MustParseAddrPort("10.9.0.2:3781") || lc.Group.IsValid() {
		t.Fatalf("%+v %v", lc, err)
	}
	cases := map[string]func(h *HAConfig){
		"mode":                  func(h *HAConfig) { h.Mode = "alarm" },
		"port 70000":            func(h *HAConfig) { h.Port = 70000 },
		"local":                 func(h *HAConfig) { h.Local = "eth0" },
		"peer":                  func(h *HAConfig) { h.Peer = "2001:db8::1" },
		"is the local address":  func(h *HAConfig) { h.Peer = h.Local },
		"interface":             func(h *HAConfig) { h.Interface = "" },
		"with transport udp":    func(h *HAConfig) { h.Group = "225.0.0.50" },
		"multicast address":     func(h *HAConfig) { h.Transport, h.Group = "multicast", "10.0.0.1" },
		"transport \"carrier\"": func(h *HAConfig) { h.Transport = "carrier" },
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
