//go:build race

package api

// raceEnabled: the race detector slows encoding about tenfold, so the
// streaming tests walk smaller tables under it.
const raceEnabled = true
