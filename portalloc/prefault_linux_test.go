package portalloc

import (
	"testing"

	"xnat/internal/prefault"
)

// TestNewCommitsUseCounts: New backs its use counts with memory at once
// (prefault.Slice), so that no connection's first use of a port
// page-faults in the packet path: every page of them is resident. A pool
// of 16 addresses takes 2 MiB of counts a class, fresh memory in this
// process, which nothing else has touched.
func TestNewCommitsUseCounts(t *testing.T) {
	as, err := New(Pool{AddrLo: extA, AddrHi: extA + 15}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, u := range as[0].uses {
		if resident, pages, err := prefault.Resident(u); err != nil || pages == 0 || resident != pages {
			t.Errorf("class %d: %d of %d pages of use counts resident after New (%v)", k, resident, pages, err)
		}
	}
}
