package ha

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"xnat/flowtable"
)

// peer is one side of an in-memory link: its own table (what it sends)
// and the cache of what it received.
type peer struct {
	t      testing.TB
	s      *Session
	table  map[flowtable.Tuple]Conn
	cache  *Cache
	resync int
}

func newPeer(t testing.TB, cfg Config) *peer {
	p := &peer{t: t, table: make(map[flowtable.Tuple]Conn), cache: NewCache()}
	p.s = NewSession(cfg, p)
	return p
}

func (p *peer) Conn(t MsgType, c *Conn) { p.cache.Apply(t, c) }
func (p *peer) Resync() {
	p.resync++
	for _, c := range p.table {
		p.s.Send(TypeUpdate, &c)
	}
}

func (p *peer) put(t MsgType, c Conn) {
	if t == TypeDelete {
		delete(p.table, c.Orig())
	} else {
		p.table[c.Orig()] = c
	}
	p.s.Send(t, &c)
}

// deliver carries every datagram from a to b, dropping each with
// probability loss.
func deliver(t testing.TB, a, b *peer, rng *rand.Rand, loss float64) {
	t.Helper()
	for _, d := range a.s.Flush() {
		if loss > 0 && rng.Float64() < loss {
			continue
		}
		if err := b.s.Receive(d, time.Now()); err != nil {
			t.Fatalf("receive: %v", err)
		}
	}
}

// handshake delivers a's messages to b and b's answer (an ACK with
// HELLO_BACK) to a, which stops saying hello.
func handshake(t testing.TB, a, b *peer) {
	t.Helper()
	deliver(t, a, b, nil, 0)
	b.s.Tick()
	deliver(t, b, a, nil, 0)
	if a.s.sayHello {
		t.Fatal("hello not answered")
	}
}

func conn(i int) Conn {
	return Conn{Proto: 17, Src: ip(10, 0, byte(i>>8), byte(i)), Dst: ip(198, 51, 100, 2), SrcPort: uint16(1024 + i), DstPort: 53,
		Status: IPSConfirmed | IPSSrcNAT, SNAT: ip(198, 51, 100, 1), SPAT: uint16(20000 + i), Has: HasSNAT | HasSPAT | HasTimeout, Timeout: 30}
}

func sameCache(t testing.TB, table map[flowtable.Tuple]Conn, c *Cache) {
	t.Helper()
	if c.Len() != len(table) {
		t.Fatalf("cache holds %d connections, the table %d", c.Len(), len(table))
	}
	for k, v := range table {
		got, ok := c.Get(k)
		if !ok || got != v {
			t.Fatalf("%v: cache has %+v (%v), table %+v", k, got, ok, v)
		}
	}
}

func TestSessionLossless(t *testing.T) {
	a, b := newPeer(t, Config{Window: 50, Seq: 1000}), newPeer(t, Config{Window: 50, Seq: 5000})
	for i := range 1000 {
		a.put(TypeNew, conn(i))
	}
	deliver(t, a, b, nil, 0)
	deliver(t, b, a, nil, 0) // ACKs, with the hello answered
	if got := b.s.St.MsgRecv; got != 1000 {
		t.Fatalf("received %d messages", got)
	}
	if b.s.St.AckSent != 20 || a.s.St.AckRecv != 20 || a.s.Unacked() != 0 {
		t.Fatalf("acks sent %d received %d, unacked %d", b.s.St.AckSent, a.s.St.AckRecv, a.s.Unacked())
	}
	if a.s.sayHello {
		t.Fatal("a still says hello after b's HELLO_BACK")
	}
	sameCache(t, a.table, b.cache)
	if n := b.s.St.Lost + b.s.St.Malformed + a.s.St.Retransmitted; n != 0 {
		t.Fatalf("lost/malformed/retransmitted on a lossless link: %+v %+v", a.s.St, b.s.St)
	}
	// Updates and deletes.
	for i := range 100 {
		c := conn(i)
		c.Status |= IPSSeenReply | IPSAssured
		a.put(TypeUpdate, c)
		a.put(TypeDelete, conn(500+i))
	}
	deliver(t, a, b, nil, 0)
	sameCache(t, a.table, b.cache)
}

