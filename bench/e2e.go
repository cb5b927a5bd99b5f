package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"xnat/bench/e2e"
	"xnat/internal/cpuset"
)

func init() {
	Register(Scenario{
		Name:    "e2e",
		Summary: "end to end through a namespace topology: AF_XDP generator → xnat or Linux (iptables MASQUERADE, nf_conntrack) → AF_XDP sink; needs root",
		Run:     runE2E,
	})
}

// E2EOptions are the parsed flags of the e2e scenario.
type E2EOptions struct {
	Config e2e.Config
	JSON   bool
	Plot   string
	// Flood is set for --scenario flood (Target and Placement are set per
	// run from Config).
	Flood *e2e.FloodConfig
	// Failover is set for --scenario failover (target xnat).
	Failover *FailoverOptions
	// SyncLoad is set for --scenario sync-load (target xnat).
	SyncLoad *e2e.SyncLoadConfig
}

// ParseE2E parses the e2e scenario's flags.
func ParseE2E(args []string, w io.Writer) (E2EOptions, error) {
	fs := flag.NewFlagSet("e2e", flag.ContinueOnError)
	fs.SetOutput(w)
	target := fs.String("target", "kernel", "xnat, kernel or both (in turn, with the ratio)")
	scenario := fs.String("scenario", "throughput", "throughput, loss, latency, newconn, scaling, headroom, all (these six), flood, failover or sync-load")
	flows := fs.String("flows", "1,1000,100000,1000000", "active connections: one number or a comma-separated list (sync-load: its established flows, default 1000)")
	size := fs.String("size", "64", "Ethernet frame size with FCS: 64, 1500, or a list (64,1500)")
	proto := fs.String("proto", "udp", "udp or tcp")
	dur := fs.Duration("time", 2*time.Second, "how long each measurement runs")
	jsonOut := fs.Bool("json", false, "one JSON object per result line")
	plot := fs.String("plot", "", "write an SVG chart of throughput against active connections to this file")
	ncpu := runtime.NumCPU()
	def := e2e.DefaultPlacement(ncpu)
	genDef, sinkDef, dutDef := "0", 0, "0"
	if def != nil {
		genDef, sinkDef, dutDef = cpuset.Format(def.Gen), def.Sink, cpuset.Format(def.DUT)
	}
	pin := fs.Bool("pin", def != nil, "pin the generators, the sink and the device under test to CPUs (--gen-cpus, --sink-cpu, --dut-cpus)")
	genCPUs := fs.String("gen-cpus", genDef, "CPUs of the generators, queue q on the q-th (in turn)")
	sinkCPU := fs.Int("sink-cpu", sinkDef, "CPU of the sink")
	dutCPUs := fs.String("dut-cpus", dutDef, "CPUs of the device under test, queue q on the q-th (in turn): xnatd --cpus, and the kernel's RPS CPUs with --kernel-rps")
	kernelRPS := fs.Bool("kernel-rps", false, "steer the kernel's forwarding to --dut-cpus with RPS (on veth it otherwise runs inside the generator's sendto)")
	floodPPS := fs.Float64("flood-pps", e2e.DefaultFloodPPS, "flood: offered flood frames per second in total (half SYN, a quarter UDP, a quarter RST)")
	established := fs.Int("established", e2e.DefaultEstablished, "flood: established TCP connections echoing through the device under test")
	legitRate := fs.Float64("legit-rate", e2e.DefaultLegitRate, "flood: new legitimate TCP connections per second")
	synSources := fs.Int("syn-sources", e2e.DefaultSynSources, "flood: spoofed outside sources of the SYN flood")
	maxConns := fs.Int("max-conns", e2e.DefaultFloodMaxConn, "flood: the device under test's connection limit (nf_conntrack_max)")
	settle := fs.Duration("settle", time.Second, "flood: how long the established connections keep echoing after the floods stop")
	foDownload := fs.Int("download", 100<<20, "failover: the TCP download's size in bytes (xnatd is killed a fifth into it)")
	foRate := fs.Int("rate", 25<<20, "failover: the download's pace in bytes per second")
	foUDP := fs.Int("udp-flows", 1000, "failover: UDP flows with replies through the primary")
	foDist := fs.String("dist", "dist", "failover: the directory with keepalived.conf and xnat-ha-notify.sh")
	newConns := fs.Int("new-conns", 500000, "sync-load: new connections offered as fast as possible, synced to the peer")
	var o E2EOptions
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c := &o.Config
	switch *target {
	case "xnat", "kernel":
		c.Targets = []string{*target}
	case "both":
		c.Targets = []string{"kernel", "xnat"}
	default:
		return o, fmt.Errorf("--target %q: want xnat, kernel or both", *target)
	}
	switch *scenario {
	case "all":
		c.Scenarios = e2e.AllScenarios
	case e2e.ScThroughput, e2e.ScLoss, e2e.ScLatency, e2e.ScNewConn, e2e.ScScaling, e2e.ScHeadroom:
		c.Scenarios = []string{*scenario}
	case e2e.ScFlood:
		c.Scenarios = []string{*scenario}
		// Zero would mean the default to Validate: refuse it here.
		if *floodPPS <= 0 || *established <= 0 || *legitRate <= 0 || *synSources <= 0 || *maxConns <= 0 {
			return o, errors.New("--flood-pps, --established, --legit-rate, --syn-sources and --max-conns must be positive")
		}
		o.Flood = &e2e.FloodConfig{
			Duration: *dur, Settle: *settle, Established: *established, LegitRate: *legitRate,
			FloodPPS: *floodPPS, SynSources: *synSources, MaxConns: *maxConns,
		}
		if err := o.Flood.Validate(); err != nil {
			return o, err
		}
	case "failover":
		if *target != "xnat" {
			return o, fmt.Errorf("--scenario failover: the target is xnat (an HA pair of xnatd with keepalived), not %q", *target)
		}
		o.Failover = &FailoverOptions{Download: *foDownload, Rate: *foRate, UDPFlows: *foUDP, Dist: *foDist}
		if err := validFailover(o.Failover); err != nil {
			return o, err
		}
	case e2e.ScSyncLoad:
		if *target != "xnat" {
			return o, fmt.Errorf("--scenario sync-load: the target is xnat (with a sync peer), not %q", *target)
		}
		c.Scenarios = []string{*scenario}
	default:
		return o, fmt.Errorf("--scenario %q: want throughput, loss, latency, newconn, scaling, headroom, all, flood, failover or sync-load", *scenario)
	}
	if *scenario == e2e.ScSyncLoad && !isSet(fs, "flows") {
		*flows = "1000"
	}
	var err error
	if c.Flows, err = intList(*flows, 1, e2e.MaxFlows/2); err != nil {
		return o, fmt.Errorf("--flows: %w", err)
	}
	if c.Sizes, err = intList(*size, 64, 1518); err != nil {
		return o, fmt.Errorf("--size: %w", err)
	}
	if c.Proto, err = e2e.ParseProto(*proto); err != nil {
		return o, fmt.Errorf("--proto: %w", err)
	}
	if *dur <= 0 {
		return o, fmt.Errorf("--time %v: want a positive duration", *dur)
	}
	c.Time = *dur
	if *pin {
		pl := &e2e.Placement{Sink: *sinkCPU}
		if pl.Gen, err = e2e.ParseCPUList(*genCPUs, ncpu); err != nil {
			return o, fmt.Errorf("--gen-cpus: %w", err)
		}
		if pl.DUT, err = e2e.ParseCPUList(*dutCPUs, ncpu); err != nil {
			return o, fmt.Errorf("--dut-cpus: %w", err)
		}
		if pl.Sink < 0 || pl.Sink >= ncpu {
			return o, fmt.Errorf("--sink-cpu %d: this machine has CPUs 0 to %d", pl.Sink, ncpu-1)
		}
		c.Placement = pl
	}
	if *kernelRPS {
		if c.Placement == nil {
			return o, errors.New("--kernel-rps needs --pin (the device under test's CPUs)")
		}
		c.KernelRPS = true
	}
	if *scenario == e2e.ScSyncLoad {
		if len(c.Flows) != 1 || len(c.Sizes) != 1 {
			return o, errors.New("--scenario sync-load: one --flows (its established flows) and one --size")
		}
		o.SyncLoad = &e2e.SyncLoadConfig{Proto: c.Proto, Size: c.Sizes[0], NewConns: *newConns, Established: c.Flows[0], Time: c.Time, Placement: c.Placement}
		if err := o.SyncLoad.Validate(); err != nil {
			return o, fmt.Errorf("--new-conns, --flows: %w", err)
		}
	}
	o.JSON, o.Plot = *jsonOut, *plot
	if o.Plot != "" && !contains(c.Scenarios, e2e.ScThroughput) {
		return o, errors.New("--plot needs the throughput scenario (--scenario throughput or all)")
	}
	return o, nil
}

