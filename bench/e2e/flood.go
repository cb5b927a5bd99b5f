package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"xnat/control/conntrack"
	"xnat/dataplane/header"
)

// ScFlood is the flood scenario (see RunFlood); it is not part of "all".
const ScFlood = "flood"

// Flood topology additions: the spoofed outside sources and the UDP
// flood's destinations are in AttackNet, routed by dut through the server
// (whose kernel, not forwarding, drops what reaches it) and by gen
// through dut; the DNAT'd service listens on gen's address.
var (
	AttackBase = ip4(198, 18, 0, 0)
	attackNet  = "198.18.0.0/15"
	// DNATPort is the service port on dut1's address, DNAT'd to
	// GenAddr:DNATPort.
	DNATPort = uint16(8080)
	// EchoPort is the echo server's port on SrvAddr.
	EchoPort = uint16(9000)
	// UDPFloodSrc is the inside host that floods UDP.
	UDPFloodSrc = FlowBase
)

// FloodConfig is one flood run against one target.
type FloodConfig struct {
	Target   string
	Duration time.Duration // how long the floods and the legitimate client run
	// Settle is how long the established connections keep echoing after
	// the floods stop: long enough, and a connection that a RST moved to
	// CLOSE is seen to die when the CLOSE timeout (10 s) expires.
	Settle time.Duration
	// Established connections (kernel TCP sockets, gen → srv through
	// MASQUERADE) echoing every EchoEvery.
	Established int
	EchoEvery   time.Duration
	// LegitRate new connections per second from gen to srv, each
	// connect + one echo + close within LegitTimeout.
	LegitRate    float64
	LegitTimeout time.Duration
	// FloodPPS is the offered flood rate in total: half SYNs from
	// SynSources spoofed outside addresses at the DNAT port, a quarter
	// UDP from one inside host to as many destinations, a quarter RSTs
	// with random sequence numbers at the established connections'
	// external ports.
	FloodPPS   float64
	SynSources int
	// MaxConns is the target's connection limit.
	MaxConns int
	// Placement pins xnatd's worker (the DUT CPUs); nil pins nothing.
	Placement *Placement
}

// Flood defaults.
const (
	DefaultFloodPPS     = 40000
	DefaultSynSources   = 100000
	DefaultEstablished  = 500
	DefaultLegitRate    = 200
	DefaultFloodMaxConn = 32768
)

// Validate fills in the defaults of fields left zero and checks the
// configuration's bounds.
func (c *FloodConfig) Validate() error {
	if c.Established == 0 {
		c.Established = DefaultEstablished
	}
	if c.EchoEvery == 0 {
		c.EchoEvery = 100 * time.Millisecond
	}
	if c.LegitRate == 0 {
		c.LegitRate = DefaultLegitRate
	}
	if c.LegitTimeout == 0 {
		c.LegitTimeout = 2 * time.Second
	}
	if c.FloodPPS == 0 {
		c.FloodPPS = DefaultFloodPPS
	}
	if c.SynSources == 0 {
		c.SynSources = DefaultSynSources
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultFloodMaxConn
	}
	switch {
	case c.Duration <= 0 || c.Duration > time.Hour:
		return fmt.Errorf("%w: flood duration %v (up to 1 h)", ErrConfig, c.Duration)
	case c.Settle < 0 || c.Settle > time.Hour:
		return fmt.Errorf("%w: settle time %v (0 to 1 h)", ErrConfig, c.Settle)
	case c.Established < 1 || c.Established > 20000:
		return fmt.Errorf("%w: %d established connections (1 to 20000)", ErrConfig, c.Established)
	case c.LegitRate <= 0 || c.LegitRate > 5000:
		return fmt.Errorf("%w: legitimate rate %v/s (up to 5000)", ErrConfig, c.LegitRate)
	case c.FloodPPS <= 0 || c.FloodPPS > 10e6:
		return fmt.Errorf("%w: flood rate %v pps (up to 10 M)", ErrConfig, c.FloodPPS)
	case c.SynSources < 1 || c.SynSources > 1<<17:
		return fmt.Errorf("%w: %d SYN sources (1 to %d, in %s)", ErrConfig, c.SynSources, 1<<17, attackNet)
	case c.MaxConns < 2*c.Established:
		return fmt.Errorf("%w: connection limit %d below twice the established connections", ErrConfig, c.MaxConns)
	}
	return nil
}

