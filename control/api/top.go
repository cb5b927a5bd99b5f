package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"xnat/flowtable"
	"xnat/portalloc"
)

// TopSources are the inside addresses using the most of the NAT: GET
// /v1/top?n=N (N from 1 to MaxTop; 10 without n).
type TopSources struct {
	Sources        int         `json:"sources"` // inside addresses with connections through NAT now
	Conns          int         `json:"conns"`   // their connections
	Ports          int         `json:"ports"`   // the external ports those hold
	PerSourceMax   int         `json:"per_source_max"`
	PerSourcePorts int         `json:"per_source_ports"`
	RefusedConns   uint64      `json:"refused_conns"` // refused at per_source_max, since start
	RefusedPorts   uint64      `json:"refused_ports"` // refused at per_source_ports
	Full           uint64      `json:"full"`          // refused for want of a limiter slot
	ByConns        []SourceUse `json:"by_conns"`      // the most connections first
	ByPorts        []SourceUse `json:"by_ports"`      // the most ports first
	ByRefused      []SourceUse `json:"by_refused"`    // the most refusals first
}

// SourceUse is one inside address's connections, ports and refusals
// (refusals since start, an upper bound for an address that took the
// place of another in the limiter's table of refusals).
type SourceUse struct {
	Addr    string `json:"addr"`
	Conns   int    `json:"conns"`
	Ports   int    `json:"ports"`
	Refused uint64 `json:"refused"`
}

// Top lengths.
const (
	DefaultTop = 10
	MaxTop     = 1000
)

// TopOf converts the limiter's answer.
func TopOf(t portalloc.TopSources) TopSources {
	out := TopSources{Sources: t.Sources, Conns: t.Conns, Ports: t.Ports, PerSourceMax: t.Limit, PerSourcePorts: t.PortsMax,
		RefusedConns: t.RefusedConns, RefusedPorts: t.RefusedPorts, Full: t.Full,
		ByConns: uses(t.ByConns), ByPorts: uses(t.ByPorts), ByRefused: uses(t.Refused)}
	return out
}

func uses(in []portalloc.SourceUse) []SourceUse {
	out := make([]SourceUse, len(in))
	for i, u := range in {
		out[i] = SourceUse{Addr: flowtable.FormatAddr(u.Addr), Conns: u.Conns, Ports: u.Ports, Refused: u.Refused}
	}
	return out
}

// ParseTopN reads the n of GET /v1/top: absent is DefaultTop.
func ParseTopN(q url.Values) (int, error) {
	vs, ok := q["n"]
	if !ok {
		return DefaultTop, nil
	}
	if len(vs) != 1 {
		return 0, fmt.Errorf("n given %d times", len(vs))
	}
	n, err := strconv.Atoi(vs[0])
	if err != nil || n < 1 || n > MaxTop {
		return 0, fmt.Errorf("n %q: a whole number from 1 to %d", vs[0], MaxTop)
	}
	return n, nil
}

// errNoLimiter: the daemon counts no sources.
var errNoLimiter = errors.New("no per-source limiter in this daemon")

// topOf answers GET /v1/top from lim.
func topOf(lim *portalloc.SourceLimiter, q url.Values) (*TopSources, error) {
	n, err := ParseTopN(q)
	if err != nil {
		return nil, badRequest(err)
	}
	if lim == nil {
		return nil, refused(errNoLimiter)
	}
	t := TopOf(lim.Top(n))
	return &t, nil
}

func (s *Server) top(w http.ResponseWriter, r *http.Request) {
	t, err := topOf(s.d.Dataplane().Pools.Limiter(), r.URL.Query())
	reply(w, t, err)
}

// Top returns the n inside addresses with the most connections, ports
// and refusals (0: the daemon's default).
func (c *Client) Top(ctx context.Context, n int) (*TopSources, error) {
	var q url.Values
	if n != 0 {
		q = url.Values{"n": {strconv.Itoa(n)}}
	}
	var t TopSources
	return &t, c.do(ctx, http.MethodGet, "/top", q, nil, &t)
}
