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
//	rules       = "rules.v4"        # --rules FILE: iptables-save format
//	socket      = "/run/xnat.sock"  # --socket PATH: control socket
//	poll        = "sleep"           # --poll sleep|busy
//	bind        = "auto"            # --bind auto|copy|zerocopy
//	xdp_mode    = "auto"            # --xdp-mode auto|native|generic
//	local_ports = "warn"            # --local-ports warn|refuse
//
//	[timeouts]                      # seconds, by conntrack sysctl name
//	nf_conntrack_tcp_timeout_established = 7200
//	nf_conntrack_udp_timeout = 30
//
// Prepare checks everything before anything is attached — the values, the
// interfaces (present; queues at most the ethtool channel count, or the RX
// queue count for drivers without channels), the CPUs (present and in the
// process's affinity mask), the rules file (parsed and compiled for these
// interfaces), the socket's directory — and returns a Plan with the facts to
// report; every error wraps ErrConfig. Start runs the plan.
//
// # NAT pools and the kernel's ephemeral ports
//
// The XDP program sends packets for the box's own addresses to xnat when
// their destination port (or echo identifier) is in a NAT pool or a DNAT
// rule's ports; the box's own sockets choose source ports from
// net.ipv4.ip_local_port_range (less ip_local_reserved_ports), and the
// replies to a local connection whose port lies in a pool would be taken by
// xnat. Prepare compares every pool's port range (a rule's --to-ports, or
// 1024–65535) with the kernel's range and, by local_ports, warns (the
// default, since Linux's default range 32768–60999 lies inside the default
// pool; fine on a box that makes no connections of its own through its
// outside addresses) or refuses to start. Either move the pool with
// --to-ports or reserve its ports with ip_local_reserved_ports.
//
// # What Start sets up
//
// The flow table (capacity, limit, timeouts, one core per queue); the
// kernel mirror (dataplane/kernel), whose first snapshot and rule set give
// the first Env; the XDP maps (the box's addresses; the TCP, UDP and ICMP
// id sets); one XDP program per interface, native or generic; per queue q
// one UMEM with a socket on queue q of every interface, registered in each
// program's XSKMAP at q; one worker per queue (dataplane/worker), pinned to
// its CPU; and the control goroutine. Start must run on a thread in the
// network namespace of the interfaces (xnatd does; tests call it inside
// netns.NS.Do). Stop undoes it in order: control goroutine, workers, XDP
// programs (detached, bounded), sockets, mirror, maps.
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
// use the interface's current address. The XDP maps are rewritten from
// every snapshot and rule set: locals are all the box's IPv4 addresses; the
// port sets are every SNAT/MASQUERADE pool's range (and 1024–65535 for
// hairpinning when there are DNAT rules) in all three sets, plus the
// destination ports of nat-table DNAT rules (--dport, multiport); a DNAT
// rule without a destination port claims every port of its protocol (TCP
// and UDP when it names none), the box's own services on them included.
//
// # The control goroutine
//
// Every Options.ControlInterval it drains each pipeline's next hops that
// lacked a neighbour (a lock-free ring per core) and asks the kernel to
// resolve them (NTF_USE; the pipelines hold their packets meanwhile); it
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