// FloodResult is what a flood run measured.
type FloodResult struct {
	Target   string  `json:"target"`
	Scenario string  `json:"scenario"`
	Seconds  float64 `json:"seconds"` // the floods' duration as measured
	// Established connections, and those that saw an error, a RST or
	// no echo for LegitTimeout (by what they saw).
	Established        int            `json:"established"`
	EstablishedInbound int            `json:"established_inbound"` // of them, through the DNAT
	EstablishedLost    int            `json:"established_lost"`
	EstablishedLostBy  map[string]int `json:"established_lost_by,omitempty"` // "out:reset", "in:stalled" …
	// EstablishedStates are the target's conntrack states of the
	// established connections at the end ("missing": not in the table):
	// a RST the target accepted leaves CLOSE, which traffic keeps alive
	// but the first idle CLOSE timeout (10 s) or early drop ends.
	EstablishedStates map[string]int `json:"established_states"`
	Echoes            uint64         `json:"echoes"`
	// Legitimate new connections: attempted, completed (connect + echo
	// + close within the timeout), failures by what they saw.
	LegitAttempted int            `json:"legit_attempted"`
	LegitCompleted int            `json:"legit_completed"`
	LegitFailedBy  map[string]int `json:"legit_failed_by,omitempty"` // "out:stalled", "in:reset" …
	// Of them, inbound through the DNAT.
	LegitInAttempted int     `json:"legit_in_attempted"`
	LegitInCompleted int     `json:"legit_in_completed"`
	LegitSuccess     float64 `json:"legit_success"`
	LegitNewPerSec   float64 `json:"legit_new_per_sec"`
	// Flood frames sent (syn, udp, rst; send errors as *_refused) and
	// their rate in total.
	FloodSent map[string]uint64 `json:"flood_sent"`
	FloodPPS  float64           `json:"flood_pps"`
	// DropsByReason: the target's counters that moved over the run
	// (xnat: xnatd's drop reasons, with ct_early_drop, ct_invalid,
	// per_source_limit, out_of_ports, xdp_redirect_failed and
	// xsk_rx_dropped; kernel: /proc/net/stat/nf_conntrack's drop as
	// table_full, insert_failed, and its early_drop, invalid and error
	// columns as ct_*, and the IP layer's discards from /proc/net/snmp),
	// and the device under test's veth drops (dut0_rx_dropped …).
	DropsByReason map[string]uint64 `json:"drops_by_reason"`
	Conns         int               `json:"conns"` // connections in the target's table at the end
	MaxConns      int               `json:"max_conns"`
}

