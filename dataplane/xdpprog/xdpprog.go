package xdpprog

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Errors callers tell apart.
var (
	// ErrBusy: the interface has an XDP program attached through a BPF
	// link that another live process holds; it cannot be replaced.
	ErrBusy = errors.New("xdpprog: interface has an XDP program held by another process")
	// ErrClosed: the Program or Filter was closed.
	ErrClosed = errors.New("xdpprog: closed")
	// ErrAttach: neither native nor generic XDP could be attached.
	ErrAttach = errors.New("xdpprog: cannot attach XDP program")
)

// DefaultQueues is the XSKMAP size used when Options.Queues is 0.
const DefaultQueues = 64

// DefaultMaxLocals is the local-address map size used when
// Options.MaxLocals is 0.
const DefaultMaxLocals = 256

// Options size the maps.
type Options struct {
	Queues    uint32 // XSKMAP entries: highest queue index + 1
	MaxLocals uint32 // local addresses the box can have
}

// Filter holds the maps every interface's program reads: the box's
// local IPv4 addresses and the port sets (TCP, UDP, ICMP id) of the NAT
// pools and DNAT rules. The daemon keeps them current.
type Filter struct {
	opts   Options
	locals *ebpf.Map
	ports  *ebpf.Map
}

// NewFilter creates the shared maps, empty.
func NewFilter(opts Options) (*Filter, error) {
	if opts.Queues == 0 {
		opts.Queues = DefaultQueues
	}
	if opts.MaxLocals == 0 {
		opts.MaxLocals = DefaultMaxLocals
	}
	locals, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "xnat_locals", Type: ebpf.Hash, KeySize: 4, ValueSize: 1, MaxEntries: opts.MaxLocals,
	})
	if err != nil {
		return nil, fmt.Errorf("xdpprog: creating the local address map: %w", err)
	}
	ports, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "xnat_ports", Type: ebpf.Array, KeySize: 4, ValueSize: PortSetBytes, MaxEntries: numProtos,
	})
	if err != nil {
		locals.Close()
		return nil, fmt.Errorf("xdpprog: creating the port set map: %w", err)
	}
	return &Filter{opts: opts, locals: locals, ports: ports}, nil
}

// Close releases the maps (programs loaded from the Filter keep their
// own references).
func (f *Filter) Close() error {
	if f.locals == nil {
		return nil
	}
	err := errors.Join(f.locals.Close(), f.ports.Close())
	f.locals, f.ports = nil, nil
	return err
}

// SetLocals makes addrs (IPv4, as 4 bytes in network order) the box's
// local addresses: it adds the new ones, then removes the others, so a
// packet to an address in both the old and the new set never sees it
// missing.
func (f *Filter) SetLocals(addrs [][4]byte) error {
	if f.locals == nil {
		return ErrClosed
	}
	if uint32(len(addrs)) > f.opts.MaxLocals {
		return fmt.Errorf("xdpprog: %d local addresses, map holds %d", len(addrs), f.opts.MaxLocals)
	}
	want := make(map[[4]byte]bool, len(addrs))
	for _, a := range addrs {
		want[a] = true
		if err := f.locals.Put(a, uint8(1)); err != nil {
			return fmt.Errorf("xdpprog: adding local address %v: %w", a, err)
		}
	}
	var stale [][4]byte
	var k [4]byte
	var v uint8
	it := f.locals.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("xdpprog: listing local addresses: %w", err)
	}
	for _, k := range stale {
		if err := f.locals.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("xdpprog: removing local address %v: %w", k, err)
		}
	}
	return nil
}

// Proto names a port set.
type Proto uint8

const (
	TCP  Proto = protoTCP
	UDP  Proto = protoUDP
	ICMP Proto = protoICMP // echo identifiers
)

// PortSet is a set of ports (or ICMP ids): bit p&7 of byte p>>3.
type PortSet [PortSetBytes]byte

// Add adds port p.
func (s *PortSet) Add(p uint16) { s[p>>3] |= 1 << (p & 7) }

// AddRange adds ports lo..hi inclusive.
func (s *PortSet) AddRange(lo, hi uint16) {
	for p := uint32(lo); p <= uint32(hi); p++ {
		s.Add(uint16(p))
	}
}

// Has reports whether p is in the set.
func (s *PortSet) Has(p uint16) bool { return s[p>>3]&(1<<(p&7)) != 0 }

// SetPorts replaces the set of a protocol. A program reading the set
// during the update sees each port either in the old or the new state.
func (f *Filter) SetPorts(proto Proto, set *PortSet) error {
	if f.ports == nil {
		return ErrClosed
	}
	if proto >= numProtos {
		return fmt.Errorf("xdpprog: unknown protocol index %d", proto)
	}
	if err := f.ports.Put(uint32(proto), set[:]); err != nil {
		return fmt.Errorf("xdpprog: setting port set %d: %w", proto, err)
	}
	return nil
}

// AttachMode is how a program is attached.
type AttachMode uint8

