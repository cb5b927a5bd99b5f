package flowtable

// tagScanGo is the portable tag scan: for each probe (with second, only
// those still without a candidate, in their second bucket) it records the
// record index of the first slot holding the probe's tag, or noCand. It
// returns how many probes are left without a candidate. Every bucket index
// in bb must be below len(buckets), as place guarantees.
func tagScanGo(buckets []bucket, bb []probe, mask uint32, second bool) int {
	missing := 0
	for i := range bb {
		b := &bb[i]
		bi := b.b1
		if second {
			if b.idx != noCand {
				continue
			}
			bi = b.b2
		}
		b.idx = noCand
		bk := &buckets[bi]
		for j := range bk {
			if v := bk[j].Load(); v&^mask == b.tag {
				b.idx = v&mask - 1
				break
			}
		}
		if b.idx == noCand {
			missing++
		}
	}
	return missing
}

// bucketMatchGo returns a bit for each slot of b whose tag (the bits
// outside mask) is tag: slot i sets bit i. Each slot is one atomic load.
// Like a scan's candidate, a bit is a hint that the caller confirms by
// loading the slot again.
func bucketMatchGo(b *bucket, tag, mask uint32) uint32 {
	var m uint32
	for i := range b {
		if b[i].Load()&^mask == tag {
			m |= 1 << i
		}
	}
	return m
}

// bucketMatch2Go is bucketMatchGo on two buckets: a tuple's two, which
// the insert path reads together.
func bucketMatch2Go(b1, b2 *bucket, tag, mask uint32) (m1, m2 uint32) {
	return bucketMatchGo(b1, tag, mask), bucketMatchGo(b2, tag, mask)
}

// hashProbesGo fills each key's probe: its buckets and tag, as place
// finds them.
func (t *Table) hashProbesGo(keys []Tuple, bb []probe) {
	bb = bb[:len(keys)]
	for i := range keys {
		b := &bb[i]
		b.b1, b.b2, b.tag = t.place(t.h.hash(&keys[i]))
	}
}

// compareProbesGo compares each probe's candidate record with its key:
// refs[i] is the key's Ref when the candidate holds it and is live, and 0
// when the probe has no candidate. It returns how many it found, and the
// mask of the probes whose candidate failed (another tuple under the same
// tag, or a dead record), which the caller looks for again. At most 64
// probes.
func (t *Table) compareProbesGo(keys []Tuple, bb []probe, refs []Ref, now Time) (found int, rescan uint64) {
	keys, refs = keys[:len(bb)], refs[:len(bb)]
	for i := range bb {
		refs[i] = 0
		idx := bb[i].idx
		if idx == noCand {
			continue
		}
		f := &t.recs[idx]
		if d, ok := match(f, &keys[i]); ok && t.liveAt(f, now) {
			refs[i] = makeRef(idx, d)
			found++
			continue
		}
		rescan |= 1 << i
	}
	return found, rescan
}
