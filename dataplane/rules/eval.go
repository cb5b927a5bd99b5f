package rules

// Filter evaluates the filter table's built-in chain of hook h for one
// packet, in iptables order (rules, jumps, gotos, RETURN, non-terminal
// targets, the policy). MARK and CONNMARK change p.Mark / p.CtMark. It
// runs on core core at time now (nanoseconds, any monotonic origin), and
// allocates nothing. A hook without a filter chain (PREROUTING,
// POSTROUTING) accepts.
func (rs *Ruleset) Filter(h Hook, p *Packet, core int, now int64) Verdict {
	return rs.filter(h, p, core, now, true)
}

// FilterLinear is Filter evaluated by scanning every rule in order, without
// the classifiers: the correctness oracle and benchmark peer. Verdicts,
// counters, limits and logs are the same as Filter's.
func (rs *Ruleset) FilterLinear(h Hook, p *Packet, core int, now int64) Verdict {
	return rs.filter(h, p, core, now, false)
}

func (rs *Ruleset) filter(h Hook, p *Packet, core int, now int64, fast bool) Verdict {
	if h >= NumHooks {
		return Verdict{}
	}
	ci := rs.hooks[Filter][h]
	if ci < 0 {
		return Verdict{}
	}
	kind, ri := rs.run(ci, p, core, now, fast)
	switch kind {
	case TargetDrop:
		return Verdict{Action: Drop}
	case TargetReject:
		return Verdict{Action: Reject, Reject: rs.rules[ri].t.reject}
	}
	return Verdict{}
}

// NAT evaluates the nat table's built-in chain of hook h for the first
// packet of a connection (PREROUTING decides DNAT, POSTROUTING SNAT or
// MASQUERADE; nat INPUT and OUTPUT have no effect on forwarded traffic).
// The dataplane stores the decision with the connection and applies it to
// every later packet in both directions. Allocates nothing.
func (rs *Ruleset) NAT(h Hook, p *Packet, core int, now int64) NATDecision {
	return rs.natEval(h, p, core, now, true)
}

// NATLinear is NAT by a linear scan (see FilterLinear).
func (rs *Ruleset) NATLinear(h Hook, p *Packet, core int, now int64) NATDecision {
	return rs.natEval(h, p, core, now, false)
}

func (rs *Ruleset) natEval(h Hook, p *Packet, core int, now int64, fast bool) NATDecision {
	if h >= NumHooks {
		return NATDecision{}
	}
	ci := rs.hooks[NAT][h]
	if ci < 0 {
		return NATDecision{}
	}
	kind, ri := rs.run(ci, p, core, now, fast)
	if ri < 0 {
		return NATDecision{}
	}
	r := &rs.rules[ri]
	switch kind {
	case TargetSNAT, TargetDNAT, TargetMasquerade, TargetFullCone:
		t := &rs.nat[r.t.nat]
		return NATDecision{Kind: t.Kind, Target: t.ID, Range: t.Range, RuleID: r.id}
	case TargetAccept:
		return NATDecision{Kind: NATAccept, RuleID: r.id}
	}
	return NATDecision{}
}

type frame struct {
	chain int32
	pos   int32
	nact  int32
	offs  [numFields]int32
}