// RunFlood runs the flood scenario against one target: a fresh topology,
// the target with a DNAT rule (dut1:DNATPort → GenAddr:DNATPort) beside
// its MASQUERADE, cfg.Established kernel TCP connections through it
// (one in ten inbound through the DNAT), then for cfg.Duration the three floods and the
// legitimate client together, then cfg.Settle more of the established
// connections' echoes. Everything it creates is removed before it
// returns.
func RunFlood(cfg FloodConfig) (res *FloodResult, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tp, err := NewTopology(1)
	if err != nil {
		return nil, err
	}
	closers := undo{tp.Close}
	defer func() {
		if err = errors.Join(err, closers.run()); err != nil {
			res = nil
		}
	}()
	for _, s := range []func() error{
		func() error { return tp.DUT.AddRoute(attackNet, ipString(SrvAddr), DUTOutIf) },
		func() error { return tp.Gen.AddRoute(attackNet, ipString(DUTIn), GenIf) },
		func() error { return tp.DUT.AddNeigh(DUTInIf, ipString(GenAddr), tp.GenMAC[:]) },
	} {
		if err := s(); err != nil {
			return nil, err
		}
	}
	target, err := NewTarget(cfg.Target)
	if err != nil {
		return nil, err
	}
	dnat := fmt.Sprintf("-A PREROUTING -d %s/32 -i %s -p tcp -m tcp --dport %d -j DNAT --to-destination %s:%d",
		ipString(DUTOut), DUTOutIf, DNATPort, ipString(GenAddr), DNATPort)
	tcfg := TargetConfig{MaxConns: cfg.MaxConns, CPUs: cfg.Placement.dut(1), NATRules: []string{dnat}}
	if err := target.Setup(tp, tcfg); err != nil {
		return nil, errors.Join(err, target.Teardown())
	}
	closers.add(target.Teardown)

	// Servers: the echo server on srv, the DNAT'd service on gen.
	echo, err := listenEcho(tp.Srv, SrvAddr, EchoPort)
	if err != nil {
		return nil, err
	}
	closers.add(echo.Close)
	svc, err := listenEcho(tp.Gen, GenAddr, DNATPort)
	if err != nil {
		return nil, err
	}
	closers.add(svc.Close)

	est, err := dialEstablished(tp, cfg.Established, cfg.LegitTimeout)
	if err != nil {
		return nil, err
	}
	closers.add(est.Close)
	// The RST spray's targets: the masqueraded connections' external
	// ports as the echo server sees them, answered from its port; the
	// DNAT'd connections' client ports, from the client's address to
	// the DNAT port.
	ports, err := echo.waitPeers(cfg.Established-est.inbound, DUTOut, 5*time.Second)
	if err != nil {
		return nil, err
	}
	var rsts []tuple4
	for _, p := range ports {
		rsts = append(rsts, tuple4{src: SrvAddr, sport: EchoPort, dst: DUTOut, dport: p})
	}
	for _, c := range est.conns {
		if tu := connTuple(c); tu.dst == DUTOut {
			rsts = append(rsts, tuple4{src: SrvAddr, sport: tu.sport, dst: DUTOut, dport: DNATPort})
		}
	}

	before, err := floodCounters(target, tp)
	if err != nil {
		return nil, err
	}

	// Senders: SYN and RST from srv0, UDP from gen0.
	synTx, err := openRaw(tp.Srv, SrvIf)
	if err != nil {
		return nil, err
	}
	closers.add(synTx.Close)
	rstTx, err := openRaw(tp.Srv, SrvIf)
	if err != nil {
		return nil, err
	}
	closers.add(rstTx.Close)
	udpTx, err := openRaw(tp.Gen, GenIf)
	if err != nil {
		return nil, err
	}
	closers.add(udpTx.Close)

	est.start(cfg.EchoEvery, cfg.LegitTimeout)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	type floodOut struct{ sent, refused uint64 }
	outs := make([]floodOut, 3)
	gens := []struct {
		tx   *rawSender
		rate float64
		next func(b []byte) int
	}{
		{synTx, cfg.FloodPPS / 2, synFlood(tp, cfg.SynSources)},
		{udpTx, cfg.FloodPPS / 4, udpFlood(tp)},
		{rstTx, cfg.FloodPPS / 4, rstSpray(tp, rsts)},
	}
	start := time.Now()
	for i, g := range gens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i].sent, outs[i].refused = g.tx.flood(stop, g.rate, g.next)
		}()
	}
	legit := runLegit(tp, cfg.LegitRate, cfg.LegitTimeout, stop)
	time.Sleep(cfg.Duration)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	lr := legit.wait()
	time.Sleep(cfg.Settle)
	states, err := ctStates(target, tp, est.tuples())
	if err != nil {
		return nil, err
	}
	lost, lostBy, echoes := est.stop()

	after, err := floodCounters(target, tp)
	if err != nil {
		return nil, err
	}
	conns, err := target.Conns()
	if err != nil {
		return nil, err
	}
	res = &FloodResult{
		Target: cfg.Target, Scenario: ScFlood, Seconds: elapsed.Seconds(),
		Established: cfg.Established, EstablishedLost: lost, EstablishedLostBy: lostBy, EstablishedStates: states, Echoes: echoes,
		LegitAttempted: lr.attempted, LegitCompleted: lr.completed, LegitFailedBy: lr.failedBy,
		EstablishedInbound: est.inbound, LegitInAttempted: lr.inAttempted, LegitInCompleted: lr.inCompleted,
		FloodSent: map[string]uint64{}, DropsByReason: map[string]uint64{}, Conns: conns, MaxConns: cfg.MaxConns,
	}
	if lr.attempted > 0 {
		res.LegitSuccess = float64(lr.completed) / float64(lr.attempted)
	}
	res.LegitNewPerSec = float64(lr.completed) / elapsed.Seconds()
	var total uint64
	for i, name := range []string{"syn", "udp", "rst"} {
		res.FloodSent[name] = outs[i].sent
		if outs[i].refused > 0 {
			res.FloodSent[name+"_refused"] = outs[i].refused
		}
		total += outs[i].sent
	}
	res.FloodPPS = float64(total) / elapsed.Seconds()
	for k, v := range after {
		if d := v - before[k]; v >= before[k] && d > 0 {
			res.DropsByReason[k] = d
		}
	}
	return res, nil
}

