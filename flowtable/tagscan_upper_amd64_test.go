//go:build linux && amd64 && !purego

package flowtable

import (
	"debug/elf"
	"debug/gosym"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestVectorUpperState decodes every assembly routine of this package in
// the test binary itself (found through the binary's function table) and holds it to the two rules of
// tagscan_amd64.s on the upper halves of the Y registers:
//
//   - a routine that uses a Y register (any VEX- or EVEX-encoded
//     instruction of 256 bits or more) has no legacy-encoded SSE or MMX
//     instruction anywhere (MOVL AX, X3 assembles to one: the legacy MOVD);
//   - no return, call or jump out of the routine is reachable from a Y
//     register's use without a VZEROUPPER (or VZEROALL) on the way.
//
// The second is a data-flow pass over the routine's control flow (every
// conditional and unconditional jump followed), not a linear scan, so a
// branch around a VZEROUPPER is caught. The Go disassembler
// (go tool objdump) cannot be used: it does not decode VEX prefixes.
// The decoder below knows the instructions Go assembly emits; an opcode
// it does not know fails the test rather than being skipped.
func TestVectorUpperState(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// go test strips the binary's symbol table; the function table the
	// runtime itself uses (.gopclntab) stays.
	text, pclntab := f.Section(".text"), f.Section(".gopclntab")
	if text == nil || pclntab == nil {
		t.Fatal("test binary without .text or .gopclntab")
	}
	data, err := text.Data()
	if err != nil {
		t.Fatal(err)
	}
	pcln, err := pclntab.Data()
	if err != nil {
		t.Fatal(err)
	}
	table, err := gosym.NewTable(nil, gosym.NewLineTable(pcln, text.Addr))
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "xnat/flowtable."
	usesY := map[string]bool{}
	for _, fn := range table.Funcs {
		if !strings.HasPrefix(fn.Name, prefix) {
			continue
		}
		if file, _, _ := table.PCToLine(fn.Entry); !strings.HasSuffix(file, ".s") {
			continue // compiled Go
		}
		name := strings.TrimPrefix(fn.Name, prefix)
		if fn.Entry < text.Addr || fn.End > text.Addr+uint64(len(data)) || fn.End <= fn.Entry {
			t.Fatalf("%s: [%#x, %#x) outside .text", name, fn.Entry, fn.End)
		}
		// The function's end is the next one's entry: the alignment
		// padding between them (INT3) is decoded with it.
		code := data[fn.Entry-text.Addr : fn.End-text.Addr]
		y, problems, err := checkUpperState(code)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", name, p)
		}
		usesY[name] = y
	}
	// A renamed routine, or a decoder blind to VEX, would leave the test
	// checking nothing: the vector routines must be there, using Y.
	for _, name := range []string{"tagScanAVX2", "bucketMatchAVX2", "bucketMatch2AVX2", "lookupOneAMD64", "lookupSmallAMD64"} {
		if y, ok := usesY[name]; !ok || !y {
			t.Errorf("%s: found %v, uses Y registers %v; want both", name, ok, y)
		}
	}
	for _, name := range []string{"hashProbesAMD64", "prefetchBucketsAMD64", "compareProbesAMD64"} {
		if y, ok := usesY[name]; !ok || y {
			t.Errorf("%s: found %v, uses Y registers %v; want found, baseline amd64", name, ok, y)
		}
	}
}

