package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIptablesRestoreTest(t *testing.T) {
	good := "*nat\n:POSTROUTING ACCEPT [7:420]\n-A POSTROUTING -s 10.8.0.0/255.255.255.0 -o eth0 -j MASQUERADE\nCOMMIT\n"
	var out, errb bytes.Buffer
	if rc := run([]string{"iptables-restore", "--test", "--print"}, strings.NewReader(good), &out, &errb); rc != 0 {
		t.Fatalf("rc %d: %s", rc, errb.String())
	}
	want := "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.8.0.0/24 -o eth0 -j MASQUERADE\nCOMMIT\n"
	if out.String() != want {
		t.Errorf("--print:\n%s", out.String())
	}
	out.Reset()
	if rc := run([]string{"iptables-restore", "--test", "--print", "--counters"}, strings.NewReader(good), &out, &errb); rc != 0 || !strings.Contains(out.String(), ":POSTROUTING ACCEPT [7:420]\n[0:0] -A POSTROUTING") {
		t.Errorf("--counters rc %d:\n%s", rc, out.String())
	}
	// A file argument; without --print nothing on stdout.
	f := filepath.Join(t.TempDir(), "r")
	os.WriteFile(f, []byte(good), 0o644)
	out.Reset()
	if rc := run([]string{"iptables-restore", "--test", f}, nil, &out, &errb); rc != 0 || out.Len() != 0 {
		t.Errorf("file: rc %d out %q", rc, out.String())
	}
	// Errors: exit 1, line and word on stderr, nothing on stdout.
	bad := "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n\n\n\n-A FORWARD -j TPROXY --on-port 1\nCOMMIT\n"
	out.Reset()
	errb.Reset()
	if rc := run([]string{"iptables-restore", "--test", "--print"}, strings.NewReader(bad), &out, &errb); rc != 1 || out.Len() != 0 ||
		!strings.Contains(errb.String(), `line 7: unknown target "TPROXY": not supported by xnat`) {
		t.Errorf("bad: rc %d out %q err %q", rc, out.String(), errb.String())
	}
	// Chains without effect in xnat are warned about, exit 0.
	errb.Reset()
	if rc := run([]string{"iptables-restore", "--test"}, strings.NewReader("*filter\n-A INPUT -j ACCEPT\nCOMMIT\n"), &out, &errb); rc != 0 || !strings.Contains(errb.String(), "warning: filter INPUT: 1 rule(s) have no effect") {
		t.Errorf("warning: rc %d %q", rc, errb.String())
	}
	for _, args := range [][]string{{"frobnicate"}, {"iptables-restore", "--test", "--bogus"}, {"iptables-restore", "--test", "a", "b"}, {}, {"iptables-restore", "--print"}} {
		errb.Reset()
		if rc := run(args, strings.NewReader(""), &out, &errb); rc != 2 || strings.Count(errb.String(), "\n") > 1 && len(args) > 0 {
			t.Errorf("%q: rc %d, stderr %q", args, rc, errb.String())
		}
	}
	if rc := run([]string{"iptables-restore", "--test", "/nonexistent/file"}, nil, &out, &errb); rc != 1 {
		t.Errorf("missing file: rc %d", rc)
	}
}
