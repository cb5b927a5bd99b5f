package dataplane

import (
	"sync"
	"sync/atomic"
	"time"

	"xnat/flowtable"
	"xnat/portalloc"
)

// Action is what the pipeline decided for a frame.
type Action uint8

const (
	// ActDrop: drop the frame; Result.Reason says why.
	ActDrop Action = iota
	// ActForward: the frame was rewritten in place (addresses, ports,
	// checksums, TTL, MAC addresses); transmit Result.Len bytes on
	// Result.Port.
	ActForward
	// ActReply: the frame now holds a reply xnat generated (ICMP error or
	// TCP reset), written over the original in the same buffer; transmit
	// Result.Len bytes on Result.Port. The original is consumed.
	ActReply
	// ActKernel: the frame is not for xnat (not IPv4, or broadcast or
	// multicast); hand it to the kernel.
	ActKernel
	// ActHold: the pipeline keeps the frame, translated, while its next
	// hop's link-layer address is resolved; Result.Hold names it. The
	// caller keeps the frame's buffer (a UMEM frame: accounted as in the
	// pipeline) until the pipeline releases it (Pipeline.Released) to be
	// transmitted, or dropped.
	ActHold
)

func (a Action) String() string {
	if a > ActHold {
		return "unknown"
	}
	return [...]string{"drop", "forward", "reply", "kernel", "hold"}[a]
}

// Result is the pipeline's decision for one frame.
type Result struct {
	Action Action
	Reason Reason
	Port   uint16
	// Hold is the slot of a held frame (ActHold), below HoldCapacity.
	Hold uint16
	Len  int
}

// Settings are the pipeline's run-time knobs, shared by all cores and
// changed atomically (xnatctl sysctl).
type Settings struct {
	// TCPLoose picks up TCP connections already established
	// (nf_conntrack_tcp_loose, on by default).
	TCPLoose atomic.Bool
	// TCPBeLiberal accepts TCP segments out of window
	// (nf_conntrack_tcp_be_liberal, off by default).
	TCPBeLiberal atomic.Bool
	// TCPIgnoreInvalidRst accepts resets below the acknowledged data
	// (nf_conntrack_tcp_ignore_invalid_rst, off by default).
	TCPIgnoreInvalidRst atomic.Bool
	// TCPMaxRetrans is how many retransmissions of one segment shorten a
	// connection's timeout to nf_conntrack_tcp_timeout_max_retrans
	// (nf_conntrack_tcp_max_retrans, 3 by default).
	TCPMaxRetrans atomic.Int64
	// ICMPRate and ICMPBurst limit the ICMP errors each core generates
	// (per second, token bucket).
	ICMPRate, ICMPBurst atomic.Int64
	// UnresQlenBytes bounds the frames each core holds for one next hop
	// being resolved (Linux's unres_qlen_bytes, whose default it takes),
	// each charged its whole buffer (a UMEM frame), as Linux charges an
	// skb's truesize: 104 frames of 2 KiB. A frame beyond it pushes the
	// oldest out (neigh_queue_full).
	UnresQlenBytes atomic.Int64
	// SweepBudget is how many records a core's expiry sweep examines per
	// batch; 0 (the default) paces it by the clock instead: each core
	// passes over the records it holds (Core.Held) once a second (sweepPass), whatever the
	// packet rate, taking per batch the records due since its last sweep,
	// from sweepMin to sweepMax. An expired connection is invisible to lookups at
	// once; the sweep only hands back its record and its port, so a
	// second is soon enough, and at line rate a batch sweeps a few
	// records rather than the hundreds a per-batch quota needs to keep
	// up when batches are few.
	SweepBudget atomic.Int64
	// RPFilter is the reverse-path filter (rpfilter.go): strict on every
	// port by default, as distributions set Linux.
	RPFilter RPFilter
}

// DefaultUnresQlenBytes is Linux's net.ipv4.neigh.default.unres_qlen_bytes.
const DefaultUnresQlenBytes = 212992

