package e2e

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"xnat/ring"
)

// epoch is the origin of the monotonic send times carried in frames;
// the generator and the sink share it (same process).
var epoch = time.Now()

// mono is the monotonic time since epoch in ns (time.Since reads the
// monotonic clock; no allocation).
func mono() int64 { return int64(time.Since(epoch)) }

// GenConfig configures a Generator.
type GenConfig struct {
	Template *Template
	Base     uint32 // first source address (FlowTuple)
	// Established flows are numbered First … First+Flows-1 and sent
	// round-robin.
	First, Flows uint32
	// Rate limits the packets per second (token bucket refilled per
	// batch); 0 sends as fast as the socket takes frames.
	Rate float64
	// NewRate is the rate of new flows per second, each sending one
	// packet (a SYN for TCP) from a fresh tuple numbered from NewFirst;
	// +Inf makes every packet a new flow. New flows are stopped after
	// NewLimit (0: no limit on the count).
	NewRate            float64
	NewFirst, NewLimit uint32
	// Duration and Count end the run (whichever comes first; zero is no
	// limit from that side).
	Duration time.Duration
	Count    uint64
	Batch    int // frames per batch (default 64)
	// Reflect: the server answers; the generator receives the replies
	// on its socket (which needs an XDP program redirecting to it),
	// checks them against ReplyExpect and records the round-trip time.
	Reflect     bool
	ReplyExpect Expect
}

// GenStats are a generator's counters.
type GenStats struct {
	Sent, SentNew uint64 // frames transmitted (SentNew of them new flows)
	Refused       uint64 // frames the TX ring did not take (back-pressure, not sent)
	Completed     uint64 // frames the kernel reported sent
	Replies       uint64 // replies received and valid
	BadReplies    [numVerdicts]uint64
	Elapsed       time.Duration
	RTT           Histogram
}

// Generator sends prebuilt frames from one AF_XDP socket. It belongs to
// one goroutine.
type Generator struct {
	cfg    GenConfig
	u      *ring.UMEM
	s      *ring.Socket
	descs  []ring.Desc
	rx     []ring.Desc
	st     GenStats
	parsed Parsed

	next            uint32 // next established flow, relative to First
	newNext         uint32 // new flows used so far
	seq             uint32
	tokens, newTok  float64
	last            int64
	start, deadline int64
	stop            *atomic.Bool
	sent            atomic.Uint64 // published per batch
}

// NewGenerator prepares a generator on the socket s of u (which it
// then owns): every free frame is primed with the template.
func NewGenerator(cfg GenConfig, u *ring.UMEM, s *ring.Socket) (*Generator, error) {
	if cfg.Template == nil {
		return nil, fmt.Errorf("%w: generator without a template", ErrConfig)
	}
	if cfg.Flows == 0 && cfg.NewRate == 0 {
		return nil, fmt.Errorf("%w: generator with no flows", ErrConfig)
	}
	if uint64(cfg.First)+uint64(cfg.Flows) > MaxFlows || uint64(cfg.NewFirst)+uint64(cfg.NewLimit) > MaxFlows {
		return nil, fmt.Errorf("%w: flows beyond %d", ErrConfig, MaxFlows)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 64
	}
	if int(u.FrameSize())-ring.XDPPacketHeadroom-int(u.Config().Headroom) < cfg.Template.Len {
		return nil, fmt.Errorf("%w: frame of %d bytes does not fit the UMEM's", ErrConfig, cfg.Template.Len)
	}
	g := &Generator{cfg: cfg, u: u, s: s, descs: make([]ring.Desc, cfg.Batch), rx: make([]ring.Desc, cfg.Batch)}
	// Prime every free frame with the whole template (padding
	// included), so that a send writes only headers and stamp.
	all := make([]ring.Desc, u.Free())
	n := u.Alloc(all)
	for _, d := range all[:n] {
		cfg.Template.Prime(u.Frame(d)[:cfg.Template.Len])
	}
	u.Release(all[:n])
	return g, nil
}

// Sent is the number of frames transmitted so far; any goroutine may
// read it.
func (g *Generator) Sent() uint64 { return g.sent.Load() }

// Run sends until the duration or count is reached or stop is set, then
// waits (at most a second) for the kernel to complete every frame. It
// allocates nothing per batch.
func (g *Generator) Run(stop *atomic.Bool) GenStats {
	g.begin(stop)
	for g.step() {
	}
	g.finish()
	return g.st
}

func (g *Generator) begin(stop *atomic.Bool) {
	g.stop = stop
	g.start = mono()
	g.last = g.start
	g.deadline = math.MaxInt64
	if g.cfg.Duration > 0 {
		g.deadline = g.start + int64(g.cfg.Duration)
	}
}

