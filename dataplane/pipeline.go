package dataplane

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
	"time"

	"xnat/dataplane/header"
	"xnat/dataplane/rules"
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
	// ActKernel: the frame is not for xnat (not IPv4); hand it to the
	// kernel.
	ActKernel
)

func (a Action) String() string {
	return [...]string{"drop", "forward", "reply", "kernel"}[a]
}

// Result is the pipeline's decision for one frame.
type Result struct {
	Action Action
	Reason Reason
	Port   uint16
	Len    int
}

// Settings are the pipeline's run-time knobs, shared by all cores and
// changed atomically (xnatctl sysctl).
type Settings struct {
	// TCPLoose picks up TCP connections already established
	// (nf_conntrack_tcp_loose, on by default).
	TCPLoose atomic.Bool
	// ICMPRate and ICMPBurst limit the ICMP errors each core generates
	// (per second, token bucket).
	ICMPRate, ICMPBurst atomic.Int64
	// SweepBudget is how many records a core's expiry sweep examines per
	// batch; 0 (the default) paces it by the clock instead: each core
	// passes over its connections once a second (sweepPass), whatever the
	// packet rate, taking per batch the records due since its last sweep,
	// from sweepMin to sweepMax. An expired connection is invisible to lookups at
	// once; the sweep only hands back its record and its port, so a
	// second is soon enough, and at line rate a batch sweeps a few
	// records rather than the hundreds a per-batch quota needs to keep
	// up when batches are few.
	SweepBudget atomic.Int64
}

// NewSettings returns the defaults.
func NewSettings() *Settings {
	s := &Settings{}
	s.TCPLoose.Store(true)
	s.ICMPRate.Store(1000)
	s.ICMPBurst.Store(50)
	s.SweepBudget.Store(0)
	return s
}

// Dataplane holds what every core's pipeline shares: the flow table, the
// current Env, the NAT pools and the settings.
type Dataplane struct {
	Table    *flowtable.Table
	Pools    *Pools
	Settings *Settings
	env      atomic.Pointer[Env]
	start    time.Time
	pubs     []published
	pipes    []*Pipeline
}

// New makes a dataplane over a flow table with one pipeline per core.
func New(tab *flowtable.Table, pools *Pools, settings *Settings, env *Env) *Dataplane {
	d := &Dataplane{Table: tab, Pools: pools, Settings: settings, start: tab.Start(), pubs: make([]published, tab.Cores())}
	d.env.Store(env)
	seed := uint64(time.Now().UnixNano()) | 1
	for c := range tab.Cores() {
		d.pipes = append(d.pipes, &Pipeline{d: d, core: c, ct: tab.Core(c), pub: &d.pubs[c],
			icmpTokens: settings.ICMPBurst.Load(), backendSeed: seed})
	}
	return d
}

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

// The next-hop cache is in two parts, so that the part every packet reads
// stays small: nhDst maps a destination to an index into nh, in 8 bytes
// (the destination above, the index below, 0 for none), and nh holds the
// few distinct next hops themselves (a port and a MAC address), which many
// destinations share. A thousand destinations behind one gateway take 8 KB
// of nhDst and one nhEntry; with the whole entry per destination (32
// bytes) the cache alone was as large as the first-level data cache, and
// a packet of BenchmarkPipelineCounted/udp missed there 8.2 times instead
// of 7.2 (callgrind's cache simulation, 32 KB 8-way).
//
// Both are per core and cleared whenever the Env changes (resetNextHops):
// a route or neighbour change takes effect at the next batch.
type nhEntry struct {
	port uint16
	mac  [6]byte
	// The egress port's MAC address and MTU, so that the established path
	// needs nothing else.
	srcMAC [6]byte
	mtu    uint16
}

const (
	nhDstBits = 10
	nhDstSize = 1 << nhDstBits // destinations cached
	nhSize    = 256            // distinct next hops cached, entry 0 unused
)

// NeighMiss is a next hop the pipeline needed and had no link-layer
// address for: the control path asks the kernel to resolve it.
type NeighMiss struct {
	IfIndex int
	IP      uint32
}

// Pipeline is one core's packet path. Only that core's goroutine uses it.
type Pipeline struct {
	d    *Dataplane
	core int
	ct   *flowtable.Core
	env  *Env
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
	nhLen int // entries of nh in use, counting the unused 0

	icmpTokens int64
	icmpLast   int64

	backendSeed uint64

	misses    [64]NeighMiss
	missHead  atomic.Uint32
	missTail  atomic.Uint32
	lastMiss  uint32
	lastMissT flowtable.Time

	// noFast turns the established path off, and fastLast is how many of
	// the last batch's packets took it: for the tests that hold the path to
	// handle.
	noFast   bool
	fastLast uint64
	// goFast runs the fast path's Go loops (the parser's and the
	// established path's) where the assembly ones would run: for the
	// tests that hold each pair to each other.
	goFast bool
	// fastPkts and fastBytes: the packets and IP bytes the established
	// path forwarded in this batch (kept here, in memory, rather than in
	// two of the loop's registers).
	fastPkts, fastBytes uint64

	meta [batchMax]meta
	keys [batchMax]flowtable.Tuple
	refs [batchMax]flowtable.Ref
	gone [128]flowtable.Gone
}

const batchMax = 64

// Frame-kinds the parser distinguishes.
const (
	kDone      = iota // already decided
	kTCP              // TCP segment
	kUDP              // UDP datagram
	kICMPQuery        // ICMP echo/timestamp, tracked by identifier
	kICMPError        // ICMP error about the datagram embedded in it
	kOther            // another protocol, tracked by addresses only
)

// meta is what parsing found in one frame.
type meta struct {
	kind     uint8
	ttl      uint8 // TCP and UDP: the TTL as received
	in       uint16
	l3, l4   uint16 // offsets of the IPv4 and transport headers
	ipLen    uint16
	proto    uint8
	tcpFlags uint8
	icmpType uint8
	icmpCode uint8
	eL3, eL4 uint16 // ICMP errors: offsets of the embedded IPv4 and transport headers
	eProto   uint8
	eQuery   uint8  // embedded ICMP query: 1 request, 2 reply
	qbase    uint16 // quietBase: the established path's part of quietIndex
	// TCP and UDP: the IPv4 header's and the transport header's checksums
	// as received, so that the established path writes the headers it
	// rewrites without reading them again.
	ipCsum, l4Csum uint16
}