// NewSettings returns the defaults.
func NewSettings() *Settings {
	s := &Settings{}
	s.TCPLoose.Store(true)
	s.TCPMaxRetrans.Store(3)
	s.ICMPRate.Store(1000)
	s.ICMPBurst.Store(50)
	s.SweepBudget.Store(0)
	s.UnresQlenBytes.Store(DefaultUnresQlenBytes)
	s.RPFilter.All.Store(RPFilterStrict)
	s.RPFilter.Default.Store(RPFilterStrict)
	return s
}

// Dataplane holds what every core's pipeline shares: the flow table, the
// current Env, the NAT pools and the settings.
type Dataplane struct {
	Table *flowtable.Table
	// Mappings holds the full-cone mappings (fullcone.go).
	Mappings *flowtable.Table
	Pools    *Pools
	Settings *Settings
	env      atomic.Pointer[Env]
	commitMu sync.Mutex // one Commit at a time
	neigh    *NeighTable
	start    time.Time
	pubs     []published
	pipes    []*Pipeline
	// onMiss is told that a pipeline recorded a next hop to resolve
	// (OnNeighMiss); set before any pipeline runs, read-only after.
	onMiss func()
}

// New makes a dataplane over a flow table with one pipeline per core.
func New(tab *flowtable.Table, pools *Pools, settings *Settings, env *Env) *Dataplane {
	d := &Dataplane{Table: tab, Pools: pools, Settings: settings, start: tab.Start(), pubs: make([]published, tab.Cores())}
	d.env.Store(env)
	d.Mappings = newMappingTable(tab)
	seed := uint64(time.Now().UnixNano()) | 1
	for c := range tab.Cores() {
		p := &Pipeline{d: d, core: c, ct: tab.Core(c), mc: d.Mappings.Core(c), pub: &d.pubs[c],
			icmpTokens: settings.ICMPBurst.Load(), backendSeed: seed}
		p.held.init()
		d.pipes = append(d.pipes, p)
	}
	d.UseNeighbours(NewNeighTable())
	d.neigh.Sync(env.neighs)
	return d
}

// Neighbours returns the neighbour table the cores read; it starts with
// the first Env's snapshot's neighbours.
func (d *Dataplane) Neighbours() *NeighTable { return d.neigh }

// UseNeighbours makes the cores read t: for a caller that keeps the
// table current from its own start (the daemon, from the kernel's
// notifications). Call it before any pipeline runs. A neighbour that
// resolves or fails in t wakes the sleeping workers (Wake).
func (d *Dataplane) UseNeighbours(t *NeighTable) {
	d.neigh = t
	wake := d.Wake
	t.wake.Store(&wake)
}

// Wake wakes every core's sleeping worker (Pipeline.SetWaker), for work
// that arrives on no socket. Any goroutine may call it.
func (d *Dataplane) Wake() {
	for _, p := range d.pipes {
		p.wake()
	}
}

// SetWaker gives the pipeline the function that wakes its worker from a
// sleep (ring.UMEM.Wake), or nil for none. The control path calls it
// when it leaves the core work that arrives on no socket: a commit's
// connections, a neighbour resolved for frames the core holds. Without
// one, that work waits for the worker's next wake-up (at most its poll
// timeout). Any goroutine may call it.
func (p *Pipeline) SetWaker(f func()) {
	if f == nil {
		p.waker.Store(nil)
		return
	}
	p.waker.Store(&f)
}

// wake calls the waker, if any.
func (p *Pipeline) wake() {
	if f := p.waker.Load(); f != nil {
		(*f)()
	}
}

// OnNeighMiss sets f to be called on the core that records a next hop to
// resolve (DrainNeighMisses has work), so that the control path asks the
// kernel at once rather than at its next tick. f must not block: a
// non-blocking send on a buffered channel, say. Call it before any
// pipeline runs.
func (d *Dataplane) OnNeighMiss(f func()) { d.onMiss = f }

// Env returns the current environment.
func (d *Dataplane) Env() *Env { return d.env.Load() }

