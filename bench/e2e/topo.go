package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"xnat/internal/netns"
)

// Addresses of the topology.
var (
	GenAddr    = ip4(10, 0, 0, 2)    // gen0 (the generator's kernel side)
	DUTIn      = ip4(10, 0, 0, 1)    // dut0
	DUTOut     = ip4(203, 0, 113, 1) // dut1: the masquerading address
	SrvAddr    = ip4(203, 0, 113, 2) // srv0: the server
	FlowBase   = ip4(10, 0, 0, 16)   // first source address of generated flows
	outsideNet = "203.0.113.0/24"
)

func ip4(a, b, c, d byte) uint32 { return binary.BigEndian.Uint32([]byte{a, b, c, d}) }

func ipString(a uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a)
	return net.IP(b[:]).String()
}

// Interface names.
const (
	GenIf    = "gen0"
	DUTInIf  = "dut0"
	DUTOutIf = "dut1"
	SrvIf    = "srv0"
)

// NS is one network namespace of a Topology.
type NS struct {
	Name   string
	mu     sync.RWMutex
	handle vnetns.NsHandle
	nl     *netlink.Handle
}

var topoSeq atomic.Uint64
var sweepOnce sync.Once

func newNS(name string) (*NS, error) {
	type result struct {
		h   vnetns.NsHandle
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res <- result{vnetns.None(), fmt.Errorf("e2e: current namespace: %w", err)}
			return
		}
		defer orig.Close()
		h, err := vnetns.NewNamed(name)
		if err != nil {
			err = fmt.Errorf("e2e: creating namespace %s: %w", name, err)
		}
		if rerr := vnetns.Set(orig); rerr != nil {
			// The thread stays locked and exits with this goroutine.
			res <- result{h, errors.Join(err, fmt.Errorf("e2e: back to the original namespace: %w", rerr))}
			return
		}
		runtime.UnlockOSThread()
		res <- result{h, err}
	}()
	r := <-res
	if r.err != nil {
		if r.h.IsOpen() {
			r.h.Close()
			_ = vnetns.DeleteNamed(name)
		}
		return nil, r.err
	}
	n := &NS{Name: name, handle: r.h}
	var err error
	if n.nl, err = netlink.NewHandleAt(r.h); err != nil {
		n.close()
		return nil, fmt.Errorf("e2e: netlink in %s: %w", name, err)
	}
	lo, err := n.nl.LinkByName("lo")
	if err == nil {
		err = n.nl.LinkSetUp(lo)
	}
	if err != nil {
		n.close()
		return nil, fmt.Errorf("e2e: lo up in %s: %w", name, err)
	}
	for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
		if err := n.SetSysctl(k, "1"); err != nil {
			n.close()
			return nil, err
		}
	}
	return n, nil
}

func (n *NS) close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	var errs []error
	if n.handle.IsOpen() {
		if err := n.handle.Close(); err != nil {
			errs = append(errs, fmt.Errorf("e2e: closing %s: %w", n.Name, err))
		}
	}
	if err := vnetns.DeleteNamed(n.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("e2e: deleting %s: %w", n.Name, err))
	}
	return errors.Join(errs...)
}

// Do runs f on an OS thread switched into the namespace and switches it
// back afterwards; goroutines f starts do not run in the namespace.
func (n *NS) Do(f func() error) error {
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res <- fmt.Errorf("e2e: current namespace: %w", err)
			return
		}
		defer orig.Close()
		n.mu.RLock()
		err = vnetns.Set(n.handle)
		n.mu.RUnlock()
		if err != nil {
			runtime.UnlockOSThread()
			res <- fmt.Errorf("e2e: entering %s: %w", n.Name, err)
			return
		}
		ferr := f()
		if err := vnetns.Set(orig); err != nil {
			res <- errors.Join(ferr, fmt.Errorf("e2e: leaving %s: %w", n.Name, err))
			return
		}
		runtime.UnlockOSThread()
		res <- ferr
	}()
	return <-res
}

// Run runs a command in the namespace and returns its combined output.
func (n *NS) Run(name string, args ...string) ([]byte, error) {
	var out []byte
	err := n.Do(func() error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("e2e: %s: %s %s: %w: %s", n.Name, name, strings.Join(args, " "), err, out)
		}
		return nil
	})
	return out, err
}

// ReadFile reads a file as seen from a thread inside the namespace. Files
// of /proc/net must be read as /proc/thread-self/net/…: /proc/net is
// /proc/self/net, the namespace of the process's main thread.
func (n *NS) ReadFile(path string) ([]byte, error) {
	var b []byte
	err := n.Do(func() error {
		var err error
		b, err = os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("e2e: %s: %w", n.Name, err)
		}
		return nil
	})
	return b, err
}

// SetSysctl writes a sysctl of the namespace.
func (n *NS) SetSysctl(key, value string) error {
	p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	return n.Do(func() error {
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("e2e: %s: sysctl %s=%s: %w", n.Name, key, value, err)
		}
		return nil
	})
}

