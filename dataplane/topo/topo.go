// Package topo is the kernel's view of the network as xnat uses it:
// interfaces with their addresses, routes and neighbours. A Snapshot is
// plain, immutable data. The netlink mirror (dataplane/kernel) builds a
// new one whenever the kernel's state changes; the dataplane compiles it
// into the lookups its packet path uses and swaps them in between batches.
package topo

import "fmt"

// Prefix is an IPv4 prefix: an address (big-endian value, 192.0.2.1 is
// 0xC0000201) and a length.
type Prefix struct {
	Addr uint32
	Len  uint8
}

// Contains reports whether a lies in p.
func (p Prefix) Contains(a uint32) bool {
	if p.Len == 0 {
		return true
	}
	m := ^uint32(0) << (32 - p.Len)
	return a&m == p.Addr&m
}

func (p Prefix) String() string {
	return fmt.Sprintf("%d.%d.%d.%d/%d", byte(p.Addr>>24), byte(p.Addr>>16), byte(p.Addr>>8), byte(p.Addr), p.Len)
}

// Iface is one network interface.
type Iface struct {
	Index int // kernel ifindex
	Name  string
	MAC   [6]byte
	MTU   int
	Up    bool // administratively up and with carrier
	// Addrs are the interface's IPv4 addresses with their prefix
	// lengths, primary first.
	Addrs []Prefix
}

// Route is an IPv4 route of the main table.
type Route struct {
	Dst     Prefix
	Gateway uint32 // 0 for a directly connected route
	IfIndex int
	Src     uint32 // preferred source, 0 if none
	Metric  int
}

// NeighState is what the kernel knows of a neighbour.
type NeighState uint8

const (
	// NeighIncomplete: resolution is under way; no address.
	NeighIncomplete NeighState = iota
	// NeighValid: the link-layer address can be used (REACHABLE, STALE,
	// DELAY, PROBE, PERMANENT, NOARP).
	NeighValid
	// NeighFailed: resolution failed after the kernel's probes (FAILED).
	NeighFailed
)

// Neigh is an IPv4 neighbour (ARP) entry.
type Neigh struct {
	IfIndex int
	IP      uint32
	MAC     [6]byte
	State   NeighState
}

// Snapshot is the kernel's state at one moment.
type Snapshot struct {
	Ifaces []Iface
	Routes []Route
	Neighs []Neigh
}

// Iface returns the interface with the given ifindex.
func (s *Snapshot) Iface(index int) (*Iface, bool) {
	for i := range s.Ifaces {
		if s.Ifaces[i].Index == index {
			return &s.Ifaces[i], true
		}
	}
	return nil, false
}

// IfaceByName returns the interface with the given name.
func (s *Snapshot) IfaceByName(name string) (*Iface, bool) {
	for i := range s.Ifaces {
		if s.Ifaces[i].Name == name {
			return &s.Ifaces[i], true
		}
	}
	return nil, false
}
