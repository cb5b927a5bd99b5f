package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"xnat/control/api"
	"xnat/internal/nattest"
	"xnat/internal/netns"
)

// The failover test's load, sized for a 2-core machine shared with other
// work: a 20 MB download paced at about 4 MB/s (so the kill lands in the
// middle of it), one long-lived TCP echo session, 200 UDP flows with
// replies, and a probe flow that times the outage.
const (
	foDownload = 20 << 20
	foRate     = 4 << 20 // bytes per second
	foUDPFlows = 200
	foRecover  = 2 * time.Second
)

// haPair is the failover topology:
//
//	cli c0 10.9.1.10 ── brin (bridge) ─┬─ x0 10.9.1.2  [xnat a] x1 198.51.100.2 ─┬─ brout (bridge) ── s0 198.51.100.10 srv
//	                                    └─ x0 10.9.1.3  [xnat b] x1 198.51.100.3 ─┘
//	                       a h0 10.99.0.1 ──── sync link ──── b h0 10.99.0.2
//
// keepalived in a and b moves the inside gateway 10.9.1.1 and the NAT
// address 198.51.100.1 (dist/keepalived.conf); cli routes through
// 10.9.1.1, and both xnatd SNAT to 198.51.100.1.
type haPair struct {
	cli, srv, a, b *netns.NS
	dir            string
	xnatctl        string
}

const (
	foVIPIn  = "10.9.1.1"
	foVIPOut = "198.51.100.1"
	foSrv    = "198.51.100.10"
)

func newHAPair(t *testing.T) *haPair {
	for _, tool := range []string{"keepalived", "iptables", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the failover test needs %s (scripts/deps.sh installs it): %v", tool, err)
		}
	}
	tp := netns.New(t)
	o := &haPair{cli: tp.NS("cli"), srv: tp.NS("srv"), a: tp.NS("xa"), b: tp.NS("xb"), dir: t.TempDir()}
	brin, brout := tp.NS("brin"), tp.NS("brout")
	for _, br := range []*netns.NS{brin, brout} {
		_, err := br.Run("ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
		must(t, err)
		must(t, br.SetLinkUp("br0", true))
	}
	port := func(br *netns.NS, name string) {
		_, err := br.Run("ip", "link", "set", name, "master", "br0")
		must(t, err)
	}
	tp.Veth(o.cli, "c0", brin, "pc")
	tp.Veth(o.a, "x0", brin, "pa")
	tp.Veth(o.b, "x0", brin, "pb")
	tp.Veth(o.a, "x1", brout, "qa")
	tp.Veth(o.b, "x1", brout, "qb")
	tp.Veth(o.srv, "s0", brout, "qs")
	tp.Veth(o.a, "h0", o.b, "h0")
	for _, p := range []string{"pc", "pa", "pb"} {
		port(brin, p)
	}
	for _, p := range []string{"qa", "qb", "qs"} {
		port(brout, p)
	}
	must(t, o.cli.AddAddr("c0", "10.9.1.10/24"))
	must(t, o.cli.AddRoute("0.0.0.0/0", foVIPIn, "c0"))
	must(t, o.srv.AddAddr("s0", foSrv+"/24"))
	for i, x := range []*netns.NS{o.a, o.b} {
		must(t, x.SetSysctl("net.ipv4.ip_forward", "0"))
		must(t, x.AddAddr("x0", fmt.Sprintf("10.9.1.%d/24", 2+i)))
		must(t, x.AddAddr("x1", fmt.Sprintf("198.51.100.%d/24", 2+i)))
		must(t, x.AddAddr("h0", fmt.Sprintf("10.99.0.%d/24", 1+i)))
		// The NAT address is xnat's: the kernel drops what xnat does not
		// take (between a crash and the move, it would answer with resets).
		_, err := x.Run("iptables", "-A", "INPUT", "-d", foVIPOut, "-j", "DROP")
		must(t, err)
	}
	must(t, o.cli.SetTxChecksum("c0", false))
	must(t, o.srv.SetTxChecksum("s0", false))
	// Every reset either end receives is counted.
	for _, ns := range []*netns.NS{o.cli, o.srv} {
		_, err := ns.Run("iptables", "-A", "INPUT", "-p", "tcp", "--tcp-flags", "RST", "RST")
		must(t, err)
	}
	o.xnatctl = filepath.Join(o.dir, "xnatctl")
	if out, err := exec.Command("go", "build", "-o", o.xnatctl, "xnat/cmd/xnatctl").CombinedOutput(); err != nil {
		t.Fatalf("building xnatctl: %v\n%s", err, out)
	}
	return o
}

