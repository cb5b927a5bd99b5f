package daemon

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"xnat/control/ha"
	"xnat/flowtable"
)

// A hand-over is how one xnatd gives its connections to the next (xnatd
// --takeover): over the hand-over socket, or in the hand-over file a
// stopping xnatd leaves for the one systemd starts next. Both carry the
// same stream:
//
//	xnat-handover 1\n
//	{JSON header: HandOverHeader}\n
//	Conns messages in conntrackd's wire format (package control/ha), one
//	connection each, type update, as a bulk send puts them on the sync
//	link; each message's header gives its length.
//
// Over the socket, the first two lines arrive with the descriptors of the
// interfaces' XDP links (HandOverHeader.Links names them, in order).
const handOverMagic = "xnat-handover 1"

// handOverRequest is the line a taking-over xnatd sends on the hand-over
// socket, followed by its config's fingerprint.
const handOverRequest = "xnat-takeover 1"

// Limits of what a hand-over may hold.
const (
	maxHandOverLine  = 64 << 10
	maxHandOverConns = 1 << 26
)

// HandOverHeader describes a hand-over.
type HandOverHeader struct {
	// PID is the handing-over process.
	PID int `json:"pid"`
	// Stopped is when its workers stopped forwarding (Unix nanoseconds):
	// the start of the gap.
	Stopped int64 `json:"stopped"`
	// Fingerprint is its configuration's (Fingerprint).
	Fingerprint string `json:"fingerprint"`
	// Conns is the number of connection messages that follow.
	Conns int `json:"conns"`
	// Links names the interfaces whose XDP link descriptors came with the
	// header (over the socket), in order.
	Links []string `json:"links,omitempty"`
	// Pins maps an interface to the bpffs path its XDP link is pinned at
	// (the hand-over file).
	Pins map[string]string `json:"pins,omitempty"`
	// HARole is the HA role keepalived's notify hook last recorded
	// (xnatctl ha role), and HARoleSince when (Unix nanoseconds): the
	// new process reports it until keepalived's next transition.
	HARole      string `json:"ha_role,omitempty"`
	HARoleSince int64  `json:"ha_role_since,omitempty"`
}

// Fingerprint identifies what a hand-over depends on: the interfaces and
// the rules (the NAT pools the external ports come from). Two xnatd with
// the same fingerprint agree on every connection's translation.
func Fingerprint(c *Config) (string, error) {
	text, err := c.readRules()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "inside=%s\noutside=%s\n", strings.Join(c.Inside, ","), strings.Join(c.Outside, ","))
	h.Write(text)
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// handOverSender collects a bulk send's messages (ha.SendTable) into one
// buffer.
type handOverSender struct {
	buf []byte
	n   int
}

func (s *handOverSender) Send(t ha.MsgType, c *ha.Conn) {
	s.buf = ha.AppendConn(s.buf, t, 0, uint32(s.n), c)
	s.n++
}

func (s *handOverSender) Flush() error { return nil }

// encodeHandOverHeader returns the stream's first two lines.
func encodeHandOverHeader(h *HandOverHeader) ([]byte, error) {
	j, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("hand-over header: %w", err)
	}
	b := append([]byte(handOverMagic+"\n"), j...)
	return append(b, '\n'), nil
}

// ErrHandOver: a hand-over was refused or could not be read.
var ErrHandOver = errors.New("hand-over")

// HandOverLoad is what a hand-over holds once read: the connections still
// alive, as flow-table records to commit, and what was left out.
type HandOverLoad struct {
	Header HandOverHeader
	Flows  []flowtable.NewFlow
	// Bad counts messages that are not a valid IPv4 connection (counted,
	// skipped); Expired those whose time left ran out since the hand-over
	// began.
	Bad, Expired int
}

// readLine reads one line of at most maxHandOverLine bytes.
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		frag, err := r.ReadSlice('\n')
		b = append(b, frag...)
		if len(b) > maxHandOverLine {
			return "", fmt.Errorf("%w: a header line longer than %d bytes", ErrHandOver, maxHandOverLine)
		}
		if err == nil {
			return string(b[:len(b)-1]), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return "", fmt.Errorf("%w: reading the header: %w", ErrHandOver, err)
		}
	}
}

