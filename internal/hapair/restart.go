package hapair

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"xnat/control/api"
	"xnat/internal/logbuf"
	"xnat/internal/netns"
)

// A restart runs one xnatd between an inside client and an outside
// server, the same load as the failover (a paced TCP download, a TCP
// echo session, UDP flows with replies, a probe flow), and replaces the
// xnatd in the middle of the download:
//
//	cli c0 10.9.1.10 ── x0 10.9.1.1 [xnat] x1 198.51.100.1 ── s0 198.51.100.10 srv
//
// RestartBeside starts xnatd --takeover beside the running one, which
// hands its table and XDP links over on the hand-over socket.
// RestartFile stops the running one with SIGTERM (it writes the
// hand-over file and pins its XDP links on a bpffs mounted for the run)
// and starts xnatd --takeover after it has exited, as systemctl restart
// does.
//
// The box's kernel forwards (ip_forward 1) and has no rule for the NAT
// address: were xnat's packets to reach it, it would forward them
// untranslated (the server counts packets from the inside subnet:
// Leaked) or answer them with resets (Resets).
const (
	RestartBeside = "beside"
	RestartFile   = "file"
)

// RestartConfig is a restart run.
type RestartConfig struct {
	// Xnatd returns the command that runs xnatd with args.
	Xnatd func(args ...string) *exec.Cmd
	// Mode is RestartBeside or RestartFile.
	Mode string
	// CheckTimeout is the time each control-socket check through the
	// restart is given (default 1 s, keepalived's check timeout in
	// dist/keepalived.conf).
	CheckTimeout time.Duration
	// Download bytes paced at Rate bytes a second; UDPFlows flows.
	Download, Rate, UDPFlows int
	// Dir holds the run's files.
	Dir string
}

// RestartResult is what a restart cost.
type RestartResult struct {
	EstablishedLost int `json:"established_lost"`
	Resets          int `json:"resets"`
	// Leaked counts packets from the inside subnet the server received
	// (untranslated).
	Leaked int `json:"leaked"`
	// GapMS is the new xnatd's own measure: from the old one's workers
	// stopping to its forwarding. OutageMS is the longest time the probe
	// flow (a datagram every 10 ms) went without an answer.
	GapMS    float64 `json:"gap_ms"`
	OutageMS float64 `json:"outage_ms"`
	// HandedOver is the connections the new xnatd received, Committed
	// those it committed.
	HandedOver int `json:"handed_over"`
	Committed  int `json:"committed"`
	// Adopted is the interfaces whose XDP link the new xnatd took over.
	Adopted int `json:"xdp_links_adopted"`
	// TakeoverLog is the new xnatd's takeover line (the gap's milestones).
	TakeoverLog string `json:"takeover_log"`
	DownloadOK  bool   `json:"download_ok"`
	Echoes      int    `json:"echoes"`
	// EchoesAfter are the echoes after the takeover.
	EchoesAfter int `json:"echoes_after"`
	// Checks are the control-socket requests made every 50 ms through
	// the restart, with keepalived's check's timeout (CheckTimeout), and
	// CheckFailures those that failed: a failure is what would make
	// keepalived fail the box over.
	Checks        int      `json:"checks"`
	CheckFailures int      `json:"check_failures"`
	Problems      []string `json:"problems,omitempty"`
}

type xnatdProc struct {
	cmd     *exec.Cmd
	log     *logbuf.Buffer
	running chan struct{}
	done    chan struct{}
	err     error
}

