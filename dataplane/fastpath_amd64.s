#include "textflag.h"
#include "go_asm.h"

// The pipeline's fast path in assembly: the parser's loop for the common
// frames (Pipeline.parseFastGo) and the established path's loop
// (Pipeline.establishedGo). The Pipeline's fields are read at the offsets
// go_asm.h gives, and so are a connection record's and a tuple's, from
// flowtable's layout (unsafe.go, where what else the loops assume is
// checked at compile time).

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

// RXFLUSH adds the run of frames received on port R11 (R12 packets, R13
// bytes) to that port's counters, when the environment has the port
// (rxRun.flush), and empties the run; R9 is clobbered, and L names the
// label it needs (one use per name).
#define RXFLUSH(L) \
	TESTQ   R12, R12; \
	JZ      L; \
	CMPQ    R11, nports+40(FP); \
	JGE     L; \
	CMPQ    R11, $const_MaxPorts; \
	JGE     L; \
	MOVQ    R11, R9; \
	SHLQ    $5, R9; \
	ADDQ    R12, (Pipeline_cnt+Counters_Ports+PortCounters_RxPackets)(DI)(R9*1); \
	ADDQ    R13, (Pipeline_cnt+Counters_Ports+PortCounters_RxBytes)(DI)(R9*1); \
L: \
	XORQ    R12, R12; \
	XORQ    R13, R13

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

// func parseFastAMD64(p *Pipeline, frames *[]byte, sizes *int, in *uint16, n int, nports int) (rest uint64)
//
// parseFastGo's loop: each frame's meta and key where it is an untagged
// TCP or UDP packet with an IPv4 header without options that checks out,
// else its bit in rest; the receive counters by runs of one port. A size
// beyond its frame's capacity, where parseFastGo would panic slicing, is
// left to the full path, which panics the same way.
//
// Registers through the loop: DI the Pipeline, BX the frame's index, R8
// the frames, AX rest; R11, R12 and R13 the run of one port; SI the
// frame's meta, R14 its data, R15 its size, DX its port and then its
// IPv4 total length, R9 its protocol.
TEXT ·parseFastAMD64(SB), NOSPLIT, $0-56
	MOVQ    p+0(FP), DI
	MOVQ    frames+8(FP), R8
	XORQ    BX, BX
	XORQ    AX, AX
	XORL    R11, R11
	XORQ    R12, R12
	XORQ    R13, R13

ploop:
	CMPQ    BX, n+32(FP)
	JGE     pdone
	IMUL3Q  $meta__size, BX, SI
	LEAQ    Pipeline_meta(DI)(SI*1), SI
	LEAQ    (BX)(BX*2), CX
	MOVQ    (R8)(CX*8), R14
	MOVQ    16(R8)(CX*8), DX              // the frame's capacity
	MOVQ    sizes+16(FP), R15
	MOVQ    (R15)(BX*8), R15
	CMPQ    R15, DX
	JHI     prest                         // negative, or beyond the capacity

	// The receive counters, by runs of one port.
	MOVQ    in+24(FP), DX
	MOVWLZX (DX)(BX*2), DX
	CMPL    DX, R11
	JEQ     prun
	RXFLUSH(pflush1)
	MOVL    DX, R11

