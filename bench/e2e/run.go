package e2e

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"xnat/ring"
)

// Point is one measurement: a fresh topology, a target set up in it, the
// sink (or reflector) on srv0 and one generator per queue on gen0.
type Point struct {
	Target   string // "kernel", "xnat", or "xdp_drop" (generator into XDP_DROP on dut0)
	Proto    Proto
	Size     int // --size: Ethernet frame with FCS
	Flows    int // established flows
	Queues   int
	Rate     float64 // offered packets/s in total; 0: as fast as possible
	Duration time.Duration
	Reflect  bool
	// MaxConns is the target's connection limit; 0: 2×Flows + 1024.
	MaxConns int
	// Warmup sends every established flow once (at Rate, or as fast as
	// possible) and waits for the sink before measuring, so that the
	// table holds the flows; replies for them too when Reflect.
	Warmup bool
	// New connections during the measurement (see GenConfig): NewRate
	// per second, NewLimit of them; they are never reflected.
	NewRate  float64
	NewLimit int
	// Placement pins the generators, the sink and the device under
	// test; nil pins nothing.
	Placement *Placement
	// KernelRPS steers the kernel target's forwarding to the device
	// under test's CPUs (Placement.DUT) with RPS.
	KernelRPS bool
	// Count ends the measurement after this many frames (0: Duration).
	Count uint64
	// Sync configures the target (xnat) to sync its connections to a
	// peer in a namespace of its own over a dedicated veth (see
	// SyncOutcome).
	Sync bool
}

// Outcome is what a Point measured, with its accounting.
type Outcome struct {
	Point
	FrameLen int // bytes handed to the device
	Elapsed  time.Duration
	// Forward direction: generator → sink.
	Sent, SentNew      uint64
	Received, RecvEst  uint64
	RecvNew            uint64
	Bad                map[string]uint64 // frames the sink or generator refused, by verdict
	Refused            uint64            // back-pressure on the generator's TX ring (never sent)
	Reflected, Replies uint64
	TargetDrops        map[string]uint64 // deltas
	PathDrops          map[string]uint64 // veth and socket drops (deltas)
	Conns              int               // connections in the target's table at the end
	// NoTargetCounters: the target serves no drop counters; what is
	// unaccounted was lost in it or went uncounted.
	NoTargetCounters     bool
	Latency, RTT         Histogram
	GenDropRx, GenDropTx uint64
	// Sync is what the sync link carried (Point.Sync).
	Sync *SyncOutcome
}

// Counted is every frame lost at a counted place.
func (o *Outcome) Counted() uint64 {
	var n uint64
	for _, v := range o.TargetDrops {
		n += v
	}
	for _, v := range o.PathDrops {
		n += v
	}
	for _, v := range o.Bad {
		n += v
	}
	return n
}

// Unaccounted is sent − received − counted drops over both directions
// (frames sent by the generator and by the reflector); zero when every
// frame is accounted for.
func (o *Outcome) Unaccounted() int64 {
	sent := o.Sent + o.Reflected
	recv := o.Received + o.Replies
	return int64(sent) - int64(recv) - int64(o.Counted())
}

// PPS is the forward rate received by the sink.
func (o *Outcome) PPS() float64 {
	if o.Elapsed <= 0 {
		return 0
	}
	return float64(o.Received) / o.Elapsed.Seconds()
}

// SentPPS is the generator's rate.
func (o *Outcome) SentPPS() float64 {
	if o.Elapsed <= 0 {
		return 0
	}
	return float64(o.Sent) / o.Elapsed.Seconds()
}

// Loss is the fraction of forward frames sent and not received.
func (o *Outcome) Loss() float64 {
	if o.Sent == 0 {
		return 0
	}
	return 1 - float64(o.Received)/float64(o.Sent)
}

