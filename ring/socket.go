package ring

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Socket is one AF_XDP socket bound to an interface queue, with its RX,
// TX, fill and completion rings, on its UMEM.
type Socket struct {
	u         *UMEM
	idx       uint8
	fd        int
	info      Info
	closed    bool
	fill      prodRing
	fillAddrs []uint64
	comp      consRing
	compAddrs []uint64
	rx        consRing
	rxDescs   []Desc
	tx        prodRing
	txDescs   []Desc
	// outstanding counts frames put on the TX ring and not yet taken
	// back from the completion ring.
	outstanding uint32
	filledOnce  bool
	maps        [][]byte
	c           *counters
}

func (u *UMEM) newSocket(i int, ep Endpoint, flags uint16) (*Socket, error) {
	fd, err := newXSK()
	if err != nil {
		return nil, err
	}
	s := &Socket{u: u, idx: uint8(i), fd: fd, c: new(counters)}
	if err := s.setup(ep, flags); err != nil {
		return nil, errors.Join(fmt.Errorf("ring: socket on ifindex %d queue %d: %w", ep.Ifindex, ep.Queue, err), s.close())
	}
	return s, nil
}

func (s *Socket) setup(ep Endpoint, flags uint16) error {
	u, cfg := s.u, s.u.cfg
	if s.idx == 0 {
		if err := regUMEM(s.fd, u.area, cfg.FrameSize, cfg.Headroom); err != nil {
			return err
		}
	}
	for _, r := range []struct {
		opt int
		n   uint32
	}{
		{unix.XDP_UMEM_FILL_RING, cfg.FillSize},
		{unix.XDP_UMEM_COMPLETION_RING, cfg.CompletionSize},
		{unix.XDP_RX_RING, cfg.RxSize},
		{unix.XDP_TX_RING, cfg.TxSize},
	} {
		if err := setRingSize(s.fd, r.opt, r.n); err != nil {
			return err
		}
	}
	off, err := mmapOffsets(s.fd)
	if err != nil {
		return err
	}
	m, p, addrs, err := mapAddrRing(s.fd, unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, cfg.FillSize)
	if err != nil {
		return err
	}
	s.maps = append(s.maps, m)
	s.fill = newProdRing(p, cfg.FillSize)
	s.fillAddrs = addrs

	m, p, addrs, err = mapAddrRing(s.fd, unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, cfg.CompletionSize)
	if err != nil {
		return err
	}
	s.maps = append(s.maps, m)
	s.comp = newConsRing(p, cfg.CompletionSize)
	s.compAddrs = addrs

	m, p, descs, err := mapDescRing(s.fd, unix.XDP_PGOFF_RX_RING, off.Rx, cfg.RxSize)
	if err != nil {
		return err
	}
	s.maps = append(s.maps, m)
	s.rx = newConsRing(p, cfg.RxSize)
	s.rxDescs = descs

	m, p, descs, err = mapDescRing(s.fd, unix.XDP_PGOFF_TX_RING, off.Tx, cfg.TxSize)
	if err != nil {
		return err
	}
	s.maps = append(s.maps, m)
	s.tx = newProdRing(p, cfg.TxSize)
	s.txDescs = descs

	sa := &unix.SockaddrXDP{Ifindex: uint32(ep.Ifindex), QueueID: ep.Queue}
	if s.idx == 0 {
		sa.Flags = flags
	} else {
		// A socket sharing a UMEM inherits the owner's copy/zero-copy
		// and need_wakeup modes; the kernel refuses those flags here.
		sa.Flags = unix.XDP_SHARED_UMEM
		sa.SharedUmemFD = uint32(u.socks[0].fd)
	}
	if err := unix.Bind(s.fd, sa); err != nil {
		return fmt.Errorf("bind (flags %#x): %w", sa.Flags, err)
	}
	zc, err := zeroCopy(s.fd)
	if err != nil {
		return err
	}
	s.info = Info{
		Ifindex:    ep.Ifindex,
		Queue:      ep.Queue,
		ZeroCopy:   zc,
		NeedWakeup: flags&unix.XDP_USE_NEED_WAKEUP != 0,
		SharedUMEM: s.idx > 0,
	}
	return nil
}

