package e2e

import (
	"sync/atomic"
	"time"

	"xnat/ring"
)

// SinkConfig configures a Sink.
type SinkConfig struct {
	Expect Expect
	// EstFirst, EstFlows: flows numbered in this range are established
	// traffic, others new connections (counted apart).
	EstFirst, EstFlows uint32
	// Reflect answers every valid frame of an established flow: turned
	// around (Reflect) and transmitted on the socket it came from. New
	// connections are not answered, so that they stay unconfirmed in
	// the target's table (evictable, never assured).
	Reflect bool
	Batch   int
}

// SinkStats are a sink's counters.
type SinkStats struct {
	Received       uint64 // valid frames
	RecvEst        uint64 // of which established flows
	RecvNew        uint64 // of which new flows
	Bad            [numVerdicts]uint64
	Reflected      uint64 // replies transmitted
	ReflectRefused uint64 // replies the TX ring did not take (dropped here)
	Latency        Histogram
}

// BadTotal is the number of frames that failed Check.
func (s *SinkStats) BadTotal() uint64 {
	var n uint64
	for _, c := range s.Bad[1:] {
		n += c
	}
	return n
}

// Sink receives on the AF_XDP sockets of one UMEM, checks and counts what
// arrives, records the one-way latency, and optionally reflects. It
// belongs to one goroutine.
type Sink struct {
	cfg    SinkConfig
	u      *ring.UMEM
	descs  []ring.Desc
	out    []ring.Desc
	drop   []ring.Desc
	st     SinkStats
	parsed Parsed
	seen   atomic.Uint64 // frames taken from the RX rings, published per batch
	stop   *atomic.Bool
}

// NewSink prepares a sink on every socket of u.
func NewSink(cfg SinkConfig, u *ring.UMEM) *Sink {
	if cfg.Batch <= 0 {
		cfg.Batch = 64
	}
	return &Sink{cfg: cfg, u: u, descs: make([]ring.Desc, cfg.Batch), out: make([]ring.Desc, 0, cfg.Batch), drop: make([]ring.Desc, 0, cfg.Batch)}
}

// Seen is the number of frames received so far, valid or not; any
// goroutine may read it.
func (k *Sink) Seen() uint64 { return k.seen.Load() }

// Run receives until stop is set. It allocates nothing per batch.
func (k *Sink) Run(stop *atomic.Bool) SinkStats {
	k.stop = stop
	for !stop.Load() {
		if k.step() == 0 {
			_ = k.u.Wait()
		}
	}
	return k.st
}

// step handles one batch per socket and returns the frames received.
func (k *Sink) step() int {
	total := 0
	for _, s := range k.u.Sockets() {
		n := s.Receive(k.descs)
		if n > 0 {
			total += n
			k.handle(s, k.descs[:n])
		}
		if k.cfg.Reflect {
			s.Complete()
		}
		s.Fill()
	}
	if total > 0 {
		k.seen.Add(uint64(total))
	}
	return total
}

func (k *Sink) handle(s *ring.Socket, descs []ring.Desc) {
	now := mono()
	k.out = k.out[:0]
	k.drop = k.drop[:0]
	for _, d := range descs {
		b := k.u.Frame(d)
		v := Check(b, &k.cfg.Expect, &k.parsed)
		if v != OK {
			k.st.Bad[v]++
			k.drop = append(k.drop, d)
			continue
		}
		k.st.Received++
		f := k.parsed.Stamp.Flow
		est := f >= k.cfg.EstFirst && f-k.cfg.EstFirst < k.cfg.EstFlows
		if est {
			k.st.RecvEst++
		} else {
			k.st.RecvNew++
		}
		if lat := now - k.parsed.Stamp.Time; lat >= 0 {
			k.st.Latency.Record(uint64(lat))
		}
		if k.cfg.Reflect && est {
			Reflect(b)
			k.out = append(k.out, d)
		} else {
			k.drop = append(k.drop, d)
		}
	}
	if len(k.drop) > 0 {
		k.u.Release(k.drop)
	}
	if len(k.out) > 0 {
		sent := s.Transmit(k.out)
		k.st.Reflected += uint64(sent)
		if sent < len(k.out) {
			k.st.ReflectRefused += uint64(len(k.out) - sent)
			k.u.Release(k.out[sent:])
		}
	}
}

// WaitQuiet returns once no frame has arrived for quiet (or after max),
// so that counters read afterwards include every frame in flight.
func WaitQuiet(seen func() uint64, quiet, max time.Duration) {
	end := time.Now().Add(max)
	last := seen()
	lastChange := time.Now()
	for time.Now().Before(end) {
		time.Sleep(quiet / 5)
		if v := seen(); v != last {
			last, lastChange = v, time.Now()
			continue
		}
		if time.Since(lastChange) >= quiet {
			return
		}
	}
}

// Reset zeroes the counters (between a warm-up and a measurement; not
// while Run runs).
func (k *Sink) Reset() {
	k.st = SinkStats{}
	k.seen.Store(0)
}
