package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"xnat/control/api"
	"xnat/control/api/apitest"
	"xnat/control/sysctl"
	"xnat/dataplane"
)

// xnatctlBin is the xnatctl binary the tests run, built by TestMain
// (without -race even when the tests have it: dozens of short processes).
var xnatctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "xnatctl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	xnatctlBin = filepath.Join(dir, "xnatctl")
	gobin, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "the tests build xnatctl and need the go command:", err)
		os.Exit(1)
	}
	build := exec.Command(gobin, "build", "-o", xnatctlBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	code := 1
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building xnatctl:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// xnatctl runs the command with args.
func xnatctl(t *testing.T, args ...string) result {
	t.Helper()
	return xnatctlAs(t, nil, xnatctlBin, args...)
}

func xnatctlAs(t *testing.T, cred *syscall.Credential, exe string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("xnatctl %q: %v", args, err)
	}
	return r
}

// ok runs a command that must succeed.
func ok(t *testing.T, sock string, args ...string) result {
	t.Helper()
	r := xnatctl(t, append([]string{"--socket", sock}, args...)...)
	if r.code != 0 {
		t.Fatalf("xnatctl %q: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("--json output does not decode into %T: %v\n%s", v, err, s)
	}
}

var entryRE = regexp.MustCompile(`^udp +17 \d+ src=10\.0\.([12])\.2 dst=192\.0\.2\.2 sport=(\d+) dport=7000 src=192\.0\.2\.2 dst=192\.0\.2\.1 sport=7000 dport=\d+ mark=0 use=1$`)

// TestCommands runs every command against a daemon forwarding real
// traffic and checks its output, text and JSON.
func TestCommands(t *testing.T) {
	b := apitest.New(t, apitest.Options{})
	sock := b.Socket
	b.UDPEcho(7000)
	ca := b.UDPDial(b.InsA, apitest.IPA, 40000, 7000)
	cb := b.UDPDial(b.InsB, apitest.IPB, 40001, 7000)
	if _, err := apitest.Ask(ca, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := apitest.Ask(cb, "b"); err != nil {
		t.Fatal(err)
	}

	t.Run("stats", func(t *testing.T) {
		r := ok(t, sock, "stats")
		for _, re := range []string{
			`(?m)^interface +role +rx +tx`,
			`(?m)^x0a +inside +\d+ pkts +\d+ B +\d+ pkts +\d+ B$`,
			`(?m)^x1 +outside +\d+ pkts`,
			`(?m)^connections +entries 2 +max 4096 +capacity 4096 +created 2 `,
			`(?m)^drops +` + dataplane.Reasons()[0].String() + ` 0 `,
			`(?m)table_full 0`,
			`(?m)^pipeline +forwarded \d+ pkts`,
			`(?m)^nat +allocated 2 `,
			`(?m)^xdp +x0a \(native\) +to_xnat_forward [1-9]`,
			`(?m)^ring +q0 +x1 \((copy|zero-copy)\) +rx [1-9]`,
			`(?m)^worker +q0 `,
			`(?m)^control +rule_replacements 0 `,
		} {
			if !regexp.MustCompile(re).MatchString(r.stdout) {
				t.Errorf("stats output lacks %s:\n%s", re, r.stdout)
			}
		}
		for _, reason := range dataplane.Reasons() {
			if !strings.Contains(r.stdout, " "+reason.String()+" ") {
				t.Errorf("stats lacks drop reason %s", reason)
			}
		}
		var s api.Stats
		decodeJSON(t, ok(t, sock, "stats", "--json").stdout, &s)
		if s.Connections.Entries != 2 || len(s.Drops) != len(dataplane.Reasons()) || len(s.Interfaces) != 3 || s.Time.IsZero() {
			t.Errorf("stats --json: %+v", s)
		}
		if r := ok(t, sock, "--json", "stats", "--per-core"); !strings.Contains(r.stdout, `"cores"`) {
			t.Errorf("--json before the command: %s", r.stdout)
		}
		if r := ok(t, sock, "stats", "--per-core"); !regexp.MustCompile(`(?m)^core 0$`).MatchString(r.stdout) || !strings.Contains(r.stdout, "conntrack 0") {
			t.Errorf("--per-core:\n%s", r.stdout)
		}
		r = ok(t, sock, "stats", "--watch", "--count", "2")
		if strings.Count(r.stdout, "\n--- ") != 1 || !strings.HasPrefix(r.stdout, "--- ") || !regexp.MustCompile(`(?m)^rates over 1\.\d s$`).MatchString(r.stdout) ||
			!regexp.MustCompile(`(?m)^x0a +[\d.]+ pkts/s +\d+ B/s`).MatchString(r.stdout) {
			t.Errorf("--watch:\n%s", r.stdout)
		}
	})

	t.Run("conntrack", func(t *testing.T) {
		r := ok(t, sock, "conntrack", "-L")
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		if len(lines) != 2 || r.stderr != "xnat conntrack (conntrack-tools format): 2 flow entries have been shown.\n" {
			t.Fatalf("-L:\n%s\nstderr %q", r.stdout, r.stderr)
		}
		for _, l := range lines {
			if !entryRE.MatchString(l) {
				t.Errorf("-L line %q", l)
			}
		}
		r = ok(t, sock, "conntrack", "-L", "-p", "udp", "-s", "10.0.2.2")
		if m := entryRE.FindStringSubmatch(strings.TrimSpace(r.stdout)); m == nil || m[1] != "2" || m[2] != "40001" {
			t.Errorf("-L -s 10.0.2.2: %q", r.stdout)
		}
		var l api.ConntrackList
		decodeJSON(t, ok(t, sock, "conntrack", "-L", "--json").stdout, &l)
		if len(l.Conns) != 2 || l.Conns[0].ProtoName != "udp" {
			t.Errorf("-L --json: %+v", l)
		}
		if r := ok(t, sock, "conntrack", "-C"); r.stdout != "2\n" {
			t.Errorf("-C: %q", r.stdout)
		}
		r = ok(t, sock, "conntrack", "-S")
		if !regexp.MustCompile(`^cpu=0 +\tfound=\d+ invalid=\d+ insert=2 insert_failed=0 drop=0 early_drop=0 error=0 search_restart=\d+\n`).MatchString(r.stdout) {
			t.Errorf("-S:\n%s", r.stdout)
		}
		var st api.Stats
		decodeJSON(t, ok(t, sock, "stats", "--json").stdout, &st)
		r = ok(t, sock, "conntrack", "-D", "-p", "udp", "--sport", "40000")
		if r.stderr != "xnat conntrack (conntrack-tools format): 1 flow entries have been deleted.\n" {
			t.Errorf("-D: %q", r.stderr)
		}
		apitest.Eventually(t, "the deleted connection to go", func() bool { return b.D.Table().Count() == 1 })
		if _, err := apitest.Ask(ca, "again"); err != nil {
			t.Fatal(err)
		}
		var st2 api.Stats
		decodeJSON(t, ok(t, sock, "stats", "--json").stdout, &st2)
		if st2.Connections.Created != st.Connections.Created+1 || st2.Connections.Entries != 2 {
			t.Errorf("after -D and a packet: created %d -> %d, entries %d", st.Connections.Created, st2.Connections.Created, st2.Connections.Entries)
		}
	})

	t.Run("sysctl", func(t *testing.T) {
		r := ok(t, sock, "sysctl")
		cfg := b.D.Config()
		keys := (&sysctl.Target{Ifaces: cfg.Interfaces()}).Keys()
		for _, k := range keys {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(k.Name) + ` = -?\d+$`).MatchString(r.stdout) {
				t.Errorf("listing lacks %s", k.Name)
			}
		}
		if n := strings.Count(r.stdout, "\n"); n != len(keys) {
			t.Errorf("%d lines for %d keys", n, len(keys))
		}
		want := fmt.Sprintf("net.netfilter.nf_conntrack_max = %d\n", b.D.Table().Max())
		if r := ok(t, sock, "sysctl", "net.netfilter.nf_conntrack_max"); r.stdout != want {
			t.Errorf("one key: %q, want %q", r.stdout, want)
		}
		bad := xnatctl(t, "--socket", sock, "sysctl", "net.netfilter.nf_conntrack_max=100", "net.netfilter.nf_conntrack_udp_timeout=0")
		if bad.code != 2 || strings.Count(bad.stderr, "\n") != 1 || !strings.Contains(bad.stderr, "out of range") || b.D.Table().Max() == 100 {
			t.Errorf("bad set: %+v (max %d)", bad, b.D.Table().Max())
		}
		r = ok(t, sock, "sysctl", "net.netfilter.nf_conntrack_max=100", "net.netfilter.nf_conntrack_udp_timeout = 45")
		if r.stdout != "net.netfilter.nf_conntrack_max = 100\nnet.netfilter.nf_conntrack_udp_timeout = 45\n" || b.D.Table().Max() != 100 {
			t.Errorf("set: %q", r.stdout)
		}
		var v api.SysctlValues
		decodeJSON(t, ok(t, sock, "sysctl", "--json", "xnat.tcp_loose").stdout, &v)
		if len(v.Values) != 1 || v.Values[0].Name != "xnat.tcp_loose" || v.Values[0].Help == "" {
			t.Errorf("--json: %+v", v)
		}
		ok(t, sock, "sysctl", "net.netfilter.nf_conntrack_max=4096")
	})

	t.Run("iptables", func(t *testing.T) {
		if r := ok(t, sock, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.0.2.0/24", "-o", "x1", "-j", "MASQUERADE"); r.stdout != "" {
			t.Errorf("-A printed %q", r.stdout)
		}
		r := ok(t, sock, "iptables", "-t", "nat", "-L", "-n", "-v", "--line-numbers")
		if !regexp.MustCompile(`(?m)^Chain POSTROUTING \(policy ACCEPT \d+ packets, \d+ bytes\)$`).MatchString(r.stdout) ||
			!regexp.MustCompile(`(?m)^num +pkts bytes target +prot opt in +out +source +destination`).MatchString(r.stdout) ||
			!regexp.MustCompile(`(?m)^2 +0 +0 MASQUERADE +all +-- +\* +x1 +10\.0\.2\.0/24 +0\.0\.0\.0/0`).MatchString(r.stdout) {
			t.Errorf("-L -n -v --line-numbers:\n%s", r.stdout)
		}
		if r := ok(t, sock, "iptables", "-t", "nat", "-S", "POSTROUTING"); r.stdout != "-P POSTROUTING ACCEPT\n-A POSTROUTING -o x1 -j MASQUERADE\n-A POSTROUTING -s 10.0.2.0/24 -o x1 -j MASQUERADE\n" {
			t.Errorf("-S: %q", r.stdout)
		}
		ok(t, sock, "iptables", "-t", "nat", "-Z")
		r = ok(t, sock, "iptables-save")
		if !strings.HasPrefix(r.stdout, "# Generated by") || !strings.Contains(r.stdout, "*nat\n") || !strings.Contains(r.stdout, "-A POSTROUTING -s 10.0.2.0/24 -o x1 -j MASQUERADE\n") || !strings.Contains(r.stdout, "COMMIT\n") {
			t.Errorf("iptables-save:\n%s", r.stdout)
		}
		if r := ok(t, sock, "iptables-save", "-c", "-t", "nat"); !strings.Contains(r.stdout, "[0:0] -A POSTROUTING -o x1 -j MASQUERADE") || strings.Contains(r.stdout, "*filter") {
			t.Errorf("iptables-save -c -t nat:\n%s", r.stdout)
		}
		before := ok(t, sock, "iptables-save").stdout
		dir := t.TempDir()
		badFile := filepath.Join(dir, "bad.v4")
		must(t, os.WriteFile(badFile, []byte("*nat\n-F\n-A POSTROUTING -o x1 -j SNAT\nCOMMIT\n"), 0o644))
		r = xnatctl(t, "--socket", sock, "iptables-restore", badFile)
		if r.code != 1 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "line 3") {
			t.Errorf("bad file: %+v", r)
		}
		if after := ok(t, sock, "iptables-save").stdout; stripHeader(after) != stripHeader(before) {
			t.Errorf("a refused file changed the rules:\n%s\n---\n%s", before, after)
		}
		good := filepath.Join(dir, "good.v4")
		must(t, os.WriteFile(good, []byte(apitest.MasqueradeRules), 0o644))
		ok(t, sock, "iptables-restore", good)
		if s := ok(t, sock, "iptables-save", "-t", "nat").stdout; strings.Contains(s, "10.0.2.0/24") || !strings.Contains(s, "-A POSTROUTING -o x1 -j MASQUERADE") {
			t.Errorf("after restore:\n%s", s)
		}
		var ir api.IptablesResponse
		decodeJSON(t, ok(t, sock, "iptables", "-L", "FORWARD", "--json").stdout, &ir)
		if !strings.HasPrefix(ir.Output, "Chain FORWARD (policy ACCEPT)") {
			t.Errorf("--json -L: %+v", ir)
		}
	})

	t.Run("events", func(t *testing.T) {
		r := ok(t, sock, "events")
		if !regexp.MustCompile(`(?m)^\S+ INFO  rule set replaced by xnatctl iptables -t nat -A POSTROUTING -s 10\.0\.2\.0/24 -o x1 -j MASQUERADE$`).MatchString(r.stdout) ||
			!strings.Contains(r.stdout, "rule set replaced by xnatctl iptables-restore") {
			t.Errorf("events:\n%s", r.stdout)
		}
		var l api.EventList
		decodeJSON(t, ok(t, sock, "events", "--json").stdout, &l)
		if len(l.Events) < 2 || l.Next != l.Events[len(l.Events)-1].Seq {
			t.Fatalf("events --json: %+v", l)
		}
		if r := ok(t, sock, "events", "--after", fmt.Sprint(l.Next)); r.stdout != "" {
			t.Errorf("events --after the last: %q", r.stdout)
		}
		// --follow streams until interrupted: a new event arrives while it runs.
		cmd := exec.Command(xnatctlBin, "--socket", sock, "events", "--follow", "--json", "--after", fmt.Sprint(l.Next))
		out, err := cmd.StdoutPipe()
		must(t, err)
		must(t, cmd.Start())
		ok(t, sock, "iptables", "-A", "FORWARD", "-p", "udp", "--dport", "9", "-j", "DROP")
		lines := make(chan string, 1)
		go func() {
			b := make([]byte, 4096)
			n, _ := out.Read(b)
			lines <- string(b[:n])
		}()
		select {
		case l := <-lines:
			var e api.Event
			decodeJSON(t, l, &e)
			if e.Kind != api.KindRulesReplaced || !strings.Contains(e.Source, "--dport 9") {
				t.Errorf("followed %+v", e)
			}
		case <-time.After(5 * time.Second):
			t.Error("nothing followed")
		}
		must(t, cmd.Process.Signal(os.Interrupt))
		if err := cmd.Wait(); err != nil {
			t.Errorf("events --follow after SIGINT: %v", err)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			code int
			says string
		}{
			{[]string{"frobnicate"}, 2, "unknown command"},
			{[]string{"stats", "--bogus"}, 2, "bogus"},
			{[]string{"stats", "extra"}, 2, "extra"},
			{[]string{"stats", "--count", "2"}, 2, "--watch"},
			{[]string{"conntrack"}, 2, "no command"},
			{[]string{"conntrack", "-L", "-p", "bogus"}, 2, "bogus"},
			{[]string{"conntrack", "-L", "--sport", "1"}, 2, "--sport"},
			{[]string{"conntrack", "-L", "-s", "host.example"}, 2, "IPv4"},
			{[]string{"conntrack", "-F", "-p", "tcp"}, 2, "filters"},
			{[]string{"conntrack", "-X"}, 2, "-X"},
			{[]string{"iptables"}, 2, "no command"},
			{[]string{"iptables", "-A", "FORWARD", "-j", "TPROXY"}, 2, "TPROXY"},
			{[]string{"iptables", "-t", "mangle", "-L"}, 2, "mangle"},
			{[]string{"iptables", "-A", "FORWARD", "-s", "10.0.0.0/33"}, 2, "invalid mask"},
			{[]string{"iptables", "-D", "FORWARD", "9"}, 1, ""},
			{[]string{"iptables", "-X", "NOSUCH"}, 1, "NOSUCH"},
			{[]string{"iptables", "-A", "FORWARD", "-j", "NOSUCH"}, 1, "NOSUCH"},
			{[]string{"iptables-save", "-t", "mangle"}, 2, "mangle"},
			{[]string{"iptables-save", "extra"}, 2, "extra"},
			{[]string{"iptables-restore", "/nonexistent/rules.v4"}, 1, "no such file"},
			{[]string{"iptables-restore", "a", "b"}, 2, "one FILE"},
			{[]string{"sysctl", "nope"}, 2, "unknown key"},
			{[]string{"sysctl", "nope=1"}, 2, "unknown key"},
			{[]string{"sysctl", "net.netfilter.nf_conntrack_max=abc"}, 2, "abc"},
			{[]string{"sysctl", "net.netfilter.nf_conntrack_max=0"}, 2, "out of range"},
			{[]string{"sysctl", "net.netfilter.nf_conntrack_count=1"}, 1, "read-only"},
			{[]string{"sysctl", "xnat.tcp_loose=1", "xnat.icmp_burst"}, 2, "NAME=VALUE"},
			{[]string{"events", "--after", "x"}, 2, "after"},
			{[]string{"events", "extra"}, 2, "extra"},
		} {
			r := xnatctl(t, append([]string{"--socket", sock}, c.args...)...)
			if r.code != c.code || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, c.says) || r.stdout != "" ||
				strings.Contains(r.stderr, "goroutine") || strings.Contains(r.stderr, "panic") {
				t.Errorf("%q: exit %d (want %d), stdout %q, stderr %q (want one line saying %q)", c.args, r.code, c.code, r.stdout, r.stderr, c.says)
			}
		}
		for _, args := range [][]string{{"--socket"}, {"--socket", ""}, {"stats", "--socket"}} {
			if r := xnatctl(t, args...); r.code != 2 || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("%q: %+v", args, r)
			}
		}
		// No daemon: the same line from every command.
		none := filepath.Join(t.TempDir(), "none.sock")
		for _, args := range [][]string{{"stats"}, {"conntrack", "-L"}, {"conntrack", "-F"}, {"iptables", "-L"}, {"iptables-save"},
			{"iptables-restore", os.DevNull}, {"sysctl"}, {"events"}, {"events", "--follow"}} {
			r := xnatctl(t, append([]string{"--socket", none}, args...)...)
			if r.code != 1 || r.stderr != "xnatctl: xnatd is not running: no socket at "+none+"\n" {
				t.Errorf("%q without a daemon: %+v", args, r)
			}
		}
	})
}

