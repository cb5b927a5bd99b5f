package portalloc

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"

	"xnat/flowtable"
	"xnat/internal/prefault"
)

// Pool is a set of external addresses and ports.
type Pool struct {
	AddrLo, AddrHi uint32 // inclusive range of IPv4 addresses (big-endian values)
	PortLo, PortHi uint16 // inclusive port range; both 0 means 1024–65535
	// Steering, when set, receives the pool's ports in use on the box's
	// own addresses (for the XDP program), and decides which ports such a
	// pool leaves to the kernel. A pool with one of the box's addresses
	// must keep dense port counts to steer (see Shared): New refuses it
	// when they do not fit.
	Steering *Steering
}

// Default port range, as Linux uses for source NAT of unprivileged ports.
const (
	DefaultPortLo = 1024
	DefaultPortHi = 65535
)

// ErrPool is returned for a pool that cannot be split between the cores.
var ErrPool = errors.New("invalid NAT pool")

// Mode chooses how a port is picked.
type Mode uint8

const (
	// ModeDefault keeps the original port when it is free, else searches
	// from a start the original tuple's keyed hash picks (searchStart),
	// and from random ones after the first 128 ports.
	ModeDefault Mode = iota
	// ModeRandom (--random) never keeps the original port.
	ModeRandom
	// ModeRandomFully (--random-fully): the same here, both start at a
	// random point of the slice.
	ModeRandomFully
)

// Result says how an allocation ended.
type Result uint8

const (
	// OK: the connection is inserted with its translated reply tuple.
	OK Result = iota
	// OutOfPorts: no free port was found in this core's slice.
	OutOfPorts
	// PerSourceLimit: the inside host has its limit of connections
	// (xnat.per_source_max) or of ports (xnat.per_source_ports).
	PerSourceLimit
	// TableRefused: the flow table refused the connection; its own result
	// (Exists, Full, NoRecord, IndexFull, BadFlow) says why.
	TableRefused
	// LimiterFull: the per-source limiter had no slot for the inside
	// host, so could not count the connection.
	LimiterFull
	// NotOwned: Reserve was given an endpoint outside this allocator's
	// slice (another core's port, or another pool's address).
	NotOwned
)

func (r Result) String() string {
	switch r {
	case OK:
		return "ok"
	case OutOfPorts:
		return "out of ports"
	case PerSourceLimit:
		return "per-source limit"
	case LimiterFull:
		return "per-source limiter full"
	case NotOwned:
		return "endpoint not in this slice"
	}
	return "refused by the flow table"
}

// proto classes with port counts
const (
	classTCP = iota
	classUDP
	classICMP
	numClasses
	classNone = -1
)

func class(proto uint8) int {
	switch proto {
	case flowtable.ProtoTCP:
		return classTCP
	case flowtable.ProtoUDP:
		return classUDP
	case flowtable.ProtoICMP:
		return classICMP
	}
	return classNone
}

// maxUses is the most connections one external port carries.
const maxUses = 0xffff

// Stats are an allocator's counters.
type Stats struct {
	Allocated      uint64 // connections given an external endpoint
	Preserved      uint64 // of those, keeping their original port
	Released       uint64 // connections whose port came back
	OutOfPorts     uint64 // allocations that found no free port
	PerSourceLimit uint64 // allocations refused by a per-source limit
	LimiterFull    uint64 // allocations refused for want of a limiter slot
	PortsInUse     uint64 // ports carrying at least one connection now (dense pools)
}

// Add adds o to s.
func (s *Stats) Add(o Stats) {
	s.Allocated += o.Allocated
	s.Preserved += o.Preserved
	s.Released += o.Released
	s.OutOfPorts += o.OutOfPorts
	s.PerSourceLimit += o.PerSourceLimit
	s.LimiterFull += o.LimiterFull
	s.PortsInUse += o.PortsInUse
}

type pubStats struct {
	allocated, preserved, released, outOfPorts, perSource, full atomic.Uint64
	inUse                                                       atomic.Int64
	_                                                           [128 - 56]byte
}

