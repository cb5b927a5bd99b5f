//go:build race

package main

// raceSlowdown: under the race detector xnatd (this test binary) starts
// and takes over several times slower; time limits meant for a real
// xnatd are stretched by it.
const raceSlowdown = 8