func newProdRing(p ringPtrs, n uint32) prodRing {
	r := prodRing{producer: p.prod, consumer: p.cons, flags: p.flags, size: n, mask: n - 1}
	r.cachedProd = *p.prod
	r.cachedCons = *p.cons
	return r
}

func newConsRing(p ringPtrs, n uint32) consRing {
	r := consRing{producer: p.prod, consumer: p.cons, flags: p.flags, size: n, mask: n - 1}
	r.cachedProd = *p.prod
	r.cachedCons = *p.cons
	return r
}

func (s *Socket) close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for _, m := range s.maps {
		if err := unix.Munmap(m); err != nil {
			errs = append(errs, fmt.Errorf("ring: munmap ring: %w", err))
		}
	}
	s.maps = nil
	if s.fd >= 0 {
		if err := unix.Close(s.fd); err != nil {
			errs = append(errs, fmt.Errorf("ring: close socket: %w", err))
		}
		s.fd = -1
	}
	return errors.Join(errs...)
}

// FD is the socket's file descriptor, to register in an XSKMAP.
func (s *Socket) FD() int { return s.fd }

// Info tells how the socket is bound.
func (s *Socket) Info() Info { return s.info }

// Receive takes up to len(descs) received packets from the RX ring into
// descs and returns how many. The frames are then in the pipeline: the
// caller must Transmit them (on any socket of the UMEM) or Release them.
func (s *Socket) Receive(descs []Desc) int {
	if s.closed || len(descs) == 0 {
		return 0
	}
	n := s.rx.available(uint32(min(len(descs), int(s.rx.size))))
	if n == 0 {
		if s.u.busy && s.info.NeedWakeup && s.fill.needWakeup() {
			s.kickRx()
		}
		return 0
	}
	cons := s.rx.cachedCons
	for i := uint32(0); i < n; i++ {
		descs[i] = s.rxDescs[(cons+i)&s.rx.mask]
	}
	s.rx.release(n)
	if s.u.track != nil {
		from := stateFill | s.idx
		for i := uint32(0); i < n; i++ {
			s.u.transition(descs[i].Addr, from, statePipeline)
		}
	}
	add(&s.c.rx, uint64(n))
	return int(n)
}

// Transmit puts packets from the pipeline on the TX ring and returns how
// many descriptors of descs it consumed; descs[n:] stay the caller's
// (retry or Release them). It stops when the TX ring is full
// (TxRingFull) or when as many frames as the completion ring holds are
// in transmission (CompletionLag). A descriptor outside the UMEM, or
// with TrackOwnership one whose frame is not in the pipeline, is
// consumed, counted and dropped. The kernel is kicked if the ring asks
// for it (or always without need_wakeup).
func (s *Socket) Transmit(descs []Desc) int {
	if s.closed {
		return 0
	}
	want := uint32(min(len(descs), int(s.tx.size)))
	room := s.tx.free(want)
	compRoom := s.comp.size - s.outstanding
	n := min(room, compRoom)
	prod := s.tx.cachedProd
	var placed uint32
	consumed := 0
	for consumed < len(descs) && placed < n {
		d := descs[consumed]
		consumed++
		if !s.u.valid(d) {
			add(&s.c.badDescs, 1)
			continue
		}
		if s.u.track != nil && !s.u.transition(d.Addr, statePipeline, stateTx|s.idx) {
			continue
		}
		s.txDescs[(prod+placed)&s.tx.mask] = d
		placed++
	}
	if placed > 0 {
		s.tx.submit(placed)
		s.outstanding += placed
		add(&s.c.tx, uint64(placed))
		s.c.txOutstanding.Store(uint64(s.outstanding))
	}
	if refused := len(descs) - consumed; refused > 0 {
		if compRoom < room {
			add(&s.c.completionLag, uint64(refused))
		} else {
			add(&s.c.txRingFull, uint64(refused))
		}
	}
	if placed > 0 {
		s.kickTx()
	}
	return consumed
}

// maxKicks bounds the sendto calls of one kick: in copy mode the kernel
// sends at most a budget (32 by default) of frames per call.
const maxKicks = 64