// run traverses from built-in chain start and returns the terminal target
// kind and the rule index, or the policy (TargetAccept/TargetDrop) and -1.
func (rs *Ruleset) run(start int32, p *Packet, core int, now int64, fast bool) (TargetKind, int32) {
	cs := rs.cores[core]
	ch := &rs.chains[start]
	if ch.n == 0 { // no rules: the policy alone, without the classifier
		return rs.policy(start, p, cs)
	}
	stack := &cs.stack // per core: no per-call zeroing of the return stack
	sp := 0
	var cur frame
	cur.chain = start
	if fast && ch.cls != nil {
		cur.nact = ch.cls.lookup(p, &cur.offs)
	}
	for {
		j := int32(-1)
		if fast && ch.cls != nil {
			j = ch.cls.next(&cur.offs, cur.nact, cur.pos)
		} else if cur.pos < ch.n {
			j = cur.pos
		}
		if j < 0 || j >= ch.n {
			if sp == 0 {
				return rs.policy(start, p, cs)
			}
			sp--
			cur = stack[sp]
			ch = &rs.chains[cur.chain]
			continue
		}
		cur.pos = j + 1
		ri := ch.first + j
		r := &rs.rules[ri]
		if !rs.match(r, p, now) {
			continue
		}
		cs.add(ri, uint64(p.Length))
		t := &r.t
		switch t.kind {
		case TargetNone:
		case TargetLog:
			rs.logRings.record(core, now, r.id, &rs.logs[t.log], &rs.chains[start], p)
		case TargetMark:
			p.Mark = (p.Mark &^ t.mask) ^ t.val
		case TargetConnmark:
			switch t.cmode {
			case ConnmarkSet:
				p.CtMark = (p.CtMark &^ t.mask) ^ t.val
			case ConnmarkSave:
				p.CtMark = (p.CtMark &^ t.ctmask) ^ (p.Mark & t.nfmask)
			case ConnmarkRestore:
				p.Mark = (p.Mark &^ t.nfmask) ^ (p.CtMark & t.ctmask)
			}
		case TargetReturn:
			if sp == 0 {
				return rs.policy(start, p, cs)
			}
			sp--
			cur = stack[sp]
			ch = &rs.chains[cur.chain]
		case TargetJump, TargetGoto:
			if t.kind == TargetJump {
				stack[sp] = cur
				sp++
			}
			cur = frame{chain: t.chain}
			ch = &rs.chains[t.chain]
			if fast && ch.cls != nil {
				cur.nact = ch.cls.lookup(p, &cur.offs)
			}
		default:
			return t.kind, ri
		}
	}
}

func (rs *Ruleset) policy(start int32, p *Packet, cs *coreState) (TargetKind, int32) {
	cs.add(int32(len(rs.rules))+start, uint64(p.Length))
	if rs.chains[start].policy == PolicyDrop {
		return TargetDrop, -1
	}
	return TargetAccept, -1
}

// match reports whether the packet matches every condition of the rule,
// evaluated in iptables order: the IP header part, then the extension
// matches in the order given (so a limit consumes a token only when the
// conditions before it matched).
func (rs *Ruleset) match(r *crule, p *Packet, now int64) bool {
	f := r.flags
	if f == 0 && r.m0 == r.m1 {
		return true
	}
	if f&fNever != 0 {
		return false
	}
	if f&fSrc != 0 && (p.Src&r.srcMask == r.src) == (f&fSrcInv != 0) {
		return false
	}
	if f&fDst != 0 && (p.Dst&r.dstMask == r.dst) == (f&fDstInv != 0) {
		return false
	}
	if f&fIn != 0 && rs.ifsets[r.in].has(p.InIf) == (f&fInInv != 0) {
		return false
	}
	if f&fOut != 0 && rs.ifsets[r.out].has(p.OutIf) == (f&fOutInv != 0) {
		return false
	}
	if f&fProto != 0 && (p.Proto == r.proto) == (f&fProtoInv != 0) {
		return false
	}
	if f&fFrag != 0 && !p.Fragment {
		return false
	}
	if f&fNotFrag != 0 && p.Fragment {
		return false
	}
	for i := r.m0; i < r.m1; i++ {
		if !rs.matchExt(&rs.cm[i], p, now) {
			return false
		}
	}
	return true
}

func inRange(v, lo, hi uint32) bool { return v >= lo && v <= hi }

