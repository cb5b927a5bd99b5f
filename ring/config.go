package ring

import (
	"errors"
	"fmt"
	"time"
)

// BindMode chooses how sockets bind to their queues.
type BindMode uint8

const (
	// BindAuto tries zero-copy for every socket of the UMEM and falls
	// back to copy mode for all of them if any device refuses it (one
	// UMEM cannot mix the two).
	BindAuto BindMode = iota
	// BindCopy asks for copy mode (XDP_COPY).
	BindCopy
	// BindZeroCopy asks for zero-copy (XDP_ZEROCOPY) and fails where
	// the driver cannot.
	BindZeroCopy
)

func (m BindMode) String() string {
	switch m {
	case BindAuto:
		return "auto"
	case BindCopy:
		return "copy"
	case BindZeroCopy:
		return "zero-copy"
	}
	return fmt.Sprintf("BindMode(%d)", uint8(m))
}

// PollMode chooses how Wait waits for work.
type PollMode uint8

const (
	// PollSleep sleeps in poll(2) until a socket has received frames
	// or PollTimeout passes.
	PollSleep PollMode = iota
	// PollBusy never sleeps: Wait only kicks the kernel where the rings
	// ask for it (need_wakeup) and returns at once. It spins a core.
	PollBusy
)

func (m PollMode) String() string {
	switch m {
	case PollSleep:
		return "sleep"
	case PollBusy:
		return "busy"
	}
	return fmt.Sprintf("PollMode(%d)", uint8(m))
}

// Defaults used for zero fields of Config.
const (
	DefaultFrameSize   = 2048
	DefaultNumFrames   = 4096
	DefaultRingSize    = 1024
	DefaultPollTimeout = 100 * time.Millisecond
	// XDPPacketHeadroom is the headroom the kernel keeps in front of
	// every received packet (XDP_PACKET_HEADROOM), after Config.Headroom.
	XDPPacketHeadroom = 256
	// MaxSockets is the most sockets one UMEM can serve.
	MaxSockets = 15
)

// Config configures a UMEM and its sockets. Zero fields take defaults.
type Config struct {
	// FrameSize is the size of one frame (chunk) of the UMEM: a power
	// of two from 2048 to 4096 (the kernel's aligned-chunk mode).
	FrameSize uint32
	// NumFrames is the number of frames of the UMEM; it must exceed
	// the fill rings of all sockets together, so that frames remain
	// for packets in the pipeline and on the TX rings.
	NumFrames uint32
	// Headroom is reserved in front of every received packet, ahead of
	// the kernel's XDPPacketHeadroom; the pipeline can grow a packet
	// into both (e.g. to push a VLAN tag).
	Headroom uint32
	// Ring sizes in descriptors, powers of two.
	FillSize, CompletionSize, RxSize, TxSize uint32
	// Bind selects zero-copy or copy mode.
	Bind BindMode
	// NoNeedWakeup disables XDP_USE_NEED_WAKEUP: the kernel is then
	// kicked after every TX batch and whenever RX finds nothing.
	NoNeedWakeup bool
	// Poll selects busy polling or sleeping in Wait.
	Poll PollMode
	// PollTimeout is the longest sleep of Wait in PollSleep mode.
	PollTimeout time.Duration
	// TrackOwnership keeps the state of every frame (free, on a fill
	// ring, in the pipeline, on a TX ring) and checks every transition:
	// a frame handed out twice or returned where it was not is refused
	// and counted in UMEMStats.OwnershipErrors. It costs one byte per
	// frame and a compare per descriptor.
	TrackOwnership bool
}

// Errors of Open and of the configuration.
var (
	ErrConfig            = errors.New("ring: invalid configuration")
	ErrNoEndpoints       = errors.New("ring: no endpoints")
	ErrDuplicateEndpoint = errors.New("ring: two sockets on the same interface and queue")
	ErrZeroCopy          = errors.New("ring: zero-copy bind refused")
	ErrClosed            = errors.New("ring: closed")
	ErrNotQuiescent      = errors.New("ring: frames moved during the audit")
	ErrFrameLost         = errors.New("ring: frame lost")
	ErrFrameDuplicated   = errors.New("ring: frame in two places")
)

func isPow2(v uint32) bool { return v != 0 && v&(v-1) == 0 }

// withDefaults returns c with zero fields defaulted, or an error wrapping
// ErrConfig.
func (c Config) withDefaults(nsock int) (Config, error) {
	if c.FrameSize == 0 {
		c.FrameSize = DefaultFrameSize
	}
	if c.NumFrames == 0 {
		c.NumFrames = DefaultNumFrames
	}
	for _, p := range []*uint32{&c.FillSize, &c.CompletionSize, &c.RxSize, &c.TxSize} {
		if *p == 0 {
			*p = DefaultRingSize
		}
	}
	if c.PollTimeout == 0 {
		c.PollTimeout = DefaultPollTimeout
	}
	switch {
	case !isPow2(c.FrameSize) || c.FrameSize < 2048 || c.FrameSize > 4096:
		return c, fmt.Errorf("%w: frame size %d is not a power of two from 2048 to 4096", ErrConfig, c.FrameSize)
	case uint64(c.Headroom)+XDPPacketHeadroom+64 > uint64(c.FrameSize):
		return c, fmt.Errorf("%w: headroom %d leaves no room for a packet in a %d-byte frame", ErrConfig, c.Headroom, c.FrameSize)
	case !isPow2(c.FillSize) || !isPow2(c.CompletionSize) || !isPow2(c.RxSize) || !isPow2(c.TxSize):
		return c, fmt.Errorf("%w: ring sizes must be powers of two (fill %d, completion %d, rx %d, tx %d)",
			ErrConfig, c.FillSize, c.CompletionSize, c.RxSize, c.TxSize)
	case uint64(c.FillSize)*uint64(nsock) >= uint64(c.NumFrames):
		return c, fmt.Errorf("%w: %d frames do not exceed %d fill rings of %d", ErrConfig, c.NumFrames, nsock, c.FillSize)
	case uint64(c.NumFrames)*uint64(c.FrameSize) > 1<<40:
		return c, fmt.Errorf("%w: UMEM of %d frames of %d bytes is too large", ErrConfig, c.NumFrames, c.FrameSize)
	case c.Bind > BindZeroCopy:
		return c, fmt.Errorf("%w: bind mode %v", ErrConfig, c.Bind)
	case c.Poll > PollBusy:
		return c, fmt.Errorf("%w: poll mode %v", ErrConfig, c.Poll)
	case c.PollTimeout < 0:
		return c, fmt.Errorf("%w: negative poll timeout", ErrConfig)
	}
	return c, nil
}

// Endpoint is an interface queue to bind a socket to.
type Endpoint struct {
	Ifindex int
	Queue   uint32
}
