package ha

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"xnat/dataplane"
	"xnat/flowtable"
	"xnat/internal/netns"
)

// lockedSource is a fakeSource the test fills while the exporter drains.
type lockedSource struct {
	mu sync.Mutex
	f  fakeSource
}

func (l *lockedSource) Cores() int { return 1 }
func (l *lockedSource) SyncDrops() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.drops
}
func (l *lockedSource) DrainSync(c int, out []dataplane.SyncEvent) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.DrainSync(c, out)
}
func (l *lockedSource) add(e dataplane.SyncEvent) {
	l.mu.Lock()
	l.f.q[0] = append(l.f.q[0], e)
	l.mu.Unlock()
}

func startNode(t *testing.T, ns *netns.NS, local, peer, dev string, src EventSource, tab *flowtable.Table) *Node {
	t.Helper()
	var n *Node
	if err := ns.Do(func() error {
		var err error
		n, err = NewNode(NodeConfig{Link: LinkConfig{
			Local:     netip.AddrPortFrom(netip.MustParseAddr(local), syncPort),
			Peer:      netip.AddrPortFrom(netip.MustParseAddr(peer), syncPort),
			Interface: dev,
		}}, src, tab)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	runNode(t, n)
	return n
}

// TestNodePair: a primary with a flow table and dataplane events, a
// backup that keeps them in its external cache; the backup's resync
// request, the primary's events and bulk send, and a cache flush.
func TestNodePair(t *testing.T) {
	pa, pb := syncLink(t, "a", "b")

	ext := a4("198.51.100.1")
	tab, flow := natTable(t, ext, 100)
	src := &lockedSource{f: fakeSource{q: make([][]dataplane.SyncEvent, 1)}}
	primary := startNode(t, pa, "10.9.0.1", "10.9.0.2", "s0", src, tab)
	backup := startNode(t, pb, "10.9.0.2", "10.9.0.1", "s1", nil, nil)

	cacheLen := func(n int) func() (bool, string) {
		return func() (bool, string) {
			st := backup.Status()
			return st.Cache == n, fmt.Sprintf("%+v", st)
		}
	}
	if err := backup.RequestResync(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the primary's table in the backup's cache", cacheLen(100))
	nf := flow(7)
	got, ok := backup.Cache().Get(nf.Orig)
	if !ok || got.Reply() != nf.Reply {
		t.Fatalf("%v %+v", ok, got)
	}
	for i := 100; i < 150; i++ {
		nf := flow(i)
		src.add(dataplane.SyncEvent{Kind: dataplane.SyncNew, Orig: nf.Orig, Reply: nf.Reply, Status: nf.Status})
	}
	waitFor(t, "the primary's events", cacheLen(150))
	if n := backup.FlushCache(); n != 150 {
		t.Fatalf("flushed %d", n)
	}
	if err := primary.SendBulk(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the bulk send", cacheLen(100))
	pst, bst := primary.Status(), backup.Status()
	if pst.EventsSent != 50 || pst.Bulks != 2 || pst.Peer != "10.9.0.2" || pst.Link.ResyncRecv != 1 {
		t.Fatalf("primary status %+v", pst)
	}
	if bst.Link.Malformed != 0 || bst.Link.Lost != 0 || bst.CacheCounters.Created != 250 {
		t.Fatalf("backup status %+v", bst)
	}
}

// natTable returns a one-core table holding n assured UDP connections
// masqueraded to ext (flow(i): 10.0.0.2:1000+i to 192.0.2.1:53, external
// port 20000+i), and flow to make more.
func natTable(t *testing.T, ext uint32, n int) (*flowtable.Table, func(int) flowtable.NewFlow) {
	t.Helper()
	tab, err := flowtable.New(flowtable.Config{Capacity: 4096, Cores: 1, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	flow := func(i int) flowtable.NewFlow {
		return flowtable.NewFlow{
			Orig:   flowtable.MakeTuple(17, a4("10.0.0.2"), uint16(1000+i), a4("192.0.2.1"), 53),
			Reply:  flowtable.MakeTuple(17, a4("192.0.2.1"), 53, ext, uint16(20000+i)),
			Status: uint32(flowtable.UDPStream) | flowtable.FlagSeenReply | flowtable.FlagAssured | flowtable.FlagSrcNAT,
		}
	}
	core := tab.Core(0)
	core.Enter()
	defer core.Exit()
	for i := range n {
		nf := flow(i)
		if _, res := core.Insert(&nf, tab.Now()); res != flowtable.Inserted {
			t.Fatal(res)
		}
	}
	return tab, flow
}

// runNode runs n until the test ends.
func runNode(t *testing.T, n *Node) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node: %v", err)
		}
	})
}
