package daemon

import (
	"cmp"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"xnat/dataplane"
	"xnat/internal/nattest"
	"xnat/internal/netns"
)

// The real-traffic topology of the daemon tests is internal/nattest's:
// two inside hosts on their own interfaces, xnat (ip_forward=0) and a
// server, here with two queues on every veth.

const baseRules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 192.0.2.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.1.2:80
-A POSTROUTING -o x1 -j MASQUERADE
COMMIT
`

var (
	ipA   = nattest.IPA
	ipB   = nattest.IPB
	ipSrv = nattest.IPSrv
	ipExt = nattest.IPExt
	ipGwA = nattest.IPGwA
)

// The traffic helpers, by the names these tests use.
var (
	must      = nattest.Must
	udpEcho   = nattest.UDPEcho
	udpDial   = nattest.UDPDial
	ask       = nattest.Ask
	tcpServer = nattest.TCPServer
	tcpDial   = nattest.TCPDial
	roundTrip = nattest.RoundTrip
)

// eventually polls cond for up to two seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	nattest.Eventually(t, what, 2*time.Second, cond)
}

type bedOpts struct {
	queues   int
	maxConns int
	rules    string
	noNeigh  bool // no permanent neighbour for the server in xnat
	// localPorts is Config.LocalPorts ("" for the default).
	localPorts string
	// noNeighbours: no permanent neighbour at all, as a router just booted
	noNeighbours bool
	// setup runs on the topology before the daemon starts.
	setup func(tp *nattest.Topology)
	// controlInterval and pollTimeout are the daemon's Options (0: 10
	// ms, the default, and 20 ms).
	controlInterval, pollTimeout time.Duration
}

type bed struct {
	t                 *testing.T
	insA, insB, x, sv *netns.NS
	d                 *Daemon
	rulesFile         string

	evMu   sync.Mutex
	events []Event
}

func newBed(t *testing.T, o bedOpts) *bed {
	if o.queues == 0 {
		o.queues = 2
	}
	if o.rules == "" {
		o.rules = baseRules
	}
	tp := nattest.New(t, nattest.Options{Queues: 2, NoServerNeighbour: o.noNeigh, NoNeighbours: o.noNeighbours})
	b := &bed{t: t, insA: tp.InsA, insB: tp.InsB, x: tp.X, sv: tp.Srv}
	if o.setup != nil {
		o.setup(tp)
	}
	b.rulesFile = t.TempDir() + "/rules.v4"
	must(t, writeFile(b.rulesFile, o.rules))
	cfg := Config{Inside: nattest.Inside, Outside: nattest.Outside, Queues: o.queues,
		Capacity: 4096, MaxConns: o.maxConns, Rules: b.rulesFile, LocalPorts: o.localPorts}
	if runtime.NumCPU() >= o.queues {
		for q := range o.queues {
			cfg.CPUs = append(cfg.CPUs, q)
		}
	}
	must(t, b.x.Do(func() error {
		plan, err := Prepare(cfg)
		if err != nil {
			return err
		}
		poll := cmp.Or(o.pollTimeout, 20*time.Millisecond)
		b.d, err = Start(plan, Options{OnEvent: b.record, PollTimeout: poll, ControlInterval: o.controlInterval})
		return err
	}))
	t.Cleanup(func() {
		if err := b.d.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return b
}

func (b *bed) record(e Event) {
	b.evMu.Lock()
	defer b.evMu.Unlock()
	b.events = append(b.events, e)
}

// event returns the first recorded event whose message contains msg.
func (b *bed) event(msg string) (Event, bool) {
	b.evMu.Lock()
	defer b.evMu.Unlock()
	for _, e := range b.events {
		if strings.Contains(e.Msg, msg) {
			return e, true
		}
	}
	return Event{}, false
}

func (b *bed) drops(r dataplane.Reason) uint64 {
	c := b.d.Dataplane().TotalCounters()
	return c.Drop(r)
}

func writeFile(path, text string) error {
	return writeFileBytes(path, []byte(text))
}

func fmtAddr(ip net.IP, port int) string { return fmt.Sprintf("%s:%d", ip, port) }
