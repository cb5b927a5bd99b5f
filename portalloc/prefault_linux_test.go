package portalloc

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestNewCommitsUseCounts: New backs its use counts with memory at once
// (prefault), so that no connection's first use of a port page-faults in
// the packet path: mincore reports every page of them resident. A pool
// of 16 addresses takes 2 MiB of counts a class, fresh memory in this
// process, which nothing else has touched.
func TestNewCommitsUseCounts(t *testing.T) {
	as, err := New(Pool{AddrLo: extA, AddrHi: extA + 15}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	for k, u := range as[0].uses {
		base := unsafe.Pointer(unsafe.SliceData(u))
		size := uintptr(len(u)) * 2
		// The whole pages inside the array (mincore takes an aligned start).
		skip := (page - uintptr(base)%page) % page
		n := (size - skip) / page
		mem := unsafe.Slice((*byte)(unsafe.Add(base, skip)), n*page)
		vec := make([]byte, n)
		if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
			t.Fatalf("mincore: %v", errno)
		}
		resident := 0
		for _, v := range vec {
			resident += int(v & 1)
		}
		if resident != len(vec) {
			t.Errorf("class %d: %d of %d pages of use counts resident after New", k, resident, len(vec))
		}
	}
}
