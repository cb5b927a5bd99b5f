package ha

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// The pool check: conntrackd's protocol has no message that says which
// NAT pools and rules a side has, and a conntrackd counts any message
// type it does not know as malformed. So two xnat peers compare their
// fingerprints (Fingerprint: a hash of the pools and rules) out of band:
// on a UDP port of their own (CheckConfig.Port) on the sync link's
// addresses, which a conntrackd never listens on. Each side announces its
// fingerprint when it starts, when its rules change and every Interval;
// an announcement that asks for an answer gets one at once.
//
// The announcement is 40 bytes:
//
//	0  4  "xnHA"
//	4  1  version (1)
//	5  1  kind: 1 asks for an answer, 2 does not
//	6  2  zero
//	8 32  the fingerprint

// Fingerprint identifies a side's NAT pools and rules (SHA-256).
type Fingerprint [32]byte

// String returns the fingerprint in hexadecimal.
func (f Fingerprint) String() string { return hex.EncodeToString(f[:]) }

// Announcement is one pool-check datagram.
type Announcement struct {
	Ask         bool // the receiver answers with its own
	Fingerprint Fingerprint
}

// AnnouncementLen is the size of an announcement datagram.
const AnnouncementLen = 40

const (
	announceVersion = 1
	announceAsk     = 1
	announceTell    = 2
)

var announceMagic = [4]byte{'x', 'n', 'H', 'A'}

// ErrAnnouncement is wrapped by every ParseAnnouncement error.
var ErrAnnouncement = errors.New("bad pool-check announcement")

// Append appends the announcement's datagram to b.
func (a *Announcement) Append(b []byte) []byte {
	kind := byte(announceTell)
	if a.Ask {
		kind = announceAsk
	}
	b = append(b, announceMagic[:]...)
	b = append(b, announceVersion, kind, 0, 0)
	return append(b, a.Fingerprint[:]...)
}

// ParseAnnouncement decodes an announcement datagram.
func ParseAnnouncement(b []byte) (Announcement, error) {
	var a Announcement
	if len(b) != AnnouncementLen {
		return a, fmt.Errorf("%w: %d bytes (%d)", ErrAnnouncement, len(b), AnnouncementLen)
	}
	if [4]byte(b[:4]) != announceMagic {
		return a, fmt.Errorf("%w: magic %x", ErrAnnouncement, b[:4])
	}
	if b[4] != announceVersion {
		return a, fmt.Errorf("%w: version %d (%d)", ErrAnnouncement, b[4], announceVersion)
	}
	switch b[5] {
	case announceAsk:
		a.Ask = true
	case announceTell:
	default:
		return a, fmt.Errorf("%w: kind %d", ErrAnnouncement, b[5])
	}
	if b[6] != 0 || b[7] != 0 {
		return a, fmt.Errorf("%w: reserved bytes %x", ErrAnnouncement, b[6:8])
	}
	a.Fingerprint = Fingerprint(b[8:])
	return a, nil
}

// PeerState is what the pool check knows of the peer.
type PeerState uint8

const (
	// PeerWaiting: no announcement yet, and the grace period runs.
	PeerWaiting PeerState = iota
	// PeerSame: the peer is an xnat with this side's pools and rules.
	PeerSame
	// PeerDiffers: the peer is an xnat whose pools or rules differ: its
	// connections are refused.
	PeerDiffers
	// PeerUnchecked: no announcement in the grace period: the peer is a
	// conntrackd (or an xnat without the check), its pools unknown; each
	// of its connections is checked against this side's pools.
	PeerUnchecked
)

var peerStateNames = [...]string{
	PeerWaiting:   "waiting for the peer's announcement",
	PeerSame:      "xnat, same pools and rules",
	PeerDiffers:   "xnat, pools or rules differ: its connections are refused",
	PeerUnchecked: "no announcement (a conntrackd?): pool unchecked, each connection checked against the NAT pools",
}

func (s PeerState) String() string {
	if int(s) < len(peerStateNames) {
		return peerStateNames[s]
	}
	return fmt.Sprintf("PeerState(%d)", uint8(s))
}

// CheckConfig configures the pool check.
type CheckConfig struct {
	// Port is the check's UDP port, on the link's local address and on
	// the peer's; 0: no check (every peer is PeerUnchecked at once).
	Port uint16
	// Fingerprint is this side's, at start (SetFingerprint changes it).
	Fingerprint Fingerprint
	// Interval between announcements (default 1s); Grace, how long a
	// peer has to announce itself before it is taken for a conntrackd
	// (default 3 intervals).
	Interval, Grace time.Duration
}

// CheckStatus is the pool check's state.
type CheckStatus struct {
	State           PeerState
	Peer            string // State in words
	Port            uint16
	Fingerprint     string
	PeerFingerprint string    `json:",omitempty"`
	LastHeard       time.Time `json:",omitzero"`
	Sent, Received  uint64
	Bad             uint64 // datagrams that were no announcement
	Foreign         uint64 // datagrams from another address
	SendError       string `json:",omitempty"`
}