// TestSessionLoss drops 10% of the datagrams both ways while connections
// come, change and go: NACKs, passed-over ACKs and the ALIVE timer bring
// the backup's cache to the primary's table once the load ends.
func TestSessionLoss(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4, 5} {
		rng := rand.New(rand.NewPCG(seed, 7))
		a, b := newPeer(t, Config{Window: 20, MTU: 300}), newPeer(t, Config{Window: 20, MTU: 300})
		live := map[int]bool{}
		for round := range 300 {
			for range 10 {
				i := rng.IntN(400)
				c := conn(i)
				switch {
				case !live[i]:
					a.put(TypeNew, c)
					live[i] = true
				case rng.IntN(3) == 0:
					a.put(TypeDelete, c)
					delete(live, i)
				default:
					c.Status |= IPSSeenReply
					c.Timeout = uint32(round)
					a.put(TypeUpdate, c)
				}
			}
			deliver(t, a, b, rng, 0.1)
			deliver(t, b, a, rng, 0.1)
			if round%5 == 0 {
				a.s.Tick()
				b.s.Tick()
			}
		}
		for range 100 {
			a.s.Tick()
			b.s.Tick()
			deliver(t, a, b, rng, 0.1)
			deliver(t, b, a, rng, 0.1)
		}
		sameCache(t, a.table, b.cache)
		if a.s.Unacked() != 0 {
			t.Fatalf("seed %d: %d connections still unacknowledged", seed, a.s.Unacked())
		}
		if b.s.St.Lost == 0 || a.s.St.Retransmitted == 0 || b.s.St.NackSent == 0 {
			t.Fatalf("seed %d: no loss seen or repaired: %+v / %+v", seed, a.s.St, b.s.St)
		}
		t.Logf("seed %d: sent %d, lost %d, retransmitted %d, nacks %d, full resyncs %d", seed, a.s.St.MsgSent, b.s.St.Lost, a.s.St.Retransmitted, b.s.St.NackSent, a.resync)
	}
}

func TestSessionResendOverflow(t *testing.T) {
	a, b := newPeer(t, Config{Window: 1000, ResendQueue: 10}), newPeer(t, Config{Window: 1000})
	a.put(TypeNew, conn(0))
	handshake(t, a, b)
	for i := 1; i < 30; i++ {
		a.put(TypeNew, conn(i))
	}
	a.s.Flush() // all lost
	a.put(TypeNew, conn(30))
	deliver(t, a, b, nil, 0) // b notices the gap and NACKs it
	deliver(t, b, a, nil, 0)
	if a.s.St.ResendOverflow == 0 || a.s.St.ResendFull != 1 || a.resync != 1 {
		t.Fatalf("overflow %d, full resends %d, resyncs %d", a.s.St.ResendOverflow, a.s.St.ResendFull, a.resync)
	}
	deliver(t, a, b, nil, 0)
	sameCache(t, a.table, b.cache)
}

func TestSessionResyncRequest(t *testing.T) {
	a, b := newPeer(t, Config{}), newPeer(t, Config{})
	for i := range 10 {
		c := conn(i)
		a.table[c.Orig()] = c
	}
	b.s.RequestResync()
	deliver(t, b, a, nil, 0)
	if a.resync != 1 || a.s.St.ResyncRecv != 1 {
		t.Fatalf("resync not asked: %+v", a.s.St)
	}
	deliver(t, a, b, nil, 0)
	sameCache(t, a.table, b.cache)
}

func TestSessionDelayedAndRestart(t *testing.T) {
	a, b := newPeer(t, Config{Seq: 100}), newPeer(t, Config{})
	a.put(TypeNew, conn(0))
	handshake(t, a, b)
	a.put(TypeNew, conn(1))
	old := a.s.Flush()
	a.put(TypeNew, conn(2))
	deliver(t, a, b, nil, 0)
	if err := b.s.Receive(old[0], time.Now()); err != nil {
		t.Fatal(err)
	}
	if b.s.St.Delayed != 1 || b.cache.Len() != 2 {
		t.Fatalf("delayed %d, cache %d", b.s.St.Delayed, b.cache.Len())
	}
	// a restarts with a lower sequence: its hello makes b track afresh.
	a2 := newPeer(t, Config{Seq: 5})
	a2.put(TypeNew, conn(3))
	deliver(t, a2, b, nil, 0)
	c3 := conn(3)
	if _, ok := b.cache.Get(c3.Orig()); !ok || b.s.St.HelloRecv < 2 {
		t.Fatalf("restarted peer's message not taken: %+v", b.s.St)
	}
}

func TestSessionBadInput(t *testing.T) {
	b := newPeer(t, Config{})
	cases := []struct {
		hex  string
		want error
	}{
		{"1a00000800000001", ErrType},                    // control without a flag
		{"1a08001000000002000000050000000100", ErrRange}, // ACK 5..1
		{"10000008000000", ErrShort},
		{"1000000c00000003000c0000", ErrAttr},
	}
	for _, tc := range cases {
		err := b.s.Receive(mustHex(t, tc.hex), time.Now())
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.hex, err, tc.want)
		}
	}
	if b.s.St.Malformed != uint64(len(cases)) {
		t.Fatalf("malformed %d, want %d", b.s.St.Malformed, len(cases))
	}
	// IPv6 is counted as unsupported, not malformed.
	v6 := mustHex(t, "1000002c00000010"+"00240001"+"20010db8000000000000000000000001"+"20010db8000000000000000000000002")
	if err := b.s.Receive(v6, time.Now()); !errors.Is(err, ErrUnsupported) || b.s.St.Unsupported != 1 {
		t.Fatalf("ipv6: %v %+v", err, b.s.St)
	}
}