// Process runs a batch of frames through the pipeline. frames[i] holds
// sizes[i] bytes received on port in[i]; its capacity bounds what a
// generated reply may use. out[i] receives the decision; forwarded and
// generated frames are rewritten in place. It allocates nothing.
func (p *Pipeline) Process(frames [][]byte, sizes []int, in []uint16, out []Result) {
	for len(frames) > 0 {
		n := min(len(frames), batchMax)
		p.process(frames[:n], sizes[:n], in[:n], out[:n])
		frames, sizes, in, out = frames[n:], sizes[n:], in[n:], out[n:]
	}
}

func (p *Pipeline) process(frames [][]byte, sizes []int, in []uint16, out []Result) {
	d := p.d
	p.env = d.env.Load()
	if p.env.gen != p.envGen {
		p.envGen = p.env.gen
		p.resetNextHops()
	}
	el := time.Since(d.start) // d.start is the table's: one clock reading
	p.nowNs = int64(el)
	p.now = flowtable.TimeAt(el)
	p.nowSec = uint32(el / time.Second)
	p.ct.Enter()

	// Count every frame in and parse it, the common ones on the fast path
	// and the rest (rest) on the full one; collect the keys to look up.
	// (The slices cut to the batch's length let the compiler drop bounds
	// checks.)
	sizes, in, out = sizes[:len(frames)], in[:len(frames)], out[:len(frames)]
	metas, keys, refs := p.meta[:len(frames)], p.keys[:len(frames)], p.refs[:len(frames)]
	rest, nk := p.parseFast(frames, sizes, in)
	for ; rest != 0; rest &= rest - 1 {
		i := bits.TrailingZeros64(rest)
		m := &metas[i]
		out[i] = Result{}
		frame := frames[i][:sizes[i]]
		if int(m.in) >= len(p.env.Ports) {
			m.kind = kDone
			p.finish(&out[i], ActDrop, ReasonNoPort, 0, 0)
			continue
		}
		if r := p.parse(frame, m, &keys[i]); r != ReasonNone {
			m.kind = kDone
			p.finish(&out[i], ActDrop, r, 0, 0)
			if r == ReasonNotIPv4 {
				out[i].Action = ActKernel
				p.cnt.ToKernel++
			}
			continue
		}
		if m.kind == kDone {
			continue
		}
		if frame[m.l3+8] <= 1 { // the TTL
			p.ttlExceeded(frames[i], sizes[i], m, &out[i])
			m.kind = kDone
			continue
		}
		nk++
	}
	// Look the keys up together so their cache misses overlap.
	if nk > 0 {
		if found := p.ct.LookupBatch(keys, refs, p.now); found < len(frames) && p.lastAlloc != nil && d.Table.Prefetches() {
			p.prefetchReplies(metas, keys, refs)
		}
	}
	// With no rules in filter FORWARD and an ACCEPT policy, packets that
	// change nothing in their connection take the established path; its
	// policy counts are added once a batch.
	fwd, policyOnly := p.env.Rules.PolicyOnly(rules.Forward)
	// The established path takes the batch in order as far as it can; at a
	// packet it cannot take, handle takes that one and the established path
	// goes on after it, so every connection's packets are tracked in the
	// order they came.
	fast := policyOnly && fwd.Action == rules.Accept && !p.noFast
	p.fastPkts, p.fastBytes = 0, 0
	for i := 0; ; i++ {
		if fast {
			from := i
			i = p.established(i, frames, sizes, out)
			p.accountFast(from, i)
		}
		if i >= len(frames) {
			break
		}
		if m := &metas[i]; m.kind != kDone {
			out[i] = Result{}
			p.handle(frames[i], sizes[i], m, &keys[i], refs[i], &out[i])
		}
	}
	fastPkts := p.fastPkts
	p.env.Rules.CountPolicyN(rules.Forward, p.core, fastPkts, p.fastBytes)
	p.cnt.Forwarded += fastPkts
	p.fastLast = fastPkts

	// Expire connections and give their ports back.
	budget := int(d.Settings.SweepBudget.Load())
	if budget <= 0 {
		budget = max(p.sweepDue(d.Table.Count()/d.Table.Cores()+1), sweepMin)
	}
	n := p.ct.Sweep(p.now, budget, p.gone[:])
	for _, g := range p.gone[:n] {
		if a := d.Pools.allocator(auxPool(g.Aux), p.core); a != nil {
			a.Release(&g.Orig, &g.Reply)
		}
	}
	p.env.Rules.Flush(p.core)
	p.ct.Exit()
	p.cnt.Batches++
	if fastPkts == uint64(len(frames)) {
		p.pub.storeFast(&p.cnt, len(p.env.Ports))
	} else {
		p.pub.store(&p.cnt)
	}
}

// sweepPass is how long the paced sweep takes over a core's connections;
// sweepMax bounds one batch's share of it (a few microseconds of
// sequential reads), which only a core back from idle reaches. Every
// batch sweeps at least sweepMin records, so that small tables are swept
// within a few batches.
const (
	sweepPass = int64(time.Second)
	sweepMax  = 1024
	sweepMin  = 8
)

// sweepDue is the paced sweep budget: the part of a pass over share
// records that has fallen due since the last sweep. Time short of a whole
// record stays due for the next batch.
func (p *Pipeline) sweepDue(share int) int {
	el := p.nowNs - p.sweptNs
	if el <= 0 {
		return 0
	}
	if el > sweepPass { // after a long gap, one pass is due at most
		el = sweepPass
		p.sweptNs = p.nowNs - sweepPass
	}
	due := int64(share) * el / sweepPass
	if due == 0 {
		return 0
	}
	if due >= sweepMax {
		p.sweptNs = p.nowNs
		return sweepMax
	}
	p.sweptNs += due * sweepPass / int64(share)
	return int(due)
}

