package portalloc

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
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
	// pool leaves to the kernel.
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
	// PerSourceLimit: the inside host has its limit of connections.
	PerSourceLimit
	// TableRefused: the flow table refused the connection; its own result
	// (Exists, Full, NoRecord, IndexFull, BadFlow) says why.
	TableRefused
)

func (r Result) String() string {
	switch r {
	case OK:
		return "ok"
	case OutOfPorts:
		return "out of ports"
	case PerSourceLimit:
		return "per-source limit"
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
	PerSourceLimit uint64 // allocations refused by the per-source limit
	PortsInUse     uint64 // ports carrying at least one connection now
}

// Add adds o to s.
func (s *Stats) Add(o Stats) {
	s.Allocated += o.Allocated
	s.Preserved += o.Preserved
	s.Released += o.Released
	s.OutOfPorts += o.OutOfPorts
	s.PerSourceLimit += o.PerSourceLimit
	s.PortsInUse += o.PortsInUse
}

type pubStats struct {
	allocated, preserved, released, outOfPorts, perSource atomic.Uint64
	inUse                                                 atomic.Int64
	_                                                     [128 - 48]byte
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
	uses  [numClasses][]uint16
	// steer gets a holder for every port in use on one of the box's
	// addresses; held marks (by the index of uses) the ports it holds.
	steer      *Steering
	held       [numClasses][]uint64
	rng        uint64
	key0, key1 uint64
	// clash follows how often a connection's own port, tried, was taken
	// for its remote endpoint: a moving average of the last few dozen
	// tries, 1<<16 for always (Likely).
	clash   uint32
	limiter *SourceLimiter
	st      *pubStats
}

// New splits pool between cores and returns one allocator per core. The
// limiter may be nil (no per-source counting).
func New(pool Pool, cores int, limiter *SourceLimiter) ([]*Allocator, error) {
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
	if st := pool.Steering; st != nil && st.local(pool.AddrLo, pool.AddrHi) {
		ranges = usable(pool.PortLo, pool.PortHi, st.KernelPorts())
	}
	var span uint32
	for _, r := range ranges {
		span += uint32(r.Hi) - uint32(r.Lo) + 1
	}
	if cores < 1 || uint32(cores) > span {
		return nil, fmt.Errorf("%w: %d ports (%d-%d less the kernel's) cannot be split between %d cores", ErrPool, span, pool.PortLo, pool.PortHi, cores)
	}
	as := make([]*Allocator, cores)
	for c := range as {
		segs := split(ranges, cores, c)
		last := segs[len(segs)-1]
		a := &Allocator{
			core: c, addrLo: pool.AddrLo, naddrs: uint32(naddrs),
			lo: segs[0].port, n: last.off + last.n, segs: segs, limiter: limiter, st: new(pubStats),
			steer: pool.Steering,
		}
		for k := range a.uses {
			a.uses[k] = make([]uint16, uint64(a.n)*naddrs)
			if uint64(a.n)*naddrs*2*numClasses <= prefaultMax {
				prefault.Slice(a.uses[k])
			}
			if a.steer != nil {
				a.held[k] = make([]uint64, (uint64(a.n)*naddrs+63)/64)
			}
		}
		var seed [32]byte
		if _, err := rand.Read(seed[:]); err != nil {
			return nil, fmt.Errorf("port allocator seed: %w", err)
		}
		a.rng = binary.LittleEndian.Uint64(seed[0:])
		// The address hash is keyed alike on every core, so a host maps to
		// the same address whichever core sees its connection.
		if c == 0 {
			a.key0, a.key1 = binary.LittleEndian.Uint64(seed[8:])|1, binary.LittleEndian.Uint64(seed[16:])|1
		} else {
			a.key0, a.key1 = as[0].key0, as[0].key1
		}
		as[c] = a
	}
	return as, nil
}

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
		if a.clash < 1<<16/8 || a.uses[cl][uint64(addr-a.addrLo)*uint64(a.n)+uint64(off)] == 0 {
			return ports, 1
		}
	}
	ports[n] = a.SearchPort(orig)
	return ports, n + 1
}

// prefaultMax bounds the use counts New commits at once for one core
// (prefault.Slice: no connection's first use of a port then waits on a
// page fault). The counts of a pool of one address take 378 KiB in all
// (split between the cores), of 256 addresses 95 MiB, of 65,536 about
// 24 GiB, of which a gateway only ever uses the pages its traffic
// reaches.
const prefaultMax = 128 << 20

// clashShift sets the weight of each try in the clash average: 1/32.
const clashShift = 5

// Options are the rule's NAT flags.
type Options struct {
	Mode       Mode
	Persistent bool
}

