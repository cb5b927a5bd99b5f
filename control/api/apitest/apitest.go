// Package apitest runs a real xnatd core for the control API's tests: the
// namespace topology of internal/nattest (one queue per veth), a daemon
// forwarding between its interfaces, and the API served on a socket in a
// temporary directory. It is a test helper (it takes a *testing.T),
// shared by the tests of control/api and cmd/xnatctl. The rules are
// MASQUERADE out of x1 unless Options.Rules says otherwise.
package apitest

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"xnat/control/api"
	"xnat/control/daemon"
	"xnat/control/ha"
	"xnat/internal/nattest"
	"xnat/internal/netns"
)

// Addresses of the topology.
var (
	IPA   = nattest.IPA
	IPB   = nattest.IPB
	IPSrv = nattest.IPSrv
	IPExt = nattest.IPExt
)

// MasqueradeRules is the default rule set.
const MasqueradeRules = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o x1 -j MASQUERADE\nCOMMIT\n"

// Options shape a Bed.
type Options struct {
	MaxConns int    // 0: the capacity
	Rules    string // "": MasqueradeRules
	API      api.Options
	HA       *daemon.HAConfig // nil: no sync
}

// Bed is a running daemon with its API on a namespace topology.
type Bed struct {
	T                  *testing.T
	InsA, InsB, X, Srv *netns.NS
	D                  *daemon.Daemon
	S                  *api.Server
	Socket             string
	Dir                string

	mu     sync.Mutex
	events []api.Event
}

var must = nattest.Must

// New builds the topology, starts the daemon and serves the API; all of
// it is undone when the test ends.
func New(t *testing.T, o Options) *Bed {
	netns.RequireRoot(t)
	if o.Rules == "" {
		o.Rules = MasqueradeRules
	}
	tp := nattest.New(t, nattest.Options{Queues: 1})
	b := &Bed{T: t, InsA: tp.InsA, InsB: tp.InsB, X: tp.X, Srv: tp.Srv, Dir: t.TempDir()}
	rulesFile := filepath.Join(b.Dir, "rules.v4")
	must(t, os.WriteFile(rulesFile, []byte(o.Rules), 0o644))
	b.Socket = filepath.Join(b.Dir, "xnat.sock")
	cfg := daemon.Config{Inside: nattest.Inside, Outside: nattest.Outside, Queues: 1, Capacity: 4096,
		MaxConns: o.MaxConns, Rules: rulesFile, Socket: b.Socket, HA: o.HA}
	must(t, b.X.Do(func() error {
		plan, err := daemon.Prepare(cfg)
		if err != nil {
			return err
		}
		b.D, err = daemon.Start(plan, daemon.Options{PollTimeout: 20 * time.Millisecond})
		return err
	}))
	t.Cleanup(func() {
		if err := b.D.Stop(); err != nil {
			t.Errorf("daemon Stop: %v", err)
		}
	})
	on := o.API.OnEvent
	o.API.OnEvent = func(e api.Event) {
		b.mu.Lock()
		b.events = append(b.events, e)
		b.mu.Unlock()
		if on != nil {
			on(e)
		}
	}
	b.S = api.New(b.D, o.API)
	t.Cleanup(func() {
		if err := b.S.Close(); err != nil {
			t.Errorf("API Close: %v", err)
		}
	})
	must(t, b.S.Listen(b.Socket))
	return b
}

// Client returns a client of the bed's socket.
func (b *Bed) Client() *api.Client { return api.NewClient(b.Socket) }

// Events returns the events the server has reported so far.
func (b *Bed) Events() []api.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]api.Event(nil), b.events...)
}

// Eventually polls cond for up to five seconds.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	nattest.Eventually(t, what, 5*time.Second, cond)
}

// UDPEcho answers every datagram to the server's port with
// "<source>|<payload>".
func (b *Bed) UDPEcho(port int) { nattest.UDPEcho(b.T, b.Srv, IPSrv, port) }

// UDPSink receives datagrams on the server's port and never answers.
func (b *Bed) UDPSink(port int) { nattest.UDPSink(b.T, b.Srv, IPSrv, port) }

// UDPDial opens a connected UDP socket in ns from lport (0: any) to the
// server's port.
func (b *Bed) UDPDial(ns *netns.NS, src net.IP, lport, port int) *net.UDPConn {
	return nattest.UDPDial(b.T, ns, &net.UDPAddr{IP: src, Port: lport}, &net.UDPAddr{IP: IPSrv, Port: port})
}

// Ask sends msg and returns the answer (up to four tries).
func Ask(conn *net.UDPConn, msg string) (string, error) { return nattest.Ask(conn, msg, 4) }

// HASync is the daemon's [ha] section for a bed whose sync peer is
// StartHAPeer's: local 10.0.1.1 on x0a, the peer 10.0.1.2.
func HASync() *daemon.HAConfig {
	return &daemon.HAConfig{Local: "10.0.1.1", Peer: "10.0.1.2", Interface: "x0a"}
}

// HAPeer is the other side of the daemon's sync link: a ha.Link in the
// inside host A's namespace, keeping what it receives in Cache and
// counting the resync requests.
type HAPeer struct {
	Link  *ha.Link
	Cache *ha.Cache

	mu     sync.Mutex
	resync int
}

// Conn keeps a connection the daemon sent (ha.Handler).
func (p *HAPeer) Conn(t ha.MsgType, c *ha.Conn) { p.Cache.Apply(t, c) }

// Resync counts a resync request (ha.Handler).
func (p *HAPeer) Resync() {
	p.mu.Lock()
	p.resync++
	p.mu.Unlock()
}

// Resyncs is how many resync requests the peer has had.
func (p *HAPeer) Resyncs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resync
}

// StartHAPeer runs the sync peer of a bed made with Options.HA: HASync()
// until the test ends.
func (b *Bed) StartHAPeer() *HAPeer {
	t := b.T
	peer := &HAPeer{Cache: ha.NewCache()}
	must(t, b.InsA.Do(func() error {
		var err error
		peer.Link, err = ha.Listen(ha.LinkConfig{Local: netip.MustParseAddrPort("10.0.1.2:3780"), Peer: netip.MustParseAddrPort("10.0.1.1:3780"), Interface: "a0"}, peer)
		return err
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- peer.Link.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("peer link: %v", err)
		}
	})
	return peer
}