// Allocator gives out external endpoints from one core's slice of a pool.
// Only its core's goroutine may call Allocate and Release.
type Allocator struct {
	core           int
	addrLo, naddrs uint32
	// This core's ports: n of them, at offsets 0..n-1, in segs (one
	// segment, lo..lo+n-1, unless the pool leaves ports to the kernel).
	lo, n uint32
	segs  []seg
	// uses counts connections per port (by offset), per class and
	// address; nil for a sparse pool (see Shared).
	uses [numClasses][]uint16
	// steer gets a holder for every port in use on one of the box's
	// addresses; held marks (by the index of uses) the ports it holds.
	// Both nil in a sparse pool, which cannot steer (see Steering).
	steer      *Steering
	held       [numClasses][]uint64
	rng        uint64
	key0, key1 uint64
	// clash follows how often a connection's own port, tried, was taken
	// for its remote endpoint: a moving average of the last few dozen
	// tries, 1<<16 for always (Likely).
	clash   uint32
	limiter *SourceLimiter
	pairs   *pairTable // the limiter's table for this core
	st      *pubStats
}

// Shared is what the pools of one dataplane share: the per-source limiter
// (nil: none) and the budget of dense port counts.
//
// A pool's port counts (16 bits a port, per protocol class and address:
// 378 KiB an address over the default port range) are dense while all
// the pools' together fit in DenseMax, and committed at once. A pool
// beyond that is sparse: it keeps no count per port, the flow table alone
// deciding whether a port is free for a remote endpoint (as it does for
// every pool); its ports in use are not counted in Stats.PortsInUse, nor
// is a port limited to 65535 connections, and it holds no ports in a
// Steering. A pool of any size thus costs at most DenseMax of port state,
// and the limiter's tables are fixed at its creation: no rule set can
// make the port state outgrow that.
type Shared struct {
	cores     int
	limiter   *SourceLimiter
	mu        sync.Mutex
	denseLeft int64
}

// DenseMax is the most memory the dense port counts of all the pools of
// one Shared take.
const DenseMax = 128 << 20

// NewShared makes the shared state of the pools of cores cores.
func NewShared(cores int, limiter *SourceLimiter) *Shared {
	return &Shared{cores: cores, limiter: limiter, denseLeft: DenseMax}
}

// Limiter returns the per-source limiter (nil if none, or if s is nil).
func (s *Shared) Limiter() *SourceLimiter {
	if s == nil {
		return nil
	}
	return s.limiter
}

// DenseLeft returns how much of DenseMax is still free.
func (s *Shared) DenseLeft() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.denseLeft
}

// denseBytes is the memory of a pool's dense port counts.
func denseBytes(naddrs uint64, span uint32) int64 {
	return int64(naddrs) * int64(span) * 2 * numClasses
}

// heldBytes is the memory of the bitmaps of the ports a dense pool holds
// in a Steering: a bit a port, per class and address, in 64-bit words
// per core.
func heldBytes(ranges []PortRange, cores int, naddrs uint64) int64 {
	var b int64
	for c := range cores {
		var n uint64
		for _, s := range split(ranges, cores, c) {
			n += uint64(s.n)
		}
		b += int64((n*naddrs+63)/64) * 8 * numClasses
	}
	return b
}

