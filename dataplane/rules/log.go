package rules

import (
	"fmt"
	"sync/atomic"
)

// LOG never does I/O on the packet path. A LOG rule writes a fixed-size,
// pointer-free record into its core's ring, if the core's LOG rate limit
// allows; the daemon drains the rings later and writes them out. Each ring
// has one producer (its core) and one consumer (the drainer), synchronised
// by an atomic head and tail.

// LogRecord is one LOG event.
type LogRecord struct {
	Time      int64 // the now passed to Filter/NAT
	RuleID    uint64
	Table     TableID
	Hook      Hook
	Level     uint8
	PrefixLen uint8
	Prefix    [MaxLogPrefix]byte
	Packet    Packet // the packet's fields when the LOG rule matched
}

// PrefixString returns the --log-prefix.
func (r *LogRecord) PrefixString() string { return string(r.Prefix[:r.PrefixLen]) }

// Defaults for NewLogRings: per core, a ring of 1024 records and at most
// 100 records per second with bursts of 100.
const (
	DefaultLogCapacity = 1024
	DefaultLogRate     = 100
	DefaultLogBurst    = 100
)

type logRing struct {
	_        [64]byte
	head     atomic.Uint64 // next record to drain (consumer)
	_        [56]byte
	tail     atomic.Uint64 // next slot to fill (producer)
	tat      int64         // producer-only rate limiter
	limited  atomic.Uint64
	overflow atomic.Uint64
	buf      []LogRecord
	_        [64]byte
}

// LogRings are the per-core LOG rings.
type LogRings struct {
	rings    []*logRing
	interval int64
	tau      int64
}

// NewLogRings makes rings for cores cores of capacity records each,
// admitting perSecond records per second per core with bursts of burst.
func NewLogRings(cores, capacity, perSecond, burst int) *LogRings {
	if capacity < 1 {
		capacity = 1
	}
	if perSecond < 1 {
		perSecond = 1
	}
	if burst < 1 {
		burst = 1
	}
	l := &LogRings{interval: int64(1e9) / int64(perSecond)}
	l.tau = int64(burst-1) * l.interval
	for i := 0; i < cores; i++ {
		l.rings = append(l.rings, &logRing{buf: make([]LogRecord, capacity), tat: -1 << 62})
	}
	return l
}

func (l *LogRings) record(core int, now int64, id uint64, lp *logParam, start *cchain, p *Packet) {
	r := l.rings[core]
	t := max(r.tat, now)
	if t-now > l.tau {
		r.limited.Add(1)
		return
	}
	r.tat = t + l.interval
	tail := r.tail.Load()
	if tail-r.head.Load() >= uint64(len(r.buf)) {
		r.overflow.Add(1)
		return
	}
	rec := &r.buf[tail%uint64(len(r.buf))]
	rec.Time = now
	rec.RuleID = id
	rec.Table = start.table
	rec.Hook = start.hook
	rec.Level = lp.level
	rec.PrefixLen = lp.plen
	rec.Prefix = lp.prefix
	rec.Packet = *p
	r.tail.Store(tail + 1)
}

// Drain moves up to len(out) records of core's ring into out and returns
// how many. One goroutine at a time may drain a given core.
func (l *LogRings) Drain(core int, out []LogRecord) int {
	r := l.rings[core]
	head, tail := r.head.Load(), r.tail.Load()
	n := 0
	for head < tail && n < len(out) {
		out[n] = r.buf[head%uint64(len(r.buf))]
		head++
		n++
	}
	r.head.Store(head)
	return n
}

// Dropped returns how many records core dropped to the rate limit and to
// a full ring.
func (l *LogRings) Dropped(core int) (rateLimited, ringFull uint64) {
	r := l.rings[core]
	return r.limited.Load(), r.overflow.Load()
}

// String formats a record the way the kernel's LOG target does.
func (r *LogRecord) String() string {
	p := &r.Packet
	s := fmt.Sprintf("%sSRC=%s DST=%s LEN=%d PROTO=", r.PrefixString(), FormatIP(p.Src), FormatIP(p.Dst), p.Length)
	switch p.Proto {
	case ProtoTCP:
		s += fmt.Sprintf("TCP SPT=%d DPT=%d", p.SrcPort, p.DstPort)
	case ProtoUDP:
		s += fmt.Sprintf("UDP SPT=%d DPT=%d", p.SrcPort, p.DstPort)
	case ProtoICMP:
		s += fmt.Sprintf("ICMP TYPE=%d CODE=%d", p.ICMPType, p.ICMPCode)
	default:
		s += fmt.Sprint(p.Proto)
	}
	if p.Mark != 0 {
		s += fmt.Sprintf(" MARK=0x%x", p.Mark)
	}
	return s
}
