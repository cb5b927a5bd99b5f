package dataplane

import "unsafe"

// This file holds the package's uses of unsafe.

// Counters must be exactly counterWords uint64s: these fail to compile
// otherwise (a negative array length).
var (
	_ [unsafe.Sizeof(Counters{}) - uintptr(counterWords*8)]byte
	_ [uintptr(counterWords*8) - unsafe.Sizeof(Counters{})]byte
)

// flat views c as the array of its words, in field order, so that a
// batch's counters are published by one loop rather than field by field.
func (c *Counters) flat() *[counterWords]uint64 {
	return (*[counterWords]uint64)(unsafe.Pointer(c))
}

// Where Forwarded and Batches are among the words of Counters (flat).
const (
	forwardedWord = int(unsafe.Offsetof(Counters{}.Forwarded) / 8)
	batchesWord   = int(unsafe.Offsetof(Counters{}.Batches) / 8)
)
