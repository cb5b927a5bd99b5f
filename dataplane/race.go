//go:build race

package dataplane

// raceEnabled reports a -race build, in which the established path runs
// in Go: the detector sees neither the reads nor the writes of assembly.
const raceEnabled = true