// floodCounters reads the target's drop counters, and for the kernel
// conntrack's eviction and invalid counters too, and the device under
// test's veth drops.
func floodCounters(t Target, tp *Topology) (map[string]uint64, error) {
	m, err := t.Drops()
	if err != nil {
		return nil, err
	}
	if x, ok := t.(*Xnat); ok {
		if err := x.floodCounters(m); err != nil {
			return nil, err
		}
	}
	if _, ok := t.(*Kernel); ok {
		b, err := tp.DUT.ReadFile("/proc/thread-self/net/stat/nf_conntrack")
		if err != nil {
			return nil, err
		}
		cs, err := ParseConntrackStat(b)
		if err != nil {
			return nil, err
		}
		for _, k := range []string{"early_drop", "invalid", "error", "search_restart", "clash_resolve", "chaintoolong"} {
			if v, ok := cs[k]; ok {
				m["ct_"+k] = v
			}
		}
	}
	for _, ifc := range []string{DUTInIf, DUTOutIf} {
		s, err := linkStats(tp.DUT, ifc)
		if err != nil {
			return nil, err
		}
		m[ifc+"_rx_dropped"] = s.RxDropped
		m[ifc+"_tx_dropped"] = s.TxDropped
	}
	return m, nil
}

// rawSender transmits prebuilt frames on one interface through an
// AF_PACKET socket that receives nothing (protocol 0), so the
// namespace's own stack keeps every frame it receives.
type rawSender struct{ fd int }

func openRaw(ns *NS, ifname string) (*rawSender, error) {
	idx, err := ns.Index(ifname)
	if err != nil {
		return nil, fmt.Errorf("e2e: %w", err)
	}
	s := &rawSender{fd: -1}
	err = ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("e2e: packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: idx}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("e2e: binding a packet socket to %s: %w", ifname, err)
		}
		s.fd = fd
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *rawSender) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// flood sends next's frames at rate per second until stop is closed; a
// frame the kernel refuses (a full queue) counts as refused. It returns
// how many it sent and how many were refused.
func (s *rawSender) flood(stop <-chan struct{}, rate float64, next func([]byte) int) (sent, refused uint64) {
	var buf [128]byte
	start := time.Now()
	for {
		select {
		case <-stop:
			return sent, refused
		default:
		}
		due := uint64(rate * time.Since(start).Seconds())
		if sent+refused >= due {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		n := min(due-sent-refused, 256)
		for range n {
			l := next(buf[:])
			if _, err := unix.Write(s.fd, buf[:l]); err != nil {
				refused++
			} else {
				sent++
			}
		}
	}
}

// Raw frames: Ethernet, IPv4 (DF, TTL 64), TCP without options or UDP
// with an 18-byte payload, valid checksums.
const (
	tcpFrameLen = offL4 + header.TCPMinLen
	udpPayload  = 18
	udpFrameLen = offL4 + 8 + udpPayload
)

func putIPv4(b []byte, src, dst, dstMAC, srcMAC []byte, proto uint8, l4len int, id uint16) {
	copy(b[0:6], dstMAC)
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[offIP:]
	ip[0], ip[1] = 0x45, 0
	binary.BigEndian.PutUint16(ip[2:], uint16(header.IPv4MinLen+l4len))
	binary.BigEndian.PutUint16(ip[4:], id)
	binary.BigEndian.PutUint16(ip[6:], 0x4000)
	ip[8], ip[9] = 64, proto
	ip[10], ip[11] = 0, 0
	copy(ip[12:16], src)
	copy(ip[16:20], dst)
	binary.BigEndian.PutUint16(ip[10:], header.Checksum(ip[:header.IPv4MinLen], 0))
}

func be32(v uint32) []byte { var b [4]byte; binary.BigEndian.PutUint32(b[:], v); return b[:] }

// tcpFrame writes a TCP segment without payload and returns its length.
func tcpFrame(b []byte, srcMAC, dstMAC [6]byte, src, dst uint32, sport, dport uint16, seq, ack uint32, flags uint8, id uint16) int {
	putIPv4(b, be32(src), be32(dst), dstMAC[:], srcMAC[:], header.ProtoTCP, header.TCPMinLen, id)
	t := b[offL4:tcpFrameLen]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12], t[13] = 5<<4, flags
	binary.BigEndian.PutUint16(t[14:], 64240)
	t[16], t[17], t[18], t[19] = 0, 0, 0, 0
	binary.BigEndian.PutUint16(t[16:], l4Checksum(b[:tcpFrameLen]))
	return tcpFrameLen
}