// TestCheckUpperState holds the checker to hand-assembled routines: the
// sequences it must reject, and ones it must pass.
func TestCheckUpperState(t *testing.T) {
	const (
		bcastY  = "c4e27d58d2"   // VPBROADCASTD X2, Y2
		bcastX  = "c4e27958d2"   // VPBROADCASTD X2, X2 (128 bits)
		vmovd   = "c5f96ed8"     // VMOVD AX, X3
		vpandY  = "c5ed db 06"   // VPAND (SI), Y2, Y0
		movd    = "660f6ed8"     // MOVD AX, X3 (legacy SSE)
		movdqu  = "f30f6f06"     // MOVDQU (SI), X0 (legacy SSE)
		pxor    = "660fefc0"     // PXOR X0, X0
		vzu     = "c5f877"       // VZEROUPPER
		ret     = "c3"           // RET
		testl   = "85c0"         // TESTL AX, AX
		je3     = "7403"         // JE +3: over a VZEROUPPER
		je4     = "7404"         // JE +4: over a VZEROUPPER and a RET
		je9rel  = "0f8403000000" // JE +3, rel32
		jmpBack = "ebf0"         // JMP -16
		call    = "e800000000"   // CALL +0
		tzcnt   = "f3450fbcda"   // TZCNTL R10, R11
		movmsk  = "c5fc50c8"     // VMOVMSKPS Y0, CX
		prefT1  = "420f181422"   // PREFETCHT1 (DX)(R12*1)
		mulq    = "49f7e2"       // MULQ R10
		movabs  = "49bd157c4a7fb979379e"
	)
	cases := []struct {
		name  string
		code  string
		usesY bool
		bad   int // problems expected
	}{
		{"vex only", vmovd + bcastY + vpandY + movmsk + tzcnt + vzu + ret, true, 0},
		{"128-bit VEX, no Y", vmovd + bcastX + ret, false, 0},
		{"legacy SSE on a clean state, no Y", movd + pxor + movdqu + ret, false, 0},
		{"baseline code", movabs + mulq + prefT1 + ret, false, 0},
		{"legacy MOVD after a Y write", bcastY + movd + vzu + ret, true, 2},
		{"legacy MOVD before any Y write", movd + bcastY + vzu + ret, true, 1},
		{"RET with the upper halves dirty", bcastY + ret, true, 1},
		{"CALL with the upper halves dirty", bcastY + call + vzu + ret, true, 1},
		{"a branch around VZEROUPPER", bcastY + testl + je3 + vzu + ret, true, 1},
		{"a rel32 branch around VZEROUPPER", bcastY + testl + je9rel + vzu + ret, true, 1},
		{"both ways clean", bcastY + testl + je4 + vzu + ret + vzu + ret, true, 0},
		{"a jump out of the routine, dirty", bcastY + jmpBack, true, 1},
	}
	for _, c := range cases {
		code := hexBytes(t, c.code)
		y, problems, err := checkUpperState(code)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if y != c.usesY || len(problems) != c.bad {
			t.Errorf("%s: uses Y %v, problems %q; want %v and %d", c.name, y, problems, c.usesY, c.bad)
		}
	}
	for _, bad := range []string{"0f04", "c4e27d58", "e9000000"} {
		if _, _, err := checkUpperState(hexBytes(t, bad)); err == nil {
			t.Errorf("%s: decoded, want an error", bad)
		}
	}
	// A jump into the middle of an instruction is the decoder out of step.
	if _, _, err := checkUpperState(hexBytes(t, "eb01"+movabs+ret)); err == nil {
		t.Error("a jump into an instruction: no error")
	}
}

func hexBytes(t *testing.T, s string) []byte {
	t.Helper()
	s = strings.ReplaceAll(s, " ", "")
	b := make([]byte, len(s)/2)
	for i := range b {
		if _, err := fmt.Sscanf(s[2*i:2*i+2], "%02x", &b[i]); err != nil {
			t.Fatalf("bad hex %q: %v", s, err)
		}
	}
	return b
}

// x86 instruction kinds, for the control flow.
const (
	kPlain = iota
	kJump  // unconditional, to target
	kCond  // conditional: target or the next instruction
	kCall
	kExit // a return, or an indirect jump
	kStop // a trap: no way on (INT3, UD2, HLT)
)

