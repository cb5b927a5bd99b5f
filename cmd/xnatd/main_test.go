package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"xnat/internal/nattest"
	"xnat/internal/netns"
)

// The test binary doubles as xnatd: with XNATD_TEST_MAIN=1 it runs main's
// run on its arguments, so the tests exec the daemon as a process (flags,
// signals, exit status, stderr) without building a separate binary.
func TestMain(m *testing.M) {
	if os.Getenv("XNATD_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// topo: cli c0 10.9.1.2/24 ── x0 10.9.1.1/24 [xnat] x1 198.51.100.1/24 ── s0 198.51.100.2/24 srv
type topo struct {
	cli, x, srv *netns.NS
	dir         string
}

func newTopo(t *testing.T) *topo {
	tp := netns.New(t)
	o := &topo{cli: tp.NS("cli"), x: tp.NS("xnat"), srv: tp.NS("srv"), dir: t.TempDir()}
	tp.Veth(o.cli, "c0", o.x, "x0")
	tp.Veth(o.x, "x1", o.srv, "s0")
	must(t, o.x.SetSysctl("net.ipv4.ip_forward", "0"))
	must(t, o.cli.AddAddr("c0", "10.9.1.2/24"))
	must(t, o.x.AddAddr("x0", "10.9.1.1/24"))
	must(t, o.x.AddAddr("x1", "198.51.100.1/24"))
	must(t, o.srv.AddAddr("s0", "198.51.100.2/24"))
	must(t, o.cli.AddRoute("0.0.0.0/0", "10.9.1.1", "c0"))
	must(t, o.cli.SetTxChecksum("c0", false))
	must(t, o.srv.SetTxChecksum("s0", false))
	return o
}

func (o *topo) write(t *testing.T, name, text string) string {
	p := filepath.Join(o.dir, name)
	must(t, os.WriteFile(p, []byte(text), 0o644))
	return p
}

// proc is xnatd running in the xnat namespace.
type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	more  chan struct{}
	done  chan error
}

// start execs xnatd with args in ns.
func start(t *testing.T, ns *netns.NS, args ...string) *proc {
	t.Helper()
	exe, err := os.Executable()
	must(t, err)
	p := &proc{more: make(chan struct{}, 1), done: make(chan error, 1)}
	p.cmd = exec.Command(exe, args...)
	p.cmd.Env = append(os.Environ(), "XNATD_TEST_MAIN=1")
	stderr, err := p.cmd.StderrPipe()
	must(t, err)
	// Started from a thread inside the namespace, the child is in it.
	must(t, ns.Do(p.cmd.Start))
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.more <- struct{}{}:
			default:
			}
		}
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
		}
	})
	return p
}

// wait waits for a stderr line containing every one of subs.
func (p *proc) wait(t *testing.T, subs ...string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			ok := true
			for _, s := range subs {
				ok = ok && strings.Contains(l, s)
			}
			if ok {
				p.mu.Unlock()
				return l
			}
		}
		all := strings.Join(p.lines, "\n")
		p.mu.Unlock()
		select {
		case <-p.more:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no line with %q in xnatd's output:\n%s", subs, all)
		}
	}
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// exit waits for the process to end and returns its exit status.
func (p *proc) exit(t *testing.T) int {
	t.Helper()
	select {
	case err := <-p.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		must(t, err)
		return 0
	case <-time.After(10 * time.Second):
		t.Fatalf("xnatd did not exit; output:\n%s", p.output())
	}
	return -1
}

