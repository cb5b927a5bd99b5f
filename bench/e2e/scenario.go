package e2e

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Scenario names.
const (
	ScThroughput = "throughput"
	ScLoss       = "loss"
	ScLatency    = "latency"
	ScNewConn    = "newconn"
	ScTableFull  = "tablefull" // run by newconn after its first phase
	ScScaling    = "scaling"
	ScHeadroom   = "headroom"
)

// AllScenarios is what --scenario all runs, in order.
var AllScenarios = []string{ScHeadroom, ScThroughput, ScLoss, ScLatency, ScNewConn, ScScaling}

// LossFractions are the offered rates of the loss scenario, as fractions
// of the maximum measured in the same run.
var LossFractions = []float64{0.5, 0.8, 0.95}

// Config is a run of scenarios.
type Config struct {
	Targets   []string // "kernel", "xnat"
	Scenarios []string
	Flows     []int
	Sizes     []int
	Proto     Proto
	Time      time.Duration
	// Placement pins every point's threads (see Placement); nil pins
	// nothing.
	Placement *Placement
	// KernelRPS steers the kernel target's forwarding to the device
	// under test's CPUs (needs Placement).
	KernelRPS bool
	// Progress, if set, is told of each result as it is measured.
	Progress func(Result)
}

// Result is one line of the results.
type Result struct {
	Target     string  `json:"target"`
	Scenario   string  `json:"scenario"`
	Proto      string  `json:"proto"`
	Size       int     `json:"size"`
	FrameLen   int     `json:"frame_len"`
	Flows      int     `json:"flows"`
	Queues     int     `json:"queues"`
	OfferedPPS float64 `json:"offered_pps"` // 0: as fast as possible
	Sent       uint64  `json:"sent"`
	Received   uint64  `json:"received"`
	Drops      uint64  `json:"drops"`
	// Unaccounted = sent − received − drops over both directions.
	Unaccounted int64   `json:"unaccounted"`
	PPS         float64 `json:"pps"`
	Gbps        float64 `json:"gbps"`
	Loss        float64 `json:"loss"`
	P50         float64 `json:"p50_us"`
	P99         float64 `json:"p99_us"`
	P999        float64 `json:"p999_us"`
	NewPerSec   float64 `json:"new_per_sec"`
	Conns       int     `json:"conns"`
	// Table-full phase only.
	EstablishedLoss *uint64 `json:"established_loss,omitempty"`
	NewLost         *uint64 `json:"new_lost,omitempty"`
	TableFull       *uint64 `json:"table_full,omitempty"`
	// Note says what the figures cannot show (a target without
	// counters).
	Note string `json:"note,omitempty"`
	// When both targets ran: this result's pps over the kernel's in
	// the same scenario and parameters.
	Ratio *float64 `json:"ratio_vs_kernel,omitempty"`
}

// ResultOf turns an Outcome into a Result.
func ResultOf(scenario string, o *Outcome) Result {
	r := Result{
		Target: o.Target, Scenario: scenario, Proto: o.Proto.String(), Size: o.Size, FrameLen: o.FrameLen,
		Flows: o.Flows + o.NewLimit, Queues: o.Queues, OfferedPPS: o.Rate,
		Sent: o.Sent, Received: o.Received, Drops: o.Counted(), Unaccounted: o.Unaccounted(),
		PPS: o.PPS(), Loss: o.Loss(), Conns: o.Conns,
	}
	// Bits on the wire per frame: the frame with its FCS.
	r.Gbps = r.PPS * float64(o.FrameLen+fcsLen) * 8 / 1e9
	if o.Latency.Count() > 0 {
		r.P50, r.P99, r.P999 = quantileUS(&o.Latency, 0.5), quantileUS(&o.Latency, 0.99), quantileUS(&o.Latency, 0.999)
	}
	if o.SentNew > 0 && o.Elapsed > 0 {
		r.NewPerSec = float64(o.RecvNew) / o.Elapsed.Seconds()
	}
	if o.NoTargetCounters {
		r.Note = "the target serves no drop counters: unaccounted frames were lost in it"
	}
	if scenario == ScTableFull {
		e, n, t := TableFullCheck(o)
		r.EstablishedLoss, r.NewLost, r.TableFull = &e, &n, &t
	}
	return r
}

// Available reports whether a target can run here (the xnat target needs
// xnatd).
func Available(target string) error {
	switch target {
	case "kernel":
		return nil
	case "xnat":
		_, err := findXnatd()
		return err
	}
	return fmt.Errorf("%w: target %q", ErrConfig, target)
}

