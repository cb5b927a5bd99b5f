// Package rules is xnat's rule engine: the iptables rule model for the
// filter and nat tables, its validation, and the compiled, immutable
// evaluator the packet pipeline calls.
//
// # Model
//
// A Model holds two tables. filter has the built-in chains INPUT, FORWARD
// and OUTPUT; nat has PREROUTING, INPUT, OUTPUT and POSTROUTING; both may
// have user-defined chains. Built-in chains come first, then user chains
// sorted by name, the order iptables lists them in. A Rule has the IP
// header matches (-s, -d, -i, -o, -p, -f, each negatable), an ordered list
// of extension Matches (tcp, udp, icmp, multiport, iprange, length, limit,
// mac, mark, state, conntrack, comment) and a Target. Each rule carries a
// process-unique ID (NewRuleID): counters of a rule that survives a
// rule-set replacement carry over through it, as iptables keeps them.
// control/iptables parses and prints the model in iptables syntax and
// changes it copy-on-write.
//
// Validate enforces what iptables and the kernel enforce: jumps to
// existing user chains, no loops, nesting of at most MaxDepth, DROP and
// REJECT not in nat, DNAT only reachable from PREROUTING/OUTPUT, SNAT
// from INPUT/POSTROUTING, MASQUERADE from POSTROUTING, FULLCONENAT from
// PREROUTING/POSTROUTING (--persistent only with --to-source), REJECT from
// INPUT/FORWARD/OUTPUT, -m mac from PREROUTING/INPUT/FORWARD, no -i on
// OUTPUT/POSTROUTING and no -o on PREROUTING/INPUT (also through user
// chains), port matches and port ranges only with -p tcp/udp.
//
// # Compilation
//
// Compile(model, interfaces, options) validates the model and turns it
// into a *Ruleset: flat arrays of compiled rules, matches and targets,
// with no maps, interfaces or closures on the evaluation path. Interface
// names become bit sets over the dataplane's interface IDs (the '+'
// wildcard and '!' included; a name not present matches no interface, as
// in iptables); the dataplane recompiles when its interfaces change. The
// dataplane keeps the *Ruleset in an atomic.Pointer and swaps in a new one
// between two batches: connections are not flushed, NAT decisions already
// stored with connections stay, and with Options.Prev the counters and
// NAT target IDs carry over (call Settle once no core uses the old set).
// -m limit state is per rule set: a replacement refills the buckets, as a
// kernel table replacement does.
//
// # Evaluation
//
// Filter(hook, *Packet, core, now) walks the filter chain of a hook in
// iptables order: rules top to bottom; -j to a user chain pushes a return
// point, -g does not; RETURN or the end of a user chain pops; the end of a
// built-in chain, or RETURN in it, applies the policy. LOG, MARK, CONNMARK
// and rules without a target are non-terminal; ACCEPT, DROP and REJECT end
// the walk. NAT(hook, ...) does the same for the nat table on the first
// packet of a connection and returns a NATDecision: none, ACCEPT without
// translation, or SNAT/DNAT/MASQUERADE with the range, flags and a stable
// small target ID (one port pool per target). NATDecision.Pick chooses a
// DNAT backend (address and port in range) from a per-connection hash,
// deterministically. Evaluation allocates nothing, takes no lock and does
// no I/O; the return stack lives in the core's state.
//
// Match semantics follow the kernel: port, icmp and multiport matches fail
// on non-first fragments; -m state/conntrack match when the packet's
// state bits intersect the rule's (SNAT/DNAT are connection status bits,
// UNTRACKED never occurs in xnat); -m limit is iptables' token bucket
// (burst tokens at start, one more per average period), kept as a
// theoretical arrival time in one int64 shared by all cores and updated by
// CAS, with time passed in by the caller.
//
// # The classifier
//
// A chain with at least Options.ClassifyMin rules (default 8) gets a
// bit-vector classifier, the Lakshman–Stiliadis scheme bpf-iptables uses.
// For each field — source and destination address, protocol, source and
// destination port, input and output interface — the field's value space
// is cut at every rule boundary into elementary intervals; each interval
// maps to an equivalence class, a bitmap of the rules that can match a
// value in it (identical bitmaps are shared). A packet's lookup is a
// branch-free binary search per address or port field and a direct index
// for protocol and interfaces; ANDing the classes' bitmaps gives the
// candidate rules, visited in rule order, each checked by the full match.
// A summary word per class (which 64-rule words are non-zero) lets the
// walk skip empty words, so a miss over 1000 rules costs a handful of
// word operations. Negations become complements; -m iprange and
// --sport/--dport/multiport fold into the address and port fields, but
// only up to the first -m limit in a rule, so a rule the classifier skips
// is one whose token iptables would not have taken either. The classifier
// only ever narrows the candidates; the full match decides. FilterLinear
// and NATLinear evaluate the same compiled rules by a plain scan: the
// oracle the tests compare against (verdicts, decisions, packet changes,
// counters, LOG records) and the benchmark peer.
//
// # Counters
//
// Packet and byte counters (bytes are IP total lengths) exist per rule and
// per built-in chain policy, per core. A core adds to plain counters only
// it writes and notes which slots it touched; Flush(core), at the end of
// its batch, publishes the running totals of those slots with atomic
// stores into the core's own, separately allocated, array. Readers
// (RuleCounters, PolicyCounters, Model) sum the cores' published values,
// add the base (counters loaded with the rules or carried from the
// previous rule set) and subtract the zero baseline. Zero (iptables -Z)
// stores the current sum as the baseline and never writes a core's
// counters. No atomic read-modify-write happens per packet.
//
// # Targets in xnat
//
//   - ACCEPT: filter: the packet passes. nat: no translation at this hook.
//   - DROP: the dataplane drops the packet (filter only).
//   - REJECT: the dataplane drops the packet and answers with the ICMP
//     error or TCP RST of --reject-with (RejectType.ICMP gives type/code).
//   - RETURN: back to the calling chain; in a built-in chain, the policy.
//   - LOG: records the packet's fields, prefix and level into the core's
//     ring (LogRings), within a per-core rate limit; the daemon drains and
//     writes them. No I/O on the packet path. --log-tcp-sequence and the
//     other LOG flags are rejected.
//   - MARK: Mark = (Mark &^ mask) ^ value, in the Packet; the dataplane
//     keeps it for the packet.
//   - CONNMARK: --set-xmark changes CtMark; --save-mark copies Mark to
//     CtMark and --restore-mark CtMark to Mark, under the masks; the
//     dataplane stores CtMark with the connection.
//   - SNAT, DNAT, MASQUERADE: nat only, first packet of a connection only;
//     the decision is stored with the connection and applied to every
//     later packet in both directions. MASQUERADE takes the egress
//     interface's address when the connection starts.
//   - FULLCONENAT (xt_FULLCONENAT): nat only, as MASQUERADE (or SNAT with
//     --to-source) in POSTROUTING; the NAT decision NATFullCone tells the
//     dataplane to give the connection its inside endpoint's
//     endpoint-independent mapping, and in PREROUTING to admit a new
//     connection to a live mapping's external endpoint.
//
// xnat forwards: filter FORWARD and nat PREROUTING/POSTROUTING carry the
// traffic. filter INPUT/OUTPUT and nat INPUT/OUTPUT are kept, listed and
// saved; Effective and Warnings say where rules have no effect.
package rules
