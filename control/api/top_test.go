package api

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"xnat/flowtable"
	"xnat/portalloc"
)

// TestTopOf: GET /v1/top's answer from a limiter with connections of
// three hosts, one of them refused; bad n and no limiter are errors.
func TestTopOf(t *testing.T) {
	tab, err := flowtable.New(flowtable.Config{Capacity: 100, Cores: 1})
	if err != nil {
		t.Fatal(err)
	}
	lim, err := portalloc.NewSourceLimiter(portalloc.LimiterConfig{Cores: 1, Conns: 200, MaxConns: 3})
	if err != nil {
		t.Fatal(err)
	}
	as, err := portalloc.New(portalloc.Pool{AddrLo: 0xcb007101, AddrHi: 0xcb007101}, 1, portalloc.NewShared(1, lim))
	if err != nil {
		t.Fatal(err)
	}
	c := tab.Core(0)
	c.Enter()
	for host, n := range map[uint32]int{0x0a000001: 4, 0x0a000002: 2, 0x0a000003: 1} {
		for i := range n {
			o := flowtable.MakeTuple(flowtable.ProtoUDP, host, uint16(5000+i), 0xc6336407, 53)
			nf := flowtable.NewFlow{Orig: o, Reply: o.Reverse(), Status: uint32(flowtable.UDP) | flowtable.FlagSrcNAT}
			as[0].Allocate(c, &nf, portalloc.Options{}, 0)
		}
	}
	c.Exit()
	got, err := topOf(lim, url.Values{"n": {"2"}})
	if err != nil {
		t.Fatal(err)
	}
	want := TopSources{Sources: 3, Conns: 6, Ports: 6, PerSourceMax: 3, RefusedConns: 1,
		ByConns:   []SourceUse{{"10.0.0.1", 3, 3, 1}, {"10.0.0.2", 2, 2, 0}},
		ByPorts:   []SourceUse{{"10.0.0.1", 3, 3, 1}, {"10.0.0.2", 2, 2, 0}},
		ByRefused: []SourceUse{{"10.0.0.1", 3, 3, 1}}}
	if !equalTop(got, &want) {
		t.Errorf("top:\n%+v\nwant\n%+v", *got, want)
	}
	if all, _ := topOf(lim, nil); len(all.ByConns) != 3 {
		t.Errorf("default n: %d sources", len(all.ByConns))
	}
	var he *httpError
	if _, err := topOf(lim, url.Values{"n": {"0"}}); !errors.As(err, &he) || he.status != http.StatusBadRequest {
		t.Errorf("n=0: %v", err)
	}
	if _, err := topOf(nil, nil); !errors.As(err, &he) || he.status != http.StatusUnprocessableEntity || !errors.Is(err, errNoLimiter) {
		t.Errorf("no limiter: %v", err)
	}
}

func equalTop(a, b *TopSources) bool {
	eq := func(x, y []SourceUse) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	return a.Sources == b.Sources && a.Conns == b.Conns && a.Ports == b.Ports && a.PerSourceMax == b.PerSourceMax &&
		a.PerSourcePorts == b.PerSourcePorts && a.RefusedConns == b.RefusedConns && a.RefusedPorts == b.RefusedPorts &&
		a.Full == b.Full && eq(a.ByConns, b.ByConns) && eq(a.ByPorts, b.ByPorts) && eq(a.ByRefused, b.ByRefused)
}

func TestParseTopN(t *testing.T) {
	for q, want := range map[string]int{"": DefaultTop, "n=1": 1, "n=1000": 1000} {
		v, _ := url.ParseQuery(q)
		if n, err := ParseTopN(v); n != want || err != nil {
			t.Errorf("%q: %d %v", q, n, err)
		}
	}
	for _, q := range []string{"n=0", "n=1001", "n=-1", "n=x", "n=", "n=1&n=2", "n=99999999999999999999"} {
		v, _ := url.ParseQuery(q)
		if _, err := ParseTopN(v); err == nil || !strings.Contains(err.Error(), "n ") {
			t.Errorf("%q: %v", q, err)
		}
	}
}

// FuzzParseTopN: any query string gives a count in range or an error.
func FuzzParseTopN(f *testing.F) {
	for _, s := range []string{"", "n=5", "n=0", "n=1&n=2", "n=%zz", "m=3", "n=+7", "n=0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		n, err := ParseTopN(q)
		if err == nil && (n < 1 || n > MaxTop) {
			t.Fatalf("%q: n %d", raw, n)
		}
	})
}
