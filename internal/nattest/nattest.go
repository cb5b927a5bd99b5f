// Package nattest is the real-traffic test topology of xnat's daemon and
// control-API tests, and the kernel-socket traffic they drive through it:
//
//	insA: a0 10.0.1.2/24 ── x0a 10.0.1.1/24 ┐
//	                                         ├ xnat (ip_forward=0) x1 192.0.2.1/24 ── s0 192.0.2.2/24 :srv
//	insB: b0 10.0.2.2/24 ── x0b 10.0.2.1/24 ┘
//
// Two inside interfaces (one per inside host) rather than a bridge: the
// workers then serve three sockets on one UMEM each. The ends sending into
// xnat (a0, b0, s0) have TX checksum offload off. xnat's namespace does not
// forward (ip_forward=0): a packet wrongly passed to its kernel is lost and
// the test fails. The server has no route to the inside networks: it can
// only answer the translated address. xnat has permanent neighbour entries
// for the hosts unless asked otherwise (Options). The package starts no daemon: the
// daemon's own tests and the API's each start theirs on this topology.
package nattest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"xnat/internal/netns"
)

// Addresses of the topology.
var (
	IPA   = net.IPv4(10, 0, 1, 2)
	IPB   = net.IPv4(10, 0, 2, 2)
	IPSrv = net.IPv4(192, 0, 2, 2)
	IPExt = net.IPv4(192, 0, 2, 1)
	IPGwA = net.IPv4(10, 0, 1, 1)
)

// Interface names in xnat's namespace.
var (
	Inside  = []string{"x0a", "x0b"}
	Outside = []string{"x1"}
)

