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

	mu      sync.Mutex
	bulks   uint64
	commits uint64
	last    *CommitResult
	expErr  error
	started time.Time
}

type nodeHandler struct{ n *Node }

func (h nodeHandler) Conn(t MsgType, c *Conn) { h.n.cache.Apply(t, c) }
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
	if src != nil {
		n.exp = NewExporter(src, l, tab)
	}
	return n, nil
}

// Run runs the link and the exporter until ctx ends.
func (n *Node) Run(ctx context.Context) error {
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
	SendTable(n.tab, n.link)
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
}

// Status returns the node's state and counters.
func (n *Node) Status() Status {
	st := Status{Local: n.cfg.Link.Local.String(), Peer: n.cfg.Link.Peer.Addr().String(), Link: n.link.Stats(),
		Cache: n.cache.Len(), CacheCounters: n.cache.Counters()}
	if n.cfg.Link.Group.IsValid() {
		st.Group = n.cfg.Link.Group.String()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	st.Bulks = n.bulks
	st.Commits = n.commits
	if n.last != nil {
		lc := *n.last
		st.LastCommit = &lc
	}
	if n.expErr != nil {
		st.ExportError = n.expErr.Error()
	}
	if n.exp != nil {
		// The exporter's counters are written by its goroutine alone;
		// they are read here as a snapshot.
		st.EventsSent, st.EventResends = n.exp.counters()
	}
	return st
}

// Close closes the link.
func (n *Node) Close() error { return n.link.Close() }