// step sends one batch; false when the run is over.
func (g *Generator) step() bool {
	now := mono()
	if now >= g.deadline || (g.cfg.Count > 0 && g.st.Sent >= g.cfg.Count) || (g.stop != nil && g.stop.Load()) {
		return false
	}
	c := &g.cfg
	want := c.Batch
	if c.Count > 0 && c.Count-g.st.Sent < uint64(want) {
		want = int(c.Count - g.st.Sent)
	}
	dt := float64(now-g.last) / 1e9
	g.last = now
	if c.Rate > 0 {
		g.tokens += dt * c.Rate
		if burst := float64(2 * c.Batch); g.tokens > burst {
			g.tokens = burst
		}
		if g.tokens < float64(want) {
			if g.tokens < 1 {
				g.wait((float64(want) - g.tokens) / c.Rate)
				return true
			}
			want = int(g.tokens)
		}
	}
	if c.NewRate > 0 && !math.IsInf(c.NewRate, 1) {
		g.newTok += dt * c.NewRate
		if burst := float64(c.Batch); g.newTok > burst {
			g.newTok = burst
		}
	}
	g.s.Complete()
	if c.Reflect {
		g.receive(now)
	}
	n := g.u.Alloc(g.descs[:want])
	if n == 0 {
		return true
	}
	t := c.Template
	syn := t.Proto == TCP
	newLeft := c.NewLimit == 0 || g.newNext < c.NewLimit
	for i := 0; i < n; i++ {
		var flow uint32
		isNew := false
		if c.NewRate > 0 && newLeft && (math.IsInf(c.NewRate, 1) || g.newTok >= 1) {
			isNew = true
			flow = c.NewFirst + g.newNext
			g.newNext++
			g.newTok--
			newLeft = c.NewLimit == 0 || g.newNext < c.NewLimit
		} else if c.Flows > 0 {
			flow = c.First + g.next
			g.next++
			if g.next == c.Flows {
				g.next = 0
			}
		} else {
			// Only new flows and none due yet: send fewer.
			n = i
			break
		}
		g.seq++
		t.Write(g.u.Frame(g.descs[i])[:t.Len], c.Base, Stamp{Flow: flow, Seq: g.seq, Time: now}, isNew && syn)
		g.descs[i].Len = uint32(t.Len)
		if isNew {
			g.st.SentNew++
		}
	}
	k := g.s.Transmit(g.descs[:n])
	if k < n {
		// Not sent: take the new flows among them out of the count.
		for _, d := range g.descs[k:n] {
			var p Parsed
			readStamp(g.u.Frame(d), t, &p)
			if c.NewRate > 0 && p.Stamp.Flow >= c.NewFirst && (c.Flows == 0 || p.Stamp.Flow < c.First || p.Stamp.Flow >= c.First+c.Flows) {
				g.st.SentNew--
			}
		}
		g.u.Release(g.descs[k:n])
		g.st.Refused += uint64(n - k)
	}
	g.st.Sent += uint64(k)
	if c.Rate > 0 {
		g.tokens -= float64(k)
	}
	g.sent.Store(g.st.Sent)
	return true
}

func readStamp(b []byte, t *Template, p *Parsed) {
	p.Stamp.Flow = binary.BigEndian.Uint32(b[t.stOff+stFlow:])
}

// wait sleeps for d seconds when that is long enough to be worth a
// sleep, and meanwhile keeps completions and replies moving.
func (g *Generator) wait(d float64) {
	g.s.Complete()
	if g.cfg.Reflect {
		g.receive(mono())
	}
	if d > 50e-6 {
		time.Sleep(time.Duration(d * 1e9))
	}
}

func (g *Generator) receive(now int64) {
	for {
		r := g.s.Receive(g.rx)
		if r == 0 {
			break
		}
		for _, d := range g.rx[:r] {
			v := Check(g.u.Frame(d), &g.cfg.ReplyExpect, &g.parsed)
			if v != OK {
				g.st.BadReplies[v]++
				continue
			}
			g.st.Replies++
			if lat := now - g.parsed.Stamp.Time; lat >= 0 {
				g.st.RTT.Record(uint64(lat))
			}
		}
		g.u.Release(g.rx[:r])
		if r < len(g.rx) {
			break
		}
	}
	g.s.Fill()
}

// finish waits for the kernel to complete every transmitted frame.
func (g *Generator) finish() {
	limit := mono() + int64(time.Second)
	for {
		g.s.Complete()
		if g.cfg.Reflect {
			g.receive(mono())
		}
		st, err := g.s.Stats()
		if err == nil && st.TxOutstanding == 0 || mono() > limit {
			if err == nil {
				g.st.Completed = st.Completed
			}
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	g.st.Elapsed = time.Duration(mono() - g.start)
}

// Drain keeps receiving replies for d (after the run), so that replies in
// flight are counted.
func (g *Generator) Drain(d time.Duration) GenStats {
	if !g.cfg.Reflect {
		return g.st
	}
	end := mono() + int64(d)
	for mono() < end {
		g.receive(mono())
		time.Sleep(200 * time.Microsecond)
	}
	return g.st
}
