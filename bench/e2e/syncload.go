package e2e

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"xnat/control/ha"
)

// ScSyncLoad is the connection-sync scenario (RunSyncLoad).
const ScSyncLoad = "sync-load"

// The sync link of a Point with Sync: a veth from dut to a namespace of
// its own, where the peer listens.
const (
	SyncIf       = "ha0"
	SyncDUTAddr  = "10.99.0.1"
	SyncPeerAddr = "10.99.0.2"
	SyncPort     = 3780
)

// syncPeer is the receiving end of a sync link: an ha.Node in its own
// namespace keeping what the target sends in its external cache, as a
// backup xnatd does.
type syncPeer struct {
	node   *ha.Node
	cancel context.CancelFunc
	done   chan error
}

// startSyncPeer adds the peer's namespace and the sync link to tp and
// starts the peer; it returns the link as the target configures it.
func startSyncPeer(tp *Topology) (*syncPeer, *HALink, error) {
	ns, err := tp.ns.CreateNS("e2e-peer")
	if err != nil {
		return nil, nil, fmt.Errorf("e2e: %w", err)
	}
	if err := tp.ns.AddVeth(tp.DUT, SyncIf, ns, SyncIf, 1); err != nil {
		return nil, nil, fmt.Errorf("e2e: %w", err)
	}
	if err := tp.DUT.AddAddr(SyncIf, SyncDUTAddr+"/24"); err != nil {
		return nil, nil, fmt.Errorf("e2e: %w", err)
	}
	if err := ns.AddAddr(SyncIf, SyncPeerAddr+"/24"); err != nil {
		return nil, nil, fmt.Errorf("e2e: %w", err)
	}
	lc := ha.LinkConfig{
		Local:     netip.AddrPortFrom(netip.MustParseAddr(SyncPeerAddr), SyncPort),
		Peer:      netip.AddrPortFrom(netip.MustParseAddr(SyncDUTAddr), SyncPort),
		Interface: SyncIf,
	}
	p := &syncPeer{done: make(chan error, 1)}
	// The socket is made inside the namespace; it stays there whichever
	// thread reads it.
	if err := ns.Do(func() error {
		var err error
		p.node, err = ha.NewNode(ha.NodeConfig{Link: lc}, nil, nil)
		return err
	}); err != nil {
		return nil, nil, fmt.Errorf("e2e: sync peer: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- p.node.Run(ctx) }()
	return p, &HALink{Local: SyncDUTAddr, Peer: SyncPeerAddr, Port: SyncPort, Interface: SyncIf}, nil
}

// Close stops the peer.
func (p *syncPeer) Close() error {
	p.cancel()
	if err := <-p.done; err != nil {
		return fmt.Errorf("e2e: sync peer: %w", err)
	}
	return nil
}

// created is how many connections the peer's cache has taken in.
func (p *syncPeer) created() uint64 { return p.node.Cache().Counters().Created }

// SyncSample is one reading, during a measurement, of the frames the sink
// has seen and the connections the sync peer has taken in, At after the
// measurement's start.
type SyncSample struct {
	At         time.Duration
	Sink, Peer uint64
}

// sampleSync reads the sink and the peer every millisecond until stop.
func sampleSync(stop *atomic.Bool, start time.Time, sink, peer func() uint64) []SyncSample {
	out := make([]SyncSample, 0, 4096)
	for !stop.Load() {
		out = append(out, SyncSample{At: time.Since(start), Sink: sink(), Peer: peer()})
		time.Sleep(time.Millisecond)
	}
	return append(out, SyncSample{At: time.Since(start), Sink: sink(), Peer: peer()})
}

// SyncLags returns, for each tenth of total (a tenth, two tenths … all),
// how long after the sink had seen that many frames the peer had taken
// in that many connections; samples are in time order, counted from the
// measurement's start (the sink's frames are the new connections, so the
// lag runs from xnat forwarding a connection's first packet to the peer
// holding it). A count either side never reached ends the list.
func SyncLags(samples []SyncSample, total uint64) []time.Duration {
	var lags []time.Duration
	for i := uint64(1); i <= 10 && total > 0; i++ {
		k := max(total*i/10, 1)
		ts, ok1 := firstAt(samples, k, func(s *SyncSample) uint64 { return s.Sink })
		tp, ok2 := firstAt(samples, k, func(s *SyncSample) uint64 { return s.Peer })
		if !ok1 || !ok2 {
			break
		}
		lags = append(lags, max(tp-ts, 0))
	}
	return lags
}

func firstAt(samples []SyncSample, k uint64, v func(*SyncSample) uint64) (time.Duration, bool) {
	for i := range samples {
		if v(&samples[i]) >= k {
			return samples[i].At, true
		}
	}
	return 0, false
}

// SyncOutcome is what a Point with Sync measured on the sync link.
type SyncOutcome struct {
	// Synced: connections the peer took in during the measurement, the
	// last of them Done after the sink saw the first frame (the
	// sampler's resolution is about a millisecond; the generators'
	// start-up is not counted).
	Synced uint64
	Done   time.Duration
	// Samples as read during the measurement and until the peer caught
	// up.
	Samples []SyncSample
	// The peer's counters over the measurement: messages and datagrams
	// received, messages lost (sequence gaps), malformed.
	PeerMsgs, PeerDatagrams, Lost, Malformed uint64
	// The target's: messages sent, sent again, whole-table sends after
	// its event rings overflowed, dataplane events sent.
	Sent, Retransmitted, TableResends, Events uint64
}

// syncProbe takes the baselines of a measurement with sync and samples
// it.
type syncProbe struct {
	peer     *syncPeer
	x        *Xnat
	start    time.Time
	base     ha.Stats
	baseCr   uint64
	baseX    *ha.Status
	stop     atomic.Bool
	samples  chan []SyncSample
	received func() uint64
}

// probe takes the baselines; with sample, it reads the sink and the peer
// every millisecond until finish (for the lag of new connections: not
// while the established path's rate is measured, whose sync-off run has
// no sampler to compete with).
func (p *syncPeer) probe(target Target, sink func() uint64, sample bool) (*syncProbe, error) {
	x, ok := target.(*Xnat)
	if !ok {
		return nil, fmt.Errorf("%w: sync needs the xnat target", ErrConfig)
	}
	sp := &syncProbe{peer: p, x: x, samples: make(chan []SyncSample, 1), received: sink}
	var err error
	if sp.baseX, err = x.HAStatus(); err != nil {
		return nil, err
	}
	sp.base = p.node.Status().Link.Stats
	sp.baseCr = p.created()
	sp.start = time.Now()
	if !sample {
		sp.stop.Store(true)
	}
	go func() { sp.samples <- sampleSync(&sp.stop, sp.start, sp.received, p.created) }()
	return sp, nil
}

// finish waits until the peer holds as many connections as the target's
// table (conns), or has taken nothing in for 2 s (at most a minute),
// then stops sampling and returns the outcome.
func (sp *syncProbe) finish(conns int) (*SyncOutcome, error) {
	last, lastChange := sp.peer.created(), time.Now()
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		v := sp.peer.created()
		if v >= uint64(max(conns, 0)) {
			break
		}
		if v != last {
			last, lastChange = v, time.Now()
		} else if time.Since(lastChange) > 2*time.Second {
			break
		}
	}
	sp.stop.Store(true)
	o := &SyncOutcome{Samples: <-sp.samples}
	for i := range o.Samples {
		o.Samples[i].Peer -= min(sp.baseCr, o.Samples[i].Peer)
	}
	if n := len(o.Samples); n > 0 {
		o.Synced = o.Samples[n-1].Peer
		first, ok1 := firstAt(o.Samples, 1, func(s *SyncSample) uint64 { return s.Sink })
		last, ok2 := firstAt(o.Samples, o.Synced, func(s *SyncSample) uint64 { return s.Peer })
		if ok1 && ok2 && last > first {
			o.Done = last - first
		}
	}
	st := sp.peer.node.Status().Link.Stats
	o.PeerMsgs, o.PeerDatagrams = st.MsgRecv-sp.base.MsgRecv, st.Datagrams-sp.base.Datagrams
	o.Lost, o.Malformed = st.Lost-sp.base.Lost, st.Malformed-sp.base.Malformed
	xs, err := sp.x.HAStatus()
	if err != nil {
		return o, err
	}
	o.Sent = xs.Link.MsgSent - sp.baseX.Link.MsgSent
	o.Retransmitted = xs.Link.Retransmitted - sp.baseX.Link.Retransmitted
	o.TableResends = xs.EventResends - sp.baseX.EventResends
	o.Events = xs.EventsSent - sp.baseX.EventsSent
	return o, nil
}

// SyncLoadConfig is a run of the sync-load scenario.
type SyncLoadConfig struct {
	Proto Proto
	Size  int
	// NewConns new connections are offered as fast as possible with
	// sync on; Established flows then measure the established path with
	// sync off and on, for Time each.
	NewConns, Established int
	Time                  time.Duration
	Placement             *Placement
}

// SyncLoadResult is the sync-load scenario's line.
type SyncLoadResult struct {
	Target   string `json:"target"`
	Scenario string `json:"scenario"`
	Proto    string `json:"proto"`
	Size     int    `json:"size"`
	// NewConns offered; NewPerSec of them through xnat per second (at
	// the sink); Conns in xnat's table after them.
	NewConns  int     `json:"new_conns"`
	NewPerSec float64 `json:"new_per_sec"`
	Conns     int     `json:"conns"`
	// SyncedConns reached the peer's external cache, at
	// SyncedConnsPerSec: from the sink seeing the first new connection
	// through xnat to the peer holding the last one.
	SyncedConns       uint64  `json:"synced_conns"`
	SyncedConnsPerSec float64 `json:"synced_conns_per_sec"`
	// SyncLagMS, SyncLagMaxMS: median and maximum, over each tenth of
	// the connections, of the time from xnat forwarding that many to the
	// peer holding that many.
	SyncLagMS    float64 `json:"sync_lag_ms"`
	SyncLagMaxMS float64 `json:"sync_lag_max_ms"`
	// Messages and datagrams the peer received per second over the same
	// span; messages it found lost, messages xnat sent again, whole-table
	// sends after xnat's event rings overflowed.
	SyncMsgsPerSec      float64 `json:"sync_msgs_per_sec"`
	SyncDatagramsPerSec float64 `json:"sync_datagrams_per_sec"`
	SyncLost            uint64  `json:"sync_lost"`
	SyncRetransmitted   uint64  `json:"sync_retransmitted"`
	SyncTableResends    uint64  `json:"sync_table_resends"`
	// The established path (the throughput scenario's generator) with
	// sync off and on, in the same run (off, on, on, off; the mean of
	// each), and on over off.
	EstablishedFlows      int     `json:"established_flows"`
	EstablishedPPSSyncOff float64 `json:"established_pps_sync_off"`
	EstablishedPPSSyncOn  float64 `json:"established_pps_sync_on"`
	EstablishedRatio      float64 `json:"established_ratio"`
}

// Validate checks the configuration.
func (c *SyncLoadConfig) Validate() error {
	if c.NewConns < 1 || c.NewConns > MaxFlows/2 || c.Established < 1 || c.Established > MaxFlows/2 || c.Time <= 0 {
		return fmt.Errorf("%w: sync-load: new connections and established flows from 1 to %d, and a positive time", ErrConfig, MaxFlows/2)
	}
	return nil
}

// RunSyncLoad runs the sync-load scenario against xnat with a sync peer
// (an ha.Node in a namespace of its own, on a dedicated veth): new
// connections as the newconn scenario offers them, as fast as possible,
// counted as they reach the peer's external cache; then the established
// path's rate with sync off and on, twice each.
func RunSyncLoad(c SyncLoadConfig) (SyncLoadResult, error) {
	r := SyncLoadResult{Target: "xnat", Scenario: ScSyncLoad, Proto: c.Proto.String(), Size: c.Size, NewConns: c.NewConns, EstablishedFlows: c.Established}
	if err := c.Validate(); err != nil {
		return r, err
	}
	if err := Available("xnat"); err != nil {
		return r, err
	}
	o, err := Run(Point{
		Target: "xnat", Proto: c.Proto, Size: c.Size, MaxConns: c.NewConns, Sync: true, Placement: c.Placement,
		NewRate: math.Inf(1), NewLimit: c.NewConns, Count: uint64(c.NewConns), Duration: 10 * c.Time,
	})
	if err != nil {
		return r, fmt.Errorf("sync-load new connections: %w", err)
	}
	if o.Elapsed > 0 {
		r.NewPerSec = float64(o.RecvNew) / o.Elapsed.Seconds()
	}
	r.Conns = o.Conns
	s := o.Sync
	r.SyncedConns = s.Synced
	if s.Done > 0 {
		sec := s.Done.Seconds()
		r.SyncedConnsPerSec = float64(s.Synced) / sec
		r.SyncMsgsPerSec = float64(s.PeerMsgs) / sec
		r.SyncDatagramsPerSec = float64(s.PeerDatagrams) / sec
	}
	if lags := SyncLags(s.Samples, s.Synced); len(lags) > 0 {
		slices.Sort(lags)
		r.SyncLagMS = float64(lags[len(lags)/2]) / float64(time.Millisecond)
		r.SyncLagMaxMS = float64(lags[len(lags)-1]) / float64(time.Millisecond)
	}
	r.SyncLost, r.SyncRetransmitted, r.SyncTableResends = s.Lost, s.Retransmitted, s.TableResends
	if s.Malformed > 0 {
		return r, fmt.Errorf("sync-load: the peer found %d malformed messages", s.Malformed)
	}
	// Off, on, on, off: a drift of the machine's load over the four
	// runs weighs on both sides alike.
	var on, off float64
	for _, sync := range []bool{false, true, true, false} {
		o, err := Run(Point{Target: "xnat", Proto: c.Proto, Size: c.Size, Flows: c.Established, Duration: c.Time, Warmup: true, Sync: sync, Placement: c.Placement})
		if err != nil {
			return r, fmt.Errorf("sync-load established (sync %v): %w", sync, err)
		}
		if sync {
			on += o.PPS() / 2
		} else {
			off += o.PPS() / 2
		}
	}
	r.EstablishedPPSSyncOn, r.EstablishedPPSSyncOff = on, off
	if r.EstablishedPPSSyncOff > 0 {
		r.EstablishedRatio = r.EstablishedPPSSyncOn / r.EstablishedPPSSyncOff
	}
	return r, nil
}

// SyncLoadHeader is the table header matching Row.
var SyncLoadHeader = []string{"target", "new conns", "new/s", "synced", "synced/s", "lag ms", "lag max ms", "msgs/s", "datagrams/s", "lost", "retransmitted", "table resends", "est. flows", "pps sync off", "pps sync on", "on/off"}

// Row formats the result for the table.
func (r SyncLoadResult) Row() []string {
	f := func(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	return []string{r.Target, strconv.Itoa(r.NewConns), f(r.NewPerSec, 0), u(r.SyncedConns), f(r.SyncedConnsPerSec, 0),
		f(r.SyncLagMS, 1), f(r.SyncLagMaxMS, 1), f(r.SyncMsgsPerSec, 0), f(r.SyncDatagramsPerSec, 0), u(r.SyncLost),
		u(r.SyncRetransmitted), u(r.SyncTableResends), strconv.Itoa(r.EstablishedFlows), f(r.EstablishedPPSSyncOff, 0),
		f(r.EstablishedPPSSyncOn, 0), f(r.EstablishedRatio, 3)}
}

var errNoSink = errors.New("e2e: sync needs the sink")