// New splits pool between cores and returns one allocator per core. sh
// is shared by every pool of a dataplane; nil gives this pool a Shared of
// its own, without a limiter.
func New(pool Pool, cores int, sh *Shared) ([]*Allocator, error) {
	if pool.PortLo == 0 && pool.PortHi == 0 {
		pool.PortLo, pool.PortHi = DefaultPortLo, DefaultPortHi
	}
	if pool.AddrHi < pool.AddrLo {
		return nil, fmt.Errorf("%w: address range %s-%s is reversed", ErrPool, flowtable.FormatAddr(pool.AddrLo), flowtable.FormatAddr(pool.AddrHi))
	}
	if pool.PortHi < pool.PortLo || pool.PortLo == 0 {
		return nil, fmt.Errorf("%w: port range %d-%d", ErrPool, pool.PortLo, pool.PortHi)
	}
	naddrs := uint64(pool.AddrHi) - uint64(pool.AddrLo) + 1
	if naddrs > 1<<16 {
		return nil, fmt.Errorf("%w: %d addresses (at most 65536)", ErrPool, naddrs)
	}
	ranges := []PortRange{{pool.PortLo, pool.PortHi}}
	st := pool.Steering
	local := st != nil && st.local(pool.AddrLo, pool.AddrHi)
	if st != nil && st.leaveKernelPorts(pool.AddrLo, pool.AddrHi) {
		ranges = usable(pool.PortLo, pool.PortHi, st.KernelPorts())
	}
	var span uint32
	for _, r := range ranges {
		span += uint32(r.Hi) - uint32(r.Lo) + 1
	}
	if cores < 1 || uint32(cores) > span {
		return nil, fmt.Errorf("%w: %d ports (%d-%d less the kernel's) cannot be split between %d cores", ErrPool, span, pool.PortLo, pool.PortHi, cores)
	}
	if sh == nil {
		sh = NewShared(cores, nil)
	}
	if sh.cores != cores {
		return nil, fmt.Errorf("%w: %d cores, shared state made for %d", ErrPool, cores, sh.cores)
	}
	limiter := sh.limiter
	if limiter != nil && limiter.cores != cores {
		return nil, fmt.Errorf("%w: %d cores, per-source limiter made for %d", ErrPool, cores, limiter.cores)
	}
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("port allocator seed: %w", err)
	}
	// The address hash is keyed alike on every core, so a host maps to
	// the same address whichever core sees its connection.
	key0, key1 := binary.LittleEndian.Uint64(seed[8:])|1, binary.LittleEndian.Uint64(seed[16:])|1
	cost := denseBytes(naddrs, span)
	if st != nil {
		cost += heldBytes(ranges, cores, naddrs)
	}
	sh.mu.Lock()
	dense := cost <= sh.denseLeft
	if dense {
		sh.denseLeft -= cost
	}
	left := sh.denseLeft
	sh.mu.Unlock()
	if local && !dense {
		// Steering needs to know when a port's first connection starts and
		// its last ends, which only the per-port counts tell.
		return nil, fmt.Errorf("%w: a pool on the box's own addresses keeps a count per port to steer its ports to xnat: %s-%s needs %d KiB for them, and %d KiB of the %d MiB the pools share is left",
			ErrPool, flowtable.FormatAddr(pool.AddrLo), flowtable.FormatAddr(pool.AddrHi), (cost+1023)>>10, left>>10, DenseMax>>20)
	}
	if !dense {
		st = nil
	}
	as := make([]*Allocator, cores)
	for c := range as {
		segs := split(ranges, cores, c)
		last := segs[len(segs)-1]
		a := &Allocator{
			core: c, addrLo: pool.AddrLo, naddrs: uint32(naddrs),
			lo: segs[0].port, n: last.off + last.n, segs: segs, limiter: limiter, st: new(pubStats),
			key0: key0, key1: key1,
		}
		if limiter != nil {
			a.pairs = limiter.pairs[c]
		}
		if dense {
			for k := range a.uses {
				a.uses[k] = make([]uint16, uint64(a.n)*naddrs)
				prefault.Slice(a.uses[k])
			}
			if st != nil {
				a.steer = st
				for k := range a.held {
					a.held[k] = make([]uint64, (uint64(a.n)*naddrs+63)/64)
					prefault.Slice(a.held[k])
				}
			}
		}
		var rs [8]byte
		if _, err := rand.Read(rs[:]); err != nil {
			return nil, fmt.Errorf("port allocator seed: %w", err)
		}
		a.rng = binary.LittleEndian.Uint64(rs[:])
		as[c] = a
	}
	return as, nil
}

// Dense reports whether the pool keeps a count per port (see Shared).
func (a *Allocator) Dense() bool { return a.uses[0] != nil }

// Steers reports whether the allocator holds its ports in use on the
// box's addresses in the Steering's use counts (a dense pool given a
// Steering).
func (a *Allocator) Steers() bool { return a.steer != nil }

