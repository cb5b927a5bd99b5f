package ha

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LinkConfig is a UDP sync link, as conntrackd's Sync { UDP { ... } }
// section configures one.
type LinkConfig struct {
	// Local is the address and port this side listens on
	// (IPv4_address, Port).
	Local netip.AddrPort
	// Peer is the peer's address and port (IPv4_Destination_Address,
	// Port). Datagrams are sent there, and only datagrams from its
	// address are accepted (from any port: conntrackd sends from an
	// ephemeral one).
	Peer netip.AddrPort
	// Interface, when set, binds the link to one device (Interface):
	// datagrams arriving on any other are not seen.
	Interface string
	// Group, when set, makes the link multicast, as conntrackd's Sync {
	// Multicast { IPv4_address Group; Group Port; IPv4_interface Local } }:
	// datagrams go to Group at Local's port, sent from and received on
	// the interface that has Local's address; Peer's port is not used,
	// its address still is the only one accepted.
	Group netip.Addr
	// Session tunes the FTFW layer.
	Session Config
	// Tick is the ALIVE and ACK timer (default 1s, as conntrackd).
	Tick time.Duration
}

// ErrConfig is wrapped by every LinkConfig error.
var ErrConfig = errors.New("bad sync link configuration")

// Link runs a Session over UDP, unicast or multicast. Its methods are
// safe for concurrent use.
type Link struct {
	cfg  LinkConfig
	h    Handler
	conn *net.UDPConn
	dst  *net.UDPAddr

	mu     sync.Mutex
	s      *Session
	resync bool

	foreign   atomic.Uint64 // datagrams from another address, dropped
	sendErrs  atomic.Uint64
	lastError atomic.Pointer[string]
}

// Listen opens the link. Handler methods run on the link's goroutine
// (Run); Conn must not call the Link, Resync may.
func Listen(cfg LinkConfig, h Handler) (*Link, error) {
	if !cfg.Local.Addr().Is4() || !cfg.Peer.Addr().Is4() {
		return nil, fmt.Errorf("%w: local %v and peer %v must be IPv4 addresses", ErrConfig, cfg.Local, cfg.Peer)
	}
	mcast := cfg.Group.IsValid()
	if mcast && (!cfg.Group.Is4() || !cfg.Group.IsMulticast() || cfg.Local.Port() == 0) {
		return nil, fmt.Errorf("%w: multicast group %v must be an IPv4 multicast address, with the local port set", ErrConfig, cfg.Group)
	}
	if !mcast && cfg.Peer.Port() == 0 {
		return nil, fmt.Errorf("%w: peer %v has no port", ErrConfig, cfg.Peer)
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	local := cfg.Local.Addr().As4()
	lc := net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = sockopts(int(fd), &cfg, local)
		}); err != nil {
			return err
		}
		return serr
	}}
	bind, dst := cfg.Local, cfg.Peer
	if mcast {
		// Bound to the group, the socket receives the group's datagrams
		// only (not the host's other UDP traffic to this port).
		bind = netip.AddrPortFrom(cfg.Group, cfg.Local.Port())
		dst = bind
	}
	pc, err := lc.ListenPacket(context.Background(), "udp4", bind.String())
	if err != nil {
		return nil, fmt.Errorf("sync link: %w", err)
	}
	l := &Link{cfg: cfg, h: h, conn: pc.(*net.UDPConn), dst: net.UDPAddrFromAddrPort(dst)}
	l.s = NewSession(cfg.Session, linkHandler{l})
	return l, nil
}

type linkHandler struct{ l *Link }

func (lh linkHandler) Conn(t MsgType, c *Conn) { lh.l.h.Conn(t, c) }
func (lh linkHandler) Resync()                 { lh.l.resync = true }