// Allocate picks the external endpoint for a new connection and inserts
// it into the flow table through this core's handle. nf.Orig is the
// connection's original tuple; nf.Reply must hold the reply tuple with
// its source (the remote end, after any DNAT) filled in; Allocate fills
// its destination address and port with the external endpoint. On
// TableRefused the flow table's own result is returned too (with the
// existing connection's Ref on Exists).
func (a *Allocator) Allocate(c *flowtable.Core, nf *flowtable.NewFlow, opt Options, now flowtable.Time) (flowtable.Ref, Result, flowtable.InsertResult) {
	src := nf.Orig.Src
	if a.limiter != nil && !a.limiter.Acquire(src) {
		a.st.perSource.Add(1)
		return 0, PerSourceLimit, flowtable.Inserted
	}
	nf.Reply.Dst = a.pickAddr(src, nf.Orig.Dst, opt.Persistent)
	cl := class(nf.Orig.Proto)
	if cl == classNone {
		// Address only: the reply tuple keeps the ports it has.
		r, res := c.Insert(nf, now)
		if res != flowtable.Inserted {
			a.unacquire(src)
			return r, TableRefused, res
		}
		a.st.allocated.Add(1)
		return r, OK, res
	}
	base := uint64(nf.Reply.Dst-a.addrLo) * uint64(a.n)
	uses := a.uses[cl][base:][:a.n]
	var retry bool // an Insert refused the reply tuple: the original is free
	if own, ok := a.offset(uint32(nf.Orig.SrcPort)); opt.Mode == ModeDefault && ok {
		r, res, done := a.try(c, nf, cl, base, uses, own, now, &retry)
		if done {
			a.clash -= a.clash >> clashShift
			if res == flowtable.Inserted {
				a.st.preserved.Add(1)
				return r, OK, res
			}
			a.unacquire(src)
			return r, TableRefused, res
		}
		a.clash += (1<<16 - a.clash) >> clashShift
	}
	for attempts := min(a.n, 128); attempts > 0; attempts /= 2 {
		var off uint32
		if opt.Mode == ModeDefault && attempts == min(a.n, 128) {
			off = a.searchStart(&nf.Orig)
		} else {
			off = uint32(uint64(uint32(a.next())) * uint64(a.n) >> 32)
		}
		for i := range attempts {
			if r, res, done := a.try(c, nf, cl, base, uses, (off+i)%a.n, now, &retry); done {
				if res == flowtable.Inserted {
					return r, OK, res
				}
				a.unacquire(src)
				return r, TableRefused, res
			}
		}
	}
	a.st.outOfPorts.Add(1)
	a.unacquire(src)
	return 0, OutOfPorts, flowtable.ReplyClash
}

// try inserts the connection with the external port at offset off of the
// slice (uses are the counts of its address, at base in the class's). done
// is false when the port is taken for this remote endpoint and the search
// goes on. retry says whether an earlier try's Insert found the original
// tuple free and refused only the reply tuple, so that this one need not
// look again (InsertRetry); try sets it when its own Insert does.
func (a *Allocator) try(c *flowtable.Core, nf *flowtable.NewFlow, cl int, base uint64, uses []uint16, off uint32, now flowtable.Time, retry *bool) (flowtable.Ref, flowtable.InsertResult, bool) {
	u := &uses[off]
	if *u == maxUses {
		return 0, flowtable.ReplyClash, false
	}
	nf.Reply.DstPort = uint16(a.port(off))
	var r flowtable.Ref
	var res flowtable.InsertResult
	if *retry {
		r, res = c.InsertRetry(nf, now)
	} else {
		r, res = c.Insert(nf, now)
	}
	switch res {
	case flowtable.Inserted:
		if *u == 0 {
			a.st.inUse.Add(1)
		}
		*u++
		if a.steer != nil {
			a.hold(cl, base+uint64(off), nf.Reply.Dst, nf.Orig.Proto, nf.Reply.DstPort)
		}
		a.st.allocated.Add(1)
		return r, res, true
	case flowtable.ReplyClash:
		*retry = true
		return 0, res, false
	}
	return r, res, true
}

func (a *Allocator) unacquire(src uint32) {
	if a.limiter != nil {
		a.limiter.Release(src)
	}
}

// Release gives back the external endpoint of a connection this
// allocator gave one: orig and reply as the flow table reported them. It
// reports false for a connection whose endpoint is not from this slice.
func (a *Allocator) Release(orig, reply *flowtable.Tuple) bool {
	if reply.Dst-a.addrLo >= a.naddrs {
		return false
	}
	cl := class(orig.Proto)
	if cl != classNone {
		off, ok := a.offset(uint32(reply.DstPort))
		if !ok {
			return false
		}
		i := uint64(reply.Dst-a.addrLo)*uint64(a.n) + uint64(off)
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
	a.unacquire(orig.Src)
	a.st.released.Add(1)
	return true
}

// Uses returns how many connections use an external endpoint (tests and
// the control plane's diagnostics; only this core's goroutine may call it
// while traffic flows).
func (a *Allocator) Uses(proto uint8, addr uint32, port uint16) int {
	cl := class(proto)
	off, ok := a.offset(uint32(port))
	if cl == classNone || addr-a.addrLo >= a.naddrs || !ok {
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
		PortsInUse:     uint64(a.st.inUse.Load()),
	}
}
