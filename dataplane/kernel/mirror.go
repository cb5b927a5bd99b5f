package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"xnat/dataplane/topo"
)

// ErrClosed is returned by a closed Mirror.
var ErrClosed = errors.New("kernel: mirror closed")

// DefaultDebounce is how long the mirror waits after a change for more
// changes before it builds a snapshot.
const DefaultDebounce = 20 * time.Millisecond

// Options configure a Mirror.
type Options struct {
	// Namespace scopes the mirror to a network namespace; nil means the
	// namespace of the thread calling Start.
	Namespace *vnetns.NsHandle
	// OnChange is called with every new snapshot (not with one equal to
	// the previous), one call at a time, from the mirror's goroutine.
	// The snapshot is immutable and may be kept.
	OnChange func(*topo.Snapshot)
	// OnNeigh is called with every IPv4 neighbour change the kernel
	// notifies (present false: deleted), at once and one at a time, from
	// the mirror's goroutine, in order with OnChange. A neighbour change
	// makes no dump and no snapshot: each snapshot still lists the
	// neighbours as its dump found them. Optional.
	OnNeigh func(n topo.Neigh, present bool)
	// OnError is told of subscription failures and failed dumps; the
	// mirror resubscribes and dumps again by itself. Optional.
	OnError func(error)
	// Debounce is the quiet time after a change before a snapshot is
	// built (changes come in bursts); 0 means DefaultDebounce. A burst
	// longer than ten times this still yields a snapshot every ten
	// debounce periods.
	Debounce time.Duration
}

// Mirror keeps a snapshot of the kernel's links, IPv4 addresses,
// main-table IPv4 routes and IPv4 neighbours, current through netlink
// subscriptions.
type Mirror struct {
	opts    Options
	ns      vnetns.NsHandle
	h       *netlink.Handle
	snap    atomic.Pointer[topo.Snapshot]
	stop    chan struct{}
	done    chan struct{}
	fault   chan error // tests inject a subscription failure here
	once    sync.Once
	resyncs atomic.Uint64
	dumps   atomic.Uint64
	// pubMu orders publications: the mirror's goroutine's and Refresh's.
	pubMu sync.Mutex
}