func (p *Pipeline) finish(r *Result, a Action, reason Reason, port uint16, n int) {
	*r = Result{Action: a, Reason: reason, Port: port, Len: n}
	if a == ActDrop {
		p.cnt.Drops[reason]++
	}
}

// The shortest frames parseFast takes: untagged Ethernet, IPv4 without
// options, and a whole UDP header or TCP header.
const (
	fastUDPLen = header.EthernetLen + header.IPv4MinLen + header.UDPLen
	fastTCPLen = header.EthernetLen + header.IPv4MinLen + header.TCPMinLen
)

// parseFast counts each frame of the batch in on its port, and parses
// those that are what nearly every packet is: untagged Ethernet, IPv4
// without options and not a later fragment, with a TTL above one,
// carrying TCP or UDP. It reads fixed offsets of arrays whose length is
// checked once, filling each frame's meta and key exactly as parse would
// (FuzzParseFast holds the two together). It returns the mask of the
// frames it left to parse (any other frame, good or bad: parse then finds
// what is wrong with it or what else it is), and how many it took. The
// batch holds at most batchMax frames.
//
// This is the Go loop; on amd64 the same loop in assembly runs it
// (fastpath_amd64.s, TestParseFastAsmMatchesGo), except under the race
// detector.
func (p *Pipeline) parseFastGo(frames [][]byte, sizes []int, in []uint16) (rest uint64, took int) {
	metas, keys := p.meta[:len(frames)], p.keys[:len(frames)]
	sizes, in = sizes[:len(frames)], in[:len(frames)]
	// The receive counters are kept for a run of frames from one port (a
	// queue's batch is one run) and added when the port changes.
	var rx rxRun
	nports := len(p.env.Ports)
	for i := range frames {
		m := &metas[i]
		frame := frames[i][:sizes[i]]
		port := in[i]
		if port != rx.port {
			rx.flush(p)
			rx.port = port
		}
		rx.pkts++
		rx.bytes += uint64(len(frame))
		m.in = port
		// A frame from a port the environment lacks is left to the full
		// path, which drops it (no_port).
		if len(frame) < fastUDPLen || int(port) >= nports {
			rest |= 1 << i
			continue
		}
		h := (*[fastUDPLen]byte)(frame)
		ip := (*[header.IPv4MinLen]byte)(h[header.EthernetLen:])
		tl := int(binary.BigEndian.Uint16(ip[2:]))
		// EtherType IPv4, then version 4 with IHL 5: three bytes, one compare.
		if binary.BigEndian.Uint32(h[12:])>>8 != header.EtherTypeIPv4<<8|0x45 ||
			header.EthernetLen+tl > len(frame) || ip[6]&0x1f != 0 || ip[7] != 0 || ip[8] <= 1 || !header.Valid20(ip) {
			rest |= 1 << i
			continue
		}
		l4 := (*[header.UDPLen]byte)(h[header.EthernetLen+header.IPv4MinLen:])
		proto := ip[9]
		switch proto {
		case header.ProtoUDP:
			n := int(binary.BigEndian.Uint16(l4[4:]))
			if tl < header.IPv4MinLen+header.UDPLen || n < header.UDPLen || n > tl-header.IPv4MinLen {
				rest |= 1 << i
				continue
			}
			m.kind, m.qbase = kUDP, quietBase(kUDP, 0, true)
			m.l4Csum = binary.BigEndian.Uint16(l4[6:])
		case header.ProtoTCP:
			if tl < header.IPv4MinLen+header.TCPMinLen { // then the frame holds fastTCPLen bytes
				rest |= 1 << i
				continue
			}
			t := (*[fastTCPLen]byte)(frame)
			if off := int(t[fastUDPLen+4]>>4) * 4; off < header.TCPMinLen || off > tl-header.IPv4MinLen {
				rest |= 1 << i
				continue
			}
			m.kind, m.tcpFlags = kTCP, t[fastUDPLen+5]
			m.qbase = quietBase(kTCP, m.tcpFlags, true)
			m.l4Csum = binary.BigEndian.Uint16(t[fastUDPLen+8:])
		default:
			rest |= 1 << i
			continue
		}
		m.l3, m.l4, m.ipLen, m.proto = header.EthernetLen, header.EthernetLen+header.IPv4MinLen, uint16(tl), proto
		m.ttl, m.ipCsum = ip[8], binary.BigEndian.Uint16(ip[10:])
		keys[i].Set(proto, binary.BigEndian.Uint32(ip[12:]), binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint32(ip[16:]), binary.BigEndian.Uint16(l4[2:]))
		took++
	}
	rx.flush(p)
	return rest, took
}

// rxRun is a run of frames received on one port, not yet counted.
type rxRun struct {
	port        uint16
	pkts, bytes uint64
}

// flush counts the run on its port, if the environment has that port.
func (r *rxRun) flush(p *Pipeline) {
	if r.pkts != 0 && int(r.port) < len(p.env.Ports) && int(r.port) < len(p.cnt.Ports) {
		pc := &p.cnt.Ports[r.port]
		pc.RxPackets += r.pkts
		pc.RxBytes += r.bytes
	}
	r.pkts, r.bytes = 0, 0
}

