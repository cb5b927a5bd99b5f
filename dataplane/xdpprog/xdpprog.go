package xdpprog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

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
	// ErrForeign: the interface runs another program's XDP program and
	// replacing it was not asked for.
	ErrForeign = errors.New("xdpprog: interface runs another program's XDP program")
	// ErrClosed: the Program or Filter was closed.
	ErrClosed = errors.New("xdpprog: closed")
	// ErrAttach: neither native nor generic XDP could be attached.
	ErrAttach = errors.New("xdpprog: cannot attach XDP program")
	// ErrGroups: more DNAT steering groups than a program checks.
	ErrGroups = errors.New("xdpprog: too many DNAT steering groups")
)

// ProgramName is the name xnat's XDP program is loaded with.
const ProgramName = "xnat_xdp"

// DefaultQueues is the XSKMAP size used when Options.Queues is 0.
const DefaultQueues = 64

// DefaultMaxLocals is the local-address map size used when
// Options.MaxLocals is 0.
const DefaultMaxLocals = 256

// DefaultMaxSlots is the number of use-count slots used when
// Options.MaxSlots is 0.
const DefaultMaxSlots = 16

// Options size the maps.
type Options struct {
	Queues    uint32 // XSKMAP entries: highest queue index + 1
	MaxLocals uint32 // local addresses the box can have
	// MaxSlots is how many of the box's addresses can be external
	// addresses of xnat's connections with their ports counted one by
	// one (SlotBytes of memory each).
	MaxSlots uint32
}

// Filter holds the maps every interface's program reads: the box's local
// IPv4 addresses with their slots, and the use counts of the slots. The
// daemon keeps the addresses current; the port allocators write the
// counts through UseCounts.
type Filter struct {
	opts   Options
	locals *ebpf.Map
	uses   *ebpf.Map
	mem    []byte // the use counts, mapped
}

// NewFilter creates the shared maps, empty.
func NewFilter(opts Options) (*Filter, error) {
	if opts.Queues == 0 {
		opts.Queues = DefaultQueues
	}
	if opts.MaxLocals == 0 {
		opts.MaxLocals = DefaultMaxLocals
	}
	if opts.MaxSlots == 0 {
		opts.MaxSlots = DefaultMaxSlots
	}
	if opts.MaxSlots >= SlotAll {
		return nil, fmt.Errorf("xdpprog: %d slots", opts.MaxSlots)
	}
	locals, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "xnat_locals", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: opts.MaxLocals,
	})
	if err != nil {
		return nil, fmt.Errorf("xdpprog: creating the local address map: %w", err)
	}
	uses, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "xnat_uses", Type: ebpf.Array, KeySize: 4, ValueSize: SlotBytes, MaxEntries: opts.MaxSlots,
		Flags: unix.BPF_F_MMAPABLE,
	})
	if err != nil {
		locals.Close()
		return nil, fmt.Errorf("xdpprog: creating the use counts: %w", err)
	}
	mem, err := unix.Mmap(uses.FD(), 0, int(opts.MaxSlots)*SlotBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		locals.Close()
		uses.Close()
		return nil, fmt.Errorf("xdpprog: mapping the use counts: %w", err)
	}
	return &Filter{opts: opts, locals: locals, uses: uses, mem: mem}, nil
}

// Close releases the maps (programs loaded from the Filter keep their
// own references). UseCounts' memory must not be used afterwards.
func (f *Filter) Close() error {
	if f.locals == nil {
		return nil
	}
	err := errors.Join(unix.Munmap(f.mem), f.locals.Close(), f.uses.Close())
	f.locals, f.uses, f.mem = nil, nil, nil
	return err
}

// Slots is how many use-count slots the Filter has.
func (f *Filter) Slots() int { return int(f.opts.MaxSlots) }

// UseCounts returns the use counts, mapped into this process: per slot
// SlotBytes, per protocol (TCP, UDP, ICMP echo id) ProtoCountBytes, per
// port a 16-bit count in host byte order, as 32-bit words (two ports a
// word, the even port in the word's first two bytes) so that they can be
// changed with sync/atomic. The program takes a packet to a local
// address whose slot counts its port as not 0. nil after Close.
func (f *Filter) UseCounts() []uint32 {
	if f.mem == nil {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&f.mem[0])), len(f.mem)/4)
}

// Local is one of the box's addresses with its slot (NoSlot, SlotAll, or
// below Slots).
type Local struct {
	Addr [4]byte // network order
	Slot uint32
}