// poolCheck runs the check's socket. Its methods are safe for concurrent
// use; onChange runs on the caller of the method that changed the state,
// without the lock held.
type poolCheck struct {
	cfg      CheckConfig
	conn     *net.UDPConn
	dst      *net.UDPAddr
	peer     netip.Addr
	onChange func(old, new PeerState)

	mu                       sync.Mutex
	own, peerFP              Fingerprint
	heard                    bool
	last, started            time.Time
	state                    PeerState
	sent, recv, bad, foreign uint64
	sendErr                  string
}

// listenCheck opens the check's socket with the link's options (the
// interface), bound to the link's local address.
func listenCheck(cfg CheckConfig, link *LinkConfig, onChange func(old, new PeerState)) (*poolCheck, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 3 * cfg.Interval
	}
	pc := &poolCheck{cfg: cfg, peer: link.Peer.Addr(), own: cfg.Fingerprint, started: time.Now(), onChange: onChange}
	if cfg.Port == 0 {
		pc.state = PeerUnchecked
		return pc, nil
	}
	unicast := *link
	unicast.Group = netip.Addr{}
	local := link.Local.Addr().As4()
	lc := net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = sockopts(int(fd), &unicast, local) }); err != nil {
			return err
		}
		return serr
	}}
	c, err := lc.ListenPacket(context.Background(), "udp4", netip.AddrPortFrom(link.Local.Addr(), cfg.Port).String())
	if err != nil {
		return nil, fmt.Errorf("pool check: %w", err)
	}
	pc.conn = c.(*net.UDPConn)
	pc.dst = net.UDPAddrFromAddrPort(netip.AddrPortFrom(pc.peer, cfg.Port))
	return pc, nil
}

// send sends this side's announcement.
func (pc *poolCheck) send(ask bool) {
	if pc.conn == nil {
		return
	}
	pc.mu.Lock()
	a := Announcement{Ask: ask, Fingerprint: pc.own}
	pc.mu.Unlock()
	var buf [AnnouncementLen]byte
	_, err := pc.conn.WriteToUDP(a.Append(buf[:0]), pc.dst)
	pc.mu.Lock()
	if err != nil {
		pc.sendErr = err.Error()
	} else {
		pc.sent++
		pc.sendErr = ""
	}
	pc.mu.Unlock()
}

// evaluate recomputes the state and reports a change.
func (pc *poolCheck) evaluate(now time.Time) {
	pc.mu.Lock()
	old := pc.state
	switch {
	case pc.heard && pc.peerFP == pc.own:
		pc.state = PeerSame
	case pc.heard:
		pc.state = PeerDiffers
	case pc.conn == nil || now.Sub(pc.started) >= pc.cfg.Grace:
		pc.state = PeerUnchecked
	default:
		pc.state = PeerWaiting
	}
	cur := pc.state
	pc.mu.Unlock()
	if cur != old && pc.onChange != nil {
		pc.onChange(old, cur)
	}
}

// SetFingerprint changes this side's fingerprint (the rules changed),
// announces it and asks the peer for its own.
func (pc *poolCheck) setFingerprint(f Fingerprint) {
	pc.mu.Lock()
	pc.own = f
	pc.mu.Unlock()
	pc.send(true)
	pc.evaluate(time.Now())
}

// receive handles one datagram from addr.
func (pc *poolCheck) receive(b []byte, from netip.Addr, now time.Time) {
	if from.Unmap() != pc.peer {
		pc.mu.Lock()
		pc.foreign++
		pc.mu.Unlock()
		return
	}
	a, err := ParseAnnouncement(b)
	pc.mu.Lock()
	if err != nil {
		pc.bad++
		pc.mu.Unlock()
		return
	}
	pc.recv++
	pc.heard, pc.peerFP, pc.last = true, a.Fingerprint, now
	pc.mu.Unlock()
	if a.Ask {
		pc.send(false)
	}
	pc.evaluate(now)
}

// run announces this side and receives until ctx ends.
func (pc *poolCheck) run(ctx context.Context) error {
	if pc.conn == nil {
		pc.evaluate(time.Now())
		<-ctx.Done()
		return nil
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(pc.cfg.Interval)
		defer t.Stop()
		pc.send(true)
		for {
			select {
			case <-ctx.Done():
				pc.conn.Close()
				return
			case <-done:
				return
			case now := <-t.C:
				pc.mu.Lock()
				ask := !pc.heard
				pc.mu.Unlock()
				pc.send(ask)
				pc.evaluate(now)
			}
		}
	}()
	buf := make([]byte, 512)
	for {
		n, from, err := pc.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("pool check receive: %w", err)
		}
		pc.receive(buf[:n], from.Addr(), time.Now())
	}
}

// State returns the state.
func (pc *poolCheck) State() PeerState {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.state
}

func (pc *poolCheck) status() CheckStatus {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	st := CheckStatus{State: pc.state, Peer: pc.state.String(), Port: pc.cfg.Port, Fingerprint: pc.own.String(),
		LastHeard: pc.last, Sent: pc.sent, Received: pc.recv, Bad: pc.bad, Foreign: pc.foreign, SendError: pc.sendErr}
	if pc.heard {
		st.PeerFingerprint = pc.peerFP.String()
	}
	return st
}

func (pc *poolCheck) close() error {
	if pc.conn == nil {
		return nil
	}
	return pc.conn.Close()
}
