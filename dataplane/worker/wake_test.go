package worker

import (
	"context"
	"testing"
	"time"

	"xnat/dataplane/topo"
	"xnat/flowtable"
	"xnat/ring"
)

// TestWorkerWokenOffSocket: with a poll timeout far longer than the test
// allows, a sleeping worker still acts at once on work that arrives on
// no socket: a datagram held for an unresolved next hop leaves when the
// neighbour resolves, an HA commit is inserted, and Stop ends Run.
func TestWorkerWokenOffSocket(t *testing.T) {
	const sleep = 20 * time.Second
	b := newBedConfig(t, ring.Config{Poll: ring.PollSleep, PollTimeout: sleep})
	nt, c, conn := b.unresolvedServer(t)

	stopped := make(chan error, 1)
	go func() { stopped <- b.w.Run() }()
	if _, err := conn.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.w.Stats().Held < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the datagram was not held")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the worker is asleep in poll(2) now

	// The neighbour resolves: the held datagram leaves at once.
	c.State = topo.NeighValid
	start := time.Now()
	nt.Update(c, true)
	buf := make([]byte, 2048)
	check(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no answer after the neighbour resolved: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("held datagram answered %v after the neighbour resolved", d)
	}
	if want := "10.2.0.1:40001|held"; string(buf[:n]) != want {
		t.Fatalf("answer %q, want %q", buf[:n], want)
	}

	// An HA commit is taken by the sleeping worker at once.
	time.Sleep(100 * time.Millisecond)
	o := flowtable.MakeTuple(flowtable.ProtoUDP, 0x0a010002, 40002, 0x0a020002, 7000)
	r := flowtable.MakeTuple(flowtable.ProtoUDP, 0x0a020002, 7000, 0x0a020001, 40002)
	nf := flowtable.NewFlow{Orig: o, Reply: r, Status: uint32(flowtable.UDP) | flowtable.FlagSeenReply | flowtable.FlagSrcNAT}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start = time.Now()
	res, err := b.dp.Commit(ctx, []flowtable.NewFlow{nf})
	if err != nil || res.Committed != 1 {
		t.Fatalf("commit: %+v, %v", res, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("commit took %v", d)
	}

	// Stop wakes the sleeping worker.
	time.Sleep(100 * time.Millisecond)
	start = time.Now()
	b.w.Stop()
	select {
	case err := <-stopped:
		check(t, err)
	case <-time.After(5 * time.Second):
		t.Fatalf("Run still running %v after Stop", time.Since(start))
	}
}