// resets returns how many TCP resets ns received.
func resets(t *testing.T, ns *netns.NS) int {
	out, err := ns.Run("iptables", "-nvxL", "INPUT")
	must(t, err)
	m := regexp.MustCompile(`(?m)^\s*(\d+)\s+\d+\s.*tcp flags:0x04/0x04`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no reset counter in:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// startBox starts xnatd in x with an [ha] section towards the peer.
func (o *haPair) startBox(t *testing.T, x *netns.NS, name, local, peer string) (*proc, string) {
	rules := filepath.Join(o.dir, name+".rules")
	must(t, os.WriteFile(rules, []byte("*nat\n-A POSTROUTING -o x1 -j SNAT --to-source "+foVIPOut+"\nCOMMIT\n"), 0o644))
	sock := filepath.Join(o.dir, name+".sock")
	cfg := filepath.Join(o.dir, name+".toml")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf("inside = [\"x0\"]\noutside = [\"x1\"]\nrules = %q\ncapacity = 65536\nqueues = 1\nsocket = %q\n\n[ha]\nlocal = %q\npeer = %q\ninterface = \"h0\"\n",
		rules, sock, local, peer)), 0o644))
	p := start(t, x, "--config", cfg)
	p.wait(t, "msg=running")
	return p, sock
}

// keepalived runs dist/keepalived.conf in x, with this test's interfaces,
// addresses, priority and paths.
func (o *haPair) keepalived(t *testing.T, x *netns.NS, name, prio, sock string) {
	text, err := os.ReadFile("../../dist/keepalived.conf")
	must(t, err)
	notify, err := filepath.Abs("../../dist/xnat-ha-notify.sh")
	must(t, err)
	conf := string(text)
	for _, r := range [][2]string{
		{"router_id xnat-a", "router_id xnat-" + name},
		// The test's scripts live under /tmp, which others may write to:
		// keepalived's script security would refuse them.
		{"    enable_script_security\n", ""},
		{"/usr/sbin/xnatctl --socket /run/xnat/xnat.sock", o.xnatctl + " --socket " + sock},
		{"/usr/local/sbin/xnat-ha-notify.sh --socket /run/xnat/xnat.sock", notify + " --xnatctl " + o.xnatctl + " --socket " + sock},
		{"interface eth1", "interface x0"}, {"dev eth1", "dev x0"},
		{"interface eth0", "interface x1"}, {"dev eth0", "dev x1"},
		{"10.0.0.1/24", foVIPIn + "/24"}, {"203.0.113.1/24", foVIPOut + "/24"},
		{"priority 150", "priority " + prio},
	} {
		if !strings.Contains(conf, r[0]) {
			t.Fatalf("dist/keepalived.conf lacks %q", r[0])
		}
		conf = strings.ReplaceAll(conf, r[0], r[1])
	}
	path := filepath.Join(o.dir, name+".keepalived.conf")
	must(t, os.WriteFile(path, []byte(conf), 0o644))
	var out bytes.Buffer
	cmd := exec.Command("keepalived", "-n", "-l", "-D", "-P", "-f", path,
		"-p", filepath.Join(o.dir, name+".ka.pid"), "-r", filepath.Join(o.dir, name+".vrrp.pid"), "-c", filepath.Join(o.dir, name+".chk.pid"))
	cmd.Stdout, cmd.Stderr = &syncWriter{w: &out}, &syncWriter{w: &out}
	must(t, x.Do(cmd.Start))
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("keepalived %s:\n%s", name, out.String())
		}
	})
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func hasAddr(t *testing.T, x *netns.NS, addr string) bool {
	out, err := x.Run("ip", "-4", "-o", "addr", "show")
	must(t, err)
	return strings.Contains(string(out), " "+addr+"/")
}

func haStatus(sock string) (*api.HAStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return api.NewClient(sock).HAStatus(ctx)
}

// download is the server's paced stream: foDownload bytes of a seeded
// generator's output.
func downloadData(seed uint64) []byte {
	b := make([]byte, foDownload)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	_, _ = r.Read(b)
	return b
}