// Slice returns this allocator's first and last port. Without ports left
// to the kernel, its ports are all those between.
func (a *Allocator) Slice() (lo, hi uint16) {
	last := a.segs[len(a.segs)-1]
	return uint16(a.lo), uint16(last.port + last.n - 1)
}

// port returns the port at offset off of the slice.
func (a *Allocator) port(off uint32) uint32 {
	if len(a.segs) == 1 {
		return a.lo + off
	}
	for i := len(a.segs) - 1; i > 0; i-- {
		if s := &a.segs[i]; off >= s.off {
			return s.port + off - s.off
		}
	}
	return a.lo + off
}

// offset returns the offset of port p in the slice; ok is false when p
// is not in it.
func (a *Allocator) offset(p uint32) (off uint32, ok bool) {
	if len(a.segs) == 1 {
		return p - a.lo, p-a.lo < a.n
	}
	for i := range a.segs {
		if s := &a.segs[i]; p-s.port < s.n {
			return s.off + p - s.port, true
		}
	}
	return 0, false
}

// next is wyrand: a fast generator, seeded from crypto/rand.
func (a *Allocator) next() uint64 {
	a.rng += 0xa0761d6478bd642f
	hi, lo := bits.Mul64(a.rng, a.rng^0xe7037ed1a0b428db)
	return hi ^ lo
}

func (a *Allocator) pickAddr(src, dst uint32, persistent bool) uint32 {
	if a.naddrs == 1 {
		return a.addrLo
	}
	x := uint64(src)
	if !persistent {
		x |= uint64(dst) << 32
	}
	// Two rounds of multiply-fold: after one, the hosts of a subnet (inputs
	// that differ in a few low bits) crowd onto some addresses for some
	// keys — 64 hosts used at most 5 of 8 addresses for about 1 key in 40.
	hi, lo := bits.Mul64(x^a.key0, a.key1)
	hi, lo = bits.Mul64(hi^lo^a.key1, a.key0^0x9E3779B97F4A7C15)
	h := hi ^ lo
	return a.addrLo + uint32(h>>32*uint64(a.naddrs)>>32)
}

// searchStart is where ModeDefault's search for a free port starts, as
// an offset into this core's slice: a keyed hash of the original tuple
// (RFC 6056's algorithm 3, with the source port among its inputs), where
// later rounds and the random modes draw a random start. A connection's
// first port to search is thus known before its insert (SearchPort), and
// the pipeline prefetches its reply tuple's index lines with the rest of
// a batch's, as it does for the kept port: with many connections, these
// are the two ports nearly every one ends with.
func (a *Allocator) searchStart(orig *flowtable.Tuple) uint32 {
	x := uint64(orig.Src)<<32 | uint64(orig.Dst)
	y := uint64(orig.SrcPort)<<32 | uint64(orig.DstPort)<<16 | uint64(orig.Proto)
	hi, lo := bits.Mul64(x^a.key1, y^a.key0)
	hi, lo = bits.Mul64(hi^lo^a.key0, a.key1^0x9E3779B97F4A7C15)
	return uint32(uint64(uint32((hi^lo)>>32)) * uint64(a.n) >> 32)
}

// SearchPort is the first port ModeDefault searches for orig's connection
// when its own port is taken or outside this core's slice.
func (a *Allocator) SearchPort(orig *flowtable.Tuple) uint16 {
	return uint16(a.port(a.searchStart(orig)))
}

// Likely returns the ports ModeDefault most likely gives orig's
// connection behind addr, in the order it tries them (at most two): its
// own port, when that lies in this core's slice; then SearchPort's, when
// the own port is outside the slice, or when it may well be taken for
// this remote endpoint: it carries a connection already, and of late an
// eighth or more of the own ports tried were taken. The pipeline
// prefetches these ports' reply tuples; it needs no more than a guess,
// and a port guessed for nothing costs it a prefetch.
func (a *Allocator) Likely(orig *flowtable.Tuple, addr uint32) (ports [2]uint16, n int) {
	cl := class(orig.Proto)
	if cl == classNone || addr-a.addrLo >= a.naddrs {
		return ports, 0
	}
	if off, ok := a.offset(uint32(orig.SrcPort)); ok {
		ports[0], n = orig.SrcPort, 1
		if a.clash < 1<<16/8 || a.uses[cl] != nil && a.uses[cl][uint64(addr-a.addrLo)*uint64(a.n)+uint64(off)] == 0 {
			return ports, 1
		}
	}
	ports[n] = a.SearchPort(orig)
	return ports, n + 1
}