// parse checks a frame's headers and fills m and the lookup key.
func (p *Pipeline) parse(frame []byte, m *meta, key *flowtable.Tuple) Reason {
	if len(frame) < header.EthernetLen {
		return ReasonShortFrame
	}
	eth := header.Ethernet(frame)
	l3 := header.EthernetLen
	et := eth.Type()
	if et == header.EtherTypeVLAN {
		if len(frame) < header.EthernetLen+header.VLANLen {
			return ReasonShortFrame
		}
		et = eth.InnerType()
		l3 += header.VLANLen
	}
	if et != header.EtherTypeIPv4 {
		return ReasonNotIPv4
	}
	if len(frame) < l3+header.IPv4MinLen {
		return ReasonShortFrame
	}
	ip := header.IPv4(frame[l3:])
	if ip.Version() != 4 {
		return ReasonIPVersion
	}
	hl := ip.HeaderLen()
	if hl < header.IPv4MinLen || l3+hl > len(frame) {
		return ReasonIPHeaderLen
	}
	tl := int(ip.TotalLen())
	if tl < hl || l3+tl > len(frame) {
		return ReasonIPTotalLen
	}
	if hl == header.IPv4MinLen {
		if !ip.IsValidChecksum20() {
			return ReasonIPChecksum
		}
	} else if !ip.IsValidChecksum() {
		return ReasonIPChecksum
	}
	if ip.FragOffset() != 0 {
		return ReasonFragment
	}
	m.l3, m.l4, m.ipLen = uint16(l3), uint16(l3+hl), uint16(tl)
	m.proto = ip.Protocol()
	m.qbase = notQuiet
	payload := frame[l3+hl : l3+tl]
	src, dst := ip.Src(), ip.Dst()
	switch m.proto {
	case header.ProtoTCP:
		if len(payload) < header.TCPMinLen {
			return ReasonL4Header
		}
		t := header.TCP(payload)
		if off := t.DataOffset(); off < header.TCPMinLen || off > len(payload) {
			return ReasonL4Header
		}
		m.kind, m.tcpFlags = kTCP, t.Flags()
		m.qbase = quietBase(kTCP, m.tcpFlags, hl == header.IPv4MinLen)
		m.ttl, m.ipCsum, m.l4Csum = ip.TTL(), ip.Checksum(), t.Checksum()
		key.Set(header.ProtoTCP, src, t.SrcPort(), dst, t.DstPort())
	case header.ProtoUDP:
		if len(payload) < header.UDPLen {
			return ReasonL4Header
		}
		u := header.UDP(payload)
		if n := int(u.Length()); n < header.UDPLen || n > len(payload) {
			return ReasonL4Header
		}
		m.kind, m.qbase = kUDP, quietBase(kUDP, 0, hl == header.IPv4MinLen)
		m.ttl, m.ipCsum, m.l4Csum = ip.TTL(), ip.Checksum(), u.Checksum()
		key.Set(header.ProtoUDP, src, u.SrcPort(), dst, u.DstPort())
	case header.ProtoICMP:
		if len(payload) < header.ICMPLen {
			return ReasonL4Header
		}
		c := header.ICMPv4(payload)
		m.icmpType, m.icmpCode = c.Type(), c.Code()
		switch {
		case header.ICMPIsQuery(m.icmpType):
			m.kind = kICMPQuery
			*key = icmpKey(src, dst, m.icmpType, c.ID())
		case header.ICMPIsError(m.icmpType):
			if r := parseEmbedded(payload, m, key); r != ReasonNone {
				return r
			}
			m.kind = kICMPError
		default:
			m.kind = kOther
			key.Set(header.ProtoICMP, src, 0, dst, 0)
		}
	default:
		m.kind = kOther
		key.Set(m.proto, src, 0, dst, 0)
	}
	return ReasonNone
}

// icmpKey is the tuple of an ICMP query: the identifier in SrcPort for a
// request, in DstPort for a reply (flowtable.Tuple's convention).
func icmpKey(src, dst uint32, typ uint8, id uint16) flowtable.Tuple {
	if header.ICMPIsRequest(typ) {
		return flowtable.MakeTuple(header.ProtoICMP, src, id, dst, 0)
	}
	return flowtable.MakeTuple(header.ProtoICMP, src, 0, dst, id)
}

// parseEmbedded reads the datagram an ICMP error carries and makes the
// lookup key: the reverse of the embedded datagram's tuple, which is the
// tuple of the direction the error travels in.
func parseEmbedded(payload []byte, m *meta, key *flowtable.Tuple) Reason {
	inner := payload[header.ICMPLen:]
	if len(inner) < header.IPv4MinLen {
		return ReasonL4Header
	}
	eip := header.IPv4(inner)
	ehl := eip.HeaderLen()
	if eip.Version() != 4 || ehl < header.IPv4MinLen || len(inner) < ehl+8 {
		return ReasonL4Header
	}
	m.eL3 = m.l4 + header.ICMPLen
	m.eL4 = m.eL3 + uint16(ehl)
	m.eProto = eip.Protocol()
	l4 := inner[ehl:]
	var t flowtable.Tuple
	switch m.eProto {
	case header.ProtoTCP, header.ProtoUDP:
		t = flowtable.MakeTuple(m.eProto, eip.Src(), binary.BigEndian.Uint16(l4[0:2]), eip.Dst(), binary.BigEndian.Uint16(l4[2:4]))
	case header.ProtoICMP:
		c := header.ICMPv4(l4)
		if !header.ICMPIsQuery(c.Type()) {
			return ReasonL4Header // an error about an error is never sent
		}
		m.eQuery = 2
		if header.ICMPIsRequest(c.Type()) {
			m.eQuery = 1
		}
		t = icmpKey(eip.Src(), eip.Dst(), c.Type(), c.ID())
	default:
		t = flowtable.MakeTuple(m.eProto, eip.Src(), 0, eip.Dst(), 0)
	}
	*key = t.Reverse()
	return ReasonNone
}

// handle decides one parsed frame whose key has been looked up.
func (p *Pipeline) handle(frame []byte, size int, m *meta, key *flowtable.Tuple, ref flowtable.Ref, out *Result) {
	tab := p.d.Table
	if m.kind == kICMPError {
		p.handleICMPError(frame, size, m, ref, out)
		return
	}
	ctstate := rules.CtNew
	if ref != 0 {
		f := tab.Flow(ref)
		v, seen := track(f, ref.Dir(), m.proto, m.tcpFlags, p.now, p.nowSec)
		switch v {
		case ctReopen:
			p.ct.Kill(ref)
			ref = 0
		case ctInvalid:
			ctstate = rules.CtInvalid
		default:
			if seen {
				ctstate = rules.CtEstablished
			}
		}
		if ref != 0 {
			p.forward(frame, size, m, ref, ctstate, out)
			if v == ctKill && out.Action == ActForward {
				p.ct.Kill(ref)
			}
			return
		}
	}
	p.newConnection(frame, size, m, key, out)
}

