// Package flowtable is xnat's connection table: one fixed-capacity table
// shared by every worker core, indexed under both directions of every
// connection, read without locks and changed with compare-and-swap.
//
// # What a connection is
//
// A connection is one 48-byte record (Flow) holding its original tuple
// (the direction of its first packet) and its reply tuple (the reverse,
// after NAT), a status word (the protocol State in the low four bits, the
// flags SEEN_REPLY, ASSURED, SRC_NAT, DST_NAT, three internal bits, and
// sixteen bits for the caller), the time of its last packet, a 32-bit mark
// and a 32-bit word for the caller. Tuples (Tuple) are 16 bytes, packed and
// pointer-free. With Config.Acct, a parallel array keeps per-direction
// packet and byte counters; with Config.Proto, another keeps 64 bytes of
// protocol state for the caller (the dataplane's TCP window tracking),
// set at insert. Timeouts are per state, named and defaulted as Linux's
// nf_conntrack sysctls, and read at every expiry check, so a change
// applies to existing connections at once. Two bits of the status word
// pick a shorter timeout for a connection, as Linux's TCP tracking does:
// nf_conntrack_tcp_timeout_unacknowledged, _max_retrans (each only where
// shorter than the state's) or _close.
//
// # Shares, index and cost
//
// Records live in one array cut into chunks of 64 (63 for connections,
// one for the chunk's bookkeeping). A core takes whole chunks from a
// common lock-free reserve and creates connections only in the chunks it
// holds, so one core may own every record and the table admits up to Max
// whatever the RSS spread. A core is the owner of its connections: it
// alone expires, retires and frees them, and gives back their NAT ports;
// a chunk changes hands only when no record in it is in use. The
// index holds every connection under its original and its reply tuple, in
// 64-byte buckets of sixteen 32-bit slots (record number and tag); each
// tuple has two candidate buckets, chosen by a hash keyed from
// crypto/rand. A connection costs 48 bytes of record and about 11 bytes of
// index. Every page of the table is written at New, so no insert on the
// packet path waits for a page fault.
//
// LookupBatch resolves up to 64 keys with their cache misses overlapped;
// Prefetch starts the lines of keys about to be inserted. Which code scans
// the buckets, the vector code or the Go code, is the process's choice
// (SetImpl): both give the same answers, and auto takes the vector code
// only on the CPUs where it was measured faster.
//
// # Contract
//
//   - A lookup never blocks and never misses a live connection, also while
//     an entry moves between its two buckets (a relocation: the scan reads
//     a counter before and after and scans again, counted search_restart).
//   - An expired connection is absent to lookups at once, before its owner
//     sweeps it. A dying record is absent from the moment its dying bit is
//     set; a record without the confirmed bit is absent.
//   - Of two inserts of the same tuple at once, at most one wins.
//   - Every confirmed connection is reported gone exactly once, by its
//     owner's sweep, however it left (expired, deleted, evicted).
//   - A record is reused only after an epoch grace period: every
//     participant brackets its accesses with Enter and Exit (workers once
//     per batch) and must not block in between.
//   - At Max live connections, an insert evicts an expired or unassured
//     connection (early_drop) or refuses; ASSURED connections are never
//     evicted.
//
// # Who writes what
//
//   - Index slots: any core, by CAS only: 0 → value to publish (insert), value
//     → 0 to unlink (whoever killed the record, or an inserter withdrawing),
//     and in a relocation 0 → value for the copy, value → the new entry's
//     value, or value → 0 to take the copy back.
//   - Relocation counter: the inserter relocating, atomic increment; the
//     relocation flag: taken by CAS 0 → 1 and given back by whoever took it.
//   - Tuples: the owner, only while the record is free; they never change while
//     it can be reached.
//   - Status: the owner when it allocates a record (plain atomic store before
//     publication); then any core by CAS: a packet path changing the state
//     (Flow.UpdateStatus, which cannot touch the internal bits), a killer
//     setting dying; the owner sets retired with an atomic OR.
//   - Last-seen, mark, caller word: any core, atomic stores. The caller word is
//     the free-list link while the record is free.
//   - Chunks: the owner field by the core taking the chunk (before it
//     writes any record of it) and by the core giving it back (after its
//     last record is freed); the reserve's head by CAS, from any core; the
//     rest of a chunk's bookkeeping by its owner alone.
//   - Count of live connections: one atomic counter on its own cache line,
//     incremented before an insert publishes, decremented by the single core
//     whose CAS set dying. The limit (Max) is checked against it exactly.
//   - Per-core statistics: plain counters written only by their core,
//     published with atomic stores at every Exit on cache lines no one else
//     writes; readers sum what was published.
//
// # When the table is full
//
// At Max live connections, an insert first kills a connection near the new
// one (in the two buckets of its original tuple and the two after each)
// that has expired but was not yet swept; failing that, one that is not
// ASSURED (counted early_drop, like Linux's early_drop). When the limit is
// far below the capacity those buckets are mostly empty — Linux then
// refuses although unassured connections fill the table — so failing
// that, a bounded walk (256 records a try, resumed where the last one
// stopped) over the records of every chunk a core holds looks for the
// same two kinds. Failing that, it refuses (counted drop) and raises a "table full, dropping packet" event,
// at most one a second, which the control plane reads with FullEvents.
// ASSURED connections are never evicted.
//
// # Statistics
//
// Stats names its counters as conntrack -S does: found, invalid, insert,
// insert_failed, drop, early_drop, search_restart (here: an insert that
// lost a race and looked up the winner, or a lookup scanned again because
// an entry was relocated meanwhile), plus expired and deleted.
// Entries is Table.Count.
// docs/design.md gives the reasoning: the layout, the batched lookups,
// relocation's seqlock argument, epoch-based reclamation and the vector
// code.
package flowtable
