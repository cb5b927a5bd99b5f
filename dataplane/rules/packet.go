package rules

// Packet is the per-packet metadata the dataplane fills before evaluating.
// It holds no pointers. Addresses are IPv4 in big-endian value form
// (192.0.2.1 == 0xC0000201), ports in host order.
type Packet struct {
	Src, Dst         uint32
	SrcPort, DstPort uint16 // TCP/UDP ports; ignored for other protocols
	Length           uint16 // IP total length: what -m length matches and counters count
	InIf, OutIf      uint16 // interface IDs (index into Compile's table), NoIface for none
	Proto            uint8
	ICMPType         uint8
	ICMPCode         uint8
	TCPFlags         uint8
	CtState          CtState // one of CtNew/CtEstablished/CtRelated/CtInvalid, plus CtSNAT/CtDNAT
	Fragment         bool    // a non-first fragment (what -f matches)
	SrcMAC           [6]byte
	Mark             uint32 // nfmark; MARK and CONNMARK --restore-mark change it
	CtMark           uint32 // the connection's mark; CONNMARK changes it
}

// NoIface is the interface ID of "no interface" (e.g. the output
// interface before routing).
const NoIface = 0xFFFF

// MaxIfaces is the size of the interface table Compile accepts.
const MaxIfaces = 256

// Action is a filter verdict.
type Action uint8

const (
	Accept Action = iota
	Drop
	Reject
)

func (a Action) String() string {
	switch a {
	case Drop:
		return "DROP"
	case Reject:
		return "REJECT"
	}
	return "ACCEPT"
}

// Verdict is the result of filter evaluation; Reject says how to reject
// when Action is Reject.
type Verdict struct {
	Action Action
	Reject RejectType
}

func (v Verdict) String() string {
	if v.Action == Reject {
		return "REJECT " + v.Reject.String()
	}
	return v.Action.String()
}

// NATKind is the outcome of nat evaluation at one hook.
type NATKind uint8

const (
	NATNone       NATKind = iota // no rule decided: chain policy (always ACCEPT in nat)
	NATAccept                    // a rule ACCEPTed: no translation at this hook
	NATSNAT                      // translate the source to Range
	NATDNAT                      // translate the destination to Range
	NATMasquerade                // translate the source to the egress interface's address, ports in Range
	NATFullCone                  // FULLCONENAT: in POSTROUTING an endpoint-independent mapping (Range, or the egress address), in PREROUTING the inbound side of live mappings
)

var natKindNames = [...]string{"none", "ACCEPT", "SNAT", "DNAT", "MASQUERADE", "FULLCONENAT"}

func (k NATKind) String() string {
	if int(k) < len(natKindNames) {
		return natKindNames[k]
	}
	return "nat(?)"
}

// NATDecision is what nat evaluation decided for a connection's first
// packet at one hook. Target is a small integer naming the NAT target
// (same kind and range → same ID, kept across recompilations with
// Options.Prev) so the dataplane can keep one port pool per target.
type NATDecision struct {
	Kind   NATKind
	Target uint16
	Range  NATRange
	RuleID uint64 // the rule that decided, 0 for NATNone
}

// Pick chooses a DNAT backend from the decision's range for a connection
// whose tuple hashes to hash: the same hash always gives the same backend.
// The address is MinAddr when no address range was given (MASQUERADE,
// or the caller substitutes its own); the port is 0 when no port range was
// given (keep the original port).
func (d *NATDecision) Pick(hash uint32) (addr uint32, port uint16) {
	r := &d.Range
	if r.Flags&NATMapIPs != 0 {
		n := uint64(r.MaxAddr-r.MinAddr) + 1
		addr = r.MinAddr + uint32((uint64(hash)*n)>>32)
	}
	if r.Flags&NATProtoSpecified != 0 {
		h2 := hash*0x9E3779B1 ^ hash>>15
		n := uint64(r.MaxPort-r.MinPort) + 1
		port = r.MinPort + uint16((uint64(h2)*n)>>32)
	}
	return addr, port
}
