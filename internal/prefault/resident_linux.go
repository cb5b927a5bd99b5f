package prefault

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Resident reports how many of the whole 4 KiB pages inside s the kernel
// backs now (mincore), and how many there are: what tests of Slice's
// callers check.
func Resident[T any](s []T) (resident, pages int, err error) {
	const page = 4096
	if len(s) == 0 {
		return 0, 0, nil
	}
	base := unsafe.Pointer(unsafe.SliceData(s))
	size := uintptr(len(s)) * unsafe.Sizeof(s[0])
	skip := (page - uintptr(base)%page) % page
	if size < skip+page {
		return 0, 0, nil
	}
	n := (size - skip) / page
	vec := make([]byte, n)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Add(base, skip)), n*page, uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return 0, int(n), fmt.Errorf("mincore: %w", errno)
	}
	for _, v := range vec {
		resident += int(v & 1)
	}
	return resident, int(n), nil
}