// RunScenarios runs every scenario for every target and returns the
// results, with ratios when both targets ran.
func RunScenarios(cfg Config) ([]Result, error) {
	if len(cfg.Flows) == 0 || len(cfg.Sizes) == 0 || len(cfg.Targets) == 0 || cfg.Time <= 0 {
		return nil, fmt.Errorf("%w: flows, sizes, targets and a time are needed", ErrConfig)
	}
	for _, t := range cfg.Targets {
		if err := Available(t); err != nil {
			return nil, err
		}
	}
	if cfg.Proto == 0 {
		cfg.Proto = UDP
	}
	var out []Result
	emit := func(r Result) {
		out = append(out, r)
		if cfg.Progress != nil {
			cfg.Progress(r)
		}
	}
	if cfg.KernelRPS && (cfg.Placement == nil || len(cfg.Placement.DUT) == 0) {
		return nil, fmt.Errorf("%w: RPS for the kernel needs the device under test's CPUs", ErrConfig)
	}
	run := func(sc string, p Point) (*Outcome, error) {
		p.Placement, p.KernelRPS = cfg.Placement, cfg.KernelRPS
		o, err := Run(p)
		if err != nil {
			return nil, fmt.Errorf("%s %s flows=%d size=%d: %w", sc, p.Target, p.Flows, p.Size, err)
		}
		emit(ResultOf(sc, o))
		return o, nil
	}
	// max[target] at (Flows[0], Sizes[0]), measured once when needed.
	max := map[string]float64{}
	maxOf := func(target string) (float64, error) {
		if v, ok := max[target]; ok {
			return v, nil
		}
		o, err := run(ScThroughput, Point{Target: target, Proto: cfg.Proto, Size: cfg.Sizes[0], Flows: cfg.Flows[0], Duration: cfg.Time, Warmup: true})
		if err != nil {
			return 0, err
		}
		max[target] = o.PPS()
		return max[target], nil
	}
	for _, sc := range cfg.Scenarios {
		switch sc {
		case ScHeadroom:
			for _, size := range cfg.Sizes {
				if _, err := run(sc, Point{Target: "xdp_drop", Proto: cfg.Proto, Size: size, Flows: cfg.Flows[0], Duration: cfg.Time}); err != nil {
					return out, err
				}
			}
		case ScThroughput:
			for _, size := range cfg.Sizes {
				for _, n := range cfg.Flows {
					for _, t := range cfg.Targets {
						o, err := run(sc, Point{Target: t, Proto: cfg.Proto, Size: size, Flows: n, Duration: cfg.Time, Warmup: true})
						if err != nil {
							return out, err
						}
						if size == cfg.Sizes[0] && n == cfg.Flows[0] {
							max[t] = o.PPS()
						}
					}
				}
			}
		case ScLoss, ScLatency:
			fr := LossFractions
			if sc == ScLatency {
				fr = []float64{0.5}
			}
			for _, t := range cfg.Targets {
				m, err := maxOf(t)
				if err != nil {
					return out, err
				}
				for _, f := range fr {
					if _, err := run(sc, Point{Target: t, Proto: cfg.Proto, Size: cfg.Sizes[0], Flows: cfg.Flows[0], Duration: cfg.Time, Warmup: true, Rate: f * m}); err != nil {
						return out, err
					}
				}
			}
		case ScNewConn:
			for _, t := range cfg.Targets {
				m, err := maxOf(t)
				if err != nil {
					return out, err
				}
				if err := newConn(cfg, t, m, run); err != nil {
					return out, err
				}
			}
		case ScScaling:
			for _, t := range cfg.Targets {
				for _, q := range []int{1, 2} {
					if _, err := run(sc, Point{Target: t, Proto: cfg.Proto, Size: cfg.Sizes[0], Flows: cfg.Flows[0], Queues: q, Duration: cfg.Time, Warmup: true}); err != nil {
						return out, err
					}
				}
			}
		default:
			return out, fmt.Errorf("%w: scenario %q", ErrConfig, sc)
		}
	}
	SetRatios(out)
	return out, nil
}

