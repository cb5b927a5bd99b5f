//go:build amd64 && !purego

#include "textflag.h"
#include "go_asm.h"

// Fields and sizes come from go_asm.h (probe_tag, probe__size,
// Tuple__size, Flow_status, Table_nb, …). Where a size is used as a shift
// it is named here, and TestAsmLayout holds it to the Go types: a bucket
// is 16 four-byte slots, 64 bytes; a tuple 16 bytes; a record
// Flow__size, 48 = 3·16, reached as (i + 2i) << 4; a Ref 4 bytes.
#define BUCKET_SHIFT 6
#define TUPLE_SHIFT 4
#define REC_SIZE_SHIFT 4
#define REF_SIZE 4

// The upper halves of the Y registers. Every instruction here that names
// an X or Y register is VEX-encoded: VMOVD, not MOVL AX, X3, which
// assembles to the legacy-SSE MOVD. And every way out of a routine that wrote a
// Y register, returns and calls alike, passes a VZEROUPPER. On Intel
// cores a legacy-SSE instruction while the upper halves hold data costs
// a state transition of tens of cycles (or, on some, a merge with the
// whole register and a dependency on it), and so does the Go code after
// a return left them dirty; AMD's Zen cores charge nothing for either.
// TestVectorUpperState decodes these routines in the test binary and
// holds them to both rules.

// BMATCH compares the bucket at the address in reg with the tag in Y3
// under ^mask in Y2, leaving the mask of matching slots (slot i, bit i)
// in out; tmp is clobbered, and Y0 and Y1.
#define BMATCH(reg, out, tmp) \
	VPAND        0(reg), Y2, Y0; \
	VPAND        32(reg), Y2, Y1; \
	VPCMPEQD     Y3, Y0, Y0; \
	VPCMPEQD     Y3, Y1, Y1; \
	VMOVMSKPS    Y0, out; \
	VMOVMSKPS    Y1, tmp; \
	SHLL         $8, tmp; \
	ORL          tmp, out

// PROBE compares the bucket number R8 with the tag of the probe at DI and
// stores the candidate (or noCand) in the probe's idx, adding 1 to R9
// when there is none.
// It leaves ZF set when there is none.
// In: Y2 = ^mask in every lane, AX = mask, R13 = noCand.
#define PROBE \
	SHLQ         $BUCKET_SHIFT, R8; \
	ADDQ         SI, R8; \
	VPBROADCASTD probe_tag(DI), Y3; \
	BMATCH(R8, R10, R11); \
	TZCNTL       R10, R11; \
	ANDL         $(const_slotsPerBucket-1), R11; \
	MOVL         (R8)(R11*4), R12; \
	ANDL         AX, R12; \
	DECL         R12; \
	TESTL        R10, R10; \
	CMOVLEQ      R13, R12; \
	SETEQ        BX; \
	MOVBQZX      BX, BX; \
	ADDQ         BX, R9; \
	MOVL         R12, probe_idx(DI); \
	TESTL        R10, R10

// PREC prefetches both lines the candidate record in R12 may span.
//
// Every prefetch here is PREFETCHT1, into L2 and not L1: a line bound for
// L1 holds one of L1's few miss buffers until it arrives, which capped a
// batch's misses in flight; L2 keeps many more, and the touch loop that
// follows takes the line from L2 in a few cycles. At a million
// connections this took LookupBatch from about 52 to about 31 ns a key
// (go test -bench LookupBatchFloor, alternated runs of both builds).
#define PREC \
	MOVQ         recs+8(FP), DX; \
	MOVL         R12, R12; \
	LEAQ         (R12)(R12*2), R12; \
	SHLQ         $REC_SIZE_SHIFT, R12; \
	PREFETCHT1   (DX)(R12*1); \
	PREFETCHT1   32(DX)(R12*1)

// func tagScanAVX2(buckets *bucket, recs *Flow, bb *probe, n int, notMask uint32, second bool) int
TEXT ·tagScanAVX2(SB), NOSPLIT, $0-48
	MOVQ         buckets+0(FP), SI
	MOVQ         bb+16(FP), DI
	MOVQ         n+24(FP), CX
	MOVL         notMask+32(FP), AX
	VMOVD        AX, X2
	VPBROADCASTD X2, Y2
	NOTL         AX
	MOVBLZX      second+36(FP), DX
	XORQ         R9, R9
	MOVL         $const_noCand, R13
	TESTL        DX, DX
	JNZ          second

