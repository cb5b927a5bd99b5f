package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"xnat/internal/netns"
)

// Addresses of the topology.
var (
	GenAddr    = ip4(10, 0, 0, 2)    // gen0 (the generator's kernel side)
	DUTIn      = ip4(10, 0, 0, 1)    // dut0
	DUTOut     = ip4(203, 0, 113, 1) // dut1: the masquerading address
	SrvAddr    = ip4(203, 0, 113, 2) // srv0: the server
	FlowBase   = ip4(10, 0, 0, 16)   // first source address of generated flows
	outsideNet = "203.0.113.0/24"
)

func ip4(a, b, c, d byte) uint32 { return binary.BigEndian.Uint32([]byte{a, b, c, d}) }

func ipString(a uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a)
	return net.IP(b[:]).String()
}

// Interface names.
const (
	GenIf    = "gen0"
	DUTInIf  = "dut0"
	DUTOutIf = "dut1"
	SrvIf    = "srv0"
)

// NS is one network namespace of a Topology (internal/netns does the
// work: creating, entering, configuring and removing namespaces).
type NS = netns.NS

// LinkStats are a link's packet counters.
type LinkStats struct {
	RxPackets, TxPackets, RxDropped, TxDropped uint64
}

// linkStats reads a link's counters.
func linkStats(n *NS, name string) (LinkStats, error) {
	s, err := n.LinkStats(name)
	if err != nil {
		return LinkStats{}, fmt.Errorf("e2e: %w", err)
	}
	return LinkStats{RxPackets: s.RxPackets, TxPackets: s.TxPackets, RxDropped: s.RxDropped, TxDropped: s.TxDropped}, nil
}

func mac6(n *NS, link string) ([6]byte, error) {
	var m [6]byte
	hw, err := n.MAC(link)
	if err != nil {
		return m, fmt.Errorf("e2e: %w", err)
	}
	copy(m[:], hw)
	return m, nil
}

// Topology is the end-to-end topology:
//
//	gen: gen0 10.0.0.2/24 ── veth ── dut: dut0 10.0.0.1/24
//	                                      dut1 203.0.113.1/24 ── veth ── srv: srv0 203.0.113.2/24
//
// The generator sends from gen0 with sources 10.0.0.16 and up (flows, see
// FlowTuple) to 203.0.113.2; the device under test translates them to
// 203.0.113.1; the sink (or reflector) on srv0 receives them. The
// generator and the sink have no ARP (their XDP programs take every IPv4
// frame), so dut has permanent neighbours for every flow source address
// and for the server, and gen and srv for dut's addresses. TX checksum
// offload is off on gen0 and srv0, the ends that send into dut.
type Topology struct {
	ns                                  *netns.Topology
	Gen, DUT, Srv                       *NS
	Queues                              int
	GenMAC, DUTInMAC, DUTOutMAC, SrvMAC [6]byte
	GenIndex, SrvIndex, DUTInIndex      int
}

// NewTopology creates the namespaces and links with queues RX/TX queues
// per veth. Close removes them.
func NewTopology(queues int) (tp *Topology, err error) {
	if queues < 1 || queues > 64 {
		return nil, fmt.Errorf("%w: %d queues", ErrConfig, queues)
	}
	nt, err := netns.Open()
	if err != nil {
		return nil, fmt.Errorf("e2e: %w", err)
	}
	tp = &Topology{ns: nt, Queues: queues}
	defer func() {
		if err != nil {
			err = errors.Join(err, tp.Close())
			tp = nil
		}
	}()
	if tp.Gen, err = nt.CreateNS("e2e-gen"); err != nil {
		return tp, err
	}
	if tp.DUT, err = nt.CreateNS("e2e-dut"); err != nil {
		return tp, err
	}
	if tp.Srv, err = nt.CreateNS("e2e-srv"); err != nil {
		return tp, err
	}
	if err = nt.AddVeth(tp.Gen, GenIf, tp.DUT, DUTInIf, queues); err != nil {
		return tp, err
	}
	if err = nt.AddVeth(tp.DUT, DUTOutIf, tp.Srv, SrvIf, queues); err != nil {
		return tp, err
	}
	steps := []func() error{
		func() (e error) { tp.GenMAC, e = mac6(tp.Gen, GenIf); return },
		func() (e error) { tp.DUTInMAC, e = mac6(tp.DUT, DUTInIf); return },
		func() (e error) { tp.DUTOutMAC, e = mac6(tp.DUT, DUTOutIf); return },
		func() (e error) { tp.SrvMAC, e = mac6(tp.Srv, SrvIf); return },
		func() (e error) { tp.GenIndex, e = tp.Gen.Index(GenIf); return },
		func() (e error) { tp.SrvIndex, e = tp.Srv.Index(SrvIf); return },
		func() (e error) { tp.DUTInIndex, e = tp.DUT.Index(DUTInIf); return },
		func() error { return tp.Gen.AddAddr(GenIf, ipString(GenAddr)+"/24") },
		func() error { return tp.DUT.AddAddr(DUTInIf, ipString(DUTIn)+"/24") },
		func() error { return tp.DUT.AddAddr(DUTOutIf, ipString(DUTOut)+"/24") },
		func() error { return tp.Srv.AddAddr(SrvIf, ipString(SrvAddr)+"/24") },
		func() error { return tp.Gen.AddRoute(outsideNet, ipString(DUTIn), GenIf) },
		func() error { return tp.Gen.AddNeigh(GenIf, ipString(DUTIn), tp.DUTInMAC[:]) },
		func() error { return tp.Srv.AddNeigh(SrvIf, ipString(DUTOut), tp.DUTOutMAC[:]) },
		func() error { return tp.DUT.AddNeigh(DUTOutIf, ipString(SrvAddr), tp.SrvMAC[:]) },
		func() error {
			for i := uint32(0); i < MaxAddrs; i++ {
				if err := tp.DUT.AddNeigh(DUTInIf, ipString(FlowBase+i), tp.GenMAC[:]); err != nil {
					return err
				}
			}
			return nil
		},
		func() error { return tp.Gen.SetTxChecksum(GenIf, false) },
		func() error { return tp.Srv.SetTxChecksum(SrvIf, false) },
		// The gateway itself forwards nothing until a target sets it up.
		func() error { return tp.DUT.SetSysctl("net.ipv4.ip_forward", "0") },
	}
	for _, s := range steps {
		if err = s(); err != nil {
			return tp, err
		}
	}
	return tp, nil
}

// Close removes the namespaces (and with them every link). Calling it
// again does nothing.
func (tp *Topology) Close() error {
	if tp.ns == nil {
		return nil
	}
	err := tp.ns.Close()
	tp.ns, tp.Gen, tp.DUT, tp.Srv = nil, nil, nil, nil
	return err
}
