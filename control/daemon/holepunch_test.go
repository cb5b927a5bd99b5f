package daemon

import (
	"bufio"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"xnat/internal/nattest"
	"xnat/internal/netns"
)

// TestFullConeTCPSimultaneousOpen: two inside hosts behind two xnat
// gateways with FULLCONENAT learn their external endpoints from a
// rendezvous server, then connect to each other's from the same local
// port at once: TCP simultaneous open through both NATs (RFC 5382 REQ-2,
// hole punching).
//
//	hA 10.0.1.2 ── xA (x0 | x1 192.0.2.1) ── net (192.0.2.2 | 198.51.100.2) ── xB (y1 198.51.100.1 | y0) ── hB 10.0.2.2
func TestFullConeTCPSimultaneousOpen(t *testing.T) {
	tp := netns.New(t)
	hA, xA, nt, xB, hB := tp.NS("hA"), tp.NS("xA"), tp.NS("net"), tp.NS("xB"), tp.NS("hB")
	must(t, tp.AddVeth(hA, "a0", xA, "x0", 1))
	must(t, tp.AddVeth(xA, "x1", nt, "n1", 1))
	must(t, tp.AddVeth(nt, "n2", xB, "y1", 1))
	must(t, tp.AddVeth(xB, "y0", hB, "b0", 1))
	for _, a := range []struct {
		ns         *netns.NS
		link, cidr string
	}{{hA, "a0", "10.0.1.2/24"}, {xA, "x0", "10.0.1.1/24"}, {xA, "x1", "192.0.2.1/24"}, {nt, "n1", "192.0.2.2/24"},
		{nt, "n2", "198.51.100.2/24"}, {xB, "y1", "198.51.100.1/24"}, {xB, "y0", "10.0.2.1/24"}, {hB, "b0", "10.0.2.2/24"}} {
		must(t, a.ns.AddAddr(a.link, a.cidr))
	}
	must(t, hA.AddRoute("0.0.0.0/0", "10.0.1.1", "a0"))
	must(t, hB.AddRoute("0.0.0.0/0", "10.0.2.1", "b0"))
	must(t, xA.AddRoute("0.0.0.0/0", "192.0.2.2", "x1"))
	must(t, xB.AddRoute("0.0.0.0/0", "198.51.100.2", "y1"))
	must(t, xA.SetSysctl("net.ipv4.ip_forward", "0"))
	must(t, xB.SetSysctl("net.ipv4.ip_forward", "0"))
	must(t, nt.SetSysctl("net.ipv4.ip_forward", "1"))
	for _, e := range []struct {
		ns   *netns.NS
		link string
	}{{hA, "a0"}, {hB, "b0"}, {nt, "n1"}, {nt, "n2"}} {
		must(t, e.ns.SetTxChecksum(e.link, false))
	}
	for _, n := range []struct {
		ns, x     *netns.NS
		link, via string
		ip        string
	}{{hA, xA, "a0", "x0", "10.0.1.2"}, {nt, xA, "n1", "x1", "192.0.2.2"}, {nt, xB, "n2", "y1", "198.51.100.2"}, {hB, xB, "b0", "y0", "10.0.2.2"}} {
		mac, err := n.ns.MAC(n.link)
		must(t, err)
		must(t, n.x.AddNeigh(n.via, n.ip, mac))
	}
	startNAT := func(ns *netns.NS, in, out string) {
		rules := t.TempDir() + "/rules.v4"
		must(t, writeFile(rules, strings.NewReplacer("x1", out).Replace(nattest.FullConeRules)))
		var d *Daemon
		must(t, ns.Do(func() error {
			plan, err := Prepare(Config{Inside: []string{in}, Outside: []string{out}, Queues: 1, Capacity: 4096, Rules: rules})
			if err != nil {
				return err
			}
			d, err = Start(plan, Options{PollTimeout: 20 * time.Millisecond})
			return err
		}))
		t.Cleanup(func() {
			if err := d.Stop(); err != nil {
				t.Errorf("Stop: %v", err)
			}
		})
	}
	startNAT(xA, "x0", "x1")
	startNAT(xB, "y0", "y1")

	// The rendezvous server tells each client the address it sees, and
	// keeps the connection open.
	var ln net.Listener
	must(t, nt.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", "192.0.2.2:7000")
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			_, _ = c.Write([]byte(c.RemoteAddr().String() + "\n"))
		}
	}()
	reuse := func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
	const port = 45000
	learn := func(ns *netns.NS, ip string) string {
		var mapped string
		must(t, ns.Do(func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip), Port: port}, Control: reuse, Timeout: 3 * time.Second}
			c, err := d.Dial("tcp4", "192.0.2.2:7000")
			if err != nil {
				return err
			}
			t.Cleanup(func() { c.Close() })
			mapped, err = bufio.NewReader(c).ReadString('\n')
			return err
		}))
		return strings.TrimSpace(mapped)
	}
	mA, mB := learn(hA, "10.0.1.2"), learn(hB, "10.0.2.2")
	if !strings.HasPrefix(mA, "192.0.2.1:") || !strings.HasPrefix(mB, "198.51.100.1:") {
		t.Fatalf("mapped endpoints %s and %s", mA, mB)
	}

	// Both dial at once, from the port the rendezvous saw.
	type result struct {
		c   net.Conn
		err error
	}
	dial := func(ns *netns.NS, ip, peer string, out chan<- result) {
		var r result
		r.err = ns.Do(func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip), Port: port}, Control: reuse, Timeout: 3 * time.Second}
			var err error
			r.c, err = d.Dial("tcp4", peer)
			return err
		})
		out <- r
	}
	var ca, cb net.Conn
	for attempt := 0; attempt < 5 && (ca == nil || cb == nil); attempt++ {
		ra, rb := make(chan result, 1), make(chan result, 1)
		go dial(hA, "10.0.1.2", mB, ra)
		go dial(hB, "10.0.2.2", mA, rb)
		a, b := <-ra, <-rb
		if a.err != nil || b.err != nil {
			t.Logf("attempt %d: A %v, B %v", attempt, a.err, b.err)
			for _, c := range []net.Conn{a.c, b.c} {
				if c != nil {
					c.Close()
				}
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ca, cb = a.c, b.c
	}
	if ca == nil || cb == nil {
		t.Fatal("no TCP connection between the two inside hosts")
	}
	defer ca.Close()
	defer cb.Close()
	if ca.RemoteAddr().String() != mB || cb.RemoteAddr().String() != mA {
		t.Fatalf("A talks to %v, B to %v; want %s and %s", ca.RemoteAddr(), cb.RemoteAddr(), mB, mA)
	}
	must(t, ca.SetDeadline(time.Now().Add(2*time.Second)))
	must(t, cb.SetDeadline(time.Now().Add(2*time.Second)))
	if _, err := ca.Write([]byte("punched")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := cb.Read(buf)
	if err != nil || string(buf[:n]) != "punched" {
		t.Fatalf("B read %q, %v", buf[:n], err)
	}
}
