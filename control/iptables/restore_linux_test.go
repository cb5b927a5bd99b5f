package iptables

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"xnat/dataplane/rules"
)

// restoreBase is the rule set every case of TestRestoreLikeLinux starts
// from.
const restoreBase = `*filter
:INPUT DROP [5:500]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:FOO - [0:0]
:BAR - [0:0]
-A INPUT -s 1.1.1.1/32 -j FOO
-A FOO -j ACCEPT
-A BAR -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o eth0 -j MASQUERADE
COMMIT
`

// restoreGolden reads testdata/restore-linux.golden: for each case, what
// "iptables-save -c -t filter; iptables-save -c -t nat" printed after
// restoring restoreBase and then the case's input with iptables-restore
// 1.8.9 in a fresh network namespace.
func restoreGolden(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("testdata/restore-linux.golden")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, sec := range strings.Split(string(b), "### ")[1:] {
		name, body, _ := strings.Cut(sec, "\n")
		rc, body, _ := strings.Cut(body, "\n")
		if rc != "rc=0" {
			t.Fatalf("golden case %s: %s", name, rc)
		}
		out[name] = body
	}
	return out
}

// TestRestoreLikeLinux: iptables-restore with and without --noflush, case
// by case, against what Linux's iptables-restore did with the same input
// (iptables-legacy-restore; iptables-nft-restore agrees except where
// noted).
func TestRestoreLikeLinux(t *testing.T) {
	golden := restoreGolden(t)
	cases := []struct {
		name, in         string
		noflush, counter bool
	}{
		// Only the table named changes; the flush keeps INPUT's policy
		// (iptables-nft-restore resets it to ACCEPT).
		{"A", "*filter\n-A FORWARD -j ACCEPT\nCOMMIT\n", false, false},
		{"B", "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", false, false},
		// -n: declaring an existing user chain flushes it.
		{"C", "*filter\n:FOO - [0:0]\n-A FOO -j DROP\nCOMMIT\n", true, false},
		// -n: a built-in chain's line sets the policy and keeps its rules;
		// its counters only with -c.
		{"D", "*filter\n:INPUT ACCEPT [7:700]\n-A INPUT -j DROP\nCOMMIT\n", true, false},
		{"E", "*filter\n:INPUT ACCEPT [7:700]\n[3:4] -A INPUT -j DROP\nCOMMIT\n", true, true},
		// "-" as a built-in chain's policy changes nothing (flushed or
		// not; iptables-nft-restore's flush resets it to ACCEPT).
		{"F", "*filter\n:INPUT - [0:0]\nCOMMIT\n", true, false},
		{"G", "*filter\n:INPUT - [0:0]\nCOMMIT\n", false, false},
		// -n: a new chain is created, existing ones are used undeclared.
		{"H", "*filter\n:NEW - [0:0]\n-A NEW -j FOO\n-A BAR -j RETURN\nCOMMIT\n", true, false},
		// -n: a second declaration flushes again.
		{"I", "*filter\n:NEW - [0:0]\n-A NEW -j ACCEPT\n:NEW - [0:0]\n-A NEW -j DROP\nCOMMIT\n", true, false},
		// A built-in chain declared twice: the last policy counts.
		{"K", "*filter\n:INPUT ACCEPT [0:0]\n:INPUT DROP [0:0]\nCOMMIT\n", false, false},
		{"O", "*filter\n-F\nCOMMIT\n", true, false},
		{"P", "*nat\nCOMMIT\n", false, false},
		// A table given twice: each section is applied in turn.
		{"Q", "*nat\nCOMMIT\n*nat\n-A POSTROUTING -j ACCEPT\nCOMMIT\n", false, false},
		{"Q2", "*filter\n-A FORWARD -j ACCEPT\nCOMMIT\n*filter\n-A FORWARD -j DROP\nCOMMIT\n", true, false},
		{"S", "*filter\n:FORWARD DROP [9:900]\nCOMMIT\n", true, false},
	}
	for _, c := range cases {
		want, ok := golden[c.name]
		if !ok {
			t.Fatalf("no golden output for case %s", c.name)
		}
		base, _ := restoreString(t, restoreBase, RestoreOptions{})
		m, _, err := Restore(strings.NewReader(c.in), base, RestoreOptions{NoFlush: c.noflush, Counters: c.counter})
		if err != nil {
			t.Errorf("case %s (%q): %v", c.name, c.in, err)
			continue
		}
		var buf bytes.Buffer
		if err := WriteSave(&buf, m, SaveOptions{Tables: []rules.TableID{rules.Filter, rules.NAT}, Counters: true}); err != nil {
			t.Fatal(err)
		}
		if buf.String() != want {
			t.Errorf("case %s (%q, noflush %v):\n%s\nLinux:\n%s", c.name, c.in, c.noflush, buf.String(), want)
		}
	}
}

// TestRestoreRefusedLikeLinux: inputs iptables-restore refuses are
// refused at the same line, and the rules stay as they were.
func TestRestoreRefusedLikeLinux(t *testing.T) {
	cases := []struct {
		in      string
		noflush bool
		line    int
		is      error
	}{
		// Without -n a user chain declared twice is an error
		// (iptables-legacy-restore: "error creating chain: File exists").
		{"*filter\n:NEW - [0:0]\n:NEW - [0:0]\nCOMMIT\n", false, 3, rules.ErrChainExists},
		{"*filter\n:NEW ACCEPT [0:0]\nCOMMIT\n", false, 2, ErrBadValue},
		// The flush deleted FOO.
		{"*filter\n-A FOO -j ACCEPT\nCOMMIT\n", false, 2, rules.ErrNoChain},
		// BAR is not empty.
		{"*filter\n-X BAR\nCOMMIT\n", true, 2, rules.ErrChainNotEmpty},
		// A later table's error: iptables-restore has already committed
		// the nat table here; xnat changes nothing.
		{"*nat\nCOMMIT\n*filter\n-A FORWARD -j NOPE\nCOMMIT\n", false, 4, rules.ErrNoChain},
	}
	for _, c := range cases {
		base, _ := restoreString(t, restoreBase, RestoreOptions{})
		before := base.Clone()
		m, tabs, err := Restore(strings.NewReader(c.in), base, RestoreOptions{NoFlush: c.noflush})
		var e *Error
		if err == nil || m != nil || tabs != nil || !errors.As(err, &e) || e.Line != c.line || !errors.Is(err, c.is) {
			t.Errorf("%q (noflush %v): %v, want an error at line %d wrapping %v", c.in, c.noflush, err, c.line, c.is)
		}
		if !base.Equal(before) {
			t.Errorf("%q: the base model changed", c.in)
		}
	}
}
