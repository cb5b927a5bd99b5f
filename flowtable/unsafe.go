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