func (p *Point) defaults() error {
	if p.Queues == 0 {
		p.Queues = 1
	}
	if p.Proto == 0 {
		p.Proto = UDP
	}
	if p.Size == 0 {
		p.Size = 64
	}
	if p.Flows < 0 || p.Flows > MaxFlows || p.NewLimit < 0 || p.Flows+p.NewLimit > MaxFlows {
		return fmt.Errorf("%w: %d flows and %d new ones (at most %d)", ErrConfig, p.Flows, p.NewLimit, MaxFlows)
	}
	if p.Flows == 0 && p.NewRate == 0 {
		return fmt.Errorf("%w: no flows", ErrConfig)
	}
	if p.Duration <= 0 && p.Count == 0 {
		return fmt.Errorf("%w: neither a duration nor a count", ErrConfig)
	}
	if p.MaxConns == 0 {
		p.MaxConns = 2*(p.Flows+p.NewLimit) + 1024
	}
	if p.Sync && p.Target != "xnat" {
		return fmt.Errorf("%w: sync needs the xnat target, not %q", ErrConfig, p.Target)
	}
	return nil
}

const numFrames = 4096

// undo is the teardown of what a run has set up: each step's undoing,
// in the order the steps were taken.
type undo []func() error

// add appends a step's undoing.
func (u *undo) add(f func() error) { *u = append(*u, f) }

// run undoes every step, the last first, and joins their errors.
func (u undo) run() error {
	var err error
	for i := len(u) - 1; i >= 0; i-- {
		err = errors.Join(err, u[i]())
	}
	return err
}

