package portalloc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"xnat/flowtable"
)

// Slot values of addresses that count no ports one by one (as in package
// xdpprog's locals map).
const (
	// NoSlot: not one of the box's addresses, or none of xnat's.
	NoSlot = ^uint32(0)
	// SlotAll: one of the box's addresses whose every port the XDP
	// program gives xnat, because no slot was left for it.
	SlotAll = ^uint32(1)
)

// Layout of the use counts (dataplane/xdpprog's UseCounts): per slot,
// per protocol class (TCP, UDP, ICMP echo id), a 16-bit count per port,
// two to a 32-bit word, the even port first in memory.
const (
	classWords = 65536 / 2
	slotWords  = numClasses * classWords
)

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// Steering keeps the XDP program's use counts of the ports xnat holds on
// the box's own addresses: the program sends a packet for one of them to
// xnat only while its count is not 0, and leaves the rest to the kernel.
//
// The counts live in memory the XDP program reads (a BPF array map
// mapped into the process); a count is the number of holders of the
// port: every allocator of a dense pool (see Shared) with at least one
// connection on it (an allocator's own 0→1 and 1→0 transitions add and
// take one, with an atomic add on the word), and whoever else the daemon
// holds it for.
// Holders are fewer than 65536 — a dataplane has fewer pools than that,
// and a port belongs to one core's slice of a pool — so a 16-bit count
// never carries into its neighbour.
//
// Which address has which slot is set by the control plane (SetAddrs)
// and read by the allocators through an atomic pointer. An address must
// keep its slot as long as any of its counts is held: a holder gives
// back what it took by address, through the same table.
//
// A Steering also says which ports the kernel may give its own sockets
// (SetKernelPorts): a pool with one of the box's addresses is created
// without them (unless its addresses float: SetFloating), so that the
// box's own connections and xnat's never meet on a port.
type Steering struct {
	words  []uint32
	nslots int
	le     bool
	table  atomic.Pointer[slotTable]
	kernel atomic.Pointer[[]PortRange]
	// floating: pools keep the kernel's ports whether or not their
	// addresses are the box's (SetFloating).
	floating atomic.Bool
}

type slotTable struct {
	addrs []uint32
	slots []uint32
}

// ErrSteering is returned for use counts of the wrong size.
var ErrSteering = errors.New("portalloc: use counts")

// NewSteering keeps the use counts in words, slots slots of them.
func NewSteering(words []uint32, slots int) (*Steering, error) {
	if slots < 0 || len(words) != slots*slotWords {
		return nil, fmt.Errorf("%w: %d words for %d slots (want %d)", ErrSteering, len(words), slots, slots*slotWords)
	}
	s := &Steering{words: words, nslots: slots, le: binary.NativeEndian.Uint16([]byte{1, 0}) == 1}
	s.table.Store(&slotTable{})
	s.kernel.Store(&[]PortRange{})
	return s, nil
}

// SetAddrs sets the box's addresses that are external addresses of xnat's
// pools, with their slots (below the slot count, or SlotAll). Addresses
// not given have none.
func (s *Steering) SetAddrs(slots map[uint32]uint32) error {
	t := &slotTable{}
	for a, sl := range slots {
		if sl != SlotAll && sl >= uint32(s.nslots) {
			return fmt.Errorf("%w: address %s: slot %d of %d", ErrSteering, flowtable.FormatAddr(a), sl, s.nslots)
		}
		t.addrs = append(t.addrs, a)
		t.slots = append(t.slots, sl)
	}
	s.table.Store(t)
	return nil
}

// Slot returns an address's slot (NoSlot when it has none).
func (s *Steering) Slot(addr uint32) uint32 {
	t := s.table.Load()
	for i, a := range t.addrs {
		if a == addr {
			return t.slots[i]
		}
	}
	return NoSlot
}

// local reports whether any address of lo..hi is one of the box's that
// has a slot (or SlotAll).
func (s *Steering) local(lo, hi uint32) bool {
	for _, a := range s.table.Load().addrs {
		if a >= lo && a <= hi {
			return true
		}
	}
	return false
}

// SetKernelPorts sets the ports the kernel may pick for its own sockets
// (net.ipv4.ip_local_port_range less ip_local_reserved_ports). Pools
// created afterwards leave them out when they have one of the box's
// addresses; pools created before keep their ports.
func (s *Steering) SetKernelPorts(ranges []PortRange) {
	r := slices.Clone(ranges)
	s.kernel.Store(&r)
}

