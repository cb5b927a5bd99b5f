package ha

import (
	"fmt"
	"time"

	"xnat/flowtable"
)

// Config tunes a Session. Zero fields take conntrackd's defaults.
type Config struct {
	// Window is how many messages the receiver takes before it
	// acknowledges them (conntrackd's ACKWindowSize; default 300).
	Window int
	// ResendQueue is how many sent messages are kept until acknowledged
	// (conntrackd's ResendQueueSize; default 131072). When it overflows,
	// the oldest are dropped; a NACK for them is answered with a full
	// resend of the table (Handler.Resync).
	ResendQueue int
	// MTU bounds a datagram's payload (default 1472: a 1500-byte link
	// minus IPv4 and UDP headers).
	MTU int
	// Seq is the first sequence number (default: the current Unix time,
	// as conntrackd starts).
	Seq uint32
}

const (
	defaultWindow      = 300
	defaultResendQueue = 131072
	defaultMTU         = 1472
)

// Handler receives what the peer sends. Its methods run inside
// Session.Receive.
type Handler interface {
	// Conn is a connection message: new, update or delete.
	Conn(t MsgType, c *Conn)
	// Resync is the peer's request for every connection this side has
	// (or a NACK for messages no longer kept): the handler sends them all
	// with Session.Send.
	Resync()
}

// Stats are a Session's counters.
type Stats struct {
	MsgSent, MsgRecv       uint64 // messages (not datagrams)
	Datagrams              uint64 // datagrams received
	Malformed              uint64 // messages or datagrams rejected as malformed
	Unsupported            uint64 // well-formed connections xnat cannot hold (IPv6, expectations)
	Lost                   uint64 // messages the peer sent that never arrived (sequence gaps)
	Delayed                uint64 // messages that arrived after a later one, dropped
	Retransmitted          uint64 // messages sent again after a NACK or a passed-over ACK
	AckSent, AckRecv       uint64
	NackSent, NackRecv     uint64
	ResyncSent, ResyncRecv uint64
	ResendOverflow         uint64 // sent messages dropped from a full resend queue
	ResendFull             uint64 // NACKs for dropped messages, answered with a full resync
	HelloRecv              uint64 // the peer (re)started
}

type sentMsg struct {
	seq uint32
	t   MsgType
	c   Conn
}

// Session is one side of an FTFW link: it numbers and frames what this
// side sends, keeps it until the peer acknowledges it, and tracks,
// acknowledges and reports what the peer sends. It does no I/O and is not
// safe for concurrent use: Link serialises it.
type Session struct {
	cfg Config
	h   Handler

	// Sending.
	seq          uint32 // the next sequence number
	sayHello     bool   // until the peer's HELLO_BACK
	sayHelloBack bool
	resend       []sentMsg                  // data messages awaiting an ACK, oldest first
	latest       map[flowtable.Tuple]uint32 // each held connection's newest message
	dropped      bool                       // the resend queue has dropped messages, up to droppedTo
	droppedTo    uint32
	cur          []byte   // the datagram being filled
	out          [][]byte // full datagrams
	sentSince    bool     // something was sent since the last Tick

	// Receiving.
	seqSet     bool
	lastSeq    uint32
	ackFromSet bool
	ackFrom    uint32
	window     int
	lastRecv   time.Time

	St Stats
}

// NewSession returns a session that reports to h.
func NewSession(cfg Config, h Handler) *Session {
	if cfg.Window <= 0 {
		cfg.Window = defaultWindow
	}
	if cfg.ResendQueue <= 0 {
		cfg.ResendQueue = defaultResendQueue
	}
	if cfg.MTU <= 0 {
		cfg.MTU = defaultMTU
	}
	if cfg.MTU < 128 {
		cfg.MTU = 128
	}
	if cfg.Seq == 0 {
		cfg.Seq = uint32(time.Now().Unix())
	}
	return &Session{cfg: cfg, h: h, seq: cfg.Seq, sayHello: true, window: cfg.Window, latest: make(map[flowtable.Tuple]uint32)}
}

// before reports whether sequence a comes before b (serial arithmetic).
func before(a, b uint32) bool { return int32(a-b) < 0 }

// Seq returns the next sequence number this side will send.
func (s *Session) Seq() uint32 { return s.seq }

// PeerSeq returns the last sequence number received from the peer.
func (s *Session) PeerSeq() (uint32, bool) { return s.lastSeq, s.seqSet }

