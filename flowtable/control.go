package flowtable

import "time"

// FlowInfo is a copy of one connection, for the control plane.
type FlowInfo struct {
	Orig, Reply Tuple
	Status      uint32 // state and flags
	Mark, Aux   uint32
	// Expires is the time left before the connection times out, with the
	// timeouts in force now.
	Expires  time.Duration
	Owner    int
	Counters [2]Counter // per direction, when accounting is on
}

// State returns the connection's state.
func (fi *FlowInfo) State() State { return StatusState(fi.Status) }

// Assured reports the ASSURED flag.
func (fi *FlowInfo) Assured() bool { return fi.Status&FlagAssured != 0 }

// Unreplied reports whether no reply has been seen ([UNREPLIED]).
func (fi *FlowInfo) Unreplied() bool { return fi.Status&FlagSeenReply == 0 }

// ctl runs fn inside the control plane's critical section.
func (t *Table) ctl(fn func(c *Core)) {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	c := t.ctlCore
	c.Enter()
	defer c.Exit()
	fn(c)
}

func (t *Table) info(idx uint32, now Time) FlowInfo {
	f := &t.recs[idx]
	s := f.status.Load()
	fi := FlowInfo{
		Orig: f.orig, Reply: f.reply, Status: s,
		Mark: f.mark.Load(), Aux: f.aux.Load(),
		Owner: t.owner(idx),
	}
	to := Time(t.timeouts[timeoutIndex(s)].Load())
	if d, ok := since(now, Time(f.last.Load())); !ok {
		fi.Expires = to.Duration()
	} else if d < to {
		fi.Expires = (to - d).Duration()
	}
	fi.Counters = t.Counters(makeRef(idx, DirOrig))
	return fi
}

// Get returns the live connection a tuple belongs to, and the direction
// the tuple is.
func (t *Table) Get(k Tuple) (fi FlowInfo, d Dir, ok bool) {
	now := t.Now()
	t.ctl(func(c *Core) {
		if r := t.lookup(&k, now, &c.st[stSearchRestart]); r != 0 {
			fi, d, ok = t.info(r.idx(), now), r.Dir(), true
		}
	})
	return
}

// List copies live connections into out, starting at position cursor (0
// for the first call), and returns how many it copied and the cursor for
// the next call, or -1 when the walk is done. Each call is one short
// critical section, so a walk over millions of connections never holds
// back reclamation for long; connections inserted or removed during a
// walk may or may not be seen.
func (t *Table) List(cursor int, out []FlowInfo) (n, next int) {
	now := t.Now()
	t.ctl(func(c *Core) {
		next = -1
		for i := cursor; i < len(t.recs); i++ {
			if n == len(out) {
				next = i
				return
			}
			// Skip the chunks in the common reserve: all their records
			// are free.
			if t.owner(uint32(i)) < 0 {
				i |= chunkSize - 1
				continue
			}
			if t.liveAt(&t.recs[i], now) {
				out[n] = t.info(uint32(i), now)
				n++
			}
		}
	})
	return n, next
}

// Delete kills the live connection a tuple (either direction) belongs to.
// It reports whether there was one.
func (t *Table) Delete(k Tuple) (deleted bool) {
	now := t.Now()
	t.ctl(func(c *Core) {
		if r := t.lookup(&k, now, &c.st[stSearchRestart]); r != 0 {
			deleted = c.Kill(r)
		}
	})
	return
}

// DeleteMatching kills every live connection for which match returns
// true, and returns how many it killed. It walks the table in short
// critical sections like List.
func (t *Table) DeleteMatching(match func(*FlowInfo) bool) int {
	var buf [256]FlowInfo
	killed := 0
	for cursor := 0; cursor >= 0; {
		var n int
		n, cursor = t.List(cursor, buf[:])
		for i := range buf[:n] {
			if match(&buf[i]) && t.Delete(buf[i].Orig) {
				killed++
			}
		}
	}
	return killed
}

// Flush kills every connection (conntrack -F) and returns how many.
func (t *Table) Flush() int {
	return t.DeleteMatching(func(*FlowInfo) bool { return true })
}

// CoreStats returns every worker core's published counters: what
// `conntrack -S` shows per CPU.
func (t *Table) CoreStats() []Stats {
	s := make([]Stats, len(t.cores))
	for i, c := range t.cores {
		s[i] = c.Stats()
	}
	return s
}

// Stats returns every worker core's published counters, then the control
// plane's (its deletes).
func (t *Table) Stats() []Stats {
	s := make([]Stats, 0, len(t.cores)+1)
	for _, c := range t.cores {
		s = append(s, c.Stats())
	}
	return append(s, t.ctlCore.Stats())
}

// TotalStats sums Stats.
func (t *Table) TotalStats() Stats {
	var sum Stats
	for _, s := range t.Stats() {
		sum.Add(s)
	}
	return sum
}

// Buckets returns the number of index buckets (nf_conntrack_buckets).
func (t *Table) Buckets() int { return int(t.nb) }

// Relocations returns how many index entries inserts have moved to their
// other bucket to make room (both of a new tuple's buckets were full).
func (t *Table) Relocations() uint64 { return t.relocs.Load() }

// Acct reports whether per-connection counters are kept (nf_conntrack_acct).
func (t *Table) Acct() bool { return t.acct != nil }
