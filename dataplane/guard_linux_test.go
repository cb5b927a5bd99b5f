package dataplane

import (
	"testing"

	"golang.org/x/sys/unix"
)

// guardedMemory returns a page-end window of memory whose next page is
// unmapped: a slice of n bytes ending there (guarded(n)) faults on any
// access beyond its end.
func guardedMemory(t *testing.T) func(n int) []byte {
	t.Helper()
	page := unix.Getpagesize()
	mem, err := unix.Mmap(-1, 0, 2*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	if err := unix.Mprotect(mem[page:], unix.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	return func(n int) []byte { return mem[page-n : page : page] }
}

// TestParseFastReadsWithinFrames: each seed, cut to every length, placed
// so that its last byte is the last of a page whose next page is
// unmapped, goes through the parser's fast path and through parse
// (checkParseFastBatch): a read beyond a frame's size would fault there.
func TestParseFastReadsWithinFrames(t *testing.T) {
	guarded := guardedMemory(t)
	p := fastParser(t)
	for _, s := range parseSeeds(t) {
		for n := range len(s) + 1 {
			frame := guarded(n)
			copy(frame, s)
			checkParseFastBatch(t, p, [][]byte{frame}, []uint16{portIn})
		}
	}
}
