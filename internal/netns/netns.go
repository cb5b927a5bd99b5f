package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace this package creates.
const Prefix = "xnt-"

// runDir is where named namespaces are bind-mounted (as iproute2 does).
const runDir = "/var/run/netns"

// ErrNoCapability is returned (wrapped) by Check when the process cannot
// create network namespaces.
var ErrNoCapability = errors.New("netns: cannot create network namespaces")

// InCI reports whether the tests run in CI (CI=true or CI=1), where a
// missing capability is a failure, not a reason to skip.
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

var (
	checkOnce sync.Once
	checkErr  error
)

// Check reports whether this process can create network namespaces and
// configure them: it must be root and able to unshare a network
// namespace (CAP_SYS_ADMIN) on a throwaway thread.
func Check() error {
	checkOnce.Do(func() {
		if os.Geteuid() != 0 {
			checkErr = fmt.Errorf("%w: not running as root (euid %d)", ErrNoCapability, os.Geteuid())
			return
		}
		res := make(chan error, 1)
		go func() {
			// The thread is left locked: it ends with this goroutine
			// instead of going back to the scheduler in the new namespace.
			runtime.LockOSThread()
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				res <- fmt.Errorf("%w: unshare(CLONE_NEWNET): %w", ErrNoCapability, err)
				return
			}
			res <- nil
		}()
		checkErr = <-res
	})
	return checkErr
}

// RequireRoot skips t when namespaces cannot be created and the tests do
// not run in CI; in CI (CI=true) it fails t instead.
func RequireRoot(t testing.TB) {
	t.Helper()
	err := Check()
	if err == nil {
		return
	}
	if InCI() {
		t.Fatalf("CI=true and this test needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN: %v", err)
	}
	t.Skipf("skipped outside CI: needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN (network namespaces, veth, XDP): %v", err)
}

var (
	sweepOnce sync.Once
	topoSeq   atomic.Uint64
)

// Topology is a set of namespaces owned by one test and removed by its
// cleanup.
type Topology struct {
	t      testing.TB
	prefix string

	mu  sync.Mutex
	nss []*NS
}

// New returns an empty topology for t, after RequireRoot. Its teardown
// is registered with t.Cleanup. The first call in a process also sweeps
// namespaces left by crashed runs (Sweep).
func New(t testing.TB) *Topology {
	t.Helper()
	RequireRoot(t)
	sweepOnce.Do(func() {
		if _, err := Sweep(); err != nil {
			t.Logf("netns: sweeping stale namespaces: %v", err)
		}
	})
	tp := newTopology()
	tp.t = t
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("netns: teardown: %v", err)
		}
	})
	return tp
}

// Open returns an empty topology for a program rather than a test (the
// benchmark harness): it checks the privileges (Check), sweeps namespaces
// left by crashed runs once per process, and leaves removing the
// topology to the caller's Close. Use CreateNS and AddVeth on it; NS and
// Veth, which fail a test on error, are for topologies made by New.
func Open() (*Topology, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	sweepOnce.Do(func() { _, _ = Sweep() })
	return newTopology(), nil
}

func newTopology() *Topology {
	return &Topology{prefix: fmt.Sprintf("%s%d-%d-", Prefix, os.Getpid(), topoSeq.Add(1))}
}

// Prefix is the prefix of every namespace name of this topology.
func (tp *Topology) Prefix() string { return tp.prefix }

// NS creates a namespace named Prefix()+short with its loopback up and
// IPv6 disabled (the tests are IPv4; this keeps router solicitations,
// MLD and DAD traffic off the links). It fails the test on error.
func (tp *Topology) NS(short string) *NS {
	tp.t.Helper()
	n, err := tp.CreateNS(short)
	if err != nil {
		tp.t.Fatalf("netns: creating namespace %q: %v", short, err)
	}
	return n
}

// CreateNS is NS returning its error instead of failing a test.
func (tp *Topology) CreateNS(short string) (*NS, error) {
	name := tp.prefix + short
	h, err := newNamed(name)
	if err != nil {
		return nil, err
	}
	n := &NS{Name: name, handle: h}
	tp.mu.Lock()
	tp.nss = append(tp.nss, n)
	tp.mu.Unlock()
	n.nl, err = netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	lo, err := n.nl.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("lo in %s: %w", name, err)
	}
	if err := n.nl.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("lo up in %s: %w", name, err)
	}
	for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
		if err := n.SetSysctl(k, "1"); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// newNamed creates a named namespace without leaving any thread of the