// backendHash spreads connections over DNAT backends: a keyed mix of the
// whole original tuple, the same on every core, so each connection (not
// each client) picks its backend.
func backendHash(k *flowtable.Tuple, seed uint64) uint32 {
	a := uint64(k.Src)<<32 | uint64(k.Dst)
	b := uint64(k.SrcPort)<<32 | uint64(k.DstPort)<<16 | uint64(k.Proto)
	hi, lo := bits.Mul64(a^seed, b^0x9E3779B97F4A7C15)
	h := hi ^ lo
	return uint32(h>>32) ^ uint32(h)
}

// packetFor fills the rule evaluator's view of a frame.
func (p *Pipeline) packetFor(frame []byte, m *meta, pk *rules.Packet) {
	ip := header.IPv4(frame[m.l3:])
	l4 := frame[m.l4:]
	*pk = rules.Packet{
		Src: ip.Src(), Dst: ip.Dst(), Length: m.ipLen, InIf: m.in, OutIf: rules.NoIface,
		Proto: m.proto, SrcMAC: header.Ethernet(frame).Src(),
	}
	switch m.kind {
	case kTCP:
		t := header.TCP(l4)
		pk.SrcPort, pk.DstPort, pk.TCPFlags = t.SrcPort(), t.DstPort(), m.tcpFlags
	case kUDP:
		u := header.UDP(l4)
		pk.SrcPort, pk.DstPort = u.SrcPort(), u.DstPort()
	case kICMPQuery, kICMPError:
		pk.ICMPType, pk.ICMPCode = m.icmpType, m.icmpCode
	}
}

// forward runs an established (or just created) connection's packet
// through filter FORWARD, translates it and sends it on its way.
func (p *Pipeline) forward(frame []byte, size int, m *meta, ref flowtable.Ref, ctstate rules.CtState, out *Result) {
	tab := p.d.Table
	f := tab.Flow(ref)
	// The packet leaves as the opposite direction's tuple reversed; that
	// tuple is read in place rather than copied and reversed on the stack
	// (a tuple built field by field and then read whole stalls on store
	// forwarding: 5% of BenchmarkPipeline's profile).
	other := f.TuplePtr(1 - ref.Dir())
	st := f.Status()
	if st&flowtable.FlagSrcNAT != 0 {
		ctstate |= rules.CtSNAT
	}
	if st&flowtable.FlagDstNAT != 0 {
		ctstate |= rules.CtDNAT
	}
	// nextHop, its cache hit inlined: a call is too dear.
	nh := p.nhHit(other.Src)
	if nh == nil {
		var r Reason
		if nh, r = p.resolveNextHop(other.Src); r != ReasonNone {
			p.finish(out, ActDrop, r, 0, 0)
			return
		}
	}
	port := nh.port
	rs := p.env.Rules
	v, policyOnly := rs.PolicyOnly(rules.Forward)
	if policyOnly {
		// No rules to match: only the policy counts the packet.
		rs.CountPolicy(rules.Forward, p.core, m.ipLen)
	} else {
		var pk rules.Packet
		p.packetFor(frame, m, &pk)
		pk.OutIf = port
		pk.CtState = ctstate
		pk.CtMark = f.Mark()
		v = rs.Filter(rules.Forward, &pk, p.core, p.nowNs)
		if pk.CtMark != f.Mark() {
			f.SetMark(pk.CtMark)
		}
	}
	// The established path, written out rather than through refused and
	// send: through them, BenchmarkPipeline/udp/1000 was slower in each of
	// four alternated runs of both builds (by 9–28%).
	switch v.Action {
	case rules.Drop:
		if ctstate&rules.CtInvalid != 0 {
			p.finish(out, ActDrop, ReasonInvalid, 0, 0)
		} else {
			p.finish(out, ActDrop, ReasonFiltered, 0, 0)
		}
		return
	case rules.Reject:
		p.reject(frame, size, m, v.Reject, out)
		return
	}
	if int(m.ipLen) > p.env.Ports[port].MTU {
		p.tooBig(frame, size, m, port, out)
		return
	}
	p.translate(frame, m, other)
	p.emit(frame, size, m, port, &nh.mac, out)
	p.d.Table.Account(ref, int(m.ipLen))
}

// established forwards, from frames[from] on, the packets that change
// nothing in their connection but the last-seen time (TCP or UDP, IPv4
// without options, quiet), while filter FORWARD has no rules and accepts
// (the caller checks that once a batch): the common case, decided and
// rewritten in a loop that makes no call. Frames already decided are
// passed over. It stops at the first packet it cannot take, having
// changed nothing for it (a state change, IP options, a next hop not in
// the cache, a packet too big for the egress MTU, a new connection), and
// returns its index, or len(frames). It adds the packets and IP bytes it
// forwarded to fastPkts and fastBytes, which the caller adds to Forwarded
// and the FORWARD policy's counters; handle then takes that packet from
// the start.
//
// This is the Go loop; on amd64 the same loop in assembly runs it
// (fastpath_amd64.s, TestEstablishedAsmMatchesGo), except under the
// race detector.
func (p *Pipeline) establishedGo(from int, frames [][]byte, sizes []int, out []Result) int {
	metas, keys, refs := p.meta[:len(frames)], p.keys[:len(frames)], p.refs[:len(frames)]
	sizes, out = sizes[:len(frames)], out[:len(frames)]
	tab := p.d.Table
	now := p.now
	i := from
	for ; i < len(frames); i++ {
		m := &metas[i]
		if m.kind == kDone {
			continue
		}
		ref := refs[i]
		if ref == 0 {
			break
		}
		f := tab.Flow(ref)
		dir := ref.Dir()
		if !quietSet[quietIndex(f.Status(), dir, m.qbase)] { // TCP or UDP, no IP options
			break
		}
		other := f.TuplePtr(dir ^ 1)
		// An empty slot (0) matches only destination 0.0.0.0, and points
		// at nh[0], never written: its MTU of 0 refuses every packet.
		e := p.nhDst[nhSlot(other.Src)]
		nh := &p.nh[uint8(e)]
		if uint32(e>>32) != other.Src || m.ipLen > nh.mtu {
			break
		}
		f.Touch(now)
		// header.RewriteNATFields, its parts inlined, on fields found
		// without bounds checks (natFields: parse has checked them all).
		udp := m.kind == kUDP
		eth, ip, l4, csum := natFields(frames[i], m.l3, udp)
		// What the parser read of the headers (the key, the meta's TTL and
		// checksums) is what they hold, so they are written, not read: with
		// a batch's frames in a UMEM's chunks of a power of two, their
		// headers share a few sets of the first-level cache, and a read
		// would miss there.
		k := &keys[i]
		ports := uint32(other.DstPort)<<16 | uint32(other.SrcPort)
		dA := header.AddrsDelta(k.Src, k.Dst, other.Dst, other.Src)
		dP := header.PortsDelta(uint32(k.SrcPort)<<16|uint32(k.DstPort), ports)
		header.PutIPv4NAT(ip, other.Dst, other.Src, m.ttl, m.ipCsum, dA)
		header.PutPorts(l4, ports)
		header.PutL4Checksum(csum, udp, m.l4Csum, dA+dP)
		*(*[6]byte)(eth[0:]) = nh.mac
		*(*[6]byte)(eth[6:]) = nh.srcMAC
		size := sizes[i]
		out[i] = Result{Action: ActForward, Port: nh.port, Len: size}
		pc := &p.cnt.Ports[nh.port]
		pc.TxPackets++
		pc.TxBytes += uint64(size)
		p.fastPkts++
		p.fastBytes += uint64(m.ipLen)
	}
	return i
}

