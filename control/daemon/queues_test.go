package daemon

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"xnat/dataplane"
)

// coreRx returns, per core, the frames received on the inside port of
// insA (port 0) and on the outside port (port 2).
func coreRx(d *Daemon) (in, out []uint64) {
	for _, c := range d.Dataplane().Counters() {
		in = append(in, c.Ports[0].RxPackets)
		out = append(out, c.Ports[2].RxPackets)
	}
	return in, out
}

func changed(before, after []uint64) int {
	core := -1
	for i := range before {
		if after[i] != before[i] {
			if core >= 0 {
				return -2 // more than one
			}
			core = i
		}
	}
	return core
}

// TestTwoQueues: with two queues, both workers carry traffic, and
// connections whose reply arrives on the other queue than their first
// packet (so the other worker handles it) work.
//
// On veth the receiving queue is the sender's transmit queue (veth_xmit
// keeps the skb's queue mapping). The inside host's kernel picks a transmit
// queue per flow by hash; xnat transmits a flow's packets on the queue of
// the worker that handles them (AF_XDP sends on its socket's queue), and the
// server's kernel picks its reply queue by its own hash. So over a few
// flows some go in on one queue and come back on the other: the test sends
// flows one at a time, reads which core's counters each direction moved,
// and requires at least one crossing flow and both cores in use.
func TestTwoQueues(t *testing.T) {
	b := newBed(t, bedOpts{queues: 2})
	udpEcho(t, b.sv, ipSrv, 7000)
	var (
		origCores  [2]int
		crossed    int
		flows      int
		assignment []string
	)
	for i := 0; i < 64 && (crossed < 2 || origCores[0] == 0 || origCores[1] == 0); i++ {
		c := udpDial(t, b.insA, &net.UDPAddr{IP: ipA, Port: 30000 + i}, &net.UDPAddr{IP: ipSrv, Port: 7000})
		inBefore, outBefore := coreRx(b.d)
		msg := fmt.Sprintf("flow %d", i)
		got, err := ask(c, msg, 1)
		if err != nil || !strings.HasSuffix(got, "|"+msg) {
			t.Fatalf("flow %d: %q, %v", i, got, err)
		}
		inAfter, outAfter := coreRx(b.d)
		orig, reply := changed(inBefore, inAfter), changed(outBefore, outAfter)
		if orig < 0 || reply < 0 {
			t.Fatalf("flow %d: request on core %d, reply on core %d (counters %v→%v, %v→%v)", i, orig, reply, inBefore, inAfter, outBefore, outAfter)
		}
		flows++
		origCores[orig]++
		if orig != reply {
			crossed++
		}
		assignment = append(assignment, fmt.Sprintf("%d→%d", orig, reply))
	}
	t.Logf("%d flows, request core → reply core: %s", flows, strings.Join(assignment, " "))
	if origCores[0] == 0 || origCores[1] == 0 {
		t.Fatalf("requests per core %v: both workers must carry traffic", origCores)
	}
	if crossed < 2 {
		t.Fatalf("%d of %d flows had their reply on the other queue, want at least 2", crossed, flows)
	}
	ws := b.d.Stats().Workers
	if len(ws) != 2 || ws[0].Tx == 0 || ws[1].Tx == 0 {
		t.Fatalf("worker stats %+v: both must transmit", ws)
	}
	// Connections are owned by the core that created them, whichever
	// queue their replies use.
	st := b.d.Table().Stats()
	if st[0].Insert == 0 || st[1].Insert == 0 || st[0].Insert+st[1].Insert != uint64(flows) {
		t.Fatalf("inserts per core %d and %d, want both non-zero and %d in all", st[0].Insert, st[1].Insert, flows)
	}
	if n := b.drops(dataplane.ReasonNoNeighbour) + b.drops(dataplane.ReasonUnsolicited); n != 0 {
		t.Fatalf("%d drops", n)
	}
}