// SetLocals makes locals the box's local addresses: it adds or updates
// the new ones, then removes the others, so a packet to an address in
// both the old and the new set never sees it missing.
func (f *Filter) SetLocals(locals []Local) error {
	if f.locals == nil {
		return ErrClosed
	}
	if uint32(len(locals)) > f.opts.MaxLocals {
		return fmt.Errorf("xdpprog: %d local addresses, map holds %d", len(locals), f.opts.MaxLocals)
	}
	want := make(map[[4]byte]bool, len(locals))
	for _, l := range locals {
		if l.Slot >= f.opts.MaxSlots && l.Slot != NoSlot && l.Slot != SlotAll && l.Slot != SlotBroadcast {
			return fmt.Errorf("xdpprog: local address %v: slot %d of %d", l.Addr, l.Slot, f.opts.MaxSlots)
		}
		want[l.Addr] = true
		if err := f.locals.Put(l.Addr, l.Slot); err != nil {
			return fmt.Errorf("xdpprog: adding local address %v: %w", l.Addr, err)
		}
	}
	var stale [][4]byte
	var k [4]byte
	var v uint32
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

// Proto names a protocol of the use counts.
type Proto uint8

const (
	TCP  Proto = protoTCP
	UDP  Proto = protoUDP
	ICMP Proto = protoICMP // echo identifiers
)

// PortSet is a set of ports: bit p&7 of byte p>>3.
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

// Group is a DNAT steering group of one interface: packets arriving on
// it for a local address in Addr/Mask (or outside it, with Invert), of
// protocol Proto (0: any), for a port in Ports (nil: any port, and
// packets without ports) go to xnat.
type Group struct {
	Addr, Mask uint32 // host order
	Invert     bool
	Proto      uint8
	Ports      *PortSet
}

// AttachMode is how a program is attached.
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
// (queue → socket), DNAT steering groups and counters, reading the
// Filter's shared maps.
type Program struct {
	// mu guards the fields against Close: the methods may be called
	// from several goroutines, Close included.
	mu         sync.RWMutex
	prog       *ebpf.Program
	xsks       *ebpf.Map
	counters   *ebpf.Map
	dnat       *ebpf.Map // two copies of the groups
	dnatActive *ebpf.Map // which copy the program reads
	active     uint32
	link       link.Link
	ifindex    int
	mode       AttachMode
	replaced   uint32 // id of a program replaced at attach, 0 if none
	ns         vnetns.NsHandle
	handed     bool // the link was handed to another process (HandedOver)
}

// Load loads a program instance for one interface, with no DNAT groups.
func (f *Filter) Load() (*Program, error) {
	if f.locals == nil {
		return nil, ErrClosed
	}
	p := &Program{}
	var err error
	specs := []struct {
		m    **ebpf.Map
		spec ebpf.MapSpec
	}{
		{&p.xsks, ebpf.MapSpec{Name: "xnat_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: f.opts.Queues}},
		{&p.counters, ebpf.MapSpec{Name: "xnat_counters", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: NumCounters}},
		{&p.dnat, ebpf.MapSpec{Name: "xnat_dnat", Type: ebpf.Array, KeySize: 4, ValueSize: groupsBytes, MaxEntries: 2}},
		{&p.dnatActive, ebpf.MapSpec{Name: "xnat_dnat_on", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}},
	}
	for _, s := range specs {
		if *s.m, err = ebpf.NewMap(&s.spec); err != nil {
			p.Close()
			return nil, fmt.Errorf("xdpprog: creating map %s: %w", s.spec.Name, err)
		}
	}
	p.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    ProgramName,
		Type:    ebpf.XDP,
		License: "Dual BSD/GPL",
		Instructions: instructions(maps{xsks: p.xsks, counters: p.counters, locals: f.locals, uses: f.uses,
			dnat: p.dnat, dnatActive: p.dnatActive}),
	})
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("xdpprog: loading the program: %w", err)
	}
	return p, nil
}

// SetDNAT makes groups the interface's DNAT steering groups (at most
// MaxDNATGroups). The program reads one copy while the other is written,
// then switches, so a packet sees either the old groups or the new ones.
func (p *Program) SetDNAT(groups []Group) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dnat == nil {
		return ErrClosed
	}
	if len(groups) > MaxDNATGroups {
		return fmt.Errorf("%w: %d (at most %d per interface)", ErrGroups, len(groups), MaxDNATGroups)
	}
	buf := make([]byte, groupsBytes)
	for i, g := range groups {
		h := buf[i*groupBytes:]
		binary.BigEndian.PutUint32(h[0:], g.Addr&g.Mask)
		binary.BigEndian.PutUint32(h[4:], g.Mask)
		flags := byte(groupUsed)
		if g.Invert {
			flags |= groupInvert
		}
		if g.Ports == nil {
			flags |= groupAllPorts
		} else {
			copy(h[groupHeader:groupBytes], g.Ports[:])
		}
		h[8], h[9] = flags, g.Proto
	}
	next := p.active ^ 1
	if err := p.dnat.Put(next, buf); err != nil {
		return fmt.Errorf("xdpprog: writing DNAT groups: %w", err)
	}
	if err := p.dnatActive.Put(uint32(0), next); err != nil {
		return fmt.Errorf("xdpprog: switching DNAT groups: %w", err)
	}
	p.active = next
	return nil
}