// Start dumps the kernel's state, subscribes to its changes and returns
// once the first snapshot is built (and given to OnChange).
func Start(opts Options) (*Mirror, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	var ns vnetns.NsHandle
	var err error
	if opts.Namespace != nil {
		ns, err = vnetns.GetFromPath(fmt.Sprintf("/proc/self/fd/%d", int(*opts.Namespace)))
	} else {
		ns, err = vnetns.Get()
	}
	if err != nil {
		return nil, fmt.Errorf("kernel: network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("kernel: netlink handle: %w", err)
	}
	m := &Mirror{opts: opts, ns: ns, h: h, stop: make(chan struct{}), done: make(chan struct{}), fault: make(chan error)}
	subs, err := m.subscribe()
	if err != nil {
		h.Close()
		ns.Close()
		return nil, err
	}
	snap, err := Dump(h)
	if err != nil {
		subs.close()
		h.Close()
		ns.Close()
		return nil, err
	}
	m.dumps.Add(1)
	m.publish(snap, false)
	go m.run(subs)
	return m, nil
}

// Refresh dumps the kernel's state now and publishes it (OnChange), even
// when it equals the last snapshot, without waiting for the
// notifications' debounce: for a caller that must act on what the kernel
// has at this moment (an HA commit right after keepalived added the
// addresses; interfaces just attached again, whose environment and
// neighbours must be rebuilt against the new sockets).
func (m *Mirror) Refresh() error {
	select {
	case <-m.stop:
		return ErrClosed
	default:
	}
	snap, err := Dump(m.h)
	if err != nil {
		return err
	}
	m.dumps.Add(1)
	m.publish(snap, true)
	return nil
}

// Snapshot returns the latest snapshot.
func (m *Mirror) Snapshot() *topo.Snapshot { return m.snap.Load() }

// Resyncs counts resubscriptions after subscription errors.
func (m *Mirror) Resyncs() uint64 { return m.resyncs.Load() }

// Dumps counts full dumps made.
func (m *Mirror) Dumps() uint64 { return m.dumps.Load() }

// Close stops the mirror and waits for its goroutine; OnChange is not
// called after Close returns.
func (m *Mirror) Close() error {
	m.once.Do(func() {
		close(m.stop)
		<-m.done
		// A Refresh publishing now finishes before Close returns.
		m.pubMu.Lock()
		//lint:ignore SA2001 the empty critical section waits for an in-flight publish
		m.pubMu.Unlock()
		m.h.Close()
		m.ns.Close()
	})
	return nil
}

// Resolve asks the kernel to resolve ip on ifindex (see ResolveNeighbour),
// in the mirror's namespace.
func (m *Mirror) Resolve(ifindex int, ip uint32) error {
	select {
	case <-m.stop:
		return ErrClosed
	default:
	}
	return ResolveNeighbour(m.h, ifindex, ip)
}

// publish stores a new snapshot and calls OnChange with it; one equal
// to the last is passed over unless forced (after a resynchronisation,
// whose OnChange lets the caller catch up with neighbours it may have
// missed).
func (m *Mirror) publish(s *topo.Snapshot, force bool) {
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	select {
	case <-m.stop:
		return // closed: OnChange is not called after Close
	default:
	}
	if prev := m.snap.Load(); !force && prev != nil && reflect.DeepEqual(prev, s) {
		return
	}
	m.snap.Store(s)
	if m.opts.OnChange != nil {
		m.opts.OnChange(s)
	}
}

func (m *Mirror) report(err error) {
	if m.opts.OnError != nil {
		m.opts.OnError(err)
	}
}

type subscriptions struct {
	done   chan struct{}
	links  chan netlink.LinkUpdate
	addrs  chan netlink.AddrUpdate
	routes chan netlink.RouteUpdate
	neighs chan netlink.NeighUpdate
	errs   chan error
}

func (s *subscriptions) close() { close(s.done) }

func (m *Mirror) subscribe() (*subscriptions, error) {
	s := &subscriptions{
		done:   make(chan struct{}),
		links:  make(chan netlink.LinkUpdate, 64),
		addrs:  make(chan netlink.AddrUpdate, 64),
		routes: make(chan netlink.RouteUpdate, 64),
		neighs: make(chan netlink.NeighUpdate, 64),
		errs:   make(chan error, 4),
	}
	cb := func(err error) {
		select {
		case s.errs <- err:
		default:
		}
	}
	ns := m.ns
	const rcvbuf = 1 << 20
	err := netlink.LinkSubscribeWithOptions(s.links, s.done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: cb, ReceiveBufferSize: rcvbuf})
	if err == nil {
		err = netlink.AddrSubscribeWithOptions(s.addrs, s.done, netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: cb, ReceiveBufferSize: rcvbuf})
	}
	if err == nil {
		err = netlink.RouteSubscribeWithOptions(s.routes, s.done, netlink.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: cb, ReceiveBufferSize: rcvbuf})
	}
	if err == nil {
		err = netlink.NeighSubscribeWithOptions(s.neighs, s.done, netlink.NeighSubscribeOptions{Namespace: &ns, ErrorCallback: cb, ReceiveBufferSize: rcvbuf})
	}
	if err != nil {
		s.close()
		return nil, fmt.Errorf("kernel: netlink subscription: %w", err)
	}
	return s, nil
}

