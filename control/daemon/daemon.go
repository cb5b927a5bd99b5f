package daemon

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"xnat/control/ha"
	"xnat/dataplane"
	"xnat/dataplane/kernel"
	"xnat/dataplane/rules"
	"xnat/dataplane/topo"
	"xnat/dataplane/worker"
	"xnat/dataplane/xdpprog"
	"xnat/flowtable"
	"xnat/portalloc"
	"xnat/ring"

	vnetns "github.com/vishvananda/netns"
)

// ErrStopped is returned by methods that change a stopped daemon.
var ErrStopped = errors.New("daemon stopped")

// Options tune a Daemon beyond its Config.
type Options struct {
	// OnEvent receives the daemon's events (start-up facts, kernel view
	// changes, flushes, rule reloads, LOG records, recovered errors), one
	// call at a time per goroutine of the daemon; it must not block for
	// long. nil discards them.
	OnEvent func(Event)
	// ControlInterval is how often the control goroutine drains the
	// pipelines' neighbour misses and LOG records and checks the table's
	// full events; 0 means 10 ms.
	ControlInterval time.Duration
	// PollTimeout is the longest sleep of an idle worker (and so the
	// longest Stop waits for it); 0 means 50 ms.
	PollTimeout time.Duration
	// TakeOver, when set, makes Start take over from an earlier xnatd
	// (xnatd --takeover): once everything but the interfaces is ready,
	// it is called for the hand-over (DialTakeOver's Receive, or a
	// hand-over file), whose connections are committed before the
	// interfaces are switched to this daemon. The sync link starts after.
	TakeOver func() (*Incoming, error)
}

// Daemon is a running xnat: the flow table, the dataplane, the XDP
// programs, one worker per queue, the kernel mirror and the control
// goroutine. Its methods are safe for concurrent use; the control API
// calls them.
type Daemon struct {
	cfg    Config
	opts   Options
	names  []string // inside then outside: port ID order
	tab    *flowtable.Table
	dp     *dataplane.Dataplane
	filter *xdpprog.Filter
	steer  *portalloc.Steering
	ns     vnetns.NsHandle // the namespace Start ran in
	// lpFiles are the kernel's local port sysctls, opened in that
	// namespace.
	lpFiles [2]*os.File

	ioMu sync.Mutex // serialises changes of io
	// io is replaced (installIO) under ioMu, ioReadMu and mu; mu guards
	// the pointer, ioReadMu (read-locked by Stats) what it points to
	// against being stopped and closed.
	ioReadMu sync.RWMutex
	io       *ioSet
	// ioKick wakes the control goroutine to reconcile io with the kernel.
	ioKick chan struct{}
	// missKick wakes it to ask the kernel to resolve the next hops a
	// core is holding frames for (Dataplane.OnNeighMiss).
	missKick chan struct{}
	ioRetry  bool // a reconcile failed: try again (control goroutine only)
	mtuErr   int  // the MTU last reported too large (control goroutine only)

	ctlStop chan struct{}
	ctlDone chan struct{}
	// ctlStarted: the control goroutine runs (set before Start returns).
	ctlStarted bool

	evMu sync.Mutex // serialises OnEvent

	// neigh is the dataplane's neighbour table, kept current from the
	// kernel's notifications (the mirror's OnNeigh) and its dumps.
	neigh *dataplane.NeighTable

	mu       sync.Mutex // control path: the model, the snapshot, Env rebuilds, the filter maps
	model    *rules.Model
	snap     *topo.Snapshot
	mirror   *kernel.Mirror
	settle   *rules.Ruleset // waiting for every core to pass two batches
	settleAt []uint64       // each core's batch count when settle was set
	stopped  bool
	// Steering: the use-count slot of each external address of the
	// box's, the DNAT groups in force per interface, the groups a rule
	// change replaced (until the connections created meanwhile are
	// found), the DNAT endpoints held for connections whose rule went, and
	// the last local-ports check.
	slots      map[uint32]uint32
	groups     [][]xdpprog.Group
	retireFrom [][]xdpprog.Group
	dnatHeld   map[heldKey]bool
	lastPorts  string

	flushed, resolves, resolveErrs, reloads, envErrors, ioChanges atomic.Uint64

	ha haState // the sync node (an [ha] section)

	// handed: the daemon handed its table and interfaces over to another
	// xnatd and only stops (guarded by mu); takeover is what the takeover
	// at start did.
	handed   bool
	takeover *TakeOverResult
	// handedRole is the HA role the process taken over from had recorded
	// (set by takeOverIO, read by startHA, both in Start).
	handedRole      ha.Role
	handedRoleSince time.Time
}

