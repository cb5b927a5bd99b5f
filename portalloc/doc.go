// Package portalloc gives out external addresses and ports for source NAT:
// one Allocator per worker core over its own disjoint slice of a pool, so
// that allocating takes no lock and shares no atomic with another core.
//
// # Pools and slices
//
// A Pool is a range of IPv4 addresses times a range of ports (1024–65535
// unless set, like iptables' --to-ports). The port range is cut into one
// contiguous slice per core; every core may use every address of the
// pool with the ports of its slice. TCP ports, UDP ports and ICMP query
// identifiers are allocated alike, each protocol from its own counts.
// Other protocols are translated in address only, as Linux does.
//
// # Choosing the address
//
// The address comes from a keyed hash of the inside source address and,
// unless the rule says --persistent, of the destination address (Linux's
// find_best_ips_proto): one inside host talking to one server always
// appears from the same external address ("paired" pooling, RFC 4787
// REQ-2).
//
// # Choosing the port
//
// Without --random or --random-fully the original source port is kept
// when it lies in this core's slice and the connection's reply tuple is
// free (Linux and VPP do the same). Otherwise the search probes
// consecutive ports, in rounds of 128, 64, 32 … candidates, like Linux's
// nf_nat_l4proto_unique_tuple; when all rounds fail it counts
// out_of_ports. Each round starts at a point of the slice an outsider
// cannot predict (RFC 6056). The first round's start is a hash of the
// original tuple keyed with a secret from crypto/rand (RFC 6056's
// algorithm 3, the source port among the inputs): the pipeline computes
// it too (SearchPort) and prefetches that reply tuple's index lines along
// with the kept port's before the insert. Later rounds, and every round
// with --random or --random-fully, start at a random point (a per-core
// generator seeded from crypto/rand).
//
// A port in use may serve another connection to a different remote
// endpoint: whether a candidate is free is decided by inserting the
// connection, reply tuple and all, into the flow table, which refuses a
// reply tuple that is taken (as Linux's nf_nat_used_tuple does). So the
// allocator never needs to know the remote endpoints; it keeps only a
// count of connections per port, for the statistics and to stop one port
// carrying more than 65535 connections.
//
// # Memory of the pools
//
// Those counts take 16 bits a port, per protocol class and external
// address: 378 KiB an address over the default port range, split between
// the cores. The pools of one dataplane share a budget of DenseMax (128
// MiB) for them (Shared); a pool that would not fit in what is left keeps
// no counts (a sparse pool: the flow table alone tells a free port from a
// taken one, and its ports in use are not in the statistics). So an SNAT
// range of 65,536 addresses, whose counts would take 23.6 GiB, costs a few
// hundred bytes, and no rule set takes more than DenseMax of port state
// beyond the limiter's tables, which are sized once, at start, from the
// flow table. A dense pool given a Steering also keeps a bit a port (per
// class and address) marking the ports it holds there, within the same
// budget. Dense counts are committed when their pool is made
// (prefault), so that no packet waits on a page fault for them.
//
// # Giving ports back
//
// A connection's port goes back when its owner core's flow-table sweep
// reports it gone: the dataplane hands the report to Release on the same
// core's allocator (the core that allocated a port is always the owner of
// its connection, because it inserted it). The table reports every
// connection it confirmed exactly once, however it ended (expired,
// deleted through the API or by a flush, evicted by early drop), so
// every Allocate that inserted one has exactly one Release: the flow
// record needs no mark of having been counted.
//
// # Ports on the box's own addresses
//
// A pool whose addresses include one of the box's own (MASQUERADE always)
// shares those addresses with the box's own sockets. Two things keep them
// apart, both through a Steering (Pool.Steering) the daemon gives every
// pool:
//
//   - The XDP program gives xnat a packet for one of the box's addresses
//     only when xnat holds its port (dataplane/xdpprog): every allocator
//     adds a holder to a port's use count, in memory the program reads,
//     when its first connection on the port is inserted, and takes it
//     away when its last one is released. The count is per address, per
//     protocol and per port, changed with one atomic add — no system call
//     — and only on those two transitions; connections after the first
//     find the port marked in the allocator's own bitmap (while the
//     address has no slot, each new connection on the port looks again).
//     A port used by several pools (a SNAT and a MASQUERADE on one
//     address, or a pool replaced by a rule change while its connections
//     live on) counts each. So a pool removed from the rules keeps its
//     ports steered until its last connection ends, and a port no
//     connection uses is the kernel's again at once.
//   - The kernel never picks for its own sockets a port xnat may give
//     out: such a pool is created without the kernel's ephemeral ports
//     (net.ipv4.ip_local_port_range less ip_local_reserved_ports, as
//     SetKernelPorts gives them), and its remaining ports are split evenly
//     between the cores. With the defaults (pool 1024–65535, kernel
//     32768–60999) xnat uses 1024–32767 and 61000–65535 on the box's
//     addresses; a port in ip_local_reserved_ports is xnat's to use. The
//     kernel's range is read when the pool is created: a pool keeps its
//     ports when the sysctl changes later (the daemon warns). A socket
//     the box binds explicitly to a port in the pool is the
//     administrator's choice and is not checked: while an xnat connection
//     holds that port on that address, its packets go to xnat. ICMP echo
//     identifiers have no such split: the kernel's ping sockets and raw
//     pings pick theirs from the whole space, so a ping from the box that
//     happens to use an identifier an xnat connection holds on the same
//     address loses its replies while that connection lives.
//
// Only a dense pool knows when a port's first connection starts and its
// last one ends, so only a dense pool steers. A pool on the box's own
// addresses (one of its addresses has a slot when it is made) must
// therefore fit in what is left of DenseMax, or New refuses it with an
// error saying so. Such pools are few and small (a MASQUERADE pool is one
// address: at most 378 KiB of counts and 24 KiB of bitmaps), so in
// practice only a rule set that has taken nearly all of DenseMax with
// large SNAT ranges meets that refusal. A pool too large for the budget,
// made while none of its addresses was the box's, stays sparse and never
// holds a port: should one of its addresses become the box's later (and
// get a slot), the replies to that pool's connections on it go to the
// kernel, as they do for any port the Steering does not count. The daemon
// gives addresses their slots before it makes the pools of a rule set.
//
// # Per-source limits
//
// A SourceLimiter, shared by all cores, counts per inside source address
// the connections it has through NAT and the external ports those hold
// (RFC 6888 REQ-4: no single subscriber may exhaust the pool), and
// refuses a new connection beyond xnat.per_source_max connections or
// xnat.per_source_ports ports (0: no limit). It always counts, so a limit
// set at run time applies to connections already open.
//
// A source's ports are the distinct external endpoints (address, port,
// protocol class: TCP and UDP ports and ICMP identifiers) its
// connections hold. Ports are shared: one may carry many connections of
// one source, and connections of several sources to different remote
// endpoints. Each core therefore keeps a table of (source, endpoint)
// pairs with a connection count (its core alone touches it: the
// endpoints of its slices are its own): a source's port count goes up
// when a connection lands on an endpoint the source had no connection on,
// and down when its last one there goes. (An endpoint reachable through
// two overlapping pools whose port ranges split differently between the
// cores may count twice.) Allocate reserves one port for the source
// before its search, and gives it back if the connection landed on a
// port the source held; at the port limit only the connection's own
// port, when the source holds it, may serve, so a source at its limit is
// refused after one lookup, not a search. Connections of protocols
// without ports count as connections only.
//
// The limiter's table has 16-byte slots (a key word and a port count) in
// buckets of eight; a source's slot is in one of its two buckets (a keyed
// hash of its address). Every operation reads those 16 slots at most: a
// source whose buckets are taken by others is refused at once and counted
// (per_source_full), never let through uncounted. The key word holds the
// address, a bound bit, a pending bit and the connection count (30 bits):
// 0 is a free slot; bound with count 0 a dead one, still its address's
// but free for any.
//
// Who writes what, all by atomic operations (sequentially consistent):
//
//   - A slot's count: any core, by CAS from (address, n) to (address,
//     n+1), refusing at the limit, and by atomic decrement for a
//     connection it holds. A slot whose count reaches 0 is dead; its
//     address may revive it by the same CAS from 0 to 1.
//   - Taking a slot for a source that has none: CAS of a free or dead slot
//     (in the emptier bucket) to (address, pending, 1), then a look over
//     both buckets for another slot bound to the address; if there is one
//     the claim is withdrawn (the slot set free) and the acquire starts
//     over, else the pending bit is cleared. Of two cores claiming for one
//     address at once, each stores its claim before it looks, so at least
//     one sees the other and withdraws: an address is never counted in two
//     slots. No one else writes a pending slot, and an acquire that meets
//     its address pending starts over (eight times at most, then refuses:
//     a claim lasts a few instructions).
//   - Reusing a dead slot: the claim's CAS expects the dead word, so it
//     fails if the address revived it meanwhile, and a revival fails if
//     the slot was taken. There is nothing to free but the word: a dead
//     slot's port count is already 0.
//   - A slot's port count: only by a core holding one of its source's
//     connections (so the slot stays that source's): a CAS up to the limit
//     (Allocate's reservation) and an atomic decrement (a release). A
//     release decrements the port count before the connection count, so a
//     slot is never dead with ports left.
//
// Refusals are counted in total by reason and per source, in a table of
// 4096 (address, count) words whose least-refused entries give way to new
// refusers (Space-Saving), for SourceLimiter.Top, which also returns the
// sources with the most connections and the most ports.
//
// # Concurrency
//
// An Allocator belongs to one core: Allocate and Release are called only
// by that core's goroutine, and its counts are plain memory, as is its
// core's table of source and port pairs. Its statistics are atomics on
// its own cache lines, read by anyone. The SourceLimiter is safe for
// concurrent use.
//
// # Reserving a given endpoint
//
// Reserve inserts a connection whose external endpoint was decided
// elsewhere (an HA peer's connection, committed with the port it has
// there) and counts the port as Allocate would: the per-port count, the
// steering hold on the box's own addresses, the limiter. Owns tells which
// core's allocator holds a (pool, address, port); only that core's
// goroutine may call its Reserve, like Allocate. The dataplane does it
// from the core's batch (dataplane.Dataplane.Commit hands each core its
// share on a one-slot queue that the core takes between packets), so no
// allocator is ever touched by two goroutines. Rehold holds, on the
// owning core, a port in use that was given out while its address had no
// steering slot.
package portalloc
