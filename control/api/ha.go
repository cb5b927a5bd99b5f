package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"xnat/control/ha"
)

// The HA endpoints: the sync node's state and the operations keepalived's
// notify scripts call (xnatctl ha).
//
//	GET  /v1/ha/status   HAStatus
//	GET  /v1/ha/cache    HACache: the external cache (the peer's connections)
//	POST /v1/ha/flush    HAFlushed: empty the external cache
//	POST /v1/ha/resync   ask the peer for its whole table
//	POST /v1/ha/bulk     send this side's whole table to the peer
//	POST /v1/ha/commit   HACommitted: move the external cache into the flow table
//	POST /v1/ha/role     HARole: the role keepalived gave this box

// HAStatus is the sync node's state (ha.Status).
type HAStatus = ha.Status

// HACache lists the external cache, each connection as conntrack prints
// it.
type HACache struct {
	Conns []string `json:"conns"`
}

// HAFlushed says how many connections a flush removed.
type HAFlushed struct {
	Flushed int `json:"flushed"`
}

// ErrNoHA is the answer when the daemon has no [ha] section.
var ErrNoHA = errors.New("HA sync is not configured (no [ha] section)")

func (s *Server) haRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+Version+"/ha/status", s.haStatus)
	mux.HandleFunc("GET "+Version+"/ha/cache", s.haCache)
	mux.HandleFunc("POST "+Version+"/ha/flush", s.haFlush)
	mux.HandleFunc("POST "+Version+"/ha/resync", s.haResync)
	mux.HandleFunc("POST "+Version+"/ha/bulk", s.haBulk)
	mux.HandleFunc("POST "+Version+"/ha/commit", s.haCommit)
	mux.HandleFunc("POST "+Version+"/ha/role", s.haRole)
}

func (s *Server) haNode() (*ha.Node, error) {
	n := s.d.HA()
	if n == nil {
		return nil, refused(ErrNoHA)
	}
	return n, nil
}

func (s *Server) haStatus(w http.ResponseWriter, r *http.Request) {
	n, err := s.haNode()
	if err != nil {
		reply(w, nil, err)
		return
	}
	st := n.Status()
	reply(w, &st, nil)
}

func (s *Server) haCache(w http.ResponseWriter, r *http.Request) {
	n, err := s.haNode()
	if err != nil {
		reply(w, nil, err)
		return
	}
	list := n.Cache().List()
	out := HACache{Conns: make([]string, len(list))}
	for i := range list {
		out.Conns[i] = list[i].String()
	}
	reply(w, &out, nil)
}

func (s *Server) haFlush(w http.ResponseWriter, r *http.Request) {
	n, err := s.haNode()
	if err != nil {
		reply(w, nil, err)
		return
	}
	reply(w, &HAFlushed{Flushed: n.FlushCache()}, nil)
}

func (s *Server) haResync(w http.ResponseWriter, r *http.Request) {
	n, err := s.haNode()
	if err == nil {
		err = n.RequestResync()
	}
	reply(w, struct{}{}, err)
}

func (s *Server) haBulk(w http.ResponseWriter, r *http.Request) {
	n, err := s.haNode()
	if err == nil {
		err = n.SendBulk()
	}
	reply(w, struct{}{}, err)
}

// HARole is a role as keepalived's notify hook reports it: primary,
// backup or fault (keepalived's MASTER, BACKUP, FAULT, STOP too).
type HARole struct {
	Role string `json:"role"`
}

func (s *Server) haRole(w http.ResponseWriter, r *http.Request) {
	n, err := s.haNode()
	if err != nil {
		reply(w, nil, err)
		return
	}
	var req HARole
	if err := decode(w, r, &req); err != nil {
		reply(w, nil, err)
		return
	}
	role, err := ha.ParseRole(req.Role)
	if err != nil {
		reply(w, nil, badRequest(err))
		return
	}
	n.SetRole(role)
	reply(w, &HARole{Role: role.String()}, nil)
}

// HASetRole tells the daemon the role keepalived gave this box.
func (c *Client) HASetRole(ctx context.Context, role string) (*HARole, error) {
	var res HARole
	err := c.do(ctx, http.MethodPost, "/ha/role", nil, HARole{Role: role}, &res)
	return &res, err
}

// commitTimeout bounds a commit: the cores take it between their batches.
const commitTimeout = 30 * time.Second

func (s *Server) haCommit(w http.ResponseWriter, r *http.Request) {
	n, err := s.haNode()
	if err != nil {
		reply(w, nil, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), commitTimeout)
	defer cancel()
	res, err := n.Commit(ctx)
	reply(w, &res, err)
}

// HACommitted is what a commit did (ha.CommitResult).
type HACommitted = ha.CommitResult

// HACommit moves the external cache into the flow table, each connection
// with its translation and external port.
func (c *Client) HACommit(ctx context.Context) (*HACommitted, error) {
	var res HACommitted
	err := c.do(ctx, http.MethodPost, "/ha/commit", nil, nil, &res)
	return &res, err
}

// HAStatus returns the sync node's state.
func (c *Client) HAStatus(ctx context.Context) (*HAStatus, error) {
	var st HAStatus
	err := c.do(ctx, http.MethodGet, "/ha/status", nil, nil, &st)
	return &st, err
}

// HACache returns the external cache.
func (c *Client) HACache(ctx context.Context) (*HACache, error) {
	var l HACache
	err := c.do(ctx, http.MethodGet, "/ha/cache", nil, nil, &l)
	return &l, err
}

// HAFlush empties the external cache and returns how many connections it
// held.
func (c *Client) HAFlush(ctx context.Context) (int, error) {
	var f HAFlushed
	err := c.do(ctx, http.MethodPost, "/ha/flush", nil, nil, &f)
	return f.Flushed, err
}

// HAResync asks the peer for its whole table.
func (c *Client) HAResync(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/ha/resync", nil, nil, nil)
}

// HABulk sends this side's whole table to the peer.
func (c *Client) HABulk(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/ha/bulk", nil, nil, nil)
}