type x86Insn struct {
	off, next int
	kind      int
	target    int  // for kJump, kCond and direct kCall: the offset jumped to
	vex       bool // VEX- or EVEX-encoded
	wide      bool // of 256 bits or more (VEX.L, EVEX.L'L)
	legacyVec bool // legacy-encoded SSE or MMX
	zeroUpper bool // VZEROUPPER or VZEROALL
}

// Operand flags of the one-byte and 0F opcode maps.
const (
	fKnown = 1 << iota
	fModRM
	fImm8
	fImmZ  // 4 bytes, 2 with an operand-size prefix
	fImmV  // MOV r, imm: 8 bytes with REX.W
	fImm16 // RET imm16
	fRel8
	fRel32
	fMoffs // MOV to or from an absolute address: 8 bytes
	fEnter // imm16 and imm8
	fVec   // a legacy SSE or MMX instruction
)

var oneByte, twoByte [256]uint16

func init() {
	set := func(m *[256]uint16, lo, hi int, f uint16) {
		for i := lo; i <= hi; i++ {
			m[i] |= fKnown | f
		}
	}
	for r := 0; r < 8; r++ { // ALU ops: r/m forms, then AL and eAX immediates
		set(&oneByte, r*8, r*8+3, fModRM)
		set(&oneByte, r*8+4, r*8+4, fImm8)
		set(&oneByte, r*8+5, r*8+5, fImmZ)
	}
	oneByte[0x0F] = 0 // the two-byte escape, handled apart
	set(&oneByte, 0x50, 0x5F, 0)
	set(&oneByte, 0x63, 0x63, fModRM)
	set(&oneByte, 0x68, 0x68, fImmZ)
	set(&oneByte, 0x69, 0x69, fModRM|fImmZ)
	set(&oneByte, 0x6A, 0x6A, fImm8)
	set(&oneByte, 0x6B, 0x6B, fModRM|fImm8)
	set(&oneByte, 0x6C, 0x6F, 0)
	set(&oneByte, 0x70, 0x7F, fRel8)
	set(&oneByte, 0x80, 0x80, fModRM|fImm8)
	set(&oneByte, 0x81, 0x81, fModRM|fImmZ)
	set(&oneByte, 0x83, 0x83, fModRM|fImm8)
	set(&oneByte, 0x84, 0x8F, fModRM)
	set(&oneByte, 0x90, 0x99, 0)
	set(&oneByte, 0x9B, 0x9F, 0)
	set(&oneByte, 0xA0, 0xA3, fMoffs)
	set(&oneByte, 0xA4, 0xA7, 0)
	set(&oneByte, 0xA8, 0xA8, fImm8)
	set(&oneByte, 0xA9, 0xA9, fImmZ)
	set(&oneByte, 0xAA, 0xAF, 0)
	set(&oneByte, 0xB0, 0xB7, fImm8)
	set(&oneByte, 0xB8, 0xBF, fImmV)
	set(&oneByte, 0xC0, 0xC1, fModRM|fImm8)
	set(&oneByte, 0xC2, 0xC2, fImm16)
	set(&oneByte, 0xC3, 0xC3, 0)
	set(&oneByte, 0xC6, 0xC6, fModRM|fImm8)
	set(&oneByte, 0xC7, 0xC7, fModRM|fImmZ)
	set(&oneByte, 0xC8, 0xC8, fEnter)
	set(&oneByte, 0xC9, 0xC9, 0)
	set(&oneByte, 0xCA, 0xCA, fImm16)
	set(&oneByte, 0xCB, 0xCC, 0)
	set(&oneByte, 0xCD, 0xCD, fImm8)
	set(&oneByte, 0xCF, 0xCF, 0)
	set(&oneByte, 0xD0, 0xD3, fModRM)
	set(&oneByte, 0xD7, 0xD7, 0)
	set(&oneByte, 0xD8, 0xDF, fModRM)
	set(&oneByte, 0xE0, 0xE3, fRel8)
	set(&oneByte, 0xE4, 0xE7, fImm8)
	set(&oneByte, 0xE8, 0xE9, fRel32)
	set(&oneByte, 0xEB, 0xEB, fRel8)
	set(&oneByte, 0xEC, 0xEF, 0)
	set(&oneByte, 0xF1, 0xF1, 0)
	set(&oneByte, 0xF4, 0xF5, 0)
	set(&oneByte, 0xF6, 0xF7, fModRM) // and an immediate for /0 and /1
	set(&oneByte, 0xF8, 0xFD, 0)
	set(&oneByte, 0xFE, 0xFF, fModRM)

	set(&twoByte, 0x00, 0x03, fModRM)
	set(&twoByte, 0x05, 0x09, 0)
	set(&twoByte, 0x0B, 0x0B, 0)
	set(&twoByte, 0x0D, 0x0D, fModRM)
	set(&twoByte, 0x0E, 0x0E, 0)
	set(&twoByte, 0x0F, 0x0F, fModRM|fImm8|fVec) // 3DNow!
	set(&twoByte, 0x10, 0x17, fModRM|fVec)
	set(&twoByte, 0x18, 0x1F, fModRM) // prefetches and hinting NOPs
	set(&twoByte, 0x20, 0x23, fModRM)
	set(&twoByte, 0x28, 0x2F, fModRM|fVec)
	set(&twoByte, 0x30, 0x35, 0)
	set(&twoByte, 0x37, 0x37, 0)
	set(&twoByte, 0x40, 0x4F, fModRM) // CMOVcc
	set(&twoByte, 0x50, 0x6F, fModRM|fVec)
	set(&twoByte, 0x70, 0x73, fModRM|fImm8|fVec)
	set(&twoByte, 0x74, 0x76, fModRM|fVec)
	set(&twoByte, 0x77, 0x77, fVec) // EMMS
	set(&twoByte, 0x78, 0x7F, fModRM|fVec)
	set(&twoByte, 0x80, 0x8F, fRel32)
	set(&twoByte, 0x90, 0x9F, fModRM) // SETcc
	set(&twoByte, 0xA0, 0xA2, 0)
	set(&twoByte, 0xA3, 0xA3, fModRM)
	set(&twoByte, 0xA4, 0xA4, fModRM|fImm8)
	set(&twoByte, 0xA5, 0xA5, fModRM)
	set(&twoByte, 0xA8, 0xAA, 0)
	set(&twoByte, 0xAB, 0xAB, fModRM)
	set(&twoByte, 0xAC, 0xAC, fModRM|fImm8)
	set(&twoByte, 0xAD, 0xB9, fModRM) // SHRD, fences, IMUL, CMPXCHG, BTR, MOVZX, POPCNT, UD1
	set(&twoByte, 0xBA, 0xBA, fModRM|fImm8)
	set(&twoByte, 0xBB, 0xC1, fModRM) // BTC, BSF/TZCNT, BSR/LZCNT, MOVSX, XADD
	set(&twoByte, 0xC2, 0xC2, fModRM|fImm8|fVec)
	set(&twoByte, 0xC3, 0xC3, fModRM) // MOVNTI, a general register
	set(&twoByte, 0xC4, 0xC6, fModRM|fImm8|fVec)
	set(&twoByte, 0xC7, 0xC7, fModRM)
	set(&twoByte, 0xC8, 0xCF, 0) // BSWAP
	set(&twoByte, 0xD0, 0xFF, fModRM|fVec)
}