// run coalesces change notifications and rebuilds the snapshot from a
// full dump after each burst; on a subscription error it resubscribes
// and dumps again (events may have been lost).
func (m *Mirror) run(s *subscriptions) {
	defer close(m.done)
	defer func() { s.close() }()
	var timer *time.Timer
	var fire <-chan time.Time
	var burstStart time.Time
	forced := false // the next snapshot follows a resynchronisation
	changed := func() {
		now := time.Now()
		if fire == nil {
			burstStart = now
			timer = time.NewTimer(m.opts.Debounce)
			fire = timer.C
			return
		}
		if now.Sub(burstStart) < 10*m.opts.Debounce {
			timer.Reset(m.opts.Debounce)
		}
	}
	resync := func(cause error) {
		// Counted before it is reported, so that whoever hears of a
		// resync also sees it in Resyncs.
		m.resyncs.Add(1)
		forced = true
		m.report(fmt.Errorf("kernel: subscription failed, resynchronising: %w", cause))
		s.close()
		for {
			ns, err := m.subscribe()
			if err == nil {
				s = ns
				break
			}
			m.report(err)
			select {
			case <-m.stop:
				s = &subscriptions{done: make(chan struct{})}
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		changed()
	}
	for {
		select {
		case <-m.stop:
			if timer != nil {
				timer.Stop()
			}
			return
		case _, ok := <-s.links:
			if !ok {
				resync(errors.New("link subscription closed"))
				continue
			}
			changed()
		case u, ok := <-s.addrs:
			if !ok {
				resync(errors.New("address subscription closed"))
				continue
			}
			if u.LinkAddress.IP.To4() != nil {
				changed()
			}
		case u, ok := <-s.routes:
			if !ok {
				resync(errors.New("route subscription closed"))
				continue
			}
			if u.Family == 0 || u.Family == netlink.FAMILY_V4 || (u.Dst != nil && u.Dst.IP.To4() != nil) {
				changed()
			}
		case u, ok := <-s.neighs:
			if !ok {
				resync(errors.New("neighbour subscription closed"))
				continue
			}
			if u.Family == netlink.FAMILY_V4 || u.IP.To4() != nil {
				if n, ok := neighOf(&u.Neigh); ok && m.opts.OnNeigh != nil {
					m.opts.OnNeigh(n, u.Type != unix.RTM_DELNEIGH)
				}
			}
		case err := <-s.errs:
			resync(err)
		case err := <-m.fault:
			resync(err)
		case <-fire:
			fire = nil
			snap, err := Dump(m.h)
			m.dumps.Add(1)
			if err != nil {
				m.report(err)
				changed() // try again after another debounce period
				continue
			}
			m.publish(snap, forced)
			forced = false
		}
	}
}

// Dump builds a snapshot from the kernel through h.
func Dump(h *netlink.Handle) (*topo.Snapshot, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("kernel: listing links: %w", err)
	}
	s := &topo.Snapshot{}
	for _, l := range links {
		a := l.Attrs()
		ifc := topo.Iface{
			Index: a.Index,
			Name:  a.Name,
			MTU:   a.MTU,
			Up:    a.RawFlags&unix.IFF_UP != 0 && a.RawFlags&unix.IFF_LOWER_UP != 0,
		}
		if len(a.HardwareAddr) == 6 {
			copy(ifc.MAC[:], a.HardwareAddr)
		}
		s.Ifaces = append(s.Ifaces, ifc)
	}
	slices.SortFunc(s.Ifaces, func(a, b topo.Iface) int { return a.Index - b.Index })

	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("kernel: listing addresses: %w", err)
	}
	// Primary addresses first, then secondaries, each in kernel order.
	for _, secondary := range []bool{false, true} {
		for _, a := range addrs {
			ip := a.IP.To4()
			if ip == nil || (a.Flags&unix.IFA_F_SECONDARY != 0) != secondary {
				continue
			}
			ifc, ok := s.Iface(a.LinkIndex)
			if !ok {
				continue
			}
			ones, _ := a.Mask.Size()
			ifc.Addrs = append(ifc.Addrs, topo.Prefix{Addr: ip4(ip), Len: uint8(ones)})
		}
	}

	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("kernel: listing routes: %w", err)
	}
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST {
			continue
		}
		dst := topo.Prefix{}
		if r.Dst != nil {
			ip := r.Dst.IP.To4()
			if ip == nil {
				continue
			}
			ones, _ := r.Dst.Mask.Size()
			dst = topo.Prefix{Addr: ip4(ip), Len: uint8(ones)}
		}
		base := topo.Route{Dst: dst, Metric: r.Priority, Src: ip4(r.Src.To4())}
		if len(r.MultiPath) > 0 {
			// One route per next hop of a multipath route.
			for _, nh := range r.MultiPath {
				rt := base
				rt.IfIndex = nh.LinkIndex
				rt.Gateway = ip4(nh.Gw.To4())
				s.Routes = append(s.Routes, rt)
			}
			continue
		}
		base.IfIndex = r.LinkIndex
		base.Gateway = ip4(r.Gw.To4())
		s.Routes = append(s.Routes, base)
	}
	slices.SortFunc(s.Routes, func(a, b topo.Route) int {
		switch {
		case a.Dst.Len != b.Dst.Len:
			return int(b.Dst.Len) - int(a.Dst.Len)
		case a.Dst.Addr != b.Dst.Addr:
			return cmpU32(a.Dst.Addr, b.Dst.Addr)
		case a.Metric != b.Metric:
			return a.Metric - b.Metric
		case a.IfIndex != b.IfIndex:
			return a.IfIndex - b.IfIndex
		}
		return cmpU32(a.Gateway, b.Gateway)
	})

	neighs, err := h.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("kernel: listing neighbours: %w", err)
	}
	for i := range neighs {
		if e, ok := neighOf(&neighs[i]); ok {
			s.Neighs = append(s.Neighs, e)
		}
	}
	slices.SortFunc(s.Neighs, func(a, b topo.Neigh) int {
		if a.IfIndex != b.IfIndex {
			return a.IfIndex - b.IfIndex
		}
		return cmpU32(a.IP, b.IP)
	})
	return s, nil
}