// accountFast adds the packets the established path forwarded, frames
// from up to to, to their connections' counters (nf_conntrack_acct),
// when the table keeps them: every one of them not decided already went
// that way. A pass of its own, so the established loop carries no flag
// and no table for it.
func (p *Pipeline) accountFast(from, to int) {
	tab := p.d.Table
	if !tab.Acct() {
		return
	}
	metas, refs := p.meta[:to], p.refs[:to]
	for j := from; j < to; j++ {
		if metas[j].kind != kDone {
			tab.Account(refs[j], int(metas[j].ipLen))
		}
	}
}

// prefetchReplies starts on their way the index lines of the reply
// tuples the batch's new connections will most likely be inserted with:
// behind the external address this core's last translated connection got
// (the one address of most gateways), with the ports its allocator will
// most likely give a TCP or UDP packet from an inside port that found no
// connection (portalloc.Allocator.Likely: the packet's own source port,
// and the port the search starts at when that one may be taken). Each
// insert reads those lines to see that its reply tuple is free;
// prefetched together, their misses overlap one another and the rule
// evaluation before each insert. A wrong guess costs a prefetch.
func (p *Pipeline) prefetchReplies(metas []meta, keys []flowtable.Tuple, refs []flowtable.Ref) {
	a, ext := p.lastAlloc, p.lastExt
	n := 0
	for i := range refs {
		m := &metas[i]
		if refs[i] != 0 || (m.kind != kTCP && m.kind != kUDP) || p.env.Ports[m.in].Outside || n+2 > len(p.guess) {
			continue
		}
		k := &keys[i]
		ports, np := a.Likely(k, ext)
		for _, port := range ports[:np] {
			p.guess[n].Set(k.Proto, k.Dst, k.DstPort, ext, port)
			n++
		}
	}
	p.d.Table.Prefetch(p.guess[:n])
}

// refused carries out a filter verdict other than ACCEPT (a drop counted as
// dropAs, or a REJECT's answer) and reports whether it did.
func (p *Pipeline) refused(frame []byte, size int, m *meta, v rules.Verdict, dropAs Reason, out *Result) bool {
	switch v.Action {
	case rules.Drop:
		p.finish(out, ActDrop, dropAs, 0, 0)
		return true
	case rules.Reject:
		p.reject(frame, size, m, v.Reject, out)
		return true
	}
	return false
}

// send forwards an accepted packet on port to mac: too big for the port's
// MTU, it gets the router's answer; else it is translated to the reverse
// of other, its connection's opposite direction (or, with no other, only
// has its TTL decremented), sent, and counted on its connection when it
// has one.
func (p *Pipeline) send(frame []byte, size int, m *meta, ref flowtable.Ref, other *flowtable.Tuple, port uint16, mac *[6]byte, out *Result) {
	if int(m.ipLen) > p.env.Ports[port].MTU {
		p.tooBig(frame, size, m, port, out)
		return
	}
	if other != nil {
		p.translate(frame, m, other)
	} else {
		header.IPv4(frame[m.l3:]).DecTTL()
	}
	p.emit(frame, size, m, port, mac, out)
	if ref != 0 {
		p.d.Table.Account(ref, int(m.ipLen))
	}
}

// emit finishes a forwarded frame whose TTL has been decremented: MAC
// addresses, counters.
func (p *Pipeline) emit(frame []byte, size int, m *meta, port uint16, mac *[6]byte, out *Result) {
	eth := header.Ethernet(frame)
	eth.SetDst(*mac)
	eth.SetSrc(p.env.Ports[port].MAC)
	p.finish(out, ActForward, ReasonNone, port, size)
	p.cnt.Forwarded++
	pc := &p.cnt.Ports[port]
	pc.TxPackets++
	pc.TxBytes += uint64(size)
}

// translate rewrites the packet's addresses and ports (or ICMP
// identifier) to the reverse of other, the connection's opposite
// direction, and decrements its TTL, with incremental checksum updates
// (one for the IPv4 header covering both). TCP and UDP, whose headers
// parse found whole, take header.RewriteNAT.
func (p *Pipeline) translate(frame []byte, m *meta, other *flowtable.Tuple) {
	if m.kind == kTCP || m.kind == kUDP {
		header.RewriteNAT(frame, int(m.l3), int(m.l4), m.kind == kUDP, other.Dst, other.Src, uint32(other.DstPort)<<16|uint32(other.SrcPort))
		return
	}
	ip := header.IPv4(frame[m.l3:])
	src, dst := ip.Src(), ip.Dst()
	var dAddr header.Delta
	if src != other.Dst {
		dAddr = dAddr.Add32(src, other.Dst)
		ip.SetSrc(other.Dst)
	}
	if dst != other.Src {
		dAddr = dAddr.Add32(dst, other.Src)
		ip.SetDst(other.Src)
	}
	ttlProto := binary.BigEndian.Uint16(ip[8:10])
	ip[8]--
	ip.SetChecksum(header.Adjust(ip.Checksum(), dAddr.Add16(ttlProto, ttlProto-0x100)))
	l4 := frame[m.l4:]
	switch m.kind {
	case kICMPQuery:
		c := header.ICMPv4(l4)
		id := other.SrcPort
		if header.ICMPIsRequest(m.icmpType) {
			id = other.DstPort
		}
		if old := c.ID(); old != id {
			c.SetID(id)
			c.SetChecksum(header.Adjust(c.Checksum(), header.Delta(0).Add16(old, id)))
		}
	}
}