// udpAsk sends from cli to srv's echo server and returns what it saw.
func udpAsk(t *testing.T, o *topo, conn *net.UDPConn, msg string) (string, error) {
	buf := make([]byte, 512)
	for range 4 {
		if _, err := conn.Write([]byte(msg)); err != nil {
			return "", err
		}
		must(t, conn.SetReadDeadline(time.Now().Add(300*time.Millisecond)))
		if n, err := conn.Read(buf); err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", fmt.Errorf("no answer to %q", msg)
}

func xdpAttached(t *testing.T, ns *netns.NS, link string) bool {
	l, err := ns.Link(link)
	must(t, err)
	x := l.Attrs().Xdp
	return x != nil && x.Attached
}

const masqRules = "*nat\n-A POSTROUTING -o x1 -j MASQUERADE\nCOMMIT\n"

// TestXnatdProcess: xnatd started from a config file with flags overriding
// it forwards traffic, reports its start-up facts, reloads its rules on
// SIGHUP (and keeps them when the new file is broken), and on SIGTERM
// detaches its programs and exits 0.
func TestXnatdProcess(t *testing.T) {
	o := newTopo(t)
	rulesFile := o.write(t, "rules.v4", masqRules)
	cfg := o.write(t, "xnatd.toml", fmt.Sprintf("inside = [\"x0\"]\noutside = [\"x1\"]\nrules = %q\nmax_conns = 5000\ncapacity = 8192\n\n[timeouts]\nnf_conntrack_udp_timeout = 45\n", filepath.Base(rulesFile)))
	sock := filepath.Join(o.dir, "xnat.sock")
	p := start(t, o.x, "--config", cfg, "--max-conns", "100", "--queues", "1", "--socket", sock)
	p.wait(t, "msg=running")
	p.wait(t, "msg=\"control socket\"", "path="+sock)
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %s: %v, %v (want a socket, mode 0600)", sock, fi, err)
	}
	p.wait(t, "msg=\"flow table\"", "capacity=8192", "max_conns=100")
	p.wait(t, "msg=\"xdp attached\"", "interface=x0", "mode=native")
	p.wait(t, "msg=\"xdp attached\"", "interface=x1", "mode=native")
	p.wait(t, "msg=\"af_xdp socket\"", "interface=x1", "queue=0", "bind=copy")
	lpr, err := o.x.Sysctl("net.ipv4.ip_local_port_range")
	must(t, err)
	p.wait(t, "NAT pool overlaps the kernel's ephemeral ports", "ip_local_port_range="+strings.Join(strings.Fields(lpr), "-"))
	if !xdpAttached(t, o.x, "x0") || !xdpAttached(t, o.x, "x1") {
		t.Fatal("XDP programs not attached while xnatd runs")
	}

	// UDP through MASQUERADE.
	var echo *net.UDPConn
	must(t, o.srv.Do(func() error {
		var err error
		echo, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(198, 51, 100, 2), Port: 7000})
		return err
	}))
	defer echo.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := echo.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteToUDP(append([]byte(from.IP.String()+"|"), buf[:n]...), from)
		}
	}()
	var conn *net.UDPConn
	must(t, o.cli.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(198, 51, 100, 2), Port: 7000})
		return err
	}))
	defer conn.Close()
	if got, err := udpAsk(t, o, conn, "one"); err != nil || got != "198.51.100.1|one" {
		t.Fatalf("through xnatd: %q, %v", got, err)
	}

	// SIGHUP with a DNAT rule added: the server reaches the client's
	// port 80 through 198.51.100.1:8080.
	nattest.TCPGreeter(t, o.cli, "10.9.1.2:80", "inside")
	o.write(t, "rules.v4", "*nat\n-A PREROUTING -d 198.51.100.1/32 -p tcp --dport 8080 -j DNAT --to-destination 10.9.1.2:80\n-A POSTROUTING -o x1 -j MASQUERADE\nCOMMIT\n")
	must(t, p.cmd.Process.Signal(syscall.SIGHUP))
	p.wait(t, "msg=\"rules reloaded\"")
	p.wait(t, "msg=\"rule set replaced\"", "kind=rules_replaced", "(SIGHUP)")
	got, err := nattest.Greeting(o.srv, "198.51.100.1:8080")
	must(t, err)
	if got != "hello from inside" {
		t.Fatalf("through the reloaded DNAT rule: %q", got)
	}

	// A broken file is refused and the rules stay.
	o.write(t, "rules.v4", "*nat\n-A POSTROUTING -j TPROXY\nCOMMIT\n")
	must(t, p.cmd.Process.Signal(syscall.SIGHUP))
	p.wait(t, "rules not reloaded", "TPROXY")
	if got, err := udpAsk(t, o, conn, "two"); err != nil || got != "198.51.100.1|two" {
		t.Fatalf("after a failed reload: %q, %v", got, err)
	}

	must(t, p.cmd.Process.Signal(syscall.SIGTERM))
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0; output:\n%s", code, p.output())
	}
	p.wait(t, "msg=stopped")
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("control socket left behind after xnatd stopped: %v", err)
	}
	if xdpAttached(t, o.x, "x0") || xdpAttached(t, o.x, "x1") {
		t.Fatal("an XDP program is still attached after xnatd stopped")
	}
}