// Sysctl reads a sysctl of the namespace.
func (n *NS) Sysctl(key string) (string, error) {
	b, err := n.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
	return strings.TrimSpace(string(b)), err
}

func (n *NS) link(name string) (netlink.Link, error) {
	l, err := n.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("e2e: %s: link %s: %w", n.Name, name, err)
	}
	return l, nil
}

// Index returns a link's ifindex.
func (n *NS) Index(name string) (int, error) {
	l, err := n.link(name)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

// MAC returns a link's hardware address.
func (n *NS) MAC(name string) ([6]byte, error) {
	var m [6]byte
	l, err := n.link(name)
	if err != nil {
		return m, err
	}
	copy(m[:], l.Attrs().HardwareAddr)
	return m, nil
}

// LinkStats are a link's packet counters.
type LinkStats struct {
	RxPackets, TxPackets, RxDropped, TxDropped uint64
}

// Stats reads a link's counters.
func (n *NS) Stats(name string) (LinkStats, error) {
	l, err := n.link(name)
	if err != nil {
		return LinkStats{}, err
	}
	s := l.Attrs().Statistics
	if s == nil {
		return LinkStats{}, fmt.Errorf("e2e: %s: link %s has no statistics", n.Name, name)
	}
	return LinkStats{RxPackets: s.RxPackets, TxPackets: s.TxPackets, RxDropped: s.RxDropped, TxDropped: s.TxDropped}, nil
}

func (n *NS) addAddr(link string, a uint32, plen int) error {
	l, err := n.link(link)
	if err != nil {
		return err
	}
	cidr := fmt.Sprintf("%s/%d", ipString(a), plen)
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		return fmt.Errorf("e2e: address %s: %w", cidr, err)
	}
	if err := n.nl.AddrAdd(l, addr); err != nil {
		return fmt.Errorf("e2e: %s: address %s on %s: %w", n.Name, cidr, link, err)
	}
	return nil
}

func (n *NS) addNeigh(link string, a uint32, mac [6]byte) error {
	l, err := n.link(link)
	if err != nil {
		return err
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a)
	err = n.nl.NeighSet(&netlink.Neigh{
		LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: net.IP(b[:]), HardwareAddr: net.HardwareAddr(mac[:]),
	})
	if err != nil {
		return fmt.Errorf("e2e: %s: neighbour %s dev %s: %w", n.Name, ipString(a), link, err)
	}
	return nil
}

func (n *NS) addRoute(dst string, gw uint32, link string) error {
	l, err := n.link(link)
	if err != nil {
		return err
	}
	_, d, err := net.ParseCIDR(dst)
	if err != nil {
		return fmt.Errorf("e2e: route %s: %w", dst, err)
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], gw)
	if err := n.nl.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: d, Gw: net.IP(b[:])}); err != nil {
		return fmt.Errorf("e2e: %s: route %s via %s: %w", n.Name, dst, ipString(gw), err)
	}
	return nil
}

// ethtool ioctl (linux/ethtool.h).
const (
	siocEthtool    = 0x8946
	ethtoolSTxCsum = 0x17
)

// SetTxChecksum turns TX checksum offload of a link on or off.
func (n *NS) SetTxChecksum(link string, on bool) error {
	if len(link) >= unix.IFNAMSIZ {
		return fmt.Errorf("%w: link name %q", ErrConfig, link)
	}
	v := struct{ cmd, data uint32 }{cmd: ethtoolSTxCsum}
	if on {
		v.data = 1
	}
	return n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("e2e: ethtool socket: %w", err)
		}
		defer unix.Close(fd)
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data uintptr
			_    [16]byte
		}
		copy(ifr.name[:], link)
		ifr.data = uintptr(unsafe.Pointer(&v))
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), siocEthtool, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(&v)
		if errno != 0 {
			return fmt.Errorf("e2e: %s: ethtool tx %v on %s: %w", n.Name, on, link, errno)
		}
		return nil
	})
}

// Topology is the end-to-end topology:
//
//	gen: gen0 10.0.0.2/24 ── veth ── dut: dut0 10.0.0.1/24
//	                                      dut1 203.0.113.1/24 ── veth ── srv: srv0 203.0.113.2/24
//
// The generator sends from gen0 with sources 10.0.0.16 and up (flows, see
// FlowTuple) to 203.0.113.2; the device under test translates them to
// 203.0.113.1; the sink (or reflector) on srv0 receives them. The
// generator and the sink have no ARP (their XDP programs take every IPv4
// frame), so dut has permanent neighbours for every flow source address
// and for the server, and gen and srv for dut's addresses. TX checksum
// offload is off on gen0 and srv0, the ends that send into dut.
type Topology struct {
	Gen, DUT, Srv                       *NS
	Queues                              int
	GenMAC, DUTInMAC, DUTOutMAC, SrvMAC [6]byte
	GenIndex, SrvIndex, DUTInIndex      int
}

