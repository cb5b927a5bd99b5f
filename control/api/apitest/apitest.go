// Package apitest runs a real xnatd core for the control API's tests: a
// throwaway namespace topology, a daemon forwarding between its
// interfaces, and the API served on a socket in a temporary directory.
// It is a test helper (it takes a *testing.T), shared by the tests of
// control/api and cmd/xnatctl.
//
//	insA: a0 10.0.1.2/24 ── x0a 10.0.1.1/24 ┐
//	                                         ├ xnat (ip_forward=0) x1 192.0.2.1/24 ── s0 192.0.2.2/24
//	insB: b0 10.0.2.2/24 ── x0b 10.0.2.1/24 ┘
//
// One queue per veth; permanent neighbours in xnat for the three hosts;
// TX checksum offload off on the ends sending into xnat; rules
// MASQUERADE out of x1 unless Options.Rules says otherwise.
package apitest

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"xnat/control/api"
	"xnat/control/daemon"
	"xnat/internal/netns"
)

// Addresses of the topology.
var (
	IPA   = net.IPv4(10, 0, 1, 2)
	IPB   = net.IPv4(10, 0, 2, 2)
	IPSrv = net.IPv4(192, 0, 2, 2)
	IPExt = net.IPv4(192, 0, 2, 1)
)

// MasqueradeRules is the default rule set.
const MasqueradeRules = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o x1 -j MASQUERADE\nCOMMIT\n"

// Options shape a Bed.
type Options struct {
	MaxConns int    // 0: the capacity
	Rules    string // "": MasqueradeRules
	API      api.Options
}

// Bed is a running daemon with its API on a namespace topology.
type Bed struct {
	T                  *testing.T
	InsA, InsB, X, Srv *netns.NS
	D                  *daemon.Daemon
	S                  *api.Server
	Socket             string
	Dir                string

	mu     sync.Mutex
	events []api.Event
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// New builds the topology, starts the daemon and serves the API; all of
// it is undone when the test ends.
func New(t *testing.T, o Options) *Bed {
	netns.RequireRoot(t)
	if o.Rules == "" {
		o.Rules = MasqueradeRules
	}
	tp := netns.New(t)
	b := &Bed{T: t, InsA: tp.NS("insA"), InsB: tp.NS("insB"), X: tp.NS("xnat"), Srv: tp.NS("srv"), Dir: t.TempDir()}
	tp.Veth(b.InsA, "a0", b.X, "x0a")
	tp.Veth(b.InsB, "b0", b.X, "x0b")
	tp.Veth(b.X, "x1", b.Srv, "s0")
	must(t, b.X.SetSysctl("net.ipv4.ip_forward", "0"))
	must(t, b.InsA.AddAddr("a0", "10.0.1.2/24"))
	must(t, b.InsB.AddAddr("b0", "10.0.2.2/24"))
	must(t, b.X.AddAddr("x0a", "10.0.1.1/24"))
	must(t, b.X.AddAddr("x0b", "10.0.2.1/24"))
	must(t, b.X.AddAddr("x1", "192.0.2.1/24"))
	must(t, b.Srv.AddAddr("s0", "192.0.2.2/24"))
	must(t, b.InsA.AddRoute("0.0.0.0/0", "10.0.1.1", "a0"))
	must(t, b.InsB.AddRoute("0.0.0.0/0", "10.0.2.1", "b0"))
	for _, e := range []struct {
		ns   *netns.NS
		link string
	}{{b.InsA, "a0"}, {b.InsB, "b0"}, {b.Srv, "s0"}} {
		must(t, e.ns.SetTxChecksum(e.link, false))
	}
	for _, n := range []struct {
		ns        *netns.NS
		link, via string
		ip        string
	}{{b.InsA, "a0", "x0a", "10.0.1.2"}, {b.InsB, "b0", "x0b", "10.0.2.2"}, {b.Srv, "s0", "x1", "192.0.2.2"}} {
		mac, err := n.ns.MAC(n.link)
		must(t, err)
		must(t, b.X.AddNeigh(n.via, n.ip, mac))
	}
	rulesFile := filepath.Join(b.Dir, "rules.v4")
	must(t, os.WriteFile(rulesFile, []byte(o.Rules), 0o644))
	b.Socket = filepath.Join(b.Dir, "xnat.sock")
	cfg := daemon.Config{Inside: []string{"x0a", "x0b"}, Outside: []string{"x1"}, Queues: 1, Capacity: 4096,
		MaxConns: o.MaxConns, Rules: rulesFile, Socket: b.Socket}
	must(t, b.X.Do(func() error {
		plan, err := daemon.Prepare(cfg)
		if err != nil {
			return err
		}
		b.D, err = daemon.Start(plan, daemon.Options{PollTimeout: 20 * time.Millisecond})
		return err
	}))
	t.Cleanup(func() {
		if err := b.D.Stop(); err != nil {
			t.Errorf("daemon Stop: %v", err)
		}
	})
	on := o.API.OnEvent
	o.API.OnEvent = func(e api.Event) {
		b.mu.Lock()
		b.events = append(b.events, e)
		b.mu.Unlock()
		if on != nil {
			on(e)
		}
	}
	b.S = api.New(b.D, o.API)
	t.Cleanup(func() {
		if err := b.S.Close(); err != nil {
			t.Errorf("API Close: %v", err)
		}
	})
	must(t, b.S.Listen(b.Socket))
	return b
}

// Client returns a client of the bed's socket.
func (b *Bed) Client() *api.Client { return api.NewClient(b.Socket) }

// Events returns the events the server has reported so far.
func (b *Bed) Events() []api.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]api.Event(nil), b.events...)
}

// Eventually polls cond for up to five seconds.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// UDPEcho answers every datagram to the server's port with
// "<source>|<payload>".
func (b *Bed) UDPEcho(port int) {
	t := b.T
	var conn *net.UDPConn
	must(t, b.Srv.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: IPSrv, Port: port})
		return err
	}))
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if _, err := conn.WriteToUDP(append([]byte(from.String()+"|"), buf[:n]...), from); err != nil {
				return
			}
		}
	}()
}

// UDPSink receives datagrams on the server's port and never answers.
func (b *Bed) UDPSink(port int) {
	t := b.T
	var conn *net.UDPConn
	must(t, b.Srv.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: IPSrv, Port: port})
		return err
	}))
	t.Cleanup(func() { conn.Close() })
	go func() { _, _ = io.Copy(io.Discard, udpReader{conn}) }()
}

type udpReader struct{ c *net.UDPConn }

func (r udpReader) Read(p []byte) (int, error) { return r.c.Read(p) }

// UDPDial opens a connected UDP socket in ns from lport (0: any) to the
// server's port.
func (b *Bed) UDPDial(ns *netns.NS, src net.IP, lport, port int) *net.UDPConn {
	t := b.T
	var conn *net.UDPConn
	must(t, ns.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: src, Port: lport}, &net.UDPAddr{IP: IPSrv, Port: port})
		return err
	}))
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Ask sends msg and returns the answer (up to four tries, 300 ms each).
func Ask(conn *net.UDPConn, msg string) (string, error) {
	buf := make([]byte, 2048)
	var err error
	for range 4 {
		if _, err = conn.Write([]byte(msg)); err != nil {
			return "", err
		}
		if err = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
			return "", err
		}
		var n int
		if n, err = conn.Read(buf); err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", err
}