// rewritePorts sets a TCP or UDP header's ports (bytes 0–3 in both) and
// folds their change and the address delta d into the transport checksum
// at csumOff, when the header reaches it. A UDP checksum of zero means none
// and stays zero; a computed zero is sent as 0xffff (RFC 768).
func rewritePorts(l4 []byte, csumOff int, udp bool, sport, dport uint16, d header.Delta) {
	if sp := binary.BigEndian.Uint16(l4[0:2]); sp != sport {
		d = d.Add16(sp, sport)
		binary.BigEndian.PutUint16(l4[0:2], sport)
	}
	if dp := binary.BigEndian.Uint16(l4[2:4]); dp != dport {
		d = d.Add16(dp, dport)
		binary.BigEndian.PutUint16(l4[2:4], dport)
	}
	if d == 0 || len(l4) < csumOff+2 {
		return
	}
	c := binary.BigEndian.Uint16(l4[csumOff:])
	if udp && c == 0 {
		return
	}
	c = header.Adjust(c, d)
	if udp && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[csumOff:], c)
}

// nextHop resolves where a destination is sent: the egress port and the
// next hop's MAC address, through the per-core next-hop cache (nhDst),
// which holds only what was resolved under the current Env. The entry it
// returns is good until the next call.
func (p *Pipeline) nextHop(dst uint32) (*nhEntry, Reason) {
	if nh := p.nhHit(dst); nh != nil {
		return nh, ReasonNone
	}
	return p.resolveNextHop(dst)
}

// nhHit returns dst's next hop from the cache, or nil.
func (p *Pipeline) nhHit(dst uint32) *nhEntry {
	if e := p.nhDst[nhSlot(dst)]; uint32(e>>32) == dst && uint8(e) != 0 {
		return &p.nh[uint8(e)]
	}
	return nil
}

// nhSlot is the index in nhDst that dst would occupy.
func nhSlot(dst uint32) uint32 {
	return (dst * 0x9E3779B1) >> (32 - nhDstBits)
}

// resolveNextHop is nextHop on a cache miss: route and neighbour lookups,
// then the next hop found in nh or added to it, and dst's slot pointed at
// it. A full nh is emptied first, with every destination that pointed
// into it.
func (p *Pipeline) resolveNextHop(dst uint32) (*nhEntry, Reason) {
	port, nh, ok := p.env.lookupRoute(dst)
	if !ok {
		return nil, ReasonNoRoute
	}
	mac, ok := p.env.neigh[neighKey{port, nh}]
	if !ok {
		p.neighMiss(p.env.Ports[port].IfIndex, nh)
		return nil, ReasonNoNeighbour
	}
	pt := &p.env.Ports[port]
	want := nhEntry{port: port, mac: mac, srcMAC: pt.MAC, mtu: uint16(min(pt.MTU, 0xffff))}
	i := 1
	for i < p.nhLen && p.nh[i] != want {
		i++
	}
	if i >= p.nhLen {
		if p.nhLen == nhSize {
			p.resetNextHops()
			i = 1
		}
		p.nh[i] = want
		p.nhLen = i + 1
	}
	p.nhDst[nhSlot(dst)] = uint64(dst)<<32 | uint64(i)
	return &p.nh[i], ReasonNone
}

// resetNextHops empties the next-hop cache.
func (p *Pipeline) resetNextHops() {
	clear(p.nhDst[:])
	p.nhLen = 1
}

// neighMiss records a next hop to resolve, at most once a second per
// address in a row, in a small ring the control path drains.
func (p *Pipeline) neighMiss(ifindex int, ip uint32) {
	if ip == p.lastMiss && p.now-p.lastMissT < 100 {
		return
	}
	p.lastMiss, p.lastMissT = ip, p.now
	h, t := p.missHead.Load(), p.missTail.Load()
	if t-h == uint32(len(p.misses)) {
		return
	}
	p.misses[t%uint32(len(p.misses))] = NeighMiss{IfIndex: ifindex, IP: ip}
	p.missTail.Store(t + 1)
}

// DrainNeighMisses copies next hops waiting for resolution into out; the
// control path calls it (one reader per pipeline).
func (p *Pipeline) DrainNeighMisses(out []NeighMiss) int {
	n := 0
	h, t := p.missHead.Load(), p.missTail.Load()
	for ; h != t && n < len(out); h++ {
		out[n] = p.misses[h%uint32(len(p.misses))]
		n++
	}
	p.missHead.Store(h)
	return n
}

