// Package e2e is xnat's end-to-end benchmark: real frames through a
// namespace topology, from an AF_XDP traffic generator through the device
// under test — xnat, or Linux's own forwarding with iptables MASQUERADE and
// nf_conntrack as the baseline — to an AF_XDP sink that checks and counts
// what arrives, and optionally answers (reflector mode) so that replies
// cross the device in the reverse direction too.
//
// # Topology
//
//	gen: gen0 10.0.0.2/24 ── veth ── dut: dut0 10.0.0.1/24
//	                                      dut1 203.0.113.1/24 ── veth ── srv: srv0 203.0.113.2/24
//
// Each Point (one measurement) builds a fresh Topology, sets a Target up in
// dut, and removes everything when done: conntrack state never carries
// over from one measurement to the next. Namespaces are named like
// internal/netns's ("xnt-<pid>-…"), so netns.Sweep removes those of a
// crashed run.
//
// # Frames
//
// A Template is one prebuilt frame (Ethernet, IPv4 with DF, UDP or TCP,
// an 18-byte stamp, a fixed padding pattern) with valid checksums. Flow i
// has source 10.0.0.16+i/64000, source port 1024+i%64000 and destination
// port 9000+i/64000 (FlowTuple), so flows that share a source port differ
// in destination port and one masquerading address translates them all.
// Per send only the headers and the stamp (magic, flow number, sequence
// number, monotonic send time) are written, and both checksums are
// adjusted from the template's with RFC 1624 (Template.Write); the
// padding was written once into every UMEM frame (Template.Prime).
// BenchmarkStamp compares that with recomputing the checksums
// (Template.WriteFull). --size counts the Ethernet frame with its FCS, as
// RFC 2544 does (64 → 60 bytes handed to the device); a TCP frame with its
// stamp needs at least 72 bytes, so TCP at --size 64 sends 72-byte frames
// (the result's frame_len says so).
//
// # Generator, sink, reflector
//
// The Generator owns one UMEM and one socket on a queue of gen0: batched
// TX of frames from the free stack, round-robin over its flows, an
// optional token bucket refilled per batch, and new connections (fresh
// tuples, a SYN for TCP) at a rate. The Sink owns a UMEM with a socket on
// every queue of srv0, steered by dataplane/xdpprog's program (its
// local-address map left empty, so every IPv4 frame goes to the sockets):
// it checks every frame (Check: IPv4 header checksum, L4 checksum over
// the pseudo-header, stamp, translated source address, destination),
// counts established and new flows apart, and records the one-way
// latency from the stamp in a log-linear Histogram (generator and sink
// share the process's monotonic clock). As a reflector it turns each
// valid frame of an established flow around (Reflect) and transmits it
// back; the generator, with xdpprog's program on gen0, receives the
// replies, checks them and records the round-trip time. The loops
// allocate nothing and take no lock.
//
// # Accounting
//
// Every Outcome accounts for every frame: sent (by the generator and the
// reflector) = received (by the sink and the generator) + counted drops,
// where the drops are the target's (Target.Drops: for the kernel,
// conntrack's drop and insert_failed columns of /proc/net/stat/nf_conntrack
// and the IP layer's discards from /proc/net/snmp, in dut), the veths'
// rx/tx dropped counters, the sockets' XDP_STATISTICS (rx dropped, RX ring
// full) and frames the sink refused. Outcome.Unaccounted is the
// remainder; the tests require it to be zero.
//
// # Targets
//
// Kernel: ip_forward=1, `iptables -t nat -A POSTROUTING -o dut1 -j
// MASQUERADE` (the iptables package; the nf_tables backend, iptables-nft,
// is the default and works, as does iptables-legacy) and nf_conntrack
// limited to the point's MaxConns. On Linux 6.18 nf_conntrack_max is
// writable only in the initial namespace and holds every namespace's
// table to it, so the target sets the host's value for the run and puts
// it back; nf_conntrack_buckets is global and read-only outside the
// initial namespace and is not changed. Xnat starts xnatd in dut (the
// binary next to xnat-bench, as `make build` puts it, or on PATH; without
// one it fails with ErrNoXnatd) and stops it with SIGTERM; its drops per
// reason and its table size are read from its control socket, private to
// the run. A target that serves no counters returns ErrNoCounters and its
// results carry a note instead.
//
// Placement (on by default with two CPUs or more) pins the generators,
// the sink and the device under test: by default the generator on CPU 0,
// xnatd's worker (--cpus) and the sink on the last CPU. The kernel has no
// worker to pin: on veth its forwarding runs where the frame was sent
// (below), unless KernelRPS steers the device under test's receive
// processing to the same CPUs as xnat's workers with RPS. Which of the
// two is the fairer peer is the README's subject; the harness measures
// both.
//
// On veth the whole forwarding path runs inside the generator's sendto
// (copy-mode AF_XDP transmit, veth, netif_rx, the forwarding softirq on
// the same CPU): the generator is slowed by the system under test rather
// than overrunning it, so the maximum rate shows up as the generator's
// own rate with little loss. The "xdp_drop" point measures the
// generator alone into an XDP_DROP program on dut0: its headroom.
//
// # Flood
//
// The flood scenario (RunFlood; --scenario flood, not part of "all")
// asks whether the device under test keeps its users' connections while
// it is attacked. It uses real kernel TCP sockets rather than the AF_XDP
// generator, in the same topology with a route to 198.18.0.0/15 through
// the server (whose kernel drops what reaches it) and a DNAT rule beside
// the MASQUERADE: dut1's address, TCP port 8080, to gen's 10.0.0.2:8080,
// where a listener answers.
//
// Before the floods, 500 connections (--established) are opened: nine in
// ten from gen to an echo server on srv, 203.0.113.2:9000, through
// MASQUERADE, and one in ten from srv through the DNAT to an echo server
// on gen; each then sends 32 bytes every 100 ms and waits for the echo. For --time,
// three floods run together from AF_PACKET sockets that receive nothing
// (so the namespaces' stacks see every frame), at --flood-pps in total:
// half SYNs from up to 100,000 spoofed sources in 198.18.0.0/15
// (--syn-sources) at the DNAT port; a quarter UDP datagrams from one
// inside host, 10.0.0.16, each to a new destination; a quarter RSTs
// with random sequence numbers at the established connections, from
// outside: from the echo server's address and port to the masqueraded
// connections' external ports (as the server sees them), and from the
// inbound clients' addresses and ports to the DNAT port. Meanwhile a
// legitimate client opens --legit-rate connections per second, one in
// five inbound through the DNAT and the others outbound, each to
// connect, echo once and close within 2 s. The established connections echo for --settle
// more after the floods stop.
//
// The result (FloodResult) counts the established connections lost (any
// error, a reset, or an echo not back within 2 s), and their conntrack
// states at the end as the target holds them (a RST the target accepted
// leaves CLOSE: traffic keeps such an entry alive, but its timeout is 10
// s and an early drop may take it); the legitimate connections attempted
// and completed (legit_success, legit_new_per_sec); the flood frames
// sent and their rate; and drops_by_reason, the target's counters over
// the run: xnatd's drop reasons, early drops, invalid packets and
// per-source refusals, or the kernel's conntrack statistics (drop as
// table_full, early_drop, insert_failed, invalid, error) and IP
// discards; with the device under test's veth drops for both. The
// connection limit is --max-conns (32768 by default, below what the
// floods offer in a second), so the table is full for most of the run.
package e2e
