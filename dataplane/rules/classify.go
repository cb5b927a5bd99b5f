package rules

import (
	"math/bits"
	"sort"
	"unsafe"
)

// The classifier is the per-chain bit-vector search of Lakshman and
// Stiliadis, as bpf-iptables uses it. For each packet field (source and
// destination address, protocol, source and destination port, input and
// output interface) the field's value space is cut into elementary
// intervals at every rule boundary; each interval maps to an equivalence
// class holding a bitmap of the rules that may match a packet with a
// value in it. A packet's candidate rules are the AND of its classes'
// bitmaps; the evaluator walks the set bits in rule order and runs the
// full match on each, so the classifier only ever has to be a superset.
const (
	fldSrc = iota
	fldDst
	fldProto
	fldSport
	fldDport
	fldIn
	fldOut
	numFields
)

type classifier struct {
	words int32
	bits  []uint64 // classes: a summary word, then the words of the rule bitmap

	nact int32
	act  [numFields]uint8 // active fields, in lookup order

	pts [numFields][]uint32 // interval starts for src, dst, sport, dport
	off [numFields][]int32  // bit offset of each interval's (or value's) class
}

type iv struct{ lo, hi uint32 }

// fset is a set of values of one field: all, or a sorted list of disjoint
// intervals.
type fset struct {
	all bool
	ivs []iv
}

var fullSet = fset{all: true}

func (s fset) complement(max uint32) fset {
	if s.all {
		return fset{}
	}
	var out []iv
	next := uint64(0)
	for _, x := range s.ivs {
		if uint64(x.lo) > next {
			out = append(out, iv{uint32(next), x.lo - 1})
		}
		next = uint64(x.hi) + 1
	}
	if next <= uint64(max) {
		out = append(out, iv{uint32(next), max})
	}
	return fset{ivs: out}
}

func (s fset) intersect(o fset) fset {
	if s.all {
		return o
	}
	if o.all {
		return s
	}
	var out []iv
	i, j := 0, 0
	for i < len(s.ivs) && j < len(o.ivs) {
		a, b := s.ivs[i], o.ivs[j]
		lo, hi := max(a.lo, b.lo), min(a.hi, b.hi)
		if lo <= hi {
			out = append(out, iv{lo, hi})
		}
		if a.hi < b.hi {
			i++
		} else {
			j++
		}
	}
	return fset{ivs: out}
}

func unionOf(ivs []iv) fset {
	s := append([]iv(nil), ivs...)
	sort.Slice(s, func(i, j int) bool { return s[i].lo < s[j].lo })
	var out []iv
	for _, x := range s {
		if n := len(out); n > 0 && uint64(x.lo) <= uint64(out[n-1].hi)+1 {
			out[n-1].hi = max(out[n-1].hi, x.hi)
			continue
		}
		out = append(out, x)
	}
	return fset{ivs: out}
}

