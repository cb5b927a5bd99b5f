package worker

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"xnat/dataplane"
	"xnat/ring"
)

// DefaultBatch is the number of descriptors a worker takes from each socket
// per iteration when Config.Batch is 0.
const DefaultBatch = 64

// MaxBatch bounds Config.Batch.
const MaxBatch = 1024

// ErrConfig is returned (wrapped) for an invalid configuration.
var ErrConfig = errors.New("worker: invalid configuration")

// Config configures a Worker.
type Config struct {
	// Queue is the queue index the worker serves (for its name and
	// counters; the UMEM is already bound to it).
	Queue uint32
	// CPU is the CPU the worker's thread is pinned to; negative means
	// no pinning.
	CPU int
	// Batch is how many descriptors are taken from each socket per
	// iteration; 0 means DefaultBatch.
	Batch int
}

// Stats are one worker's counters.
type Stats struct {
	Queue      uint32
	CPU        int
	Iterations uint64 // loop iterations
	IdleWaits  uint64 // iterations that received nothing and waited
	WaitErrors uint64 // waits that failed (poll errors)
	Rx         uint64 // frames received from the sockets
	Tx         uint64 // frames put on TX rings (forwarded and replies)
	TxRefused  uint64 // frames a full TX ring refused (released)
	Dropped    uint64 // frames the pipeline dropped (released)
	Kernel     uint64 // frames the pipeline handed to the kernel (released: xnat does not reinject)
	Held       uint64 // frames the pipeline held for a next hop being resolved
}

// counters are the plain counts, in Stats order after Queue and CPU.
type counters struct {
	iterations, idleWaits, waitErrors, rx, tx, txRefused, dropped, kernel, held uint64
}

// published holds atomic copies of the counters on cache lines of their own.
type published struct {
	_                                                                           [64]byte
	iterations, idleWaits, waitErrors, rx, tx, txRefused, dropped, kernel, held atomic.Uint64
	_                                                                           [64]byte
}

// Worker is the packet loop of one queue.
type Worker struct {
	cfg    Config
	pipe   *dataplane.Pipeline
	u      *ring.UMEM
	socks  []*ring.Socket
	ports  []uint16                 // socket index -> dataplane port ID
	sockOf [dataplane.MaxPorts]int8 // dataplane port ID -> socket index, -1

	descs  []ring.Desc
	frames [][]byte
	sizes  []int
	in     []uint16
	res    []dataplane.Result
	tx     [][]ring.Desc // per socket
	rel    []ring.Desc
	// held are the descriptors of the frames the pipeline holds, by
	// Result.Hold.
	held [dataplane.HoldCapacity]ring.Desc

	cnt counters
	pub published

	stop    atomic.Bool
	running atomic.Bool
}

