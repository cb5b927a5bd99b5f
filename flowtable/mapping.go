package flowtable

// A record may stand for something shared by many connections rather than
// one connection: a full-cone NAT mapping (dataplane's FULLCONENAT) is a
// record of a table of its own whose original tuple is the inside
// endpoint and whose reply tuple the external one. Such a record counts
// its users in the caller bits of its status word (FlagUserMask), changed
// by CAS from any core, and has two states: one whose timeout never runs
// out while it has users, and one whose timeout, counted from the moment
// its last user left, ends it.

// MaxUsers is the most users a shared record counts.
const MaxUsers = FlagUserMask >> FlagUserShift

// Users returns how many users a shared record has.
func (f *Flow) Users() uint32 { return f.status.Load() & FlagUserMask >> FlagUserShift }

// AddUser counts one more user of a shared record found by a lookup, and
// puts it in state held, touched at now. It reports false, changing
// nothing, when the record is dying or at MaxUsers: the caller then acts
// as if the lookup had found nothing. Once AddUser has succeeded the
// record cannot expire until its users are gone: an owner's sweep kills a
// record only from the very status word it found expired (Sweep), and
// that word is no longer there.
func (f *Flow) AddUser(now Time, held State) bool {
	for {
		s := f.status.Load()
		if s&(flagConfirmed|flagDying) != flagConfirmed || s&FlagUserMask == FlagUserMask {
			return false
		}
		f.Touch(now)
		if f.status.CompareAndSwap(s, WithState(s+1<<FlagUserShift, held)) {
			return true
		}
	}
}

// DropUser counts one user of a shared record less. When it was the last,
// the record is touched at now and goes to state idle, whose timeout runs
// from then. It reports the users left (0 for a record without users).
func (f *Flow) DropUser(now Time, idle State) uint32 {
	for {
		s := f.status.Load()
		n := s & FlagUserMask >> FlagUserShift
		if n == 0 {
			return 0
		}
		ns := s - 1<<FlagUserShift
		if n == 1 {
			f.Touch(now)
			ns = WithState(ns, idle)
		}
		if f.status.CompareAndSwap(s, ns) {
			return n - 1
		}
	}
}
