package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"

	vnetns "github.com/vishvananda/netns"

	"xnat/dataplane/kernel"
	"xnat/dataplane/topo"
	"xnat/dataplane/worker"
	"xnat/dataplane/xdpprog"
	"xnat/ring"
)

// ioSet is what the daemon has on the interfaces: an XDP program per
// interface (port ID order; nil while the interface is absent), one UMEM
// per queue with a socket on every present interface, and one worker per
// queue.
type ioSet struct {
	progs     []*xdpprog.Program
	ifindex   []int // the interface each program is attached to, 0 if none
	umems     []*ring.UMEM
	workers   []*worker.Worker
	done      []chan struct{}
	frameSize uint32
}

// ifState is an interface as the I/O sees it.
type ifState struct {
	index int
	mtu   int
}

// wantIO returns, per configured interface, its index and MTU in a
// snapshot (index 0 when it is absent).
func (d *Daemon) wantIO(s *topo.Snapshot) []ifState {
	out := make([]ifState, len(d.names))
	for i, name := range d.names {
		if ifc, ok := s.IfaceByName(name); ok {
			out[i] = ifState{index: ifc.Index, mtu: ifc.MTU}
		}
	}
	return out
}

// frameSizeFor returns the UMEM frame size that receives frames of an
// MTU (with an Ethernet header and one VLAN tag), or an error naming the
// largest MTU xnat receives.
func frameSizeFor(mtu int) (uint32, error) {
	const overhead = 14 + 4 + ring.XDPPacketHeadroom
	for _, fs := range []uint32{ring.DefaultFrameSize, 4096} {
		if mtu+overhead <= int(fs) {
			return fs, nil
		}
	}
	return 0, fmt.Errorf("MTU %d: xnat receives frames of at most %d bytes (an MTU of %d): its AF_XDP frames are 4096 bytes, less %d of headroom and 18 of Ethernet header and VLAN tag; lower the MTU (ip link set <if> mtu %d)",
		mtu, 4096-ring.XDPPacketHeadroom, 4096-overhead, ring.XDPPacketHeadroom, 4096-overhead)
}