// process in it.
func newNamed(name string) (vnetns.NsHandle, error) {
	type result struct {
		h   vnetns.NsHandle
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			res <- result{vnetns.None(), fmt.Errorf("current namespace: %w", err)}
			runtime.UnlockOSThread()
			return
		}
		defer orig.Close()
		h, err := vnetns.NewNamed(name)
		if err != nil {
			err = fmt.Errorf("create %s: %w", name, err)
		}
		if rerr := vnetns.Set(orig); rerr != nil {
			// Leave the thread locked: it dies with this goroutine.
			res <- result{h, errors.Join(err, fmt.Errorf("back to the original namespace: %w", rerr))}
			return
		}
		runtime.UnlockOSThread()
		res <- result{h, err}
	}()
	r := <-res
	return r.h, r.err
}

// Close removes every namespace of the topology (and so every link in
// them). It is called by the test's cleanup; calling it again is a no-op.
func (tp *Topology) Close() error {
	tp.mu.Lock()
	nss := tp.nss
	tp.nss = nil
	tp.mu.Unlock()
	var errs []error
	for i := len(nss) - 1; i >= 0; i-- {
		if err := nss[i].close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Sweep removes namespaces named by this package whose creating process
// no longer exists (left by a run that crashed before its cleanup). It
// returns the names removed.
func Sweep() ([]string, error) {
	ents, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netns: reading %s: %w", runDir, err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		name := e.Name()
		pid, ok := ownerPid(name)
		if !ok || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		if err := vnetns.DeleteNamed(name); err != nil {
			errs = append(errs, fmt.Errorf("netns: removing stale %s: %w", name, err))
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

// ownerPid parses "xnt-<pid>-..." names.
func ownerPid(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return 0, false
	}
	num, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(num)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// NS is one network namespace of a topology.
type NS struct {
	Name   string
	mu     sync.RWMutex // guards handle against teardown while Do enters
	handle vnetns.NsHandle
	nl     *netlink.Handle
}

// Handle is the namespace's handle (an open fd owned by the NS).
func (n *NS) Handle() vnetns.NsHandle { return n.handle }

// Netlink is a netlink handle working in the namespace.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Path is the namespace's bind mount, usable with `ip netns exec`'s
// conventions and netns.GetFromPath.
func (n *NS) Path() string { return filepath.Join(runDir, n.Name) }

func (n *NS) close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.handle.IsOpen() {
		if err := n.handle.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing handle of %s: %w", n.Name, err))
		}
	}
	if err := vnetns.DeleteNamed(n.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("deleting %s: %w", n.Name, err))
	}
	return errors.Join(errs...)
}

// Do runs f on an OS thread switched into the namespace, and switches
// the thread back afterwards. Goroutines that f starts do not run in the
// namespace. Sockets created inside f stay in the namespace for their
// whole life.
func (n *NS) Do(f func() error) error {
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res <- fmt.Errorf("netns: current namespace: %w", err)
			return
		}
		defer orig.Close()
		n.mu.RLock()
		err = vnetns.Set(n.handle)
		n.mu.RUnlock()
		if err != nil {
			runtime.UnlockOSThread()
			res <- fmt.Errorf("netns: entering %s: %w", n.Name, err)
			return
		}
		ferr := f()
		if err := vnetns.Set(orig); err != nil {
			// The thread stays locked and exits with this goroutine.
			res <- errors.Join(ferr, fmt.Errorf("netns: leaving %s: %w", n.Name, err))
			return
		}
		runtime.UnlockOSThread()
		res <- ferr
	}()
	return <-res
}

// Run runs a command inside the namespace and returns its combined
// output.
func (n *NS) Run(name string, args ...string) ([]byte, error) {
	var out []byte
	err := n.Do(func() error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("netns %s: %s %s: %w: %s", n.Name, name, strings.Join(args, " "), err, out)
		}
		return nil
	})
	return out, err
}