// neighOf converts an IPv4 neighbour entry: NeighValid with a usable
// link-layer address (REACHABLE, STALE, DELAY, PROBE, PERMANENT, NOARP),
// NeighFailed after failed resolution, else NeighIncomplete. A NOARP
// entry without an Ethernet address (a point-to-point link) is left out.
func neighOf(n *netlink.Neigh) (topo.Neigh, bool) {
	const valid = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP
	ip := n.IP.To4()
	if ip == nil || n.State == netlink.NUD_NOARP && len(n.HardwareAddr) != 6 {
		return topo.Neigh{}, false
	}
	e := topo.Neigh{IfIndex: n.LinkIndex, IP: ip4(ip), State: topo.NeighIncomplete}
	switch {
	case n.State&valid != 0 && len(n.HardwareAddr) == 6:
		e.State = topo.NeighValid
		copy(e.MAC[:], n.HardwareAddr)
	case n.State&netlink.NUD_FAILED != 0:
		e.State = topo.NeighFailed
	}
	return e, true
}

func ip4(ip net.IP) uint32 {
	if len(ip) != 4 {
		return 0
	}
	return binary.BigEndian.Uint32(ip)
}

func cmpU32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ResolveNeighbour asks the kernel to resolve ip (big-endian value) on
// ifindex, as `ip neigh replace <ip> dev <if> use` would: an RTM_NEWNEIGH
// with NTF_USE creates the entry if needed and triggers the kernel's
// resolution (neigh_event_send) — an ARP request — without setting a
// state or link-layer address. The kernel then owns the entry: the
// result arrives through the neighbour subscription. It returns at once.
func ResolveNeighbour(h *netlink.Handle, ifindex int, ip uint32) error {
	addr := make(net.IP, 4)
	binary.BigEndian.PutUint32(addr, ip)
	err := h.NeighSet(&netlink.Neigh{
		LinkIndex: ifindex,
		Family:    netlink.FAMILY_V4,
		Flags:     netlink.NTF_USE,
		IP:        addr,
	})
	if err != nil {
		return fmt.Errorf("kernel: resolving %v on ifindex %d: %w", addr, ifindex, err)
	}
	return nil
}
