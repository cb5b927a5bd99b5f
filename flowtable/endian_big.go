//go:build !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package flowtable

// littleEndian: see endian_little.go.
const littleEndian = false
