package ring

import (
	"fmt"
	"sync/atomic"
)

// Accounting says where the frames of a UMEM were at an audit.
type Accounting struct {
	Free       int // on the free stack
	Fill       int // on fill rings, not yet taken by the kernel
	Rx         int // on RX rings, not yet received
	Pipeline   int // held by the caller (the descs given to Audit)
	Tx         int // on TX rings, not yet taken by the kernel
	Completion int // on completion rings, not yet completed
	// Frames inside the kernel, known by count only: taken from a fill
	// ring and not yet put on the RX ring (in a driver's RX queue, or in
	// the pool's free list after a drop), and taken from a TX ring and
	// not yet put on the completion ring (in transmission).
	KernelRx, KernelTx int
}

// Total is the number of frames accounted for.
func (a Accounting) Total() int {
	return a.Free + a.Fill + a.Rx + a.Pipeline + a.Tx + a.Completion + a.KernelRx + a.KernelTx
}

// Audit accounts for every frame of the UMEM: each must be in exactly
// one place — the free stack, a fill ring, an RX ring, the pipeline
// (held: the descriptors the caller holds), a TX ring, a completion
// ring, or inside the kernel. Frames inside the kernel are known by
// count only (fill consumer minus RX producer per socket; frames
// transmitted minus those on the TX and completion rings): the frames
// found nowhere must be exactly that many, and with TrackOwnership each
// of them must be recorded on a fill or TX ring of a socket whose count
// they match. Audit returns an error wrapping ErrFrameDuplicated or
// ErrFrameLost naming the first offending frame, or ErrNotQuiescent if
// a ring index moved during the audit (the kernel must be idle: no
// packet arriving, no transmission under way). Audit allocates; it is a
// diagnostic, not for the packet path.
func (u *UMEM) Audit(held []Desc) (Accounting, error) {
	var acc Accounting
	if u.closed {
		return acc, ErrClosed
	}
	where := make([]string, u.cfg.NumFrames)
	var dupErr error
	mark := func(addr uint64, place string, count *int) {
		i := addr >> u.frameShift
		if i >= uint64(len(where)) {
			if dupErr == nil {
				dupErr = fmt.Errorf("%w: address %#x (%s) outside the UMEM", ErrFrameDuplicated, addr, place)
			}
			return
		}
		if where[i] != "" && dupErr == nil {
			dupErr = fmt.Errorf("%w: frame %d (%#x) is %s and %s", ErrFrameDuplicated, i, i<<u.frameShift, where[i], place)
		}
		where[i] = place
		*count++
	}
	type snap struct{ fillCons, rxProd, txCons, compProd uint32 }
	snapshot := func() []snap {
		ss := make([]snap, len(u.socks))
		for i, s := range u.socks {
			ss[i] = snap{
				atomic.LoadUint32(s.fill.consumer), atomic.LoadUint32(s.rx.producer),
				atomic.LoadUint32(s.tx.consumer), atomic.LoadUint32(s.comp.producer),
			}
		}
		return ss
	}
	before := snapshot()
	for _, a := range u.stack {
		mark(a, "free", &acc.Free)
	}
	for _, d := range held {
		mark(d.Addr, "in the pipeline", &acc.Pipeline)
	}
	kernRx := make([]int, len(u.socks))
	kernTx := make([]int, len(u.socks))
	for i, s := range u.socks {
		b := before[i]
		for j := b.fillCons; j != s.fill.cachedProd; j++ {
			mark(s.fillAddrs[j&s.fill.mask], fmt.Sprintf("on fill ring %d", i), &acc.Fill)
		}
		for j := s.rx.cachedCons; j != b.rxProd; j++ {
			mark(s.rxDescs[j&s.rx.mask].Addr, fmt.Sprintf("on RX ring %d", i), &acc.Rx)
		}
		for j := b.txCons; j != s.tx.cachedProd; j++ {
			mark(s.txDescs[j&s.tx.mask].Addr, fmt.Sprintf("on TX ring %d", i), &acc.Tx)
		}
		comp := 0
		for j := s.comp.cachedCons; j != b.compProd; j++ {
			mark(s.compAddrs[j&s.comp.mask], fmt.Sprintf("on completion ring %d", i), &comp)
		}
		acc.Completion += comp
		// Frames the kernel took from the TX ring and has not yet put
		// on the completion ring are in transmission.
		kernTx[i] = int(s.outstanding) - int(s.tx.cachedProd-b.txCons) - comp
		kernRx[i] = int(int32(b.fillCons - b.rxProd))
		acc.KernelTx += kernTx[i]
		acc.KernelRx += kernRx[i]
	}
	after := snapshot()
	for i := range before {
		if before[i] != after[i] {
			return acc, fmt.Errorf("%w: ring indices of socket %d moved", ErrNotQuiescent, i)
		}
	}
	if dupErr != nil {
		return acc, dupErr
	}
	if acc.Total() != len(where) {
		for i, w := range where {
			if w == "" {
				return acc, fmt.Errorf("%w: frame %d (%#x) is nowhere (%d frames accounted for, %d in the kernel, of %d)",
					ErrFrameLost, i, uint64(i)<<u.frameShift, acc.Total()-acc.KernelRx-acc.KernelTx, acc.KernelRx+acc.KernelTx, len(where))
			}
		}
		return acc, fmt.Errorf("%w: %d frames accounted for, %d in the UMEM", ErrFrameDuplicated, acc.Total(), len(where))
	}
	if u.track != nil {
		// Each frame found nowhere must be recorded where the kernel has it.
		seenRx := make([]int, len(u.socks))
		seenTx := make([]int, len(u.socks))
		for i, w := range where {
			if w != "" {
				continue
			}
			st := u.track[i]
			sock := int(st & 0x0f)
			switch {
			case st&0xf0 == stateFill && sock < len(u.socks):
				seenRx[sock]++
			case st&0xf0 == stateTx && sock < len(u.socks):
				seenTx[sock]++
			default:
				return acc, fmt.Errorf("%w: frame %d is nowhere but recorded in state %#x", ErrFrameLost, i, st)
			}
		}
		for i := range u.socks {
			if seenRx[i] != kernRx[i] || seenTx[i] != kernTx[i] {
				return acc, fmt.Errorf("%w: socket %d: kernel holds %d RX and %d TX frames by its rings, %d and %d by the record",
					ErrFrameLost, i, kernRx[i], kernTx[i], seenRx[i], seenTx[i])
			}
		}
	}
	return acc, nil
}
