package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"xnat/control/api"
	"xnat/internal/cpuset"
	"xnat/internal/logbuf"
)

// Target is a device under test set up in the topology's dut namespace:
// it forwards from dut0 (inside) to dut1 (outside), masquerading as
// dut1's address, with a connection table limited to TargetConfig's
// MaxConns, and reports its drops.
type Target interface {
	Name() string
	// Setup starts forwarding in tp.DUT.
	Setup(tp *Topology, cfg TargetConfig) error
	// Teardown undoes Setup (and anything it changed outside the
	// topology). Calling it twice is harmless.
	Teardown() error
	// Drops returns cumulative counters of packets the target dropped,
	// by reason; every value is a packet lost in the target. The key
	// "table_full" counts new connections refused for a full table.
	Drops() (map[string]uint64, error)
	// Conns is the number of connections in the table.
	Conns() (int, error)
}

// TargetConfig configures a target.
type TargetConfig struct {
	MaxConns int // the connection table's limit (nf_conntrack_max)
	// CPUs are the device under test's CPUs, one per queue (nil: not
	// placed): xnatd's --cpus, and the kernel's RPS CPUs when RPS is set.
	CPUs []int
	// RPS steers the kernel's receive processing on the device under
	// test's interfaces to CPUs (rps_cpus), so that forwarding runs there
	// rather than inside the sender's sendto.
	RPS bool
	// NATRules are nat-table rules the target applies before its
	// MASQUERADE rule, each in iptables-save's form without the table
	// ("-A PREROUTING -i dut1 -p tcp --dport 8080 -j DNAT
	// --to-destination 10.0.0.2:8080"): the kernel runs iptables with
	// them, xnat puts them in its rules file.
	NATRules []string
	// HA, when set, syncs the target's connections to a peer over a
	// dedicated link (xnat: an [ha] section); the kernel target refuses
	// it.
	HA *HALink
}

// HALink is the device under test's end of a sync link: its address
// (Local), the peer's (Peer), the UDP port and the link's interface.
type HALink struct {
	Local, Peer, Interface string
	Port                   int
}

// ErrNoXnatd is returned by the xnat target while the daemon does not
// exist.
var ErrNoXnatd = errors.New("the xnat target needs cmd/xnatd (not yet built)")

// NewTarget returns the target of the given name: "kernel" or "xnat".
func NewTarget(name string) (Target, error) {
	switch name {
	case "kernel":
		return &Kernel{}, nil
	case "xnat":
		return &Xnat{}, nil
	}
	return nil, fmt.Errorf("%w: target %q (xnat|kernel|both)", ErrConfig, name)
}

// Kernel is Linux's own forwarding: ip_forward, iptables MASQUERADE out
// of dut1, and nf_conntrack.
//
// nf_conntrack_max is global on Linux 6.18 (read-only in a namespace
// other than the initial one; each namespace's table is held to the
// initial namespace's value), so Setup writes the initial namespace's
// value and Teardown restores it: the host's limit changes for the run.
// nf_conntrack_buckets (the hash size) is global and read-only outside
// the initial namespace; it is left as it is (read it in the results'
// notes), so the kernel's table is not resized to the limit.
type Kernel struct {
	tp       *Topology
	savedMax string
}

// Name implements Target.
func (k *Kernel) Name() string { return "kernel" }

const ctMaxPath = "/proc/sys/net/netfilter/nf_conntrack_max"

