package dataplane

import (
	"runtime"
	"sync/atomic"
	"unsafe"

	"xnat/dataplane/header"
	"xnat/flowtable"
)

// This file holds the package's uses of unsafe.

// Counters must be exactly counterWords uint64s: these fail to compile
// otherwise (a negative array length).
var (
	_ [unsafe.Sizeof(Counters{}) - uintptr(counterWords*8)]byte
	_ [uintptr(counterWords*8) - unsafe.Sizeof(Counters{})]byte
)

// flat views c as the array of its words, in field order, so that a
// batch's counters are published by one loop rather than field by field.
func (c *Counters) flat() *[counterWords]uint64 {
	return (*[counterWords]uint64)(unsafe.Pointer(c))
}

// Where Forwarded and Batches are among the words of Counters (flat).
const (
	forwardedWord = int(unsafe.Offsetof(Counters{}.Forwarded) / 8)
	batchesWord   = int(unsafe.Offsetof(Counters{}.Batches) / 8)
)

// natFields returns the fields the established path writes in a frame
// whose IPv4 header, with no options, starts at l3 and is followed by a
// whole UDP (udp) or TCP header: the MAC addresses, the IPv4 header, the
// ports and the transport checksum. It checks no bounds: a packet reaches
// the established path only as TCP or UDP with no IP options (quietBase),
// and parse and parseFast give it that kind only after finding both
// headers whole within the frame's size, which Process has resliced the
// frame to (so the size is within its capacity).
func natFields(frame []byte, l3 uint16, udp bool) (eth *[2 * header.EthernetAddrLen]byte, ip *[header.IPv4MinLen]byte, ports *[4]byte, csum *[2]byte) {
	base := unsafe.Pointer(unsafe.SliceData(frame))
	ipp := unsafe.Add(base, l3)
	off := uintptr(header.IPv4MinLen + header.TCPChecksum)
	if udp {
		off = header.IPv4MinLen + header.UDPChecksum
	}
	return (*[2 * header.EthernetAddrLen]byte)(base), (*[header.IPv4MinLen]byte)(ipp),
		(*[4]byte)(unsafe.Add(ipp, header.IPv4MinLen+header.TCPSrcPort)), (*[2]byte)(unsafe.Add(ipp, off))
}

// tcpFields returns the TCP header at l4 of a frame, checking no bounds,
// on the argument natFields makes: the established path takes only TCP
// found whole within the frame.
func tcpFields(frame []byte, l4 uint16) *[header.TCPMinLen]byte {
	return (*[header.TCPMinLen]byte)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(frame)), l4))
}

// tcpDir returns direction d's window words (tcpwin.go: twStride words
// from word twStride·d) of a connection's protocol state.
func tcpDir(ps *flowtable.ProtoState, d flowtable.Dir) *[twStride]atomic.Uint32 {
	return (*[twStride]atomic.Uint32)(unsafe.Add(unsafe.Pointer(ps), uintptr(d&1)*twStride*4))
}

// The two directions' words lie within a connection's protocol state.
var _ [flowtable.ProtoWords - 2*twStride]struct{}

// storeWord stores v in a word of a connection's protocol state. On
// amd64 that is a plain store: an aligned 32-bit store is written whole,
// and x86-TSO orders it as a release, which is all the window words ask
// (each is read on its own; none publishes another), where Go's atomic
// store is an XCHG, a locked instruction costing tens of cycles, several
// times a segment. Under the race detector, and elsewhere, it is the
// atomic store.
func storeWord(w *atomic.Uint32, v uint32) {
	if raceEnabled || runtime.GOARCH != "amd64" {
		w.Store(v)
		return
	}
	*(*uint32)(unsafe.Pointer(w)) = v
}
