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
	lo, n          uint32 // this core's ports: [lo, lo+n)
	uses           [numClasses][]uint16
	rng            uint64
	key0, key1     uint64
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
	span := uint32(pool.PortHi) - uint32(pool.PortLo) + 1
	if cores < 1 || uint32(cores) > span {
		return nil, fmt.Errorf("%w: %d ports cannot be split between %d cores", ErrPool, span, cores)
	}
	as := make([]*Allocator, cores)
	for c := range as {
		lo := uint32(pool.PortLo) + span*uint32(c)/uint32(cores)
		hi := uint32(pool.PortLo) + span*uint32(c+1)/uint32(cores)
		a := &Allocator{
			core: c, addrLo: pool.AddrLo, naddrs: uint32(naddrs),
			lo: lo, n: hi - lo, limiter: limiter, st: new(pubStats),
		}
		for k := range a.uses {
			a.uses[k] = make([]uint16, uint64(a.n)*naddrs)
			if uint64(a.n)*naddrs*2*numClasses <= prefaultMax {
				prefault.Slice(a.uses[k])
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

// Slice returns this allocator's ports, inclusive.
func (a *Allocator) Slice() (lo, hi uint16) { return uint16(a.lo), uint16(a.lo + a.n - 1) }

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
	return uint16(a.lo + a.searchStart(orig))
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
	if own := uint32(orig.SrcPort); own-a.lo < a.n {
		ports[0], n = orig.SrcPort, 1
		if a.clash < 1<<16/8 || a.uses[cl][uint64(addr-a.addrLo)*uint64(a.n)+uint64(own-a.lo)] == 0 {
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
	uses := a.uses[cl][uint64(nf.Reply.Dst-a.addrLo)*uint64(a.n):][:a.n]
	orig := uint32(nf.Orig.SrcPort)
	var retry bool // an Insert refused the reply tuple: the original is free
	if opt.Mode == ModeDefault && orig-a.lo < a.n {
		r, res, done := a.try(c, nf, uses, orig, now, &retry)
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
			p := a.lo + (off+i)%a.n
			if r, res, done := a.try(c, nf, uses, p, now, &retry); done {
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

// try inserts the connection with external port p. done is false when the
// port is taken for this remote endpoint and the search goes on. retry
// says whether an earlier try's Insert found the original tuple free and
// refused only the reply tuple, so that this one need not look again
// (InsertRetry); try sets it when its own Insert does.
func (a *Allocator) try(c *flowtable.Core, nf *flowtable.NewFlow, uses []uint16, p uint32, now flowtable.Time, retry *bool) (flowtable.Ref, flowtable.InsertResult, bool) {
	u := &uses[p-a.lo]
	if *u == maxUses {
		return 0, flowtable.ReplyClash, false
	}
	nf.Reply.DstPort = uint16(p)
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
		p := uint32(reply.DstPort)
		if p-a.lo >= a.n {
			return false
		}
		u := &a.uses[cl][uint64(reply.Dst-a.addrLo)*uint64(a.n)+uint64(p-a.lo)]
		if *u == 0 {
			return false
		}
		*u--
		if *u == 0 {
			a.st.inUse.Add(-1)
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
	p := uint32(port)
	if cl == classNone || addr-a.addrLo >= a.naddrs || p-a.lo >= a.n {
		return 0
	}
	return int(a.uses[cl][uint64(addr-a.addrLo)*uint64(a.n)+uint64(p-a.lo)])
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