func startXnatd(ns *netns.NS, mk func(args ...string) *exec.Cmd, args ...string) (*xnatdProc, error) {
	p := &xnatdProc{cmd: mk(args...), log: &logbuf.Buffer{}, running: make(chan struct{}), done: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := ns.Do(p.cmd.Start); err != nil {
		return nil, fmt.Errorf("hapair: starting xnatd: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			p.log.Write([]byte(sc.Text() + "\n"))
			if strings.Contains(sc.Text(), "msg=running") {
				once.Do(func() { close(p.running) })
			}
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *xnatdProc) waitRunning(timeout time.Duration) error {
	select {
	case <-p.running:
		return nil
	case <-p.done:
		return fmt.Errorf("hapair: xnatd exited (%v):\n%s", p.err, p.log.String())
	case <-time.After(timeout):
		return fmt.Errorf("hapair: xnatd did not start within %v:\n%s", timeout, p.log.String())
	}
}

func (p *xnatdProc) wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("hapair: xnatd did not exit within %v:\n%s", timeout, p.log.String())
	}
}

var (
	gapRE   = regexp.MustCompile(`msg=takeover .*?conns=(\d+) committed=(\d+).* xdp_links_adopted=(\d+) gap_ms=([0-9.]+).*`)
	countRE = regexp.MustCompile(`(?m)^\s*(\d+)\s+\d+\s+(?:\S+\s+)?--\s+\*\s+\*\s+10\.9\.1\.0/24`)
)

// Restart builds the topology, runs the restart and removes everything.
// An error means the run could not be made; what the restart broke is
// in the result.
func Restart(cfg RestartConfig) (res RestartResult, err error) {
	if cfg.Mode != RestartBeside && cfg.Mode != RestartFile {
		return res, fmt.Errorf("hapair: restart mode %q", cfg.Mode)
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		return res, fmt.Errorf("hapair: needs iptables: %w", err)
	}
	tp, err := netns.Open()
	if err != nil {
		return res, err
	}
	var procs []*xnatdProc
	var pinDir string
	defer func() {
		for _, p := range procs {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if len(res.Problems) > 0 || err != nil {
			for i, p := range procs {
				res.Problems = append(res.Problems, fmt.Sprintf("xnatd %d:\n%s", i, p.log.String()))
			}
		}
		if pinDir != "" {
			_ = unix.Unmount(pinDir, unix.MNT_DETACH)
		}
		if cerr := tp.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	var cli, srv, box *netns.NS
	for _, n := range []struct {
		p    **netns.NS
		name string
	}{{&cli, "rcli"}, {&srv, "rsrv"}, {&box, "rbox"}} {
		if *n.p, err = tp.CreateNS(n.name); err != nil {
			return res, err
		}
	}
	if err := tp.AddVeth(cli, "c0", box, "x0", 1); err != nil {
		return res, err
	}
	if err := tp.AddVeth(box, "x1", srv, "s0", 1); err != nil {
		return res, err
	}
	for _, s := range []func() error{
		func() error { return cli.AddAddr("c0", CliIP+"/24") },
		func() error { return cli.AddRoute("0.0.0.0/0", "10.9.1.1", "c0") },
		func() error { return srv.AddAddr("s0", SrvIP+"/24") },
		func() error { return box.AddAddr("x0", "10.9.1.1/24") },
		func() error { return box.AddAddr("x1", VIPOut+"/24") },
		func() error { return box.SetSysctl("net.ipv4.ip_forward", "1") },
		func() error { return cli.SetTxChecksum("c0", false) },
		func() error { return srv.SetTxChecksum("s0", false) },
		func() error { return run(cli, "iptables", "-A", "INPUT", "-p", "tcp", "--tcp-flags", "RST", "RST") },
		func() error { return run(srv, "iptables", "-A", "INPUT", "-p", "tcp", "--tcp-flags", "RST", "RST") },
		func() error { return run(srv, "iptables", "-A", "INPUT", "-s", "10.9.1.0/24") },
	} {
		if err := s(); err != nil {
			return res, err
		}
	}
	dir := cfg.Dir
	rules := filepath.Join(dir, "restart.rules")
	if err := os.WriteFile(rules, []byte("*nat\n-A POSTROUTING -o x1 -j SNAT --to-source "+VIPOut+"\nCOMMIT\n"), 0o644); err != nil {
		return res, err
	}
	sock := filepath.Join(dir, "restart.sock")
	conf := filepath.Join(dir, "restart.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("inside = [\"x0\"]\noutside = [\"x1\"]\nrules = %q\ncapacity = 65536\nqueues = 1\nsocket = %q\n", rules, sock)), 0o644); err != nil {
		return res, err
	}
	args := []string{"--config", conf, "--takeover"}
	if cfg.Mode == RestartFile {
		pinDir = filepath.Join(dir, "bpf")
		if err := os.MkdirAll(pinDir, 0o700); err != nil {
			return res, err
		}
		if err := unix.Mount("bpf", pinDir, "bpf", 0, ""); err != nil {
			pinDir = ""
			return res, fmt.Errorf("hapair: mounting a bpffs for the XDP pins: %w", err)
		}
		args = append(args, "--pin-dir", filepath.Join(pinDir, "xnat"))
	}
	old, err := startXnatd(box, cfg.Xnatd, args...)
	if err != nil {
		return res, err
	}
	procs = append(procs, old)
	if err := old.waitRunning(20 * time.Second); err != nil {
		return res, err
	}
	l, err := startLoad(cli, srv, cfg.Download, cfg.Rate, cfg.UDPFlows)
	if err != nil {
		return res, err
	}
	defer l.close()
	if err := eventually("the download under way", 20*time.Second, func() bool { return l.dlGot.Load() > int64(cfg.Download/5) }); err != nil {
		return res, err
	}
	if l.dlGot.Load() >= int64(cfg.Download)*3/4 {
		return res, fmt.Errorf("hapair: the download is nearly done (%d bytes) before the restart: the pacing is too fast", l.dlGot.Load())
	}

	// keepalived's check through the restart: the control socket asked
	// every 50 ms, each request given 1 s.
	checkStop := make(chan struct{})
	checkDone := make(chan [2]int, 1)
	go func() {
		var n, failed int
		c := api.NewClient(sock)
		c.SetTimeout(cmp.Or(cfg.CheckTimeout, time.Second))
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-checkStop:
				checkDone <- [2]int{n, failed}
				return
			case <-tick.C:
			}
			n++
			if _, err := c.Stats(context.Background()); err != nil {
				failed++
			}
		}
	}()
	l.mark()
	var next *xnatdProc
	switch cfg.Mode {
	case RestartBeside:
		if next, err = startXnatd(box, cfg.Xnatd, args...); err != nil {
			return res, err
		}
		procs = append(procs, next)
		if err := old.wait(20 * time.Second); err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("the old xnatd: %v", err))
		}
	case RestartFile:
		if err := old.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return res, err
		}
		if err := old.wait(20 * time.Second); err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("the old xnatd: %v", err))
		}
		if next, err = startXnatd(box, cfg.Xnatd, args...); err != nil {
			return res, err
		}
		procs = append(procs, next)
	}
	err = next.waitRunning(20 * time.Second)
	time.Sleep(200 * time.Millisecond)
	close(checkStop)
	cr := <-checkDone
	res.Checks, res.CheckFailures = cr[0], cr[1]
	if err != nil {
		return res, err
	}
	if m := gapRE.FindStringSubmatch(next.log.String()); m == nil {
		res.Problems = append(res.Problems, "the new xnatd logged no takeover")
	} else {
		res.HandedOver, _ = strconv.Atoi(m[1])
		res.Committed, _ = strconv.Atoi(m[2])
		res.Adopted, _ = strconv.Atoi(m[3])
		res.GapMS, _ = strconv.ParseFloat(m[4], 64)
		res.TakeoverLog = m[0]
	}
	o := l.finish("restart")
	res.EstablishedLost += o.lost
	res.DownloadOK, res.Echoes, res.EchoesAfter = o.downloadOK, o.echoes, o.echoesAfter
	res.Problems = append(res.Problems, o.problems...)
	res.OutageMS = float64(l.outage.Load()) / float64(time.Millisecond)
	out, err := srv.Run("iptables", "-nvxL", "INPUT")
	if err != nil {
		return res, err
	}
	if m := countRE.FindStringSubmatch(string(out)); m == nil {
		return res, fmt.Errorf("hapair: no leak counter in %s", out)
	} else {
		res.Leaked, _ = strconv.Atoi(m[1])
	}
	for _, ns := range []*netns.NS{cli, srv} {
		n, err := resets(ns)
		if err != nil {
			return res, err
		}
		res.Resets += n
	}
	return res, nil
}