// udpFrame writes a UDP datagram with an 18-byte payload.
func udpFrame(b []byte, srcMAC, dstMAC [6]byte, src, dst uint32, sport, dport uint16, id uint16) int {
	putIPv4(b, be32(src), be32(dst), dstMAC[:], srcMAC[:], header.ProtoUDP, 8+udpPayload, id)
	u := b[offL4:udpFrameLen]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], 8+udpPayload)
	u[6], u[7] = 0, 0
	for i := range udpPayload {
		u[8+i] = byte(i)
	}
	binary.BigEndian.PutUint16(u[6:], l4Checksum(b[:udpFrameLen]))
	return udpFrameLen
}

const (
	tcpSYN = 0x02
	tcpRST = 0x04
)

// synFlood: SYNs from sources AttackBase+i (i cycling over n) with
// random ports and sequence numbers, to dut1's address at DNATPort.
func synFlood(tp *Topology, n int) func([]byte) int {
	r := rand.New(rand.NewPCG(1, 2))
	var i uint32
	return func(b []byte) int {
		src := AttackBase + i%uint32(n)
		i++
		return tcpFrame(b, tp.SrvMAC, tp.DUTOutMAC, src, DUTOut, uint16(1024+r.IntN(64512)), DNATPort, r.Uint32(), 0, tcpSYN, uint16(i))
	}
}

// udpFlood: datagrams from one inside host to destinations cycling over
// AttackNet's 2^17 addresses and 64 ports, from a port that changes with
// every datagram: every datagram is a new connection.
func udpFlood(tp *Topology) func([]byte) int {
	var i uint32
	return func(b []byte) int {
		dst := AttackBase + i%(1<<17)
		dport := uint16(5000 + (i>>17)%64)
		sport := uint16(1024 + i%64512)
		i++
		return udpFrame(b, tp.GenMAC, tp.DUTInMAC, UDPFloodSrc, dst, sport, dport, uint16(i))
	}
}

// rstSpray: RSTs from outside at the given connections in turn, with
// random sequence numbers: a blind attacker who knows the ports.
func rstSpray(tp *Topology, to []tuple4) func([]byte) int {
	r := rand.New(rand.NewPCG(3, 4))
	var i int
	return func(b []byte) int {
		t := to[i%len(to)]
		i++
		return tcpFrame(b, tp.SrvMAC, tp.DUTOutMAC, t.src, t.dst, t.sport, t.dport, r.Uint32(), 0, tcpRST, uint16(i))
	}
}

// tuple4 is a TCP connection's addresses and ports, source first.
type tuple4 struct {
	src, dst     uint32
	sport, dport uint16
}

