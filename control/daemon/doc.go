// Package daemon is a running xnat: it validates a configuration against
// the system, then owns the flow table, the dataplane, the XDP programs,
// one AF_XDP worker per queue, the netlink mirror of the kernel's view and
// a control goroutine. cmd/xnatd is a thin command around it, and the
// control API (xnatctl's socket) calls its methods.
//
// # Configuration
//
// A Config comes from a TOML file (LoadFile; unknown keys are errors), from
// xnatd's flags, or both, flags overriding the file:
//
//	# /etc/xnat/xnatd.toml
//	inside      = ["eth1"]          # --inside IF (repeatable)
//	outside     = ["eth0"]          # --outside IF (repeatable)
//	queues      = 2                 # --queues N: one worker per queue index
//	cpus        = [2, 3]            # --cpus 2,3 or 2-3: worker q on cpus[q]
//	capacity    = 1048576           # --capacity N: flow table size, fixed
//	max_conns   = 262144            # --max-conns N: nf_conntrack_max
//	rules       = "rules.v4"        # --rules FILE: iptables-save format, the whole rule set
//	socket      = "/run/xnat.sock"  # --socket PATH: control socket
//	poll        = "sleep"           # --poll sleep|busy
//	bind        = "auto"            # --bind auto|copy|zerocopy
//	xdp_mode    = "auto"            # --xdp-mode auto|native|generic
//	local_ports = "warn"            # --local-ports warn|refuse
//	replace_xdp = false             # --replace-xdp
//	rp_filter   = 1                 # net.ipv4.conf.all.rp_filter (default: the kernel's)
//
//	[timeouts]                      # seconds, by conntrack sysctl name
//	nf_conntrack_tcp_timeout_established = 7200
//	nf_conntrack_udp_timeout = 30
//
// The reverse-path filter (dataplane/rpfilter.go) starts with the
// kernel's values of the interfaces' namespace, read at start:
// net.ipv4.conf.all.rp_filter (or the config's rp_filter),
// net.ipv4.conf.default.rp_filter and each xnat interface's own; xnatctl
// sysctl changes them by the same names afterwards. The kernel's values
// are not changed, nor followed when they change later.
//
// Prepare checks everything before anything is attached — the values, the
// interfaces (present; exactly as many queues as workers, by the ethtool
// channel count, or the RX queue count for drivers without channels: a
// queue without a worker would get no service, so the error names the
// fix, --queues N or ethtool -L; an MTU xnat's frames hold; no XDP program
// of another program attached, unless replace_xdp), the CPUs (present and
// in the process's affinity mask), the rules file (parsed and compiled for
// these interfaces), the socket's directory, the NAT pools against the
// kernel's ephemeral ports — and returns a Plan with the facts to report;
// every error wraps ErrConfig. It warns when the kernel itself forwards
// IPv4 on an xnat interface (net.ipv4.conf.IF.forwarding = 1): what xnat
// does not take the kernel would route untranslated, and everything while
// xnatd is stopped. Start runs the plan.
//
// # What goes to xnat, and the box's own traffic
//
// The XDP program (dataplane/xdpprog) gives xnat exactly what it owns:
// frames to forward; packets for the box's addresses whose port (or echo
// id) a live xnat connection holds there; new connections a DNAT rule of
// the interface may take; ICMP errors about those. Everything else for the
// box — its own sockets on any port, echo requests, ARP, IPv6,
// fragments, DHCP, VRRP, OSPF — is the kernel's.
//
//   - Held ports: every pool's port allocator counts the ports it uses on
//     the box's addresses in the program's use counts, one slot of counts
//     per such address (xdpprog.DefaultMaxSlots of them; an external
//     address that finds none left gets every port steered, with a
//     warning). The daemon gives the slots: to the primary address of
//     every outside interface (MASQUERADE, hairpinning) and to the box's
//     addresses within SNAT ranges, before the pools are created. A slot
//     stays with its address while anything is counted in it, and is freed
//     when the address is no pool's and nothing is. A pool on the box's
//     addresses keeps per-port counts to do this, within the pools' shared
//     budget (portalloc.DenseMax); a rule set whose large SNAT ranges have
//     taken that budget before such a pool is made is refused, the error
//     saying so.
//   - DNAT groups: per interface, the destination, protocol and ports of
//     every nat-table DNAT rule reachable from PREROUTING whose -i (or a
//     jump's) takes the interface, rebuilt from the new rule model on
//     every change, before it is swapped in. A DNAT rule for port 2222 on
//     -i eth0 takes port 2222 of the box's addresses on eth0 only: the box's
//     own service on port 2222 stays reachable through the inside
//     interfaces. Other matches of the rule (-s, ...) are not checked in
//     XDP: packets they refuse are xnat's and dropped as unsolicited.
//   - A DNAT rule removed or changed while connections use it: before the
//     new groups are written, the daemon finds the live
//     destination-translated connections to the box's addresses whose
//     endpoint an interface's old groups took and its new ones do not,
//     and holds those endpoints in the use counts; once every core uses
//     the new rules it looks again (for connections the old rules created
//     meanwhile); once a second it lets go of endpoints no connection uses
//     any more. A pool removed keeps its ports held by its own connections
//     until they end.
//
// # NAT pools and the kernel's ephemeral ports
//
// A pool on the box's own addresses shares them with the box's sockets.
// The kernel picks its ephemeral ports from net.ipv4.ip_local_port_range
// less ip_local_reserved_ports; such a pool is created without those ports
// (portalloc), its remaining ports split evenly between the cores, so the
// box's own connections and xnat's never meet on a port: with MASQUERADE
// on the default pool, a client on the box gets every answer. The check
// runs at start and on every rule change, reload and kernel change (the
// sysctls are read again each time, from files opened in the daemon's
// namespace): it reports the overlap, which xnat leaves to the kernel
// (local_ports = "warn", the default), or refuses it ("refuse"); a pool
// left with fewer ports than workers is refused either way, the error
// naming ip_local_reserved_ports. A pool keeps the ports it was created
// with when the sysctls change later.
//
// # What Start sets up
//
// The flow table (capacity, limit, timeouts, one core per queue); the XDP
// maps (the box's addresses with their slots, the use counts mapped into
// the process and handed to the pools through a portalloc.Steering); the
// kernel mirror (dataplane/kernel), whose first snapshot and rule set give
// the first Env; one XDP program per interface with its DNAT groups,
// native or generic; per queue q one UMEM with a socket on queue q of
// every interface, registered in each program's XSKMAP at q, its frames
// large enough for the interfaces' MTU (2048 or 4096 bytes); one worker
// per queue (dataplane/worker), pinned to its CPU; and the control
// goroutine. Start must run on a thread in the network namespace of the
// interfaces (xnatd does; tests call it inside netns.NS.Do), which the
// daemon remembers for later attachments. Stop undoes it in order: control
// goroutine, workers, mirror, XDP programs (detached, bounded), sockets,
// maps.
//
// # The kernel's view
//
// The kernel's neighbour notifications go straight into the dataplane's
// neighbour table, one entry at a time (kernel.Options.OnNeigh), and
// every snapshot's neighbours reconcile it; a neighbour change rebuilds
// nothing. Every new snapshot of the mirror rebuilds the Env (same rule model,
// previous Env for counters, same pools) and swaps it in; if it cannot be
// built (an interface vanished) the previous one stays and an event says
// so. When an address of an interface xnat forwards on goes away, or the
// interface goes down, the connections masqueraded through it — source-translated,
// with that address as the reply's destination — are deleted, as Linux's
// MASQUERADE does on NETDEV_DOWN and address removal; later connections
// use the interface's current address. The XDP maps follow every
// snapshot and rule set (above).
//
// Interfaces that come and go: the control goroutine compares each
// snapshot's interfaces with what it has attached. An xnat interface that
// is deleted loses its program and sockets (the workers run on without
// them); one created again under its name — a new ifindex — gets a
// program and sockets again; an MTU the frames no longer hold gets larger
// frames (up to 4096 bytes, an MTU of 3822; beyond, an error event says
// longer frames are dropped). For that the workers are stopped and the
// sockets reopened on every queue; meanwhile the programs of the other
// interfaces stay attached and drop xnat's packets rather than pass them.
// A failed attempt is retried every second. Link down and up needs none
// of it: program and sockets stay.
//
// # The control goroutine
//
// It drains each pipeline's next hops that lacked a neighbour (a
// lock-free ring per core) and asks the kernel to resolve them (NTF_USE;
// the pipelines hold their packets meanwhile), woken by the core that
// records one (Dataplane.OnNeighMiss) and every Options.ControlInterval;
// when the kernel reports the neighbour, the workers are woken to send
// what they hold (Dataplane.Wake). Every ControlInterval it also
// reports the table's "table full, dropping packet" events and LOG records
// as Events; and once every core has passed two batches on a new rule set it
// settles the rule counters carried over from the old one.
//
// # Events
//
// The package never logs: it reports start-up facts (per interface its
// queues and addresses, the XDP attach mode, each socket's copy or
// zero-copy bind, the workers' CPUs, the table's capacity and limit, the NAT
// pools and the ephemeral-port check) and run-time events through
// Options.OnEvent, and xnatd writes them with log/slog.
package daemon