// LastRecv returns when the peer was last heard.
func (s *Session) LastRecv() time.Time { return s.lastRecv }

// Unacked returns how many connections have a sent message that awaits
// the peer's ACK.
func (s *Session) Unacked() int { return len(s.latest) }

func (s *Session) flags() Flags {
	var f Flags
	if s.sayHello {
		f |= FlagHello
	}
	if s.sayHelloBack {
		f |= FlagHelloBack
		s.sayHelloBack = false
	}
	return f
}

func (s *Session) nextSeq() uint32 {
	q := s.seq
	s.seq++
	return q
}

// frame adds one encoded message to the datagram being filled.
func (s *Session) frame(msg []byte) {
	if len(s.cur)+len(msg) > s.cfg.MTU && len(s.cur) > 0 {
		s.out = append(s.out, s.cur)
		s.cur = nil
	}
	s.cur = append(s.cur, msg...)
	s.St.MsgSent++
	s.sentSince = true
}

// Send queues a connection message.
func (s *Session) Send(t MsgType, c *Conn) {
	s.send(t, c)
}

func (s *Session) send(t MsgType, c *Conn) {
	q := s.nextSeq()
	var buf [256]byte
	s.frame(AppendConn(buf[:0], t, s.flags(), q, c))
	if len(s.resend) >= s.cfg.ResendQueue {
		old := &s.resend[0]
		if s.release(old) {
			s.dropped, s.droppedTo = true, old.seq
			s.St.ResendOverflow++
		}
		s.resend = s.resend[1:]
	}
	s.resend = append(s.resend, sentMsg{seq: q, t: t, c: *c})
	s.latest[c.Orig()] = q
}

// release forgets a held message; it reports whether the message was its
// connection's newest (an older one is superseded: sending it again would
// undo what the newer one said).
func (s *Session) release(m *sentMsg) bool {
	k := m.c.Orig()
	if q, ok := s.latest[k]; ok && q == m.seq {
		delete(s.latest, k)
		return true
	}
	return false
}

func (s *Session) control(f Flags, from, to uint32) {
	var buf [AckLen]byte
	s.frame(AppendControl(buf[:0], f|s.flags(), s.nextSeq(), from, to))
	switch {
	case f&FlagAck != 0:
		s.St.AckSent++
	case f&FlagNack != 0:
		s.St.NackSent++
	case f&FlagResync != 0:
		s.St.ResyncSent++
	}
}

// RequestResync asks the peer for every connection it has.
func (s *Session) RequestResync() { s.control(FlagResync, 0, 0) }

// Flush ends the datagram being filled and returns every datagram ready
// to send; the caller owns them.
func (s *Session) Flush() [][]byte {
	if len(s.cur) > 0 {
		s.out = append(s.out, s.cur)
		s.cur = nil
	}
	out := s.out
	s.out = nil
	return out
}

// Tick runs the once-a-second timer: it acknowledges what was received
// since the last ACK, or, when nothing else was sent, says ALIVE (whose
// sequence number lets the peer notice a lost tail).
func (s *Session) Tick() {
	if s.ackFromSet && s.seqSet {
		s.control(FlagAck, s.ackFrom, s.lastSeq)
		s.ackFromSet = false
		s.window = s.cfg.Window
	}
	if !s.sentSince {
		s.control(FlagAlive, 0, 0)
	}
	s.sentSince = false
}

// Receive processes one datagram from the peer. It returns the first
// error met; the messages before it have been processed, the rest of the
// datagram is dropped, and Stats counts it.
func (s *Session) Receive(dgram []byte, now time.Time) error {
	s.St.Datagrams++
	for off := 0; off < len(dgram); {
		h, err := ParseHeader(dgram[off:])
		if err != nil {
			s.St.Malformed++
			return fmt.Errorf("sync message at offset %d: %w", off, err)
		}
		msg := dgram[off : off+int(h.Len)]
		off += int(h.Len)
		s.lastRecv = now
		if err := s.message(&h, msg); err != nil {
			return fmt.Errorf("sync message %d (%s, seq %d): %w", s.St.MsgRecv, h.Type, h.Seq, err)
		}
	}
	return nil
}

