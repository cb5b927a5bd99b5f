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
	// CtrToXnatLocal: IPv4 to the box that xnat owns: a reply to an
	// external port or ICMP id a connection holds, a new connection a
	// DNAT rule of the interface may match, or an ICMP error about one
	// of those.
	CtrToXnatLocal
	// CtrRedirectFailed: meant for xnat but no socket is bound on the
	// queue (a queue without a worker, or a worker restarting): dropped,
	// never passed to the kernel, which would forward it untranslated or
	// answer it with a reset.
	CtrRedirectFailed
	// CtrPassNotIPv4: ARP, IPv6 and any other EtherType.
	CtrPassNotIPv4
	// CtrPassLocal: IPv4 for the box, not xnat's: the box's own sockets,
	// echo requests, non-first fragments, other protocols, DHCP to a
	// client.
	CtrPassLocal
	// CtrPassMalformed: truncated frames, IPv4 headers with a bad
	// version or length, L4 headers cut short.
	CtrPassMalformed
	// CtrPassBroadcast: multicast, the limited broadcast and the
	// directed broadcasts of the box's subnets: never forwarded (RFC
	// 1812 §5.3.5), the kernel's (VRRP, OSPF, DHCP).
	CtrPassBroadcast
	// CtrPassVLAN: 802.1Q- or 802.1ad-tagged frames: xnat's interfaces
	// carry no VLAN, and the kernel owns the box's VLAN sub-interfaces
	// (it drops a tag no sub-interface is configured for).
	CtrPassVLAN
	// NumCounters is the number of counters.
	NumCounters
)

// Protocol indexes of a slot's use counts.
const (
	protoTCP  = 0
	protoUDP  = 1
	protoICMP = 2
	numProtos = 3
)

// Local address slots (the value of the locals map).
const (
	// NoSlot marks a local address on which xnat holds no port.
	NoSlot = 0xffffffff
	// SlotAll marks a local address whose every TCP and UDP port and ICMP
	// echo id xnat takes (an external address for which no slot was
	// left).
	SlotAll = 0xfffffffe
	// SlotBroadcast marks a directed broadcast address of one of the
	// box's subnets: the kernel's, counted as CtrPassBroadcast.
	SlotBroadcast = 0xfffffffd
)

// PortSetBytes is the size of one port set: a bit per port.
const PortSetBytes = 65536 / 8

// Use counts: per slot, per protocol (TCP, UDP, ICMP id), a 16-bit count
// per port in host byte order.
const (
	// ProtoCountBytes is the size of one protocol's counts in a slot.
	ProtoCountBytes = 65536 * 2
	// SlotBytes is the size of one slot's counts.
	SlotBytes = numProtos * ProtoCountBytes
)

// DNAT steering groups: per interface, up to MaxDNATGroups (destination
// prefix, protocol) pairs with a port bitmap each.
const (
	// MaxDNATGroups is how many groups one interface's program checks.
	MaxDNATGroups = 64
	groupHeader   = 16
	groupBytes    = groupHeader + PortSetBytes
	groupsBytes   = MaxDNATGroups * groupBytes

	groupUsed     = 1
	groupInvert   = 2
	groupAllPorts = 4
)

const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4
)

// Frame constants, in the byte order a 16-bit load of network-order data
// yields on a little-endian machine.
const (
	ethPVLANle   = 0x0081 // 0x8100
	ethPQinQle   = 0xa888 // 0x88a8
	ethPIPv4le   = 0x0008 // 0x0800
	dhcpClientLE = 0x4400 // port 68
	// The first octet of an address loaded as a 32-bit word is its low
	// byte: multicast is 224.0.0.0/4.
	mcastMask  = 0xf0
	mcastValue = 0xe0
)

// noPort in r8 at "steer": the packet has no port (an echo request,
// another protocol), so a group's port bitmap is not consulted.
const noPort = 0x10000

// What "steer" checks (r9).
const (
	checkUses = 1
	checkDNAT = 2
)

// Stack slots.
const (
	stKey   = -4  // scratch map key
	stCtr   = -8  // counter key
	stDst   = -12 // destination address, as loaded (network order)
	stSlot  = -16 // the destination's slot
	stProto = -20 // protocol index of the use counts
)

// maps are the maps a program instance references by file descriptor.
type maps struct {
	xsks, counters, locals, uses, dnat, dnatActive *ebpf.Map
}

