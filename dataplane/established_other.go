//go:build !amd64

package dataplane

// established runs the established path's Go loop.
func (p *Pipeline) established(from int, frames [][]byte, sizes []int, out []Result) int {
	return p.establishedGo(from, frames, sizes, out)
}