// decodeX86 decodes the instruction at code[off:]. code must be followed
// by at least 15 bytes of padding (the longest instruction), so that a
// truncated one is read past the end and reported, not indexed out.
func decodeX86(code []byte, off, end int) (x86Insn, error) {
	in := x86Insn{off: off, target: -1}
	i := off
	var opsize, rexW bool
prefixes:
	for ; i < end; i++ {
		switch code[i] {
		case 0x66:
			opsize = true
		case 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65:
		default:
			break prefixes
		}
	}
	if code[i]&0xF0 == 0x40 {
		rexW = code[i]&8 != 0
		i++
	}
	op := code[i]
	i++
	var err error
	switch op {
	case 0xC4, 0xC5, 0x62: // VEX (3 and 2 bytes), EVEX
		in.vex = true
		opmap := 1
		switch op {
		case 0xC5:
			in.wide = code[i]&4 != 0
			i++
		case 0xC4:
			opmap = int(code[i] & 0x1F)
			in.wide = code[i+1]&4 != 0
			i += 2
		default:
			opmap = int(code[i] & 7)
			in.wide = code[i+2]>>5&3 != 0
			i += 3
		}
		vop := code[i]
		i++
		switch {
		case opmap == 1 && vop == 0x77:
			in.zeroUpper = true
		case opmap == 1:
			if i, err = skipModRM(code, i); err == nil && (vop >= 0x70 && vop <= 0x73 || vop == 0xC2 || vop >= 0xC4 && vop <= 0xC6) {
				i++
			}
		case opmap == 2:
			i, err = skipModRM(code, i)
		case opmap == 3:
			i, err = skipModRM(code, i)
			i++
		default:
			return in, fmt.Errorf("+%#x: VEX opcode map %d unknown", off, opmap)
		}
	case 0x0F:
		op2 := code[i]
		i++
		switch op2 {
		case 0x38, 0x3A: // three-byte maps
			op3 := code[i]
			i++
			if i, err = skipModRM(code, i); op2 == 0x3A {
				i++
			}
			in.legacyVec = op2 == 0x3A || op3 < 0xF0
		default:
			f := twoByte[op2]
			if f&fKnown == 0 {
				return in, fmt.Errorf("+%#x: opcode 0F %02X unknown to the decoder", off, op2)
			}
			in.legacyVec = f&fVec != 0
			switch op2 {
			case 0x0B:
				in.kind = kStop
			}
			if f&fModRM != 0 {
				i, err = skipModRM(code, i)
			}
			if f&fImm8 != 0 {
				i++
			}
			if f&fRel32 != 0 {
				i += 4
				in.kind = kCond
				in.target = i + int(int32(uint32(code[i-4])|uint32(code[i-3])<<8|uint32(code[i-2])<<16|uint32(code[i-1])<<24))
			}
		}
	default:
		f := oneByte[op]
		if f&fKnown == 0 {
			return in, fmt.Errorf("+%#x: opcode %02X unknown to the decoder", off, op)
		}
		var reg byte
		if f&fModRM != 0 {
			reg = code[i] >> 3 & 7
			if op == 0x8F && reg != 0 {
				return in, fmt.Errorf("+%#x: XOP unknown to the decoder", off)
			}
			i, err = skipModRM(code, i)
		}
		immZ := 4
		if opsize {
			immZ = 2
		}
		switch {
		case f&fImm8 != 0 || op == 0xF6 && reg < 2:
			i++
		case f&fImmZ != 0 || op == 0xF7 && reg < 2:
			i += immZ
		case f&fImmV != 0:
			if rexW {
				i += 8
			} else {
				i += immZ
			}
		case f&fImm16 != 0:
			i += 2
		case f&fEnter != 0:
			i += 3
		case f&fMoffs != 0:
			i += 8
		case f&fRel8 != 0:
			i++
			in.target = i + int(int8(code[i-1]))
			in.kind = kCond
			if op == 0xEB {
				in.kind = kJump
			}
		case f&fRel32 != 0:
			i += 4
			in.target = i + int(int32(uint32(code[i-4])|uint32(code[i-3])<<8|uint32(code[i-2])<<16|uint32(code[i-1])<<24))
			in.kind = kJump
			if op == 0xE8 {
				in.kind = kCall
			}
		}
		switch {
		case op == 0xC2 || op == 0xC3 || op == 0xCA || op == 0xCB:
			in.kind = kExit
		case op == 0xCC || op == 0xCF || op == 0xF4:
			in.kind = kStop
		case op == 0xFF && (reg == 2 || reg == 3):
			in.kind = kCall
		case op == 0xFF && (reg == 4 || reg == 5):
			in.kind = kExit
		}
	}
	if err != nil {
		return in, fmt.Errorf("+%#x: %w", off, err)
	}
	if i > end {
		return in, fmt.Errorf("+%#x: instruction runs past the routine's end", off)
	}
	in.next = i
	return in, nil
}