// TestXnatdRefusesBadConfig: every bad configuration is one line on
// stderr and exit status 2, and no interface is touched.
func TestXnatdRefusesBadConfig(t *testing.T) {
	o := newTopo(t)
	good := o.write(t, "rules.v4", masqRules)
	bad := o.write(t, "bad.v4", "*nat\n-A POSTROUTING -o x1 -j MASQUERADE\n-A POSTROUTING -j TPROXY\nCOMMIT\n")
	typo := o.write(t, "typo.toml", "inside = [\"x0\"]\noutside = [\"x1\"]\nqueus = 2\n")
	refuse := o.write(t, "refuse.toml", fmt.Sprintf("inside = [\"x0\"]\noutside = [\"x1\"]\nrules = %q\nlocal_ports = \"refuse\"\n", good))
	base := []string{"--inside", "x0", "--outside", "x1", "--rules", good}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--outside", "x1"}, "at least one inside and one outside interface"},
		{[]string{"--inside", "nosuch0", "--outside", "x1"}, "inside interface nosuch0 does not exist"},
		{append(base, "--queues", "2"), "interface x0 has 1 queues"},
		{append(base, "--cpus", "0,1"), "2 CPUs for 1 queues"},
		{append(base, "--cpus", "1000"), "CPU 1000 does not exist or is not allowed"},
		{append(base, "--cpus", "x"), "bad CPU"},
		{append(base, "--max-conns", "10", "--capacity", "5"), "max_conns 10"},
		{append(base, "--poll", "spin"), "poll \"spin\""},
		{[]string{"--inside", "x0", "--outside", "x1", "--rules", bad}, "line 3"},
		{[]string{"--inside", "x0", "--outside", "x1", "--rules", filepath.Join(o.dir, "missing.v4")}, "no such file"},
		{[]string{"--config", typo}, "unknown key queus"},
		{[]string{"--config", refuse}, "NAT pool overlaps the kernel's ephemeral ports"},
		{append(base, "--socket", "/nonexistent/dir/xnat.sock"), "directory /nonexistent/dir does not exist"},
	}
	for _, c := range cases {
		p := start(t, o.x, c.args...)
		code := p.exit(t)
		out := p.output()
		if code != 2 || strings.Count(out, "\n") != 0 || !strings.Contains(out, c.want) || !strings.HasPrefix(out, "xnatd: ") {
			t.Errorf("xnatd %s: exit %d, stderr %q; want exit 2 and one line with %q", strings.Join(c.args, " "), code, out, c.want)
		}
	}
	if xdpAttached(t, o.x, "x0") || xdpAttached(t, o.x, "x1") {
		t.Fatal("a refused configuration attached an XDP program")
	}
	// The same configuration, valid, passes --check-config without
	// attaching anything.
	p := start(t, o.x, append(base, "--check-config")...)
	if code := p.exit(t); code != 0 {
		t.Fatalf("--check-config: exit %d\n%s", code, p.output())
	}
	p.wait(t, "configuration ok")
	p.wait(t, "msg=interface", "name=x1", "role=outside", "addresses=198.51.100.1/24")
	if xdpAttached(t, o.x, "x0") || xdpAttached(t, o.x, "x1") {
		t.Fatal("--check-config attached an XDP program")
	}
}

