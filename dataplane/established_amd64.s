#include "textflag.h"
#include "go_asm.h"

// The established path's loop (Pipeline.establishedGo) in assembly. The
// Pipeline's fields are read at the offsets go_asm.h gives, and so are a
// connection record's and a tuple's, from flowtable's layout (unsafe.go,
// where what else the loop assumes is checked at compile time).

// A record is 48 bytes (3·16): its number times 3, shifted by 4.
#define FLOW_SHIFT 4
#define FLOW_STATUS const_flowStatus
#define FLOW_LAST const_flowLast
// A tuple: its addresses, then its ports as one little-endian word,
// SrcPort | DstPort<<16.
#define TUPLE_SRC const_tupleSrc
#define TUPLE_DST const_tupleDst
#define TUPLE_PORTS const_tuplePorts

// FOLD64 folds the one's-complement sum in r (64 bits) to 16
// (header.fold64); t is clobbered.
#define FOLD64(r, t) \
	MOVQ  r, t; \
	ROLQ  $32, t; \
	ADDQ  t, r; \
	SHRQ  $32, r; \
	MOVL  r, t; \
	ROLL  $16, t; \
	ADDL  t, r; \
	SHRL  $16, r

// func establishedAMD64(p *Pipeline, from, n int, frames *[]byte, sizes *int, out *Result, recs *flowtable.Flow, nrec uint64) int
//
// Registers through the loop: DI the Pipeline, BX the frame's index, R8
// the frames, R9 the records; SI the frame's meta, DX its record, CX the
// record's opposite tuple, R12 the next hop, R15 the frame, AX its IPv4
// header, R14 its lookup key.
TEXT ·establishedAMD64(SB), NOSPLIT, $0-72
	MOVQ    p+0(FP), DI
	MOVQ    from+8(FP), BX
	MOVQ    frames+24(FP), R8
	MOVQ    recs+48(FP), R9

loop:
	CMPQ    BX, n+16(FP)
	JGE     done
	IMUL3Q  $meta__size, BX, SI
	LEAQ    Pipeline_meta(DI)(SI*1), SI
	CMPB    meta_kind(SI), $const_kDone
	JEQ     next                          // decided already: passed over
	MOVL    Pipeline_refs(DI)(BX*4), CX
	TESTL   CX, CX
	JZ      done                          // no connection
	MOVL    CX, DX
	SHRL    $1, DX
	DECL    DX                            // the record's number
	CMPQ    DX, nrec+56(FP)
	JAE     done                          // never: a lookup's Ref
	LEAQ    (DX)(DX*2), DX
	SHLQ    $FLOW_SHIFT, DX
	ADDQ    R9, DX
	ANDL    $1, CX                        // the direction

	// Quiet: quietSet[quietIndex(status, dir, qbase)].
	MOVL    FLOW_STATUS(DX), R10
	ANDL    $0x3f, R10
	MOVL    CX, R11
	SHLL    $6, R11
	ORL     R11, R10
	MOVWLZX meta_qbase(SI), R11
	ORL     R11, R10
	ANDL    $511, R10
	LEAQ    ·quietSet(SB), R11
	CMPB    (R11)(R10*1), $0
	JEQ     done

	// The opposite direction's tuple.
	XORL    $1, CX
	SHLL    $4, CX
	ADDQ    DX, CX

	// The next hop: other.Src's slot in nhDst (nhSlot), then its entry.
	// An empty slot matches only 0.0.0.0 and names entry 0, whose MTU of
	// 0 refuses every packet.
	MOVL    TUPLE_SRC(CX), R10
	IMUL3L  $0x9E3779B1, R10, R11
	SHRL    $(32-const_nhDstBits), R11
	MOVQ    Pipeline_nhDst(DI)(R11*8), R11
	MOVQ    R11, R12
	SHRQ    $32, R12
	CMPL    R12, R10
	JNE     done
	MOVBLZX R11, R12
	SHLQ    $4, R12                       // nhEntry__size
	LEAQ    Pipeline_nh(DI)(R12*1), R12
	MOVWLZX meta_ipLen(SI), R10
	CMPW    R10, nhEntry_mtu(R12)
	JHI     done                          // larger than the egress MTU
	MOVWLZX nhEntry_port(R12), R11
	CMPL    R11, $const_MaxPorts
	JAE     done                          // never: an Env's port

	// Touch: the last-seen time, stored only when it moved.
	MOVL    Pipeline_now(DI), R11
	CMPL    FLOW_LAST(DX), R11
	JEQ     touched
	XCHGL   R11, FLOW_LAST(DX)

