package dataplane

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"xnat/flowtable"
)

var testImpl = flag.String("impl", "auto", "flow table implementation the tests and benchmarks use: auto, go or avx2")

// TestMain selects the flow table's implementation (-impl) before the
// tests and benchmarks run, so scripts/instructions.sh can count the
// packet path under each.
func TestMain(m *testing.M) {
	flag.Parse()
	im, err := flowtable.ParseImpl(*testImpl)
	if err == nil {
		err = flowtable.SetImpl(im)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "-impl:", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}
