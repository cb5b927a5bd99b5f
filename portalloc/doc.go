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
// # Giving ports back
//
// A connection's port goes back when its owner core's flow-table sweep
// reports it gone: the dataplane hands the report to Release on the same
// core's allocator (the core that allocated a port is always the owner of
// its connection, because it inserted it).
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
//     find the port marked in the allocator's own bitmap. A port used by
//     several pools (a SNAT and a MASQUERADE on one address, or a pool
//     replaced by a rule change while its connections live on) counts
//     each. So a pool removed from the rules keeps its ports steered
//     until its last connection ends, and a port no connection uses is
//     the kernel's again at once.
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
// # Per-source limit
//
// A SourceLimiter, shared by all cores, counts connections per inside
// source address and, when a limit is set, refuses a new one beyond it
// (RFC 6888 REQ-4: no single subscriber may exhaust the pool). It is off
// (limit 0) by default but always counts, so a limit set at run time
// applies to connections already open. It is a fixed open-addressing table
// of 64-bit words (address, count), updated by CAS; an address, once
// bound to a slot, keeps it. When no slot is left for a new address the
// connection is allowed and counted as untracked.
//
// # Concurrency
//
// An Allocator belongs to one core: Allocate and Release are called only
// by that core's goroutine, and its counts are plain memory: a 16-bit
// count a port, per protocol class and external address, committed at
// New (every page written, up to 128 MiB a core, so that no packet waits
// on a page fault). Its statistics are atomics on its own cache lines, read by anyone. The
// SourceLimiter is safe for concurrent use.
package portalloc
