package xdpprog

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf/link"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNotXDPLink: a handed-over link is not an XDP link on the expected
// interface.
var ErrNotXDPLink = errors.New("xdpprog: not an XDP link of this interface")

// LinkFile returns a duplicate of the program's BPF link as a file, to
// hand the interface over to another xnatd (xnatd --takeover): the link
// lives as long as one descriptor of it is open, so the interface keeps
// an xnat program while the next process takes over. Call HandedOver
// before Close.
func (p *Program) LinkFile() (*os.File, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.link == nil {
		return nil, ErrClosed
	}
	fl, ok := p.link.(interface{ FD() int })
	if !ok {
		return nil, fmt.Errorf("xdpprog: the link of ifindex %d has no descriptor", p.ifindex)
	}
	f, err := dupFile(fl.FD(), fmt.Sprintf("xnat-xdp-link-%d", p.ifindex))
	if err != nil {
		return nil, fmt.Errorf("xdpprog: duplicating the link of ifindex %d: %w", p.ifindex, err)
	}
	return f, nil
}

// Pin pins the program's BPF link at path (on a bpffs): the link, and so
// the program, outlives the process until a later one adopts it
// (AdoptPinned). Call HandedOver before Close.
func (p *Program) Pin(path string) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.link == nil {
		return ErrClosed
	}
	if err := p.link.Pin(path); err != nil {
		return fmt.Errorf("xdpprog: pinning the link of ifindex %d: %w", p.ifindex, err)
	}
	return nil
}

// HandedOver marks the link as handed to another process (LinkFile, Pin):
// Close then closes this process's descriptor without waiting for the
// interface to be without a program — the link, held elsewhere, stays.
func (p *Program) HandedOver() {
	p.mu.Lock()
	p.handed = true
	p.mu.Unlock()
}

// Adopt takes over a BPF link an earlier xnatd handed over (fd, which
// Adopt owns from then on): the link is switched to this program in one
// step, so the interface never runs without an xnat program, and this
// program owns the link as if Attach had made it. The mode is the link's.
// It must run in the network namespace of the interface.
func (p *Program) Adopt(fd, ifindex int) (AttachMode, error) {
	l, err := link.NewFromFD(fd)
	if err != nil {
		return 0, fmt.Errorf("xdpprog: handed-over link of ifindex %d: %w", ifindex, err)
	}
	return p.adopt(l, ifindex)
}

// AdoptPinned takes over the link pinned at path (Pin), as Adopt does,
// and removes the pin.
func (p *Program) AdoptPinned(path string, ifindex int) (AttachMode, error) {
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return 0, fmt.Errorf("xdpprog: pinned link %s: %w", path, err)
	}
	m, err := p.adopt(l, ifindex)
	if err != nil {
		return 0, err
	}
	if err := l.Unpin(); err != nil {
		return m, fmt.Errorf("xdpprog: unpinning %s: %w", path, err)
	}
	return m, nil
}

func (p *Program) adopt(l link.Link, ifindex int) (AttachMode, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fail := func(err error) (AttachMode, error) {
		l.Close()
		return 0, err
	}
	if p.prog == nil {
		return fail(ErrClosed)
	}
	if p.link != nil {
		return fail(fmt.Errorf("xdpprog: already attached to ifindex %d", p.ifindex))
	}
	info, err := l.Info()
	if err != nil {
		return fail(fmt.Errorf("xdpprog: handed-over link: %w", err))
	}
	x := info.XDP()
	if info.Type != link.XDPType || x == nil || int(x.Ifindex) != ifindex {
		return fail(fmt.Errorf("%w (ifindex %d)", ErrNotXDPLink, ifindex))
	}
	if err := l.Update(p.prog); err != nil {
		return fail(fmt.Errorf("xdpprog: switching the link of ifindex %d to this program: %w", ifindex, err))
	}
	mode := AttachAuto
	if a, ok, err := Query(ifindex); err == nil && ok {
		mode = a.Mode
	}
	ns, err := vnetns.Get()
	if err != nil {
		return fail(fmt.Errorf("xdpprog: current network namespace: %w", err))
	}
	p.link, p.ifindex, p.mode, p.ns = l, ifindex, mode, ns
	return mode, nil
}

// dupFile duplicates fd (close-on-exec) as a file.
func dupFile(fd int, name string) (*os.File, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), name), nil
}