// ruleSets computes, for one rule, the set of values of each field a
// matching packet may have. Header conditions always count (iptables
// checks them first); extension matches count until the first stateful
// match (limit), because a rule the classifier skips must not have
// consumed a token in iptables either.
func (rs *Ruleset) ruleSets(r *crule) [numFields]fset {
	var s [numFields]fset
	for i := range s {
		s[i] = fullSet
	}
	if r.flags&fNever != 0 {
		for i := range s {
			s[i] = fset{}
		}
		return s
	}
	prefix := func(addr, mask uint32, inv bool) fset {
		x := fset{ivs: []iv{{addr & mask, addr | ^mask}}}
		if inv {
			x = x.complement(0xFFFFFFFF)
		}
		return x
	}
	if r.flags&fSrc != 0 {
		s[fldSrc] = prefix(r.src, r.srcMask, r.flags&fSrcInv != 0)
	}
	if r.flags&fDst != 0 {
		s[fldDst] = prefix(r.dst, r.dstMask, r.flags&fDstInv != 0)
	}
	if r.flags&fProto != 0 {
		x := fset{ivs: []iv{{uint32(r.proto), uint32(r.proto)}}}
		if r.flags&fProtoInv != 0 {
			x = x.complement(255)
		}
		s[fldProto] = x
	}
	for _, fl := range [2]struct {
		set     int32
		on, inv uint32
		field   int
	}{{r.in, fIn, fInInv, fldIn}, {r.out, fOut, fOutInv, fldOut}} {
		if r.flags&fl.on == 0 {
			continue
		}
		set := &rs.ifsets[fl.set]
		var ivs []iv
		for id := uint32(0); id <= MaxIfaces; id++ { // MaxIfaces stands for none/unknown
			if (id < MaxIfaces && set.has(uint16(id))) != (r.flags&fl.inv != 0) {
				ivs = append(ivs, iv{id, id})
			}
		}
		s[fl.field] = unionOf(ivs)
	}
	portSet := func(lo, hi uint32, inv bool) fset {
		x := fset{ivs: []iv{{lo, hi}}}
		if inv {
			x = x.complement(0xFFFF)
		}
		return x
	}
	for i := r.m0; i < r.m1; i++ {
		m := &rs.cm[i]
		switch m.kind {
		case MatchLimit:
			return s
		case MatchTCP, MatchUDP:
			s[fldSport] = s[fldSport].intersect(portSet(m.a0, m.a1, m.inv1))
			s[fldDport] = s[fldDport].intersect(portSet(m.b0, m.b1, m.inv2))
		case MatchMultiport:
			if m.multi == MultiEither {
				continue
			}
			var ivs []iv
			for _, p := range rs.mports[m.p0:m.pn] {
				ivs = append(ivs, iv{uint32(p.Lo), uint32(p.Hi)})
			}
			x := unionOf(ivs)
			if m.inv {
				x = x.complement(0xFFFF)
			}
			f := fldSport
			if m.multi == MultiDest {
				f = fldDport
			}
			s[f] = s[f].intersect(x)
		case MatchIPRange:
			if m.hasA {
				x := fset{ivs: []iv{{m.a0, m.a1}}}
				if m.inv1 {
					x = x.complement(0xFFFFFFFF)
				}
				s[fldSrc] = s[fldSrc].intersect(x)
			}
			if m.hasB {
				x := fset{ivs: []iv{{m.b0, m.b1}}}
				if m.inv2 {
					x = x.complement(0xFFFFFFFF)
				}
				s[fldDst] = s[fldDst].intersect(x)
			}
		}
	}
	return s
}

var fieldMax = [numFields]uint32{0xFFFFFFFF, 0xFFFFFFFF, 255, 0xFFFF, 0xFFFF, MaxIfaces, MaxIfaces}

// discrete fields are looked up by direct index rather than by search.
func discrete(f int) bool { return f == fldProto || f == fldIn || f == fldOut }

func buildClassifier(rs *Ruleset, ch *cchain) *classifier {
	n := int(ch.n)
	words := (n + 63) / 64
	c := &classifier{words: int32(words)}
	sets := make([][numFields]fset, n)
	for j := 0; j < n; j++ {
		sets[j] = rs.ruleSets(&rs.rules[int(ch.first)+j])
	}
	classes := map[string]int32{}
	// A class is stored as a summary word (bit w set when word w of the
	// bitmap is non-zero; all ones when there are more than 64 words)
	// followed by the bitmap's words.
	intern := func(bm []uint64) int32 {
		key := unsafe.String((*byte)(unsafe.Pointer(&bm[0])), len(bm)*8)
		if off, ok := classes[key]; ok {
			return off
		}
		off := int32(len(c.bits))
		sum := ^uint64(0)
		if words <= 64 {
			sum = 0
			for w, x := range bm {
				if x != 0 {
					sum |= 1 << w
				}
			}
		}
		c.bits = append(c.bits, sum)
		c.bits = append(c.bits, bm...)
		classes[string(append([]byte(nil), key...))] = off
		return off
	}
	for f := 0; f < numFields; f++ {
		active := false
		for j := 0; j < n; j++ {
			if !sets[j][f].all {
				active = true
				break
			}
		}
		if !active {
			continue
		}
		c.act[c.nact] = uint8(f)
		c.nact++
		// Interval starts: 0 and every lo and hi+1.
		var pts []uint32
		if discrete(f) {
			for v := uint32(0); v <= fieldMax[f]; v++ {
				pts = append(pts, v)
			}
		} else {
			pts = append(pts, 0)
			for j := 0; j < n; j++ {
				for _, x := range sets[j][f].ivs {
					pts = append(pts, x.lo)
					if x.hi < fieldMax[f] {
						pts = append(pts, x.hi+1)
					}
				}
			}
			sort.Slice(pts, func(a, b int) bool { return pts[a] < pts[b] })
			k := 0
			for _, p := range pts {
				if k == 0 || pts[k-1] != p {
					pts[k] = p
					k++
				}
			}
			pts = pts[:k]
		}
		maps := make([][]uint64, len(pts))
		for k := range maps {
			maps[k] = make([]uint64, words)
		}
		for j := 0; j < n; j++ {
			bit, w := uint64(1)<<(j&63), j>>6
			if sets[j][f].all {
				for k := range maps {
					maps[k][w] |= bit
				}
				continue
			}
			for _, x := range sets[j][f].ivs {
				for k := searchPts(pts, x.lo); k < len(pts) && pts[k] <= x.hi; k++ {
					maps[k][w] |= bit
				}
			}
		}
		offs := make([]int32, len(pts))
		for k := range maps {
			offs[k] = intern(maps[k])
		}
		c.off[f] = offs
		if !discrete(f) {
			c.pts[f] = pts
		}
	}
	if len(c.bits) == 0 {
		// No field distinguishes the rules: the linear scan is as good.
		return nil
	}
	return c
}