// SetSysctl writes a sysctl of the namespace, e.g.
// SetSysctl("net.ipv4.ip_forward", "0").
func (n *NS) SetSysctl(key, value string) error {
	p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	return n.Do(func() error {
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("netns %s: sysctl %s=%s: %w", n.Name, key, value, err)
		}
		return nil
	})
}

// Sysctl reads a sysctl of the namespace.
func (n *NS) Sysctl(key string) (string, error) {
	p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	var v string
	err := n.Do(func() error {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("netns %s: sysctl %s: %w", n.Name, key, err)
		}
		v = strings.TrimSpace(string(b))
		return nil
	})
	return v, err
}

// Link returns the named link of the namespace.
func (n *NS) Link(name string) (netlink.Link, error) {
	l, err := n.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("netns %s: link %s: %w", n.Name, name, err)
	}
	return l, nil
}

// Veth creates a veth pair with end aName in a and end bName in b, both
// up, with one queue each way. The pair goes away with either namespace.
// It fails the test on error.
func (tp *Topology) Veth(a *NS, aName string, b *NS, bName string) {
	tp.t.Helper()
	if err := tp.AddVeth(a, aName, b, bName, 1); err != nil {
		tp.t.Fatal(err)
	}
}

// AddVeth creates a veth pair with end aName in a and end bName in b,
// both up, each end with queues RX and TX queues (XDP on a veth needs as
// many RX queues as its peer has TX queues).
func (tp *Topology) AddVeth(a *NS, aName string, b *NS, bName string, queues int) error {
	if queues < 1 {
		return fmt.Errorf("netns: veth %s -- %s: %d queues", aName, bName, queues)
	}
	v := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: aName, Namespace: netlink.NsFd(a.handle),
			NumTxQueues: queues, NumRxQueues: queues},
		PeerName:        bName,
		PeerNamespace:   netlink.NsFd(b.handle),
		PeerNumTxQueues: uint32(queues),
		PeerNumRxQueues: uint32(queues),
	}
	// Created from a's handle, so that both names are only looked up in
	// their own namespaces.
	if err := a.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("netns: veth %s/%s -- %s/%s: %w", a.Name, aName, b.Name, bName, err)
	}
	for _, e := range []struct {
		ns   *NS
		name string
	}{{a, aName}, {b, bName}} {
		if err := e.ns.SetLinkUp(e.name, true); err != nil {
			return err
		}
	}
	return nil
}

// ReadFile reads a file as a thread inside the namespace sees it. The
// namespace's /proc/net files must be named /proc/thread-self/net/…:
// /proc/net is /proc/self/net, the namespace of the process's main thread.
func (n *NS) ReadFile(path string) ([]byte, error) {
	var b []byte
	err := n.Do(func() error {
		var err error
		b, err = os.ReadFile(path)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", n.Name, err)
	}
	return b, nil
}

// LinkStats returns a link's counters.
func (n *NS) LinkStats(name string) (*netlink.LinkStatistics, error) {
	l, err := n.Link(name)
	if err != nil {
		return nil, err
	}
	if s := l.Attrs().Statistics; s != nil {
		return s, nil
	}
	return nil, fmt.Errorf("netns %s: link %s has no statistics", n.Name, name)
}

// SetLinkUp sets a link administratively up or down.
func (n *NS) SetLinkUp(name string, up bool) error {
	l, err := n.Link(name)
	if err != nil {
		return err
	}
	if up {
		err = n.nl.LinkSetUp(l)
	} else {
		err = n.nl.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("netns %s: link %s up=%v: %w", n.Name, name, up, err)
	}
	return nil
}

// Index returns a link's ifindex.
func (n *NS) Index(name string) (int, error) {
	l, err := n.Link(name)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

// MAC returns a link's hardware address.
func (n *NS) MAC(name string) (net.HardwareAddr, error) {
	l, err := n.Link(name)
	if err != nil {
		return nil, err
	}
	return l.Attrs().HardwareAddr, nil
}

// AddAddr adds an address in CIDR form ("10.0.0.1/24") to a link.
func (n *NS) AddAddr(link, cidr string) error {
	return n.addrOp(link, cidr, true)
}

// DelAddr removes an address in CIDR form from a link.
func (n *NS) DelAddr(link, cidr string) error {
	return n.addrOp(link, cidr, false)
}

func (n *NS) addrOp(link, cidr string, add bool) error {
	l, err := n.Link(link)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return fmt.Errorf("netns: address %q: %w", cidr, err)
	}
	if add {
		err = n.nl.AddrAdd(l, a)
	} else {
		err = n.nl.AddrDel(l, a)
	}
	if err != nil {
		return fmt.Errorf("netns %s: address %s on %s (add=%v): %w", n.Name, cidr, link, add, err)
	}
	return nil
}

// AddRoute adds a main-table route to dst (CIDR) via gw ("" for a
// directly connected route) out of link.
func (n *NS) AddRoute(dst, gw, link string) error {
	r, err := n.route(dst, gw, link)
	if err != nil {
		return err
	}
	if err := n.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("netns %s: route %s via %q dev %s: %w", n.Name, dst, gw, link, err)
	}
	return nil
}

