// Package xdpprog is xnat's XDP program: it decides, per received frame,
// whether xnat or the kernel handles it, and redirects xnat's frames to
// the AF_XDP socket of the queue they arrived on.
//
// The program is assembled in Go with cilium/ebpf's asm package
// (program.go): no C compiler is needed to build xnat and no compiled
// object is committed. It is loaded with ebpf.NewProgram and attached with
// link.AttachXDP.
//
// # What goes to xnat
//
// xnat takes exactly what it owns; everything else for the box is the
// kernel's. Untagged Ethernet, IPv4 only:
//
//   - an 802.1Q- or 802.1ad-tagged frame → the kernel (CtrPassVLAN).
//     xnat's interfaces carry no VLAN; the kernel delivers a tagged frame
//     to the box's VLAN sub-interface of that tag, so those keep working
//     on an xnat interface, and drops it when there is none;
//   - destination multicast (224.0.0.0/4: VRRP, OSPF, IGMP, mDNS) or the
//     limited broadcast → the kernel; xnat forwards unicast;
//   - destination not one of the box's addresses (the locals map, which
//     holds the broadcast addresses of its subnets too) → xnat (it
//     forwards), fragments included — except UDP to port 68, a DHCP
//     server's answer to a client, which may come to the address the box
//     is being offered before it is the box's: the kernel's;
//   - destination local and a non-first fragment → the kernel. A later
//     fragment carries no port to decide by; the kernel reassembles the
//     datagrams meant for the box's own sockets, and xnat, which drops
//     non-first fragments, loses nothing it would have used;
//   - destination local, TCP or UDP, the destination port held by a live
//     xnat connection on that address (its use count, below, is not 0) →
//     xnat: the replies of translated connections;
//   - destination local, TCP or UDP, matched by one of the interface's
//     DNAT groups (below) → xnat: the new connections a DNAT rule may
//     take on that interface;
//   - destination local, ICMP echo reply whose id is held on that address
//     → xnat (the reply to a translated ping); an echo request goes to
//     xnat only when a DNAT group takes ICMP for that address, else the
//     kernel answers it;
//   - destination local, ICMP destination unreachable, time exceeded or
//     parameter problem whose quoted datagram — one the box sent, so its
//     source port or echo id is the external one — has its TCP/UDP source
//     port or echo id held on that address, or its source port matched by
//     a DNAT group → xnat. Errors about the box's own connections stay
//     with the kernel (path MTU discovery for its own sockets keeps
//     working);
//   - destination local, another protocol → xnat when a DNAT group takes
//     every protocol (a rule without -p) for that address;
//   - everything else — ARP, IPv6, other EtherTypes, the box's own
//     sockets on any port, echo requests, OSPF to the box — passes to
//     the kernel, the slow path. Frames too short for the headers they
//     announce (and IPv4 headers with a bad version or IHL) pass too: the
//     kernel drops them and counts them where an administrator looks.
//
// A frame meant for xnat is redirected with bpf_redirect_map on the
// XSKMAP with ctx->rx_queue_index as key and XDP_DROP as the fallback
// action: a queue without a socket (no worker serves it, or its worker is
// restarting) drops xnat's frames and counts them (CtrRedirectFailed). It
// never passes them: the kernel would forward them untranslated, or
// answer a translated connection's reply with a reset.
//
// # Maps
//
// A Filter holds the maps every interface shares:
//
//   - locals: hash, 4-byte IPv4 address in network order → its slot: an
//     index into the use counts, NoSlot (xnat holds no port there), or
//     SlotAll (xnat takes every TCP/UDP port and echo id there: an
//     external address for which no slot was left);
//   - uses: the use counts, an array of Options.MaxSlots slots created
//     with BPF_F_MMAPABLE and mapped into the process (UseCounts). A slot
//     is SlotBytes: per protocol (TCP, UDP, ICMP echo id) a 16-bit count
//     per port, in host byte order. The port allocators (package
//     portalloc) change them with atomic adds on the 32-bit words that
//     hold two counts, without a system call; a count is the number of
//     holders of the port — each pool's allocator that has at least one
//     connection on it, and the daemon for connections that outlive their
//     DNAT rule — so a port leaves xnat when its last connection ends,
//     whatever rule or pool it came from.
//
// Each Program (one per interface, from Filter.Load) has its own XSKMAP
// (queue → socket; sockets are per interface and queue), its own DNAT
// groups and its own per-CPU counters: CtrToXnatForward, CtrToXnatLocal,
// CtrRedirectFailed, CtrPassNotIPv4, CtrPassLocal, CtrPassMalformed, CtrPassBroadcast,
// CtrPassVLAN.
// Stats sums them over CPUs; Redirected, Passed and RedirectFailed
// summarise.
//
// A DNAT group (SetDNAT) is a destination prefix (or its complement), a
// protocol (or any) and a port bitmap (or every port). The program checks
// up to MaxDNATGroups of them in order, unrolled; the daemon merges the
// DNAT rules of an interface into groups by destination and protocol. Two
// copies are kept and a one-word map says which one the program reads, so
// a rule change is seen whole.
//
// # Attaching
//
// Attach leaves an XDP program of another program alone: it fails with
// ErrForeign naming it, unless replacing it was asked for (xnatd's
// --replace-xdp). An xnat program (by name, xnat_xdp) left attached
// through netlink by an earlier run is replaced; one held by another live
// process's BPF link is never taken over (ErrBusy). The program is then
// attached through a BPF link in native (driver) mode, or generic (SKB)
// mode when the driver refuses native, and reports the mode obtained.
// Close closes the link (detaching the program), waits at most two
// seconds to see the interface without it, and releases the program and
// its maps. Query reports the program an interface runs.
//
// veth takes native XDP (Linux 6.18), and redirecting from it into an
// XSKMAP needs no program on its peer; only XDP_TX or redirects to a
// veth device would (see package ring's notes).
package xdpprog