const (
	// AttachAuto tries native (driver) XDP, then generic.
	AttachAuto AttachMode = iota
	// AttachNative is driver-mode XDP.
	AttachNative
	// AttachGeneric is generic (SKB) XDP, which every device has.
	AttachGeneric
)

func (m AttachMode) String() string {
	switch m {
	case AttachAuto:
		return "auto"
	case AttachNative:
		return "native"
	case AttachGeneric:
		return "generic"
	}
	return fmt.Sprintf("AttachMode(%d)", uint8(m))
}

// Program is the XDP program of one interface with its own XSKMAP
// (queue → socket) and counters, reading the Filter's shared maps.
type Program struct {
	prog     *ebpf.Program
	xsks     *ebpf.Map
	counters *ebpf.Map
	link     link.Link
	ifindex  int
	mode     AttachMode
	replaced uint32 // id of a leftover program replaced at attach, 0 if none
	ns       vnetns.NsHandle
}

// Load loads a program instance for one interface.
func (f *Filter) Load() (*Program, error) {
	if f.locals == nil {
		return nil, ErrClosed
	}
	xsks, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "xnat_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: f.opts.Queues,
	})
	if err != nil {
		return nil, fmt.Errorf("xdpprog: creating the XSKMAP: %w", err)
	}
	counters, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "xnat_counters", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: NumCounters,
	})
	if err != nil {
		xsks.Close()
		return nil, fmt.Errorf("xdpprog: creating the counters: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "xnat_xdp",
		Type:         ebpf.XDP,
		License:      "Dual BSD/GPL",
		Instructions: instructions(xsks, counters, f.locals, f.ports),
	})
	if err != nil {
		xsks.Close()
		counters.Close()
		return nil, fmt.Errorf("xdpprog: loading the program: %w", err)
	}
	return &Program{prog: prog, xsks: xsks, counters: counters}, nil
}

// Attach attaches the program to ifindex through a BPF link, in native
// mode or, with AttachAuto, in generic mode if the driver refuses native.
// A program left on the interface by an earlier run (attached through
// netlink, as BPF links die with their process) is detached first; a
// program held by another live process's BPF link makes Attach fail with
// ErrBusy. The mode obtained is returned (and by Mode). It must run in
// the network namespace of the interface.
func (p *Program) Attach(ifindex int, mode AttachMode) (AttachMode, error) {
	if p.prog == nil {
		return 0, ErrClosed
	}
	if p.link != nil {
		return 0, fmt.Errorf("xdpprog: already attached to ifindex %d", p.ifindex)
	}
	replaced, err := removeLeftover(ifindex)
	if err != nil {
		return 0, err
	}
	var tries []AttachMode
	switch mode {
	case AttachAuto:
		tries = []AttachMode{AttachNative, AttachGeneric}
	case AttachNative, AttachGeneric:
		tries = []AttachMode{mode}
	default:
		return 0, fmt.Errorf("xdpprog: attach mode %v", mode)
	}
	var errs []error
	for _, m := range tries {
		flags := link.XDPDriverMode
		if m == AttachGeneric {
			flags = link.XDPGenericMode
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: p.prog, Interface: ifindex, Flags: flags})
		if err == nil {
			ns, nerr := vnetns.Get()
			if nerr != nil {
				l.Close()
				return 0, fmt.Errorf("xdpprog: current network namespace: %w", nerr)
			}
			p.link, p.ifindex, p.mode, p.replaced, p.ns = l, ifindex, m, replaced, ns
			return m, nil
		}
		if errors.Is(err, unix.EBUSY) {
			return 0, fmt.Errorf("%w: ifindex %d: %w", ErrBusy, ifindex, err)
		}
		errs = append(errs, fmt.Errorf("%v: %w", m, err))
	}
	return 0, fmt.Errorf("%w to ifindex %d: %w", ErrAttach, ifindex, errors.Join(errs...))
}

// removeLeftover detaches a program attached through netlink to
// ifindex and returns its id (0 if there was none).
func removeLeftover(ifindex int) (uint32, error) {
	// netlink's package functions open a socket per request, in the
	// calling thread's namespace.
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return 0, fmt.Errorf("xdpprog: interface %d: %w", ifindex, err)
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		return 0, nil
	}
	id := x.ProgId
	var flags []int
	switch x.AttachMode {
	case xdpAttachedDrv:
		flags = []int{unix.XDP_FLAGS_DRV_MODE}
	case xdpAttachedSKB:
		flags = []int{unix.XDP_FLAGS_SKB_MODE}
	case xdpAttachedHW:
		flags = []int{unix.XDP_FLAGS_HW_MODE}
	default:
		flags = []int{unix.XDP_FLAGS_DRV_MODE, unix.XDP_FLAGS_SKB_MODE, unix.XDP_FLAGS_HW_MODE}
	}
	for _, fl := range flags {
		if err := netlink.LinkSetXdpFdWithFlags(l, -1, fl); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return 0, fmt.Errorf("%w: ifindex %d, program id %d: %w", ErrBusy, ifindex, id, err)
			}
			if x.AttachMode != xdpAttachedMulti {
				return 0, fmt.Errorf("xdpprog: detaching leftover program %d from ifindex %d: %w", id, ifindex, err)
			}
		}
	}
	return id, nil
}

