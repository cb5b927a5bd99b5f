//go:build !race

package dataplane

// raceEnabled reports a -race build, in which protocol-state words are
// stored atomically for the detector to see (storeWord).
const raceEnabled = false