// newLimiter makes the per-source limiter with the config's limits
// (xnat.per_source_max, xnat.per_source_ports; xnatctl sysctl changes
// them at run time). It can count as many connections a core as the
// core may own records in tab (every record: cores take them from one
// common reserve), from as many inside addresses as tab has records
// (at most the limiter's 1<<26).
func newLimiter(c *Config, tab *flowtable.Table) (*portalloc.SourceLimiter, error) {
	l, err := portalloc.NewSourceLimiter(portalloc.LimiterConfig{Cores: tab.Cores(), Conns: tab.RecordsPerCore(),
		Sources: min(tab.RecordsPerCore(), 1<<26), MaxConns: c.PerSourceMax, MaxPorts: c.PerSourcePorts})
	if err != nil {
		return nil, fmt.Errorf("per-source limiter: %w", err)
	}
	return l, nil
}

// Start starts xnat as planned: it creates the table and the dataplane,
// starts the kernel mirror, attaches the XDP programs, opens one UMEM per
// queue with a socket on every interface, and starts the workers and
// the control goroutine. It must run on a thread in the network namespace
// of the interfaces. On error everything done is undone.
func Start(plan *Plan, opts Options) (d *Daemon, err error) {
	if plan == nil {
		return nil, fmt.Errorf("%w: no plan", ErrConfig)
	}
	c := plan.Config
	if opts.ControlInterval <= 0 {
		opts.ControlInterval = 10 * time.Millisecond
	}
	if opts.PollTimeout <= 0 {
		opts.PollTimeout = 50 * time.Millisecond
	}
	d = &Daemon{cfg: c, opts: opts, names: c.Interfaces(), model: plan.Model, snap: plan.Snapshot,
		ctlStop: make(chan struct{}), ctlDone: make(chan struct{}), ioKick: make(chan struct{}, 1), missKick: make(chan struct{}, 1),
		slots: map[uint32]uint32{}, dnatHeld: map[heldKey]bool{}}
	defer func() {
		if err != nil {
			d.teardown()
			d = nil
		}
	}()
	for _, f := range plan.Facts {
		d.emit(f)
	}
	if d.ns, err = vnetns.Get(); err != nil {
		return d, fmt.Errorf("current network namespace: %w", err)
	}
	if d.lpFiles, err = openLocalPorts(); err != nil {
		return d, err
	}
	d.tab, err = flowtable.New(flowtable.Config{Capacity: c.Capacity, Max: c.MaxConns, Cores: c.Queues, Proto: true})
	if err != nil {
		return d, fmt.Errorf("flow table: %w", err)
	}
	for name, s := range c.Timeouts {
		if err = d.tab.SetTimeout(name, time.Duration(s)*time.Second); err != nil {
			return d, fmt.Errorf("%w: timeout %s: %w", ErrConfig, name, err)
		}
	}
	d.emit(info("flow table", "capacity", c.Capacity, "max_conns", c.MaxConns, "cores", c.Queues))
	limiter, err := newLimiter(&c, d.tab)
	if err != nil {
		return d, err
	}
	d.emit(info("per-source limiter", "per_source_max", c.PerSourceMax, "per_source_ports", c.PerSourcePorts, "memory", limiter.Memory()))
	if d.filter, err = xdpprog.NewFilter(xdpprog.Options{Queues: uint32(c.Queues)}); err != nil {
		return d, fmt.Errorf("XDP maps: %w", err)
	}
	if d.steer, err = portalloc.NewSteering(d.filter.UseCounts(), d.filter.Slots()); err != nil {
		return d, fmt.Errorf("XDP maps: %w", err)
	}
	// An HA pair's NAT addresses move between its boxes: its pools are
	// split alike on both, and in an xnatd --takeover's as in the
	// xnatd it replaces, whichever box has the addresses.
	d.steer.SetFloating(c.HA.Enabled())
	pools := dataplane.NewPools(c.Queues, limiter)
	pools.SetSteering(d.steer)
	// The mirror's first snapshot arrives before Start returns; later
	// ones rebuild the Env.
	d.neigh = dataplane.NewNeighTable()
	d.mirror, err = kernel.Start(kernel.Options{OnChange: d.onSnapshot, OnNeigh: d.neigh.Update, OnError: func(e error) {
		d.emit(warn("kernel mirror", "err", e))
	}})
	if err != nil {
		return d, fmt.Errorf("kernel mirror: %w", err)
	}
	d.mu.Lock()
	sp, facts, err := d.planSteering(d.snap, d.model, false)
	d.lastPorts = fmt.Sprint(facts) // Prepare reported them
	var env *dataplane.Env
	if err == nil {
		d.prepareSlots(sp)
		env, err = dataplane.NewEnv(dataplane.EnvConfig{Snapshot: d.snap, Inside: c.Inside, Outside: c.Outside, Model: d.model, Pools: pools})
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	if err == nil {
		settings := dataplane.NewSettings()
		d.initRPFilter(&settings.RPFilter)
		d.dp = dataplane.New(d.tab, pools, settings, env)
		d.dp.OnNeighMiss(func() {
			select {
			case d.missKick <- struct{}{}:
			default:
			}
		})
		d.io = &ioSet{progs: make([]*xdpprog.Program, len(d.names)), ifindex: make([]int, len(d.names))}
		err = d.commitSteering(sp)
		d.dp.UseNeighbours(d.neigh)
	}
	d.mu.Unlock()
	if err != nil {
		return d, err
	}
	io := &ioSet{progs: make([]*xdpprog.Program, len(d.names)), ifindex: make([]int, len(d.names)), frameSize: plan.FrameSize}
	// Installed as it grows, so that teardown finds what is there.
	d.installIO(io, nil)
	errc := make(chan error, c.Queues)
	if opts.TakeOver != nil {
		if err := d.takeOverIO(io, env.Ports, opts.TakeOver, errc); err != nil {
			return d, err
		}
	} else {
		for i, p := range env.Ports {
			prog, err := d.attach(i, p.IfIndex)
			if err != nil {
				return d, err
			}
			d.ioReadMu.Lock()
			d.mu.Lock()
			io.progs[i], io.ifindex[i] = prog, p.IfIndex
			d.mu.Unlock()
			d.ioReadMu.Unlock()
		}
		d.ioReadMu.Lock()
		err = d.openQueues(io)
		d.ioReadMu.Unlock()
		if err != nil {
			return d, err
		}
		d.installIO(io, io)
		d.runWorkers(io, errc)
	}
	cpus := "unpinned"
	if len(c.CPUs) > 0 {
		cpus = fmt.Sprint(c.CPUs)
	}
	d.emit(info("workers", "queues", c.Queues, "cpus", cpus, "poll", c.Poll))
	// A worker that cannot pin itself fails at once.
	select {
	case err := <-errc:
		return d, err
	case <-time.After(20 * time.Millisecond):
	}
	if err := d.startHA(); err != nil {
		return d, err
	}
	d.ctlStarted = true
	go d.control()
	return d, nil
}

func xdpModeName(m xdpprog.AttachMode) string {
	switch m {
	case xdpprog.AttachNative:
		return "native"
	case xdpprog.AttachGeneric:
		return "generic"
	}
	return m.String()
}

func bindName(zc bool) string {
	if zc {
		return "zero-copy"
	}
	return "copy"
}

func (d *Daemon) emit(e Event) {
	if d.opts.OnEvent == nil {
		return
	}
	d.evMu.Lock()
	defer d.evMu.Unlock()
	d.opts.OnEvent(e)
}

// Stop stops the daemon: the control goroutine, the workers, then the XDP
// programs are detached (each within two seconds), the sockets closed and
// the mirror stopped. Calling it again does nothing.
func (d *Daemon) Stop() error {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return nil
	}
	d.stopped = true
	d.mu.Unlock()
	return d.teardown()
}

