package daemon

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"xnat/control/sysctl"
	"xnat/dataplane"
	"xnat/internal/nattest"
	"xnat/internal/netns"
)

// TestRPFilterConfig: rp_filter loads from the config file and is
// checked; absent, it is nil (the kernel's value at start).
func TestRPFilterConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "xnatd.toml")
	for _, c := range []struct {
		text string
		want int
		ok   bool
	}{{"rp_filter = 2\n", 2, true}, {"rp_filter = 0\n", 0, true}, {"rp_filter = 3\n", 0, false}, {"rp_filter = -1\n", 0, false}, {"", -1, true}} {
		must(t, os.WriteFile(p, []byte("inside = [\"in0\"]\noutside = [\"out0\"]\n"+c.text), 0o644))
		cfg, err := LoadFile(p)
		must(t, err)
		cfg = cfg.WithDefaults()
		err = cfg.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%q: %v", c.text, err)
			continue
		}
		if !c.ok {
			continue
		}
		if c.want < 0 && cfg.RPFilter != nil || c.want >= 0 && (cfg.RPFilter == nil || *cfg.RPFilter != c.want) {
			t.Errorf("%q: loaded %v", c.text, cfg.RPFilter)
		}
	}
}

// The spoofed-source scenario's ports on the server: a legitimate
// exchange, a source on no inside network, a source on the other inside
// host's network.
const (
	rpLegit     = 9000
	rpForeign   = 9001
	rpOtherLAN  = 9002
	rpDatagrams = 10
)

var (
	rpForeignIP  = net.IPv4(198, 51, 100, 7)
	rpOtherLANIP = net.IPv4(10, 0, 2, 5)
)

// rpSetup gives the router a default route through the outside
// interface (so that loose mode has a route back to any source) and the
// kernel rp_filter values all = mode, every interface's own 0, and gives
// inside host A the two spoofed addresses.
func rpSetup(t *testing.T, tp *nattest.Topology, mode int) {
	must(t, tp.X.AddRoute("0.0.0.0/0", "192.0.2.2", "x1"))
	must(t, tp.X.SetSysctl("net.ipv4.conf.all.rp_filter", fmt.Sprint(mode)))
	must(t, tp.X.SetSysctl("net.ipv4.conf.default.rp_filter", "0"))
	for _, ifc := range append(append([]string(nil), nattest.Inside...), nattest.Outside...) {
		must(t, tp.X.SetSysctl("net.ipv4.conf."+ifc+".rp_filter", "0"))
	}
	must(t, tp.InsA.AddAddr("a0", rpForeignIP.String()+"/32"))
	must(t, tp.InsA.AddAddr("a0", rpOtherLANIP.String()+"/32"))
}

// sendFrom sends n datagrams from ns, bound to src, to dst:port.
func sendFrom(t *testing.T, ns *netns.NS, src, dst net.IP, port, n int) {
	must(t, ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var la unix.SockaddrInet4
		copy(la.Addr[:], src.To4())
		if err := unix.Bind(fd, &la); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
		var sa unix.SockaddrInet4
		copy(sa.Addr[:], dst.To4())
		sa.Port = port
		for i := range n {
			if err := unix.Sendto(fd, fmt.Appendf(nil, "spoofed %d", i), 0, &sa); err != nil {
				return err
			}
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	}))
}

// rpScenario: inside host A, its path to the server working, sends
// datagrams with a source on no inside network and with one of the other
// inside network, and reports how many of each reached the server's link.
func rpScenario(t *testing.T, r *router) (foreign, otherLAN int64) {
	out := capture(t, r.sv, "s0", rpForeign)
	other := capture(t, r.sv, "s0", rpOtherLAN)
	udpEcho(t, r.sv, ipSrv, rpLegit)
	c := udpDial(t, r.insA, &net.UDPAddr{IP: ipA}, &net.UDPAddr{IP: ipSrv, Port: rpLegit})
	if _, err := ask(c, "legitimate", 4); err != nil {
		t.Fatalf("legitimate exchange: %v", err)
	}
	sendFrom(t, r.insA, rpForeignIP, ipSrv, rpForeign, rpDatagrams)
	sendFrom(t, r.insA, rpOtherLANIP, ipSrv, rpOtherLAN, rpDatagrams)
	if _, err := ask(c, "legitimate", 4); err != nil {
		t.Fatalf("legitimate exchange after the spoofed ones: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	return out.Load(), other.Load()
}

// TestRPFilterSpoofedSources: an inside host's datagrams from a source on
// no inside network never leave with strict reverse-path filtering
// (rp_filter = 1, as distributions set Linux), nor ones from the other
// inside network; loose (2) passes both (the default route is a route
// back), and off (0) too. Each mode is run against Linux in the same
// topology with the same kernel settings, so the test checks itself;
// xnat takes the mode from the kernel's values at start, and a change
// through sysctl takes effect at once.
func TestRPFilterSpoofedSources(t *testing.T) {
	for _, c := range []struct {
		mode              int
		foreign, otherLAN int64
	}{{1, 0, 0}, {2, rpDatagrams, rpDatagrams}, {0, rpDatagrams, rpDatagrams}} {
		t.Run(fmt.Sprintf("rp_filter=%d", c.mode), func(t *testing.T) {
			check := func(t *testing.T, r *router) {
				f, o := rpScenario(t, r)
				if f != c.foreign || o != c.otherLAN {
					t.Fatalf("%d of %d datagrams from %s and %d of %d from %s reached the server, want %d and %d",
						f, rpDatagrams, rpForeignIP, o, rpDatagrams, rpOtherLANIP, c.foreign, c.otherLAN)
				}
			}
			t.Run("xnat", func(t *testing.T) {
				b := newBed(t, bedOpts{setup: func(tp *nattest.Topology) { rpSetup(t, tp, c.mode) }})
				rp := &b.d.Dataplane().Settings.RPFilter
				if m := rp.Mode(0); m != int32(c.mode) {
					t.Fatalf("mode %d from the kernel's all = %d", m, c.mode)
				}
				r := &router{insA: b.insA, insB: b.insB, x: b.x, sv: b.sv, d: b.d}
				check(t, r)
				want := uint64(0)
				if c.mode == 1 {
					want = 2 * rpDatagrams
				}
				if n := b.drops(dataplane.ReasonRPFilter); n != want {
					t.Fatalf("rp_filter drops %d, want %d", n, want)
				}
				if c.mode != 1 {
					return
				}
				// Loose on x0a by its own key: the larger of all's and
				// its own now lets them through.
				tg := &sysctl.Target{Table: b.d.Table(), Settings: b.d.Dataplane().Settings, Ifaces: b.d.names}
				must(t, sysctl.Set(tg, []sysctl.Assignment{{Name: "net.ipv4.conf.x0a.rp_filter", Value: 2}}))
				sendFrom(t, r.insA, rpForeignIP, ipSrv, rpLegit, 1)
				eventually(t, "a spoofed source forwarded in loose mode", func() bool {
					return b.d.Dataplane().TotalCounters().Created >= 2
				})
			})
			t.Run("linux", func(t *testing.T) {
				tp := nattest.New(t, nattest.Options{Queues: 2})
				rpSetup(t, tp, c.mode)
				must(t, tp.X.SetSysctl("net.ipv4.ip_forward", "1"))
				file := t.TempDir() + "/rules.v4"
				must(t, writeFile(file, baseRules))
				_, err := tp.X.Run("iptables-restore", file)
				must(t, err)
				check(t, &router{insA: tp.InsA, insB: tp.InsB, x: tp.X, sv: tp.Srv})
			})
		})
	}
}