// --cpus takes the CPU list syntax of internal/cpuset; a bad list stops
// xnatd before it touches anything, with exit code 2 and the flag named.
func TestBadCPUsFlag(t *testing.T) {
	for _, in := range []string{"", "-1", "a", "3-1", "1-", "0-9000"} {
		var stderr bytes.Buffer
		if code := run([]string{"--inside", "x0", "--outside", "x1", "--cpus", in}, &stderr); code != 2 || !strings.Contains(stderr.String(), "--cpus") {
			t.Errorf("--cpus %q: exit %d, %q", in, code, stderr.String())
		}
	}
}

// TestXnatdRefusesUnservedQueuesAndForeignXDP: an interface with more
// receive queues than workers is refused with the fixes named; an XDP
// program of another program on an interface is refused unless
// --replace-xdp, which replaces it; after xnatd stops nothing is
// attached.
func TestXnatdRefusesUnservedQueuesAndForeignXDP(t *testing.T) {
	tp := netns.New(t)
	o := &topo{cli: tp.NS("cli"), x: tp.NS("xnat"), srv: tp.NS("srv"), dir: t.TempDir()}
	must(t, tp.AddVeth(o.cli, "c0", o.x, "x0", 2))
	must(t, tp.AddVeth(o.x, "x1", o.srv, "s0", 2))
	must(t, o.x.SetSysctl("net.ipv4.ip_forward", "0"))
	must(t, o.x.AddAddr("x0", "10.9.1.1/24"))
	must(t, o.x.AddAddr("x1", "198.51.100.1/24"))
	rulesFile := o.write(t, "rules.v4", masqRules)
	args := []string{"--inside", "x0", "--outside", "x1", "--rules", rulesFile, "--socket", filepath.Join(o.dir, "xnat.sock")}

	p := start(t, o.x, args...)
	if code := p.exit(t); code != 2 || !strings.Contains(p.output(), "x0 has 2 receive queues") ||
		!strings.Contains(p.output(), "--queues 2") || !strings.Contains(p.output(), "ethtool -L x0") {
		t.Fatalf("2 receive queues, 1 worker: exit %d, %q", code, p.output())
	}
	args = append(args, "--queues", "2")

	// Another program's XDP program on x1.
	x1, err := o.x.Index("x1")
	must(t, err)
	must(t, o.x.Do(func() error {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "other_xdp", Type: ebpf.XDP, License: "MIT",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
		if err != nil {
			return err
		}
		defer prog.Close()
		l, err := netlink.LinkByIndex(x1)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(l, prog.FD(), unix.XDP_FLAGS_SKB_MODE)
	}))
	p = start(t, o.x, args...)
	if code := p.exit(t); code != 2 || !strings.Contains(p.output(), "other_xdp") || !strings.Contains(p.output(), "--replace-xdp") {
		t.Fatalf("another program's XDP program: exit %d, %q", code, p.output())
	}
	if !xdpAttached(t, o.x, "x1") || xdpAttached(t, o.x, "x0") {
		t.Fatal("the refused start changed the interfaces' XDP programs")
	}
	p = start(t, o.x, append(args, "--replace-xdp")...)
	p.wait(t, "msg=running")
	p.wait(t, "msg=\"xdp attached\"", "interface=x1", "replaced_program=")
	must(t, p.cmd.Process.Signal(syscall.SIGTERM))
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, p.output())
	}
	if xdpAttached(t, o.x, "x0") || xdpAttached(t, o.x, "x1") {
		t.Fatal("an XDP program is still attached after xnatd stopped")
	}
}
