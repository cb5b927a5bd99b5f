// Package dataplane is xnat's packet path: a pure function over batches of
// frames in memory that parses, tracks, filters, translates and routes
// them. It has no sockets; the AF_XDP workers feed it frames from UMEM and
// the benchmark harness feeds it synthetic ones.
//
// # The batch contract
//
// Each worker core has one Pipeline. Pipeline.Process takes a batch the way
// wireguard-go's tun.Device takes one: frames [][]byte with sizes []int,
// plus the port (interface ID) each arrived on, and fills one Result per
// frame: ActForward (the frame was rewritten in place: addresses, ports,
// checksums, TTL, source and destination MAC; transmit Result.Len bytes on
// Result.Port), ActReply (xnat wrote an ICMP error or a TCP reset over the
// frame, in the same buffer, up to its capacity; transmit it on
// Result.Port), ActDrop with a Reason, ActKernel (not IPv4, or broadcast
// or multicast: the slow path's), or ActHold (hold.go: the frame is
// decided and translated, and its next hop is being resolved; the caller
// keeps its buffer, named by Result.Hold, until Pipeline.Released gives
// the frame's final decision after a later Process or Idle, or DropHeld). Process allocates nothing, takes no lock, makes no interface
// call and formats nothing; testing.AllocsPerRun asserts it for the
// established and the new-connection paths.
//
// # A batch, step by step
//
// The files follow a frame through the pipeline, in the order it meets
// them: pipeline.go (the types, New), process.go (Process and the batch
// driver), parse.go, established.go, forward.go, newconn.go and
// nexthop.go, and hold.go for frames whose next hop is being resolved;
// beside them neigh.go (the neighbour table), conntrack.go (connection
// tracking), tcpwin.go (TCP window tracking), icmp.go (ICMP errors, TCP
// resets), env.go (the environment), counters.go and unsafe.go (the
// package's uses of unsafe).
//
//  1. Parse every frame (parse.go): untagged Ethernet (xnat's ports
//     carry no VLAN: a tagged frame, which the XDP program leaves to the
//     kernel's VLAN sub-interfaces, is dropped and counted, vlan); IPv4
//     with options, checked (version, IHL, total length against the
//     frame, header checksum); TCP, UDP, ICMP. The common frames —
//     untagged, IPv4 without options, TCP or UDP — take parseFast, which
//     reads fixed offsets of arrays whose length it checks once; the rest
//     take parse, which fills the same meta and key. A malformed frame is
//     dropped with its own reason; nothing can read out of bounds
//     (FuzzPipeline, FuzzParseFast). What a router never forwards is
//     decided here for the frames the full parser takes, and for the rest
//     before a connection is created (Env.martian): broadcast and
//     multicast go to the kernel, martian addresses are dropped; the
//     reverse-path filter (rpfilter.go, Linux's rp_filter) checks the
//     source of a packet that would create a connection. A packet
//     whose TTL would reach zero
//     is answered with ICMP time exceeded here, before it can create a
//     connection. A first fragment is taken like a whole datagram (its
//     transport header, all that is rewritten, is in it whole; a UDP
//     length beyond it is the whole datagram's, and the checksum over the
//     whole datagram is updated incrementally); later fragments are
//     counted and dropped (fragment).
//  2. Look every frame's tuple up in the flow table in one batch
//     (process.go), so their cache misses overlap. An ICMP error is looked
//     up by the datagram it quotes.
//  3. The established path (established.go) takes the batch in order as
//     far as it can: a quiet TCP or UDP packet of a known connection, IPv4
//     without options, while filter FORWARD has no rules and accepts. It
//     forwards each in one loop, the connection touched, the checksums
//     computed from what the parser read (the key, the TTL, both
//     checksums), so that it writes the headers without reading them
//     again, and the MAC addresses taken from the per-core next-hop cache
//     (nexthop.go: destinations mapped in 8 bytes each to the few next
//     hops they share, emptied when the Env changes; an entry whose
//     neighbour changes is updated or retired alone). Its one call is a
//     TCP segment's window step (fastInWindow, tcpwin.go), which checks
//     the segment against its connection's window and updates it. At a
//     packet it cannot take (a segment not plainly in window among them),
//     handle (forward.go) takes that one and the path goes on after it,
//     so every connection's packets are tracked in the order they came.
//     The connections' counters (nf_conntrack_acct) of the packets it took
//     are added after it, in a pass of their own.
//  4. handle (forward.go): a hit updates the connection (conntrack.go:
//     Linux's TCP transition table and its window tracking, tcpwin.go:
//     tcp_in_window's sequence and acknowledgement checks with window
//     scaling and SACK, and the reset checks, so that a segment out of
//     window is INVALID and changes nothing; UDP streams, SEEN_REPLY and
//     ASSURED, the last-seen time and the timeout), runs filter FORWARD
//     with the conntrack state (skipped, its policy still counted, when
//     the chain has no rules), translates the packet to the reverse of the
//     other direction's tuple with incremental checksums (header.Delta),
//     decrements the TTL and sets the MAC addresses. An ICMP error about a
//     connection is translated with the datagram it quotes (icmp.go), and
//     forwarded only to the endpoint the quoted datagram came from, its
//     outer addresses rewritten as Linux's NAT rewrites them. A packet
//     that matches no connection and cannot start one is INVALID: the
//     filter decides, and it never leaves an outside port untranslated.
//  5. A miss is a new connection (newconn.go). When a batch has misses,
//     the reply tuples their inserts will most likely check are
//     prefetched first, together: behind the external address last given
//     out, the source port kept, and the port the allocator's search
//     starts at where the kept one may be taken (portalloc's Likely).
//     Then, connection by connection: nat PREROUTING (DNAT; a backend
//     range is chosen per connection), the route, filter FORWARD, nat
//     POSTROUTING (SNAT or MASQUERADE), then the port from this core's
//     allocator and the insert into the flow table, whose answer settles
//     port clashes and the table limit. A next hop being resolved does not
//     stop any of it: the packet is held after its connection is created
//     (hold.go). Packets from an outside port need
//     a DNAT rule or a connection (else `unsolicited`). Hairpinned
//     connections are source-translated to the outside address the inside
//     host aimed at. FULLCONENAT (fullcone.go) gives a connection its
//     inside endpoint's mapping, shared by every core through a second
//     flow table, and admits new connections to a mapping's external
//     endpoint (docs/design.md, "Full-cone mappings").
//  6. The core's bounded expiry sweep runs (process.go), and the ports of
//     connections that left go back to their allocators. Rule counters
//     and pipeline counters are published; the flow table's critical
//     section ends.
//
// The tests hold the fast paths to the general ones batch by batch: the
// established path to handle (TestEstablishedPathRandomBatches,
// checkEstablishedPath, FuzzEstablishedPath) and parseFast to parse
// (TestParseFastBatches, checkParseFast, FuzzParseFast); frames that end
// where an unmapped page begins go through both
// (TestParseFastReadsWithinFrames, TestEstablishedPathExactFrames).
//
// # Environment
//
// Everything the packet path reads that changes only by replacement — the
// ports, routes, the box's addresses, the compiled rule set,
// which NAT pool serves which target — is an immutable Env, built by NewEnv
// from a topo.Snapshot and an iptables model and swapped in with
// Dataplane.SetEnv; every core picks it up at its next batch, connections
// and their NAT untouched. Neighbours are not in the Env: they change one
// at a time, in a NeighTable (neigh.go) the cores read without a lock,
// whose writer (the daemon, from the kernel's notifications) changes an
// entry in place; each core notices a change at its next batch by one
// generation counter, updates or retires only the next-hop cache entries
// of the neighbours that changed, and sends or answers the frames it
// holds for them. NAT pools live in a Pools registry that outlives
// Envs, so a connection can always give its port back to the pool it came
// from; a connection's flow-table caller word holds its pool's ID and its
// creation second.
//
// # Counters
//
// Each core counts in plain memory and publishes atomic copies at the end
// of every batch, on cache lines no other core writes; readers sum them
// (Dataplane.Counters, TotalCounters). A batch the established path
// forwarded whole publishes only the counters that path changes.
package dataplane