// kickTx wakes the kernel to send what is on the TX ring, if the ring
// asks for it.
func (s *Socket) kickTx() {
	if s.info.NeedWakeup && !s.tx.needWakeup() {
		return
	}
	for range maxKicks {
		before := s.tx.cachedCons
		errno := kickTx(s.fd)
		add(&s.c.wakeups, 1)
		switch errno {
		case 0:
			return
		case unix.EINTR:
			continue
		case unix.EAGAIN, unix.EBUSY, unix.ENOBUFS:
			add(&s.c.kickRetries, 1)
			if s.tx.pending() == 0 || s.tx.cachedCons == before {
				return
			}
		default:
			add(&s.c.kickErrors, 1)
			s.c.lastKickErrno.Store(uint64(errno))
			return
		}
	}
}

func (s *Socket) kickRx() {
	errno := kickRx(s.fd)
	add(&s.c.wakeups, 1)
	switch errno {
	case 0, unix.EINTR, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS:
	default:
		add(&s.c.kickErrors, 1)
		s.c.lastKickErrno.Store(uint64(errno))
	}
}

// Complete takes every frame the kernel has finished transmitting from
// the completion ring back to the free stack and returns how many. If
// frames remain on the TX ring (the kernel sends a budget per kick in
// copy mode, or a kick failed), it kicks again.
func (s *Socket) Complete() int {
	if s.closed {
		return 0
	}
	n := s.comp.available(s.comp.size)
	if n > 0 {
		u := s.u
		cons := s.comp.cachedCons
		from := stateTx | s.idx
		for i := uint32(0); i < n; i++ {
			u.free(s.compAddrs[(cons+i)&s.comp.mask], from)
		}
		s.comp.release(n)
		s.outstanding -= n
		add(&s.c.completed, uint64(n))
		s.c.txOutstanding.Store(uint64(s.outstanding))
		u.freeGauge.Store(uint64(len(u.stack)))
	}
	if s.tx.cachedProd != s.tx.cachedCons && s.tx.pending() > 0 {
		s.kickTx()
	}
	return int(n)
}

// Fill moves frames from the free stack onto the fill ring, as many as
// it has room for, and returns how many.
func (s *Socket) Fill() int {
	if s.closed {
		return 0
	}
	u := s.u
	room := s.fill.free(s.fill.size)
	if room == s.fill.size && s.filledOnce {
		add(&s.c.fillRingEmpty, 1)
	}
	n := min(room, uint32(len(u.stack)))
	if n < room {
		add(&s.c.fillNoFrames, 1)
	}
	if n == 0 {
		return 0
	}
	top := uint32(len(u.stack))
	prod := s.fill.cachedProd
	for i := uint32(0); i < n; i++ {
		base := u.stack[top-1-i]
		if u.track != nil {
			u.transition(base, stateFree, stateFill|s.idx)
		}
		s.fillAddrs[(prod+i)&s.fill.mask] = base
	}
	u.stack = u.stack[:top-n]
	s.fill.submit(n)
	s.filledOnce = true
	add(&s.c.filled, uint64(n))
	u.freeGauge.Store(uint64(len(u.stack)))
	return int(n)
}

// Stats returns the socket's counters and the kernel's XDP_STATISTICS;
// any goroutine may call it while the socket is open.
func (s *Socket) Stats() (SocketStats, error) {
	c := s.c
	st := SocketStats{
		Info:          s.info,
		Rx:            c.rx.Load(),
		Tx:            c.tx.Load(),
		Completed:     c.completed.Load(),
		Filled:        c.filled.Load(),
		TxRingFull:    c.txRingFull.Load(),
		CompletionLag: c.completionLag.Load(),
		FillRingEmpty: c.fillRingEmpty.Load(),
		FillNoFrames:  c.fillNoFrames.Load(),
		Wakeups:       c.wakeups.Load(),
		KickRetries:   c.kickRetries.Load(),
		KickErrors:    c.kickErrors.Load(),
		LastKickErrno: c.lastKickErrno.Load(),
		BadDescs:      c.badDescs.Load(),
		TxOutstanding: c.txOutstanding.Load(),
	}
	ks, err := statistics(s.fd)
	if err != nil {
		return st, err
	}
	st.RxDropped = ks.Rx_dropped
	st.RxInvalidDescs = ks.Rx_invalid_descs
	st.TxInvalidDescs = ks.Tx_invalid_descs
	st.RxRingFull = ks.Rx_ring_full
	st.RxFillRingEmptyDescs = ks.Rx_fill_ring_empty_descs
	st.TxRingEmptyDescs = ks.Tx_ring_empty_descs
	return st, nil
}
