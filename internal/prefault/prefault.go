// Package prefault commits a fresh array's memory at once: it writes a
// zero into every 4 KiB page, so that the kernel backs the pages now
// (zeroed, huge ones where madvise got them) instead of at their first
// use in the packet path, where each would be a page fault. The flow
// table and the port allocators commit their arrays with it at creation;
// a gateway uses that memory in any case, and commits it at start as it
// does its UMEM.
package prefault

import "unsafe"

// Slice writes a zero into every 4 KiB page of s, which nothing else may
// see yet.
func Slice[T any](s []T) {
	if len(s) == 0 {
		return
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), uintptr(len(s))*unsafe.Sizeof(s[0]))
	for i := 0; i < len(b); i += 4096 {
		b[i] = 0
	}
}
