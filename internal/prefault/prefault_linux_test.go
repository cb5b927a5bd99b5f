package prefault

import "testing"

// TestSlice: after Slice, every whole page of a fresh 4 MiB array is
// resident (Resident, by mincore); an empty slice is let be.
func TestSlice(t *testing.T) {
	Slice([]uint64(nil))
	s := make([]uint16, 2<<20) // fresh memory of this process: untouched
	Slice(s)
	if resident, pages, err := Resident(s); err != nil || pages == 0 || resident != pages {
		t.Fatalf("%d of %d pages resident after Slice (%v)", resident, pages, err)
	}
}
