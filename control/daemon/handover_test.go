package daemon

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"xnat/control/ha"
	"xnat/flowtable"
)

// handOverConns are a TCP connection with 5 minutes left and a UDP one
// with 30 s left, both source-NATed.
func handOverConns() []flowtable.FlowInfo {
	tcp := flowtable.FlowInfo{
		Orig:    flowtable.MakeTuple(flowtable.ProtoTCP, 0x0A090A0A, 40000, 0xC6336410, 443),
		Reply:   flowtable.MakeTuple(flowtable.ProtoTCP, 0xC6336410, 443, 0xC6336401, 61000),
		Status:  uint32(flowtable.TCPEstablished) | flowtable.FlagSeenReply | flowtable.FlagAssured,
		Expires: 5 * time.Minute,
	}
	udp := flowtable.FlowInfo{
		Orig:    flowtable.MakeTuple(flowtable.ProtoUDP, 0x0A090A0A, 5353, 0xC6336410, 53),
		Reply:   flowtable.MakeTuple(flowtable.ProtoUDP, 0xC6336410, 53, 0xC6336401, 62000),
		Status:  uint32(flowtable.UDP) | flowtable.FlagSeenReply,
		Expires: 30 * time.Second,
	}
	return []flowtable.FlowInfo{tcp, udp}
}