func (s *Session) message(h *Header, msg []byte) error {
	s.St.MsgRecv++
	if !h.IsData() && !(h.Type == TypeCtl && h.Flags&(FlagAck|FlagNack|FlagResync|FlagAlive) != 0) {
		s.St.Malformed++
		return fmt.Errorf("%w: type %d flags %#x", ErrType, h.Type, uint8(h.Flags))
	}
	if h.IsRange() && before(h.To, h.From) {
		s.St.Malformed++
		return fmt.Errorf("%w: %d..%d", ErrRange, h.From, h.To)
	}
	if h.Flags&FlagHelloBack != 0 {
		s.sayHello = false
	}
	if h.Flags&FlagHello != 0 && (!s.seqSet || h.Seq != s.lastSeq+1) {
		// The peer (re)started and says hello on every message until it
		// hears back: out of sequence, its sequence is tracked afresh. A
		// message lost meanwhile is not NACKed; the sender sends it again
		// when an ACK passes over it.
		s.St.HelloRecv++
		s.sayHelloBack = true
		s.seqSet, s.ackFromSet, s.window = false, false, s.cfg.Window
	} else if h.Flags&FlagHello != 0 {
		s.sayHelloBack = true
	}
	switch {
	case !s.seqSet || h.Seq == s.lastSeq+1:
		if !s.ackFromSet {
			s.ackFrom, s.ackFromSet = h.Seq, true
		}
		s.window--
		if s.window <= 0 {
			s.lastSeq, s.seqSet = h.Seq, true
			s.control(FlagAck, s.ackFrom, h.Seq)
			s.ackFromSet, s.window = false, s.cfg.Window
		}
	case before(s.lastSeq+1, h.Seq):
		exp := s.lastSeq + 1
		s.St.Lost += uint64(h.Seq - exp)
		if s.ackFromSet && before(s.ackFrom, exp) {
			s.control(FlagAck, s.ackFrom, exp-1)
		}
		s.control(FlagNack, exp, h.Seq-1)
		s.ackFrom, s.ackFromSet = h.Seq, true
		s.window = s.cfg.Window - 1
	default:
		s.St.Delayed++
		return nil
	}
	s.lastSeq, s.seqSet = h.Seq, true
	return s.digest(h, msg)
}

func (s *Session) digest(h *Header, msg []byte) error {
	if h.IsData() {
		if h.Type > TypeDelete {
			s.St.Unsupported++
			return nil
		}
		c, err := ParseConn(msg[HeaderLen:])
		if err != nil {
			if isUnsupported(err) {
				s.St.Unsupported++
			} else {
				s.St.Malformed++
			}
			return err
		}
		s.h.Conn(h.Type, &c)
		return nil
	}
	switch {
	case h.Flags&FlagAck != 0:
		s.St.AckRecv++
		s.acked(h.From, h.To)
	case h.Flags&FlagNack != 0:
		s.St.NackRecv++
		s.nacked(h.From, h.To)
	case h.Flags&FlagResync != 0:
		s.St.ResyncRecv++
		s.h.Resync()
	}
	return nil
}

func isUnsupported(err error) bool {
	for e := err; e != nil; {
		if e == ErrUnsupported {
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}

// acked releases the messages from..to. Messages older than from that
// are still held were passed over by the peer (its NACK for them was
// lost): they are sent again.
func (s *Session) acked(from, to uint32) {
	var again []sentMsg
	keep := s.resend[:0]
	for _, m := range s.resend {
		switch {
		case before(m.seq, from):
			if s.release(&m) {
				again = append(again, m)
			}
		case !before(to, m.seq):
			s.release(&m)
		default:
			keep = append(keep, m)
		}
	}
	s.resend = keep
	s.retransmit(again)
}

// nacked sends from..to again, with new sequence numbers (the peer drops
// a message numbered before one it has seen); a message superseded by a
// newer one for the same connection is not sent again. If some of them
// are no longer held, the peer gets the whole table.
func (s *Session) nacked(from, to uint32) {
	if s.dropped && !before(s.droppedTo, from) {
		s.dropped = false
		s.St.ResendFull++
		s.h.Resync()
		return
	}
	var again []sentMsg
	keep := s.resend[:0]
	for _, m := range s.resend {
		if !before(m.seq, from) && !before(to, m.seq) {
			if s.release(&m) {
				again = append(again, m)
			}
		} else {
			keep = append(keep, m)
		}
	}
	s.resend = keep
	s.retransmit(again)
}

func (s *Session) retransmit(ms []sentMsg) {
	for i := range ms {
		s.St.Retransmitted++
		s.send(ms[i].t, &ms[i].c)
	}
}
