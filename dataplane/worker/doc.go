// Package worker is xnat's per-queue packet loop: one Worker per queue
// index, one goroutine per Worker, locked to its OS thread and pinned to a
// CPU, moving frames between the AF_XDP sockets of one UMEM (package ring)
// and one core's Pipeline (package dataplane).
//
// # What a worker owns
//
// Worker q owns the UMEM opened on queue q of every interface xnat forwards
// between (one socket per interface, all sharing the UMEM, so a frame
// received on one interface is transmitted on another from where it lies),
// core q's Pipeline — and with it core q's share of the flow table, its
// port allocator slices and the expiry of the connections it created. Nothing
// of that is touched by another goroutine, except the counters, which are
// published atomically.
//
// # One iteration of the loop
//
//  1. Receive up to Config.Batch descriptors from every socket; each frame
//     is viewed in place (ring.UMEM.Frame: length the packet, capacity the
//     rest of its UMEM frame, so an ICMP error or TCP reset xnat writes over
//     a short packet fits) and tagged with the dataplane port ID of the
//     socket's interface.
//  2. Pipeline.Process decides every frame of the batch.
//  3. ActForward and ActReply: the descriptor, with the length the pipeline
//     gave, goes on the TX ring of the socket of Result.Port; what a full TX
//     ring refuses is released and counted (TxRefused). ActDrop: released
//     (the pipeline counts the reason). ActKernel: released and counted
//     (Kernel) — xnat does not reinject frames into the kernel; the XDP program
//     (dataplane/xdpprog) redirects only IPv4 that xnat handles, so this
//     happens only for frames the pipeline finds are not IPv4, or are
//     broadcast or multicast (which the XDP program should pass). ActHold:
//     the descriptor is kept by Result.Hold (the frame stays in the
//     pipeline, as an audit counts it: Held) until the pipeline releases it
//     (Pipeline.Released, after Process and after Idle) to be transmitted
//     or released like any decided frame; when Run ends, the frames still
//     held are released (Pipeline.DropHeld) before it returns.
//  4. Complete and Fill on every socket: transmitted frames back to the free
//     stack, free frames to the fill rings.
//  5. When nothing was received: Pipeline.Idle (the expiry sweep and port
//     release still run without traffic; a busy-polling worker does it on
//     every 256th idle iteration only), then UMEM.Wait — poll(2) with a
//     timeout, or busy, per the ring configuration (ring.Config.Poll) —
//     unless an HA commit still has connections for this core
//     (Pipeline.CommitPending): the loop then goes round without waiting.
//     Work that arrives on no socket (a commit, a neighbour resolved)
//     wakes a sleeping Wait at once (Pipeline.SetWaker, UMEM.Wake).
//
// An iteration allocates nothing, takes no lock and makes no interface call;
// the tests assert zero allocations per iteration with frames flowing.
//
// # Threads, CPUs and stopping
//
// Run locks its goroutine to its OS thread and, when Config.CPU is set,
// pins the thread to that CPU with sched_setaffinity. A pinned thread is
// never handed back to the Go scheduler: it exits with Run's goroutine.
// Stop sets a flag that the loop reads every iteration; a sleeping worker
// sees it within the poll timeout. Run returns after its last iteration;
// the caller closes the UMEM afterwards.
//
// # Counters
//
// Each worker counts in plain memory (iterations, idle waits, frames
// received, transmitted, refused by a full TX ring, dropped, handed to the
// kernel) and publishes atomic copies at the end of every iteration on
// its own cache lines; Stats reads them from any goroutine.
//
// # Next hops without a neighbour
//
// The pipeline records next hops it lacked a link-layer address for in a
// lock-free single-reader ring per core; the daemon's control goroutine
// drains it (dataplane.Pipeline.DrainNeighMisses) and asks the kernel to
// resolve them, while the pipeline holds their frames. The worker does no
// netlink I/O. When a neighbour resolves or fails, the neighbour table
// wakes the sleeping workers (Pipeline.SetWaker, ring.UMEM.Wake), which
// send or answer the frames they hold at once.
package worker