// New makes a worker over a pipeline and a UMEM whose i-th socket is on the
// interface of dataplane port ports[i].
func New(pipe *dataplane.Pipeline, u *ring.UMEM, ports []uint16, cfg Config) (*Worker, error) {
	if pipe == nil || u == nil {
		return nil, fmt.Errorf("%w: pipeline and UMEM are required", ErrConfig)
	}
	socks := u.Sockets()
	if len(ports) != len(socks) {
		return nil, fmt.Errorf("%w: %d ports for %d sockets", ErrConfig, len(ports), len(socks))
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Batch < 1 || cfg.Batch > MaxBatch {
		return nil, fmt.Errorf("%w: batch %d (1 to %d)", ErrConfig, cfg.Batch, MaxBatch)
	}
	if cfg.CPU >= len(unix.CPUSet{})*64 {
		return nil, fmt.Errorf("%w: CPU %d", ErrConfig, cfg.CPU)
	}
	w := &Worker{cfg: cfg, pipe: pipe, u: u, socks: socks, ports: append([]uint16(nil), ports...)}
	for i := range w.sockOf {
		w.sockOf[i] = -1
	}
	for i, p := range ports {
		if int(p) >= dataplane.MaxPorts {
			return nil, fmt.Errorf("%w: port ID %d (below %d)", ErrConfig, p, dataplane.MaxPorts)
		}
		if w.sockOf[p] >= 0 {
			return nil, fmt.Errorf("%w: port ID %d on two sockets", ErrConfig, p)
		}
		w.sockOf[p] = int8(i)
	}
	total := cfg.Batch * len(socks)
	w.descs = make([]ring.Desc, total)
	w.frames = make([][]byte, total)
	w.sizes = make([]int, total)
	w.in = make([]uint16, total)
	w.res = make([]dataplane.Result, total)
	w.rel = make([]ring.Desc, 0, total+dataplane.HoldCapacity)
	w.tx = make([][]ring.Desc, len(socks))
	for i := range w.tx {
		w.tx[i] = make([]ring.Desc, 0, total+dataplane.HoldCapacity)
	}
	return w, nil
}

// Run runs the loop on the calling goroutine until Stop. It locks the
// goroutine to its OS thread and pins the thread to Config.CPU (a pinned
// thread then exits with the goroutine rather than serve others). It returns
// an error if the pinning fails or the UMEM is closed under it.
func (w *Worker) Run() error {
	if !w.running.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: worker of queue %d already running", ErrConfig, w.cfg.Queue)
	}
	defer w.running.Store(false)
	// Work that arrives on no socket (a neighbour resolved, an HA
	// commit) wakes this worker's Wait through the UMEM's eventfd.
	w.pipe.SetWaker(w.u.Wake)
	runtime.LockOSThread()
	if w.cfg.CPU >= 0 {
		var set unix.CPUSet
		set.Set(w.cfg.CPU)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("worker %d: pinning to CPU %d: %w", w.cfg.Queue, w.cfg.CPU, err)
		}
	} else {
		defer runtime.UnlockOSThread()
	}
	// A busy-polling worker spins through idle iterations; it sweeps on
	// every 256th (a few hundred microseconds apart) rather than on each.
	idleMask := uint64(0)
	if w.u.Config().Poll == ring.PollBusy {
		idleMask = 255
	}
	for !w.stop.Load() {
		if w.step() > 0 {
			continue
		}
		if w.cnt.idleWaits&idleMask == 0 {
			w.idle()
			if w.pipe.CommitPending() {
				continue // the rest of an HA commit, without a poll timeout's sleep
			}
		}
		w.cnt.idleWaits++
		if err := w.u.Wait(); err != nil {
			w.cnt.waitErrors++
			w.publish()
			if errors.Is(err, ring.ErrClosed) {
				return fmt.Errorf("worker %d: %w", w.cfg.Queue, err)
			}
		}
	}
	// The frames the pipeline still holds go back to the UMEM.
	w.pipe.DropHeld()
	w.dispatch(0)
	w.publish()
	return nil
}

// idle runs the pipeline's housekeeping (Pipeline.Idle) and carries out
// what it decided for held frames.
func (w *Worker) idle() {
	w.pipe.Idle()
	w.dispatch(0)
}

// Stop asks the loop to end; Run returns after the current iteration,
// a sleeping Wait being woken (UMEM.Wake). It may be called from any
// goroutine, and before Run, in which case Run returns at once.
func (w *Worker) Stop() {
	w.stop.Store(true)
	w.u.Wake()
}

// step runs one iteration and returns how many frames it received.
func (w *Worker) step() int {
	b := w.cfg.Batch
	rx := 0
	for i, s := range w.socks {
		n := s.Receive(w.descs[rx : rx+b])
		port := w.ports[i]
		for j := rx; j < rx+n; j++ {
			w.in[j] = port
		}
		rx += n
	}
	if rx > 0 {
		w.cnt.rx += uint64(rx)
		for i := range rx {
			f := w.u.Frame(w.descs[i])
			w.frames[i] = f
			w.sizes[i] = len(f)
		}
		w.pipe.Process(w.frames[:rx], w.sizes[:rx], w.in[:rx], w.res[:rx])
		w.dispatch(rx)
	}
	for _, s := range w.socks {
		s.Complete()
	}
	for _, s := range w.socks {
		s.Fill()
	}
	w.cnt.iterations++
	w.publish()
	return rx
}

