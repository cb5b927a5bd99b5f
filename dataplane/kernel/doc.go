// Package kernel mirrors the kernel's view of the network into
// topo.Snapshot values for the dataplane, and answers the questions xnat
// asks the kernel.
//
// Start dumps the links, IPv4 addresses, main-table IPv4 routes and IPv4
// neighbours of a network namespace (the caller's, or Options.Namespace)
// and subscribes to their changes (LinkSubscribe, AddrSubscribe,
// RouteSubscribe, NeighSubscribe, in that namespace). Link, address and
// route notifications are only triggers: after a burst of them
// (Options.Debounce of quiet, at most ten periods) the mirror dumps
// everything again and, if the result differs from the last snapshot,
// stores it and calls OnChange with it. Neighbour notifications are
// applied one by one, at once: each is handed to OnNeigh (valid with its
// address, incomplete, failed, or deleted), with no dump and no
// snapshot, so that a neighbour the kernel just resolved is usable
// without waiting for a debounce and a dump, and a gateway's churning
// neighbour states cost no rebuild; the snapshots still list the
// neighbours their dumps found.
// Rebuilding from a dump keeps the mirror exact without replaying
// netlink's incremental messages (replace, multipath, flushes on link
// down), at the cost of a dump per burst: fine for a gateway's tables,
// not for a full Internet routing table. A failed subscription (an
// error, or a closed channel, as after a receive buffer overrun) is
// reported to OnError, resubscribed, and followed by a dump, so lost
// events cannot leave the snapshot stale; that dump's snapshot is handed
// to OnChange even when it equals the last, so that a caller keeping
// neighbours from OnNeigh can catch up with those it missed.
//
// Snapshot contents: every link with its MAC, MTU and Up (IFF_UP and
// carrier, IFF_LOWER_UP), its IPv4 addresses primary first; unicast
// routes of the main table, a multipath route as one Route per next hop;
// IPv4 neighbours, NeighValid when the kernel has a usable link-layer
// address (REACHABLE, STALE, DELAY, PROBE, PERMANENT, NOARP), NeighFailed
// after a failed resolution (FAILED), otherwise NeighIncomplete. Slices are sorted (ifaces by index, routes longest
// prefix first, neighbours by interface and address); a snapshot is never
// modified after it is handed out.
//
// ResolveNeighbour (and Mirror.Resolve) asks the kernel to resolve a next
// hop the way `ip neigh ... use` does: RTM_NEWNEIGH with NTF_USE, which
// creates the entry if needed and calls the kernel's neigh_event_send, so
// the kernel sends the ARP request and owns the entry from then on. No
// state or address is forced, unlike adding an INCOMPLETE entry by hand.
// The kernel notifies the result (valid, or failed after its probes);
// it does not notify the INCOMPLETE state itself. The dataplane holds
// packets for the next hop meanwhile, and sends them when it resolves.
//
// ReadLocalPorts and LocalPorts.Overlap report which ports of a NAT pool
// the kernel may also pick as ephemeral ports for the box's own sockets
// (net.ipv4.ip_local_port_range less net.ipv4.ip_local_reserved_ports).
package kernel