// NewTopology creates the namespaces and links with queues RX/TX queues
// per veth. Close removes them.
func NewTopology(queues int) (tp *Topology, err error) {
	if queues < 1 || queues > 64 {
		return nil, fmt.Errorf("%w: %d queues", ErrConfig, queues)
	}
	if err := netns.Check(); err != nil {
		return nil, fmt.Errorf("e2e: %w", err)
	}
	sweepOnce.Do(func() { _, _ = netns.Sweep() })
	prefix := fmt.Sprintf("%s%d-e2e%d-", netns.Prefix, os.Getpid(), topoSeq.Add(1))
	tp = &Topology{Queues: queues}
	defer func() {
		if err != nil {
			err = errors.Join(err, tp.Close())
			tp = nil
		}
	}()
	if tp.Gen, err = newNS(prefix + "gen"); err != nil {
		return tp, err
	}
	if tp.DUT, err = newNS(prefix + "dut"); err != nil {
		return tp, err
	}
	if tp.Srv, err = newNS(prefix + "srv"); err != nil {
		return tp, err
	}
	if err = veth(tp.Gen, GenIf, tp.DUT, DUTInIf, queues); err != nil {
		return tp, err
	}
	if err = veth(tp.DUT, DUTOutIf, tp.Srv, SrvIf, queues); err != nil {
		return tp, err
	}
	steps := []func() error{
		func() (e error) { tp.GenMAC, e = tp.Gen.MAC(GenIf); return },
		func() (e error) { tp.DUTInMAC, e = tp.DUT.MAC(DUTInIf); return },
		func() (e error) { tp.DUTOutMAC, e = tp.DUT.MAC(DUTOutIf); return },
		func() (e error) { tp.SrvMAC, e = tp.Srv.MAC(SrvIf); return },
		func() (e error) { tp.GenIndex, e = tp.Gen.Index(GenIf); return },
		func() (e error) { tp.SrvIndex, e = tp.Srv.Index(SrvIf); return },
		func() (e error) { tp.DUTInIndex, e = tp.DUT.Index(DUTInIf); return },
		func() error { return tp.Gen.addAddr(GenIf, GenAddr, 24) },
		func() error { return tp.DUT.addAddr(DUTInIf, DUTIn, 24) },
		func() error { return tp.DUT.addAddr(DUTOutIf, DUTOut, 24) },
		func() error { return tp.Srv.addAddr(SrvIf, SrvAddr, 24) },
		func() error { return tp.Gen.addRoute(outsideNet, DUTIn, GenIf) },
		func() error { return tp.Gen.addNeigh(GenIf, DUTIn, tp.DUTInMAC) },
		func() error { return tp.Srv.addNeigh(SrvIf, DUTOut, tp.DUTOutMAC) },
		func() error { return tp.DUT.addNeigh(DUTOutIf, SrvAddr, tp.SrvMAC) },
		func() error {
			for i := uint32(0); i < MaxAddrs; i++ {
				if err := tp.DUT.addNeigh(DUTInIf, FlowBase+i, tp.GenMAC); err != nil {
					return err
				}
			}
			return nil
		},
		func() error { return tp.Gen.SetTxChecksum(GenIf, false) },
		func() error { return tp.Srv.SetTxChecksum(SrvIf, false) },
		// The gateway itself forwards nothing until a target sets it up.
		func() error { return tp.DUT.SetSysctl("net.ipv4.ip_forward", "0") },
	}
	for _, s := range steps {
		if err = s(); err != nil {
			return tp, err
		}
	}
	return tp, nil
}

func veth(a *NS, an string, b *NS, bn string, queues int) error {
	v := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name: an, Namespace: netlink.NsFd(a.handle),
			NumTxQueues: queues, NumRxQueues: queues,
		},
		PeerName:        bn,
		PeerNamespace:   netlink.NsFd(b.handle),
		PeerNumTxQueues: uint32(queues),
		PeerNumRxQueues: uint32(queues),
	}
	if err := a.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("e2e: veth %s -- %s: %w", an, bn, err)
	}
	for _, e := range []struct {
		ns   *NS
		name string
	}{{a, an}, {b, bn}} {
		l, err := e.ns.link(e.name)
		if err != nil {
			return err
		}
		if err := e.ns.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("e2e: %s: %s up: %w", e.ns.Name, e.name, err)
		}
	}
	return nil
}

// Close removes the namespaces (and with them every link). Calling it
// again does nothing.
func (tp *Topology) Close() error {
	var errs []error
	for _, n := range []**NS{&tp.Srv, &tp.DUT, &tp.Gen} {
		if *n != nil {
			errs = append(errs, (*n).close())
			*n = nil
		}
	}
	return errors.Join(errs...)
}
