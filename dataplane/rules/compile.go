package rules

import (
	"fmt"
	"math"
	"strings"
	"sync/atomic"
)

// Options tune Compile.
type Options struct {
	// Cores is the number of dataplane cores that evaluate concurrently,
	// each passing its own core index 0..Cores-1. Default 1.
	Cores int
	// Prev is the rule set being replaced. Counters of rules with the same
	// ID (and of built-in chain policies) carry over, and NAT targets with
	// the same kind and range keep their ID. Call Settle on the new rule
	// set once no core uses Prev any more, to add what Prev counted after
	// Compile read it.
	Prev *Ruleset
	// Log is the set of LOG rings to record into; nil makes a new one
	// with default capacity and rate. Pass the previous rule set's
	// LogRings() to keep one drain point across replacements.
	Log *LogRings
	// ClassifyMin is the number of rules from which a chain gets a
	// classifier instead of a linear scan. 0 means DefaultClassifyMin;
	// negative disables classifiers.
	ClassifyMin int
}

// DefaultClassifyMin is the chain size from which Compile builds a
// classifier.
const DefaultClassifyMin = 8

// rule header flags
const (
	fSrc = 1 << iota
	fSrcInv
	fDst
	fDstInv
	fProto
	fProtoInv
	fIn
	fInInv
	fOut
	fOutInv
	fFrag
	fNotFrag
	fNever
)

type ifset [MaxIfaces / 64]uint64

func (s *ifset) has(id uint16) bool {
	return id < MaxIfaces && s[id>>6]&(1<<(id&63)) != 0
}

type cmatch struct {
	kind                  MatchKind
	inv, inv1, inv2, inv3 bool
	hasA, hasB            bool
	multi                 uint8
	fmask, fcmp           uint8
	icmpType, cmin, cmax  uint8
	states                CtState
	mac                   [6]byte
	a0, a1, b0, b1        uint32
	p0, pn                int32 // multiport pool
	limit                 int32
}

type ctarget struct {
	kind   TargetKind
	reject RejectType
	cmode  uint8
	chain  int32
	val    uint32
	mask   uint32
	nfmask uint32
	ctmask uint32
	nat    int32 // index into natTargets
	log    int32 // index into logs
}

type crule struct {
	src, srcMask uint32
	dst, dstMask uint32
	flags        uint32
	proto        uint8
	in, out      int32 // index into ifsets
	m0, m1       int32
	t            ctarget
	id           uint64
}

type cchain struct {
	first, n int32
	table    TableID
	hook     Hook
	builtin  bool
	policy   Policy
	name     string
	cls      *classifier
}

type logParam struct {
	prefix [MaxLogPrefix]byte
	plen   uint8
	level  uint8
}

// NATTarget is one distinct NAT target of a rule set.
type NATTarget struct {
	ID    uint16
	Kind  NATKind
	Range NATRange
}

type limiter struct {
	tat      atomic.Int64
	interval int64
	tau      int64
	_        [40]byte
}

type ruleLoc struct {
	table TableID
	chain int32 // index in the model table
	index int32
}

// Ruleset is a compiled, immutable rule set. The dataplane holds it in an
// atomic.Pointer and replaces it between batches. All methods are safe
// for concurrent use under the per-core contract: Filter, NAT, Flush with
// a given core index are called by one goroutine at a time.
type Ruleset struct {
	model    *Model
	ifaces   []string
	chains   []cchain
	rules    []crule
	cm       []cmatch
	mports   []PortRange
	ifsets   []ifset
	logs     []logParam
	nat      []NATTarget
	limiters []limiter
	hooks    [NumTables][NumHooks]int32
	byName   map[string]int32 // "table/chain" → chain index
	locs     []ruleLoc
	modelCh  []int32 // chain index → index in its model table

	cnt
	logRings *LogRings
}