// SetFloating says that the pools' addresses move between boxes (an HA
// pair's NAT address, which keepalived gives the primary): pools created
// afterwards keep every port of their range whether or not their
// addresses are the box's at that moment. Both boxes, and an xnatd
// --takeover started while the box has the address as the xnatd it
// replaces that started before, split a pool alike and can take each
// other's connections with their ports; a connection keeps its source
// port on either box, so a segment that reaches the new primary before
// its commit gets the translation the peer gave it. The kernel's own
// sockets on such an address are kept off xnat's ports by reserving
// them (net.ipv4.ip_local_reserved_ports).
func (s *Steering) SetFloating(on bool) { s.floating.Store(on) }

// leaveKernelPorts reports whether a pool of lo..hi is created without
// the kernel's ports.
func (s *Steering) leaveKernelPorts(lo, hi uint32) bool {
	return !s.floating.Load() && s.local(lo, hi)
}

// KernelPorts returns what SetKernelPorts set.
func (s *Steering) KernelPorts() []PortRange { return slices.Clone(*s.kernel.Load()) }

func (s *Steering) word(slot uint32, cl int, port uint16) (*uint32, uint32) {
	shift := 16 * uint32(port&1)
	if !s.le {
		shift = 16 - shift
	}
	return &s.words[int(slot)*slotWords+cl*classWords+int(port>>1)], 1 << shift
}

// Hold adds a holder to (addr, proto, port): the XDP program gives its
// packets to xnat. It returns false, holding nothing, when the address
// has no slot, or is SlotAll (every port is xnat's there anyway), or the
// protocol has no ports.
func (s *Steering) Hold(addr uint32, proto uint8, port uint16) bool {
	cl := class(proto)
	if cl == classNone {
		return false
	}
	sl := s.Slot(addr)
	if sl >= uint32(s.nslots) {
		return false
	}
	w, d := s.word(sl, cl, port)
	atomic.AddUint32(w, d)
	return true
}

// Drop takes away a holder Hold added (it returned true).
func (s *Steering) Drop(addr uint32, proto uint8, port uint16) {
	cl := class(proto)
	sl := s.Slot(addr)
	if cl == classNone || sl >= uint32(s.nslots) {
		return
	}
	w, d := s.word(sl, cl, port)
	atomic.AddUint32(w, -d)
}

// Count returns the holders of (addr, proto, port).
func (s *Steering) Count(addr uint32, proto uint8, port uint16) int {
	cl := class(proto)
	sl := s.Slot(addr)
	if cl == classNone || sl >= uint32(s.nslots) {
		return 0
	}
	w, d := s.word(sl, cl, port)
	v := atomic.LoadUint32(w)
	if d == 1 {
		return int(v & 0xffff)
	}
	return int(v >> 16)
}

// SlotHeld reports whether any count of a slot is held.
func (s *Steering) SlotHeld(slot uint32) bool {
	if slot >= uint32(s.nslots) {
		return false
	}
	ws := s.words[int(slot)*slotWords:][:slotWords]
	for i := range ws {
		if atomic.LoadUint32(&ws[i]) != 0 {
			return true
		}
	}
	return false
}

// usable returns the ports of lo..hi outside the excluded ranges, as
// ranges in ascending order.
func usable(lo, hi uint16, exclude []PortRange) []PortRange {
	out := []PortRange{{lo, hi}}
	for _, x := range exclude {
		var next []PortRange
		for _, r := range out {
			if x.Hi < r.Lo || x.Lo > r.Hi {
				next = append(next, r)
				continue
			}
			if x.Lo > r.Lo {
				next = append(next, PortRange{r.Lo, x.Lo - 1})
			}
			if x.Hi < r.Hi {
				next = append(next, PortRange{x.Hi + 1, r.Hi})
			}
		}
		out = next
	}
	return out
}

// seg is a run of consecutive ports of an allocator's slice: ports
// port..port+n-1 at offsets off..off+n-1.
type seg struct{ port, off, n uint32 }

// split cuts the usable ports into cores slices of (nearly) equal size
// and returns core c's.
func split(ranges []PortRange, cores, c int) []seg {
	var total uint64
	for _, r := range ranges {
		total += uint64(r.Hi) - uint64(r.Lo) + 1
	}
	from := total * uint64(c) / uint64(cores)
	to := total * uint64(c+1) / uint64(cores)
	var out []seg
	var pos uint64 // ports of the ranges before r
	for _, r := range ranges {
		n := uint64(r.Hi) - uint64(r.Lo) + 1
		lo, hi := max(from, pos), min(to, pos+n)
		if lo < hi {
			out = append(out, seg{port: uint32(r.Lo) + uint32(lo-pos), off: uint32(lo - from), n: uint32(hi - lo)})
		}
		pos += n
	}
	return out
}