func (rs *Ruleset) matchExt(m *cmatch, p *Packet, now int64) bool {
	switch m.kind {
	case MatchTCP, MatchUDP:
		if p.Fragment {
			return false
		}
		if inRange(uint32(p.SrcPort), m.a0, m.a1) == m.inv1 {
			return false
		}
		if inRange(uint32(p.DstPort), m.b0, m.b1) == m.inv2 {
			return false
		}
		if (m.fmask != 0 || m.inv3) && (p.TCPFlags&m.fmask == m.fcmp) == m.inv3 {
			return false
		}
		return true
	case MatchICMP:
		if p.Fragment {
			return false
		}
		ok := m.icmpType == 0xFF || (p.ICMPType == m.icmpType && p.ICMPCode >= m.cmin && p.ICMPCode <= m.cmax)
		return ok != m.inv
	case MatchMultiport:
		if p.Fragment {
			return false
		}
		ok := false
		for i := m.p0; i < m.pn; i++ {
			pr := rs.mports[i]
			if (m.multi != MultiDest && p.SrcPort >= pr.Lo && p.SrcPort <= pr.Hi) ||
				(m.multi != MultiSource && p.DstPort >= pr.Lo && p.DstPort <= pr.Hi) {
				ok = true
				break
			}
		}
		return ok != m.inv
	case MatchIPRange:
		if m.hasA && inRange(p.Src, m.a0, m.a1) == m.inv1 {
			return false
		}
		if m.hasB && inRange(p.Dst, m.b0, m.b1) == m.inv2 {
			return false
		}
		return true
	case MatchLength:
		return inRange(uint32(p.Length), m.a0, m.a1) != m.inv
	case MatchLimit:
		return rs.limiters[m.limit].allow(now)
	case MatchMAC:
		return (p.SrcMAC == m.mac) != m.inv
	case MatchMark:
		return (p.Mark&m.a1 == m.a0) != m.inv
	case MatchState, MatchConntrack:
		return (p.CtState&m.states != 0) != m.inv
	}
	return true
}

// allow is the token bucket iptables documents for -m limit: a burst of
// LimitBurst packets at once, then one per average period. It is kept as
// a theoretical arrival time in one int64, updated by CAS, so all cores
// share it without a lock: a packet at now passes when max(tat, now) - now
// <= (burst-1)*interval, and then moves tat one interval on.
func (l *limiter) allow(now int64) bool {
	for {
		old := l.tat.Load()
		t := old
		if t < now {
			t = now
		}
		if t-now > l.tau {
			return false
		}
		if l.tat.CompareAndSwap(old, t+l.interval) {
			return true
		}
	}
}

// PolicyOnly reports whether the filter table's built-in chain of hook h
// has no rules, so that every packet meets its policy; then it also
// returns the policy's verdict. A hook without a filter chain accepts. The
// dataplane uses it to skip building the packet's rule view on the
// established path, and counts the policy with CountPolicy.
func (rs *Ruleset) PolicyOnly(h Hook) (Verdict, bool) {
	if h >= NumHooks {
		return Verdict{}, true
	}
	ci := rs.hooks[Filter][h]
	if ci < 0 {
		return Verdict{}, true
	}
	ch := &rs.chains[ci]
	if ch.n != 0 {
		return Verdict{}, false
	}
	if ch.policy == PolicyDrop {
		return Verdict{Action: Drop}, true
	}
	return Verdict{}, true
}

// CountPolicy counts one packet of length bytes (IP total length) on the
// policy of the filter table's built-in chain of hook h, as Filter would
// have. Call it only when PolicyOnly(h) is true.
func (rs *Ruleset) CountPolicy(h Hook, core int, length uint16) {
	rs.CountPolicyN(h, core, 1, uint64(length))
}

// CountPolicyN is CountPolicy for pkts packets of bytes bytes in all: a
// batch's packets counted at once.
func (rs *Ruleset) CountPolicyN(h Hook, core int, pkts, bytes uint64) {
	if h >= NumHooks || pkts == 0 {
		return
	}
	ci := rs.hooks[Filter][h]
	if ci < 0 {
		return
	}
	rs.cores[core].addN(int32(len(rs.rules))+ci, pkts, bytes)
}
