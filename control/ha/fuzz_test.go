package ha

import (
	"errors"
	"testing"
	"time"
)

var parseErrs = []error{ErrShort, ErrLength, ErrVersion, ErrType, ErrRange, ErrAttr, ErrMissing, ErrUnsupported}

// FuzzReceive feeds arbitrary datagrams to a session: every one is taken
// or rejected with one of the package's errors and counted, never a
// panic; a connection taken encodes and decodes to itself.
func FuzzReceive(f *testing.F) {
	for _, h := range captured {
		f.Add(mustHex(f, h))
	}
	f.Add(mustHex(f, captured["udp-masq"]+captured["tcp-est"]))
	f.Add(AppendControl(nil, FlagAck, 7, 1, 6))
	f.Add(AppendControl(nil, FlagNack|FlagHelloBack, 8, 1, 6))
	f.Add(AppendControl(nil, FlagResync, 9, 0, 0))
	c := conn(3)
	f.Add(AppendConn(nil, TypeDelete, FlagHello, 10, &c))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := &fuzzPeer{t: t}
		s := NewSession(Config{Window: 3, ResendQueue: 4, Seq: 1}, p)
		p.s = s
		for i := range 3 {
			s.Send(TypeNew, &Conn{Proto: 17, Src: uint32(i), Dst: 2, SrcPort: 3, DstPort: 4})
		}
		before := s.St.Malformed + s.St.Unsupported
		err := s.Receive(b, time.Unix(0, 0))
		if err != nil {
			known := false
			for _, e := range parseErrs {
				known = known || errors.Is(err, e)
			}
			if !known {
				t.Fatalf("unexpected error %v", err)
			}
			if s.St.Malformed+s.St.Unsupported == before {
				t.Fatalf("error %v not counted", err)
			}
		}
		s.Tick()
		s.Flush()
	})
}

type fuzzPeer struct {
	t *testing.T
	s *Session
}

func (p *fuzzPeer) Conn(t MsgType, c *Conn) {
	b := AppendConn(nil, t, 0, 1, c)
	d, err := ParseConn(b[HeaderLen:])
	if err != nil {
		p.t.Fatalf("re-encoded %+v does not parse: %v", c, err)
	}
	if t != TypeDelete && d != *c {
		p.t.Fatalf("round trip\n got %+v\nwant %+v", d, *c)
	}
	_, _ = c.NewFlow()
	_ = c.String()
}

func (p *fuzzPeer) Resync() {
	p.s.Send(TypeUpdate, &Conn{Proto: 6, Src: 9, Dst: 9, SrcPort: 9, DstPort: 9, Has: HasTCPState, TCPState: 3})
}
