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
// Ethernet with at most one 802.1Q tag, IPv4 only:
//
//   - destination not one of the box's addresses (the locals map) →
//     xnat (it forwards);
//   - destination local and a non-first fragment → xnat (it tracks
//     fragments; note this includes fragments of datagrams for the box's
//     own services, which xnat must hand back or reassemble);
//   - destination local, TCP or UDP, destination port in that protocol's
//     set → xnat;
//   - destination local, ICMP echo request or reply whose id is in the ICMP
//     set (the reply to a translated ping comes back to the external
//     address with the translated id) → xnat;
//   - destination local, ICMP destination unreachable, time exceeded or
//     parameter problem whose embedded datagram — one the box sent, so
//     its source port or echo id is the translated one — has its TCP/UDP
//     source port or echo id in the set → xnat. Errors about the box's
//     own connections stay with the kernel (path MTU discovery for its
//     own sockets keeps working);
//   - everything else — ARP, IPv6, other EtherTypes, local traffic for
//     other ports or protocols — passes to the kernel, the slow path.
//     Frames too short for the headers they announce (and IPv4 headers
//     with a bad version or IHL) pass too: the kernel drops them and
//     counts them where an administrator looks.
//
// A frame meant for xnat is redirected with bpf_redirect_map on the
// XSKMAP with ctx->rx_queue_index as key and XDP_PASS as the fallback
// action, so a queue without a socket passes to the kernel (counted as a
// failed redirect).
//
// # Maps
//
// A Filter holds the maps every interface shares and the daemon keeps
// current: locals (hash, 4-byte IPv4 address in network order → 1) and
// ports (array of three 8 KiB bitmaps: TCP, UDP, ICMP id; bit p&7 of byte
// p>>3). Each Program (one per interface, from Filter.Load) has its own
// XSKMAP (queue → socket; sockets are per interface and queue) and its
// own per-CPU counters: CtrToXnatForward, CtrToXnatLocal,
// CtrRedirectFailed, CtrPassNotIPv4, CtrPassLocal, CtrPassMalformed.
// Stats sums them over CPUs; Redirected, Passed and RedirectFailed
// summarise.
//
// # Attaching
//
// Attach detaches a program left on the interface by an earlier run
// (found with netlink's IFLA_XDP query; a crashed run that attached
// through netlink leaves one, a BPF link dies with its process), then
// attaches through a BPF link in native (driver) mode, or generic (SKB)
// mode when the driver refuses native, and reports the mode obtained. A
// program held by another live process's BPF link is not taken over:
// Attach fails with ErrBusy. Close closes the link (detaching the
// program), waits at most two seconds to see the interface without it,
// and releases the program and its maps.
//
// veth takes native XDP (Linux 6.18), and redirecting from it into an
// XSKMAP needs no program on its peer; only XDP_TX or redirects to a
// veth device would (see package ring's notes).
package xdpprog
