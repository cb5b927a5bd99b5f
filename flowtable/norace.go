//go:build !race

package flowtable

// raceEnabled reports a -race build, in which lookups take the Go tag scan
// (the detector sees its atomic loads) and stress tests run shorter.
const raceEnabled = false