func encodeTestHandOver(t testing.TB, fp string, stopped time.Time, conns []flowtable.FlowInfo) []byte {
	s := &handOverSender{}
	for i := range conns {
		c := ha.FromFlow(&conns[i])
		s.Send(ha.TypeUpdate, &c)
	}
	b, err := encodeHandOverFile(&HandOverHeader{PID: 42, Stopped: stopped.UnixNano(), Fingerprint: fp, Conns: s.n,
		HARole: "primary", HARoleSince: stopped.Add(-time.Hour).UnixNano()}, s.buf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHandOverFileRoundTrip(t *testing.T) {
	now := time.Now()
	conns := handOverConns()
	b := encodeTestHandOver(t, "fp1", now.Add(-time.Second), conns)
	ld, err := LoadHandOverFile(bytes.NewReader(b), "fp1", now)
	if err != nil {
		t.Fatal(err)
	}
	if ld.Header.PID != 42 || ld.Bad != 0 || ld.Expired != 0 || len(ld.Flows) != 2 || ld.Header.HARole != "primary" ||
		ld.Header.HARoleSince != now.Add(-time.Second-time.Hour).UnixNano() {
		t.Fatalf("header %+v, bad %d, expired %d, %d flows", ld.Header, ld.Bad, ld.Expired, len(ld.Flows))
	}
	for i, nf := range ld.Flows {
		if nf.Orig != conns[i].Orig || nf.Reply != conns[i].Reply {
			t.Errorf("flow %d: %v -> %v, want %v -> %v", i, nf.Orig, nf.Reply, conns[i].Orig, conns[i].Reply)
		}
		if nf.Status&flowtable.FlagSrcNAT == 0 || flowtable.StatusState(nf.Status) != flowtable.StatusState(conns[i].Status) {
			t.Errorf("flow %d: status %#x, want source NAT and the state of %#x", i, nf.Status, conns[i].Status)
		}
	}
}

func TestHandOverFileRefused(t *testing.T) {
	now := time.Now()
	b := encodeTestHandOver(t, "fp1", now.Add(-time.Minute), handOverConns())
	// Another configuration.
	if _, err := LoadHandOverFile(bytes.NewReader(b), "fp2", now); !errors.Is(err, ErrHandOver) || !strings.Contains(err.Error(), "another configuration") {
		t.Errorf("other fingerprint: %v", err)
	}
	// A minute old: the UDP connection (30 s left) has expired, the TCP
	// one is kept.
	ld, err := LoadHandOverFile(bytes.NewReader(b), "fp1", now)
	if err != nil || ld.Expired != 1 || len(ld.Flows) != 1 || ld.Flows[0].Orig.Proto != flowtable.ProtoTCP {
		t.Errorf("a minute old: %d flows, %d expired, %v", len(ld.Flows), ld.Expired, err)
	}
	// An hour old: every connection has expired: stale.
	b = encodeTestHandOver(t, "fp1", now.Add(-time.Hour), handOverConns())
	if _, err := LoadHandOverFile(bytes.NewReader(b), "fp1", now); !errors.Is(err, ErrHandOver) || !strings.Contains(err.Error(), "stale") {
		t.Errorf("an hour old: %v", err)
	}
	// Cut short.
	b = encodeTestHandOver(t, "fp1", now, handOverConns())
	if _, err := LoadHandOverFile(bytes.NewReader(b[:len(b)-5]), "fp1", now); !errors.Is(err, ErrHandOver) {
		t.Errorf("truncated: %v", err)
	}
	// Not a hand-over, and a refusal.
	for _, in := range []string{"", "hello\n", "xnat-handover 1\n{\"conns\":-1}\n", "xnat-handover 1\n{\"x\":1}\n"} {
		if _, err := LoadHandOverFile(strings.NewReader(in), "fp1", now); !errors.Is(err, ErrHandOver) {
			t.Errorf("%q: %v", in, err)
		}
	}
	if _, err := LoadHandOverFile(strings.NewReader("error busy\n"), "fp1", now); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("refusal: %v", err)
	}
}

// A message that is not a connection is counted and skipped; the others
// are kept.
func TestHandOverFileBadMessage(t *testing.T) {
	now := time.Now()
	conns := handOverConns()
	s := &handOverSender{}
	c := ha.FromFlow(&conns[0])
	s.Send(ha.TypeUpdate, &c)
	s.buf = ha.AppendControl(s.buf, ha.FlagAlive, 1, 0, 0)
	s.n++
	bad := ha.AppendConn(nil, ha.TypeUpdate, 0, 2, &c)
	bad = append(bad[:ha.HeaderLen], 0, 4, 0, 99) // one unknown, empty attribute: no tuple
	bad[3] = byte(len(bad))
	s.buf = append(s.buf, bad...)
	s.n++
	b, err := encodeHandOverFile(&HandOverHeader{Stopped: now.UnixNano(), Fingerprint: "fp", Conns: s.n}, s.buf)
	if err != nil {
		t.Fatal(err)
	}
	ld, err := LoadHandOverFile(bytes.NewReader(b), "fp", now)
	if err != nil || ld.Bad != 2 || len(ld.Flows) != 1 {
		t.Fatalf("%d flows, %d bad, %v", len(ld.Flows), ld.Bad, err)
	}
}

func TestCheckTakeOverRequest(t *testing.T) {
	if err := CheckTakeOverRequest(strings.NewReader("xnat-takeover 1 abc\n"), "abc"); err != nil {
		t.Error(err)
	}
	for _, in := range []string{"xnat-takeover 1 abd\n", "xnat-takeover 2 abc\n", "", strings.Repeat("x", 2000)} {
		if err := CheckTakeOverRequest(strings.NewReader(in), "abc"); !errors.Is(err, ErrHandOver) {
			t.Errorf("%.20q: %v", in, err)
		}
	}
}

// FuzzLoadHandOverFile: no input makes the loader panic, and what it
// keeps are connections with both tuples.
func FuzzLoadHandOverFile(f *testing.F) {
	now := time.Unix(1_700_000_000, 0)
	f.Add(encodeTestHandOver(f, "fp", now, handOverConns()))
	f.Add(encodeTestHandOver(f, "fp", now.Add(-time.Hour), handOverConns()))
	f.Add([]byte("xnat-handover 1\n{\"fingerprint\":\"fp\",\"conns\":3}\n\x10\x00\x00\x08\x00\x00\x00\x00"))
	f.Add([]byte("error no\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ld, err := LoadHandOverFile(bytes.NewReader(b), "fp", now)
		if err == nil && len(ld.Flows) > ld.Header.Conns {
			t.Fatalf("%d flows from %d messages", len(ld.Flows), ld.Header.Conns)
		}
		for _, nf := range ld.Flows {
			if nf.Orig.Proto != nf.Reply.Proto {
				t.Fatalf("flow %v -> %v", nf.Orig, nf.Reply)
			}
		}
	})
}
