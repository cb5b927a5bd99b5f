//go:build 386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm

package flowtable

// littleEndian: the words Tuple.Set writes assume the fields' bytes in
// little-endian order. A constant, so Set has no branch on it.
const littleEndian = true
