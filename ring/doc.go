// Package ring is xnat's AF_XDP layer: one UMEM per worker, shared by the
// worker's sockets on several interfaces (XDP_SHARED_UMEM), and per
// socket the four rings — fill, RX, TX, completion — with batch calls
// that allocate nothing, take no lock and make a system call only when
// the kernel asks for one.
//
// # Use
//
//	u, err := ring.Open(cfg, ring.Endpoint{Ifindex: inside, Queue: q}, ring.Endpoint{Ifindex: outside, Queue: q})
//	in, out := u.Socket(0), u.Socket(1)
//	// register in.FD() and out.FD() in the XSKMAPs of the XDP programs
//	for {
//		n := in.Receive(descs)           // frames now in the pipeline
//		... rewrite u.Frame(descs[i]) in place ...
//		k := out.Transmit(descs[:n])     // descs[k:] are still the caller's
//		u.Release(dropped)               // frames not forwarded
//		out.Complete(); in.Complete()    // transmitted frames back to the free stack
//		in.Fill(); out.Fill()            // free frames to the kernel for receiving
//		if idle { u.Wait() }             // poll(2) or busy, per Config.Poll
//	}
//
// A received frame is transmitted on another interface from where it
// lies: the sockets share the UMEM, so forwarding copies nothing in user
// space. (In copy mode the kernel copies into the UMEM on receive and
// out of it on transmit; in zero-copy mode the NIC DMAs directly.)
//
// # Frame ownership
//
// Every frame of a UMEM is in exactly one place, and only the party
// named moves it out:
//
//	free stack ──Fill──▶ fill ring of socket s ──(kernel)──▶ RX ring of s
//	    ▲                                                          │
//	    │                                                       Receive
//	 Release ◀──────────────── pipeline (the caller) ◀─────────────┘
//	    │                        │  ▲
//	    │                     Transmit on any socket t  Alloc (free → pipeline)
//	    │                        ▼
//	 Complete ◀── completion ring of t ◀──(kernel)── TX ring of t
//
// Fill moves frames from the free stack to a socket's fill ring; the
// kernel moves them to that socket's RX ring (or keeps them in its pool
// after a drop, to reuse them for the next packet); Receive hands them to
// the caller; Transmit puts them on a TX ring; the kernel puts them on
// the completion ring of the same socket once sent; Complete returns them
// to the free stack. Release returns frames the caller drops; Alloc gives
// the caller free frames for packets it builds. The descriptors that
// Transmit does not consume stay the caller's.
//
// Config.TrackOwnership records each frame's state (free, on socket s's
// fill side, in the pipeline, on socket s's TX side) and refuses — and
// counts in UMEMStats.OwnershipErrors — any transition from the wrong
// state: a frame released twice, transmitted while free, received on a
// socket whose fill ring it was never on. UMEM.Audit accounts for every
// frame by reading the free stack and the four rings of every socket, so
// a lost or duplicated frame is found even without tracking. The ring
// tests forward 200 000 frames and audit the UMEM at the end.
//
// # Memory ordering of the ring indices
//
// Each ring is a single-producer single-consumer queue shared with the
// kernel. A producer stores its index with an atomic store after writing
// the descriptors (a release); a consumer loads the producer index
// atomically (an acquire) before reading them, and stores its own index
// after. The need-wakeup flag is loaded after the producer index is
// stored; Go's sequentially consistent atomics are the full barrier the
// kernel requires there. Cached copies of both indices are reloaded only
// when a ring looks full or empty. All index arithmetic is in ring.go;
// all unsafe (mmap views, struct system calls) in sys.go.
//
// # Kicks, modes and counters
//
// With need_wakeup (the default), Transmit calls sendto only when the TX
// ring asks for it; the receive side polls only when the fill ring asks.
// A kick answered EAGAIN, EBUSY or ENOBUFS leaves the frames for the next
// kick; any other errno is counted (KickErrors, LastKickErrno), never a
// panic. Transmit never lets more frames be in flight than the completion
// ring holds; frames it refuses stay the caller's and are counted
// (CompletionLag, TxRingFull). Counters are per socket, on their own cache
// lines, readable from any goroutine.
//
// BindAuto binds every socket zero-copy and, if any device refuses,
// rebinds them all in copy mode (sockets of one UMEM share its mode).
// veth has no zero-copy AF_XDP: there an explicit BindZeroCopy fails with
// ErrZeroCopy. Open retries EBUSY for up to two seconds, while the kernel
// frees a previous socket's buffer pool.
//
// docs/design.md explains the design: why the socket code is this
// package's own rather than github.com/asavie/xdp's, and what was found
// about AF_XDP on veth.
package ring