// clashShift sets the weight of each try in the clash average: 1/32.
const clashShift = 5

// Options are the rule's NAT flags.
type Options struct {
	Mode       Mode
	Persistent bool
	// Exclusive takes only a port no connection or retained use of this
	// allocator holds (in a dense pool; a sparse one cannot tell): a
	// full-cone mapping's port, which must not answer for two inside
	// endpoints.
	Exclusive bool
	// Parity searches first among ports of the original port's parity
	// (RFC 4787 REQ-4), then, if none is free, among all.
	Parity bool
}

// insertNoPorts inserts a connection of a protocol without ports
// (address only: the reply tuple keeps the ports it has).
func (a *Allocator) insertNoPorts(c *flowtable.Core, nf *flowtable.NewFlow, at *attempt, now flowtable.Time) (flowtable.Ref, Result, flowtable.InsertResult) {
	r, res := c.Insert(nf, now)
	if res != flowtable.Inserted {
		a.unacquire(at)
		return r, TableRefused, res
	}
	a.st.allocated.Add(1)
	return r, OK, res
}

// admitSource counts a new connection of at.src in the per-source
// limiter, if there is one, and keeps its slot in at; a refusal is
// counted and returned (LimiterFull or PerSourceLimit), else OK.
func (a *Allocator) admitSource(at *attempt) Result {
	if a.limiter == nil {
		return OK
	}
	var why int
	if at.slot, why = a.limiter.acquire(at.src); why != limOK {
		if why == limFull {
			a.st.full.Add(1)
			return LimiterFull
		}
		a.st.perSource.Add(1)
		return PerSourceLimit
	}
	return OK
}

// Allocate picks the external endpoint for a new connection and inserts
// it into the flow table through this core's handle. nf.Orig is the
// connection's original tuple; nf.Reply must hold the reply tuple with
// its source (the remote end, after any DNAT) filled in; Allocate fills
// its destination address and port with the external endpoint. On
// TableRefused the flow table's own result is returned too (with the
// existing connection's Ref on Exists).
//
// With a limiter, the connection is counted for its inside source first
// (refused at xnat.per_source_max, or when the limiter has no slot for
// the source), then one port is reserved for it in case it lands on a
// port its source does not hold yet. Without that reservation (the
// source is at xnat.per_source_ports) only the connection's own port, if
// the source holds it already, may serve it: a source at its port limit
// costs one lookup a connection, not a search.
func (a *Allocator) Allocate(c *flowtable.Core, nf *flowtable.NewFlow, opt Options, now flowtable.Time) (flowtable.Ref, Result, flowtable.InsertResult) {
	at := attempt{src: nf.Orig.Src, slot: -1, canNew: true, exclusive: opt.Exclusive}
	if r := a.admitSource(&at); r != OK {
		return 0, r, flowtable.Inserted
	}
	nf.Reply.Dst = a.pickAddr(at.src, nf.Orig.Dst, opt.Persistent)
	at.addr = nf.Reply.Dst
	at.cl = class(nf.Orig.Proto)
	if at.cl == classNone {
		return a.insertNoPorts(c, nf, &at, now)
	}
	at.base = uint64(at.addr-a.addrLo) * uint64(a.n)
	if u := a.uses[at.cl]; u != nil {
		at.uses = u[at.base:][:a.n]
	}
	if a.limiter != nil {
		at.canNew = a.limiter.reservePort(at.slot)
	}
	if own, ok := a.offset(uint32(nf.Orig.SrcPort)); opt.Mode == ModeDefault && ok {
		r, res, st := a.try(c, nf, &at, own, now)
		if st != trySkipped {
			if st == tryDone {
				a.clash -= a.clash >> clashShift
				if res == flowtable.Inserted {
					a.st.preserved.Add(1)
					a.settle(&at)
					return r, OK, res
				}
				a.unacquire(&at)
				return r, TableRefused, res
			}
			a.clash += (1<<16 - a.clash) >> clashShift
		}
	}
	if !at.canNew {
		a.unacquire(&at)
		a.limiter.refusePorts(at.src)
		a.st.perSource.Add(1)
		return 0, PerSourceLimit, flowtable.Inserted
	}
	parity := opt.Parity
	for pass := 0; pass == 0 || (pass == 1 && parity); pass++ {
		for attempts := min(a.n, 128); attempts > 0; attempts /= 2 {
			var off uint32
			if opt.Mode == ModeDefault && attempts == min(a.n, 128) && pass == 0 {
				off = a.searchStart(&nf.Orig)
			} else {
				off = uint32(uint64(uint32(a.next())) * uint64(a.n) >> 32)
			}
			for i := range attempts {
				o := (off + i) % a.n
				if pass == 0 && parity && uint16(a.port(o))&1 != nf.Orig.SrcPort&1 {
					continue
				}
				if r, res, st := a.try(c, nf, &at, o, now); st == tryDone {
					if res == flowtable.Inserted {
						a.settle(&at)
						return r, OK, res
					}
					a.unacquire(&at)
					return r, TableRefused, res
				}
			}
		}
	}
	a.st.outOfPorts.Add(1)
	a.unacquire(&at)
	return 0, OutOfPorts, flowtable.ReplyClash
}

