package xdpprog

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Counter indexes of the per-CPU counters array.
const (
	// CtrToXnatForward: IPv4 to an address that is not the box's.
	CtrToXnatForward = iota
	// CtrToXnatLocal: IPv4 to the box for a port or ICMP id in the NAT
	// sets, an ICMP error about such a flow, or a non-first fragment.
	CtrToXnatLocal
	// CtrRedirectFailed: meant for xnat but no socket on the queue;
	// passed to the kernel.
	CtrRedirectFailed
	// CtrPassNotIPv4: ARP, IPv6 and any other EtherType.
	CtrPassNotIPv4
	// CtrPassLocal: IPv4 to the box, not for xnat (its own services).
	CtrPassLocal
	// CtrPassMalformed: truncated frames, IPv4 headers with a bad
	// version or length, L4 headers cut short.
	CtrPassMalformed
	// NumCounters is the number of counters.
	NumCounters
)

// Protocol indexes of the port-set map.
const (
	protoTCP  = 0
	protoUDP  = 1
	protoICMP = 2
	numProtos = 3
)

// PortSetBytes is the size of one port set: a bit per port (or ICMP id).
const PortSetBytes = 65536 / 8

const (
	xdpPass     = 2
	xdpRedirect = 4
)

// Frame constants, in the byte order a 16-bit load of network-order data
// yields on a little-endian machine.
const (
	ethPVLANle = 0x0081 // 0x8100
	ethPIPv4le = 0x0008 // 0x0800
)

