package ha

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"xnat/dataplane"
	"xnat/flowtable"
)

// NodeConfig configures one side of an HA pair.
type NodeConfig struct {
	Link LinkConfig
	// Poll is how often the exporter drains the cores' event rings
	// (default 10ms).
	Poll time.Duration
	// Committer takes the external cache into the flow table on Commit
	// (the dataplane); nil: Commit is refused.
	Committer Committer
	// Filter says which of this side's connections are sent (events and
	// whole-table sends); nil sends all.
	Filter *Filter
	// Check is the pool check with the peer (check.go).
	Check CheckConfig
	// Owns reports whether an external endpoint (a source-NAT
	// connection's translated address and port) is in this side's NAT
	// pools; a peer's connection outside them is refused. nil: no check.
	Owns func(proto uint8, addr uint32, port uint16) bool
	// OnPeer, when set, is called when the pool check's view of the peer
	// changes (for the daemon's log). It must not call the Node.
	OnPeer func(old, new PeerState)
}

// Committer inserts connections with their translation kept
// (dataplane.Dataplane.Commit).
type Committer interface {
	Commit(ctx context.Context, flows []flowtable.NewFlow) (dataplane.CommitResult, error)
}

// CommitResult is what a Commit did: the dataplane's counts, and the
// cache's entries that could not become flow-table records (Invalid: a
// TCP connection without a state).
type CommitResult struct {
	dataplane.CommitResult
	Invalid int
}

// ErrNoCommitter is Commit's error on a node without a Committer.
var ErrNoCommitter = errors.New("ha: this node has no table to commit to")

// Node is one side of an HA pair, as conntrackd is: it sends its own
// connections (events from the dataplane, the whole table on request)
// and keeps the peer's in the external cache. The operations are those
// keepalived's notify scripts call on conntrackd: FlushCache (-f
// external), RequestResync (-n), SendBulk (-B).
type Node struct {
	cfg   NodeConfig
	link  *Link
	cache *Cache
	exp   *Exporter
	tab   *flowtable.Table
	out   *FilteredSender
	check *poolCheck

	// peerMu orders the peer's messages against the pool check's
	// verdict: a message is refused or applied whole under it, and a
	// verdict that the peer differs empties the cache under it.
	peerMu        sync.Mutex
	peer          PeerState
	refusedDiffer uint64 // messages of a peer whose pools or rules differ
	refusedPool   uint64 // connections outside this side's NAT pools
	flushedDiffer uint64 // cache entries dropped when the peer was found to differ

	mu        sync.Mutex
	role      Role
	roleSince time.Time
	bulks     uint64
	commits   uint64
	last      *CommitResult
	expErr    error
	checkErr  error
	started   time.Time
}

type nodeHandler struct{ n *Node }

func (h nodeHandler) Conn(t MsgType, c *Conn) { h.n.receive(t, c) }
func (h nodeHandler) Resync()                 { _ = h.n.SendBulk() }

// NewNode opens the sync link. src (the dataplane) may be nil for a node
// that only receives; tab is this side's flow table, sent on a resync
// request (nil: nothing to send).
func NewNode(cfg NodeConfig, src EventSource, tab *flowtable.Table) (*Node, error) {
	if cfg.Poll <= 0 {
		cfg.Poll = 10 * time.Millisecond
	}
	n := &Node{cfg: cfg, cache: NewCache(), tab: tab, started: time.Now()}
	l, err := Listen(cfg.Link, nodeHandler{n})
	if err != nil {
		return nil, err
	}
	n.link = l
	n.out = &FilteredSender{Out: l, Filter: cfg.Filter}
	n.check, err = listenCheck(cfg.Check, &cfg.Link, n.peerChanged)
	if err != nil {
		l.Close()
		return nil, err
	}
	n.peer = n.check.State()
	if src != nil {
		n.exp = NewExporter(src, n.out, tab)
	}
	return n, nil
}

// receive applies one of the peer's connection messages, unless the
// peer's pools or rules differ from this side's, or the connection's
// external endpoint is outside this side's NAT pools: such a connection
// could not be committed with its translation, so it is refused (and
// counted) rather than kept. Deletes of connections the cache holds are
// always applied.
func (n *Node) receive(t MsgType, c *Conn) {
	n.peerMu.Lock()
	defer n.peerMu.Unlock()
	if n.peer == PeerDiffers {
		n.refusedDiffer++
		return
	}
	if t != TypeDelete && n.outsidePools(c) {
		n.refusedPool++
		return
	}
	n.cache.Apply(t, c)
}

// outsidePools reports whether c is a source-NAT connection whose
// external endpoint no NAT pool of this side holds.
func (n *Node) outsidePools(c *Conn) bool {
	if n.cfg.Owns == nil {
		return false
	}
	nf, err := c.NewFlow()
	if err != nil || nf.Status&flowtable.FlagSrcNAT == 0 {
		return false
	}
	return !n.cfg.Owns(nf.Orig.Proto, nf.Reply.Dst, nf.Reply.DstPort)
}

// peerChanged takes the pool check's new verdict: a peer found to differ
// has its connections dropped from the cache; one found acceptable (an
// xnat with the same pools and rules, or a conntrackd once the grace
// period ends) is asked for its table. A node that starts thus fills its
// cache at once — a backup restarted (xnatd --takeover) or started after
// its primary does not wait for the primary's next events, or for
// keepalived to ask.
func (n *Node) peerChanged(old, cur PeerState) {
	n.peerMu.Lock()
	n.peer = cur
	if cur == PeerDiffers {
		n.flushedDiffer += uint64(n.cache.Flush())
	}
	n.peerMu.Unlock()
	if cur != old && (cur == PeerSame || cur == PeerUnchecked) && n.link != nil {
		_ = n.link.RequestResync()
	}
	if n.cfg.OnPeer != nil {
		n.cfg.OnPeer(old, cur)
	}
}