// Setup implements Target.
func (k *Kernel) Setup(tp *Topology, cfg TargetConfig) error {
	if cfg.MaxConns <= 0 {
		return fmt.Errorf("%w: connection limit %d", ErrConfig, cfg.MaxConns)
	}
	if cfg.HA != nil {
		return fmt.Errorf("%w: the kernel target has no connection sync", ErrConfig)
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		return fmt.Errorf("e2e: the kernel target needs iptables (Debian package iptables): %w", err)
	}
	k.tp = tp
	old, err := os.ReadFile(ctMaxPath)
	if err != nil {
		return fmt.Errorf("e2e: reading the initial namespace's nf_conntrack_max: %w", err)
	}
	k.savedMax = strings.TrimSpace(string(old))
	if err := os.WriteFile(ctMaxPath, []byte(strconv.Itoa(cfg.MaxConns)), 0o644); err != nil {
		return fmt.Errorf("e2e: setting nf_conntrack_max: %w", err)
	}
	if err := tp.DUT.SetSysctl("net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	for _, r := range cfg.NATRules {
		if _, err := tp.DUT.Run("iptables", append([]string{"-w", "-t", "nat"}, strings.Fields(r)...)...); err != nil {
			return err
		}
	}
	if _, err := tp.DUT.Run("iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-o", DUTOutIf, "-j", "MASQUERADE"); err != nil {
		return err
	}
	if cfg.RPS {
		if len(cfg.CPUs) == 0 {
			return fmt.Errorf("%w: RPS needs the device under test's CPUs", ErrConfig)
		}
		if err := steerRPS(tp, cfg.CPUs); err != nil {
			return err
		}
	}
	// Conntrack is loaded by the rule; make sure the namespace sees it.
	if _, err := tp.DUT.Sysctl("net.netfilter.nf_conntrack_max"); err != nil {
		return err
	}
	return nil
}

// Teardown implements Target.
func (k *Kernel) Teardown() error {
	if k.savedMax == "" {
		return nil
	}
	err := os.WriteFile(ctMaxPath, []byte(k.savedMax), 0o644)
	k.savedMax = ""
	if err != nil {
		return fmt.Errorf("e2e: restoring nf_conntrack_max: %w", err)
	}
	return nil
}

// Drops implements Target: conntrack's drop (table full, as "table_full")
// and insert_failed columns of /proc/net/stat/nf_conntrack, and the IP
// layer's discards and errors from /proc/net/snmp, in dut.
func (k *Kernel) Drops() (map[string]uint64, error) {
	if k.tp == nil {
		return nil, fmt.Errorf("%w: kernel target not set up", ErrConfig)
	}
	ct, err := k.tp.DUT.ReadFile("/proc/thread-self/net/stat/nf_conntrack")
	if err != nil {
		return nil, err
	}
	cs, err := ParseConntrackStat(ct)
	if err != nil {
		return nil, err
	}
	snmp, err := k.tp.DUT.ReadFile("/proc/thread-self/net/snmp")
	if err != nil {
		return nil, err
	}
	ip, err := ParseSNMP(snmp, "Ip")
	if err != nil {
		return nil, err
	}
	return map[string]uint64{
		"table_full":     cs["drop"],
		"insert_failed":  cs["insert_failed"],
		"ip_in_discards": ip["InDiscards"], "ip_out_discards": ip["OutDiscards"],
		"ip_in_hdr_errors": ip["InHdrErrors"], "ip_in_addr_errors": ip["InAddrErrors"],
		"ip_out_no_routes": ip["OutNoRoutes"],
	}, nil
}

// Conns implements Target: nf_conntrack_count in dut.
func (k *Kernel) Conns() (int, error) {
	if k.tp == nil {
		return 0, fmt.Errorf("%w: kernel target not set up", ErrConfig)
	}
	v, err := k.tp.DUT.Sysctl("net.netfilter.nf_conntrack_count")
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("e2e: nf_conntrack_count %q: %w", v, err)
	}
	return n, nil
}

// ParseConntrackStat sums the per-CPU lines of /proc/net/stat/nf_conntrack
// (hexadecimal columns named by the first line).
func ParseConntrackStat(b []byte) (map[string]uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	if !sc.Scan() {
		return nil, fmt.Errorf("e2e: /proc/net/stat/nf_conntrack: empty")
	}
	names := strings.Fields(sc.Text())
	out := make(map[string]uint64, len(names))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != len(names) {
			return nil, fmt.Errorf("e2e: /proc/net/stat/nf_conntrack: %d fields for %d columns", len(f), len(names))
		}
		for i, v := range f {
			x, err := strconv.ParseUint(v, 16, 64)
			if err != nil {
				return nil, fmt.Errorf("e2e: /proc/net/stat/nf_conntrack: %w", err)
			}
			if names[i] != "entries" {
				out[names[i]] += x
			} else {
				out[names[i]] = x // the same global count on every line
			}
		}
	}
	return out, sc.Err()
}