func stripHeader(s string) string {
	return regexp.MustCompile(`(?m)^#.*\n`).ReplaceAllString(s, "")
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSocketRootOnly: the control socket is mode 0600 and owned by the
// daemon's user (root): another user is refused with a one-line reason.
func TestSocketRootOnly(t *testing.T) {
	b := apitest.New(t, apitest.Options{})
	// A directory everyone may enter, so that only the socket's own mode
	// stands in the way.
	open, err := os.MkdirTemp("", "xnatctl-perm-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(open) })
	must(t, os.Chmod(open, 0o755))
	sock := filepath.Join(open, "xnat.sock")
	must(t, b.S.Listen(sock))
	fi, err := os.Stat(sock)
	must(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o600 || st.Uid != uint32(os.Getuid()) {
		t.Fatalf("socket mode %v uid %d", fi.Mode(), st.Uid)
	}
	exe := filepath.Join(open, "xnatctl")
	src, err := os.Open(xnatctlBin)
	must(t, err)
	dst, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY, 0o755)
	must(t, err)
	_, err = io.Copy(dst, src)
	src.Close()
	must(t, err)
	must(t, dst.Close())
	r := xnatctlAs(t, &syscall.Credential{Uid: 65534, Gid: 65534}, exe, "--socket", sock, "stats")
	if r.code != 1 || r.stderr != "xnatctl stats: permission denied on "+sock+" (the control socket is root's)\n" {
		t.Fatalf("as nobody: %+v", r)
	}
	if r := xnatctlAs(t, nil, exe, "--socket", sock, "conntrack", "-C"); r.code != 0 || r.stdout != "0\n" {
		t.Fatalf("as root: %+v", r)
	}
}