// Attach attaches the program to ifindex through a BPF link, in native
// mode or, with AttachAuto, in generic mode if the driver refuses native.
// A program already on the interface is left alone — Attach fails with
// ErrForeign — unless it is an xnat program left by an earlier run
// (attached through netlink: BPF links die with their process) or
// replace is set; a program held by another live process's BPF link
// makes Attach fail with ErrBusy either way. The mode obtained is
// returned (and by Mode). It must run in the network namespace of the
// interface.
func (p *Program) Attach(ifindex int, mode AttachMode, replace bool) (AttachMode, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prog == nil {
		return 0, ErrClosed
	}
	if p.link != nil {
		return 0, fmt.Errorf("xdpprog: already attached to ifindex %d", p.ifindex)
	}
	replaced, err := removeLeftover(ifindex, replace)
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

// Attached describes the XDP program an interface runs.
type Attached struct {
	ID   uint32
	Name string // "" when it cannot be read
	Mode AttachMode
}

// Query returns the XDP program attached to ifindex, if any (ok false
// when none). It must run in the network namespace of the interface.
func Query(ifindex int) (a Attached, ok bool, err error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return a, false, fmt.Errorf("xdpprog: interface %d: %w", ifindex, err)
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId == 0 {
		return a, false, nil
	}
	a.ID = x.ProgId
	switch x.AttachMode {
	case xdpAttachedDrv:
		a.Mode = AttachNative
	case xdpAttachedSKB:
		a.Mode = AttachGeneric
	}
	if prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId)); err == nil {
		if info, err := prog.Info(); err == nil {
			a.Name = info.Name
		}
		prog.Close()
	}
	return a, true, nil
}

// removeLeftover detaches a program attached through netlink to ifindex
// — an xnat program always, another only with replace — and returns its
// id (0 if there was none).
func removeLeftover(ifindex int, replace bool) (uint32, error) {
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
	if !replace {
		cur, ok, err := Query(ifindex)
		if err != nil {
			return 0, err
		}
		if ok && cur.Name != ProgramName {
			name := cur.Name
			if name == "" {
				name = "unnamed"
			}
			return 0, fmt.Errorf("%w: %s has XDP program %d (%s) attached", ErrForeign, l.Attrs().Name, id, name)
		}
	}
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

// Replaced is the id of the program Attach replaced, 0 if none.
func (p *Program) Replaced() uint32 { return p.replaced }

// ID is the kernel's id of the loaded program.
func (p *Program) ID() (uint32, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
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
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.xsks == nil {
		return ErrClosed
	}
	if err := p.xsks.Put(queue, uint32(fd)); err != nil {
		return fmt.Errorf("xdpprog: registering socket for queue %d: %w", queue, err)
	}
	return nil
}

// Unregister removes the queue's socket: the packets meant for xnat that
// arrive on the queue are dropped (and counted).
func (p *Program) Unregister(queue uint32) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
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
	return s.Counters[CtrPassNotIPv4] + s.Counters[CtrPassLocal] + s.Counters[CtrPassMalformed] + s.Counters[CtrPassBroadcast] + s.Counters[CtrPassVLAN]
}

// RedirectFailed counts packets meant for xnat that found no socket on
// their queue (and were dropped).
func (s Stats) RedirectFailed() uint64 { return s.Counters[CtrRedirectFailed] }

// Stats reads the per-CPU counters.
func (p *Program) Stats() (Stats, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
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
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.prog == nil {
		return 0, ErrClosed
	}
	return p.prog.Run(&ebpf.RunOptions{Data: frame})
}

// detachTimeout bounds how long Close waits for the interface to show no
// program after the link is closed.
const detachTimeout = 2 * time.Second

// Close detaches the program (closing its BPF link) and releases it and
// its maps; a link handed over (HandedOver) stays attached, held by the
// process it went to. It waits at most two seconds for the kernel to report the
// interface without the program; it never hangs.
func (p *Program) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	if p.link != nil {
		if err := p.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("xdpprog: detaching from ifindex %d: %w", p.ifindex, err))
		} else if p.handed {
			// Another process holds the link: the program stays.
		} else if err := waitDetached(p.ns, p.ifindex, detachTimeout); err != nil {
			errs = append(errs, err)
		}
		p.link = nil
		p.ns.Close()
	}
	if p.prog != nil {
		if err := p.prog.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, m := range []*ebpf.Map{p.xsks, p.counters, p.dnat, p.dnatActive} {
		if m != nil {
			if err := m.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	p.prog, p.xsks, p.counters, p.dnat, p.dnatActive = nil, nil, nil, nil, nil
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
