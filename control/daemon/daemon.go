package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"xnat/dataplane"
	"xnat/dataplane/kernel"
	"xnat/dataplane/rules"
	"xnat/dataplane/topo"
	"xnat/dataplane/worker"
	"xnat/dataplane/xdpprog"
	"xnat/flowtable"
	"xnat/portalloc"
	"xnat/ring"
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
	progs  []*xdpprog.Program // per interface, port ID order
	umems  []*ring.UMEM       // per queue
	// workers and their Run results
	workers []*worker.Worker
	wg      sync.WaitGroup
	ctlStop chan struct{}
	ctlDone chan struct{}
	// ctlStarted: the control goroutine runs (set before Start returns).
	ctlStarted bool

	evMu sync.Mutex // serialises OnEvent

	mu       sync.Mutex // control path: the model, the snapshot, Env rebuilds, the filter maps
	model    *rules.Model
	snap     *topo.Snapshot
	mirror   *kernel.Mirror
	settle   *rules.Ruleset // waiting for every core to pass two batches
	settleAt []uint64       // each core's batch count when settle was set
	stopped  bool

	flushed, resolves, resolveErrs, reloads, envErrors atomic.Uint64
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
		ctlStop: make(chan struct{}), ctlDone: make(chan struct{})}
	defer func() {
		if err != nil {
			d.teardown()
			d = nil
		}
	}()
	for _, f := range plan.Facts {
		d.emit(f)
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
	// The per-source limiter starts with no limit (xnat.per_source_max
	// 0); xnatctl sysctl sets one at run time. It can track as many
	// inside addresses as the table has connections.
	limiter, err := portalloc.NewSourceLimiter(0, c.Capacity)
	if err != nil {
		return d, fmt.Errorf("per-source limiter: %w", err)
	}
	pools := dataplane.NewPools(c.Queues, limiter)
	// The mirror's first snapshot arrives before Start returns; later
	// ones rebuild the Env.
	d.mirror, err = kernel.Start(kernel.Options{OnChange: d.onSnapshot, OnError: func(e error) {
		d.emit(warn("kernel mirror", "err", e))
	}})
	if err != nil {
		return d, fmt.Errorf("kernel mirror: %w", err)
	}
	d.mu.Lock()
	env, err := dataplane.NewEnv(dataplane.EnvConfig{Snapshot: d.snap, Inside: c.Inside, Outside: c.Outside, Model: d.model, Pools: pools})
	if err == nil {
		d.dp = dataplane.New(d.tab, pools, dataplane.NewSettings(), env)
	}
	d.mu.Unlock()
	if err != nil {
		return d, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if d.filter, err = xdpprog.NewFilter(xdpprog.Options{Queues: uint32(c.Queues)}); err != nil {
		return d, fmt.Errorf("XDP maps: %w", err)
	}
	d.mu.Lock()
	err = d.updateFilter(d.snap, env)
	d.mu.Unlock()
	if err != nil {
		return d, err
	}
	mode, _ := c.attachMode()
	for _, p := range env.Ports {
		prog, err := d.filter.Load()
		if err != nil {
			return d, fmt.Errorf("loading the XDP program for %s: %w", p.Name, err)
		}
		d.progs = append(d.progs, prog)
		got, err := prog.Attach(p.IfIndex, mode)
		if err != nil {
			return d, fmt.Errorf("attaching XDP to %s: %w", p.Name, err)
		}
		args := []any{"interface", p.Name, "mode", xdpModeName(got)}
		if r := prog.Replaced(); r != 0 {
			args = append(args, "replaced_program", r)
		}
		d.emit(info("xdp attached", args...))
	}
	bind, _ := c.bindMode()
	poll, _ := c.pollMode()
	rcfg := ring.Config{Bind: bind, Poll: poll, PollTimeout: opts.PollTimeout,
		NumFrames: uint32(2 * ring.DefaultRingSize * len(env.Ports))}
	for q := range c.Queues {
		eps := make([]ring.Endpoint, len(env.Ports))
		ports := make([]uint16, len(env.Ports))
		for i, p := range env.Ports {
			eps[i] = ring.Endpoint{Ifindex: p.IfIndex, Queue: uint32(q)}
			ports[i] = p.ID
		}
		u, err := ring.Open(rcfg, eps...)
		if err != nil {
			return d, fmt.Errorf("AF_XDP sockets of queue %d: %w", q, err)
		}
		d.umems = append(d.umems, u)
		for i, s := range u.Sockets() {
			if err := d.progs[i].Register(uint32(q), s.FD()); err != nil {
				return d, fmt.Errorf("registering the socket of %s queue %d: %w", env.Ports[i].Name, q, err)
			}
			inf := s.Info()
			d.emit(info("af_xdp socket", "interface", env.Ports[i].Name, "queue", q,
				"bind", bindName(inf.ZeroCopy), "need_wakeup", inf.NeedWakeup, "poll", poll.String()))
		}
		cpu := -1
		if len(c.CPUs) > 0 {
			cpu = c.CPUs[q]
		}
		w, err := worker.New(d.dp.Pipeline(q), u, ports, worker.Config{Queue: uint32(q), CPU: cpu})
		if err != nil {
			return d, fmt.Errorf("worker %d: %w", q, err)
		}
		d.workers = append(d.workers, w)
	}
	errc := make(chan error, len(d.workers))
	for _, w := range d.workers {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := w.Run(); err != nil {
				errc <- err
				d.emit(Event{Level: slog.LevelError, Msg: "worker stopped", Args: []any{"queue", w.Queue(), "err", err}})
			}
		}()
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
	close(d.ctlStop)
	for _, w := range d.workers {
		w.Stop()
	}
	d.wg.Wait()
	if d.ctlStarted {
		<-d.ctlDone
	}
	// The mirror first: its OnChange takes mu.
	if d.mirror != nil {
		if err := d.mirror.Close(); err != nil && !errors.Is(err, kernel.ErrClosed) {
			errs = append(errs, err)
		}
	}
	d.mu.Lock()
	progs, umems, filter := d.progs, d.umems, d.filter
	d.progs, d.umems, d.filter = nil, nil, nil
	d.mu.Unlock()
	for i, p := range progs {
		if err := p.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detaching XDP from %s: %w", d.names[i], err))
		}
	}
	for q, u := range umems {
		if err := u.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the sockets of queue %d: %w", q, err))
		}
	}
	if filter != nil {
		if err := filter.Close(); err != nil {
			errs = append(errs, err)
		}
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
	env, err := d.newEnv(d.snap, model)
	if err != nil {
		return err
	}
	if err := d.updateFilter(d.snap, env); err != nil {
		return err
	}
	d.model = model
	d.setEnv(env)
	d.reloads.Add(1)
	return nil
}

// ReloadRules reads, parses and compiles the configured rules file and
// swaps it in (SIGHUP); on any error the rules in force stay.
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
	Ports    portalloc.Stats
	Workers  []worker.Stats
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
		Flushed: d.flushed.Load(), Resolves: d.resolves.Load(), ResolveErrors: d.resolveErrs.Load(),
		RuleReplacements: d.reloads.Load(), EnvErrors: d.envErrors.Load()}
	for i := range s.Cores {
		s.Pipeline.Add(&s.Cores[i])
	}
	for _, w := range d.workers {
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
	d.mu.Lock()
	progs := slices.Clone(d.progs)
	d.mu.Unlock()
	for i, p := range progs {
		st, err := p.Stats()
		if err == nil {
			s.Programs = append(s.Programs, ProgramStats{Interface: d.names[i], Mode: xdpModeName(p.Mode()), Stats: st})
		}
	}
	return s
}
