package api

import (
	"fmt"
	"net/url"
	"strconv"

	"xnat/control/conntrack"
	"xnat/flowtable"
)

// FilterQuery encodes a conntrack filter as the query of a conntrack route.
func FilterQuery(f *conntrack.Filter) url.Values {
	q := url.Values{}
	if f.Proto != 0 {
		q.Set("proto", strconv.Itoa(int(f.Proto)))
	}
	if f.HasSrc {
		q.Set("src", flowtable.FormatAddr(f.Src))
	}
	if f.HasDst {
		q.Set("dst", flowtable.FormatAddr(f.Dst))
	}
	if f.HasSPort {
		q.Set("sport", strconv.Itoa(int(f.SPort)))
	}
	if f.HasDPort {
		q.Set("dport", strconv.Itoa(int(f.DPort)))
	}
	if f.HasState {
		q.Set("state", f.State.String())
	}
	if f.HasMark {
		q.Set("mark", fmt.Sprintf("%d/%d", f.Mark, f.MarkMask))
	}
	return q
}

// filterOptions maps query keys to conntrack options, in the order they
// are given to conntrack.Parse.
var filterOptions = []struct{ key, opt string }{
	{"proto", "-p"}, {"src", "-s"}, {"dst", "-d"}, {"sport", "--sport"}, {"dport", "--dport"},
	{"state", "--state"}, {"mark", "--mark"},
}

// ParseFilterQuery reads a conntrack route's query into a parsed conntrack
// command (cmd is "-L" or "-D"): the same validation as the command line.
func ParseFilterQuery(cmd string, q url.Values) (*conntrack.Args, error) {
	words := []string{cmd}
	known := map[string]bool{}
	for _, fo := range filterOptions {
		known[fo.key] = true
		if vs, ok := q[fo.key]; ok {
			if len(vs) != 1 {
				return nil, fmt.Errorf("%w: %s given %d times", conntrack.ErrUsage, fo.key, len(vs))
			}
			words = append(words, fo.opt, vs[0])
		}
	}
	for k := range q {
		if !known[k] {
			return nil, fmt.Errorf("%w: unknown filter %q", conntrack.ErrUsage, k)
		}
	}
	return conntrack.Parse(words)
}