// LocalAddr returns the address the link listens on.
func (l *Link) LocalAddr() netip.AddrPort { return l.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Send queues a connection message; Flush (or the next tick) sends it.
func (l *Link) Send(t MsgType, c *Conn) {
	l.mu.Lock()
	l.s.Send(t, c)
	l.mu.Unlock()
}

// RequestResync asks the peer for its whole table, and sends the request.
func (l *Link) RequestResync() error {
	l.mu.Lock()
	l.s.RequestResync()
	l.mu.Unlock()
	return l.Flush()
}

// Flush sends every queued message.
func (l *Link) Flush() error {
	l.mu.Lock()
	out := l.s.Flush()
	l.mu.Unlock()
	var first error
	for _, d := range out {
		if _, err := l.conn.WriteToUDP(d, l.dst); err != nil {
			l.sendErrs.Add(1)
			if first == nil {
				first = fmt.Errorf("sync link send: %w", err)
			}
		}
	}
	return first
}

// LinkStats are a link's counters and state.
type LinkStats struct {
	Stats
	Seq, PeerSeq  uint32
	PeerSeqSet    bool
	Unacked       int
	LastRecv      time.Time
	Foreign       uint64 // datagrams from an address other than the peer's
	SendErrors    uint64
	LastRecvError string
}

// Stats returns the link's counters and state.
func (l *Link) Stats() LinkStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	ps, set := l.s.PeerSeq()
	st := LinkStats{Stats: l.s.St, Seq: l.s.Seq(), PeerSeq: ps, PeerSeqSet: set, Unacked: l.s.Unacked(),
		LastRecv: l.s.LastRecv(), Foreign: l.foreign.Load(), SendErrors: l.sendErrs.Load()}
	if p := l.lastError.Load(); p != nil {
		st.LastRecvError = *p
	}
	return st
}

// Run receives until ctx ends or the link is closed, and runs the
// timer. It returns nil when ctx ends.
func (l *Link) Run(ctx context.Context) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(l.cfg.Tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				l.conn.Close()
				return
			case <-done:
				return
			case <-t.C:
				l.mu.Lock()
				l.s.Tick()
				l.mu.Unlock()
				_ = l.Flush()
			}
		}
	}()
	buf := make([]byte, 65536)
	peer := l.cfg.Peer.Addr()
	for {
		n, from, err := l.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("sync link receive: %w", err)
		}
		if from.Addr().Unmap() != peer {
			l.foreign.Add(1)
			continue
		}
		l.mu.Lock()
		rerr := l.s.Receive(buf[:n], time.Now())
		resync := l.resync
		l.resync = false
		l.mu.Unlock()
		if rerr != nil {
			msg := rerr.Error()
			l.lastError.Store(&msg)
		}
		if resync {
			l.h.Resync()
		}
		_ = l.Flush()
	}
}

// Close closes the link.
func (l *Link) Close() error { return l.conn.Close() }

// socketBuffer is the link socket's send and receive buffer size, as
// conntrackd's SndSocketBuffer and RcvSocketBuffer set it: a burst of new
// connections is sent in bursts of datagrams, and what overflows the
// receiver's buffer is lost and must be sent again (a NACK's round
// trip). 4 MiB holds a few thousand full datagrams.
const socketBuffer = 4 << 20

// setBuffer sets a socket buffer's size beyond the system's limit
// (net.core.rmem_max, wmem_max) with CAP_NET_ADMIN, within it without.
func setBuffer(fd, force, plain int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, socketBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, socketBuffer)
	}
}

// sockopts sets the link socket's options before it is bound: the
// buffers, the device, and for multicast address reuse, the group
// membership on the local address's interface, that interface for
// sending, and no loopback of this side's own datagrams.
func sockopts(fd int, cfg *LinkConfig, local [4]byte) error {
	setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF)
	setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF)
	if cfg.Interface != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, cfg.Interface); err != nil {
			return fmt.Errorf("bind to interface %s: %w", cfg.Interface, err)
		}
	}
	if !cfg.Group.IsValid() {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	mreq := &unix.IPMreq{Multiaddr: cfg.Group.As4(), Interface: local}
	if err := unix.SetsockoptIPMreq(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); err != nil {
		return fmt.Errorf("join %v on %v: %w", cfg.Group, cfg.Local.Addr(), err)
	}
	if err := unix.SetsockoptInet4Addr(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, local); err != nil {
		return fmt.Errorf("IP_MULTICAST_IF %v: %w", cfg.Local.Addr(), err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0); err != nil {
		return fmt.Errorf("IP_MULTICAST_LOOP: %w", err)
	}
	return nil
}