func (d *Daemon) teardown() error {
	var errs []error
	d.stopHA()
	close(d.ctlStop)
	if d.ctlStarted {
		<-d.ctlDone
	}
	d.ioMu.Lock()
	defer d.ioMu.Unlock()
	d.mu.Lock()
	io := d.io
	d.mu.Unlock()
	d.installIO(nil, io)
	if io != nil {
		stopWorkers(io)
	}
	// The mirror next: its OnChange takes mu.
	if d.mirror != nil {
		if err := d.mirror.Close(); err != nil && !errors.Is(err, kernel.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if io != nil {
		for i := range io.progs {
			if err := d.detach(io, i); err != nil {
				errs = append(errs, err)
			}
		}
		if err := d.closeQueues(io); err != nil {
			errs = append(errs, err)
		}
	}
	d.mu.Lock()
	filter := d.filter
	d.filter = nil
	d.mu.Unlock()
	if filter != nil {
		if err := filter.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range d.lpFiles {
		if f != nil {
			f.Close()
		}
	}
	if d.ns.IsOpen() {
		d.ns.Close()
	}
	return errors.Join(errs...)
}

// Config returns the configuration in force (with defaults).
func (d *Daemon) Config() Config { return d.cfg }

// Table returns the flow table (conntrack -L/-D/-F, limits, timeouts).
func (d *Daemon) Table() *flowtable.Table { return d.tab }

// Dataplane returns the dataplane (its Env, counters and settings).
func (d *Daemon) Dataplane() *dataplane.Dataplane { return d.dp }

// Snapshot returns the latest kernel snapshot the Env was built from.
func (d *Daemon) Snapshot() *topo.Snapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.snap
}

// Rules returns the rule set in force, with its current counters.
func (d *Daemon) Rules() *rules.Model { return d.dp.Env().Rules.Model() }

// SetTimeout sets a conntrack timeout by its sysctl name.
func (d *Daemon) SetTimeout(name string, t time.Duration) error { return d.tab.SetTimeout(name, t) }

// SetMax sets the connection limit (nf_conntrack_max), at most the
// capacity.
func (d *Daemon) SetMax(n int) error { return d.tab.SetMax(n) }

// ReplaceRules compiles model for the interfaces and swaps it in
// atomically: every worker uses it from its next batch; connections and
// their NAT stay, counters of surviving rules carry over. On error nothing
// changes.
func (d *Daemon) ReplaceRules(model *rules.Model) error {
	if model == nil {
		return fmt.Errorf("%w: no rule set", ErrConfig)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return ErrStopped
	}
	d.settlePending(true)
	sp, facts, err := d.planSteering(d.snap, model, false)
	if err != nil {
		return err
	}
	d.prepareSlots(sp)
	env, err := d.newEnv(d.snap, model)
	if err != nil {
		return err
	}
	if err := d.commitSteering(sp); err != nil {
		return err
	}
	d.model = model
	d.setEnv(env)
	d.haRulesChanged(model)
	d.reloads.Add(1)
	d.reportPorts(facts)
	return nil
}

// reportPorts emits the local-ports check's facts when they differ from
// the last ones reported. Called with mu held.
func (d *Daemon) reportPorts(facts []Event) {
	s := fmt.Sprint(facts)
	if s == d.lastPorts {
		return
	}
	d.lastPorts = s
	for _, f := range facts {
		d.emit(f)
	}
}

// ReloadRules reads, parses and compiles the configured rules file and
// swaps it in (SIGHUP) as the whole rule set, as at start (see
// Config.Rules); on any error the rules in force stay.
func (d *Daemon) ReloadRules() error {
	text, err := d.cfg.readRules()
	if err != nil {
		return err
	}
	m, err := ParseRules(text)
	if err != nil {
		return fmt.Errorf("rules %s: %w", d.cfg.Rules, err)
	}
	if err := d.ReplaceRules(m); err != nil {
		return err
	}
	d.emit(info("rules reloaded", "file", d.cfg.Rules))
	return nil
}

// newEnv builds an Env for a snapshot and a model. Called with mu held.
func (d *Daemon) newEnv(s *topo.Snapshot, m *rules.Model) (*dataplane.Env, error) {
	d.settlePending(true)
	return dataplane.NewEnv(dataplane.EnvConfig{Snapshot: s, Inside: d.cfg.Inside, Outside: d.cfg.Outside,
		Model: m, Prev: d.dp.Env(), Pools: d.dp.Pools})
}

// setEnv swaps an Env in and arranges for its rule counters to settle
// once every core has left the previous one. Called with mu held.
func (d *Daemon) setEnv(env *dataplane.Env) {
	d.dp.SetEnv(env)
	d.dp.Wake() // idle workers take the new Env now, not at a poll timeout
	d.settle = env.Rules
	d.settleAt = d.settleAt[:0]
	for _, c := range d.dp.Counters() {
		d.settleAt = append(d.settleAt, c.Batches)
	}
}

// Stats are the daemon's counters, for the control API.
type Stats struct {
	Pipeline dataplane.Counters   // summed over cores
	Cores    []dataplane.Counters // per core (= queue)
	Table    flowtable.Stats      // summed over cores and the control plane
	Conns    int
	Max      int
	Capacity int
	// Mappings and MappingsMax are the full-cone mappings (FULLCONENAT)
	// live and their limit.
	Mappings, MappingsMax int
	Ports                 portalloc.Stats
	Workers               []worker.Stats
	// Sockets are per worker, per interface (port ID order).
	Sockets  [][]ring.SocketStats
	Programs []ProgramStats
	// Flushed counts connections flushed because their masquerading
	// address went away or its interface went down.
	Flushed uint64
	// Resolves counts next hops the kernel was asked to resolve;
	// ResolveErrors those requests that failed.
	Resolves, ResolveErrors uint64
	// RuleReplacements counts rule sets swapped in; EnvErrors kernel
	// snapshots that could not be compiled (the previous Env stayed).
	RuleReplacements, EnvErrors uint64
	// IOChanges counts the times the programs, sockets and workers were
	// rebuilt for interfaces that went, came back or changed MTU.
	IOChanges uint64
}

// ProgramStats are one interface's XDP program counters.
type ProgramStats struct {
	Interface string
	Mode      string
	xdpprog.Stats
}

// Stats collects the counters.
func (d *Daemon) Stats() Stats {
	s := Stats{Cores: d.dp.Counters(), Table: d.tab.TotalStats(), Conns: d.tab.Count(), Max: d.tab.Max(),
		Capacity: d.tab.Capacity(), Ports: d.dp.Pools.Stats(),
		Mappings: d.dp.Mappings.Count(), MappingsMax: d.dp.Mappings.Max(),
		Flushed: d.flushed.Load(), Resolves: d.resolves.Load(), ResolveErrors: d.resolveErrs.Load(),
		RuleReplacements: d.reloads.Load(), EnvErrors: d.envErrors.Load()}
	for i := range s.Cores {
		s.Pipeline.Add(&s.Cores[i])
	}
	s.IOChanges = d.ioChanges.Load()
	d.ioReadMu.RLock()
	defer d.ioReadMu.RUnlock()
	d.mu.Lock()
	var progs []*xdpprog.Program
	var workers []*worker.Worker
	if d.io != nil {
		progs, workers = slices.Clone(d.io.progs), slices.Clone(d.io.workers)
	}
	d.mu.Unlock()
	for _, w := range workers {
		s.Workers = append(s.Workers, w.Stats())
		var ss []ring.SocketStats
		for _, sock := range w.UMEM().Sockets() {
			st, err := sock.Stats()
			if err == nil {
				ss = append(ss, st)
			}
		}
		s.Sockets = append(s.Sockets, ss)
	}
	for i, p := range progs {
		if p == nil {
			continue
		}
		st, err := p.Stats()
		if err == nil {
			s.Programs = append(s.Programs, ProgramStats{Interface: d.names[i], Mode: xdpModeName(p.Mode()), Stats: st})
		}
	}
	return s
}