// connTuple is a client connection's tuple as the device under test
// sees its original direction: the client's end, then the address it
// dialled.
func connTuple(c net.Conn) tuple4 {
	var t tuple4
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok && a.IP.To4() != nil {
		t.src, t.sport = binary.BigEndian.Uint32(a.IP.To4()), uint16(a.Port)
	}
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok && a.IP.To4() != nil {
		t.dst, t.dport = binary.BigEndian.Uint32(a.IP.To4()), uint16(a.Port)
	}
	return t
}

// echoServer echoes every byte on every connection it accepts and
// remembers the peers' ports.
type echoServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{} // open connections
	peers map[uint32][]uint16   // peer address → ports
	done  chan struct{}
}

func listenEcho(ns *NS, addr uint32, port uint16) (*echoServer, error) {
	s := &echoServer{conns: map[net.Conn]struct{}{}, peers: map[uint32][]uint16{}, done: make(chan struct{})}
	err := ns.Do(func() error {
		var err error
		s.ln, err = net.Listen("tcp4", net.JoinHostPort(ipString(addr), strconv.Itoa(int(port))))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("e2e: listening in %s: %w", ns.Name, err)
	}
	go s.serve()
	return s, nil
}

func (s *echoServer) serve() {
	defer close(s.done)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			if a4 := ra.IP.To4(); a4 != nil {
				k := binary.BigEndian.Uint32(a4)
				s.peers[k] = append(s.peers[k], uint16(ra.Port))
			}
		}
		s.mu.Unlock()
		go func() {
			_, _ = io.Copy(c, c)
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// waitPeers waits until n connections from addr were accepted and
// returns their ports.
func (s *echoServer) waitPeers(n int, addr uint32, timeout time.Duration) ([]uint16, error) {
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		p := append([]uint16(nil), s.peers[addr]...)
		s.mu.Unlock()
		if len(p) >= n {
			return p, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("e2e: the echo server saw %d of %d connections from %s", len(p), n, ipString(addr))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *echoServer) Close() error {
	err := s.ln.Close()
	<-s.done
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// dial connects from ns to addr:port within timeout.
func dial(ns *NS, addr uint32, port uint16, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		d := net.Dialer{Timeout: timeout}
		c, err = d.Dial("tcp4", net.JoinHostPort(ipString(addr), strconv.Itoa(int(port))))
		return err
	})
	return c, err
}

// dialOut connects from gen through MASQUERADE to the echo server;
// dialIn from srv through the DNAT to gen's service.
func dialOut(tp *Topology, timeout time.Duration) (net.Conn, error) {
	return dial(tp.Gen, SrvAddr, EchoPort, timeout)
}

func dialIn(tp *Topology, timeout time.Duration) (net.Conn, error) {
	return dial(tp.Srv, DUTOut, DNATPort, timeout)
}

// echoOnce writes msg and reads it back before the deadline.
func echoOnce(c net.Conn, msg, buf []byte, deadline time.Time) error {
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := c.Write(msg); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
		return err
	}
	if !bytes.Equal(buf[:len(msg)], msg) {
		return errCorrupt
	}
	return nil
}

var errCorrupt = errors.New("echo differs from what was sent")

// failure names what a connection saw.
func failure(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed"
	case errors.Is(err, errCorrupt):
		return "corrupt"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "stalled"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	}
	return "error"
}

// established are long-lived connections that echo periodically.
type established struct {
	conns   []net.Conn
	inbound int // connections dialled through the DNAT
	errs    []error
	echoes  atomic.Uint64
	quit    chan struct{}
	wg      sync.WaitGroup
}

// dialEstablished opens n connections, every tenth inbound through the
// DNAT and the others outbound through MASQUERADE, and checks each with
// one echo.
func dialEstablished(tp *Topology, n int, timeout time.Duration) (*established, error) {
	e := &established{conns: make([]net.Conn, n), errs: make([]error, n), quit: make(chan struct{}), inbound: n / 10}
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d := dialOut
			if i%10 == 9 {
				d = dialIn
			}
			c, err := d(tp, timeout)
			if err == nil {
				var buf [32]byte
				err = echoOnce(c, []byte("established connection, check  "), buf[:], time.Now().Add(timeout))
				if err != nil {
					c.Close()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = fmt.Errorf("e2e: established connection %d: %w", i, err)
				}
				return
			}
			e.conns[i] = c
		}()
	}
	wg.Wait()
	if first != nil {
		e.Close()
		return nil, first
	}
	return e, nil
}

