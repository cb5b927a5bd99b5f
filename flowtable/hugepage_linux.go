//go:build linux

package flowtable

import "syscall"

// hugePages asks the kernel to back the 2 MiB-aligned interior of a large
// array with transparent huge pages, before anything touches it. The
// table is probed at random; with 4 KiB pages nearly every probe of a
// large table misses the TLB, and in a virtual machine each miss is a
// two-dimensional page walk. It is advice: where the kernel declines (THP
// "never", no memory to compact) nothing changes but speed. The memory
// stays ordinary Go heap.
func hugePages[T any](s []T) {
	const huge = 2 << 20
	b := bytesOf(s)
	if len(b) < huge {
		return
	}
	start := uintptr(0)
	if r := addrMod(b, huge); r != 0 {
		start = huge - r
	}
	end := start + (uintptr(len(b))-start)&^(huge-1)
	if end > start {
		_ = syscall.Madvise(b[start:end], syscall.MADV_HUGEPAGE)
	}
}