// ParseSNMP returns the counters of one protocol ("Ip", "Udp" …) from
// /proc/net/snmp (a header line and a value line per protocol).
func ParseSNMP(b []byte, proto string) (map[string]uint64, error) {
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i++ {
		h, v := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(h) == 0 || h[0] != proto+":" || len(v) == 0 || v[0] != proto+":" {
			continue
		}
		if len(h) != len(v) {
			return nil, fmt.Errorf("e2e: /proc/net/snmp %s: %d names, %d values", proto, len(h), len(v))
		}
		out := make(map[string]uint64, len(h)-1)
		for j := 1; j < len(h); j++ {
			x, err := strconv.ParseInt(v[j], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("e2e: /proc/net/snmp %s %s: %w", proto, h[j], err)
			}
			if x > 0 {
				out[h[j]] = uint64(x)
			} else {
				out[h[j]] = 0 // Forwarding and DefaultTTL-like fields, never negative counters
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("e2e: /proc/net/snmp: no %s lines", proto)
}

// ErrNoCounters is returned by a target's Drops and Conns when it serves
// no counters; a Point then reports the frames it cannot account for as
// the target's.
var ErrNoCounters = errors.New("e2e: the target serves no counters")

// Xnat is xnat's daemon, xnatd, started in dut with --inside dut0
// --outside dut1, a MASQUERADE rule in POSTROUTING, the point's
// connection limit as --max-conns and twice that as --capacity (the
// README's advice: capacity above the limit, as connections are spread
// over cores). The binary is looked up next to the running program, then
// on PATH; without one Setup fails with ErrNoXnatd. Its counters are read
// through its control socket, private to the run.
type Xnat struct {
	cmd    *exec.Cmd
	dir    string
	stderr *logbuf.Buffer
	done   chan error
	client *api.Client
}

// Name implements Target.
func (x *Xnat) Name() string { return "xnat" }

// xnatRules is xnatd's rules file: the extra nat rules, then
// MASQUERADE out of dut1.
func xnatRules(extra []string) string {
	var b strings.Builder
	b.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	for _, r := range extra {
		b.WriteString(r)
		b.WriteByte('\n')
	}
	b.WriteString("-A POSTROUTING -o " + DUTOutIf + " -j MASQUERADE\nCOMMIT\n")
	return b.String()
}

// Setup implements Target: it starts xnatd and waits until it logs that
// it runs.
func (x *Xnat) Setup(tp *Topology, cfg TargetConfig) error {
	bin, err := findXnatd()
	if err != nil {
		return err
	}
	if cfg.MaxConns <= 0 {
		return fmt.Errorf("%w: connection limit %d", ErrConfig, cfg.MaxConns)
	}
	// The gateway makes no connections of its own: its kernel's ephemeral
	// ports are reserved for xnat, as the README tells an administrator
	// to, so MASQUERADE has the whole 1024–65535 on dut1's address
	// (otherwise xnat leaves the kernel's 32768–60999 to it).
	if err := tp.DUT.SetSysctl("net.ipv4.ip_local_reserved_ports", "32768-60999"); err != nil {
		return err
	}
	if x.dir, err = os.MkdirTemp("", "xnat-e2e-"); err != nil {
		return fmt.Errorf("e2e: %w", err)
	}
	rules := filepath.Join(x.dir, "rules.v4")
	if err := os.WriteFile(rules, []byte(xnatRules(cfg.NATRules)), 0o600); err != nil {
		return fmt.Errorf("e2e: %w", err)
	}
	x.stderr = &logbuf.Buffer{}
	sock := filepath.Join(x.dir, "xnat.sock")
	x.client = api.NewClient(sock)
	x.cmd = exec.Command(bin, "--inside", DUTInIf, "--outside", DUTOutIf, "--rules", rules,
		"--queues", strconv.Itoa(tp.Queues), "--max-conns", strconv.Itoa(cfg.MaxConns),
		"--capacity", strconv.Itoa(2*cfg.MaxConns), "--socket", sock, "--log-level", "info")
	if len(cfg.CPUs) > 0 {
		x.cmd.Args = append(x.cmd.Args, "--cpus", cpuset.Format(cfg.CPUs))
	}
	if h := cfg.HA; h != nil {
		conf := filepath.Join(x.dir, "xnat.toml")
		text := fmt.Sprintf("[ha]\nlocal = %q\npeer = %q\nport = %d\ninterface = %q\n", h.Local, h.Peer, h.Port, h.Interface)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return fmt.Errorf("e2e: %w", err)
		}
		x.cmd.Args = append(x.cmd.Args, "--config", conf)
	}
	x.cmd.Stdout, x.cmd.Stderr = x.stderr, x.stderr
	// Started from a thread inside dut: the process lives there.
	if err := tp.DUT.Do(x.cmd.Start); err != nil {
		x.cmd = nil
		return fmt.Errorf("e2e: starting xnatd: %w", err)
	}
	x.done = make(chan error, 1)
	go func() { x.done <- x.cmd.Wait() }()
	deadline := time.After(15 * time.Second)
	for !strings.Contains(x.stderr.String(), "msg=running") {
		select {
		case err := <-x.done:
			x.cmd = nil
			return fmt.Errorf("e2e: xnatd exited (%v): %s", err, x.stderr.String())
		case <-deadline:
			return fmt.Errorf("e2e: xnatd did not start in 15 s: %s", x.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Teardown implements Target: SIGTERM, then SIGKILL after 5 s.
func (x *Xnat) Teardown() error {
	var errs []error
	if x.cmd != nil && x.cmd.Process != nil {
		_ = x.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-x.done:
			if err != nil {
				errs = append(errs, fmt.Errorf("e2e: xnatd: %w: %s", err, x.stderr.String()))
			}
		case <-time.After(5 * time.Second):
			_ = x.cmd.Process.Kill()
			<-x.done
			errs = append(errs, fmt.Errorf("e2e: xnatd did not stop in 5 s"))
		}
		x.cmd = nil
	}
	x.client = nil
	if x.dir != "" {
		errs = append(errs, os.RemoveAll(x.dir))
		x.dir = ""
	}
	return errors.Join(errs...)
}

// Drops implements Target: every drop reason of xnat's pipeline, read
// from xnatd's control API (table_full among them). Frames lost before
// the pipeline — at the veth or the AF_XDP socket — are the path's
// counters, not these.
func (x *Xnat) Drops() (map[string]uint64, error) {
	if x.client == nil {
		return nil, fmt.Errorf("e2e: xnatd is not running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := x.client.Stats(ctx)
	if err != nil {
		return nil, fmt.Errorf("e2e: xnatd stats: %w", err)
	}
	m := make(map[string]uint64, len(st.Drops))
	for _, d := range st.Drops {
		m[d.Name] = d.Value
	}
	return m, nil
}

// Conns implements Target: the connections xnatd tracks.
func (x *Xnat) Conns() (int, error) {
	if x.client == nil {
		return 0, fmt.Errorf("e2e: xnatd is not running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := x.client.ConntrackCount(ctx)
	if err != nil {
		return 0, fmt.Errorf("e2e: xnatd connection count: %w", err)
	}
	return n, nil
}

// HAStatus returns xnatd's sync node's state (an [ha] section is
// configured).
func (x *Xnat) HAStatus() (*api.HAStatus, error) {
	if x.client == nil {
		return nil, fmt.Errorf("e2e: xnatd is not running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := x.client.HAStatus(ctx)
	if err != nil {
		return nil, fmt.Errorf("e2e: xnatd ha status: %w", err)
	}
	return st, nil
}

func findXnatd() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "xnatd")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("xnatd"); err == nil {
		return p, nil
	}
	return "", ErrNoXnatd
}

// steerRPS sets rps_cpus of every receive queue of the device under
// test's two interfaces to cpus. The topology is fresh for each point, so
// nothing needs putting back.
func steerRPS(tp *Topology, cpus []int) error {
	mask := cpuset.Mask(cpus)
	for _, ifc := range []string{DUTInIf, DUTOutIf} {
		for q := range max(tp.Queues, 1) {
			rel := fmt.Sprintf("%s/queues/rx-%d/rps_cpus", ifc, q)
			if err := tp.DUT.WriteSysfs(rel, mask); err != nil {
				return fmt.Errorf("e2e: RPS on %s: %w", ifc, err)
			}
		}
	}
	return nil
}