prun:
	INCQ    R12
	ADDQ    R15, R13
	MOVW    DX, meta_in(SI)
	CMPQ    R15, $const_fastUDPLen
	JLT     prest
	CMPQ    DX, nports+40(FP)
	JGE     prest                         // a port the environment lacks

	// EtherType IPv4, then version 4 and IHL 5: three bytes.
	MOVL    12(R14), CX
	BSWAPL  CX
	SHRL    $8, CX
	CMPL    CX, $0x080045
	JNE     prest
	// The total length, within the frame; no fragment offset; a TTL
	// above one.
	MOVWLZX 16(R14), DX
	ROLW    $8, DX
	LEAQ    14(DX), CX
	CMPQ    CX, R15
	JGT     prest
	TESTB   $0x1f, 20(R14)
	JNE     prest
	CMPB    21(R14), $0
	JNE     prest
	CMPB    22(R14), $1
	JLS     prest
	// The header checksum (header.Valid20): the five words' sum is not
	// zero and is a multiple of 0xffff, which its product with the
	// inverse of 0xffff modulo 2^64 tells.
	MOVL    14(R14), CX
	MOVL    18(R14), R9
	ADDQ    R9, CX
	MOVL    22(R14), R9
	ADDQ    R9, CX
	MOVL    26(R14), R9
	ADDQ    R9, CX
	MOVL    30(R14), R9
	ADDQ    R9, CX
	TESTQ   CX, CX
	JZ      prest
	MOVQ    $0xfffefffefffeffff, R9
	IMULQ   R9, CX
	MOVQ    $0x1000100010001, R9
	CMPQ    CX, R9
	JHI     prest

	MOVBLZX 23(R14), R9                   // the protocol
	CMPL    R9, $17                       // UDP
	JEQ     pudp
	CMPL    R9, $6                        // TCP
	JNE     prest

	// TCP: a whole header (then the frame holds fastTCPLen bytes), its
	// data offset within the packet; quiet (0x80) when ACK is the only
	// one of SYN, FIN, RST and ACK set (quietBase).
	CMPL    DX, $(const_fastTCPLen-14)
	JLT     prest
	MOVBLZX 46(R14), CX
	SHRL    $4, CX
	SHLL    $2, CX
	CMPL    CX, $20
	JLT     prest
	LEAL    -20(DX), R10
	CMPL    CX, R10
	JGT     prest
	MOVBLZX 47(R14), CX
	MOVB    $const_kTCP, meta_kind(SI)
	MOVB    CX, meta_tcpFlags(SI)
	ANDL    $0x17, CX
	CMPL    CX, $0x10
	MOVL    $const_notQuiet, CX
	MOVL    $0x80, R10
	CMOVLEQ R10, CX
	MOVW    CX, meta_qbase(SI)
	MOVWLZX 50(R14), CX
	ROLW    $8, CX
	MOVW    CX, meta_l4Csum(SI)
	JMP     pcommon

pudp:
	// UDP: its length at least its header and within the packet.
	CMPL    DX, $28
	JLT     prest
	MOVWLZX 38(R14), CX
	ROLW    $8, CX
	CMPL    CX, $8
	JLT     prest
	LEAL    -20(DX), R10
	CMPL    CX, R10
	JGT     prest
	MOVB    $const_kUDP, meta_kind(SI)
	MOVW    $0, meta_qbase(SI)
	MOVWLZX 40(R14), CX
	ROLW    $8, CX
	MOVW    CX, meta_l4Csum(SI)

pcommon:
	MOVW    $14, meta_l3(SI)
	MOVW    $34, meta_l4(SI)
	MOVW    DX, meta_ipLen(SI)
	MOVB    R9, meta_proto(SI)
	MOVB    22(R14), CX
	MOVB    CX, meta_ttl(SI)
	MOVWLZX 24(R14), CX
	ROLW    $8, CX
	MOVW    CX, meta_ipCsum(SI)
	// The key, as its two words (flowtable.Tuple.Set): Src | Dst<<32, and
	// SrcPort | DstPort<<16 | Proto<<32.
	MOVL    26(R14), CX
	BSWAPL  CX
	MOVL    30(R14), R10
	BSWAPL  R10
	SHLQ    $32, R10
	ORQ     R10, CX
	MOVQ    BX, R10
	SHLQ    $4, R10
	MOVQ    CX, Pipeline_keys(DI)(R10*1)
	MOVWLZX 34(R14), CX
	ROLW    $8, CX
	MOVWLZX 36(R14), DX
	ROLW    $8, DX
	SHLL    $16, DX
	ORL     DX, CX
	SHLQ    $32, R9
	ORQ     R9, CX
	MOVQ    CX, (Pipeline_keys+8)(DI)(R10*1)
	JMP     pnext

prest:
	BTSQ    BX, AX

pnext:
	INCQ    BX
	JMP     ploop

pdone:
	RXFLUSH(pflush2)
	MOVQ    AX, rest+48(FP)
	RET