// FullConeRules map and filter endpoint-independently (FULLCONENAT) on
// the outside interface, x1.
const FullConeRules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i x1 -j FULLCONENAT
-A POSTROUTING -o x1 -j FULLCONENAT
COMMIT
`

// Options shape a Topology.
type Options struct {
	// Queues per veth end (0: 1). XDP on a veth needs as many RX queues as
	// its peer has TX queues, so both ends get the same number.
	Queues int
	// NoServerNeighbour leaves xnat without a neighbour entry for the
	// server, so that xnat must have the kernel resolve it.
	NoServerNeighbour bool
	// NoNeighbours leaves xnat's namespace with empty neighbour tables, as
	// a router that just booted: every next hop must be resolved.
	NoNeighbours bool
}

// Topology is the four namespaces, wired and addressed.
type Topology struct {
	InsA, InsB, X, Srv *netns.NS
}

// Must fails the test on a non-nil error.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// New builds the topology; it is removed when the test ends.
func New(t *testing.T, o Options) *Topology {
	t.Helper()
	if o.Queues == 0 {
		o.Queues = 1
	}
	tp := netns.New(t)
	b := &Topology{InsA: tp.NS("insA"), InsB: tp.NS("insB"), X: tp.NS("xnat"), Srv: tp.NS("srv")}
	Must(t, tp.AddVeth(b.InsA, "a0", b.X, "x0a", o.Queues))
	Must(t, tp.AddVeth(b.InsB, "b0", b.X, "x0b", o.Queues))
	Must(t, tp.AddVeth(b.X, "x1", b.Srv, "s0", o.Queues))
	Must(t, b.X.SetSysctl("net.ipv4.ip_forward", "0"))
	Must(t, b.InsA.AddAddr("a0", "10.0.1.2/24"))
	Must(t, b.InsB.AddAddr("b0", "10.0.2.2/24"))
	Must(t, b.X.AddAddr("x0a", "10.0.1.1/24"))
	Must(t, b.X.AddAddr("x0b", "10.0.2.1/24"))
	Must(t, b.X.AddAddr("x1", "192.0.2.1/24"))
	Must(t, b.Srv.AddAddr("s0", "192.0.2.2/24"))
	Must(t, b.InsA.AddRoute("0.0.0.0/0", "10.0.1.1", "a0"))
	Must(t, b.InsB.AddRoute("0.0.0.0/0", "10.0.2.1", "b0"))
	for _, e := range []struct {
		ns   *netns.NS
		link string
	}{{b.InsA, "a0"}, {b.InsB, "b0"}, {b.Srv, "s0"}} {
		Must(t, e.ns.SetTxChecksum(e.link, false))
	}
	neighs := []struct {
		ns        *netns.NS
		link, via string
		ip        string
	}{{b.InsA, "a0", "x0a", "10.0.1.2"}, {b.InsB, "b0", "x0b", "10.0.2.2"}}
	if !o.NoServerNeighbour {
		neighs = append(neighs, struct {
			ns        *netns.NS
			link, via string
			ip        string
		}{b.Srv, "s0", "x1", "192.0.2.2"})
	}
	if o.NoNeighbours {
		neighs = nil
	}
	for _, n := range neighs {
		mac, err := n.ns.MAC(n.link)
		Must(t, err)
		Must(t, b.X.AddNeigh(n.via, n.ip, mac))
	}
	return b
}

// Eventually polls cond until it holds, failing the test after timeout.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// UDPEcho answers every datagram on ns's ip:port with "<source>|<payload>".
func UDPEcho(t testing.TB, ns *netns.NS, ip net.IP, port int) {
	t.Helper()
	conn := ListenUDP(t, ns, ip, port)
	go func() {
		buf := make([]byte, 65536)
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

// UDPSink receives datagrams on ns's ip:port and never answers.
func UDPSink(t testing.TB, ns *netns.NS, ip net.IP, port int) {
	t.Helper()
	conn := ListenUDP(t, ns, ip, port)
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, err := conn.Read(buf); err != nil {
				return
			}
		}
	}()
}

// ListenUDP opens an unconnected UDP socket on ns's ip:port (port 0:
// any), closed when the test ends.
func ListenUDP(t testing.TB, ns *netns.NS, ip net.IP, port int) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	Must(t, ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: port})
		return err
	}))
	t.Cleanup(func() { conn.Close() })
	return conn
}

// UDPDial opens a connected UDP socket in ns.
func UDPDial(t testing.TB, ns *netns.NS, laddr, raddr *net.UDPAddr) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	Must(t, ns.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", laddr, raddr)
		return err
	}))
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Ask sends msg and returns the answer (attempts tries, 500 ms each).
func Ask(conn *net.UDPConn, msg string, attempts int) (string, error) {
	buf := make([]byte, 65536)
	var err error
	for range attempts {
		if _, err = conn.Write([]byte(msg)); err != nil {
			return "", err
		}
		if err = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
			return "", err
		}
		var n int
		if n, err = conn.Read(buf); err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", err
}

// TCPServer accepts connections on ns's ip:port, reports each peer's
// address on the returned channel and echoes what it reads.
func TCPServer(t testing.TB, ns *netns.NS, ip net.IP, port int) <-chan string {
	t.Helper()
	var ln *net.TCPListener
	Must(t, ns.Do(func() error {
		var err error
		ln, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: ip, Port: port})
		return err
	}))
	peers := make(chan string, 64)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case peers <- c.RemoteAddr().String():
			default:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
			t.Cleanup(func() { c.Close() })
		}
	}()
	return peers
}

// TCPDial connects from ns.
func TCPDial(t testing.TB, ns *netns.NS, raddr string, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", raddr, timeout)
		return err
	})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// RoundTrip writes msg on an echoing connection and reads it back.
func RoundTrip(c net.Conn, msg []byte) error {
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs")
	}
	return nil
}

// MuteSocket is a Unix socket, in a temporary directory, that accepts
// every connection and never answers: a daemon gone silent. It is closed,
// and its connections with it, when the test ends.
func MuteSocket(t testing.TB) string {
	sock := filepath.Join(t.TempDir(), "mute.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return sock
}

// TCPGreeter serves "hello from <name>" on addr in ns to every
// connection, until the test ends.
func TCPGreeter(t testing.TB, ns *netns.NS, addr, name string) {
	t.Helper()
	var ln net.Listener
	Must(t, ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "hello from "+name)
			c.Close()
		}
	}()
}

// Greeting connects from ns to addr and returns what the server says
// before it closes the connection (TCPGreeter's greeting).
func Greeting(ns *netns.NS, addr string) (string, error) {
	var got []byte
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		got, err = io.ReadAll(c)
		return err
	})
	return string(got), err
}