// Run measures the point. Everything it creates is removed before it
// returns.
func Run(p Point) (o *Outcome, err error) {
	if err := p.defaults(); err != nil {
		return nil, err
	}
	o = &Outcome{Point: p, FrameLen: FrameLen(p.Proto, p.Size)}
	tp, err := NewTopology(p.Queues)
	if err != nil {
		return nil, err
	}
	closers := undo{tp.Close}
	defer func() {
		if err = errors.Join(err, closers.run()); err != nil {
			o = nil
		}
	}()

	var target Target
	var sink *xskPort
	var peer *syncPeer
	var haLink *HALink
	if p.Sync {
		if peer, haLink, err = startSyncPeer(tp); err != nil {
			return o, err
		}
		closers.add(peer.Close)
	}
	if p.Target == "xdp_drop" {
		d, err := attachDrop(tp.DUT, tp.DUTInIndex)
		if err != nil {
			return o, err
		}
		closers.add(d.Close)
	} else {
		if target, err = NewTarget(p.Target); err != nil {
			return o, err
		}
		if err := target.Setup(tp, TargetConfig{MaxConns: p.MaxConns, CPUs: p.Placement.dut(p.Queues), RPS: p.KernelRPS, HA: haLink}); err != nil {
			return o, errors.Join(err, target.Teardown())
		}
		closers.add(target.Teardown)
		cfg := ring.Config{NumFrames: uint32(numFrames * p.Queues), FillSize: 2048, RxSize: 2048, TxSize: 2048, CompletionSize: 2048}
		if sink, err = openXSK(tp.Srv, tp.SrvIndex, p.Queues, cfg, true); err != nil {
			return o, err
		}
		closers.add(sink.Close)
	}
	tmpl, err := NewTemplate(p.Proto, o.FrameLen, Endpoints{SrcMAC: tp.GenMAC, DstMAC: tp.DUTInMAC, SrcBase: FlowBase, Dst: SrvAddr})
	if err != nil {
		return o, err
	}
	gens := make([]*xskPort, p.Queues)
	for q := range gens {
		// One UMEM per generator: a UMEM belongs to one goroutine.
		cfg := ring.Config{NumFrames: numFrames, FillSize: 1024, RxSize: 1024, TxSize: 2048, CompletionSize: 2048, Poll: ring.PollBusy}
		g, err := openXSKQueue(tp.Gen, tp.GenIndex, q, cfg)
		if err != nil {
			return o, err
		}
		closers.add(g.Close)
		gens[q] = g
	}
	if p.Reflect {
		// Steer replies on gen0 to the generators' sockets.
		st, err := steer(tp.Gen, tp.GenIndex, gens)
		if err != nil {
			return o, err
		}
		closers.add(st.Close)
	}

	sinkCfg := SinkConfig{
		Expect:   Expect{Src: DUTOut, PortLo: 1, PortHi: 65535, Dst: SrvAddr, Proto: p.Proto},
		EstFlows: uint32(p.Flows), Reflect: p.Reflect, Batch: 64,
	}
	reply := Expect{Src: SrvAddr, Proto: p.Proto, Reply: true, SrcBase: FlowBase}
	genCfg := func(q int, warm bool) GenConfig {
		per := uint32(p.Flows / p.Queues)
		first := uint32(q) * per
		if q == p.Queues-1 {
			per = uint32(p.Flows) - first
		}
		c := GenConfig{Template: tmpl, Base: FlowBase, First: first, Flows: per, Batch: 64, Reflect: p.Reflect, ReplyExpect: reply}
		if p.Rate > 0 {
			c.Rate = p.Rate / float64(p.Queues)
		}
		if warm {
			c.Count = uint64(per)
			return c
		}
		c.Duration, c.Count = p.Duration, p.Count/uint64(p.Queues)
		if q == 0 && p.NewRate != 0 {
			c.NewRate, c.NewFirst, c.NewLimit = p.NewRate, uint32(p.Flows), uint32(p.NewLimit)
		}
		return c
	}

	var snk *Sink
	if sink != nil {
		snk = NewSink(sinkCfg, sink.u)
	}
	generators := make([]*Generator, p.Queues)
	if p.Warmup && p.Flows > 0 {
		for q := range gens {
			if generators[q], err = NewGenerator(genCfg(q, true), gens[q].u, gens[q].u.Socket(0)); err != nil {
				return o, err
			}
		}
		if _, _, err := runAll(snk, generators, p.Reflect, p.Placement); err != nil {
			return o, err
		}
		if snk != nil {
			snk.Reset()
		}
	}
	for q := range gens {
		if generators[q], err = NewGenerator(genCfg(q, false), gens[q].u, gens[q].u.Socket(0)); err != nil {
			return o, err
		}
	}

	// Baselines.
	before, err := pathCounters(tp, sink, gens, target)
	if err != nil {
		return o, err
	}
	var probe *syncProbe
	if peer != nil {
		if snk == nil {
			return o, errNoSink
		}
		if probe, err = peer.probe(target, snk.Seen, p.NewLimit > 0); err != nil {
			return o, err
		}
	}
	gst, sst, err := runAll(snk, generators, p.Reflect, p.Placement)
	if err != nil {
		if probe != nil {
			probe.stop.Store(true)
			<-probe.samples
		}
		return o, err
	}
	if probe != nil {
		n, err := target.Conns()
		if err != nil {
			return o, err
		}
		if o.Sync, err = probe.finish(n); err != nil {
			return o, err
		}
	}
	after, err := pathCounters(tp, sink, gens, target)
	if err != nil {
		return o, err
	}
	o.Bad = map[string]uint64{}
	for _, g := range gst {
		o.Sent += g.Sent
		o.SentNew += g.SentNew
		o.Refused += g.Refused
		o.Replies += g.Replies
		o.RTT.Merge(&g.RTT)
		if g.Elapsed > o.Elapsed {
			o.Elapsed = g.Elapsed
		}
		for v, n := range g.BadReplies {
			if n > 0 {
				o.Bad["reply_"+Verdict(v).String()] += n
			}
		}
	}
	if snk != nil {
		o.Received, o.RecvEst, o.RecvNew = sst.Received, sst.RecvEst, sst.RecvNew
		o.Reflected = sst.Reflected
		o.Latency = sst.Latency
		for v, n := range sst.Bad {
			if n > 0 {
				o.Bad[Verdict(v).String()] += n
			}
		}
		if sst.ReflectRefused > 0 {
			o.Bad["reflect_refused"] = sst.ReflectRefused
		}
	} else {
		// Into XDP_DROP: the drop program is the sink; every frame that
		// reached dut0 counts as received.
		o.Received = after.dutInRx - before.dutInRx
	}
	o.TargetDrops = delta(before.target, after.target)
	o.PathDrops = delta(before.path, after.path)
	o.NoTargetCounters = after.noTarget
	if target != nil {
		if o.Conns, err = target.Conns(); err != nil {
			if !errors.Is(err, ErrNoCounters) {
				return o, err
			}
			o.Conns = -1
		}
	}

	return o, nil
}

