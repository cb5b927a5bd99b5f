package api

import (
	"context"
	"fmt"
	"net/http"

	"xnat/flowtable"
)

// Mapping is one live full-cone mapping (FULLCONENAT).
type Mapping struct {
	Proto    string `json:"proto"`
	Inside   string `json:"inside"`   // address:port
	External string `json:"external"` // address:port
	// Connections is how many connections use the mapping.
	Connections uint32 `json:"connections"`
	// Timeout is, in seconds, how long the mapping lives once it has no
	// connection: counting down when Connections is 0, the whole mapping
	// timeout while it has some.
	Timeout int64 `json:"timeout"`
	Owner   int   `json:"owner"` // the core that made it
}

// MappingList is GET /v1/mappings.
type MappingList struct {
	Mappings []Mapping `json:"mappings"`
}

// mappingsBatch is how many mappings one critical section copies.
const mappingsBatch = 256

// Mappings lists a mapping table's live mappings.
func Mappings(t *flowtable.Table) MappingList {
	out := MappingList{Mappings: []Mapping{}}
	buf := make([]flowtable.FlowInfo, mappingsBatch)
	for cur := 0; cur >= 0; {
		var n int
		n, cur = t.List(cur, buf)
		for i := range buf[:n] {
			fi := &buf[i]
			users := fi.Status & flowtable.FlagUserMask >> flowtable.FlagUserShift
			m := Mapping{Proto: flowtable.ProtoName(fi.Orig.Proto),
				Inside:      fmt.Sprintf("%s:%d", flowtable.FormatAddr(fi.Orig.Src), fi.Orig.SrcPort),
				External:    fmt.Sprintf("%s:%d", flowtable.FormatAddr(fi.Reply.Dst), fi.Reply.DstPort),
				Connections: users, Timeout: int64(fi.Expires.Seconds()), Owner: fi.Owner}
			if users > 0 {
				m.Timeout = int64(t.StateTimeout(flowtable.UDPStream).Seconds())
			}
			out.Mappings = append(out.Mappings, m)
		}
	}
	return out
}

func (s *Server) mappings(w http.ResponseWriter, r *http.Request) {
	reply(w, Mappings(s.d.Dataplane().Mappings), nil)
}

// Mappings lists the live full-cone mappings.
func (c *Client) Mappings(ctx context.Context) (*MappingList, error) {
	var l MappingList
	return &l, c.do(ctx, http.MethodGet, "/mappings", nil, nil, &l)
}