// Compile validates m and compiles it for the interfaces ifaces (names
// indexed by interface ID). A -i/-o name absent from ifaces matches no
// interface, as iptables does for absent interfaces; recompile when the
// interfaces change.
func Compile(m *Model, ifaces []string, opt Options) (*Ruleset, error) {
	if err := Validate(m); err != nil {
		return nil, err
	}
	if len(ifaces) > MaxIfaces {
		return nil, fmt.Errorf("%d interfaces, at most %d: %w", len(ifaces), MaxIfaces, ErrTooMany)
	}
	if opt.Cores <= 0 {
		opt.Cores = 1
	}
	if opt.ClassifyMin == 0 {
		opt.ClassifyMin = DefaultClassifyMin
	}
	rs := &Ruleset{model: m.Clone(), ifaces: append([]string(nil), ifaces...), byName: map[string]int32{}}
	for t := range rs.hooks {
		for h := range rs.hooks[t] {
			rs.hooks[t][h] = -1
		}
	}
	// Chains first, so jumps can be resolved.
	for t := TableID(0); t < NumTables; t++ {
		for i, c := range rs.model.Tables[t].Chains {
			ci := int32(len(rs.chains))
			rs.chains = append(rs.chains, cchain{table: t, hook: c.Hook, builtin: c.Builtin, policy: c.Policy, name: c.Name})
			rs.modelCh = append(rs.modelCh, int32(i))
			rs.byName[t.String()+"/"+c.Name] = ci
			if c.Builtin {
				rs.hooks[t][c.Hook] = ci
			}
		}
	}
	natIDs := newNATIDs(opt.Prev)
	ci := int32(0)
	for t := TableID(0); t < NumTables; t++ {
		for i := range rs.model.Tables[t].Chains {
			c := &rs.model.Tables[t].Chains[i]
			ch := &rs.chains[ci]
			ch.first = int32(len(rs.rules))
			ch.n = int32(len(c.Rules))
			for j := range c.Rules {
				cr, err := rs.compileRule(t, &c.Rules[j], natIDs)
				if err != nil {
					return nil, &RuleError{t, c.Name, j, err}
				}
				rs.rules = append(rs.rules, cr)
				rs.locs = append(rs.locs, ruleLoc{t, int32(i), int32(j)})
			}
			ci++
		}
	}
	for i := range rs.chains {
		ch := &rs.chains[i]
		if opt.ClassifyMin > 0 && int(ch.n) >= opt.ClassifyMin {
			ch.cls = buildClassifier(rs, ch)
		}
	}
	rs.initCounters(opt.Cores, opt.Prev)
	rs.logRings = opt.Log
	if rs.logRings == nil {
		rs.logRings = NewLogRings(opt.Cores, DefaultLogCapacity, DefaultLogRate, DefaultLogBurst)
	}
	if len(rs.logRings.rings) < opt.Cores {
		return nil, fmt.Errorf("LOG rings for %d cores, rule set for %d: %w", len(rs.logRings.rings), opt.Cores, ErrInvalid)
	}
	return rs, nil
}

// ifaceMatches reports whether an -i/-o pattern matches an interface name.
func ifaceMatches(pattern, name string) bool {
	if strings.HasSuffix(pattern, "+") {
		return strings.HasPrefix(name, pattern[:len(pattern)-1])
	}
	return pattern == name
}

func (rs *Ruleset) ifaceSet(pattern string) int32 {
	var s ifset
	for id, n := range rs.ifaces {
		if ifaceMatches(pattern, n) {
			s[id>>6] |= 1 << (id & 63)
		}
	}
	rs.ifsets = append(rs.ifsets, s)
	return int32(len(rs.ifsets) - 1)
}