// IFLA_XDP_ATTACHED values.
const (
	xdpAttachedDrv   = 1
	xdpAttachedSKB   = 2
	xdpAttachedHW    = 3
	xdpAttachedMulti = 4
)

// Mode is the attach mode obtained, or AttachAuto before Attach.
func (p *Program) Mode() AttachMode { return p.mode }

// Replaced is the id of the leftover program Attach replaced, 0 if none.
func (p *Program) Replaced() uint32 { return p.replaced }

// ID is the kernel's id of the loaded program.
func (p *Program) ID() (uint32, error) {
	if p.prog == nil {
		return 0, ErrClosed
	}
	info, err := p.prog.Info()
	if err != nil {
		return 0, fmt.Errorf("xdpprog: program info: %w", err)
	}
	id, _ := info.ID()
	return uint32(id), nil
}

// Register makes the socket fd the receiver of the queue's redirected
// packets. Closing the socket removes it from the map.
func (p *Program) Register(queue uint32, fd int) error {
	if p.xsks == nil {
		return ErrClosed
	}
	if err := p.xsks.Put(queue, uint32(fd)); err != nil {
		return fmt.Errorf("xdpprog: registering socket for queue %d: %w", queue, err)
	}
	return nil
}

// Unregister removes the queue's socket: its packets are passed to the
// kernel.
func (p *Program) Unregister(queue uint32) error {
	if p.xsks == nil {
		return ErrClosed
	}
	if err := p.xsks.Delete(queue); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("xdpprog: unregistering queue %d: %w", queue, err)
	}
	return nil
}

// Stats are the program's counters summed over CPUs.
type Stats struct {
	Counters [NumCounters]uint64
}

// Redirected counts packets delivered to an AF_XDP socket.
func (s Stats) Redirected() uint64 {
	return s.Counters[CtrToXnatForward] + s.Counters[CtrToXnatLocal] - s.Counters[CtrRedirectFailed]
}

// Passed counts packets passed to the kernel, for any reason.
func (s Stats) Passed() uint64 {
	return s.Counters[CtrRedirectFailed] + s.Counters[CtrPassNotIPv4] + s.Counters[CtrPassLocal] + s.Counters[CtrPassMalformed]
}

// RedirectFailed counts packets meant for xnat that found no socket on
// their queue (and were passed).
func (s Stats) RedirectFailed() uint64 { return s.Counters[CtrRedirectFailed] }

// Stats reads the per-CPU counters.
func (p *Program) Stats() (Stats, error) {
	var st Stats
	if p.counters == nil {
		return st, ErrClosed
	}
	var per []uint64
	for i := range st.Counters {
		if err := p.counters.Lookup(uint32(i), &per); err != nil {
			return st, fmt.Errorf("xdpprog: reading counter %d: %w", i, err)
		}
		for _, v := range per {
			st.Counters[i] += v
		}
	}
	return st, nil
}

// Run runs the program once on frame with BPF_PROG_TEST_RUN (queue 0 of
// a dummy device) and returns its verdict. It is for tests and
// diagnostics.
func (p *Program) Run(frame []byte) (uint32, error) {
	if p.prog == nil {
		return 0, ErrClosed
	}
	return p.prog.Run(&ebpf.RunOptions{Data: frame})
}

// detachTimeout bounds how long Close waits for the interface to show no
// program after the link is closed.
const detachTimeout = 2 * time.Second

// Close detaches the program (closing its BPF link) and releases it and
// its maps. It waits at most two seconds for the kernel to report the
// interface without the program; it never hangs.
func (p *Program) Close() error {
	var errs []error
	if p.link != nil {
		if err := p.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("xdpprog: detaching from ifindex %d: %w", p.ifindex, err))
		} else if err := waitDetached(p.ns, p.ifindex, detachTimeout); err != nil {
			errs = append(errs, err)
		}
		p.link = nil
		p.ns.Close()
	}
	for _, c := range []interface{ Close() error }{p.prog, p.xsks, p.counters} {
		if c != nil {
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	p.prog, p.xsks, p.counters = nil, nil, nil
	return errors.Join(errs...)
}

func waitDetached(ns vnetns.NsHandle, ifindex int, timeout time.Duration) error {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("xdpprog: netlink in the interface's namespace: %w", err)
	}
	defer h.Close()
	deadline := time.Now().Add(timeout)
	for {
		l, err := h.LinkByIndex(ifindex)
		if err != nil {
			// The interface is gone, and the program with it.
			return nil
		}
		if x := l.Attrs().Xdp; x == nil || !x.Attached {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("xdpprog: ifindex %d still shows an XDP program %v after detaching", ifindex, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
