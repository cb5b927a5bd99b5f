// Package hapair runs an xnat HA pair's failover in network namespaces:
// two xnatd between an inside and an outside bridge, keepalived in each
// with dist/keepalived.conf and dist/xnat-ha-notify.sh, a dedicated sync
// link; a load through the primary (a paced TCP download, a TCP echo
// session, UDP flows with replies, a probe flow); then SIGKILL to the
// primary's xnatd in the middle of the download. It measures what the
// failover cost. cmd/xnatd's TestFailover and xnat-bench e2e --scenario
// failover run it.
//
//	cli c0 10.9.1.10 ── brin (bridge) ─┬─ x0 10.9.1.2  [xnat a] x1 198.51.100.2 ─┬─ brout (bridge) ── s0 198.51.100.10 srv
//	                                    └─ x0 10.9.1.3  [xnat b] x1 198.51.100.3 ─┘
//	                       a h0 10.99.0.1 ──── sync link ──── b h0 10.99.0.2
//
// keepalived moves the inside gateway 10.9.1.1 and the NAT address
// 198.51.100.1; cli routes through 10.9.1.1, both xnatd SNAT to
// 198.51.100.1, and each box's kernel drops what comes to that address.
package hapair

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"xnat/control/api"
	"xnat/internal/logbuf"
	"xnat/internal/netns"
)

// epoch is the package's start: mono measures from it.
var epoch = time.Now()

// mono is a monotonic clock reading in nanoseconds (positive): the
// failover's and restart's times are differences of these, which a
// wall-clock step (a VM's clock being set) does not move.
func mono() int64 { return int64(time.Since(epoch)) + 1 }

// Addresses of the topology.
const (
	VIPIn  = "10.9.1.1"
	VIPOut = "198.51.100.1"
	SrvIP  = "198.51.100.10"
	CliIP  = "10.9.1.10"
)

// Config is a failover run.
type Config struct {
	// Xnatd returns the command that runs xnatd with args (started
	// inside a box's namespace).
	Xnatd func(args ...string) *exec.Cmd
	// Xnatctl is the xnatctl binary keepalived's check and notify
	// scripts run.
	Xnatctl string
	// KeepalivedConf and Notify are dist/keepalived.conf and
	// dist/xnat-ha-notify.sh.
	KeepalivedConf, Notify string
	// Download is the download's size in bytes, paced at Rate bytes a
	// second; UDPFlows the UDP flows with replies.
	Download, Rate, UDPFlows int
	// Dir holds the run's files.
	Dir string
	// Upgrade replaces the backup's, then the primary's xnatd with
	// xnatd --takeover before the kill (upgrade.go).
	Upgrade bool
}

// Result is what a failover cost.
type Result struct {
	// EstablishedLost: connections that did not survive (the download,
	// the echo session, the UDP flows: no answer, or another external
	// port).
	EstablishedLost int `json:"established_lost"`
	// Resets: TCP resets either end received.
	Resets int `json:"resets"`
	// RecoverMS: from the kill to the first answer to a probe datagram
	// sent after it (one every 10 ms), through the backup.
	RecoverMS float64 `json:"recover_ms"`
	// SyncedConns: the connections in the backup's cache at the kill.
	SyncedConns int `json:"synced_conns"`
	// SyncLagMS: from a new connection's first answer through the
	// primary to its appearance in the backup's cache (median of 20).
	SyncLagMS float64 `json:"sync_lag_ms"`
	// SyncMsgsPerSec: the sync messages the primary sent per second
	// while the UDP flows were being set up.
	SyncMsgsPerSec float64 `json:"sync_msgs_per_sec"`
	// Committed, CommitExisting: the backup's commit.
	Committed      int `json:"committed"`
	CommitExisting int `json:"commit_existing"`
	// DownloadOK: the download completed with the right checksum.
	DownloadOK bool `json:"download_ok"`
	// Echoes: echo round trips, EchoesAfter of them after the kill.
	Echoes      int `json:"echoes"`
	EchoesAfter int `json:"echoes_after"`
	// Upgrade is what the takeovers before the kill cost (with
	// Config.Upgrade).
	Upgrade *UpgradeResult `json:"upgrade,omitempty"`
	// Problems lists what went wrong, in words.
	Problems []string `json:"problems,omitempty"`
}