// SetEnv replaces the environment; every core uses the new one from its
// next batch.
func (d *Dataplane) SetEnv(e *Env) { d.env.Store(e) }

// Pipeline returns core c's pipeline.
func (d *Dataplane) Pipeline(c int) *Pipeline { return d.pipes[c] }

// Counters returns each core's published counters.
func (d *Dataplane) Counters() []Counters {
	out := make([]Counters, len(d.pubs))
	for i := range d.pubs {
		out[i] = d.pubs[i].load()
	}
	return out
}

// TotalCounters sums Counters.
func (d *Dataplane) TotalCounters() Counters {
	var sum Counters
	for _, c := range d.Counters() {
		sum.Add(&c)
	}
	return sum
}

// Pipeline is one core's packet path. Only that core's goroutine uses it.
type Pipeline struct {
	d    *Dataplane
	core int
	ct   *flowtable.Core
	mc   *flowtable.Core // this core's handle on Dataplane.Mappings
	// mapOwner: this core has made a mapping, so it sweeps its share of
	// the mapping table.
	mapOwner   bool
	mapSweptNs int64 // the mapping sweep's pacing (paceDue)
	env        *Env
	// envGen is env's generation: the next-hop cache holds what it
	// resolved under that Env.
	envGen uint64
	cnt    Counters
	pub    *published

	now   flowtable.Time
	nowNs int64
	// sweptNs is the clock reading up to which the paced sweep has
	// examined its due (sweepDue).
	sweptNs int64
	nowSec  uint32

	// lastExt is the external address this core's last translated
	// connection got, and lastAlloc the allocator that gave it (nil before
	// the first, or when its rule searches from random starts); guess
	// holds the reply tuples prefetchReplies expects.
	lastExt   uint32
	lastAlloc *portalloc.Allocator
	guess     [2 * batchMax]flowtable.Tuple

	nhDst [nhDstSize]uint64
	nh    [nhSize]nhEntry
	nhNb  [nhSize]nhNeigh
	nhLen int // entries of nh in use, counting the unused 0

	// tp: the TCP tracking sysctls, read once a batch.
	tp tcpParams
	// protoInit and newTCPClass: the window state and timeout class of
	// the TCP connection being created (newTCPProto).
	protoInit   [flowtable.ProtoWords]uint32
	newTCPClass uint32

	icmpTokens int64
	icmpLast   int64

	backendSeed uint64

	// The neighbour table as this core last saw it (neighGen, and its
	// slot array, which the next-hop cache's entries point into).
	neighGen   uint64
	neighSlots *neighSlots
	// unres is the next hop resolveNextHop found without a usable
	// neighbour (port and MTU; no address): frames sent to it are held
	// for unresIf and unresIP.
	unres   nhEntry
	unresIf int
	unresIP uint32
	// curKey is the lookup key of the frame handle is deciding: a held
	// frame keeps it, so its translation can be undone to answer it.
	curKey *flowtable.Tuple
	held   holdState

	misses   [64]NeighMiss
	missHead atomic.Uint32
	missTail atomic.Uint32

	// syncq is the connection-event ring (EnableSync), nil while sync is
	// off; sq is its value for the current batch.
	syncq atomic.Pointer[syncQueue]
	sq    *syncQueue
	// commitq is the HA commit this core has yet to insert (commit.go),
	// nil when there is none.
	commitq atomic.Pointer[commitJob]
	// waker wakes this core's sleeping worker (SetWaker); nil for none.
	waker atomic.Pointer[func()]

	// noFast turns the established path off, and fastLast is how many of
	// the last batch's packets took it: for the tests that hold the path to
	// handle.
	noFast   bool
	fastLast uint64
	// fastPkts and fastBytes: the packets and IP bytes the established
	// path forwarded in this batch.
	fastPkts, fastBytes uint64

	meta [batchMax]meta
	keys [batchMax]flowtable.Tuple
	refs [batchMax]flowtable.Ref
	gone [128]flowtable.Gone
}

// batchMax is the most frames process takes at once: the parser's fast
// path marks the frames it leaves in one 64-bit mask.
const batchMax = 64
