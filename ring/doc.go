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
// kernel: a producer index written only by the producer, a consumer index
// written only by the consumer, both free-running uint32 (the slot is
// index & (size-1); differences are taken modulo 2^32), and a flags word
// the kernel writes (XDP_RING_NEED_WAKEUP).
//
//   - Producing (fill, TX): write the descriptors, then store the producer
//     index with atomic.StoreUint32. The store is a release: the kernel's
//     smp_load_acquire of the producer index sees the descriptors.
//   - Consuming (RX, completion): load the producer index with
//     atomic.LoadUint32 (an acquire, pairing with the kernel's
//     smp_store_release), read the descriptors, then store the consumer
//     index with atomic.StoreUint32 (a release: the kernel may overwrite
//     the slots only after we have read them).
//   - Free space on a producer ring is checked against the kernel's
//     consumer index loaded with atomic.LoadUint32 (an acquire: the
//     kernel has finished with the slots it released).
//   - need_wakeup: the flags word is loaded atomically after the producer
//     index is stored. Go's atomic operations are sequentially consistent
//     (a full fence on amd64 and arm64), which is the smp_mb the kernel
//     documents between publishing entries and testing the flag, so a
//     wakeup is never missed.
//
// The side owned by this process keeps cached copies of both indices
// and reloads the kernel's only when the cache shows the ring full (for
// producing) or empty (for consuming), so a batch touches the shared
// cache line of the kernel's index at most once. All index arithmetic is
// in ring.go; all unsafe (mmap views, struct system calls) in sys.go.
//
// # Kicks, modes and counters
//
// With need_wakeup (the default; Config.NoNeedWakeup turns it off),
// Transmit calls sendto only when the TX ring's flag asks for it, and the
// receive side calls recvfrom (busy mode) or poll (sleep mode) only when
// the fill ring's flag asks for it. In copy mode the kernel sends at most
// a budget of frames per sendto (32 by default): Transmit kicks again
// while the kernel makes progress, and Complete re-kicks while frames
// remain on the TX ring. A kick answered EAGAIN, EBUSY or ENOBUFS leaves
// the frames on the TX ring for the next kick (KickRetries); any other
// errno is counted (KickErrors, LastKickErrno), never a panic.
//
// Transmit never lets more frames be in transmission than the completion
// ring holds (the kernel would stall on a full completion ring): frames
// refused for that are counted in CompletionLag, frames refused for a
// full TX ring in TxRingFull, and both stay the caller's. Counters are
// per socket, on their own cache lines, written by the owning goroutine
// with plain atomic stores and readable from any goroutine; Stats adds
// the kernel's XDP_STATISTICS (RX dropped, invalid descriptors, RX ring
// full, fill ring empty, TX ring empty).
//
// Config.Poll chooses the wait: PollSleep sleeps in ppoll(2) until a
// socket has received frames or PollTimeout passes (1 ms while frames
// are in transmission, since completions do not wake poll); PollBusy
// never sleeps.
//
// # Bind modes
//
// BindAuto binds every socket zero-copy and, if any device refuses,
// rebinds them all in copy mode: the sockets of one UMEM share its mode
// (the kernel makes a socket bound with XDP_SHARED_UMEM inherit the
// owner's zero-copy and need_wakeup settings and refuses those flags on
// it). Socket.Info reports the mode obtained. veth has no zero-copy
// AF_XDP: there every socket is in copy mode, and an explicit
// BindZeroCopy fails with ErrZeroCopy. A queue stays busy for a moment
// after its previous socket is closed (the kernel frees the buffer pool
// from a work queue), so Open retries EBUSY for up to two seconds.
//
// # What comes from github.com/asavie/xdp
//
// Nothing in this package's non-test code. asavie/xdp v0.3.3 was read and
// measured against what xnat needs: its Socket cannot share a UMEM
// (NewSocket registers a fresh UMEM on every socket and has no
// XDP_SHARED_UMEM path), has no configurable headroom (it registers
// headroom 0), reads and writes ring indices with plain loads and stores
// with the fences commented out, panics in Transmit on an unexpected
// errno, returns from Poll at once when nothing is filled, marks frames
// still on the TX ring free when they are put on the fill ring again, and
// its Detach loops until the program is gone. Those are the parts a
// socket is made of, so the socket, its rings and its system calls are
// this package's own code on golang.org/x/sys/unix.
//
// What is sound in asavie/xdp — its redirect-by-queue XDP program (a
// translation of libbpf's default AF_XDP program: look up
// ctx->rx_queue_index in an XSKMAP and redirect) with its map
// registration (Program.Register) — is what the package's tests use to
// steer every packet of a veth into a socket, attached with cilium/ebpf's
// link.AttachXDP rather than asavie's netlink Attach/Detach. xnat's own
// program, which chooses what to redirect, is in dataplane/xdpprog.
//
// # veth findings (Linux 6.18)
//
// AF_XDP on veth works in copy mode only. Native (driver-mode) XDP
// attaches to a veth, and XDP_REDIRECT into an XSKMAP from it works with
// no program on the peer: the receiving veth's own NAPI runs the program.
// (A program or GRO on the peer is needed only when frames are redirected
// to a veth with ndo_xdp_xmit, i.e. XDP_TX or a devmap redirect, which xnat
// does not use: it transmits through its AF_XDP TX ring, which veth takes
// as an ordinary skb transmit.) Frames that a kernel socket sends through
// a veth with TX checksum offload on carry a partial L4 checksum: the ends
// sending into xnat must have it off.
package ring