// Owns reports whether the external endpoint (addr, port) of a
// connection of protocol proto lies in this allocator's slice: the
// allocator that Reserve must be called on. For a protocol without ports
// the address alone decides, and every core's allocator owns it. Safe from
// any goroutine.
func (a *Allocator) Owns(proto uint8, addr uint32, port uint16) bool {
	if addr-a.addrLo >= a.naddrs {
		return false
	}
	if class(proto) == classNone {
		return true
	}
	_, ok := a.offset(uint32(port))
	return ok
}

// Reserve inserts a connection whose external endpoint is already
// decided (nf.Reply's destination address and port: a connection synced
// from an HA peer, committed with the translation it has there), and
// marks the port used exactly as Allocate does: the per-port count, the
// port held in the Steering on the box's own addresses, and the
// per-source limiter's counts, so that Release gives it back like any
// other. The endpoint must be in this slice (Owns), else NotOwned; a
// port taken for the same remote endpoint is TableRefused with
// ReplyClash, and a per-source limit refuses as in Allocate.
//
// Allocators are core-owned plain memory: like Allocate, Reserve may only
// be called from its core's goroutine (the dataplane runs it from the
// core's batch, see dataplane.Dataplane.Commit).
func (a *Allocator) Reserve(c *flowtable.Core, nf *flowtable.NewFlow, now flowtable.Time) (flowtable.Ref, Result, flowtable.InsertResult) {
	if !a.Owns(nf.Orig.Proto, nf.Reply.Dst, nf.Reply.DstPort) {
		return 0, NotOwned, flowtable.Inserted
	}
	at := attempt{src: nf.Orig.Src, addr: nf.Reply.Dst, cl: class(nf.Orig.Proto), slot: -1, canNew: true}
	if r := a.admitSource(&at); r != OK {
		return 0, r, flowtable.Inserted
	}
	if at.cl == classNone {
		return a.insertNoPorts(c, nf, &at, now)
	}
	off, _ := a.offset(uint32(nf.Reply.DstPort))
	at.base = uint64(at.addr-a.addrLo) * uint64(a.n)
	if u := a.uses[at.cl]; u != nil {
		at.uses = u[at.base:][:a.n]
	}
	if a.limiter != nil {
		at.canNew = a.limiter.reservePort(at.slot)
	}
	r, res, st := a.try(c, nf, &at, off, now)
	switch {
	case st == trySkipped:
		// The port carries maxUses connections, or the source is at its
		// port limit and does not hold this one.
		a.unacquire(&at)
		if at.uses != nil && at.uses[off] == maxUses {
			a.st.outOfPorts.Add(1)
			return 0, OutOfPorts, flowtable.ReplyClash
		}
		if a.limiter != nil {
			a.limiter.refusePorts(at.src)
		}
		a.st.perSource.Add(1)
		return 0, PerSourceLimit, flowtable.Inserted
	case res == flowtable.Inserted:
		a.settle(&at)
		return r, OK, res
	}
	a.unacquire(&at)
	return r, TableRefused, res
}

