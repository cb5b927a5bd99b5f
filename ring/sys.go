package ring

// Every use of unsafe in the package is in this file: the system calls
// whose arguments are structs, and the views of the mmap'ed rings.

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

func mmapArea(size int) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("ring: mmap UMEM of %d bytes: %w", size, err)
	}
	return b, nil
}

func newXSK() (int, error) {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("ring: AF_XDP socket: %w", err)
	}
	return fd, nil
}

func setsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), size, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func getsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// regUMEM registers area as the UMEM of socket fd (XDP_UMEM_REG).
func regUMEM(fd int, area []byte, frameSize, headroom uint32) error {
	reg := unix.XDPUmemReg{
		Addr:     uint64(uintptr(unsafe.Pointer(&area[0]))),
		Len:      uint64(len(area)),
		Size:     frameSize,
		Headroom: headroom,
	}
	if err := setsockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return fmt.Errorf("ring: XDP_UMEM_REG (%d bytes, frames of %d, headroom %d): %w", len(area), frameSize, headroom, err)
	}
	return nil
}

func setRingSize(fd, opt int, n uint32) error {
	v := int32(n)
	if err := setsockopt(fd, opt, unsafe.Pointer(&v), unsafe.Sizeof(v)); err != nil {
		return fmt.Errorf("ring: setsockopt %s size %d: %w", ringOptName(opt), n, err)
	}
	return nil
}

func ringOptName(opt int) string {
	switch opt {
	case unix.XDP_UMEM_FILL_RING:
		return "XDP_UMEM_FILL_RING"
	case unix.XDP_UMEM_COMPLETION_RING:
		return "XDP_UMEM_COMPLETION_RING"
	case unix.XDP_RX_RING:
		return "XDP_RX_RING"
	case unix.XDP_TX_RING:
		return "XDP_TX_RING"
	}
	return fmt.Sprint(opt)
}

func mmapOffsets(fd int) (unix.XDPMmapOffsets, error) {
	var off unix.XDPMmapOffsets
	if err := getsockopt(fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off)); err != nil {
		return off, fmt.Errorf("ring: XDP_MMAP_OFFSETS: %w", err)
	}
	return off, nil
}

func statistics(fd int) (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	if err := getsockopt(fd, unix.XDP_STATISTICS, unsafe.Pointer(&st), unsafe.Sizeof(st)); err != nil {
		return st, fmt.Errorf("ring: XDP_STATISTICS: %w", err)
	}
	return st, nil
}

func zeroCopy(fd int) (bool, error) {
	var v uint32
	if err := getsockopt(fd, unix.XDP_OPTIONS, unsafe.Pointer(&v), unsafe.Sizeof(v)); err != nil {
		return false, fmt.Errorf("ring: XDP_OPTIONS: %w", err)
	}
	return v&unix.XDP_OPTIONS_ZEROCOPY != 0, nil
}

// mapRing maps one ring of fd and returns the mapping and pointers to
// its producer, consumer and flags words and its first descriptor.
func mapRing(fd int, pgoff int64, off unix.XDPRingOffset, n uint32, descSize uintptr) (m []byte, prod, cons, flags *uint32, desc unsafe.Pointer, err error) {
	size := int(off.Desc) + int(n)*int(descSize)
	m, err = unix.Mmap(fd, pgoff, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, nil, nil, nil, nil, fmt.Errorf("ring: mmap ring at %#x (%d bytes): %w", pgoff, size, err)
	}
	base := unsafe.Pointer(&m[0])
	prod = (*uint32)(unsafe.Add(base, off.Producer))
	cons = (*uint32)(unsafe.Add(base, off.Consumer))
	flags = (*uint32)(unsafe.Add(base, off.Flags))
	desc = unsafe.Add(base, off.Desc)
	return m, prod, cons, flags, desc, nil
}

func mapAddrRing(fd int, pgoff int64, off unix.XDPRingOffset, n uint32) ([]byte, ringPtrs, []uint64, error) {
	m, p, c, f, d, err := mapRing(fd, pgoff, off, n, unsafe.Sizeof(uint64(0)))
	if err != nil {
		return nil, ringPtrs{}, nil, err
	}
	return m, ringPtrs{p, c, f}, unsafe.Slice((*uint64)(d), n), nil
}

func mapDescRing(fd int, pgoff int64, off unix.XDPRingOffset, n uint32) ([]byte, ringPtrs, []Desc, error) {
	m, p, c, f, d, err := mapRing(fd, pgoff, off, n, unsafe.Sizeof(Desc{}))
	if err != nil {
		return nil, ringPtrs{}, nil, err
	}
	return m, ringPtrs{p, c, f}, unsafe.Slice((*Desc)(d), n), nil
}

type ringPtrs struct{ prod, cons, flags *uint32 }

// kickTx asks the kernel to process the TX ring (sendto with no data).
func kickTx(fd int) unix.Errno {
	_, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return errno
}

// kickRx asks the kernel to process the fill ring (recvfrom with no
// buffer), as need_wakeup requires in zero-copy mode.
func kickRx(fd int) unix.Errno {
	_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return errno
}

// ppoll waits on fds for at most ts; no allocation.
func ppoll(fds []unix.PollFd, ts *unix.Timespec) (int, unix.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)), uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	return int(n), errno
}

// descSize is the size of a ring descriptor; asserted against the
// kernel's struct xdp_desc.
const descSize = unsafe.Sizeof(Desc{})

var _ [16 - descSize]byte
var _ [descSize - 16]byte
