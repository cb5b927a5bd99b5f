package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"xnat/dataplane"
	"xnat/internal/netns"
)

// The real-traffic topology of the daemon tests:
//
//	insA: a0 10.0.1.2/24 ── x0a 10.0.1.1/24 ┐
//	                                         ├ xnat (ip_forward=0) x1 192.0.2.1/24 ── s0 192.0.2.2/24 :srv
//	insB: b0 10.0.2.2/24 ── x0b 10.0.2.1/24 ┘
//
// Two inside interfaces (one per inside host) rather than a bridge: the
// workers then serve three sockets on one UMEM each. Every veth has two
// queues on both ends. The ends sending into xnat (a0, b0, s0) have TX
// checksum offload off. xnat's namespace does not forward (ip_forward=0):
// a packet wrongly passed to its kernel is lost, and the test fails.
// The server has no route to the inside networks: it can only answer
// the translated address. Unless a test asks otherwise, xnat has
// permanent neighbour entries for the three hosts.

const baseRules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 192.0.2.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.1.2:80
-A POSTROUTING -o x1 -j MASQUERADE
COMMIT
`

var (
	ipA   = net.IPv4(10, 0, 1, 2)
	ipB   = net.IPv4(10, 0, 2, 2)
	ipSrv = net.IPv4(192, 0, 2, 2)
	ipExt = net.IPv4(192, 0, 2, 1)
	ipGwA = net.IPv4(10, 0, 1, 1)
)

type bedOpts struct {
	queues   int
	maxConns int
	rules    string
	noNeigh  bool // no permanent neighbour for the server in xnat
}

type bed struct {
	t                 *testing.T
	insA, insB, x, sv *netns.NS
	d                 *Daemon
	rulesFile         string

	evMu   sync.Mutex
	events []Event
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func newBed(t *testing.T, o bedOpts) *bed {
	if o.queues == 0 {
		o.queues = 2
	}
	if o.rules == "" {
		o.rules = baseRules
	}
	tp := netns.New(t)
	b := &bed{t: t, insA: tp.NS("insA"), insB: tp.NS("insB"), x: tp.NS("xnat"), sv: tp.NS("srv")}
	// Two queues on both ends: XDP on a veth needs as many RX queues as
	// its peer has TX queues.
	must(t, tp.AddVeth(b.insA, "a0", b.x, "x0a", 2))
	must(t, tp.AddVeth(b.insB, "b0", b.x, "x0b", 2))
	must(t, tp.AddVeth(b.x, "x1", b.sv, "s0", 2))
	must(t, b.x.SetSysctl("net.ipv4.ip_forward", "0"))
	must(t, b.insA.AddAddr("a0", "10.0.1.2/24"))
	must(t, b.insB.AddAddr("b0", "10.0.2.2/24"))
	must(t, b.x.AddAddr("x0a", "10.0.1.1/24"))
	must(t, b.x.AddAddr("x0b", "10.0.2.1/24"))
	must(t, b.x.AddAddr("x1", "192.0.2.1/24"))
	must(t, b.sv.AddAddr("s0", "192.0.2.2/24"))
	must(t, b.insA.AddRoute("0.0.0.0/0", "10.0.1.1", "a0"))
	must(t, b.insB.AddRoute("0.0.0.0/0", "10.0.2.1", "b0"))
	for _, e := range []struct {
		ns   *netns.NS
		link string
	}{{b.insA, "a0"}, {b.insB, "b0"}, {b.sv, "s0"}} {
		must(t, e.ns.SetTxChecksum(e.link, false))
	}
	macA, err := b.insA.MAC("a0")
	must(t, err)
	macB, err := b.insB.MAC("b0")
	must(t, err)
	must(t, b.x.AddNeigh("x0a", "10.0.1.2", macA))
	must(t, b.x.AddNeigh("x0b", "10.0.2.2", macB))
	if !o.noNeigh {
		macS, err := b.sv.MAC("s0")
		must(t, err)
		must(t, b.x.AddNeigh("x1", "192.0.2.2", macS))
	}
	b.rulesFile = t.TempDir() + "/rules.v4"
	must(t, writeFile(b.rulesFile, o.rules))
	cfg := Config{Inside: []string{"x0a", "x0b"}, Outside: []string{"x1"}, Queues: o.queues,
		Capacity: 4096, MaxConns: o.maxConns, Rules: b.rulesFile}
	if runtime.NumCPU() >= o.queues {
		for q := range o.queues {
			cfg.CPUs = append(cfg.CPUs, q)
		}
	}
	must(t, b.x.Do(func() error {
		plan, err := Prepare(cfg)
		if err != nil {
			return err
		}
		b.d, err = Start(plan, Options{OnEvent: b.record, PollTimeout: 20 * time.Millisecond})
		return err
	}))
	t.Cleanup(func() {
		if err := b.d.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return b
}

func (b *bed) record(e Event) {
	b.evMu.Lock()
	defer b.evMu.Unlock()
	b.events = append(b.events, e)
}

// event returns the first recorded event whose message contains msg.
func (b *bed) event(msg string) (Event, bool) {
	b.evMu.Lock()
	defer b.evMu.Unlock()
	for _, e := range b.events {
		if strings.Contains(e.Msg, msg) {
			return e, true
		}
	}
	return Event{}, false
}

func (b *bed) drops(r dataplane.Reason) uint64 {
	c := b.d.Dataplane().TotalCounters()
	return c.Drop(r)
}

// eventually polls cond for up to two seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// udpEcho answers every datagram on ns's ip:port with "<source>|<payload>".
func udpEcho(t *testing.T, ns *netns.NS, ip net.IP, port int) {
	t.Helper()
	var conn *net.UDPConn
	must(t, ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: port})
		return err
	}))
	t.Cleanup(func() { conn.Close() })
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

// udpDial opens a connected UDP socket in ns.
func udpDial(t *testing.T, ns *netns.NS, laddr, raddr *net.UDPAddr) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	must(t, ns.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", laddr, raddr)
		return err
	}))
	t.Cleanup(func() { conn.Close() })
	return conn
}

// ask sends msg and returns the answer (attempts tries, 500 ms each).
func ask(conn *net.UDPConn, msg string, attempts int) (string, error) {
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

// tcpServer accepts connections on ns's ip:port, reports each peer's
// address on the returned channel and echoes what it reads.
func tcpServer(t *testing.T, ns *netns.NS, ip net.IP, port int) <-chan string {
	t.Helper()
	var ln *net.TCPListener
	must(t, ns.Do(func() error {
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

// tcpDial connects from ns.
func tcpDial(t *testing.T, ns *netns.NS, raddr string, timeout time.Duration) (net.Conn, error) {
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

// roundTrip writes msg on an echoing connection and reads it back.
func roundTrip(c net.Conn, msg []byte) error {
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

func writeFile(path, text string) error {
	return writeFileBytes(path, []byte(text))
}

func fmtAddr(ip net.IP, port int) string { return fmt.Sprintf("%s:%d", ip, port) }