// runAll runs the sink and the generators, each on its own pinned
// thread when pl places them, until the generators are done and the sink
// has seen nothing for a while.
func runAll(snk *Sink, gens []*Generator, reflect bool, pl *Placement) ([]GenStats, SinkStats, error) {
	var stopSink, stopGen atomic.Bool
	var sst SinkStats
	var swg sync.WaitGroup
	errs := make([]error, len(gens)+1)
	if snk != nil {
		swg.Add(1)
		go func() {
			defer swg.Done()
			if errs[len(gens)] = pinThread(pl.sink()); errs[len(gens)] != nil {
				return
			}
			sst = snk.Run(&stopSink)
		}()
	}
	gst := make([]GenStats, len(gens))
	var wg sync.WaitGroup
	for i, g := range gens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = pinThread(pl.gen(i)); errs[i] != nil {
				return
			}
			gst[i] = g.Run(&stopGen)
		}()
	}
	wg.Wait()
	if snk != nil {
		WaitQuiet(snk.Seen, 100*time.Millisecond, 3*time.Second)
	}
	stopSink.Store(true)
	swg.Wait()
	if reflect {
		for i, g := range gens {
			gst[i] = g.Drain(100 * time.Millisecond)
		}
	}
	return gst, sst, errors.Join(errs...)
}

type counters struct {
	target  map[string]uint64
	path    map[string]uint64
	dutInRx uint64
	// noTarget: the target serves no drop counters.
	noTarget bool
}

func pathCounters(tp *Topology, sink *xskPort, gens []*xskPort, target Target) (counters, error) {
	c := counters{path: map[string]uint64{}}
	var err error
	if target != nil {
		if c.target, err = target.Drops(); err != nil {
			if !errors.Is(err, ErrNoCounters) {
				return c, err
			}
			c.target, c.noTarget = nil, true
		}
	}
	links := []struct {
		ns   *NS
		name string
	}{{tp.Gen, GenIf}, {tp.DUT, DUTInIf}, {tp.DUT, DUTOutIf}, {tp.Srv, SrvIf}}
	for _, l := range links {
		s, err := linkStats(l.ns, l.name)
		if err != nil {
			return c, err
		}
		c.path[l.name+"_rx_dropped"] = s.RxDropped
		c.path[l.name+"_tx_dropped"] = s.TxDropped
		if l.name == DUTInIf {
			c.dutInRx = s.RxPackets
		}
	}
	if sink != nil {
		if c.path["sink_socket"], err = sink.socketDrops(); err != nil {
			return c, err
		}
	}
	for _, g := range gens {
		n, err := g.socketDrops()
		if err != nil {
			return c, err
		}
		c.path["gen_socket"] += n
	}
	return c, nil
}

func delta(a, b map[string]uint64) map[string]uint64 {
	d := make(map[string]uint64, len(b))
	for k, v := range b {
		if x := v - a[k]; x != 0 && v >= a[k] {
			d[k] = x
		}
	}
	return d
}

// openXSKQueue opens a one-socket UMEM on one queue.
func openXSKQueue(n *NS, ifindex, queue int, cfg ring.Config) (*xskPort, error) {
	p := &xskPort{}
	err := n.Do(func() error {
		var err error
		p.u, err = ring.Open(cfg, ring.Endpoint{Ifindex: ifindex, Queue: uint32(queue)})
		if err != nil {
			return fmt.Errorf("e2e: AF_XDP socket on %s queue %d: %w", n.Name, queue, err)
		}
		return nil
	})
	return p, err
}

// steer attaches xdpprog's program to ifindex with the generators'
// sockets registered on their queues.
func steer(n *NS, ifindex int, gens []*xskPort) (*xskPort, error) {
	p := &xskPort{}
	err := n.Do(func() error {
		var err error
		if p.filter, err = newFilter(len(gens)); err != nil {
			return err
		}
		if p.prog, err = p.filter.Load(); err != nil {
			return fmt.Errorf("e2e: %w", err)
		}
		for q, g := range gens {
			if err := p.prog.Register(uint32(q), g.u.Socket(0).FD()); err != nil {
				return fmt.Errorf("e2e: %w", err)
			}
		}
		if _, err := p.prog.Attach(ifindex, 0, false); err != nil {
			return fmt.Errorf("e2e: %s: %w", n.Name, err)
		}
		return nil
	})
	if err != nil {
		return nil, errors.Join(err, p.Close())
	}
	return p, nil
}

// Quantiles in µs.
func quantileUS(h *Histogram, q float64) float64 {
	if h.Count() == 0 {
		return math.NaN()
	}
	return float64(h.Quantile(q)) / 1e3
}
