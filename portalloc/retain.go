package portalloc

// Retain counts one use of an external endpoint this allocator gave out,
// for something other than a connection that keeps it (a full-cone
// mapping, which outlives its connections): while retained, the port is
// held for the XDP program and is not given to an Exclusive allocation.
// It reports false for an endpoint not of this slice, or at the port's
// use limit. Only this core's goroutine may call it.
func (a *Allocator) Retain(proto uint8, addr uint32, port uint16) bool {
	cl := class(proto)
	off, ok := a.offset(uint32(port))
	ai := addr - a.addrLo
	if cl == classNone || !ok || ai >= a.naddrs {
		return false
	}
	if a.uses[cl] == nil {
		return true // sparse: nothing counts ports
	}
	i := uint64(ai)*uint64(a.n) + uint64(off)
	u := &a.uses[cl][i]
	if *u == maxUses {
		return false
	}
	if *u == 0 {
		a.st.inUse.Add(1)
	}
	*u++
	if a.steer != nil {
		a.hold(cl, i, addr, proto, port)
	}
	return true
}

// Unretain gives back a use counted by Retain.
func (a *Allocator) Unretain(proto uint8, addr uint32, port uint16) {
	cl := class(proto)
	off, ok := a.offset(uint32(port))
	ai := addr - a.addrLo
	if cl == classNone || !ok || ai >= a.naddrs || a.uses[cl] == nil {
		return
	}
	i := uint64(ai)*uint64(a.n) + uint64(off)
	u := &a.uses[cl][i]
	if *u == 0 {
		return
	}
	*u--
	if *u == 0 {
		a.st.inUse.Add(-1)
		if a.steer != nil {
			a.unhold(cl, i, addr, proto, port)
		}
	}
}

// AcquireConn counts a connection of src that takes no port from an
// allocator (one joining the full-cone mapping of an endpoint src already
// holds): OK, or PerSourceLimit at xnat.per_source_max, or LimiterFull
// when the limiter has no slot for src. ReleaseConn uncounts it.
func (l *SourceLimiter) AcquireConn(src uint32) Result {
	switch _, why := l.acquire(src); why {
	case limOK:
		return OK
	case limFull:
		return LimiterFull
	}
	return PerSourceLimit
}

// ReleaseConn uncounts a connection AcquireConn counted.
func (l *SourceLimiter) ReleaseConn(src uint32) { l.release(src, false) }
