#include "textflag.h"

// The probe layout (core.go): b1 at 0, b2 at 8, tag at 16, idx at 20,
// 24 bytes each. A bucket is 16 four-byte slots, 64 bytes.

// PROBE compares the bucket at R8 with the tag at 16(DI) and stores the
// candidate (or noCand) at 20(DI), adding 1 to R9 when there is none.
// In: Y2 = ^mask in every lane, AX = mask, R13 = noCand.
#define PROBE \
	SHLQ         $6, R8; \
	ADDQ         SI, R8; \
	VPBROADCASTD 16(DI), Y3; \
	VPAND        0(R8), Y2, Y0; \
	VPAND        32(R8), Y2, Y1; \
	VPCMPEQD     Y3, Y0, Y0; \
	VPCMPEQD     Y3, Y1, Y1; \
	VMOVMSKPS    Y0, R10; \
	VMOVMSKPS    Y1, R11; \
	SHLL         $8, R11; \
	ORL          R11, R10; \
	TZCNTL       R10, R11; \
	ANDL         $15, R11; \
	MOVL         (R8)(R11*4), R12; \
	ANDL         AX, R12; \
	DECL         R12; \
	TESTL        R10, R10; \
	CMOVLEQ      R13, R12; \
	SETEQ        BX; \
	MOVBQZX      BX, BX; \
	ADDQ         BX, R9; \
	MOVL         R12, 20(DI)

// func tagScanAVX2(buckets *bucket, bb *probe, n int, notMask uint32, second bool) int
TEXT ·tagScanAVX2(SB), NOSPLIT, $0-40
	MOVQ         buckets+0(FP), SI
	MOVQ         bb+8(FP), DI
	MOVQ         n+16(FP), CX
	MOVL         notMask+24(FP), AX
	MOVBLZX      second+28(FP), DX
	MOVL         AX, X2
	VPBROADCASTD X2, Y2
	NOTL         AX
	XORQ         R9, R9
	MOVL         $-1, R13
	TESTL        DX, DX
	JNZ          second

first:
	MOVQ         0(DI), R8
	PROBE
	ADDQ         $24, DI
	DECQ         CX
	JNZ          first
	JMP          done

second:
	CMPL         20(DI), $-1
	JNE          next
	MOVQ         8(DI), R8
	PROBE

next:
	ADDQ         $24, DI
	DECQ         CX
	JNZ          second

done:
	VZEROUPPER
	MOVQ         R9, ret+32(FP)
	RET