// instructions assembles the program. Registers while parsing: r6 ctx, r7
// data, r8 data_end, r9 the header being examined. At "steer" the
// packet is no longer read: r7 is the IP protocol, r8 the port (host
// order) or noPort, r9 what to check.
func instructions(m maps) asm.Instructions {
	var b builder
	b.counters = m.counters
	R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 := asm.R0, asm.R1, asm.R2, asm.R3, asm.R4, asm.R5, asm.R6, asm.R7, asm.R8, asm.R9, asm.R10

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
		// A tagged frame is the kernel's: its VLAN sub-interfaces, or its
		// drop of a VLAN the box does not have.
		asm.JEq.Imm(R3, ethPVLANle, "pass_vlan"),
		asm.JEq.Imm(R3, ethPQinQle, "pass_vlan"),
		asm.JNE.Imm(R3, ethPIPv4le, "pass_not_ipv4"),
		// IPv4 header: version 4, IHL >= 5, all of it in the frame.
	)
	b.add(ipv4HeaderCheck()...)
	b.add(
		asm.Mov.Reg(R2, R9),
		asm.Add.Reg(R2, R3),
		asm.JGT.Reg(R2, R8, "malformed"),
		// Multicast (VRRP, OSPF, IGMP, mDNS) and the limited broadcast
		// are the kernel's; xnat forwards unicast.
		asm.LoadMem(R2, R9, 16, asm.Word),
		asm.StoreMem(R10, stDst, R2, asm.Word),
		asm.JEq.Imm32(R2, -1, "pass_broadcast"),
		asm.Mov.Reg(R4, R2),
		asm.And.Imm(R4, mcastMask),
		asm.JEq.Imm(R4, mcastValue, "pass_broadcast"),
		// Is the destination one of the box's addresses (or broadcast
		// addresses)?
		asm.Mov.Reg(R2, R10),
		asm.Add.Imm(R2, stDst),
		asm.LoadMapPtr(R1, m.locals.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(R0, 0, "not_local"),
		asm.LoadMem(R1, R0, 0, asm.Word),
		asm.JEq.Imm32(R1, -3, "pass_broadcast"), // SlotBroadcast
		asm.StoreMem(R10, stSlot, R1, asm.Word),
		// Addressed to the box. A non-first fragment has no port to
		// decide by: the kernel reassembles it (xnat would drop it).
		asm.LoadMem(R3, R9, 6, asm.Half),
		asm.HostTo(asm.BE, R3, asm.Half),
		asm.And.Imm(R3, 0x1fff),
		asm.JNE.Imm(R3, 0, "pass_local"),
		asm.LoadMem(R4, R9, 9, asm.Byte), // protocol
		asm.LoadMem(R3, R9, 0, asm.Byte),
		asm.And.Imm(R3, 0x0f),
		asm.LSh.Imm(R3, 2),
		asm.Add.Reg(R9, R3), // r9: L4 header
		asm.JEq.Imm(R4, 6, "tcp"),
		asm.JEq.Imm(R4, 17, "udp"),
		asm.JEq.Imm(R4, 1, "icmp"),
		// Another protocol: a DNAT rule may take it whole.
		asm.Mov.Reg(R7, R4),
		asm.Mov.Imm(R8, noPort),
		asm.Mov.Imm(R9, checkDNAT),
		asm.Ja.Label("steer"),

		// Not for the box: xnat forwards it, except a DHCP message to a
		// client (UDP port 68), which may come to an address the box is
		// being offered and is not yet its own.
		asm.LoadMem(R4, R9, 9, asm.Byte).WithSymbol("not_local"),
		asm.JNE.Imm(R4, 17, "to_xnat_forward"),
		asm.LoadMem(R3, R9, 6, asm.Half),
		asm.HostTo(asm.BE, R3, asm.Half),
		asm.And.Imm(R3, 0x1fff),
		asm.JNE.Imm(R3, 0, "to_xnat_forward"),
		asm.LoadMem(R3, R9, 0, asm.Byte),
		asm.And.Imm(R3, 0x0f),
		asm.LSh.Imm(R3, 2),
		asm.Mov.Reg(R5, R9),
		asm.Add.Reg(R5, R3),
		asm.Mov.Reg(R2, R5),
		asm.Add.Imm(R2, 4),
		asm.JGT.Reg(R2, R8, "to_xnat_forward"),
		asm.LoadMem(R2, R5, 2, asm.Half),
		asm.JEq.Imm(R2, dhcpClientLE, "pass_local"),
		asm.Ja.Label("to_xnat_forward"),

		// TCP or UDP: the destination port.
		asm.StoreImm(R10, stProto, protoTCP, asm.Word).WithSymbol("tcp"),
		asm.Ja.Label("l4_dport"),
		asm.StoreImm(R10, stProto, protoUDP, asm.Word).WithSymbol("udp"),
		asm.Mov.Reg(R2, R9).WithSymbol("l4_dport"),
		asm.Add.Imm(R2, 4),
		asm.JGT.Reg(R2, R8, "malformed"),
		asm.LoadMem(R2, R9, 2, asm.Half),
		asm.Ja.Label("port_steer"),

		// ICMP.
		asm.Mov.Reg(R2, R9).WithSymbol("icmp"),
		asm.Add.Imm(R2, 8),
		asm.JGT.Reg(R2, R8, "malformed"),
		asm.LoadMem(R3, R9, 0, asm.Byte),
		asm.JEq.Imm(R3, 0, "echo_reply"),
		asm.JEq.Imm(R3, 8, "echo_request"),
		asm.JEq.Imm(R3, 3, "icmp_error"),
		asm.JEq.Imm(R3, 11, "icmp_error"),
		asm.JEq.Imm(R3, 12, "icmp_error"),
		asm.Ja.Label("pass_local"),
		// An echo reply is xnat's when its id is held (the reply to a
		// translated ping).
		asm.StoreImm(R10, stProto, protoICMP, asm.Word).WithSymbol("echo_reply"),
		asm.LoadMem(R2, R9, 4, asm.Half),
		asm.Mov.Imm(R4, 1),
		asm.Mov.Imm(R5, checkUses),
		asm.Ja.Label("id_steer"),
		// An echo request is the kernel's unless a DNAT rule takes ICMP.
		asm.Mov.Imm(R7, 1).WithSymbol("echo_request"),
		asm.Mov.Imm(R8, noPort),
		asm.Mov.Imm(R9, checkDNAT),
		asm.Ja.Label("steer"),
		// An error: the datagram it quotes is one the box sent, so its
		// source port (or echo id) is the one to look up.
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
		asm.StoreImm(R10, stProto, protoTCP, asm.Word).WithSymbol("inner_tcp"),
		asm.Ja.Label("inner_sport"),
		asm.StoreImm(R10, stProto, protoUDP, asm.Word).WithSymbol("inner_udp"),
		asm.LoadMem(R2, R9, 0, asm.Half).WithSymbol("inner_sport"),
		asm.Ja.Label("port_steer"),
		asm.LoadMem(R3, R9, 0, asm.Byte).WithSymbol("inner_icmp"),
		asm.JEq.Imm(R3, 8, "inner_echo"),
		asm.JEq.Imm(R3, 0, "inner_echo"),
		asm.Ja.Label("pass_local"),
		asm.StoreImm(R10, stProto, protoICMP, asm.Word).WithSymbol("inner_echo"),
		asm.LoadMem(R2, R9, 4, asm.Half),
		asm.Mov.Imm(R4, 1),
		asm.Mov.Imm(R5, checkUses),
		asm.Ja.Label("id_steer"),

		// r2: a TCP or UDP port in network order, r4 the protocol: check
		// the use counts and the DNAT groups.
		asm.Mov.Imm(R5, checkUses|checkDNAT).WithSymbol("port_steer"),
		// r2: a port or id in network order, r4 the protocol, r5 what to
		// check.
		asm.HostTo(asm.BE, R2, asm.Half).WithSymbol("id_steer"),
		asm.And.Imm(R2, 0xffff),
		asm.Mov.Reg(R8, R2),
		asm.Mov.Reg(R7, R4),
		asm.Mov.Reg(R9, R5),

		// steer: r7 protocol, r8 port or noPort, r9 what to check; the
		// stack holds the destination, its slot and the protocol index.
		// Use counts first: a port a connection holds.
		asm.Mov.Reg(R1, R9).WithSymbol("steer"),
		asm.And.Imm(R1, checkUses),
		asm.JEq.Imm(R1, 0, "dnat"),
		asm.LoadMem(R1, R10, stSlot, asm.Word),
		asm.JEq.Imm32(R1, -1, "dnat"),          // NoSlot
		asm.JEq.Imm32(R1, -2, "to_xnat_local"), // SlotAll
		asm.Mov.Reg(R2, R10),
		asm.Add.Imm(R2, stSlot),
		asm.LoadMapPtr(R1, m.uses.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(R0, 0, "dnat"),
		asm.LoadMem(R1, R10, stProto, asm.Word),
		asm.And.Imm(R1, 3),
		asm.JGT.Imm(R1, protoICMP, "dnat"),
		asm.LSh.Imm(R1, 17),
		asm.Mov.Reg(R2, R8),
		asm.And.Imm(R2, 0xffff),
		asm.LSh.Imm(R2, 1),
		asm.Add.Reg(R1, R2),
		asm.Add.Reg(R0, R1),
		asm.LoadMem(R1, R0, 0, asm.Half),
		asm.JNE.Imm(R1, 0, "to_xnat_local"),

		// Then the interface's DNAT groups: a new connection a DNAT rule
		// may take.
		asm.Mov.Reg(R1, R9).WithSymbol("dnat"),
		asm.And.Imm(R1, checkDNAT),
		asm.JEq.Imm(R1, 0, "pass_local"),
		asm.StoreImm(R10, stKey, 0, asm.Word),
		asm.Mov.Reg(R2, R10),
		asm.Add.Imm(R2, stKey),
		asm.LoadMapPtr(R1, m.dnatActive.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(R0, 0, "pass_local"),
		asm.LoadMem(R1, R0, 0, asm.Word),
		asm.And.Imm(R1, 1),
		asm.StoreMem(R10, stKey, R1, asm.Word),
		asm.Mov.Reg(R2, R10),
		asm.Add.Imm(R2, stKey),
		asm.LoadMapPtr(R1, m.dnat.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(R0, 0, "pass_local"),
		asm.Mov.Reg(R9, R0),
		asm.LoadMem(R1, R10, stDst, asm.Word),
	)
	// One block per group, in order; the first unused one ends the list.
	// r9 points at the group examined (offsets of a load are 16-bit, so
	// the pointer moves on rather than the offset).
	for g := range MaxDNATGroups {
		next := fmt.Sprintf("group_%d", g+1)
		if g == MaxDNATGroups-1 {
			next = "pass_local"
		}
		addrOK := fmt.Sprintf("group_%d_addr", g)
		inv := fmt.Sprintf("group_%d_inv", g)
		port := fmt.Sprintf("group_%d_port", g)
		var ins []asm.Instruction
		if g > 0 {
			ins = append(ins, asm.Add.Imm(R9, groupBytes).WithSymbol(fmt.Sprintf("group_%d", g)))
		}
		ins = append(ins,
			asm.LoadMem(R2, R9, 8, asm.Byte), // flags
			asm.Mov.Reg(R3, R2),
			asm.And.Imm(R3, groupUsed),
			asm.JEq.Imm(R3, 0, "pass_local"),
			asm.LoadMem(R3, R9, 9, asm.Byte), // protocol, 0 for any
			asm.JEq.Imm(R3, 0, addrOK),
			asm.JNE.Reg(R3, R7, next),
			asm.LoadMem(R4, R9, 4, asm.Word).WithSymbol(addrOK), // mask
			asm.Mov.Reg(R3, R1),
			asm.And.Reg(R3, R4),
			asm.LoadMem(R4, R9, 0, asm.Word), // masked address
			asm.Mov.Reg(R5, R2),
			asm.And.Imm(R5, groupInvert),
			asm.JNE.Imm(R5, 0, inv),
			asm.JNE.Reg(R3, R4, next),
			asm.Ja.Label(port),
			asm.JEq.Reg(R3, R4, next).WithSymbol(inv),
			asm.Mov.Reg(R5, R2).WithSymbol(port),
			asm.And.Imm(R5, groupAllPorts),
			asm.JNE.Imm(R5, 0, "to_xnat_local"),
			asm.JGT.Imm(R8, 0xffff, "to_xnat_local"),
			asm.Mov.Reg(R3, R8),
			asm.RSh.Imm(R3, 3),
			asm.Mov.Reg(R4, R9),
			asm.Add.Imm(R4, groupHeader),
			asm.Add.Reg(R4, R3),
			asm.LoadMem(R3, R4, 0, asm.Byte),
			asm.Mov.Reg(R5, R8),
			asm.And.Imm(R5, 7),
			asm.RSh.Reg(R3, R5),
			asm.And.Imm(R3, 1),
			asm.JNE.Imm(R3, 0, "to_xnat_local"),
		)
		b.add(ins...)
	}
	b.add(asm.Ja.Label("pass_local"))

	b.label("to_xnat_forward")
	b.count(CtrToXnatForward)
	b.add(asm.Ja.Label("redirect"))
	b.label("to_xnat_local")
	b.count(CtrToXnatLocal)
	b.label("redirect")
	b.add(
		asm.LoadMem(R2, R6, 16, asm.Word), // rx_queue_index
		asm.LoadMapPtr(R1, m.xsks.FD()),
		asm.Mov.Imm(R3, xdpDrop), // no socket on the queue: drop
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
	}{{"pass_not_ipv4", CtrPassNotIPv4}, {"pass_local", CtrPassLocal}, {"malformed", CtrPassMalformed}, {"pass_broadcast", CtrPassBroadcast}, {"pass_vlan", CtrPassVLAN}} {
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
		asm.StoreImm(asm.R10, stCtr, int64(idx), asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stCtr),
		asm.LoadMapPtr(asm.R1, b.counters.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, skip),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
	)
	b.label(skip)
}
