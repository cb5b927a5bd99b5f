package dataplane

import "sync/atomic"

// Reason says why the pipeline dropped a frame (or did something other
// than forward it). Each has its own counter.
type Reason uint8

const (
	ReasonNone Reason = iota
	// Malformed frames, each kind its own reason.
	ReasonShortFrame     // too short for its Ethernet or VLAN header
	ReasonIPVersion      // IPv4 ethertype but not version 4
	ReasonIPHeaderLen    // IHL below 5 or beyond the frame
	ReasonIPTotalLen     // total length shorter than the header or beyond the frame
	ReasonIPChecksum     // header checksum wrong
	ReasonL4Header       // TCP/UDP/ICMP header truncated or inconsistent
	ReasonFragment       // a non-first fragment (not tracked; see README)
	ReasonTTLExceeded    // TTL would reach zero (ICMP time exceeded sent when allowed)
	ReasonNoRoute        // no route to the destination through an xnat port
	ReasonNoNeighbour    // no link-layer address for the next hop yet
	ReasonMTU            // larger than the egress MTU (ICMP fragmentation needed sent if DF)
	ReasonFiltered       // a filter rule or policy dropped it
	ReasonRejected       // a REJECT rule answered it
	ReasonInvalid        // conntrack state INVALID and not forwarded
	ReasonUnsolicited    // from outside, matching no connection and no DNAT
	ReasonTableFull      // the connection table is full
	ReasonOutOfPorts     // no free external port
	ReasonPerSource      // the inside host is at its connection or port limit
	ReasonInsertFailed   // the new connection lost an insert race or clashed
	ReasonNoAddress      // MASQUERADE on an interface without an address
	ReasonNotIPv4        // not IPv4: passed to the kernel
	ReasonICMPRateLimit  // an ICMP error was due but the rate limit held it back
	ReasonNoPort         // received on a port the current environment lacks (an interface gone while its frames were in flight)
	ReasonNeighQueueFull // held for a next hop being resolved, and pushed out of its full queue (unres_qlen_bytes)
	ReasonNeighFailed    // held for a next hop whose resolution failed (ICMP host unreachable sent when allowed)
	ReasonMartian        // a source or destination a router never forwards (0/8, 127/8, 169.254/16, 240/4)
	ReasonBroadcast      // broadcast or multicast: never forwarded; passed to the kernel
	ReasonPerSourceFull  // the per-source limiter had no slot for the inside host
	ReasonRPFilter       // the reverse-path filter refused the source (rp_filter; Linux's IPReversePathFilter)
	ReasonVLAN           // an 802.1Q-tagged frame: xnat's interfaces carry no VLAN
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonNone:           "none",
	ReasonShortFrame:     "malformed_short_frame",
	ReasonIPVersion:      "malformed_ip_version",
	ReasonIPHeaderLen:    "malformed_ip_header_length",
	ReasonIPTotalLen:     "malformed_ip_total_length",
	ReasonIPChecksum:     "malformed_ip_checksum",
	ReasonL4Header:       "malformed_l4_header",
	ReasonFragment:       "fragment",
	ReasonTTLExceeded:    "ttl_exceeded",
	ReasonNoRoute:        "no_route",
	ReasonNoNeighbour:    "no_neighbour",
	ReasonMTU:            "mtu",
	ReasonFiltered:       "filtered",
	ReasonRejected:       "rejected",
	ReasonInvalid:        "invalid",
	ReasonUnsolicited:    "unsolicited",
	ReasonTableFull:      "table_full",
	ReasonOutOfPorts:     "out_of_ports",
	ReasonPerSource:      "per_source_limit",
	ReasonInsertFailed:   "insert_failed",
	ReasonNoAddress:      "no_address",
	ReasonNotIPv4:        "not_ipv4",
	ReasonICMPRateLimit:  "icmp_rate_limited",
	ReasonNoPort:         "no_port",
	ReasonNeighQueueFull: "neigh_queue_full",
	ReasonNeighFailed:    "neigh_failed",
	ReasonMartian:        "martian",
	ReasonBroadcast:      "broadcast",
	ReasonPerSourceFull:  "per_source_full",
	ReasonRPFilter:       "rp_filter",
	ReasonVLAN:           "vlan",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Malformed reports whether r is one of the malformed-frame reasons.
func (r Reason) Malformed() bool { return r >= ReasonShortFrame && r <= ReasonL4Header }

// Reasons lists every reason but ReasonNone, in order.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := ReasonShortFrame; r < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// PortCounters are one port's traffic.
type PortCounters struct {
	RxPackets, RxBytes, TxPackets, TxBytes uint64
}

// Counters are one core's pipeline counters.
type Counters struct {
	Ports     [MaxPorts]PortCounters
	Drops     [numReasons]uint64 // by Reason
	Created   uint64             // connections created
	Forwarded uint64             // frames forwarded
	Replies   uint64             // ICMP errors and TCP resets generated
	ToKernel  uint64             // frames passed to the kernel
	// NeighQueued counts frames held while their next hop was resolved.
	NeighQueued uint64
	Batches     uint64
	// Full-cone mappings (FULLCONENAT): created for an inside endpoint,
	// reused by a later connection of it, ended after their last
	// connection (expired), connections admitted inbound through one, and
	// connections that could not have or join one (mapping table full, a
	// mapping made by another core at the same moment, its external port
	// shared): those run as MASQUERADE/SNAT connections.
	MapCreated, MapReused, MapExpired, MapInbound, MapFailed uint64
}

// Drop returns the count of one reason.
func (c *Counters) Drop(r Reason) uint64 { return c.Drops[r] }

// Malformed sums the malformed-frame reasons.
func (c *Counters) Malformed() uint64 {
	var n uint64
	for r := ReasonShortFrame; r <= ReasonL4Header; r++ {
		n += c.Drops[r]
	}
	return n
}

// Add adds o to c.
func (c *Counters) Add(o *Counters) {
	for i := range c.Ports {
		c.Ports[i].RxPackets += o.Ports[i].RxPackets
		c.Ports[i].RxBytes += o.Ports[i].RxBytes
		c.Ports[i].TxPackets += o.Ports[i].TxPackets
		c.Ports[i].TxBytes += o.Ports[i].TxBytes
	}
	for i := range c.Drops {
		c.Drops[i] += o.Drops[i]
	}
	c.Created += o.Created
	c.Forwarded += o.Forwarded
	c.Replies += o.Replies
	c.ToKernel += o.ToKernel
	c.NeighQueued += o.NeighQueued
	c.Batches += o.Batches
	c.MapCreated += o.MapCreated
	c.MapReused += o.MapReused
	c.MapExpired += o.MapExpired
	c.MapInbound += o.MapInbound
	c.MapFailed += o.MapFailed
}

// counterWords is the number of words in Counters, which is nothing but
// uint64s (flat views it as an array of them, for publishing).
const counterWords = MaxPorts*4 + int(numReasons) + 11

// published is a core's counters as readers see them: atomic copies made
// at the end of every batch, on cache lines only this core writes.
type published struct {
	w [counterWords]atomic.Uint64
	_ [128]byte
}

func (p *published) store(c *Counters) {
	w := c.flat()
	for i := range w {
		if p.w[i].Load() != w[i] {
			p.w[i].Store(w[i])
		}
	}
}

// storeFast is store after a batch the established path forwarded whole:
// it changed only the traffic counters of the first nports ports (the
// first words of Counters), Forwarded and Batches, and the rest are left
// as they are.
func (p *published) storeFast(c *Counters, nports int) {
	w := c.flat()
	for i := range min(nports, MaxPorts) * 4 {
		if p.w[i].Load() != w[i] {
			p.w[i].Store(w[i])
		}
	}
	p.w[forwardedWord].Store(w[forwardedWord])
	p.w[batchesWord].Store(w[batchesWord])
}

func (p *published) load() Counters {
	var c Counters
	w := c.flat()
	for i := range w {
		w[i] = p.w[i].Load()
	}
	return c
}