first:
	MOVQ         probe_b1(DI), R8
	PROBE
	JZ           miss1
	PREC
	JMP          next1

miss1:
	// Not in its first bucket: start the second on its way.
	MOVQ         probe_b2(DI), DX
	SHLQ         $BUCKET_SHIFT, DX
	PREFETCHT1   (SI)(DX*1)

next1:
	ADDQ         $probe__size, DI
	DECQ         CX
	JNZ          first
	JMP          done

second:
	CMPL         probe_idx(DI), R13
	JNE          next2
	MOVQ         probe_b2(DI), R8
	PROBE
	JZ           next2
	PREC

next2:
	ADDQ         $probe__size, DI
	DECQ         CX
	JNZ          second

done:
	VZEROUPPER
	MOVQ         R9, ret+40(FP)
	RET

// func bucketMatchAVX2(b *bucket, tag, notMask uint32) uint32
TEXT ·bucketMatchAVX2(SB), NOSPLIT, $0-20
	MOVQ         b+0(FP), SI
	MOVL         tag+8(FP), AX
	MOVL         notMask+12(FP), CX
	VMOVD        AX, X3
	VMOVD        CX, X2
	VPBROADCASTD X3, Y3
	VPBROADCASTD X2, Y2
	BMATCH(SI, AX, CX)
	VZEROUPPER
	MOVL         AX, ret+16(FP)
	RET

// func bucketMatch2AVX2(b1, b2 *bucket, tag, notMask uint32) (m1, m2 uint32)
TEXT ·bucketMatch2AVX2(SB), NOSPLIT, $0-32
	MOVQ         b1+0(FP), SI
	MOVQ         b2+8(FP), DI
	MOVL         tag+16(FP), AX
	MOVL         notMask+20(FP), CX
	VMOVD        AX, X3
	VMOVD        CX, X2
	VPBROADCASTD X3, Y3
	VPBROADCASTD X2, Y2
	BMATCH(SI, AX, CX)
	MOVL         AX, m1+24(FP)
	BMATCH(DI, AX, CX)
	VZEROUPPER
	MOVL         AX, m2+28(FP)
	RET

// HASHPLACE hashes the key at 0(SI), read as its two 8-byte words, with
// the hasher at 0(h)
// (hasher.hash: h = mum(mum(w0^s0, w1^s1)^s2, w0^w1^s3), mum(a, b) the
// hi^lo of a·b) and places it (Table.place): b1 = uint32(h)·nb >> 32 in
// R10; b2 = (h>>32)·nb >> 32 in R11, the next bucket if equal; the tag,
// uint32(h·K >> 32) &^ idxMask or idxMask+1 for zero, in AX. In: R12 =
// nb, R13 = K, R14 = ^idxMask. Clobbers R8, R9, DX. tagL and doneL name
// its two labels (one use per function).
#define HASHPLACE(h, tagL, doneL) \
	MOVQ         0(SI), R8; \
	MOVQ         8(SI), R9; \
	MOVQ         R8, AX; \
	XORQ         hasher_s0(h), AX; \
	MOVQ         R9, R10; \
	XORQ         hasher_s1(h), R10; \
	MULQ         R10; \
	XORQ         DX, AX; \
	XORQ         hasher_s2(h), AX; \
	XORQ         R9, R8; \
	XORQ         hasher_s3(h), R8; \
	MULQ         R8; \
	XORQ         DX, AX; \
	MOVL         AX, R10; \
	IMULQ        R12, R10; \
	SHRQ         $32, R10; \
	MOVQ         AX, R11; \
	SHRQ         $32, R11; \
	IMULQ        R12, R11; \
	SHRQ         $32, R11; \
	CMPQ         R11, R10; \
	JNE          tagL; \
	INCQ         R11; \
	CMPQ         R11, R12; \
	JNE          tagL; \
	XORL         R11, R11; \
tagL: \
	IMULQ        R13, AX; \
	SHRQ         $32, AX; \
	ANDL         R14, AX; \
	JNZ          doneL; \
	MOVL         R14, AX; \
	NOTL         AX; \
	INCL         AX; \
doneL:

// func hashProbesAMD64(keys *Tuple, bb *probe, n int, h *hasher, nb uint64, notMask uint32, buckets *bucket, prefetch bool)
//
// For each of n > 0 keys: the hash (hasher.hash), then the buckets and tag
// (Table.place) into its probe; with prefetch, the first bucket is
// started on its way (PREFETCHT1).
TEXT ·hashProbesAMD64(SB), NOSPLIT, $0-57
	MOVQ         keys+0(FP), SI
	MOVQ         bb+8(FP), DI
	MOVQ         n+16(FP), CX
	MOVQ         h+24(FP), BX
	MOVQ         nb+32(FP), R12
	MOVL         notMask+40(FP), R14
	MOVQ         buckets+48(FP), R15
	MOVQ         $0x9E3779B97F4A7C15, R13

hloop:
	HASHPLACE(BX, htag, hstore)
	MOVQ         R10, probe_b1(DI)
	MOVQ         R11, probe_b2(DI)
	MOVL         AX, probe_tag(DI)
	CMPB         prefetch+56(FP), $0
	JEQ          hnext
	SHLQ         $BUCKET_SHIFT, R10
	PREFETCHT1   (R15)(R10*1)

hnext:
	ADDQ         $Tuple__size, SI
	ADDQ         $probe__size, DI
	DECQ         CX
	JNZ          hloop
	RET

// func prefetchBucketsAMD64(keys *Tuple, n int, h *hasher, nb uint64, notMask uint32, buckets *bucket)
//
// For each of n > 0 keys: the hash and the buckets (HASHPLACE), and both
// buckets started on their way (PREFETCHT1).
TEXT ·prefetchBucketsAMD64(SB), NOSPLIT, $0-48
	MOVQ         keys+0(FP), SI
	MOVQ         n+8(FP), CX
	MOVQ         h+16(FP), BX
	MOVQ         nb+24(FP), R12
	MOVL         notMask+32(FP), R14
	MOVQ         buckets+40(FP), R15
	MOVQ         $0x9E3779B97F4A7C15, R13

ploop:
	HASHPLACE(BX, ptag, pdone)
	SHLQ         $BUCKET_SHIFT, R10
	PREFETCHT1   (R15)(R10*1)
	SHLQ         $BUCKET_SHIFT, R11
	PREFETCHT1   (R15)(R11*1)
	ADDQ         $Tuple__size, SI
	DECQ         CX
	JNZ          ploop
	RET

// A record's fields are read at go_asm.h's offsets (Flow_orig, …), and
// its status flags are go_asm.h's constants (state.go): live is confirmed
// and not dying; the state is in the bits of stateMask.
#define FLAG_CONFIRMED const_flagConfirmed
#define FLAG_LIVE_MASK (const_flagConfirmed|const_flagDying)

// CMPREC compares the key at 0(SI) with both tuples of the record at
// rec, then checks the record confirmed, not dying, and not past its
// state's timeout at now (last-seen time after now counts as not
// expired). When all holds it falls through, at foundL, with the
// direction in CX; else it jumps to fail. nowop is now's operand, timeop
// the state's timeout, indexed by R11 (timeoutIndex: the state and the
// timeout class, once the status is read); tmp is clobbered, and R11. replyL, liveL and foundL name its
// labels (one use per function).
#define CMPREC(rec, tmp, nowop, timeop, replyL, liveL, foundL, fail) \
	MOVQ         0(SI), R11; \
	XORL         CX, CX; \
	CMPQ         Flow_orig(rec), R11; \
	JNE          replyL; \
	MOVQ         8(SI), R11; \
	CMPQ         (Flow_orig+8)(rec), R11; \
	JEQ          liveL; \
replyL: \
	MOVQ         0(SI), R11; \
	CMPQ         Flow_reply(rec), R11; \
	JNE          fail; \
	MOVQ         8(SI), R11; \
	CMPQ         (Flow_reply+8)(rec), R11; \
	JNE          fail; \
	MOVL         $1, CX; \
liveL: \
	MOVL         Flow_status(rec), R11; \
	MOVL         R11, tmp; \
	ANDL         $FLAG_LIVE_MASK, tmp; \
	CMPL         tmp, $FLAG_CONFIRMED; \
	JNE          fail; \
	MOVL         R11, tmp; \
	SHRL         $const_classShift, tmp; \
	ANDL         $const_classIndexMask, tmp; \
	ANDL         $const_stateMask, R11; \
	ORL          tmp, R11; \
	MOVL         nowop, tmp; \
	SUBL         Flow_last(rec), tmp; \
	JS           foundL; \
	CMPL         tmp, timeop; \
	JHI          fail; \