touched:
	// The frame and its IPv4 header (no options: quiet), and the lookup
	// key: the addresses and ports as received.
	LEAQ    (BX)(BX*2), R15
	MOVQ    (R8)(R15*8), R15
	MOVWLZX meta_l3(SI), AX
	ADDQ    R15, AX
	MOVQ    BX, R14
	SHLQ    $4, R14
	LEAQ    Pipeline_keys(DI)(R14*1), R14

	// dA = ^k.Src + ^k.Dst + other.Dst + other.Src (header.AddrsDelta);
	// the new addresses, other.Dst and other.Src, big-endian.
	MOVL    TUPLE_SRC(R14), R10
	NOTL    R10
	MOVL    TUPLE_DST(R14), R11
	NOTL    R11
	ADDQ    R11, R10
	MOVL    TUPLE_DST(CX), R11
	ADDQ    R11, R10
	MOVL    TUPLE_SRC(CX), R13
	ADDQ    R13, R10
	BSWAPL  R11
	MOVL    R11, 12(AX)
	BSWAPL  R13
	MOVL    R13, 16(AX)

	// The TTL, one less, and the header checksum updated for dA and the
	// TTL's decrement (0xfeff): header.PutIPv4NAT.
	MOVBLZX meta_ttl(SI), R11
	DECL    R11
	MOVB    R11, 8(AX)
	MOVWLZX meta_ipCsum(SI), R11
	XORL    $0xffff, R11
	ADDQ    R10, R11
	ADDQ    $0xfeff, R11
	FOLD64(R11, R13)
	NOTL    R11
	ROLW    $8, R11
	MOVW    R11, 10(AX)

	// The ports, as source<<16 | destination: the old ones from the key,
	// the new ones (other's, swapped) are other's ports word as it is.
	// dA + dP (header.PortsDelta) into R11; the new ports written
	// big-endian (header.PutPorts).
	MOVL    TUPLE_PORTS(R14), R11
	ROLL    $16, R11
	NOTL    R11
	MOVL    TUPLE_PORTS(CX), R13
	ADDQ    R13, R11
	ADDQ    R10, R11
	BSWAPL  R13
	MOVL    R13, 20(AX)

	// The transport checksum (header.PutL4Checksum): TCP's at 16 in its
	// header, UDP's at 6, where a zero means none and stays zero, and a
	// computed zero is sent as 0xffff.
	MOVWLZX meta_l4Csum(SI), R10
	MOVL    R10, R13
	XORL    $0xffff, R13
	ADDQ    R11, R13
	FOLD64(R13, R11)
	NOTL    R13
	MOVWLZX R13, R13
	CMPB    meta_kind(SI), $const_kUDP
	JNE     tcp
	MOVL    $0xffff, R11
	TESTL   R13, R13
	CMOVLEQ R11, R13
	TESTL   R10, R10
	CMOVLEQ R10, R13
	ROLW    $8, R13
	MOVW    R13, 26(AX)
	JMP     macs

tcp:
	ROLW    $8, R13
	MOVW    R13, 36(AX)

macs:
	// The next hop's MAC address, then the egress port's, which follows
	// it in the entry: twelve bytes.
	MOVQ    nhEntry_mac(R12), R11
	MOVQ    R11, 0(R15)
	MOVL    (nhEntry_mac+8)(R12), R11
	MOVL    R11, 8(R15)

	// out[i] = Result{Action: ActForward, Port: port, Len: sizes[i]}
	// (Action and Reason, zero, in one store), and the counters.
	MOVQ    sizes+32(FP), R10
	MOVQ    (R10)(BX*8), R10
	MOVQ    out+40(FP), R11
	MOVQ    BX, R13
	SHLQ    $4, R13                       // Result__size
	ADDQ    R13, R11
	MOVW    $const_ActForward, Result_Action(R11)
	MOVWLZX nhEntry_port(R12), R13
	MOVW    R13, Result_Port(R11)
	MOVQ    R10, Result_Len(R11)
	SHLQ    $5, R13                       // PortCounters__size
	INCQ    (Pipeline_cnt+Counters_Ports+PortCounters_TxPackets)(DI)(R13*1)
	ADDQ    R10, (Pipeline_cnt+Counters_Ports+PortCounters_TxBytes)(DI)(R13*1)
	INCQ    Pipeline_fastPkts(DI)
	MOVWLZX meta_ipLen(SI), R10
	ADDQ    R10, Pipeline_fastBytes(DI)

next:
	INCQ    BX
	JMP     loop

done:
	MOVQ    BX, ret+64(FP)
	RET