// instructions assembles the program. The maps are referenced by file
// descriptor. Registers: r6 ctx, r7 data, r8 data_end, r9 the header
// being examined (later the port or id looked up).
func instructions(xsks, counters, locals, ports *ebpf.Map) asm.Instructions {
	var b builder
	b.counters = counters
	R0, R1, R2, R3, R4, R6, R7, R8, R9, R10 := asm.R0, asm.R1, asm.R2, asm.R3, asm.R4, asm.R6, asm.R7, asm.R8, asm.R9, asm.R10

	b.add(
		asm.Mov.Reg(R6, asm.R1),
		asm.LoadMem(R7, R6, 0, asm.Word), // data
		asm.LoadMem(R8, R6, 4, asm.Word), // data_end
		// Ethernet header.
		asm.Mov.Reg(R2, R7),
		asm.Add.Imm(R2, 14),
		asm.JGT.Reg(R2, R8, "malformed"),
		asm.LoadMem(R3, R7, 12, asm.Half),
		asm.Mov.Reg(R9, R7),
		asm.Add.Imm(R9, 14),
		asm.JNE.Imm(R3, ethPVLANle, "ethertype"),
		// One 802.1Q tag.
		asm.Mov.Reg(R2, R7),
		asm.Add.Imm(R2, 18),
		asm.JGT.Reg(R2, R8, "malformed"),
		asm.LoadMem(R3, R7, 16, asm.Half),
		asm.Add.Imm(R9, 4),
		asm.JNE.Imm(R3, ethPIPv4le, "pass_not_ipv4").WithSymbol("ethertype"),
		// IPv4 header: version 4, IHL >= 5, all of it in the frame.
	)
	b.add(ipv4HeaderCheck()...)
	b.add(
		asm.Mov.Reg(R2, R9),
		asm.Add.Reg(R2, R3),
		asm.JGT.Reg(R2, R8, "malformed"),
		// Is the destination one of the box's addresses?
		asm.LoadMem(R2, R9, 16, asm.Word),
		asm.StoreMem(R10, -4, R2, asm.Word),
		asm.Mov.Reg(R2, R10),
		asm.Add.Imm(R2, -4),
		asm.LoadMapPtr(R1, locals.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(R0, 0, "to_xnat_forward"),
		// Addressed to the box. A non-first fragment goes to xnat, which
		// tracks fragments.
		asm.LoadMem(R3, R9, 6, asm.Half),
		asm.HostTo(asm.BE, R3, asm.Half),
		asm.And.Imm(R3, 0x1fff),
		asm.JNE.Imm(R3, 0, "to_xnat_local"),
		asm.LoadMem(R4, R9, 9, asm.Byte), // protocol
		asm.LoadMem(R3, R9, 0, asm.Byte),
		asm.And.Imm(R3, 0x0f),
		asm.LSh.Imm(R3, 2),
		asm.Add.Reg(R9, R3), // r9: L4 header
		asm.JEq.Imm(R4, 6, "tcp"),
		asm.JEq.Imm(R4, 17, "udp"),
		asm.JEq.Imm(R4, 1, "icmp"),
		asm.Ja.Label("pass_local"),

		// TCP or UDP: destination port in the set?
		asm.StoreImm(R10, -4, protoTCP, asm.Word).WithSymbol("tcp"),
		asm.Ja.Label("l4_dport"),
		asm.StoreImm(R10, -4, protoUDP, asm.Word).WithSymbol("udp"),
		asm.Mov.Reg(R2, R9).WithSymbol("l4_dport"),
		asm.Add.Imm(R2, 4),
		asm.JGT.Reg(R2, R8, "malformed"),
		asm.LoadMem(R9, R9, 2, asm.Half),
		asm.Ja.Label("check_port"),

		// ICMP.
		asm.Mov.Reg(R2, R9).WithSymbol("icmp"),
		asm.Add.Imm(R2, 8),
		asm.JGT.Reg(R2, R8, "malformed"),
		asm.LoadMem(R3, R9, 0, asm.Byte),
		asm.JEq.Imm(R3, 0, "icmp_echo"),
		asm.JEq.Imm(R3, 8, "icmp_echo"),
		asm.JEq.Imm(R3, 3, "icmp_error"),
		asm.JEq.Imm(R3, 11, "icmp_error"),
		asm.JEq.Imm(R3, 12, "icmp_error"),
		asm.Ja.Label("pass_local"),
		// Echo request or reply: its id in the ICMP set?
		asm.StoreImm(R10, -4, protoICMP, asm.Word).WithSymbol("icmp_echo"),
		asm.LoadMem(R9, R9, 4, asm.Half),
		asm.Ja.Label("check_port"),
		// Error: the embedded datagram is one the box sent, so its source
		// port (or echo id) is the translated one.
		asm.Add.Imm(R9, 8).WithSymbol("icmp_error"),
	)
	b.add(ipv4HeaderCheck()...)
	b.add(
		asm.LoadMem(R4, R9, 9, asm.Byte),
		asm.Add.Reg(R9, R3),
		asm.Mov.Reg(R2, R9),
		asm.Add.Imm(R2, 8),
		asm.JGT.Reg(R2, R8, "malformed"),
		asm.JEq.Imm(R4, 6, "inner_tcp"),
		asm.JEq.Imm(R4, 17, "inner_udp"),
		asm.JEq.Imm(R4, 1, "inner_icmp"),
		asm.Ja.Label("pass_local"),
		asm.StoreImm(R10, -4, protoTCP, asm.Word).WithSymbol("inner_tcp"),
		asm.Ja.Label("inner_sport"),
		asm.StoreImm(R10, -4, protoUDP, asm.Word).WithSymbol("inner_udp"),
		asm.LoadMem(R9, R9, 0, asm.Half).WithSymbol("inner_sport"),
		asm.Ja.Label("check_port"),
		asm.LoadMem(R3, R9, 0, asm.Byte).WithSymbol("inner_icmp"),
		asm.JEq.Imm(R3, 8, "inner_echo"),
		asm.JEq.Imm(R3, 0, "inner_echo"),
		asm.Ja.Label("pass_local"),
		asm.StoreImm(R10, -4, protoICMP, asm.Word).WithSymbol("inner_echo"),
		asm.LoadMem(R9, R9, 4, asm.Half),

		// r9: port or id in network order; the key at r10-4 names the
		// set. Test bit port&7 of byte port>>3.
		asm.HostTo(asm.BE, R9, asm.Half).WithSymbol("check_port"),
		asm.And.Imm(R9, 0xffff),
		asm.Mov.Reg(R2, R10),
		asm.Add.Imm(R2, -4),
		asm.LoadMapPtr(R1, ports.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(R0, 0, "pass_local"),
		asm.Mov.Reg(R1, R9),
		asm.RSh.Imm(R1, 3),
		asm.Add.Reg(R0, R1),
		asm.LoadMem(R1, R0, 0, asm.Byte),
		asm.Mov.Reg(R2, R9),
		asm.And.Imm(R2, 7),
		asm.RSh.Reg(R1, R2),
		asm.And.Imm(R1, 1),
		asm.JEq.Imm(R1, 0, "pass_local"),
		asm.Ja.Label("to_xnat_local"),
	)

	b.label("to_xnat_forward")
	b.count(CtrToXnatForward)
	b.add(asm.Ja.Label("redirect"))
	b.label("to_xnat_local")
	b.count(CtrToXnatLocal)
	b.label("redirect")
	b.add(
		asm.LoadMem(R2, R6, 16, asm.Word), // rx_queue_index
		asm.LoadMapPtr(R1, xsks.FD()),
		asm.Mov.Imm(R3, xdpPass), // no socket on the queue: pass
		asm.FnRedirectMap.Call(),
		asm.Mov.Reg(R7, R0),
		asm.JEq.Imm(R7, xdpRedirect, "return_r7"),
	)
	b.count(CtrRedirectFailed)
	b.label("return_r7")
	b.add(asm.Mov.Reg(R0, R7), asm.Return())

	for _, p := range []struct {
		label string
		ctr   int
	}{{"pass_not_ipv4", CtrPassNotIPv4}, {"pass_local", CtrPassLocal}, {"malformed", CtrPassMalformed}} {
		b.label(p.label)
		b.count(p.ctr)
		b.add(asm.Mov.Imm(R0, xdpPass), asm.Return())
	}
	return b.insns
}

// builder appends instructions, attaching pending labels to the next one.
type builder struct {
	insns    asm.Instructions
	pending  string
	counters *ebpf.Map
	n        int
}

// ipv4HeaderCheck checks the IPv4 header at r9 — 20 bytes within the frame
// (r8 is its end), version 4, IHL at least 5 — jumping to "malformed"
// otherwise, and leaves the header's length in bytes in r3. It serves the
// frame's own header and the one an ICMP error quotes.
func ipv4HeaderCheck() asm.Instructions {
	R2, R3, R4, R8, R9 := asm.R2, asm.R3, asm.R4, asm.R8, asm.R9
	return asm.Instructions{
		asm.Mov.Reg(R2, R9),
		asm.Add.Imm(R2, 20),
		asm.JGT.Reg(R2, R8, "malformed"),
		asm.LoadMem(R3, R9, 0, asm.Byte),
		asm.Mov.Reg(R4, R3),
		asm.RSh.Imm(R4, 4),
		asm.JNE.Imm(R4, 4, "malformed"),
		asm.And.Imm(R3, 0x0f),
		asm.JLT.Imm(R3, 5, "malformed"),
		asm.LSh.Imm(R3, 2),
	}
}

func (b *builder) add(insns ...asm.Instruction) {
	for _, ins := range insns {
		if b.pending != "" {
			ins = ins.WithSymbol(b.pending)
			b.pending = ""
		}
		b.insns = append(b.insns, ins)
	}
}

// label names the next instruction; two labels in a row get a no-op
// jump between them.
func (b *builder) label(name string) {
	if b.pending != "" {
		b.add(asm.Ja.Label(name))
	}
	b.pending = name
}

// count adds 1 to a per-CPU counter; r1-r5 and r0 are clobbered.
func (b *builder) count(idx int) {
	b.n++
	skip := fmt.Sprintf("count_done_%d", b.n)
	b.add(
		asm.StoreImm(asm.R10, -8, int64(idx), asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -8),
		asm.LoadMapPtr(asm.R1, b.counters.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, skip),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
	)
	b.label(skip)
}
