package dataplane

import (
	"math/bits"

	"xnat/flowtable"
)

// establishedAMD64 is establishedGo's loop in assembly
// (fastpath_amd64.s), over frames from to n-1 of the batch, with the
// table's records (flowtable.Table.Records). It stops where establishedGo
// would, and also, where establishedGo would panic, at a Ref beyond the
// records or a next hop on a port beyond MaxPorts (neither happens).
//
//go:noescape
func establishedAMD64(p *Pipeline, from, n int, frames *[]byte, sizes *int, out *Result, recs *flowtable.Flow, nrec uint64) int

// established runs the established path: the assembly loop, but for the
// race detector, which sees no memory access of assembly, and for tests
// that ask for the Go one (goFast).
func (p *Pipeline) established(from int, frames [][]byte, sizes []int, out []Result) int {
	if raceEnabled || p.goFast || from >= len(frames) {
		return p.establishedGo(from, frames, sizes, out)
	}
	sizes, out = sizes[:len(frames)], out[:len(frames)]
	recs, nrec := p.d.Table.Records()
	return establishedAMD64(p, from, len(frames), &frames[0], &sizes[0], &out[0], recs, uint64(nrec))
}

// parseFastAMD64 is parseFastGo's loop in assembly (fastpath_amd64.s)
// over the batch's n frames, with the environment's nports ports; it
// returns rest, and parseFast counts the frames it took.
//
//go:noescape
func parseFastAMD64(p *Pipeline, frames *[]byte, sizes *int, in *uint16, n int, nports int) (rest uint64)

// parseFast runs the parser's fast path: the assembly loop, but for the
// race detector and for tests that ask for the Go one (goFast).
func (p *Pipeline) parseFast(frames [][]byte, sizes []int, in []uint16) (rest uint64, took int) {
	if raceEnabled || p.goFast || len(frames) == 0 || len(frames) > batchMax {
		return p.parseFastGo(frames, sizes, in)
	}
	sizes, in = sizes[:len(frames)], in[:len(frames)]
	rest = parseFastAMD64(p, &frames[0], &sizes[0], &in[0], len(frames), len(p.env.Ports))
	return rest, len(frames) - bits.OnesCount64(rest)
}