// TestFailover: two xnatd with keepalived between one inside and one
// outside bridge; a TCP download, a TCP echo session and UDP flows run
// through the primary, whose xnatd is killed with SIGKILL mid-transfer.
// keepalived moves both addresses to the backup, whose notify hook
// commits the synced connections: the download completes with the right
// checksum, the echo session keeps echoing, neither end sees a reset,
// every UDP flow keeps its external port, and traffic flows again within
// foRecover of the kill.
func TestFailover(t *testing.T) {
	o := newHAPair(t)
	pa, sockA := o.startBox(t, o.a, "a", "10.99.0.1", "10.99.0.2")
	_, sockB := o.startBox(t, o.b, "b", "10.99.0.2", "10.99.0.1")
	o.keepalived(t, o.a, "a", "150", sockA)
	nattest.Eventually(t, "box a master (both addresses)", 10*time.Second, func() bool {
		return hasAddr(t, o.a, foVIPIn) && hasAddr(t, o.a, foVIPOut)
	})
	o.keepalived(t, o.b, "b", "100", sockB)
	time.Sleep(1500 * time.Millisecond) // b hears a's adverts and stays backup
	if hasAddr(t, o.b, foVIPIn) || hasAddr(t, o.b, foVIPOut) {
		t.Fatal("box b took an address while a is master")
	}

	// The servers.
	srvIP := net.ParseIP(foSrv)
	nattest.UDPEcho(t, o.srv, srvIP, 9000)
	data := downloadData(1)
	want := sha256.Sum256(data)
	var srvErr atomic.Value
	listen := func(port int) net.Listener {
		var l net.Listener
		must(t, o.srv.Do(func() error {
			var err error
			l, err = net.Listen("tcp4", net.JoinHostPort(foSrv, strconv.Itoa(port)))
			return err
		}))
		t.Cleanup(func() { l.Close() })
		return l
	}
	dl, echo := listen(8080), listen(8081)
	go func() {
		c, err := dl.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		const chunk = 32 << 10
		begin := time.Now()
		for off := 0; off < len(data); off += chunk {
			if _, err := c.Write(data[off:min(off+chunk, len(data))]); err != nil {
				srvErr.Store(fmt.Errorf("download server: %w", err))
				return
			}
			due := begin.Add(time.Duration(off+chunk) * time.Second / foRate)
			time.Sleep(time.Until(due))
		}
	}()
	go func() {
		c, err := echo.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := io.Copy(c, c); err != nil {
			srvErr.Store(fmt.Errorf("echo server: %w", err))
		}
	}()

	// The load: UDP flows first (their external ports), then the echo
	// session and the download.
	var flows []*net.UDPConn
	before := make([]string, foUDPFlows)
	for i := range foUDPFlows {
		c := nattest.UDPDial(t, o.cli, &net.UDPAddr{IP: net.ParseIP("10.9.1.10"), Port: 20000 + i}, &net.UDPAddr{IP: srvIP, Port: 9000})
		got, err := nattest.Ask(c, "x", 5)
		if err != nil {
			t.Fatalf("udp flow %d through the primary: %v", i, err)
		}
		before[i], _, _ = strings.Cut(got, "|")
		if !strings.HasPrefix(before[i], foVIPOut+":") {
			t.Fatalf("udp flow %d left as %s", i, before[i])
		}
		flows = append(flows, c)
	}
	ec, err := nattest.TCPDial(t, o.cli, net.JoinHostPort(foSrv, "8081"), 5*time.Second)
	must(t, err)
	roundTrip := func(i int) error {
		msg := []byte(fmt.Sprintf("echo %d\n", i))
		if err := ec.SetDeadline(time.Now().Add(15 * time.Second)); err != nil {
			return err
		}
		if _, err := ec.Write(msg); err != nil {
			return err
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(ec, got); err != nil {
			return err
		}
		if !bytes.Equal(got, msg) {
			return fmt.Errorf("echoed %q for %q", got, msg)
		}
		return nil
	}
	must(t, roundTrip(0))
	dc, err := nattest.TCPDial(t, o.cli, net.JoinHostPort(foSrv, "8080"), 5*time.Second)
	must(t, err)
	type dlResult struct {
		n   int
		sum [32]byte
		err error
	}
	dlDone := make(chan dlResult, 1)
	var dlGot atomic.Int64
	go func() {
		h := sha256.New()
		buf := make([]byte, 64<<10)
		var r dlResult
		for r.n < foDownload {
			_ = dc.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, err := dc.Read(buf)
			h.Write(buf[:n])
			r.n += n
			dlGot.Store(int64(r.n))
			if err != nil {
				if !errors.Is(err, io.EOF) || r.n < foDownload {
					r.err = err
				}
				break
			}
		}
		copy(r.sum[:], h.Sum(nil))
		dlDone <- r
	}()
	// The echo session runs on through the failover.
	echoStop := make(chan struct{})
	echoErr := make(chan error, 1)
	var echoes atomic.Int64
	go func() {
		for i := 1; ; i++ {
			select {
			case <-echoStop:
				echoErr <- nil
				return
			case <-time.After(50 * time.Millisecond):
			}
			if err := roundTrip(i); err != nil {
				echoErr <- fmt.Errorf("echo %d: %w", i, err)
				return
			}
			echoes.Add(1)
		}
	}()
	// The probe: a datagram every 10 ms on a flow of its own; each answer
	// names the datagram, so the first answer to one sent after the kill
	// times the outage.
	probe := nattest.UDPDial(t, o.cli, &net.UDPAddr{IP: net.ParseIP("10.9.1.10"), Port: 30000}, &net.UDPAddr{IP: srvIP, Port: 9000})
	if _, err := nattest.Ask(probe, "p-1", 5); err != nil {
		t.Fatalf("probe: %v", err)
	}
	var killedAt atomic.Int64 // unix nanoseconds
	var recovered atomic.Int64
	probeStop := make(chan struct{})
	sent := sync.Map{}
	go func() {
		for i := 0; ; i++ {
			select {
			case <-probeStop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			sent.Store(i, time.Now().UnixNano())
			_, _ = probe.Write([]byte("p" + strconv.Itoa(i)))
		}
	}()
	var probeErrs atomic.Int64
	go func() {
		buf := make([]byte, 512)
		for {
			_ = probe.SetReadDeadline(time.Now().Add(30 * time.Second))
			n, err := probe.Read(buf)
			if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			if err != nil {
				// An ICMP error reported on the connected socket: counted,
				// the probe goes on.
				probeErrs.Add(1)
				continue
			}
			now := time.Now().UnixNano()
			_, p, _ := strings.Cut(string(buf[:n]), "|")
			i, err := strconv.Atoi(strings.TrimPrefix(p, "p"))
			if err != nil {
				continue
			}
			at, ok := sent.Load(i)
			if k := killedAt.Load(); ok && k != 0 && at.(int64) > k {
				recovered.CompareAndSwap(0, now-k)
			}
		}
	}()
	defer close(probeStop)

	// The backup holds every connection before the kill: the UDP flows,
	// the probe and the two TCP sessions, established.
	nattest.Eventually(t, "the backup's cache", 10*time.Second, func() bool {
		st, err := haStatus(sockB)
		return err == nil && st.Cache >= foUDPFlows+3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	cache, err := api.NewClient(sockB).HACache(ctx)
	cancel()
	must(t, err)
	if n := strings.Count(strings.Join(cache.Conns, "\n"), "tcp ESTABLISHED"); n != 2 {
		t.Fatalf("%d established TCP connections in the backup's cache, want 2:\n%s", n, strings.Join(cache.Conns, "\n"))
	}
	nattest.Eventually(t, "the download under way", 10*time.Second, func() bool { return dlGot.Load() > foDownload/5 })
	if dlGot.Load() >= foDownload*3/4 {
		t.Fatalf("the download is nearly done (%d bytes) before the kill: the machine is too fast for the pacing", dlGot.Load())
	}

	// kill -9 the primary's xnatd.
	killedAt.Store(time.Now().UnixNano())
	must(t, pa.cmd.Process.Kill())
	t.Logf("killed xnatd a after %d bytes of the download", dlGot.Load())

	nattest.Eventually(t, "box b master", 10*time.Second, func() bool {
		return hasAddr(t, o.b, foVIPIn) && hasAddr(t, o.b, foVIPOut)
	})
	var r dlResult
	select {
	case r = <-dlDone:
	case <-time.After(60 * time.Second):
		t.Fatalf("the download stalled at %d bytes", dlGot.Load())
	}
	if r.err != nil || r.n != foDownload || r.sum != want {
		t.Fatalf("download: %d bytes, error %v, checksum match %v", r.n, r.err, r.sum == want)
	}
	rec := time.Duration(recovered.Load())
	if rec == 0 || rec > foRecover {
		t.Fatalf("traffic flowed again %v after the kill (0: never), want within %v (%d errors on the probe)", rec, foRecover, probeErrs.Load())
	}
	n := echoes.Load()
	nattest.Eventually(t, "echoes after the download", 10*time.Second, func() bool { return echoes.Load() >= n+10 })
	close(echoStop)
	if err := <-echoErr; err != nil {
		t.Fatal(err)
	}
	for i, c := range flows {
		got, err := nattest.Ask(c, "y", 5)
		if err != nil {
			t.Fatalf("udp flow %d after the failover: %v", i, err)
		}
		if src, _, _ := strings.Cut(got, "|"); src != before[i] {
			t.Fatalf("udp flow %d left as %s before the failover, %s after", i, before[i], src)
		}
	}
	if e := srvErr.Load(); e != nil {
		t.Fatal(e)
	}
	if rc, rs := resets(t, o.cli), resets(t, o.srv); rc != 0 || rs != 0 {
		t.Fatalf("resets seen: %d by the client, %d by the server", rc, rs)
	}
	st, err := haStatus(sockB)
	must(t, err)
	// A connection whose packets reached b between the move and the
	// commit is in its table already (Exists, when it got the same port).
	if st.Commits == 0 || st.LastCommit == nil || st.LastCommit.Committed+st.LastCommit.Exists < foUDPFlows+3 {
		t.Fatalf("backup's commits: %d, last %+v", st.Commits, st.LastCommit)
	}
	t.Logf("recovered in %v; commit %+v; %d echoes; download %d bytes, checksum ok",
		rec, *st.LastCommit, echoes.Load(), r.n)
}
