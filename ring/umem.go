package ring

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Frame states kept when Config.TrackOwnership is set.
const (
	stateFree     uint8 = 0
	statePipeline uint8 = 1
	stateFill     uint8 = 0x10 // | socket index: on that socket's fill or RX ring
	stateTx       uint8 = 0x20 // | socket index: on its TX ring, in the kernel or on its completion ring
)

// UMEM is one packet buffer area shared by up to MaxSockets AF_XDP
// sockets (one per interface queue), with its stack of free frames.
//
// A UMEM, its sockets and its frames belong to one goroutine (a
// worker): none of their methods may be called concurrently, except
// Stats, Socket.Stats and Wake, which any goroutine may call at any time.
type UMEM struct {
	cfg        Config
	area       []byte
	frameShift uint
	frameMask  uint64 // FrameSize-1
	dataOff    uint64 // Headroom + XDPPacketHeadroom: where a packet starts in a frame
	stack      []uint64
	track      []uint8
	socks      []*Socket
	pollfds    []unix.PollFd
	sleep      unix.Timespec
	short      unix.Timespec
	ts         unix.Timespec // ppoll's argument: the kernel writes the time left into it
	busy       bool
	closed     bool

	// wakeFd is an eventfd, the last of pollfds (sleeping mode only):
	// Wake writes it from any goroutine, under wakeMu so that Close
	// never closes it under a write; Wait reads it empty.
	wakeMu  sync.Mutex
	wakeFd  int
	wakeBuf [8]byte

	_         [64]byte
	ownErrors atomic.Uint64
	badDescs  atomic.Uint64
	freeGauge atomic.Uint64
	_         [64]byte
}

// busyRetry bounds how long Open retries a bind refused with EBUSY.
const busyRetry = 2 * time.Second

// Open creates a UMEM and one socket per endpoint sharing it: the first
// socket registers the UMEM, the others bind with XDP_SHARED_UMEM, each
// with its own fill and completion rings (Linux 5.10 or later for
// sockets on different devices or queues). Sockets are returned by
// Socket in the order of eps. The bind mode actually obtained is
// reported by each socket's Info. Every socket's fill ring is stocked
// before Open returns. A bind refused with EBUSY (a queue still held by
// a socket closed an instant ago) is retried for up to two seconds.
func Open(cfg Config, eps ...Endpoint) (*UMEM, error) {
	if len(eps) == 0 {
		return nil, ErrNoEndpoints
	}
	if len(eps) > MaxSockets {
		return nil, fmt.Errorf("%w: %d endpoints, at most %d", ErrConfig, len(eps), MaxSockets)
	}
	for i, a := range eps {
		if a.Ifindex <= 0 {
			return nil, fmt.Errorf("%w: endpoint %d has ifindex %d", ErrConfig, i, a.Ifindex)
		}
		for _, b := range eps[:i] {
			if a == b {
				return nil, fmt.Errorf("%w: ifindex %d queue %d", ErrDuplicateEndpoint, a.Ifindex, a.Queue)
			}
		}
	}
	cfg, err := cfg.withDefaults(len(eps))
	if err != nil {
		return nil, err
	}
	area, err := mmapArea(int(cfg.NumFrames) * int(cfg.FrameSize))
	if err != nil {
		return nil, err
	}
	u := &UMEM{
		wakeFd:     -1,
		cfg:        cfg,
		area:       area,
		frameShift: uint(bits.TrailingZeros32(cfg.FrameSize)),
		frameMask:  uint64(cfg.FrameSize - 1),
		dataOff:    uint64(cfg.Headroom) + XDPPacketHeadroom,
		stack:      make([]uint64, cfg.NumFrames),
		busy:       cfg.Poll == PollBusy,
		sleep:      unix.NsecToTimespec(int64(cfg.PollTimeout)),
		short:      unix.NsecToTimespec(int64(min(cfg.PollTimeout, time.Millisecond))),
	}
	if cfg.TrackOwnership {
		u.track = make([]uint8, cfg.NumFrames)
	}

	var flags []uint16
	switch cfg.Bind {
	case BindAuto:
		flags = []uint16{unix.XDP_ZEROCOPY, unix.XDP_COPY}
	case BindCopy:
		flags = []uint16{unix.XDP_COPY}
	case BindZeroCopy:
		flags = []uint16{unix.XDP_ZEROCOPY}
	}
	var errs []error
	for _, f := range flags {
		if !cfg.NoNeedWakeup {
			f |= unix.XDP_USE_NEED_WAKEUP
		}
		// A queue stays busy for a moment after the socket bound to it
		// is closed (the kernel releases its buffer pool from a work
		// queue): EBUSY is retried for a bounded time.
		deadline := time.Now().Add(busyRetry)
		err := u.bindAll(eps, f)
		for err != nil && errors.Is(err, unix.EBUSY) && time.Now().Before(deadline) {
			u.closeSockets()
			time.Sleep(10 * time.Millisecond)
			err = u.bindAll(eps, f)
		}
		if err == nil {
			errs = nil
			break
		}
		errs = append(errs, err)
		u.closeSockets()
	}
	if len(errs) > 0 {
		_ = unix.Munmap(u.area)
		return nil, errors.Join(errs...)
	}

	// Every frame starts on the free stack.
	for i := range u.stack {
		u.stack[i] = uint64(len(u.stack)-1-i) << u.frameShift
	}
	u.freeGauge.Store(uint64(len(u.stack)))
	u.pollfds = make([]unix.PollFd, len(u.socks), len(u.socks)+1)
	for i, s := range u.socks {
		u.pollfds[i] = unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN}
	}
	if !u.busy {
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			err = errors.Join(fmt.Errorf("ring: eventfd: %w", err), u.closeSockets())
			_ = unix.Munmap(u.area)
			return nil, err
		}
		u.wakeFd = fd
		u.pollfds = append(u.pollfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	// Stock every fill ring before the caller registers the sockets in
	// an XSKMAP: a packet redirected to a socket with an empty fill
	// ring is dropped.
	for _, s := range u.socks {
		s.Fill()
	}
	return u, nil
}