// searchPts returns the index of the interval containing v: the largest k
// with pts[k] <= v (pts[0] is 0).
func searchPts(pts []uint32, v uint32) int {
	base, n := 0, len(pts)
	for n > 1 {
		half := n >> 1
		if pts[base+half] <= v {
			base += half
		}
		n -= half
	}
	return base
}

// lookup fills offs with the class bitmap offset of each active field for
// packet p and returns how many fields are active.
func (c *classifier) lookup(p *Packet, offs *[numFields]int32) int32 {
	for i := int32(0); i < c.nact; i++ {
		f := c.act[i]
		var o int32
		switch f {
		case fldSrc:
			o = c.off[f][searchPts(c.pts[f], p.Src)]
		case fldDst:
			o = c.off[f][searchPts(c.pts[f], p.Dst)]
		case fldSport:
			o = c.off[f][searchPts(c.pts[f], uint32(p.SrcPort))]
		case fldDport:
			o = c.off[f][searchPts(c.pts[f], uint32(p.DstPort))]
		case fldProto:
			o = c.off[f][p.Proto]
		case fldIn:
			o = c.off[f][min(int(p.InIf), MaxIfaces)]
		case fldOut:
			o = c.off[f][min(int(p.OutIf), MaxIfaces)]
		}
		offs[i] = o
	}
	return c.nact
}

// next returns the first candidate rule (chain-relative index) at or after
// pos, or -1.
func (c *classifier) next(offs *[numFields]int32, nact int32, pos int32) int32 {
	w0 := pos >> 6
	if w0 >= c.words {
		return -1
	}
	if c.words <= 64 {
		// Visit only the words every field's summary says are non-zero.
		sum := ^uint64(0) << uint(w0)
		for i := int32(0); i < nact; i++ {
			sum &= c.bits[offs[i]]
		}
		for sum != 0 {
			w := int32(bits.TrailingZeros64(sum))
			sum &= sum - 1
			if r := c.inWord(offs, nact, w, pos); r >= 0 {
				return r
			}
		}
		return -1
	}
	for w := w0; w < c.words; w++ {
		if r := c.inWord(offs, nact, w, pos); r >= 0 {
			return r
		}
	}
	return -1
}

// inWord returns the first rule of word w at or after pos that every
// active field's bitmap holds, or -1.
func (c *classifier) inWord(offs *[numFields]int32, nact int32, w int32, pos int32) int32 {
	m := ^uint64(0)
	if w == pos>>6 {
		m <<= uint(pos & 63)
	}
	for i := int32(0); i < nact; i++ {
		m &= c.bits[offs[i]+1+w]
	}
	if m == 0 {
		return -1
	}
	return w<<6 + int32(bits.TrailingZeros64(m))
}