// start runs every connection's echo loop: one echo every period
// (phases spread), each within stall.
func (e *established) start(period, stall time.Duration) {
	for i, c := range e.conns {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			msg := make([]byte, 32)
			buf := make([]byte, 32)
			binary.BigEndian.PutUint32(msg, uint32(i))
			t := time.NewTimer(period * time.Duration(i) / time.Duration(len(e.conns)))
			defer t.Stop()
			for seq := uint32(0); ; seq++ {
				select {
				case <-e.quit:
					return
				case <-t.C:
				}
				binary.BigEndian.PutUint32(msg[4:], seq)
				if err := echoOnce(c, msg, buf, time.Now().Add(stall)); err != nil {
					e.errs[i] = err
					return
				}
				e.echoes.Add(1)
				t.Reset(period)
			}
		}()
	}
}

// stop ends the echo loops and returns the connections lost, by what
// they saw, and the echoes completed.
func (e *established) stop() (lost int, by map[string]int, echoes uint64) {
	close(e.quit)
	e.wg.Wait()
	by = map[string]int{}
	for i, err := range e.errs {
		if err != nil {
			lost++
			dir := "out:"
			if i%10 == 9 {
				dir = "in:"
			}
			by[dir+failure(err)]++
		}
	}
	return lost, by, e.echoes.Load()
}

func (e *established) Close() error {
	for _, c := range e.conns {
		if c != nil {
			c.Close()
		}
	}
	return nil
}

// legit is the legitimate client: new connections at a steady rate.
type legit struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	res  legitResult
	done chan struct{}
}

type legitResult struct {
	attempted, completed     int
	inAttempted, inCompleted int // inbound through the DNAT
	failedBy                 map[string]int
}

// runLegit opens a connection every 1/rate s until stop is closed, every
// fifth inbound through the DNAT and the others outbound through
// MASQUERADE; each connects, echoes once and closes within timeout.
func runLegit(tp *Topology, rate float64, timeout time.Duration, stop <-chan struct{}) *legit {
	l := &legit{res: legitResult{failedBy: map[string]int{}}, done: make(chan struct{})}
	period := time.Duration(float64(time.Second) / rate)
	go func() {
		defer close(l.done)
		start := time.Now()
		for i := 0; ; i++ {
			if d := time.Until(start.Add(time.Duration(i) * period)); d > 0 {
				select {
				case <-stop:
					return
				case <-time.After(d):
				}
			}
			select {
			case <-stop:
				return
			default:
			}
			in := i%5 == 4
			l.mu.Lock()
			l.res.attempted++
			if in {
				l.res.inAttempted++
			}
			l.mu.Unlock()
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				deadline := time.Now().Add(timeout)
				d, dir := dialOut, "out:"
				if in {
					d, dir = dialIn, "in:"
				}
				c, err := d(tp, timeout)
				if err == nil {
					var buf [16]byte
					err = echoOnce(c, []byte("legitimate conn "), buf[:], deadline)
					c.Close()
				}
				l.mu.Lock()
				defer l.mu.Unlock()
				if err != nil {
					l.res.failedBy[dir+failure(err)]++
					return
				}
				l.res.completed++
				if in {
					l.res.inCompleted++
				}
			}()
		}
	}()
	return l
}

// wait waits for the attempts in flight (stop must be closed).
func (l *legit) wait() legitResult {
	<-l.done
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.res
}

// FloodHeader is the table header matching FloodResult.Row.
var FloodHeader = []string{"target", "seconds", "established", "est. lost", "est. states", "legit tried", "legit ok", "legit success", "legit new/s", "flood pps", "syn", "udp", "rst", "conns", "drops by reason"}