func (u *UMEM) bindAll(eps []Endpoint, flags uint16) error {
	for i, ep := range eps {
		s, err := u.newSocket(i, ep, flags)
		if err != nil {
			if flags&unix.XDP_ZEROCOPY != 0 {
				return fmt.Errorf("%w: %w", ErrZeroCopy, err)
			}
			return err
		}
		u.socks = append(u.socks, s)
	}
	return nil
}

func (u *UMEM) closeSockets() error {
	var errs []error
	for i := len(u.socks) - 1; i >= 0; i-- {
		if err := u.socks[i].close(); err != nil {
			errs = append(errs, err)
		}
	}
	u.socks = u.socks[:0]
	return errors.Join(errs...)
}

// Close closes every socket (the kernel drops them from XSKMAPs) and
// unmaps the UMEM. Frames still in the pipeline are gone with it.
// Calling Close again returns nil.
func (u *UMEM) Close() error {
	if u.closed {
		return nil
	}
	u.closed = true
	err := u.closeSockets()
	u.wakeMu.Lock()
	if u.wakeFd >= 0 {
		err = errors.Join(err, unix.Close(u.wakeFd))
		u.wakeFd = -1
	}
	u.wakeMu.Unlock()
	if merr := unix.Munmap(u.area); merr != nil {
		err = errors.Join(err, fmt.Errorf("ring: munmap UMEM: %w", merr))
	}
	u.area = nil
	return err
}

// Sockets returns the sockets in the order of Open's endpoints.
func (u *UMEM) Sockets() []*Socket { return u.socks }

// Socket returns the i-th socket.
func (u *UMEM) Socket(i int) *Socket { return u.socks[i] }

// Config returns the configuration in force, defaults filled in.
func (u *UMEM) Config() Config { return u.cfg }

// FrameSize is the size of one frame.
func (u *UMEM) FrameSize() uint32 { return u.cfg.FrameSize }

// Free returns the number of frames on the free stack.
func (u *UMEM) Free() int { return len(u.stack) }

// Stats returns the UMEM's counters; any goroutine may call it.
func (u *UMEM) Stats() UMEMStats {
	return UMEMStats{
		Frames:          u.cfg.NumFrames,
		FreeFrames:      u.freeGauge.Load(),
		OwnershipErrors: u.ownErrors.Load(),
		BadDescs:        u.badDescs.Load(),
	}
}

// Frame returns the bytes of d: its length is d.Len and its capacity
// reaches the end of d's frame, so a packet can grow at its tail. A
// packet can grow at its head by lowering d.Addr, no lower than
// FrameStart(d.Addr). Frame returns nil if d does not lie in one frame.
func (u *UMEM) Frame(d Desc) []byte {
	base := d.Addr &^ u.frameMask
	end := base + uint64(u.cfg.FrameSize)
	if d.Addr+uint64(d.Len) > end || end > uint64(len(u.area)) {
		return nil
	}
	return u.area[d.Addr : d.Addr+uint64(d.Len) : end]
}