foundL:

// func compareProbesAMD64(keys *Tuple, bb *probe, refs *Ref, n int, recs *Flow, nrec uint64, timeouts *timeouts, now Time) (found int, rescan uint64)
TEXT ·compareProbesAMD64(SB), NOSPLIT, $0-80
	MOVQ         keys+0(FP), SI
	MOVQ         bb+8(FP), DI
	MOVQ         refs+16(FP), BX
	MOVQ         recs+32(FP), R13
	MOVQ         nrec+40(FP), R12
	MOVQ         timeouts+48(FP), R14
	XORQ         AX, AX              // found
	XORQ         DX, DX              // rescan
	XORQ         R8, R8              // i

cloop:
	MOVL         $0, (BX)(R8*4)
	MOVL         probe_idx(DI), R9   // candidate
	CMPQ         R9, R12
	JAE          cnext               // noCand: not found
	LEAQ         (R9)(R9*2), R10
	SHLQ         $REC_SIZE_SHIFT, R10
	ADDQ         R13, R10            // the record
	CMPREC(R10, R15, now+56(FP), (R14)(R11*4), creply, clive, cfound, cfail)
	LEAL         1(R9), R9
	SHLL         $1, R9
	ORL          CX, R9
	MOVL         R9, (BX)(R8*4)
	INCQ         AX
	JMP          cnext

cfail:
	BTSQ         R8, DX

cnext:
	ADDQ         $Tuple__size, SI
	ADDQ         $probe__size, DI
	INCQ         R8
	CMPQ         R8, n+24(FP)
	JLT          cloop
	MOVQ         AX, found+64(FP)
	MOVQ         DX, rescan+72(FP)
	RET

// FINDCAND finds the candidate for the key at 0(SI): its hash and place
// (HASHPLACE, with h in DI), its first bucket matched with its tag (Y2:
// ^mask in every lane) and, when no slot there holds the tag, its second.
// It jumps to absentL when neither does, and otherwise falls through, at
// candL, with the matching slots' mask in R9 and their bucket's address
// in R10. In: R12, R13, R14 as HASHPLACE; R15 the buckets. tagL,
// probeL and candL name its labels (one use per function).
#define FINDCAND(tagL, probeL, candL, absentL) \
	HASHPLACE(DI, tagL, probeL); \
	VMOVD        AX, X3; \
	VPBROADCASTD X3, Y3; \
	SHLQ         $BUCKET_SHIFT, R10; \
	ADDQ         R15, R10; \
	BMATCH(R10, R9, CX); \
	TESTL        R9, R9; \
	JNZ          candL; \
	SHLQ         $BUCKET_SHIFT, R11; \
	LEAQ         (R15)(R11*1), R10; \
	BMATCH(R10, R9, CX); \
	TESTL        R9, R9; \
	JZ           absentL; \
candL:

// CANDREC reads again the first slot FINDCAND found holding the tag: its
// record number in R9 and the record's address in R10; an emptied slot
// (noCand) jumps to absentL. The table is in BX, ^mask in R14 (kept).
#define CANDREC(absentL) \
	TZCNTL       R9, CX; \
	ANDL         $(const_slotsPerBucket-1), CX; \
	MOVL         (R10)(CX*4), R9; \
	NOTL         R14; \
	ANDL         R14, R9; \
	NOTL         R14; \
	DECL         R9; \
	CMPQ         R9, (Table_recs+8)(BX); \
	JAE          absentL; \
	LEAQ         (R9)(R9*2), R10; \
	SHLQ         $REC_SIZE_SHIFT, R10; \
	ADDQ         Table_recs(BX), R10