func (rs *Ruleset) compileRule(t TableID, r *Rule, natIDs *natIDs) (crule, error) {
	cr := crule{id: r.ID, in: -1, out: -1}
	if r.Src.Mask != 0 || r.Src.Invert {
		cr.flags |= fSrc
		cr.srcMask = r.Src.Mask
		cr.src = r.Src.IP & r.Src.Mask
		if r.Src.Invert {
			cr.flags |= fSrcInv
		}
	}
	if r.Dst.Mask != 0 || r.Dst.Invert {
		cr.flags |= fDst
		cr.dstMask = r.Dst.Mask
		cr.dst = r.Dst.IP & r.Dst.Mask
		if r.Dst.Invert {
			cr.flags |= fDstInv
		}
	}
	if r.Proto != 0 {
		cr.flags |= fProto
		cr.proto = r.Proto
		if r.ProtoInvert {
			cr.flags |= fProtoInv
		}
	}
	for k, ifc := range []Iface{r.InIface, r.OutIface} {
		if ifc.Name == "" {
			continue
		}
		if ifc.Name == "+" {
			if ifc.Invert {
				cr.flags |= fNever
			}
			continue
		}
		set := rs.ifaceSet(ifc.Name)
		if k == 0 {
			cr.flags |= fIn
			cr.in = set
			if ifc.Invert {
				cr.flags |= fInInv
			}
		} else {
			cr.flags |= fOut
			cr.out = set
			if ifc.Invert {
				cr.flags |= fOutInv
			}
		}
	}
	if r.Fragment {
		cr.flags |= fFrag
	}
	if r.FragmentInvert {
		cr.flags |= fNotFrag
	}
	cr.m0 = int32(len(rs.cm))
	for i := range r.Matches {
		m := &r.Matches[i]
		c := cmatch{kind: m.Kind, inv: m.Invert, limit: -1}
		switch m.Kind {
		case MatchTCP, MatchUDP:
			c.a0, c.a1, c.inv1 = uint32(m.SrcPort.Lo), uint32(m.SrcPort.Hi), m.SrcPortInvert
			c.b0, c.b1, c.inv2 = uint32(m.DstPort.Lo), uint32(m.DstPort.Hi), m.DstPortInvert
			c.fmask, c.fcmp, c.inv3 = m.FlagsMask, m.FlagsCmp, m.FlagsInvert
		case MatchICMP:
			c.icmpType, c.cmin, c.cmax = m.ICMPType, m.ICMPCodeMin, m.ICMPCodeMax
		case MatchMultiport:
			c.multi = m.Multi
			c.p0 = int32(len(rs.mports))
			rs.mports = append(rs.mports, m.Ports...)
			c.pn = int32(len(rs.mports))
		case MatchIPRange:
			c.hasA, c.a0, c.a1, c.inv1 = m.SrcRange.Set, m.SrcRange.Lo, m.SrcRange.Hi, m.SrcRange.Invert
			c.hasB, c.b0, c.b1, c.inv2 = m.DstRange.Set, m.DstRange.Lo, m.DstRange.Hi, m.DstRange.Invert
		case MatchLength:
			c.a0, c.a1 = uint32(m.LengthMin), uint32(m.LengthMax)
		case MatchLimit:
			c.limit = int32(len(rs.limiters))
			rs.limiters = append(rs.limiters, limiter{})
			l := &rs.limiters[c.limit]
			l.interval = int64(m.LimitAvg) * (1e9 / LimitScale)
			l.tau = int64(m.LimitBurst-1) * l.interval
			l.tat.Store(math.MinInt64 / 2)
		case MatchMAC:
			c.mac = m.MAC
		case MatchMark:
			c.a0, c.a1 = m.Mark, m.MarkMask
		case MatchState, MatchConntrack:
			c.states = m.States
		case MatchComment:
			continue // matches everything, costs nothing
		}
		rs.cm = append(rs.cm, c)
	}
	cr.m1 = int32(len(rs.cm))
	tg := &r.Target
	ct := ctarget{kind: tg.Kind, chain: -1, nat: -1, log: -1}
	switch tg.Kind {
	case TargetJump, TargetGoto:
		ct.chain = rs.byName[t.String()+"/"+tg.Chain]
	case TargetReject:
		ct.reject = tg.RejectWith
	case TargetLog:
		var lp logParam
		lp.plen = uint8(copy(lp.prefix[:], tg.LogPrefix))
		lp.level = tg.LogLevel
		ct.log = int32(len(rs.logs))
		rs.logs = append(rs.logs, lp)
	case TargetMark:
		ct.val, ct.mask = tg.MarkValue, tg.MarkMask
	case TargetConnmark:
		ct.cmode, ct.val, ct.mask, ct.nfmask, ct.ctmask = tg.ConnmarkMode, tg.MarkValue, tg.MarkMask, tg.NfMask, tg.CtMask
	case TargetSNAT, TargetDNAT, TargetMasquerade, TargetFullCone:
		kind := map[TargetKind]NATKind{TargetSNAT: NATSNAT, TargetDNAT: NATDNAT, TargetMasquerade: NATMasquerade, TargetFullCone: NATFullCone}[tg.Kind]
		id, err := natIDs.get(kind, tg.NAT)
		if err != nil {
			return cr, err
		}
		ct.nat = int32(len(rs.nat))
		rs.nat = append(rs.nat, NATTarget{ID: id, Kind: kind, Range: tg.NAT})
	}
	cr.t = ct
	return cr, nil
}

type natKey struct {
	kind NATKind
	r    NATRange
}

type natIDs struct {
	prev map[natKey]uint16
	used map[uint16]bool
	cur  map[natKey]uint16
	next uint16
}

func newNATIDs(prev *Ruleset) *natIDs {
	n := &natIDs{prev: map[natKey]uint16{}, used: map[uint16]bool{}, cur: map[natKey]uint16{}}
	if prev != nil {
		for _, t := range prev.nat {
			n.prev[natKey{t.Kind, t.Range}] = t.ID
			n.used[t.ID] = true
		}
	}
	return n
}

// get returns the ID of a NAT target: the previous rule set's ID for the
// same target, else the smallest ID neither rule set uses (so an ID is
// never reused by a different target in the very next rule set).
func (n *natIDs) get(kind NATKind, r NATRange) (uint16, error) {
	k := natKey{kind, r}
	if id, ok := n.cur[k]; ok {
		return id, nil
	}
	id, ok := n.prev[k]
	if !ok {
		for n.used[n.next] {
			if n.next == math.MaxUint16 {
				return 0, fmt.Errorf("more than 65535 NAT targets: %w", ErrTooMany)
			}
			n.next++
		}
		id = n.next
	}
	n.used[id] = true
	n.cur[k] = id
	return id, nil
}

// NATTargets lists the rule set's distinct NAT targets by rule order.
func (rs *Ruleset) NATTargets() []NATTarget {
	seen := map[uint16]bool{}
	var out []NATTarget
	for _, t := range rs.nat {
		if !seen[t.ID] {
			seen[t.ID] = true
			out = append(out, t)
		}
	}
	return out
}

// Interfaces returns the interface table the rule set was compiled for.
func (rs *Ruleset) Interfaces() []string { return append([]string(nil), rs.ifaces...) }

// LogRings returns the rings LOG records into.
func (rs *Ruleset) LogRings() *LogRings { return rs.logRings }

// Classified reports whether the named chain is evaluated through a
// classifier (true) or by a linear scan.
func (rs *Ruleset) Classified(t TableID, chain string) bool {
	ci, ok := rs.byName[t.String()+"/"+chain]
	return ok && rs.chains[ci].cls != nil
}