// Rehold holds a port in use on addr in the Steering if it is not held
// yet: a port given out while the address had no steering slot (it was
// not one of the box's then, as an HA pair's NAT address is not on the
// backup until keepalived moves it) is held by nobody, so its replies
// would go to the kernel once the address is the box's. It reports
// whether the port is held now. Only this core's goroutine may call it.
func (a *Allocator) Rehold(proto uint8, addr uint32, port uint16) bool {
	cl := class(proto)
	off, ok := a.offset(uint32(port))
	if cl == classNone || a.steer == nil || addr-a.addrLo >= a.naddrs || !ok {
		return false
	}
	i := uint64(addr-a.addrLo)*uint64(a.n) + uint64(off)
	if a.uses[cl][i] == 0 {
		return false
	}
	a.hold(cl, i, addr, proto, port)
	return a.held[cl][i>>6]&(1<<(i&63)) != 0
}

// attempt is one Allocate's state, on its stack.
type attempt struct {
	src, addr uint32
	cl        int
	base      uint64   // index of the address's first port in the class's counts
	uses      []uint16 // the address's dense counts, nil in a sparse pool
	slot      int      // the source's limiter slot, -1 without a limiter
	retry     bool     // an Insert refused the reply tuple: the original is free
	canNew    bool     // a port may be one the source does not hold (reserved)
	newPort   bool     // the inserted connection took a port new to its source
	exclusive bool     // only ports with no use (Options.Exclusive)
}

// try's outcomes
const (
	tryDone    = iota // inserted, or refused by the table for good
	tryClash          // the port is taken for this remote endpoint
	trySkipped        // the port is not to be tried (full, or beyond the source's ports)
)

// try inserts the connection with the external port at offset off of the
// slice. at.retry says whether an earlier try's Insert found the original
// tuple free and refused only the reply tuple, so that this one need not
// look again (InsertRetry); try sets it when its own Insert does.
func (a *Allocator) try(c *flowtable.Core, nf *flowtable.NewFlow, at *attempt, off uint32, now flowtable.Time) (flowtable.Ref, flowtable.InsertResult, int) {
	var u *uint16
	if at.uses != nil {
		u = &at.uses[off]
		if *u == maxUses || (*u != 0 && at.exclusive) {
			return 0, flowtable.ReplyClash, trySkipped
		}
	}
	p := uint16(a.port(off))
	pi, held := -1, false
	if a.pairs != nil {
		pi, held = a.pairs.find(uint64(at.src)<<32|uint64(at.addr), pairX(p, at.cl))
		if !held && (pi < 0 || !at.canNew) {
			return 0, flowtable.ReplyClash, trySkipped
		}
	}
	nf.Reply.DstPort = uint16(a.port(off))
	var r flowtable.Ref
	var res flowtable.InsertResult
	if at.retry {
		r, res = c.InsertRetry(nf, now)
	} else {
		r, res = c.Insert(nf, now)
	}
	switch res {
	case flowtable.Inserted:
		if u != nil {
			if *u == 0 {
				a.st.inUse.Add(1)
			}
			*u++
		}
		if a.pairs != nil {
			if held {
				a.pairs.e[pi].n++
			} else {
				a.pairs.put(pi, uint64(at.src)<<32|uint64(at.addr), pairX(p, at.cl))
				at.newPort = true
			}
		}
		if a.steer != nil {
			a.hold(at.cl, at.base+uint64(off), at.addr, nf.Orig.Proto, p)
		}
		a.st.allocated.Add(1)
		return r, res, tryDone
	case flowtable.ReplyClash:
		at.retry = true
		return 0, res, tryClash
	}
	return r, res, tryDone
}

