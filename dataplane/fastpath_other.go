//go:build !amd64

package dataplane

// established runs the established path's Go loop.
func (p *Pipeline) established(from int, frames [][]byte, sizes []int, out []Result) int {
	return p.establishedGo(from, frames, sizes, out)
}

// parseFast runs the parser's fast path's Go loop.
func (p *Pipeline) parseFast(frames [][]byte, sizes []int, in []uint16) (rest uint64, took int) {
	return p.parseFastGo(frames, sizes, in)
}
