package flowtable

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func sharedFlow(k int) NewFlow {
	return NewFlow{
		Orig:   MakeTuple(ProtoUDP, ip(10, 0, byte(k>>8), byte(k)), 5000, 0, 0),
		Reply:  MakeTuple(ProtoUDP, 0, 0, external, uint16(20000+k)),
		Status: uint32(UDPStream) | FlagAssured,
	}
}

func TestSharedRecordUsers(t *testing.T) {
	tab, err := New(Config{Capacity: 64, Cores: 1, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.SetTimeout("nf_conntrack_udp_timeout_stream", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	tab.SetTimeout("nf_conntrack_tcp_timeout_established", MaxTimeout)
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	nf := sharedFlow(1)
	if _, res := c.Insert(&nf, 0); res != Inserted {
		t.Fatal(res)
	}
	r := c.Lookup(&nf.Orig, 0)
	f := tab.Flow(r)
	for i := range 3 {
		if !f.AddUser(Time(i), TCPEstablished) {
			t.Fatal("AddUser refused on a live record")
		}
	}
	if f.Users() != 3 || f.State() != TCPEstablished {
		t.Fatalf("users %d state %v", f.Users(), f.State())
	}
	// Held: no expiry, however long.
	far := TimeAt(10 * 24 * time.Hour)
	var gone [4]Gone
	if c.Sweep(far, 64, gone[:]) != 0 || c.Lookup(&nf.Reply, far) == 0 {
		t.Fatal("a record with users expired")
	}
	if f.DropUser(far, UDPStream) != 2 || f.DropUser(far, UDPStream) != 1 {
		t.Fatal("DropUser counts")
	}
	last := far + TimeAt(time.Second)
	if f.DropUser(last, UDPStream) != 0 || f.State() != UDPStream || f.LastSeen() != last {
		t.Fatalf("last user gone: state %v last seen %v", f.State(), f.LastSeen())
	}
	if f.DropUser(last, UDPStream) != 0 || f.Users() != 0 {
		t.Fatal("DropUser below zero")
	}
	// The idle timeout runs from the last user's leaving.
	if c.Sweep(last+TimeAt(time.Second), 64, gone[:]) != 0 || c.Lookup(&nf.Orig, last+TimeAt(time.Second)) == 0 {
		t.Fatal("expired before its idle timeout")
	}
	end := last + TimeAt(3*time.Second)
	if f.AddUser(end, TCPEstablished) && c.Lookup(&nf.Orig, end) == 0 {
		t.Fatal("AddUser took an expired record")
	}
	f.DropUser(end, UDPStream)
	if n := c.Sweep(end+TimeAt(3*time.Second), 64, gone[:]); n != 1 || gone[0].Reason != ReasonTimeout {
		t.Fatalf("swept %d", n)
	}
}

// TestSharedRecordUsersRace: a core adds and drops users of a shared
// record owned by another core, whose sweep expires it whenever it is
// idle past its timeout (and inserts it again); a record is never killed
// while it has a user.
func TestSharedRecordUsersRace(t *testing.T) {
	tab, err := New(Config{Capacity: 256, Cores: 2, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	tab.SetTimeout("nf_conntrack_udp_timeout_stream", Tick)
	tab.SetTimeout("nf_conntrack_tcp_timeout_established", MaxTimeout)
	var now atomic.Uint32
	var stop atomic.Bool
	var expired, held atomic.Int64
	const keys = 4
	owner := tab.Core(0)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the owner: sweeps, and inserts what is gone
		defer wg.Done()
		var gone [16]Gone
		for i := 0; !stop.Load(); i++ {
			owner.Enter()
			n := Time(now.Add(1))
			for k := range keys {
				nf := sharedFlow(k)
				owner.Insert(&nf, n)
			}
			m := owner.Sweep(n, 64, gone[:])
			expired.Add(int64(m))
			owner.Exit()
			if i%8 == 0 {
				runtime.Gosched()
			}
		}
	}()
	go func() { // another core's users
		defer wg.Done()
		c := tab.Core(1)
		for i := 0; !stop.Load(); i++ {
			c.Enter()
			n := Time(now.Load())
			k := sharedFlow(i % keys).Reply
			if r := c.Lookup(&k, n); r != 0 {
				f := tab.Flow(r)
				if f.AddUser(n, TCPEstablished) {
					held.Add(1)
					now.Add(3) // well past the idle timeout meanwhile
					runtime.Gosched()
					if f.status.Load()&flagDying != 0 {
						t.Error("a record was killed while it had a user")
					}
					f.DropUser(Time(now.Load()), UDPStream)
				}
			}
			c.Exit()
		}
	}()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && (expired.Load() < 1000 || held.Load() < 1000) {
		time.Sleep(10 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if expired.Load() == 0 || held.Load() == 0 {
		t.Fatalf("expired %d, held %d: the race was not exercised", expired.Load(), held.Load())
	}
	t.Logf("expired %d, held %d", expired.Load(), held.Load())
}