// inNS runs f on a thread in the daemon's network namespace (the one
// Start ran in): attaching XDP and binding sockets name interfaces by
// index in the calling thread's namespace.
func (d *Daemon) inNS(f func() error) error {
	if !d.ns.IsOpen() {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		cur, err := vnetns.Get()
		if err != nil {
			errc <- fmt.Errorf("current network namespace: %w", err)
			return
		}
		defer cur.Close()
		if err := vnetns.Set(d.ns); err != nil {
			errc <- fmt.Errorf("entering the daemon's network namespace: %w", err)
			return
		}
		ferr := f()
		if err := vnetns.Set(cur); err != nil {
			// The thread stays locked and exits with the goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("leaving the daemon's network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// load loads the XDP program of port i, with the DNAT groups in force,
// not attached.
func (d *Daemon) load(i int) (*xdpprog.Program, error) {
	name := d.names[i]
	prog, err := d.filter.Load()
	if err != nil {
		return nil, fmt.Errorf("loading the XDP program for %s: %w", name, err)
	}
	d.mu.Lock()
	var groups []xdpprog.Group
	if i < len(d.groups) {
		groups = d.groups[i]
	}
	err = prog.SetDNAT(groups)
	d.mu.Unlock()
	if err != nil {
		prog.Close()
		return nil, fmt.Errorf("DNAT steering of %s: %w", name, err)
	}
	return prog, nil
}

// attach loads and attaches the XDP program of port i on ifindex, with
// the DNAT groups in force. Called in the daemon's namespace.
func (d *Daemon) attach(i, ifindex int) (*xdpprog.Program, error) {
	name := d.names[i]
	prog, err := d.load(i)
	if err != nil {
		return nil, err
	}
	mode, _ := d.cfg.attachMode()
	got, err := prog.Attach(ifindex, mode, d.cfg.ReplaceXDP)
	if err != nil {
		prog.Close()
		if errors.Is(err, xdpprog.ErrForeign) {
			return nil, fmt.Errorf("%w: attaching XDP to %s: %w; xnatd replaces it only with --replace-xdp (replace_xdp = true)", ErrConfig, name, err)
		}
		return nil, fmt.Errorf("attaching XDP to %s: %w", name, err)
	}
	args := []any{"interface", name, "ifindex", ifindex, "mode", xdpModeName(got)}
	if r := prog.Replaced(); r != 0 {
		args = append(args, "replaced_program", r)
	}
	d.emit(info("xdp attached", args...))
	return prog, nil
}

// openQueues opens one UMEM per queue with a socket on every interface
// that has a program, registers the sockets and makes the workers (not
// yet running). Called in the daemon's namespace.
func (d *Daemon) openQueues(io *ioSet) error {
	bind, _ := d.cfg.bindMode()
	poll, _ := d.cfg.pollMode()
	var present []int
	for i, p := range io.progs {
		if p != nil {
			present = append(present, i)
		}
	}
	if len(present) == 0 {
		return nil
	}
	rcfg := ring.Config{Bind: bind, Poll: poll, PollTimeout: d.opts.PollTimeout, FrameSize: io.frameSize,
		NumFrames: uint32(2 * ring.DefaultRingSize * len(present))}
	for q := range d.cfg.Queues {
		eps := make([]ring.Endpoint, len(present))
		ports := make([]uint16, len(present))
		for j, i := range present {
			eps[j] = ring.Endpoint{Ifindex: io.ifindex[i], Queue: uint32(q)}
			ports[j] = uint16(i)
		}
		u, err := ring.Open(rcfg, eps...)
		if err != nil {
			return fmt.Errorf("AF_XDP sockets of queue %d: %w", q, err)
		}
		io.umems = append(io.umems, u)
		for j, s := range u.Sockets() {
			i := present[j]
			if err := io.progs[i].Register(uint32(q), s.FD()); err != nil {
				return fmt.Errorf("registering the socket of %s queue %d: %w", d.names[i], q, err)
			}
			inf := s.Info()
			d.emit(info("af_xdp socket", "interface", d.names[i], "queue", q,
				"bind", bindName(inf.ZeroCopy), "need_wakeup", inf.NeedWakeup, "poll", poll.String(), "frame_size", io.frameSize))
		}
		cpu := -1
		if len(d.cfg.CPUs) > 0 {
			cpu = d.cfg.CPUs[q]
		}
		w, err := worker.New(d.dp.Pipeline(q), u, ports, worker.Config{Queue: uint32(q), CPU: cpu})
		if err != nil {
			return fmt.Errorf("worker %d: %w", q, err)
		}
		io.workers = append(io.workers, w)
	}
	return nil
}

// runWorkers starts io's workers; errc receives the error of one that
// stops on its own.
func (d *Daemon) runWorkers(io *ioSet, errc chan<- error) {
	for _, w := range io.workers {
		done := make(chan struct{})
		io.done = append(io.done, done)
		go func() {
			defer close(done)
			if err := w.Run(); err != nil {
				select {
				case errc <- err:
				default:
				}
				d.emit(Event{Level: slog.LevelError, Msg: "worker stopped", Args: []any{"queue", w.Queue(), "err", err}})
			}
		}()
	}
}

// installIO makes next the daemon's I/O; Stats sees the previous one no
// more once it returns. Programs of next that prev did not have get the
// DNAT groups in force (a rule change meanwhile wrote only the old ones).
func (d *Daemon) installIO(next, prev *ioSet) {
	d.ioReadMu.Lock()
	defer d.ioReadMu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.io = next
	if next == nil {
		return
	}
	for i, p := range next.progs {
		if p == nil || prev != nil && i < len(prev.progs) && p == prev.progs[i] || i >= len(d.groups) {
			continue
		}
		if err := p.SetDNAT(d.groups[i]); err != nil {
			d.emit(warn("DNAT steering", "interface", d.names[i], "err", err))
		}
	}
}

// stopWorkers stops io's workers and waits for them.
func stopWorkers(io *ioSet) {
	for _, w := range io.workers {
		w.Stop()
	}
	for _, done := range io.done {
		<-done
	}
	io.workers, io.done = nil, nil
}

// closeQueues closes io's sockets (the workers are stopped).
func (d *Daemon) closeQueues(io *ioSet) error {
	var errs []error
	for q, u := range io.umems {
		if err := u.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the sockets of queue %d: %w", q, err))
		}
	}
	io.umems = nil
	return errors.Join(errs...)
}

// detach detaches and closes port i's program.
func (d *Daemon) detach(io *ioSet, i int) error {
	p := io.progs[i]
	io.progs[i], io.ifindex[i] = nil, 0
	if p == nil {
		return nil
	}
	if err := p.Close(); err != nil {
		return fmt.Errorf("detaching XDP from %s: %w", d.names[i], err)
	}
	return nil
}

// reconcileIO brings the programs, sockets and workers in line with the
// interfaces of the latest snapshot: an interface deleted loses its
// program and sockets, one created again (a new index) gets them back,
// and an MTU the frames no longer hold gets larger frames. The workers
// are stopped meanwhile; the programs of the other interfaces stay, so
// their packets meant for xnat are dropped, never passed on. Called by the
// control goroutine.
func (d *Daemon) reconcileIO() {
	d.ioMu.Lock()
	defer d.ioMu.Unlock()
	d.mu.Lock()
	if d.stopped || d.handed || d.snap == nil {
		d.mu.Unlock()
		return
	}
	want := d.wantIO(d.snap)
	cur := d.io
	d.mu.Unlock()
	frame := cur.frameSize
	maxMTU := 0
	for _, w := range want {
		maxMTU = max(maxMTU, w.mtu)
	}
	if fs, err := frameSizeFor(maxMTU); err != nil {
		if d.mtuErr != maxMTU {
			d.mtuErr = maxMTU
			d.emit(Event{Level: slog.LevelError, Msg: "an xnat interface's MTU exceeds what xnat receives: longer frames are dropped", Args: []any{"err", err}})
		}
	} else {
		d.mtuErr = 0
		frame = max(frame, fs)
	}
	changed := frame != cur.frameSize || d.ioRetry
	anyPresent := false
	for i, w := range want {
		if w.index != cur.ifindex[i] {
			changed = true
		}
		anyPresent = anyPresent || w.index != 0
	}
	if !changed {
		return
	}
	d.ioRetry = false
	// Out of Stats' sight first, then stopped and closed.
	idle := &ioSet{progs: slices.Clone(cur.progs), ifindex: slices.Clone(cur.ifindex), frameSize: cur.frameSize}
	d.installIO(idle, cur)
	stopWorkers(cur)
	if err := d.closeQueues(cur); err != nil {
		d.emit(warn("closing sockets", "err", err))
	}
	next := &ioSet{progs: slices.Clone(cur.progs), ifindex: slices.Clone(cur.ifindex), frameSize: frame}
	err := d.inNS(func() error {
		var errs []error
		for i, w := range want {
			if w.index == next.ifindex[i] {
				continue
			}
			if err := d.detach(next, i); err != nil {
				errs = append(errs, err)
			}
			if w.index == 0 {
				d.emit(warn("xnat interface gone: its program and sockets are closed until it comes back", "interface", d.names[i]))
				continue
			}
			p, err := d.attach(i, w.index)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			next.progs[i], next.ifindex[i] = p, w.index
		}
		if err := d.openQueues(next); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err != nil || anyPresent && len(next.workers) != d.cfg.Queues {
		// The programs that are attached stay and drop xnat's packets;
		// the control goroutine tries again.
		d.emit(Event{Level: slog.LevelError, Msg: "re-attaching xnat's interfaces; retrying", Args: []any{"err", err}})
		stopWorkers(next)
		if err := d.closeQueues(next); err != nil {
			d.emit(warn("closing sockets", "err", err))
		}
		d.ioRetry = true
	}
	d.runWorkers(next, make(chan error, len(next.workers)))
	d.installIO(next, cur)
	d.ioChanges.Add(1)
	d.emit(info("interfaces re-attached", "frame_size", frame, "workers", len(next.workers)))
	// The kernel's view, neighbours included, is applied again to the new
	// sockets: a snapshot taken while the interface was coming back may
	// have been applied before they existed, and nothing else would
	// bring it again until the kernel changes.
	go func() {
		if err := d.mirror.Refresh(); err != nil && !errors.Is(err, kernel.ErrClosed) {
			d.emit(warn("refreshing the kernel's view after re-attaching", "err", err))
		}
	}()
}
