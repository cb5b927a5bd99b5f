package ha

import (
	"testing"
	"time"

	"xnat/dataplane"
	"xnat/flowtable"
)

// fakeSource is an EventSource with per-core queues.
type fakeSource struct {
	q     [][]dataplane.SyncEvent
	drops uint64
}

func (f *fakeSource) Cores() int        { return len(f.q) }
func (f *fakeSource) SyncDrops() uint64 { return f.drops }
func (f *fakeSource) DrainSync(c int, out []dataplane.SyncEvent) int {
	n := copy(out, f.q[c])
	f.q[c] = f.q[c][n:]
	return n
}

// pipe is a Sender whose datagrams go straight to a receiving peer.
type pipe struct {
	t    testing.TB
	s    *Session
	to   *peer
	sent int
}

func (p *pipe) Send(t MsgType, c *Conn) { p.s.Send(t, c) }
func (p *pipe) Flush() error {
	for _, d := range p.s.Flush() {
		p.sent++
		if err := p.to.s.Receive(d, time.Now()); err != nil {
			p.t.Fatal(err)
		}
	}
	return nil
}

func TestExporter(t *testing.T) {
	tab, err := flowtable.New(flowtable.Config{Capacity: 1024, Cores: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	backup := newPeer(t, Config{})
	out := &pipe{t: t, s: NewSession(Config{}, backup), to: backup}
	src := &fakeSource{q: make([][]dataplane.SyncEvent, 3)}
	ext := a4("198.51.100.1")
	ev := func(kind dataplane.SyncKind, i int, st flowtable.State, flags uint32) dataplane.SyncEvent {
		o := flowtable.MakeTuple(6, a4("10.0.0.2"), uint16(1000+i), a4("192.0.2.1"), 443)
		r := flowtable.MakeTuple(6, a4("192.0.2.1"), 443, ext, uint16(30000+i))
		return dataplane.SyncEvent{Kind: kind, Orig: o, Reply: r, Status: uint32(st) | flags | flowtable.FlagSrcNAT}
	}
	for i := range 2000 {
		c := i % 3
		src.q[c] = append(src.q[c], ev(dataplane.SyncNew, i, flowtable.TCPSynSent, 0))
		src.q[c] = append(src.q[c], ev(dataplane.SyncUpdate, i, flowtable.TCPEstablished, flowtable.FlagSeenReply|flowtable.FlagAssured))
		if i%2 == 0 {
			src.q[c] = append(src.q[c], ev(dataplane.SyncDestroy, i, flowtable.TCPClose, flowtable.FlagSeenReply))
		}
	}
	e := NewExporter(src, out, tab)
	n, err := e.Poll()
	if err != nil || n != 5000 {
		t.Fatalf("polled %d, %v", n, err)
	}
	if backup.cache.Len() != 1000 {
		t.Fatalf("backup holds %d", backup.cache.Len())
	}
	got, ok := backup.cache.Get(flowtable.MakeTuple(6, a4("10.0.0.2"), 1001, a4("192.0.2.1"), 443))
	if !ok || got.TCPState != uint8(flowtable.TCPEstablished) || got.Status&IPSAssured == 0 || !got.Has.has(HasSNAT|HasSPAT) || got.SPAT != 30001 ||
		got.Timeout != uint32(tab.StateTimeout(flowtable.TCPEstablished)/time.Second) {
		t.Fatalf("%v %+v", ok, got)
	}
	if out.sent >= 5000/10 {
		t.Fatalf("%d datagrams for 5000 messages: not batched", out.sent)
	}

	// Dropped events: the whole table goes out.
	core := tab.Core(0)
	nf := flowtable.NewFlow{Orig: flowtable.MakeTuple(17, a4("10.0.0.9"), 53, a4("192.0.2.2"), 53),
		Reply: flowtable.MakeTuple(17, a4("192.0.2.2"), 53, ext, 40000), Status: uint32(flowtable.UDP) | flowtable.FlagSrcNAT}
	core.Enter()
	if _, res := core.Insert(&nf, tab.Now()); res != flowtable.Inserted {
		t.Fatal(res)
	}
	core.Exit()
	src.drops = 3
	if _, err := e.Poll(); err != nil {
		t.Fatal(err)
	}
	if sent, resends := e.counters(); sent != 5000 || resends != 1 {
		t.Fatalf("sent %d, resends %d", sent, resends)
	}
	if got, ok := backup.cache.Get(nf.Orig); !ok || got.Reply() != nf.Reply {
		t.Fatalf("table not sent: %v %+v", ok, got)
	}
}

// TestExporterReplacedRecord: the destroy of a record that a commit
// replaced (same original tuple, another reply tuple, the new one live)
// does not delete the live connection at the peer.
func TestExporterReplacedRecord(t *testing.T) {
	tab, err := flowtable.New(flowtable.Config{Capacity: 1024, Cores: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	backup := newPeer(t, Config{})
	out := &pipe{t: t, s: NewSession(Config{}, backup), to: backup}
	src := &fakeSource{q: make([][]dataplane.SyncEvent, 1)}
	e := NewExporter(src, out, tab)
	ext := a4("198.51.100.1")
	nf := flowtable.NewFlow{Orig: flowtable.MakeTuple(17, a4("10.0.0.9"), 53, a4("192.0.2.2"), 53),
		Reply: flowtable.MakeTuple(17, a4("192.0.2.2"), 53, ext, 40000), Status: uint32(flowtable.UDP) | flowtable.FlagSrcNAT}
	old := nf.Reply
	old.DstPort = 53
	src.q[0] = append(src.q[0], dataplane.SyncEvent{Kind: dataplane.SyncNew, Orig: nf.Orig, Reply: nf.Reply, Status: nf.Status})
	if _, err := e.Poll(); err != nil {
		t.Fatal(err)
	}
	core := tab.Core(0)
	core.Enter()
	if _, res := core.Insert(&nf, tab.Now()); res != flowtable.Inserted {
		t.Fatal(res)
	}
	core.Exit()
	src.q[0] = append(src.q[0], dataplane.SyncEvent{Kind: dataplane.SyncDestroy, Orig: nf.Orig, Reply: old, Status: nf.Status})
	if _, err := e.Poll(); err != nil {
		t.Fatal(err)
	}
	if got, ok := backup.cache.Get(nf.Orig); !ok || got.Reply() != nf.Reply {
		t.Fatalf("the live connection was deleted at the peer: %v %+v", ok, got)
	}
	if !tab.Delete(nf.Orig) {
		t.Fatal("delete")
	}
	src.q[0] = append(src.q[0], dataplane.SyncEvent{Kind: dataplane.SyncDestroy, Orig: nf.Orig, Reply: nf.Reply, Status: nf.Status})
	if _, err := e.Poll(); err != nil {
		t.Fatal(err)
	}
	if _, ok := backup.cache.Get(nf.Orig); ok {
		t.Fatal("a connection gone from the table is still at the peer")
	}
}
