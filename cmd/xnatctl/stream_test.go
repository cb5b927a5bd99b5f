package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"xnat/control/api"
	"xnat/control/conntrack"
	"xnat/flowtable"
	"xnat/internal/nattest"
)

func listing(n int, acct bool) api.ConntrackList {
	l := api.ConntrackList{Acct: acct, Conns: []api.Conn{}}
	for i := range n {
		proto, st := uint8(6), uint32(flowtable.TCPEstablished)|flowtable.FlagSeenReply|flowtable.FlagAssured
		if i%2 == 1 {
			proto, st = 17, uint32(flowtable.UDP)
		}
		fi := flowtable.FlowInfo{Orig: flowtable.MakeTuple(proto, 0x0a000002+uint32(i), uint16(40000+i), 0xc0000202, 53),
			Reply: flowtable.MakeTuple(proto, 0xc0000202, 53, 0xc0000201, uint16(50000+i)), Status: st, Expires: 30 * time.Second}
		if acct {
			fi.Counters = [2]flowtable.Counter{{Packets: 3, Bytes: 180}, {Packets: 2, Bytes: 120}}
		}
		l.Conns = append(l.Conns, api.ConnOf(&fi, acct))
	}
	return l
}

// fakeDaemon serves the listing on a socket, as xnatd's API writes it.
func fakeDaemon(t *testing.T, l api.ConntrackList) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "xnat.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.Version+"/conntrack", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(l)
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return sock
}

// TestConntrackListStreamed: conntrack -L prints, connection by
// connection, conntrack's lines and summary; with --json exactly what
// printing the whole list as JSON gives.
func TestConntrackListStreamed(t *testing.T) {
	for _, n := range []int{0, 1, 3} {
		for _, acct := range []bool{false, true} {
			l := listing(n, acct)
			sock := fakeDaemon(t, l)

			var want bytes.Buffer
			for i := range l.Conns {
				fi, err := l.Conns[i].FlowInfo()
				if err != nil {
					t.Fatal(err)
				}
				conntrack.WriteEntry(&want, &fi, acct)
			}
			var out, errb bytes.Buffer
			if rc := run([]string{"--socket", sock, "conntrack", "-L"}, nil, &out, &errb); rc != 0 || out.String() != want.String() ||
				errb.String() != conntrack.Summary(conntrack.List, n)+"\n" {
				t.Fatalf("n=%d acct=%v: rc %d\n%s\nwant\n%s\nstderr %q", n, acct, rc, out.String(), want.String(), errb.String())
			}

			want.Reset()
			e := &env{stdout: &want}
			e.printJSON(l)
			out.Reset()
			errb.Reset()
			if rc := run([]string{"--socket", sock, "conntrack", "-L", "--json"}, nil, &out, &errb); rc != 0 || out.String() != want.String() {
				t.Fatalf("n=%d acct=%v --json: rc %d\n%s\nwant\n%s\nstderr %q", n, acct, rc, out.String(), want.String(), errb.String())
			}
		}
	}
}

// TestTimeoutFlag: --timeout takes a duration or seconds, before or after
// the command; a daemon that never answers fails the command after it
// with one line on stderr; bad values are usage errors.
func TestTimeoutFlag(t *testing.T) {
	for s, want := range map[string]time.Duration{"10s": 10 * time.Second, "250ms": 250 * time.Millisecond, "2": 2 * time.Second,
		"0.5": 500 * time.Millisecond, "0": 0, "1m30s": 90 * time.Second} {
		if got, err := parseTimeout(s); err != nil || got != want {
			t.Errorf("parseTimeout(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"-1s", "-3", "x", "", "1e300", "NaN", "Inf"} {
		if d, err := parseTimeout(s); err == nil {
			t.Errorf("parseTimeout(%q) = %v, accepted", s, d)
		}
	}

	sock := nattest.MuteSocket(t)
	for _, args := range [][]string{
		{"--socket", sock, "--timeout", "200ms", "conntrack", "-C"},
		{"--socket", sock, "conntrack", "--timeout=0.2", "-L"},
		{"--timeout", "200ms", "--socket", sock, "iptables-save"},
		{"--socket", sock, "sysctl", "--timeout", "200ms"},
		{"--socket", sock, "--timeout", "200ms", "events", "--follow"},
	} {
		var out, errb bytes.Buffer
		start := time.Now()
		rc := run(args, nil, &out, &errb)
		took := time.Since(start)
		if rc != 1 || !strings.Contains(errb.String(), "no answer within 200ms") || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%q: rc %d, stderr %q", args, rc, errb.String())
		}
		// events --follow waits for three heartbeats at least.
		if limit := 3*api.FollowHeartbeat + 5*time.Second; took > limit {
			t.Errorf("%q: took %v", args, took)
		}
	}
	for _, args := range [][]string{{"--timeout"}, {"--timeout", "soon", "stats"}, {"stats", "--timeout", "-1"}} {
		var out, errb bytes.Buffer
		if rc := run(args, nil, &out, &errb); rc != 2 || !strings.Contains(errb.String(), "timeout") {
			t.Errorf("%q: rc %d, stderr %q", args, rc, errb.String())
		}
	}
	// The client's own error for a timeout.
	c := api.NewClient(sock)
	c.SetTimeout(100 * time.Millisecond)
	if _, err := c.Stats(context.Background()); !errors.Is(err, api.ErrTimeout) {
		t.Errorf("Stats from a mute daemon: %v", err)
	}
}