// FrameStart returns the address of the first byte of addr's frame.
func (u *UMEM) FrameStart(addr uint64) uint64 { return addr &^ u.frameMask }

// valid reports whether d lies inside one frame of the UMEM.
func (u *UMEM) valid(d Desc) bool {
	end := (d.Addr &^ u.frameMask) + uint64(u.cfg.FrameSize)
	return d.Len > 0 && d.Addr+uint64(d.Len) <= end && end <= uint64(len(u.area))
}

// Alloc takes up to len(descs) frames from the free stack into the
// pipeline, for packets xnat builds itself. Each desc gets the address
// where a received packet would start (after the headroom) and length 0.
func (u *UMEM) Alloc(descs []Desc) int {
	n := min(len(descs), len(u.stack))
	top := len(u.stack)
	for i := 0; i < n; i++ {
		base := u.stack[top-1-i]
		if u.track != nil {
			u.transition(base, stateFree, statePipeline)
		}
		descs[i] = Desc{Addr: base + u.dataOff}
	}
	u.stack = u.stack[:top-n]
	u.freeGauge.Store(uint64(len(u.stack)))
	return n
}

// Release returns frames from the pipeline (dropped packets) to the free
// stack. A desc outside the UMEM is counted in BadDescs and ignored;
// with TrackOwnership a frame that is not in the pipeline is counted in
// OwnershipErrors and ignored.
func (u *UMEM) Release(descs []Desc) {
	for _, d := range descs {
		u.free(d.Addr, statePipeline)
	}
	u.freeGauge.Store(uint64(len(u.stack)))
}

// free pushes addr's frame on the free stack if it is in state from.
func (u *UMEM) free(addr uint64, from uint8) bool {
	base := addr &^ u.frameMask
	if base >= uint64(len(u.area)) || len(u.stack) == cap(u.stack) {
		add(&u.badDescs, 1)
		return false
	}
	if u.track != nil && !u.transition(base, from, stateFree) {
		return false
	}
	u.stack = append(u.stack, base)
	return true
}

// transition moves addr's frame from one state to another, or counts an
// ownership error and leaves it if it is not in state from.
func (u *UMEM) transition(addr uint64, from, to uint8) bool {
	i := addr >> u.frameShift
	if i >= uint64(len(u.track)) || u.track[i] != from {
		add(&u.ownErrors, 1)
		return false
	}
	u.track[i] = to
	return true
}

// Wait waits for work. In PollBusy mode it only kicks sockets whose
// fill ring asks for a wakeup and returns at once. In PollSleep mode it
// returns at once if a socket has received frames or completions to
// take, and otherwise sleeps in poll(2) until one receives or
// PollTimeout passes (at most 1 ms while frames are in transmission,
// whose completion poll does not signal). An interrupted poll returns
// nil.
func (u *UMEM) Wait() error {
	if u.closed {
		return ErrClosed
	}
	if u.busy {
		for _, s := range u.socks {
			if s.info.NeedWakeup && s.fill.needWakeup() && !s.rx.ready() {
				s.kickRx()
			}
		}
		return nil
	}
	ts := &u.sleep
	for _, s := range u.socks {
		if s.rx.ready() || s.comp.ready() {
			return nil
		}
		if s.outstanding > 0 {
			ts = &u.short
		}
	}
	u.ts = *ts
	n, errno := ppoll(u.pollfds, &u.ts)
	if errno != 0 && errno != unix.EINTR {
		return fmt.Errorf("ring: poll: %w", errno)
	}
	if n > 0 {
		for i := range u.pollfds {
			if u.pollfds[i].Revents&unix.POLLNVAL != 0 {
				return fmt.Errorf("ring: poll: descriptor %d is not open", u.pollfds[i].Fd)
			}
		}
	}
	if w := &u.pollfds[len(u.pollfds)-1]; n > 0 && w.Revents != 0 && u.wakeFd >= 0 {
		// Woken: empty the eventfd so that the next Wait sleeps.
		_, _ = unix.Read(u.wakeFd, u.wakeBuf[:])
	}
	return nil
}

// Wake makes the owner's Wait return at once, or its next Wait if none is
// sleeping: for work that arrives other than on a socket (a neighbour
// resolved, connections to commit). Any goroutine may call it, at any
// time, even after Close (it then does nothing). It is one write(2) to
// an eventfd; in busy-polling mode, where Wait never sleeps, nothing.
func (u *UMEM) Wake() {
	one := [8]byte{1}
	u.wakeMu.Lock()
	if u.wakeFd >= 0 {
		_, _ = unix.Write(u.wakeFd, one[:])
	}
	u.wakeMu.Unlock()
}
