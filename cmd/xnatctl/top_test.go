package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"xnat/control/api"
)

// topServer serves GET /v1/top with t (its lists cut to n) on a unix
// socket, as the daemon does, and returns the socket's path.
func topServer(t *testing.T, top api.TopSources) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "x.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.Version+"/top", func(w http.ResponseWriter, r *http.Request) {
		n, err := api.ParseTopN(r.URL.Query())
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(api.ErrorResponse{Error: err.Error()})
			return
		}
		out := top
		out.ByConns = out.ByConns[:min(n, len(out.ByConns))]
		json.NewEncoder(w).Encode(out)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestTop(t *testing.T) {
	top := api.TopSources{Sources: 2, Conns: 1500, Ports: 900, PerSourceMax: 1000, RefusedConns: 7, Full: 1,
		ByConns:   []api.SourceUse{{Addr: "10.0.0.7", Conns: 1000, Ports: 700, Refused: 7}, {Addr: "10.0.0.9", Conns: 500, Ports: 200}},
		ByPorts:   []api.SourceUse{{Addr: "10.0.0.7", Conns: 1000, Ports: 700, Refused: 7}},
		ByRefused: []api.SourceUse{{Addr: "10.0.0.7", Conns: 1000, Ports: 700, Refused: 7}}}
	sock := topServer(t, top)
	var out, errb bytes.Buffer
	if rc := run([]string{"--socket", sock, "top", "-n", "1"}, nil, &out, &errb); rc != 0 {
		t.Fatalf("rc %d: %s", rc, errb.String())
	}
	text := out.String()
	for _, want := range []string{
		"sources      inside 2  connections 1.5 k  ports 900\n",
		"limits       per_source_max 1000  per_source_ports none\n",
		"refused      at_max 7  at_ports 0  limiter_full 1\n",
		"most connections\n",
		"  address          connections  ports  refused\n  10.0.0.7                1000    700        7\n",
		"most refused\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "10.0.0.9") {
		t.Errorf("-n 1 printed a second address:\n%s", text)
	}
	out.Reset()
	if rc := run([]string{"--socket", sock, "--json", "top"}, nil, &out, &errb); rc != 0 {
		t.Fatalf("--json rc %d: %s", rc, errb.String())
	}
	var got api.TopSources
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.Conns != 1500 || len(got.ByConns) != 2 {
		t.Errorf("--json: %v %+v", err, got)
	}
	for _, args := range [][]string{{"top", "-n", "0"}, {"top", "-n", "x"}, {"top", "extra"}, {"top", "-n", "1001"}} {
		errb.Reset()
		if rc := run(append([]string{"--socket", sock}, args...), nil, &out, &errb); rc != 2 || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%q: rc %d, stderr %q", args, rc, errb.String())
		}
	}
	errb.Reset()
	if rc := run([]string{"--socket", filepath.Join(t.TempDir(), "none.sock"), "top"}, nil, &out, &errb); rc != 1 || !strings.Contains(errb.String(), "not running") {
		t.Errorf("no daemon: rc %d, stderr %q", rc, errb.String())
	}
}