// DelRoute removes a route added by AddRoute.
func (n *NS) DelRoute(dst, gw, link string) error {
	r, err := n.route(dst, gw, link)
	if err != nil {
		return err
	}
	if err := n.nl.RouteDel(r); err != nil {
		return fmt.Errorf("netns %s: deleting route %s via %q dev %s: %w", n.Name, dst, gw, link, err)
	}
	return nil
}

func (n *NS) route(dst, gw, link string) (*netlink.Route, error) {
	l, err := n.Link(link)
	if err != nil {
		return nil, err
	}
	_, d, err := net.ParseCIDR(dst)
	if err != nil {
		return nil, fmt.Errorf("netns: route destination %q: %w", dst, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: d}
	if gw != "" {
		r.Gw = net.ParseIP(gw)
		if r.Gw == nil {
			return nil, fmt.Errorf("netns: bad gateway %q", gw)
		}
	}
	return r, nil
}

// AddNeigh adds a permanent IPv4 neighbour entry.
func (n *NS) AddNeigh(link, ip string, mac net.HardwareAddr) error {
	l, err := n.Link(link)
	if err != nil {
		return err
	}
	addr := net.ParseIP(ip)
	if addr == nil {
		return fmt.Errorf("netns: bad neighbour address %q", ip)
	}
	err = n.nl.NeighSet(&netlink.Neigh{
		LinkIndex:    l.Attrs().Index,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           addr,
		HardwareAddr: mac,
	})
	if err != nil {
		return fmt.Errorf("netns %s: neighbour %s lladdr %s dev %s: %w", n.Name, ip, mac, link, err)
	}
	return nil
}

// ethtool ioctl numbers (linux/ethtool.h, linux/sockios.h).
const (
	siocEthtool    = 0x8946
	ethtoolGTxCsum = 0x16
	ethtoolSTxCsum = 0x17
)

type ethtoolValue struct {
	cmd  uint32
	data uint32
}

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte
}

// SetTxChecksum turns TX checksum offload of a link on or off, as
// `ethtool -K <link> tx on|off` does (ETHTOOL_STXCSUM). Frames a kernel
// socket sends through a veth with TX checksum offload on carry a
// partial L4 checksum; ends that send into xnat must have it off.
func (n *NS) SetTxChecksum(link string, on bool) error {
	v := ethtoolValue{cmd: ethtoolSTxCsum}
	if on {
		v.data = 1
	}
	return n.ethtool(link, &v)
}

// TxChecksum reports whether TX checksum offload is on (ETHTOOL_GTXCSUM).
func (n *NS) TxChecksum(link string) (bool, error) {
	v := ethtoolValue{cmd: ethtoolGTxCsum}
	err := n.ethtool(link, &v)
	return v.data != 0, err
}

func (n *NS) ethtool(link string, v *ethtoolValue) error {
	if len(link) >= unix.IFNAMSIZ {
		return fmt.Errorf("netns: link name %q too long", link)
	}
	return n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("netns %s: ethtool socket: %w", n.Name, err)
		}
		defer unix.Close(fd)
		var ifr ifreqData
		copy(ifr.name[:], link)
		ifr.data = uintptr(unsafe.Pointer(v))
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), siocEthtool, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(v)
		if errno != 0 {
			return fmt.Errorf("netns %s: ethtool cmd %#x on %s: %w", n.Name, v.cmd, link, errno)
		}
		return nil
	})
}