// readHandOverHeader reads the stream's first two lines. A line other
// than the magic one is the handing-over side's refusal, returned as the
// error.
func readHandOverHeader(r *bufio.Reader) (HandOverHeader, error) {
	var h HandOverHeader
	line, err := readLine(r)
	if err != nil {
		return h, err
	}
	if line != handOverMagic {
		if rest, ok := strings.CutPrefix(line, "error "); ok {
			return h, fmt.Errorf("%w refused by the running xnatd: %s", ErrHandOver, rest)
		}
		return h, fmt.Errorf("%w: not an xnat hand-over (%.40q)", ErrHandOver, line)
	}
	line, err = readLine(r)
	if err != nil {
		return h, err
	}
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return h, fmt.Errorf("%w: header: %w", ErrHandOver, err)
	}
	if h.Conns < 0 || h.Conns > maxHandOverConns {
		return h, fmt.Errorf("%w: header: %d connections", ErrHandOver, h.Conns)
	}
	return h, nil
}

// readHandOverConns reads the h.Conns messages that follow the header
// and keeps the connections whose time left (their timeout attribute)
// outlasts age. A message that does not describe a connection is counted
// and skipped; a stream cut short, or a length that breaks the framing,
// is an error.
func readHandOverConns(r *bufio.Reader, h *HandOverHeader, age time.Duration) (HandOverLoad, error) {
	ld := HandOverLoad{Header: *h, Flows: make([]flowtable.NewFlow, 0, min(h.Conns, 1<<16))}
	var hdr [ha.HeaderLen]byte
	msg := make([]byte, 0, 512)
	for i := range h.Conns {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return ld, fmt.Errorf("%w: message %d of %d: %w", ErrHandOver, i, h.Conns, noEOF(err))
		}
		n := int(binary.BigEndian.Uint16(hdr[2:]))
		if n < ha.HeaderLen {
			return ld, fmt.Errorf("%w: message %d of %d: length %d", ErrHandOver, i, h.Conns, n)
		}
		if n > cap(msg) {
			msg = make([]byte, 0, n)
		}
		msg = append(msg[:0], hdr[:]...)
		msg = msg[:n]
		if _, err := io.ReadFull(r, msg[ha.HeaderLen:]); err != nil {
			return ld, fmt.Errorf("%w: message %d of %d: %w", ErrHandOver, i, h.Conns, noEOF(err))
		}
		mh, err := ha.ParseHeader(msg)
		if err != nil || !mh.IsData() || (mh.Type != ha.TypeNew && mh.Type != ha.TypeUpdate) {
			ld.Bad++
			continue
		}
		c, err := ha.ParseConn(msg[ha.HeaderLen:])
		if err != nil {
			ld.Bad++
			continue
		}
		if c.Has&ha.HasTimeout != 0 && time.Duration(c.Timeout)*time.Second <= age {
			ld.Expired++
			continue
		}
		nf, err := c.NewFlow()
		if err != nil {
			ld.Bad++
			continue
		}
		ld.Flows = append(ld.Flows, nf)
	}
	return ld, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// LoadHandOverFile reads a hand-over file as the next xnatd does: it is
// refused when another configuration wrote it (fingerprint differs), or
// when it is stale — older than every connection's time left, so nothing
// in it would still be alive — and otherwise yields its live
// connections. now is the current time.
func LoadHandOverFile(r io.Reader, fingerprint string, now time.Time) (HandOverLoad, error) {
	br := bufio.NewReader(r)
	h, err := readHandOverHeader(br)
	if err != nil {
		return HandOverLoad{Header: h}, err
	}
	if h.Fingerprint != fingerprint {
		return HandOverLoad{Header: h}, fmt.Errorf("%w: written by an xnatd of another configuration (interfaces or rules differ: fingerprint %.32q, this one %s)", ErrHandOver, h.Fingerprint, fingerprint)
	}
	age := now.Sub(time.Unix(0, h.Stopped))
	if age < 0 {
		age = 0
	}
	ld, err := readHandOverConns(br, &h, age)
	if err != nil {
		return ld, err
	}
	if len(ld.Flows) == 0 && ld.Expired > 0 {
		return ld, fmt.Errorf("%w: stale: written %v ago, longer than any of its %d connections had left", ErrHandOver, age.Round(time.Second), ld.Expired)
	}
	return ld, nil
}

// encodeHandOverFile returns a whole hand-over (header and messages).
func encodeHandOverFile(h *HandOverHeader, msgs []byte) ([]byte, error) {
	head, err := encodeHandOverHeader(h)
	if err != nil {
		return nil, err
	}
	return bytes.Join([][]byte{head, msgs}, nil), nil
}