// func lookupOneAMD64(t *Table, k *Tuple, now Time) (ref Ref, sure bool)
//
// One key from hash to answer, for a single lookup: the hash and place
// as hashProbesAMD64, its first bucket matched with the tag and, when no
// slot holds it, its second; the first slot holding the tag names the
// candidate, compared as compareProbesAMD64 does. sure is false when the
// candidate fails the compare (another tuple under the tag, or a dead
// record): the caller then scans both buckets. Being short, with no
// branch that depends on where the tag sits, it lets the core run on
// into the next lookup while this one's lines are on their way. The
// table's fields are read at the offsets go_asm.h gives.
TEXT ·lookupOneAMD64(SB), NOSPLIT, $0-29
	MOVQ         t+0(FP), BX
	MOVQ         k+8(FP), SI
	MOVQ         Table_nb(BX), R12
	MOVL         Table_idxMask(BX), R14
	NOTL         R14                 // ^mask
	MOVQ         $0x9E3779B97F4A7C15, R13
	LEAQ         Table_h(BX), DI
	MOVQ         Table_buckets(BX), R15
	VMOVD        R14, X2
	VPBROADCASTD X2, Y2
	FINDCAND(otag, oprobe, ocand, oabsent)
	VZEROUPPER
	CANDREC(oabsent2)
	CMPREC(R10, DX, now+16(FP), Table_timeouts(BX)(R11*4), oreply, olive, ofound, ounsure)
	LEAL         1(R9), R9
	SHLL         $1, R9
	ORL          CX, R9
	MOVL         R9, ref+24(FP)
	MOVB         $1, sure+28(FP)
	RET

oabsent:
	VZEROUPPER

oabsent2:
	MOVL         $0, ref+24(FP)
	MOVB         $1, sure+28(FP)
	RET

ounsure:
	MOVL         $0, ref+24(FP)
	MOVB         $0, sure+28(FP)
	RET

// func lookupSmallAMD64(t *Table, keys *Tuple, refs *Ref, n int, now Time) (found int, unsure uint64)
//
// LookupBatch for a table in the caches: each of n > 0 keys from hash to
// answer in one pass, as lookupOneAMD64 answers one, with nothing between
// keys to wait for. refs[i] is the key's Ref, or 0; unsure has bit i where
// the candidate failed the compare and the caller must scan both
// buckets. Locals: the keys' end and the next Ref's address.
TEXT ·lookupSmallAMD64(SB), NOSPLIT, $16-56
	MOVQ         t+0(FP), BX
	MOVQ         keys+8(FP), SI
	MOVQ         n+24(FP), AX
	SHLQ         $TUPLE_SHIFT, AX
	ADDQ         SI, AX
	MOVQ         AX, end-8(SP)
	MOVQ         refs+16(FP), AX
	MOVQ         AX, refp-16(SP)
	MOVQ         $0, found+40(FP)
	MOVQ         $0, unsure+48(FP)
	MOVQ         Table_nb(BX), R12
	MOVL         Table_idxMask(BX), R14
	NOTL         R14                 // ^mask
	VMOVD        R14, X2
	VPBROADCASTD X2, Y2
	MOVQ         $0x9E3779B97F4A7C15, R13
	LEAQ         Table_h(BX), DI
	MOVQ         Table_buckets(BX), R15

sloop:
	FINDCAND(stag, sprobe, scand, sabsent)
	CANDREC(sabsent)
	CMPREC(R10, DX, now+32(FP), Table_timeouts(BX)(R11*4), sreply, slive, sfound, sunsure)
	LEAL         1(R9), R9
	SHLL         $1, R9
	ORL          CX, R9
	MOVQ         refp-16(SP), R8
	MOVL         R9, (R8)
	INCQ         found+40(FP)
	JMP          snext

sunsure:
	// The key's index, (SI - keys) / 16, as its bit in unsure.
	MOVQ         SI, CX
	SUBQ         keys+8(FP), CX
	SHRQ         $TUPLE_SHIFT, CX
	MOVQ         $1, R8
	SHLQ         CX, R8
	ORQ          R8, unsure+48(FP)

sabsent:
	MOVQ         refp-16(SP), R8
	MOVL         $0, (R8)

snext:
	ADDQ         $REF_SIZE, refp-16(SP)
	ADDQ         $Tuple__size, SI
	CMPQ         SI, end-8(SP)
	JNE          sloop
	VZEROUPPER
	RET

// func cpuid(leaf, sub uint32) (a, b, c, d uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL         leaf+0(FP), AX
	MOVL         sub+4(FP), CX
	CPUID
	MOVL         AX, a+8(FP)
	MOVL         BX, b+12(FP)
	MOVL         CX, c+16(FP)
	MOVL         DX, d+20(FP)
	RET
