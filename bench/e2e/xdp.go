package e2e

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"xnat/dataplane/xdpprog"
	"xnat/ring"
)

// dropSink is an XDP program that drops every frame (XDP_DROP), attached
// where the generator's own rate is measured.
type dropSink struct {
	prog *ebpf.Program
	l    link.Link
}

func attachDrop(n *NS, ifindex int) (*dropSink, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "e2e_drop", Type: ebpf.XDP, License: "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1 /* XDP_DROP */), asm.Return()},
	})
	if err != nil {
		return nil, fmt.Errorf("e2e: loading the XDP_DROP program: %w", err)
	}
	d := &dropSink{prog: prog}
	err = n.Do(func() error {
		var err error
		d.l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		prog.Close()
		return nil, fmt.Errorf("e2e: attaching XDP_DROP to %s ifindex %d: %w", n.Name, ifindex, err)
	}
	return d, nil
}

func (d *dropSink) Close() error {
	return errors.Join(d.l.Close(), d.prog.Close())
}

// xskPort is a UMEM with one socket per queue of an interface, and
// xdpprog's program steering every IPv4 frame into them (the program's
// local-address map is left empty, so every IPv4 destination is
// "forwarded" to the sockets; ARP still goes to the kernel).
type xskPort struct {
	u      *ring.UMEM
	filter *xdpprog.Filter
	prog   *xdpprog.Program
}

func openXSK(n *NS, ifindex, queues int, cfg ring.Config, steer bool) (*xskPort, error) {
	p := &xskPort{}
	err := n.Do(func() error {
		eps := make([]ring.Endpoint, queues)
		for q := range eps {
			eps[q] = ring.Endpoint{Ifindex: ifindex, Queue: uint32(q)}
		}
		var err error
		if p.u, err = ring.Open(cfg, eps...); err != nil {
			return fmt.Errorf("e2e: AF_XDP sockets on %s ifindex %d: %w", n.Name, ifindex, err)
		}
		if !steer {
			return nil
		}
		if p.filter, err = xdpprog.NewFilter(xdpprog.Options{Queues: uint32(queues)}); err != nil {
			return fmt.Errorf("e2e: %w", err)
		}
		if p.prog, err = p.filter.Load(); err != nil {
			return fmt.Errorf("e2e: %w", err)
		}
		for q, s := range p.u.Sockets() {
			if err := p.prog.Register(uint32(q), s.FD()); err != nil {
				return fmt.Errorf("e2e: %w", err)
			}
		}
		if _, err := p.prog.Attach(ifindex, xdpprog.AttachAuto, false); err != nil {
			return fmt.Errorf("e2e: %s: %w", n.Name, err)
		}
		return nil
	})
	if err != nil {
		return nil, errors.Join(err, p.Close())
	}
	return p, nil
}

// socketDrops sums the frames lost at the sockets that the veth does not
// count itself: descriptors the kernel refused on TX, and frames the
// program meant for a socket that found none (dropped by the program).
// Frames the kernel could not put on an RX ring (XDP_STATISTICS
// rx_dropped, rx_ring_full) are not added: veth counts a failed
// redirect in the receiving link's rx_dropped, which the accounting
// reads.
func (p *xskPort) socketDrops() (uint64, error) {
	var n uint64
	for _, s := range p.u.Sockets() {
		st, err := s.Stats()
		if err != nil {
			return 0, fmt.Errorf("e2e: %w", err)
		}
		n += st.TxInvalidDescs
	}
	if p.prog != nil {
		st, err := p.prog.Stats()
		if err != nil {
			return 0, fmt.Errorf("e2e: %w", err)
		}
		n += st.RedirectFailed()
	}
	return n, nil
}

func (p *xskPort) Close() error {
	var errs []error
	if p.prog != nil {
		errs = append(errs, p.prog.Close())
	}
	if p.filter != nil {
		errs = append(errs, p.filter.Close())
	}
	if p.u != nil {
		errs = append(errs, p.u.Close())
	}
	return errors.Join(errs...)
}

func newFilter(queues int) (*xdpprog.Filter, error) {
	f, err := xdpprog.NewFilter(xdpprog.Options{Queues: uint32(queues)})
	if err != nil {
		return nil, fmt.Errorf("e2e: %w", err)
	}
	return f, nil
}
