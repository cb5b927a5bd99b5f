package ha

import (
	"sort"
	"sync"

	"xnat/flowtable"
)

// Cache is the external cache: the peer's connections, keyed by their
// original tuple, held apart from the flow table until committed. It is
// safe for concurrent use.
type Cache struct {
	mu sync.Mutex
	m  map[flowtable.Tuple]Conn

	// Counters, read with Counters.
	created, updated, deleted, deleteMissing uint64
}

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{m: make(map[flowtable.Tuple]Conn)} }

// Apply applies one connection message, as conntrackd's external cache
// does: new and update insert or replace (an update for an unknown
// connection creates it: the new may have been sent before this side
// started), delete removes.
func (c *Cache) Apply(t MsgType, conn *Conn) {
	k := conn.Orig()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch t {
	case TypeNew, TypeUpdate:
		if _, ok := c.m[k]; ok {
			c.updated++
		} else {
			c.created++
		}
		c.m[k] = *conn
	case TypeDelete:
		if _, ok := c.m[k]; ok {
			delete(c.m, k)
			c.deleted++
		} else {
			c.deleteMissing++
		}
	}
}

// Len returns how many connections the cache holds.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// Get returns the connection whose original tuple is k.
func (c *Cache) Get(k flowtable.Tuple) (Conn, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

// List returns every connection, ordered by original tuple.
func (c *Cache) List() []Conn {
	c.mu.Lock()
	out := make([]Conn, 0, len(c.m))
	for _, v := range c.m {
		out = append(out, v)
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return tupleLess(out[i].Orig(), out[j].Orig()) })
	return out
}

// Flush empties the cache and returns how many connections it held.
func (c *Cache) Flush() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.m)
	clear(c.m)
	return n
}

// CacheCounters are a cache's counters.
type CacheCounters struct {
	Created, Updated, Deleted, DeleteMissing uint64
}

// Counters returns the cache's counters.
func (c *Cache) Counters() CacheCounters {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheCounters{c.created, c.updated, c.deleted, c.deleteMissing}
}

func tupleLess(a, b flowtable.Tuple) bool {
	if a.Proto != b.Proto {
		return a.Proto < b.Proto
	}
	if a.Src != b.Src {
		return a.Src < b.Src
	}
	if a.Dst != b.Dst {
		return a.Dst < b.Dst
	}
	if a.SrcPort != b.SrcPort {
		return a.SrcPort < b.SrcPort
	}
	return a.DstPort < b.DstPort
}
