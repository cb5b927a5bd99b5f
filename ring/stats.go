package ring

import "sync/atomic"

// counters of one socket. Each socket's counters are written by the
// goroutine that owns the UMEM only (a load and a store, no locked
// instruction) and read by anyone with atomic loads. Padding keeps them
// off the cache lines of other sockets' counters and of ring state.
type counters struct {
	_             [64]byte
	rx            atomic.Uint64
	tx            atomic.Uint64
	completed     atomic.Uint64
	filled        atomic.Uint64
	txRingFull    atomic.Uint64
	completionLag atomic.Uint64
	fillRingEmpty atomic.Uint64
	fillNoFrames  atomic.Uint64
	wakeups       atomic.Uint64
	kickRetries   atomic.Uint64
	kickErrors    atomic.Uint64
	lastKickErrno atomic.Uint64
	badDescs      atomic.Uint64
	txOutstanding atomic.Uint64
	_             [64]byte
}

// add is a single-writer increment: no read-modify-write instruction.
func add(c *atomic.Uint64, n uint64) { c.Store(c.Load() + n) }

// SocketStats are the counters of one socket.
type SocketStats struct {
	Info Info

	// Rx counts descriptors taken from the RX ring; Tx descriptors put
	// on the TX ring; Completed frames taken back from the completion
	// ring; Filled frames put on the fill ring.
	Rx, Tx, Completed, Filled uint64
	// TxRingFull counts descriptors Transmit refused because the TX
	// ring had no room; CompletionLag those refused because as many
	// frames as the completion ring holds were already in transmission
	// (the kernel would stall on a full completion ring).
	TxRingFull, CompletionLag uint64
	// FillRingEmpty counts refills that found the kernel had taken every
	// frame from the fill ring (it may have dropped packets meanwhile);
	// FillNoFrames counts refills that wanted frames when the UMEM had
	// none free.
	FillRingEmpty, FillNoFrames uint64
	// Wakeups counts sendto/recvfrom kicks; KickRetries kicks answered
	// EAGAIN, EBUSY or ENOBUFS (the kernel will take the frames on a later
	// kick); KickErrors kicks that failed otherwise, LastKickErrno the
	// last such errno. Frames stay on the TX ring in both cases.
	Wakeups, KickRetries, KickErrors, LastKickErrno uint64
	// BadDescs counts descriptors refused because their address lies
	// outside the UMEM.
	BadDescs uint64
	// TxOutstanding is the number of frames transmitted and not yet
	// completed.
	TxOutstanding uint64

	// Kernel counters (XDP_STATISTICS).
	RxDropped, RxInvalidDescs, TxInvalidDescs, RxRingFull, RxFillRingEmptyDescs, TxRingEmptyDescs uint64
}

// Info describes how a socket is bound.
type Info struct {
	Ifindex    int
	Queue      uint32
	ZeroCopy   bool // false: copy mode
	NeedWakeup bool // XDP_USE_NEED_WAKEUP in force
	SharedUMEM bool // bound with XDP_SHARED_UMEM to another socket's UMEM
}

// UMEMStats are the counters of a UMEM.
type UMEMStats struct {
	Frames          uint32
	FreeFrames      uint64 // on the free stack, as of the last batch
	OwnershipErrors uint64 // transitions refused by TrackOwnership
	BadDescs        uint64 // descriptors outside the UMEM given to Release
}