// newConnection runs a connection's first packet through the nat and
// filter tables, creates the connection and forwards the packet.
func (p *Pipeline) newConnection(frame []byte, size int, m *meta, key *flowtable.Tuple, out *Result) {
	env := p.env
	rs := env.Rules
	var state flowtable.State
	switch m.kind {
	case kTCP:
		s, ok := newTCPState(m.tcpFlags, p.d.Settings.TCPLoose.Load())
		if !ok {
			p.untracked(frame, size, m, out)
			return
		}
		state = s
	case kUDP:
		state = flowtable.UDP
	case kICMPQuery:
		if !header.ICMPIsRequest(m.icmpType) {
			p.untracked(frame, size, m, out) // a reply with no request
			return
		}
		state = flowtable.ICMP
	default:
		state = flowtable.Generic
	}
	var pk rules.Packet
	p.packetFor(frame, m, &pk)
	pk.CtState = rules.CtNew

	nf := flowtable.NewFlow{Orig: *key, Status: uint32(state)}
	dst, dport := key.Dst, key.DstPort
	dn := rs.NAT(rules.Prerouting, &pk, p.core, p.nowNs)
	if dn.Kind == rules.NATDNAT {
		a, port := dn.Pick(backendHash(key, p.backendSeed))
		dst = a
		if port != 0 && (m.kind == kTCP || m.kind == kUDP) {
			dport = port
		}
		nf.Status |= flowtable.FlagDstNAT
	} else if p.env.Ports[m.in].Outside {
		p.finish(out, ActDrop, ReasonUnsolicited, 0, 0)
		return
	}
	nh, r := p.nextHop(dst)
	if r != ReasonNone {
		p.finish(out, ActDrop, r, 0, 0)
		return
	}
	outPort := nh.port
	pk.OutIf = outPort
	if nf.Status&flowtable.FlagDstNAT != 0 {
		pk.CtState |= rules.CtDNAT
		pk.Dst, pk.DstPort = dst, dport
	}
	v := rs.Filter(rules.Forward, &pk, p.core, p.nowNs)
	if p.refused(frame, size, m, v, ReasonFiltered, out) {
		return
	}
	nf.Mark = pk.CtMark
	// The reply tuple: from the (translated) destination back to the source.
	nf.Reply = flowtable.MakeTuple(key.Proto, dst, dport, key.Src, key.SrcPort)
	if m.kind == kICMPQuery {
		nf.Reply = flowtable.MakeTuple(key.Proto, dst, 0, key.Src, key.SrcPort)
	}
	sn := rs.NAT(rules.Postrouting, &pk, p.core, p.nowNs)
	var pool uint16
	var opt portalloc.Options
	switch sn.Kind {
	case rules.NATSNAT:
		pool = env.snatPool[sn.Target]
	case rules.NATMasquerade:
		pool = env.masqPool[[2]uint16{sn.Target, outPort}]
		if pool == 0 {
			p.finish(out, ActDrop, ReasonNoAddress, 0, 0)
			return
		}
	default:
		// Hairpinning (RFC 4787 REQ-9, RFC 5382 REQ-8): an inside host
		// reached another inside host through an outside address. The
		// reply must come back through xnat, so the source becomes that
		// outside address.
		if nf.Status&flowtable.FlagDstNAT != 0 && !p.env.Ports[m.in].Outside && !p.env.Ports[outPort].Outside {
			if hp, ok := env.local[key.Dst]; ok && hp != NoPort && env.Ports[hp].Outside {
				pool = env.masqPool[[2]uint16{hairpinTarget, hp}]
			}
		}
	}
	if sn.Range.Flags&rules.NATRandomFully != 0 {
		opt.Mode = portalloc.ModeRandomFully
	} else if sn.Range.Flags&rules.NATRandom != 0 {
		opt.Mode = portalloc.ModeRandom
	}
	opt.Persistent = sn.Range.Flags&rules.NATPersistent != 0
	nf.Aux = makeAux(pool, p.nowSec)

	var ref flowtable.Ref
	var res flowtable.InsertResult
	if pool != 0 {
		nf.Status |= flowtable.FlagSrcNAT
		a := p.d.Pools.allocator(pool, p.core)
		var ar portalloc.Result
		ref, ar, res = a.Allocate(p.ct, &nf, opt, p.now)
		if ar == portalloc.OK {
			p.lastExt, p.lastAlloc = nf.Reply.Dst, a
			if opt.Mode != portalloc.ModeDefault {
				p.lastAlloc = nil
			}
		}
		switch ar {
		case portalloc.OutOfPorts:
			p.finish(out, ActDrop, ReasonOutOfPorts, 0, 0)
			return
		case portalloc.PerSourceLimit:
			p.finish(out, ActDrop, ReasonPerSource, 0, 0)
			return
		case portalloc.LimiterFull:
			p.finish(out, ActDrop, ReasonPerSourceFull, 0, 0)
			return
		}
	} else {
		ref, res = p.ct.Insert(&nf, p.now)
	}
	switch res {
	case flowtable.Inserted:
		p.cnt.Created++
	case flowtable.Exists:
		// Another core created it a moment ago: it is this packet's.
		if ref == 0 {
			p.finish(out, ActDrop, ReasonInsertFailed, 0, 0)
			return
		}
	case flowtable.Full, flowtable.NoRecord:
		p.finish(out, ActDrop, ReasonTableFull, 0, 0)
		return
	default:
		p.finish(out, ActDrop, ReasonInsertFailed, 0, 0)
		return
	}
	// The first packet leaves as the connection's packets will.
	p.d.Table.Flow(ref).Touch(p.now)
	p.forwardFirst(frame, size, m, ref, out)
}

// forwardFirst sends a connection's first packet: the filter has already
// accepted it, so only the translation and the router's duties remain.
func (p *Pipeline) forwardFirst(frame []byte, size int, m *meta, ref flowtable.Ref, out *Result) {
	other := p.d.Table.Flow(ref).TuplePtr(1 - ref.Dir())
	nh, r := p.nextHop(other.Src)
	if r != ReasonNone {
		p.finish(out, ActDrop, r, 0, 0)
		return
	}
	p.send(frame, size, m, ref, other, nh.port, &nh.mac, out)
}

// untracked handles a packet conntrack cannot track (state INVALID): the
// filter decides, as in Linux, and an accepted one is forwarded as it is.
func (p *Pipeline) untracked(frame []byte, size int, m *meta, out *Result) {
	p.ct.CountInvalid()
	var pk rules.Packet
	p.packetFor(frame, m, &pk)
	pk.CtState = rules.CtInvalid
	ip := header.IPv4(frame[m.l3:])
	if p.env.Ports[m.in].Outside {
		p.finish(out, ActDrop, ReasonUnsolicited, 0, 0)
		return
	}
	nh, r := p.nextHop(ip.Dst())
	if r != ReasonNone {
		p.finish(out, ActDrop, r, 0, 0)
		return
	}
	port, mac := nh.port, nh.mac
	pk.OutIf = port
	v := p.env.Rules.Filter(rules.Forward, &pk, p.core, p.nowNs)
	if p.refused(frame, size, m, v, ReasonInvalid, out) {
		return
	}
	p.send(frame, size, m, 0, nil, port, &mac, out)
}