// dispatch sends, releases and counts the decided frames of a batch,
// and the held frames the pipeline released.
func (w *Worker) dispatch(n int) {
	for i := range n {
		r := &w.res[i]
		if r.Action == dataplane.ActHold && int(r.Hold) < len(w.held) {
			w.held[r.Hold] = w.descs[i]
			w.cnt.held++
			continue
		}
		w.decide(r, w.descs[i], cap(w.frames[i]))
	}
	for _, rl := range w.pipe.Released() {
		if int(rl.Hold) < len(w.held) {
			d := w.held[rl.Hold]
			w.decide(&rl.Result, d, cap(w.u.Frame(d)))
		}
	}
	for si, s := range w.socks {
		q := w.tx[si]
		if len(q) == 0 {
			continue
		}
		k := s.Transmit(q)
		w.cnt.tx += uint64(k)
		if k < len(q) {
			w.cnt.txRefused += uint64(len(q) - k)
			w.rel = append(w.rel, q[k:]...)
		}
		w.tx[si] = q[:0]
	}
	if len(w.rel) > 0 {
		w.u.Release(w.rel)
		w.rel = w.rel[:0]
	}
}

// decide queues a decided frame for transmission, or releases it.
func (w *Worker) decide(r *dataplane.Result, d ring.Desc, capacity int) {
	switch r.Action {
	case dataplane.ActForward, dataplane.ActReply:
		si := int8(-1)
		if int(r.Port) < len(w.sockOf) {
			si = w.sockOf[r.Port]
		}
		if si < 0 || r.Len <= 0 || r.Len > capacity {
			w.rel = append(w.rel, d)
			w.cnt.dropped++
			return
		}
		d.Len = uint32(r.Len)
		w.tx[si] = append(w.tx[si], d)
	case dataplane.ActKernel:
		w.rel = append(w.rel, d)
		w.cnt.kernel++
	default:
		w.rel = append(w.rel, d)
		w.cnt.dropped++
	}
}

// Held returns the descriptors of the frames the pipeline holds: for an
// audit of the UMEM (ring.UMEM.Audit), from the worker's goroutine or
// after Run returned.
func (w *Worker) Held() []ring.Desc {
	var out []ring.Desc
	for i := range w.held {
		if w.pipe.IsHeld(uint16(i)) {
			out = append(out, w.held[i])
		}
	}
	return out
}

func (w *Worker) publish() {
	c, p := &w.cnt, &w.pub
	p.iterations.Store(c.iterations)
	p.idleWaits.Store(c.idleWaits)
	p.waitErrors.Store(c.waitErrors)
	p.rx.Store(c.rx)
	p.tx.Store(c.tx)
	p.txRefused.Store(c.txRefused)
	p.dropped.Store(c.dropped)
	p.kernel.Store(c.kernel)
	p.held.Store(c.held)
}

// Stats returns the worker's published counters; any goroutine may call it.
func (w *Worker) Stats() Stats {
	p := &w.pub
	return Stats{
		Queue: w.cfg.Queue, CPU: w.cfg.CPU,
		Iterations: p.iterations.Load(), IdleWaits: p.idleWaits.Load(), WaitErrors: p.waitErrors.Load(),
		Rx: p.rx.Load(), Tx: p.tx.Load(), TxRefused: p.txRefused.Load(), Dropped: p.dropped.Load(), Kernel: p.kernel.Load(), Held: p.held.Load(),
	}
}

// Queue returns the queue index the worker serves.
func (w *Worker) Queue() uint32 { return w.cfg.Queue }

// UMEM returns the worker's UMEM (its sockets' Stats may be read from any
// goroutine).
func (w *Worker) UMEM() *ring.UMEM { return w.u }