// SetFingerprint changes this side's pool-check fingerprint (its rules
// changed) and announces it to the peer.
func (n *Node) SetFingerprint(f Fingerprint) { n.check.setFingerprint(f) }

// PeerState returns the pool check's view of the peer.
func (n *Node) PeerState() PeerState {
	n.peerMu.Lock()
	defer n.peerMu.Unlock()
	return n.peer
}

// Run runs the link, the pool check and the exporter until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	go func() {
		if err := n.check.run(ctx); err != nil {
			n.mu.Lock()
			n.checkErr = err
			n.mu.Unlock()
		}
	}()
	if n.exp != nil {
		go func() {
			if err := n.exp.Run(ctx, n.cfg.Poll); err != nil {
				n.mu.Lock()
				n.expErr = err
				n.mu.Unlock()
			}
		}()
	}
	return n.link.Run(ctx)
}

// Cache returns the external cache.
func (n *Node) Cache() *Cache { return n.cache }

// FlushCache empties the external cache and returns how many connections
// it held.
func (n *Node) FlushCache() int { return n.cache.Flush() }

// RequestResync asks the peer for its whole table.
func (n *Node) RequestResync() error { return n.link.RequestResync() }

// SendBulk sends this side's whole table to the peer.
func (n *Node) SendBulk() error {
	SendTable(n.tab, n.out)
	n.mu.Lock()
	n.bulks++
	n.mu.Unlock()
	return n.link.Flush()
}

// Commit moves the external cache into the flow table, as conntrackd -c
// commits it to the kernel's: each connection keeps its exact
// translation and external port (Committer). The cache keeps its
// entries; the notify scripts flush it next, as they do conntrackd's.
func (n *Node) Commit(ctx context.Context) (CommitResult, error) {
	if n.cfg.Committer == nil {
		return CommitResult{}, ErrNoCommitter
	}
	list := n.cache.List()
	flows := make([]flowtable.NewFlow, 0, len(list))
	var res CommitResult
	for i := range list {
		nf, err := list[i].NewFlow()
		if err != nil {
			res.Invalid++
			continue
		}
		flows = append(flows, nf)
	}
	var err error
	res.CommitResult, err = n.cfg.Committer.Commit(ctx, flows)
	n.mu.Lock()
	n.commits++
	n.last = &res
	n.mu.Unlock()
	if err != nil {
		return res, fmt.Errorf("ha: commit: %w", err)
	}
	return res, nil
}

// Status is what xnatctl ha status shows.
type Status struct {
	// Role is what keepalived's notify hook last reported (SetRole), and
	// RoleSince when.
	Role          string
	RoleSince     time.Time `json:",omitzero"`
	Local, Peer   string
	Group         string `json:",omitempty"`
	Link          LinkStats
	Cache         int
	CacheCounters CacheCounters
	EventsSent    uint64        // dataplane events sent
	EventResends  uint64        // whole-table sends after the event rings dropped events
	Bulks         uint64        // whole-table sends on request
	Commits       uint64        // commits of the external cache
	LastCommit    *CommitResult `json:",omitempty"`
	ExportError   string        `json:",omitempty"`
	// Filtered counts this side's messages the filter kept from the peer.
	Filtered uint64
	// Check is the pool check; RefusedPeerDiffers the peer's messages
	// refused because its pools or rules differ, FlushedPeerDiffers the
	// cache entries dropped when that was found; RefusedOutsidePools the
	// peer's connections refused because their external endpoint is in
	// none of this side's NAT pools.
	Check               CheckStatus
	RefusedPeerDiffers  uint64
	FlushedPeerDiffers  uint64
	RefusedOutsidePools uint64
	CheckError          string `json:",omitempty"`
}

// Status returns the node's state and counters.
func (n *Node) Status() Status {
	st := Status{Local: n.cfg.Link.Local.String(), Peer: n.cfg.Link.Peer.Addr().String(), Link: n.link.Stats(),
		Cache: n.cache.Len(), CacheCounters: n.cache.Counters(), Filtered: n.out.Filtered(), Check: n.check.status()}
	n.peerMu.Lock()
	st.RefusedPeerDiffers, st.FlushedPeerDiffers, st.RefusedOutsidePools = n.refusedDiffer, n.flushedDiffer, n.refusedPool
	n.peerMu.Unlock()
	if n.cfg.Link.Group.IsValid() {
		st.Group = n.cfg.Link.Group.String()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	st.Role, st.RoleSince = n.role.String(), n.roleSince
	st.Bulks = n.bulks
	st.Commits = n.commits
	if n.last != nil {
		lc := *n.last
		st.LastCommit = &lc
	}
	if n.expErr != nil {
		st.ExportError = n.expErr.Error()
	}
	if n.checkErr != nil {
		st.CheckError = n.checkErr.Error()
	}
	if n.exp != nil {
		// The exporter's counters are written by its goroutine alone;
		// they are read here as a snapshot.
		st.EventsSent, st.EventResends = n.exp.counters()
	}
	return st
}

// Close closes the link and the pool check's socket.
func (n *Node) Close() error {
	err := n.link.Close()
	if cerr := n.check.close(); err == nil {
		err = cerr
	}
	return err
}
