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
// # Memory layout
//
// Records live in one array of Capacity + Cores·Config.Limbo records (the
// Limbo records a core for records waiting out their grace period), cut
// into chunks of 64: 63 for connections and one for the chunk's
// bookkeeping. A core takes whole chunks from a common reserve and
// creates connections only in the chunks it holds; it is their owner — it
// alone expires, retires and frees them, and gives back their NAT ports.
// See "Shares and the common reserve" below.
//
// The index is an array of 64-byte buckets of sixteen 32-bit slots. A
// slot holds a record number (plus one; 0 is empty) in its low bits and a
// never-zero tag from the tuple's hash in the rest, so a slot is matched
// with one AND and one compare. Each tuple hashes (a keyed wyhash-style
// mix, the key drawn from crypto/rand, so outside hosts cannot aim at a
// bucket) to two buckets; it goes to the first while that holds fewer
// than 12 entries, else to the emptier of the two. The index has
// 2·Capacity/0.75 slots, and 90% of tuples sit in their first bucket, so
// a lookup usually reads one bucket line and one record. Rarely, an
// insert finds both its buckets full (under churn at Capacity, one in
// 400 million: 40 tables of a million connections, each churned by 10
// million inserts; BenchmarkChurnAtCapacity); it then relocates an
// entry of one of them to that entry's other bucket (one cuckoo step,
// below) and takes the freed slot. Only if no entry of either bucket can
// move does the insert fail and count insert_failed. A
// connection thus costs 48 bytes of record and about 11 bytes of index:
// 59 bytes (under a byte more for the chunks' bookkeeping, one record in
// 64), against some 320 for Linux's nf_conn with its NAT extension.
// Tuples are compared as two 64-bit words.
//
// The record and index arrays are advised onto transparent huge pages
// (madvise MADV_HUGEPAGE) before first touch: the table is probed at
// random, and with 4 KiB pages nearly every probe of a large table is a
// TLB miss (in a virtual machine, a two-dimensional page walk). New then
// writes to every page of them, so the kernel backs the whole table at
// start and no insert in the packet path ever waits for a page fault.
//
// LookupBatch resolves up to 64 keys in passes that alternate computing
// (hashing, scanning a bucket) with tight loops that only touch the next
// cache line each key needs (first buckets, the few second buckets,
// candidate records), so the misses of a whole batch are in flight
// together instead of one after another.
//
// On amd64 the hash pass is assembly (tagscan_amd64.s, baseline
// instructions: two 128-bit multiplies for the hash, three 64-bit ones for
// the buckets and the tag). On a table beyond the caches it prefetches
// each key's first bucket as soon as it is known,
// so those misses overlap the hashing of the keys after (a prefetch,
// unlike a load, holds up nothing behind it); the touch loops then wait
// for lines already on their way. The prefetches bring lines into L2, not
// L1 (PREFETCHT1): a miss bound for L1 holds one of its few miss buffers
// until the line arrives, and those capped how many of a batch's misses
// were in flight at once; L2 tracks many more. Table.Prefetch does the
// same for keys about to be inserted, both buckets of each (an absent
// key is looked for in both): the pipeline passes it the reply tuples of
// a batch's new connections. Under ImplAVX2 (see Implementations below)
// the bucket scan is vector code too: a bucket is compared with the tag as two 8-slot vectors and the
// first matching slot taken with TZCNT, so no branch depends on where the
// tag sits (the scalar loop leaves at a slot that differs from key to
// key); the scan also prefetches each candidate record, and each second
// bucket still to be read. A vector load is not one atomic load of the
// bucket, but each aligned 32-bit slot in it is read whole, and a
// candidate found this way is only a hint that the compare confirms
// (tuple and liveness), as with the scalar scan. The record number is
// read again from the matching slot with a scalar load; a slot emptied
// in between reads as no candidate, which is the answer of a lookup
// ordered just after that unlink, and a slot reused in between names a
// record the compare rejects, sending the key to the full scan. The
// compare pass is assembly as well where the vector scan runs: each
// candidate's tuples, status and last-seen time read with plain loads
// (atomic loads on amd64), the timeouts table likewise; a candidate that
// fails goes to the Go scan through both buckets, as before.
//
// Below touchAbove live connections (16,384: the table then fits in the
// second-level cache) the passes buy nothing, there being no misses to
// overlap, and LookupBatch takes each key from hash to answer in one
// assembly pass over the batch instead (lookupSmallAMD64, the single
// lookup's path below without a call per key); a key whose candidate
// fails the compare is scanned in Go. TestLookupOne holds it to the scan,
// and TestLookupBatchMatchesLookup runs LookupBatch both ways.
//
// A single lookup (Lookup, and the control plane's) is one assembly call
// where the vector scan runs (lookupOneAMD64): hash, place, the vector
// match of the first bucket (the second only when no slot of the first
// holds the tag), the candidate's compare, all without a branch that
// depends on where the tag sits. A lookup is two dependent misses, bucket
// then record, and what overlaps them with the next lookup's is the core
// running ahead; a short path with nothing mispredicted lets it (at a
// million connections, about 225 → 155–210 ns a lookup, alternated runs
// of xnat-bench flowtable). It reads the table's fields at the offsets
// the compiler writes into go_asm.h. When the candidate fails, or an
// absent answer coincides with a relocation, the Go scan decides.
//
// The insert path's bucket reads (holder, rival, link's free-slot search,
// unlink) take the same vector compare (bucketMatch, and bucketMatch2 for
// a tuple's two buckets in one call): a mask of the slots
// whose tag matches, or which are free, each then loaded again, or taken
// by CAS, one by one. A slot that changed since the vector read fails
// that second look, as it would have failed a scalar scan that reached it
// later. rival's answer rests on more: that of two inserters racing with
// the same tuple, at least one sees the other's slot. Each publishes its
// slot with a CAS before it looks, and on amd64 a CAS is a locked
// instruction, which no later load, vector loads included, may pass
// (x86-TSO); so the two CASes are ordered, and the inserter whose CAS came
// second reads the first one's slot. That same check after publishing is
// what lets InsertRetry (the port allocator's later tries) skip the look
// for the original tuple before publishing: a holder that appeared since
// the first try is found there as a racing inserter would be. Under the
// race detector
// the scalar scan runs: the scan's atomic loads are the happens-before
// edges between an insert and a lookup that the detector must see.
//
// # Implementations
//
// The vector code (ImplAVX2) and the Go code (ImplGo) give the same
// answers; each vector routine has a Go twin it is tested against. Which
// one runs is the process's choice (SetImpl; ImplAuto by default): auto
// takes the vector code only on the CPUs it was measured faster on, AMD's
// Zen cores, and the Go code elsewhere, Intel included. The hash pass and
// the prefetches are baseline amd64 code that both take; a purego build
// compiles no assembly at all. The vector routines keep the upper halves
// of the Y registers clean around every legacy-SSE instruction a Go
// program runs: VEX encodings only, and VZEROUPPER on every way out
// (TestVectorUpperState checks the test binary's code).
//
// # Relocation
//
// A relocation moves entry w from its slot s in a full bucket to a free
// slot of w's other bucket: a CAS 0 → w there (the copy), then an atomic
// increment of the table's relocation counter, then a CAS w → v on s,
// which gives s to the inserter's new entry v. The entry is in the index
// throughout, twice for a moment. But a scan that reads a tuple's two
// buckets one after the other can miss it: it reads the copy's bucket
// before the copy lands and the old bucket after s changed. So every
// scan that must not miss — lookups, batched or not, the insert's rival
// checks, unlink — reads the counter before and after, and when it moved
// and the scan found nothing, scans again (the insert's holder checks
// before publishing may miss: the rival checks after catch what they
// missed, as they catch a racing inserter; the lookups count it
// as search_restart, as Linux counts lookups restarted while entries
// moved between its hash chains; and a reply tuple's holder found before
// publishing whose original tuple is the new connection's own is that
// connection, its original entry missed so: the insert answers Exists,
// not ReplyClash). With sequentially consistent atomics
// the argument is a seqlock's: if the scan read s after the CAS on s, its
// second read of the counter follows the increment, which preceded that
// CAS; if its first read already saw the increment, the copy preceded it,
// and the scan reads the copy. Relocations are rare enough that the
// counter's cache line is, in effect, read-only, and a restart costs
// nothing in practice; a scan can only restart forever if relocations
// never stop.
//
// If w leaves s between the copy and the CAS (its killer unlinked it),
// the CAS fails and the mover takes its copy back (CAS w → 0). The
// killer's unlink removes the one copy of w it finds, and it finds one:
// it scans again while the counter moves. If that was the original, the
// mover's CAS fails and it takes its copy back; if it was the mover's
// copy, the mover's CAS then replaces the original. Either way none is
// left. That takes one mover at a time: with two copying one entry, the
// killer could remove the second one's copy, the first one's CAS succeed
// and its copy stay. So a relocation holds a flag for its few CASes, and
// an insert that finds another relocation under way fails (IndexFull,
// counted insert_failed) rather than wait: two at once, each about one
// insert in 400 million, do not happen in practice, and no core ever
// blocks on another. An entry whose record is dying is not moved, nor
// one that could stand for either tuple of its record (both tuples in
// that bucket under one tag), as unlink would then look in the wrong
// bucket for one of them. A mover reads the entry's record to find its
// other bucket from inside its critical section, having just loaded the
// slot, so the record cannot be reused meanwhile, as for a lookup.
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
// # Life of a record
//
// An insert takes a record from one of its core's chunks (from the
// chunk's free list, or its never-used tail; failing both, a chunk from
// the reserve), counts it against the limit, writes it, then publishes its original and reply
// tuples by CAS into empty slots. It then looks for a rival: another
// record, not dying, holding either tuple. All Go atomics are sequentially
// consistent, so of two cores inserting the same tuple at once at least
// one sees the other; whoever sees a rival withdraws (unlinks and retires
// its record) and reports Exists or ReplyClash. Two can both withdraw —
// then both count insert_failed and the next packet retries — but two can
// never both win. Only then does the insert set the confirmed bit; a
// lookup ignores records without it.
//
// A record leaves in one of three ways — it expires, it is deleted (by the
// control plane or a packet path), or it is evicted to make room — and each
// is the same kill: a CAS that sets the dying bit. The core whose CAS
// succeeds unlinks both slots and decrements the count; a lookup ignores a
// dying record from the moment the bit is set. Expiry needs no kill to take
// effect: a lookup compares the last-seen time with the state's timeout
// and treats an expired record as absent even before anyone sweeps it.
//
// The owner's sweep (Core.Sweep, a bounded number of records per call, so
// no core ever stalls) walks its chunks from where it last stopped: it kills
// what has expired, and retires what is dying — puts it in limbo, tagged
// with the global epoch — and reports it (Gone) so the caller can give back
// its NAT port. When the owner itself kills one of its records (a delete
// on its packet path, an expired connection met by an insert, an early
// drop of its own), it retires the record at once and queues the report
// for its next sweep, so churn does not wait for the cursor to come round.
// Every confirmed connection is reported exactly once, by its owner,
// whoever killed it.
//
// # Shares and the common reserve
//
// A core's share is the chunks it holds, not a fixed slice of the array,
// so one core may own every record: the table admits up to Max whatever
// the RSS spread, all connections on one core included. The reserve is a
// lock-free stack of the chunks no core holds (a Treiber stack; its head
// word carries a version bumped at every push and pop, so a pop that read
// a stale next link fails its CAS: no ABA). A core pops a chunk when none
// of its own has a free record, once every 63 allocations at most; no
// core waits for another. Within its chunks a core keeps, per chunk, a
// free list and a count of records in use, and a list of the chunks with
// a free record, all written by the owner alone, in the tuples of the
// chunk's first record: a core writes its bookkeeping in its own chunks'
// memory, never on a cache line another core's bookkeeping shares (that
// record never holds a connection: no slot names it, its status stays 0,
// so no walk reads its tuples). When a release leaves a chunk with no
// record in use (every record free and past its grace period), the owner
// pushes it back, unless it is the one chunk it has
// free records in (an idle core keeps one chunk, 64 records). The next
// owner's plain writes to the chunk's bookkeeping and records follow the
// CAS that took it, which follows the CAS that gave it back: the pool's
// atomics order the hand-over, as the epochs order a record's reuse. The
// bookkeeping costs about 1% of the instructions of an insert and delete
// (callgrind, BenchmarkInsertDelete and BenchmarkChurnAtCapacity, from a
// thousand connections to a million).
//
// Ownership is per chunk (one atomic word, read by Table.Owner, the
// eviction walk and List), and a chunk changes hands only when no record
// in it is in use, so a connection's owner never changes while it lives:
// the owner sweeps it, retires it and gives back its port.
//
// An insert takes its record before it counts the connection, so at the
// limit it never evicts a connection (makeRoom) and then fails for want
// of a record. It fails for want of one (NoRecord, counted drop) only
// when the reserve is empty and its core has no free record: the records
// not live — in limbo, killed but not yet swept, free in a chunk another
// core holds — then fill the Cores·Limbo spare records. A core whose
// limbo is full (the grace period held up by a stalled participant) takes
// no chunk from the reserve, so its dead records pile up in its own
// chunks, not in the others' way.
//
// # Reclamation: epochs
//
// A record in limbo has been unlinked, but a core that loaded its slot a
// moment earlier may still be reading it. It may be reused only after
// every such reader is done. xnat uses epochs (after Fraser's epoch-based
// reclamation, in the quiescent-state style of RCU): every participant —
// each worker core, and one more for the control plane — brackets its
// table accesses with Enter and Exit. Enter reads the global epoch and
// announces it in the participant's own cache line; Exit announces "none".
// Workers enter once per batch, so announcements cost two stores a batch,
// nothing per packet.
//
// The global epoch advances from g to g+1 only when every participant
// inside a critical section has announced g (Core.Exit tries, whenever its
// limbo has records waiting). A record retired at epoch r is freed once the
// global epoch reaches r+2. Why that is enough: a reader can reach the
// record only through a slot it loaded before the unlink, so inside a
// critical section it entered before the unlink, announcing an epoch e ≤ r.
// While it stays inside, the epoch cannot pass e+1 ≤ r+1; so by the time it
// reaches r+2 the reader has left. The announcement is stored before the
// reader loads any slot and the retirement epoch is read after the unlink;
// with sequentially consistent atomics that ordering is all the argument
// needs. The same chain of atomics gives the race detector its
// happens-before edges: the reader's plain reads of the tuples precede its
// Exit store, which the advancing core loads, before the owner rewrites
// the record.
//
// A participant must not block inside a critical section: while it is
// there, no record retired after it entered can be freed. If that happens
// anyway (a preempted goroutine, a stalled control-plane walk), limbo fills,
// the owner's sweep pauses, and new connections on that core are refused
// and counted as drop (result NoRecord) once its chunks are used up, until
// the participant exits;
// nothing is lost and nothing is reused early. The control plane's walks
// (List, DeleteMatching, Flush) therefore work in short critical sections
// of a few hundred records.
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
package flowtable