// settle gives back the port reservation of an inserted connection that
// took a port its source held already.
func (a *Allocator) settle(at *attempt) {
	if a.limiter != nil && at.canNew && !at.newPort {
		a.limiter.unreservePort(at.slot)
	}
}

// unacquire undoes the limiter's counting of a connection not inserted.
func (a *Allocator) unacquire(at *attempt) {
	if a.limiter != nil {
		if at.cl != classNone && at.canNew {
			a.limiter.unreservePort(at.slot)
		}
		a.limiter.unacquire(at.slot)
	}
}

// Release gives back the external endpoint of a connection this
// allocator gave one: orig and reply as the flow table reported them. It
// reports false for a connection whose endpoint is not from this slice.
// Its source's counts in the limiter go down: one connection, and one
// port if it was the source's last connection on its port.
func (a *Allocator) Release(orig, reply *flowtable.Tuple) bool {
	ai := reply.Dst - a.addrLo
	if ai >= a.naddrs {
		return false
	}
	cl := class(orig.Proto)
	lastOnPort := false
	if cl != classNone {
		off, ok := a.offset(uint32(reply.DstPort))
		if !ok {
			return false
		}
		if a.uses[cl] != nil {
			i := uint64(ai)*uint64(a.n) + uint64(off)
			u := &a.uses[cl][i]
			if *u == 0 {
				return false
			}
			*u--
			if *u == 0 {
				a.st.inUse.Add(-1)
				if a.steer != nil {
					a.unhold(cl, i, reply.Dst, orig.Proto, reply.DstPort)
				}
			}
		}
		if a.pairs != nil {
			if i, held := a.pairs.find(uint64(orig.Src)<<32|uint64(reply.Dst), pairX(reply.DstPort, cl)); held {
				if a.pairs.e[i].n--; a.pairs.e[i].n == 0 {
					a.pairs.remove(i)
					lastOnPort = true
				}
			}
		}
	}
	if a.limiter != nil {
		a.limiter.release(orig.Src, lastOnPort)
	}
	a.st.released.Add(1)
	return true
}

// Uses returns how many connections use an external endpoint (tests and
// the control plane's diagnostics; only this core's goroutine may call it
// while traffic flows); 0 in a sparse pool.
func (a *Allocator) Uses(proto uint8, addr uint32, port uint16) int {
	cl := class(proto)
	off, ok := a.offset(uint32(port))
	if cl == classNone || a.uses[cl] == nil || addr-a.addrLo >= a.naddrs || !ok {
		return 0
	}
	return int(a.uses[cl][uint64(addr-a.addrLo)*uint64(a.n)+uint64(off)])
}

// hold makes the port at index i of class cl's counts (addr, port) a
// port the XDP program gives xnat, once: a connection after the first on
// the port finds it held, unless the address had no slot then.
func (a *Allocator) hold(cl int, i uint64, addr uint32, proto uint8, port uint16) {
	w, bit := &a.held[cl][i>>6], uint64(1)<<(i&63)
	if *w&bit == 0 && a.steer.Hold(addr, proto, port) {
		*w |= bit
	}
}

// unhold gives the port back to the kernel when this allocator held it.
func (a *Allocator) unhold(cl int, i uint64, addr uint32, proto uint8, port uint16) {
	w, bit := &a.held[cl][i>>6], uint64(1)<<(i&63)
	if *w&bit != 0 {
		*w &^= bit
		a.steer.Drop(addr, proto, port)
	}
}

// Stats returns the allocator's counters; safe from any goroutine.
func (a *Allocator) Stats() Stats {
	return Stats{
		Allocated:      a.st.allocated.Load(),
		Preserved:      a.st.preserved.Load(),
		Released:       a.st.released.Load(),
		OutOfPorts:     a.st.outOfPorts.Load(),
		PerSourceLimit: a.st.perSource.Load(),
		LimiterFull:    a.st.full.Load(),
		PortsInUse:     uint64(a.st.inUse.Load()),
	}
}