// Row formats a flood result for the table.
func (r *FloodResult) Row() []string {
	f := func(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	lost := strconv.Itoa(r.EstablishedLost)
	if r.EstablishedLost > 0 {
		lost += " (" + counts(r.EstablishedLostBy) + ")"
	}
	return []string{r.Target, f(r.Seconds, 1), strconv.Itoa(r.Established), lost, counts(r.EstablishedStates),
		strconv.Itoa(r.LegitAttempted), strconv.Itoa(r.LegitCompleted), f(r.LegitSuccess, 4), f(r.LegitNewPerSec, 0),
		f(r.FloodPPS, 0), strconv.FormatUint(r.FloodSent["syn"], 10), strconv.FormatUint(r.FloodSent["udp"], 10),
		strconv.FormatUint(r.FloodSent["rst"], 10), strconv.Itoa(r.Conns), counts(r.DropsByReason)}
}

// counts formats a map of counts as "k=v" pairs sorted by key.
func counts[V int | uint64](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// floodCounters adds xnatd's conntrack and path counters beside its drop
// reasons: connections evicted to make room (ct_early_drop), packets its
// tracking found invalid (ct_invalid), connections refused at
// per_source_max, and frames its XDP program could not hand to a socket
// or its sockets dropped.
func (x *Xnat) floodCounters(m map[string]uint64) error {
	if x.client == nil {
		return fmt.Errorf("e2e: xnatd is not running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := x.client.Stats(ctx)
	if err != nil {
		return fmt.Errorf("e2e: xnatd stats: %w", err)
	}
	m["ct_early_drop"] = st.Connections.EarlyDrop
	m["ct_invalid"] = st.Connections.Invalid
	m["ct_drop"] = st.Connections.Drop
	m["per_source_limit"] = st.NAT.PerSourceLimit
	m["out_of_ports"] = st.NAT.OutOfPorts
	for _, s := range st.XDP {
		m["xdp_redirect_failed"] += s.RedirectFailed
	}
	for _, r := range st.Rings {
		m["xsk_rx_dropped"] += r.RxDropped
	}
	return nil
}

// kernelTCPStates are the names of nf_conntrack's TCP states by number
// (enum tcp_conntrack), as conntrack -L prints them.
var kernelTCPStates = [...]string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

// ctStates returns the target's conntrack state of each established
// connection (by its original tuple), counted by state name; "missing"
// counts connections the table does not hold.
func ctStates(t Target, tp *Topology, conns map[tuple4]bool) (map[string]int, error) {
	out := map[string]int{}
	seen := 0
	ip := func(a net.IP) uint32 {
		if a4 := a.To4(); a4 != nil {
			return binary.BigEndian.Uint32(a4)
		}
		return 0
	}
	switch t := t.(type) {
	case *Kernel:
		flows, err := tp.DUT.Netlink().ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
		if err != nil {
			return nil, fmt.Errorf("e2e: listing the kernel's connections: %w", err)
		}
		for _, f := range flows {
			fw := f.Forward
			if fw.Protocol != header.ProtoTCP || !conns[tuple4{ip(fw.SrcIP), ip(fw.DstIP), fw.SrcPort, fw.DstPort}] {
				continue
			}
			name := "unknown"
			if p, ok := f.ProtoInfo.(*netlink.ProtoInfoTCP); ok && int(p.State) < len(kernelTCPStates) {
				name = kernelTCPStates[p.State]
			}
			out[name]++
			seen++
		}
	case *Xnat:
		if t.client == nil {
			return nil, fmt.Errorf("e2e: xnatd is not running")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l, err := t.client.Conntrack(ctx, &conntrack.Filter{Proto: header.ProtoTCP})
		if err != nil {
			return nil, fmt.Errorf("e2e: listing xnatd's connections: %w", err)
		}
		for _, c := range l.Conns {
			if !conns[tuple4{ip(net.ParseIP(c.Orig.Src)), ip(net.ParseIP(c.Orig.Dst)), c.Orig.SPort, c.Orig.DPort}] {
				continue
			}
			out[c.State]++
			seen++
		}
	default:
		return nil, fmt.Errorf("%w: no connection listing for target %s", ErrConfig, t.Name())
	}
	if m := len(conns) - seen; m > 0 {
		out["missing"] = m
	}
	return out, nil
}

// tuples are the established connections' original tuples.
func (e *established) tuples() map[tuple4]bool {
	m := make(map[tuple4]bool, len(e.conns))
	for _, c := range e.conns {
		m[connTuple(c)] = true
	}
	return m
}