// newConn runs the new-connection scenario against one target: first
// Flows[0] new connections offered as fast as possible into a table of
// that size (new connections per second until it is full); then the
// table-full phase in a fresh topology: half the table held by
// established TCP flows (answered by the reflector, so assured and never
// evicted), and as many new connections as the whole table offered on
// top of them (SYNs, never answered) while the established flows go on.
// Established loss must be zero and every new connection lost must be
// counted table_full. The table-full phase offers a tenth of the
// target's maximum rate (max), so that nothing but the table loses
// frames (on 2 shared cores the sink, descheduled for a few ms, loses
// frames at higher rates, which would be counted but would blur the
// check).
func newConn(cfg Config, t string, max float64, run func(string, Point) (*Outcome, error)) error {
	limit := cfg.Flows[0]
	if limit < 2 {
		limit = 2
	}
	if _, err := run(ScNewConn, Point{
		Target: t, Proto: cfg.Proto, Size: cfg.Sizes[0], MaxConns: limit,
		NewRate: math.Inf(1), NewLimit: limit, Count: uint64(limit), Duration: 10 * cfg.Time,
	}); err != nil {
		return err
	}
	est := limit / 2
	_, err := run(ScTableFull, Point{
		Target: t, Proto: TCP, Size: cfg.Sizes[0], MaxConns: limit, Flows: est, Warmup: true, Reflect: true, Rate: max / 10,
		NewRate: 2 * float64(limit) / cfg.Time.Seconds(), NewLimit: limit, Duration: cfg.Time,
	})
	return err
}

// TableFullCheck returns the established loss, the new connections lost
// and the target's table_full count of a table-full Outcome.
func TableFullCheck(o *Outcome) (estLoss, newLost, tableFull uint64) {
	sentEst := o.Sent - o.SentNew
	estLoss = sentEst - o.RecvEst
	newLost = o.SentNew - o.RecvNew
	return estLoss, newLost, o.TargetDrops["table_full"] + o.TargetDrops["insert_failed"]
}

// SetRatios sets ratio_vs_kernel on every result whose kernel
// counterpart (same scenario and parameters) is among the results, when
// more than one target ran.
func SetRatios(rs []Result) {
	type key struct {
		sc                  string
		size, flows, queues int
		offered             float64
	}
	kernel := map[key]float64{}
	targets := map[string]bool{}
	for _, r := range rs {
		if r.Target == "xdp_drop" {
			continue
		}
		targets[r.Target] = true
		if r.Target == "kernel" {
			kernel[key{r.Scenario, r.Size, r.Flows, r.Queues, r.OfferedPPS}] = r.PPS
		}
	}
	if len(targets) < 2 {
		return
	}
	for i := range rs {
		r := &rs[i]
		if r.Target == "xdp_drop" {
			continue
		}
		k, ok := kernel[key{r.Scenario, r.Size, r.Flows, r.Queues, r.OfferedPPS}]
		if !ok || k == 0 {
			continue
		}
		v := r.PPS / k
		r.Ratio = &v
	}
}

// Header is the table header matching Row.
var Header = []string{"target", "scenario", "proto", "size", "flows", "queues", "offered pps", "sent", "received", "drops", "unaccounted", "pps", "Gbps", "loss", "p50 µs", "p99 µs", "p999 µs", "new/s", "conns", "est. loss", "table_full", "vs kernel"}

// Row formats a result for the table.
func (r Result) Row() []string {
	f := func(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	u := func(p *uint64) string {
		if p == nil {
			return "–"
		}
		return strconv.FormatUint(*p, 10)
	}
	offered := "max"
	if r.OfferedPPS > 0 {
		offered = f(r.OfferedPPS, 0)
	}
	size := strconv.Itoa(r.Size)
	if r.FrameLen+fcsLen != r.Size {
		size += "→" + strconv.Itoa(r.FrameLen+fcsLen)
	}
	ratio := "–"
	if r.Ratio != nil {
		ratio = f(*r.Ratio, 2) + "×"
	}
	lat := func(v float64) string {
		if r.P50 == 0 && r.P99 == 0 {
			return "–"
		}
		return f(v, 1)
	}
	newps := "–"
	if r.NewPerSec > 0 {
		newps = f(r.NewPerSec, 0)
	}
	return []string{r.Target, r.Scenario, r.Proto, size, strconv.Itoa(r.Flows), strconv.Itoa(r.Queues), offered,
		strconv.FormatUint(r.Sent, 10), strconv.FormatUint(r.Received, 10), strconv.FormatUint(r.Drops, 10),
		strconv.FormatInt(r.Unaccounted, 10), f(r.PPS, 0), f(r.Gbps, 3), f(r.Loss*100, 3) + "%",
		lat(r.P50), lat(r.P99), lat(r.P999), newps, strconv.Itoa(r.Conns), u(r.EstablishedLoss), u(r.TableFull), ratio}
}