// isSet reports whether the flag was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// intList reads a comma-separated list of numbers, each from lo to hi.
func intList(s string, lo, hi int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%q: want numbers from %d to %d", f, lo, hi)
		}
		out = append(out, n)
	}
	return out, nil
}

func runE2E(args []string, w io.Writer) error {
	o, err := ParseE2E(args, w)
	if err != nil {
		return err
	}
	if o.Flood != nil {
		return runFlood(o, w)
	}
	if o.Failover != nil {
		return runFailover(*o.Failover, o.JSON, w)
	}
	if o.SyncLoad != nil {
		r, err := e2e.RunSyncLoad(*o.SyncLoad)
		if err != nil {
			return err
		}
		rep := report{w: w, json: o.JSON}
		if err := rep.add(r, r.Row()); err != nil {
			return err
		}
		return rep.table(e2e.SyncLoadHeader)
	}
	if o.JSON {
		// With one target each result is written as soon as it is
		// measured; with both, at the end, when the ratios are known.
		var werr error
		if len(o.Config.Targets) == 1 {
			o.Config.Progress = func(r e2e.Result) {
				if werr == nil {
					werr = WriteJSON(w, r)
				}
			}
		}
		rs, err := e2e.RunScenarios(o.Config)
		if err != nil {
			return err
		}
		if werr != nil {
			return werr
		}
		if o.Config.Progress == nil {
			for _, r := range rs {
				if err := WriteJSON(w, r); err != nil {
					return err
				}
			}
		}
		return writePlot(o.Plot, rs)
	}
	rs, err := e2e.RunScenarios(o.Config)
	if err != nil {
		return err
	}
	if err := WriteE2ETable(w, rs); err != nil {
		return err
	}
	return writePlot(o.Plot, rs)
}

// WriteE2ETable writes e2e results as a table.
func WriteE2ETable(w io.Writer, rs []e2e.Result) error {
	rows := make([][]string, len(rs))
	for i, r := range rs {
		rows[i] = r.Row()
	}
	return Table(w, e2e.Header, rows)
}

func writePlot(path string, rs []e2e.Result) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	if err := e2e.WritePlot(f, rs); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runFlood runs the flood scenario against each target in turn and
// writes each result as it is measured (a JSON line, or a table at the
// end).
func runFlood(o E2EOptions, w io.Writer) error {
	for _, t := range o.Config.Targets {
		if err := e2e.Available(t); err != nil {
			return err
		}
	}
	rep := report{w: w, json: o.JSON}
	for _, t := range o.Config.Targets {
		fc := *o.Flood
		fc.Target, fc.Placement = t, o.Config.Placement
		r, err := e2e.RunFlood(fc)
		if err != nil {
			return fmt.Errorf("flood %s: %w", t, err)
		}
		if err := rep.add(r, r.Row()); err != nil {
			return err
		}
	}
	return rep.table(e2e.FloodHeader)
}