// skipModRM steps over a ModRM byte and the SIB byte and displacement it
// calls for.
func skipModRM(code []byte, i int) (int, error) {
	m := code[i]
	i++
	mod, rm := m>>6, m&7
	if mod == 3 {
		return i, nil
	}
	if rm == 4 {
		sib := code[i]
		i++
		if mod == 0 && sib&7 == 5 {
			i += 4
		}
	} else if mod == 0 && rm == 5 { // RIP-relative
		i += 4
	}
	switch mod {
	case 1:
		i++
	case 2:
		i += 4
	}
	return i, nil
}

// checkUpperState decodes a routine and reports whether it uses Y
// registers, and each breach of the two rules TestVectorUpperState
// states.
func checkUpperState(routine []byte) (usesY bool, problems []string, err error) {
	code := append(append([]byte(nil), routine...), make([]byte, 16)...)
	end := len(routine)
	var insns []x86Insn
	at := map[int]int{}
	for off := 0; off < end; {
		in, err := decodeX86(code, off, end)
		if err != nil {
			return false, nil, err
		}
		at[off] = len(insns)
		insns = append(insns, in)
		usesY = usesY || in.vex && in.wide
		off = in.next
	}
	if usesY {
		for _, in := range insns {
			if in.legacyVec {
				problems = append(problems, fmt.Sprintf("+%#x: a legacy-SSE instruction in a routine that uses Y registers", in.off))
			}
		}
	}
	// The upper halves' state at each instruction, from a clean entry:
	// dirty if any path reaching it leaves them dirty.
	seen := make([]bool, len(insns))
	dirty := make([]bool, len(insns))
	type item struct {
		i     int
		dirty bool
	}
	work := []item{{0, false}}
	if len(insns) == 0 {
		work = nil
	}
	for len(work) > 0 {
		w := work[len(work)-1]
		work = work[:len(work)-1]
		if seen[w.i] && (dirty[w.i] || !w.dirty) {
			continue
		}
		seen[w.i], dirty[w.i] = true, dirty[w.i] || w.dirty
		in := insns[w.i]
		d := dirty[w.i]
		if d {
			switch {
			case in.legacyVec:
				problems = append(problems, fmt.Sprintf("+%#x: a legacy-SSE instruction with the upper halves dirty", in.off))
			case in.kind == kExit:
				problems = append(problems, fmt.Sprintf("+%#x: a return or indirect jump with the upper halves dirty", in.off))
			case in.kind == kCall:
				problems = append(problems, fmt.Sprintf("+%#x: a call with the upper halves dirty", in.off))
			}
		}
		switch {
		case in.zeroUpper:
			d = false
		case in.vex && in.wide:
			d = true
		}
		var next []int
		switch in.kind {
		case kPlain, kCall:
			next = []int{in.next}
		case kCond:
			next = []int{in.next, in.target}
		case kJump:
			next = []int{in.target}
		}
		for _, off := range next {
			if off < 0 || off >= end {
				if d { // a jump out of the routine: a tail call
					problems = append(problems, fmt.Sprintf("+%#x: a jump out of the routine with the upper halves dirty", in.off))
				}
				continue
			}
			j, ok := at[off]
			if !ok {
				return usesY, problems, fmt.Errorf("+%#x: jump to +%#x, inside an instruction: the decoder is out of step", in.off, off)
			}
			work = append(work, item{j, d})
		}
	}
	return usesY, problems, nil
}
