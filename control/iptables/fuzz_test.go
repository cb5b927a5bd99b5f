package iptables

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"xnat/dataplane/rules"
)

// FuzzParseLine: any command line parses to a command or an error, never
// a panic; accepted rule commands apply, print and reparse to the same
// rule, and compile.
func FuzzParseLine(f *testing.F) {
	for _, g := range seedRules {
		f.Add(g.cmd)
		f.Add("iptables " + g.save)
	}
	for _, e := range seedErrors {
		f.Add(e.cmd)
	}
	f.Add("iptables -A FORWARD -p tcp --dport=22 -j ACCEPT")
	f.Add("iptables -L -n -v -x --line-numbers")
	f.Add("iptables -t nat -S POSTROUTING 1")
	for _, g := range fullConeRules {
		f.Add(g.cmd)
		f.Add("iptables -t nat " + g.save)
	}
	f.Add("iptables -A FORWARD -p 0x2f -j ACCEPT")
	f.Add("iptables -A FORWARD ! -p ax.25 -j DROP")
	f.Add("iptables -A FORWARD -p IPv6-ICMP -j ACCEPT")
	f.Fuzz(func(t *testing.T, line string) {
		cmd, err := ParseLine(line)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		m := rules.NewModel()
		if cmd.Op == OpAppend && cmd.HasRule && cmd.Rule.Target.Kind != rules.TargetJump && cmd.Rule.Target.Kind != rules.TargetGoto {
			n, err := Apply(m, cmd)
			if err != nil {
				return
			}
			r := lastRule(n, cmd.Table, cmd.Chain)
			spec := RuleSpec(&r, false)
			words, err := Tokenize("-A " + cmd.Chain + spec)
			if err != nil {
				t.Fatalf("%q: saved form %q does not tokenize: %v", line, spec, err)
			}
			cmd2, err := parse(words, true, cmd.Table)
			if err != nil {
				t.Fatalf("%q: saved form %q does not parse: %v", line, spec, err)
			}
			if !rules.SameRule(r, cmd2.Rule) {
				t.Fatalf("%q: saved form %q parses to a different rule\n%+v\n%+v", line, spec, r, cmd2.Rule)
			}
			var b bytes.Buffer
			_ = WriteList(&b, n, cmd.Table, "", 0, ListOptions{Verbose: true})
			_ = WriteList(&b, n, cmd.Table, "", 0, ListOptions{Numeric: true})
			if _, err := rules.Compile(n, []string{"eth0"}, rules.Options{}); err != nil {
				t.Fatalf("%q: applied but does not compile: %v", line, err)
			}
		}
	})
}

// FuzzRestore: any file restores or fails with a line-numbered error;
// what restores saves and reloads to the same model.
func FuzzRestore(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.rules")
	for _, fn := range files {
		b, err := os.ReadFile(fn)
		if err == nil {
			f.Add(string(b))
		}
	}
	f.Add("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n")
	f.Add("*nat\n:x - [0:0]\n-A x -j SNAT --to-source 1.2.3.4\n-A PREROUTING -j x\nCOMMIT\n")
	f.Add("*nat\n:x - [0:0]\n-A x -j FULLCONENAT --to-source 1.2.3.4-1.2.3.9 --persistent\n-A POSTROUTING -p udp -j FULLCONENAT --to-ports 2000-3000 --random\n-A PREROUTING -j FULLCONENAT\nCOMMIT\n")
	f.Fuzz(func(t *testing.T, data string) {
		m, tabs, err := Restore(strings.NewReader(data), rules.NewModel(), RestoreOptions{Counters: true})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		var out bytes.Buffer
		if err := WriteSave(&out, m, SaveOptions{Tables: tabs, Counters: true}); err != nil {
			t.Fatal(err)
		}
		m2, _, err := Restore(strings.NewReader(out.String()), rules.NewModel(), RestoreOptions{Counters: true})
		if err != nil {
			t.Fatalf("saved form does not reload: %v\n%s", err, out.String())
		}
		if !m.Equal(m2) {
			t.Fatalf("reload differs:\n%s", out.String())
		}
		if _, err := rules.Compile(m, []string{"eth0", "lo"}, rules.Options{ClassifyMin: 1}); err != nil {
			t.Fatalf("restored but does not compile: %v", err)
		}
	})
}

// FuzzTokenize: quoting what Tokenize returns gives back the same words.
func FuzzTokenize(f *testing.F) {
	f.Add(`-A X -m comment --comment "a \"b\" c" -j ACCEPT`)
	f.Add(`'x y' z`)
	f.Fuzz(func(t *testing.T, line string) {
		words, err := Tokenize(line)
		if err != nil {
			return
		}
		var q []string
		for _, w := range words {
			q = append(q, quote(w))
		}
		again, err := Tokenize(strings.Join(q, " "))
		if err != nil || strings.Join(again, "\x00") != strings.Join(words, "\x00") || len(again) != len(words) {
			t.Fatalf("%q → %q → %q (%v)", line, words, again, err)
		}
	})
}
