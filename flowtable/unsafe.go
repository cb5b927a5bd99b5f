package flowtable

import "unsafe"

// This file holds the package's uses of unsafe.

// words views a tuple as the two machine words it is: 16 bytes with no
// implicit padding and an always-zero pad field, so two tuples are equal
// exactly when their words are.
func (t *Tuple) words() (uint64, uint64) {
	w := (*[2]uint64)(unsafe.Pointer(t))
	return w[0], w[1]
}

// Set makes t the tuple MakeTuple would return, written as the two words
// it is. Building a tuple field by field and then copying it whole (as
// *t = MakeTuple(…) compiles) reads 16 bytes just written by five smaller
// stores, which the CPU cannot forward and so waits for; two word stores
// forward to the word loads that hash and compare the tuple.
func (t *Tuple) Set(proto uint8, src uint32, sport uint16, dst uint32, dport uint16) {
	if !littleEndian {
		*t = Tuple{Src: src, Dst: dst, SrcPort: sport, DstPort: dport, Proto: proto}
		return
	}
	w := (*[2]uint64)(unsafe.Pointer(t))
	w[0] = uint64(src) | uint64(dst)<<32
	w[1] = uint64(sport) | uint64(dport)<<16 | uint64(proto)<<32
}

// equal compares two tuples as two words each.
func (t *Tuple) equal(o *Tuple) bool {
	a := (*[2]uint64)(unsafe.Pointer(t))
	b := (*[2]uint64)(unsafe.Pointer(o))
	return a[0] == b[0] && a[1] == b[1]
}

// bytesOf views an array's memory as bytes (for madvise).
func bytesOf[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), uintptr(len(s))*unsafe.Sizeof(s[0]))
}

// addrMod returns the address of b's first byte modulo m.
func addrMod(b []byte, m uintptr) uintptr {
	return uintptr(unsafe.Pointer(&b[0])) % m
}

// tupleAt is the tuple of direction d, found by its offset rather than a
// branch: traffic mixes the two directions, which a branch on the
// direction would mispredict.
func (f *Flow) tupleAt(d Dir) *Tuple {
	return (*Tuple)(unsafe.Add(unsafe.Pointer(&f.orig), uintptr(d&1)*unsafe.Sizeof(Tuple{})))
}

// The reply tuple follows the original one (tupleAt).
const _ = -uint(unsafe.Offsetof(Flow{}.reply) - unsafe.Sizeof(Tuple{}))

// meta returns chunk ch's bookkeeping (ch is chunk+1): the tuples of the
// chunk's first record, which never holds a connection.
func (t *Table) meta(ch uint32) *chunkMeta {
	return (*chunkMeta)(unsafe.Pointer(&t.recs[(ch-1)<<chunkShift].orig))
}

// chunkMeta fits in a record's two tuples (a negative length otherwise).
var _ [2*unsafe.Sizeof(Tuple{}) - unsafe.Sizeof(chunkMeta{})]byte