type pair struct {
	cfg            Config
	tp             *netns.Topology
	cli, srv, a, b *netns.NS
	procs          []*xnatdProc
	kas            []*keepalived
}

type keepalived struct {
	cmd  *exec.Cmd
	out  *logbuf.Buffer
	done chan struct{}
}

func run(ns *netns.NS, name string, args ...string) error {
	_, err := ns.Run(name, args...)
	return err
}

func (p *pair) build() error {
	var err error
	mk := func(name string) *netns.NS {
		if err != nil {
			return nil
		}
		var n *netns.NS
		n, err = p.tp.CreateNS(name)
		return n
	}
	p.cli, p.srv, p.a, p.b = mk("cli"), mk("srv"), mk("xa"), mk("xb")
	brin, brout := mk("brin"), mk("brout")
	if err != nil {
		return err
	}
	for _, br := range []*netns.NS{brin, brout} {
		if err := run(br, "ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0"); err != nil {
			return err
		}
		if err := br.SetLinkUp("br0", true); err != nil {
			return err
		}
	}
	for _, v := range []struct {
		a     *netns.NS
		an    string
		b     *netns.NS
		bn    string
		inBr  bool
		outBr bool
	}{
		{p.cli, "c0", brin, "pc", true, false}, {p.a, "x0", brin, "pa", true, false}, {p.b, "x0", brin, "pb", true, false},
		{p.a, "x1", brout, "qa", false, true}, {p.b, "x1", brout, "qb", false, true}, {p.srv, "s0", brout, "qs", false, true},
		{p.a, "h0", p.b, "h0", false, false},
	} {
		if err := p.tp.AddVeth(v.a, v.an, v.b, v.bn, 1); err != nil {
			return err
		}
		if v.inBr || v.outBr {
			if err := run(v.b, "ip", "link", "set", v.bn, "master", "br0"); err != nil {
				return err
			}
		}
	}
	steps := []func() error{
		func() error { return p.cli.AddAddr("c0", CliIP+"/24") },
		func() error { return p.cli.AddRoute("0.0.0.0/0", VIPIn, "c0") },
		func() error { return p.srv.AddAddr("s0", SrvIP+"/24") },
		func() error { return p.cli.SetTxChecksum("c0", false) },
		func() error { return p.srv.SetTxChecksum("s0", false) },
	}
	for i, x := range []*netns.NS{p.a, p.b} {
		steps = append(steps,
			func() error { return x.SetSysctl("net.ipv4.ip_forward", "0") },
			func() error { return x.AddAddr("x0", fmt.Sprintf("10.9.1.%d/24", 2+i)) },
			func() error { return x.AddAddr("x1", fmt.Sprintf("198.51.100.%d/24", 2+i)) },
			func() error { return x.AddAddr("h0", fmt.Sprintf("10.99.0.%d/24", 1+i)) },
			// The NAT address is xnat's: the kernel drops what xnat does
			// not take (between a crash and the move it would answer
			// with resets).
			func() error { return run(x, "iptables", "-A", "INPUT", "-d", VIPOut, "-j", "DROP") })
	}
	// Every reset either end receives is counted.
	for _, ns := range []*netns.NS{p.cli, p.srv} {
		steps = append(steps, func() error { return run(ns, "iptables", "-A", "INPUT", "-p", "tcp", "--tcp-flags", "RST", "RST") })
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

var resetRE = regexp.MustCompile(`(?m)^\s*(\d+)\s+\d+\s.*tcp flags:0x04/0x04`)

func resets(ns *netns.NS) (int, error) {
	out, err := ns.Run("iptables", "-nvxL", "INPUT")
	if err != nil {
		return 0, err
	}
	m := resetRE.FindStringSubmatch(string(out))
	if m == nil {
		return 0, fmt.Errorf("hapair: no reset counter in %s", out)
	}
	return strconv.Atoi(m[1])
}

// startBox starts xnatd in x with an [ha] section towards the peer and
// waits until it runs.
func (p *pair) startBox(x *netns.NS, name, local, peer string) (*xnatdProc, string, error) {
	dir := p.cfg.Dir
	rules := filepath.Join(dir, name+".rules")
	if err := os.WriteFile(rules, []byte("*nat\n-A POSTROUTING -o x1 -j SNAT --to-source "+VIPOut+"\nCOMMIT\n"), 0o644); err != nil {
		return nil, "", err
	}
	sock := filepath.Join(dir, name+".sock")
	if err := os.WriteFile(p.boxConf(name), []byte(fmt.Sprintf("inside = [\"x0\"]\noutside = [\"x1\"]\nrules = %q\ncapacity = 65536\nqueues = 1\nsocket = %q\n\n[ha]\nlocal = %q\npeer = %q\ninterface = \"h0\"\n",
		rules, sock, local, peer)), 0o644); err != nil {
		return nil, "", err
	}
	proc, err := p.startXnatd(x, name, "--config", p.boxConf(name))
	return proc, sock, err
}

// boxConf is the path of box name's xnatd configuration.
func (p *pair) boxConf(name string) string { return filepath.Join(p.cfg.Dir, name+".toml") }

// startXnatd starts xnatd in x with args and waits until it runs.
func (p *pair) startXnatd(x *netns.NS, name string, args ...string) (*xnatdProc, error) {
	proc, err := startXnatd(x, p.cfg.Xnatd, args...)
	if err != nil {
		return nil, fmt.Errorf("hapair: xnatd %s: %w", name, err)
	}
	p.procs = append(p.procs, proc)
	if err := proc.waitRunning(20 * time.Second); err != nil {
		return nil, fmt.Errorf("hapair: xnatd %s: %w", name, err)
	}
	return proc, nil
}

// keepalived runs the dist keepalived.conf in x, with this topology's
// interfaces, addresses, priority and paths.
func (p *pair) keepalived(x *netns.NS, name, prio, sock string) error {
	text, err := os.ReadFile(p.cfg.KeepalivedConf)
	if err != nil {
		return err
	}
	conf := string(text)
	for _, r := range [][2]string{
		{"router_id xnat-a", "router_id xnat-" + name},
		// The run's scripts may live under a directory others can write
		// to (/tmp): keepalived's script security would refuse them.
		{"    enable_script_security\n", ""},
		{"/usr/local/bin/xnatctl --socket /run/xnat/xnat.sock", p.cfg.Xnatctl + " --socket " + sock},
		{"/usr/local/sbin/xnat-ha-notify.sh --socket /run/xnat/xnat.sock", p.cfg.Notify + " --xnatctl " + p.cfg.Xnatctl + " --socket " + sock},
		{"interface eth1", "interface x0"}, {"dev eth1", "dev x0"},
		{"interface eth0", "interface x1"}, {"dev eth0", "dev x1"},
		{"10.0.0.1/24", VIPIn + "/24"}, {"203.0.113.1/24", VIPOut + "/24"},
		{"priority 150", "priority " + prio},
	} {
		if !strings.Contains(conf, r[0]) {
			return fmt.Errorf("hapair: %s lacks %q", p.cfg.KeepalivedConf, r[0])
		}
		conf = strings.ReplaceAll(conf, r[0], r[1])
	}
	dir := p.cfg.Dir
	path := filepath.Join(dir, name+".keepalived.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	k := &keepalived{out: &logbuf.Buffer{}, done: make(chan struct{})}
	k.cmd = exec.Command("keepalived", "-n", "-l", "-D", "-P", "-f", path,
		"-p", filepath.Join(dir, name+".ka.pid"), "-r", filepath.Join(dir, name+".vrrp.pid"), "-c", filepath.Join(dir, name+".chk.pid"))
	k.cmd.Stdout, k.cmd.Stderr = k.out, k.out
	if err := x.Do(k.cmd.Start); err != nil {
		return fmt.Errorf("hapair: starting keepalived %s: %w", name, err)
	}
	go func() { _ = k.cmd.Wait(); close(k.done) }()
	p.kas = append(p.kas, k)
	return nil
}

func (p *pair) close() error {
	for _, k := range p.kas {
		_ = k.cmd.Process.Signal(os.Interrupt)
		select {
		case <-k.done:
		case <-time.After(5 * time.Second):
			_ = k.cmd.Process.Kill()
			<-k.done
		}
	}
	for _, c := range p.procs {
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	return p.tp.Close()
}

// KeepalivedLogs returns what the keepalived processes wrote, for a
// failed run's report.
func (p *pair) keepalivedLogs() string {
	var b strings.Builder
	for i, k := range p.kas {
		fmt.Fprintf(&b, "keepalived %c:\n%s\n", 'a'+i, k.out.String())
	}
	return b.String()
}

func hasAddr(x *netns.NS, addr string) bool {
	out, err := x.Run("ip", "-4", "-o", "addr", "show")
	return err == nil && strings.Contains(string(out), " "+addr+"/")
}

func haStatus(sock string) (*api.HAStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return api.NewClient(sock).HAStatus(ctx)
}

func eventually(what string, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("hapair: timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

func dialUDP(ns *netns.NS, lport int, raddr *net.UDPAddr) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := ns.Do(func() error {
		var err error
		c, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(CliIP), Port: lport}, raddr)
		return err
	})
	return c, err
}

// ask sends msg and returns the source the echo server saw.
func ask(c *net.UDPConn, msg string, attempts int) (string, error) {
	buf := make([]byte, 512)
	var err error
	for range attempts {
		if _, err = c.Write([]byte(msg)); err != nil {
			continue
		}
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		var n int
		if n, err = c.Read(buf); err == nil {
			src, _, _ := strings.Cut(string(buf[:n]), "|")
			return src, nil
		}
	}
	return "", err
}

// Run builds the topology, runs the failover and removes everything. An
// error means the run could not be made; what the failover broke is in
// the Result (EstablishedLost, Resets, Problems).
func Run(cfg Config) (res Result, err error) {
	for _, tool := range []string{"keepalived", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return res, fmt.Errorf("hapair: needs %s (scripts/deps.sh installs it): %w", tool, err)
		}
	}
	tp, err := netns.Open()
	if err != nil {
		return res, err
	}
	p := &pair{cfg: cfg, tp: tp}
	defer func() {
		if len(res.Problems) > 0 || err != nil {
			res.Problems = append(res.Problems, p.keepalivedLogs())
			for _, x := range p.procs {
				res.Problems = append(res.Problems, fmt.Sprintf("xnatd (%s):\n%s", strings.Join(x.cmd.Args[1:], " "), x.log.String()))
			}
		}
		if cerr := p.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := p.build(); err != nil {
		return res, err
	}
	return p.failover()
}

func (p *pair) failover() (Result, error) {
	var res Result
	problem := func(f string, a ...any) { res.Problems = append(res.Problems, fmt.Sprintf(f, a...)) }
	pa, sockA, err := p.startBox(p.a, "a", "10.99.0.1", "10.99.0.2")
	if err != nil {
		return res, err
	}
	pb, sockB, err := p.startBox(p.b, "b", "10.99.0.2", "10.99.0.1")
	if err != nil {
		return res, err
	}
	if err := p.keepalived(p.a, "a", "150", sockA); err != nil {
		return res, err
	}
	if err := eventually("box a master", 15*time.Second, func() bool { return hasAddr(p.a, VIPIn) && hasAddr(p.a, VIPOut) }); err != nil {
		return res, err
	}
	if err := p.keepalived(p.b, "b", "100", sockB); err != nil {
		return res, err
	}
	time.Sleep(1500 * time.Millisecond) // b hears a's adverts and stays backup
	if hasAddr(p.b, VIPIn) || hasAddr(p.b, VIPOut) {
		return res, errors.New("hapair: box b took an address while a is master")
	}

	// The servers; the UDP flows, each with its external port, and the
	// sync messages they cost the primary per second.
	l, err := newLoad(p.srv, p.cfg.Download, p.cfg.Rate)
	if err != nil {
		return res, err
	}
	defer l.close()
	stA0, err := haStatus(sockA)
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	if err := l.dialFlows(p.cli, p.cfg.UDPFlows); err != nil {
		return res, err
	}
	if err := eventually("the flows in the backup's cache", 10*time.Second, func() bool {
		st, err := haStatus(sockB)
		return err == nil && st.Cache >= len(l.flows)
	}); err != nil {
		return res, err
	}
	stA1, err := haStatus(sockA)
	if err != nil {
		return res, err
	}
	res.SyncMsgsPerSec = float64(stA1.Link.MsgSent-stA0.Link.MsgSent) / time.Since(t0).Seconds()

	// Sync lag: new flows, each from its first answer to the backup's
	// cache holding it.
	var lags []time.Duration
	for i := range 20 {
		n0, err := haStatus(sockB)
		if err != nil {
			return res, err
		}
		c, err := dialUDP(p.cli, 31000+i, l.srvUDP)
		if err != nil {
			return res, err
		}
		if _, err := ask(c, "lag", 5); err != nil {
			c.Close()
			return res, fmt.Errorf("hapair: lag flow %d: %w", i, err)
		}
		start := time.Now()
		if err := eventually("a lag flow in the backup's cache", 5*time.Second, func() bool {
			st, err := haStatus(sockB)
			return err == nil && st.Cache > n0.Cache
		}); err != nil {
			c.Close()
			return res, err
		}
		lags = append(lags, time.Since(start))
		c.Close()
	}
	slices.Sort(lags)
	res.SyncLagMS = float64(lags[len(lags)/2]) / float64(time.Millisecond)

	// The TCP sessions and the probe.
	if err := l.startSessions(p.cli); err != nil {
		return res, err
	}

	// The backup holds every connection before the kill, the TCP ones
	// established.
	// (the lag flows, and the probe, echo and download).
	total := len(l.flows) + 20 + 3
	established := func(st []string) int { return strings.Count(strings.Join(st, "\n"), "tcp ESTABLISHED") }
	var cached []string
	if err := eventually("the backup's cache", 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := api.NewClient(sockB).HACache(ctx)
		if err != nil {
			return false
		}
		cached = c.Conns
		return len(cached) >= total && established(cached) == 2
	}); err != nil {
		return res, fmt.Errorf("%w: %d connections, %d TCP established, want %d and 2", err, len(cached), established(cached), total)
	}
	underWay := func() bool { return l.dlGot.Load() > int64(len(l.data)/5) }
	if p.cfg.Upgrade {
		up := &upgradeLoad{sockA: sockA, sockB: sockB, total: total, flows: l.flows, before: l.before, srvUDP: l.srvUDP, underWay: underWay}
		na, post, srcs, err := p.upgrade(&res, pa, pb, up)
		if err != nil {
			return res, err
		}
		pa, l.flows, l.before = na, append(l.flows, post...), append(l.before, srcs...)
	}
	if err := eventually("the download under way", 20*time.Second, underWay); err != nil {
		return res, err
	}
	if l.dlGot.Load() >= int64(len(l.data))*3/4 {
		return res, fmt.Errorf("hapair: the download is nearly done (%d bytes) before the kill: the pacing is too fast", l.dlGot.Load())
	}
	stB, err := haStatus(sockB)
	if err != nil {
		return res, err
	}
	res.SyncedConns = stB.Cache
	// The roles keepalived's notify hook recorded.
	if stA, err := haStatus(sockA); err != nil {
		problem("box a's status before the kill: %v", err)
	} else if stA.Role != "primary" || stB.Role != "backup" {
		problem("roles before the kill: a %q, b %q, want primary and backup", stA.Role, stB.Role)
	}

	// kill -9 the primary's xnatd.
	l.mark()
	if err := pa.cmd.Process.Kill(); err != nil {
		return res, err
	}
	if err := eventually("box b master", 15*time.Second, func() bool { return hasAddr(p.b, VIPIn) && hasAddr(p.b, VIPOut) }); err != nil {
		return res, err
	}
	if err := eventually("the probe's answer after the kill", 10*time.Second, func() bool { return l.recovered.Load() != 0 }); err != nil {
		problem("no probe answer within 10 s of the kill")
	}
	res.RecoverMS = float64(l.recovered.Load()) / float64(time.Millisecond)
	o := l.finish("failover")
	res.EstablishedLost += o.lost
	res.DownloadOK, res.Echoes, res.EchoesAfter = o.downloadOK, o.echoes, o.echoesAfter
	res.Problems = append(res.Problems, o.problems...)
	for _, ns := range []*netns.NS{p.cli, p.srv} {
		n, err := resets(ns)
		if err != nil {
			return res, err
		}
		res.Resets += n
	}
	st, err := haStatus(sockB)
	if err != nil {
		return res, err
	}
	if st.Role != "primary" {
		problem("box b's role after the failover: %q, want primary", st.Role)
	}
	if st.LastCommit == nil {
		problem("the backup never committed")
	} else {
		res.Committed, res.CommitExisting = st.LastCommit.Committed, st.LastCommit.Exists
	}
	return res, nil
}
