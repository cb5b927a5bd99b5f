package flowtable

// prefault writes a zero into every 4 KiB page of an array that nothing
// else can see yet, so that the kernel backs it now (zeroed pages, huge
// ones where hugePages got them) instead of in the packet path: untouched,
// each first insert into a fresh page is a page fault, and the kernel's
// page clearing was a fifth of BenchmarkNewConnections' profile. The
// memory is all used eventually in any case; a gateway commits it at
// start, as it does its UMEM.
func prefault[T any](s []T) {
	b := bytesOf(s)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 0
	}
}
