package iptables

import (
	"bytes"
	"strings"
	"testing"

	"xnat/dataplane/rules"
)

// fullConeRules are FULLCONENAT rules with the line iptables -S prints for
// them with the xt_FULLCONENAT extension, and the target column of -L.
var fullConeRules = []struct {
	cmd, save, list string
}{
	{"iptables -t nat -A POSTROUTING -o eth0 -j FULLCONENAT",
		"-A POSTROUTING -o eth0 -j FULLCONENAT", "FULLCONENAT  all  --  0.0.0.0/0            0.0.0.0/0"},
	{"iptables -t nat -A PREROUTING -i eth0 -j FULLCONENAT",
		"-A PREROUTING -i eth0 -j FULLCONENAT", "FULLCONENAT  all  --  0.0.0.0/0            0.0.0.0/0"},
	{"iptables -t nat -A POSTROUTING -o eth0 -j FULLCONENAT --to-source 198.51.100.1",
		"-A POSTROUTING -o eth0 -j FULLCONENAT --to-source 198.51.100.1", "to:198.51.100.1"},
	{"iptables -t nat -A POSTROUTING -o eth0 -j FULLCONENAT --persistent --to-source 198.51.100.1-198.51.100.4",
		"-A POSTROUTING -o eth0 -j FULLCONENAT --to-source 198.51.100.1-198.51.100.4 --persistent", "to:198.51.100.1-198.51.100.4 persistent"},
	{"iptables -t nat -A POSTROUTING -p udp -o eth0 -j FULLCONENAT --random --to-ports 20000-30000",
		"-A POSTROUTING -o eth0 -p udp -j FULLCONENAT --to-ports 20000-30000 --random", "masq ports: 20000-30000 random"},
	{"iptables -t nat -A POSTROUTING -p tcp -j FULLCONENAT --to-ports 4000 --random-fully --to-source 198.51.100.9",
		"-A POSTROUTING -p tcp -j FULLCONENAT --to-source 198.51.100.9 --to-ports 4000 --random-fully", "to:198.51.100.9 masq ports: 4000 random-fully"},
}

func TestFullConeSyntax(t *testing.T) {
	for _, g := range fullConeRules {
		m := applyAll(t, rules.NewModel(), g.cmd)
		cmd, _ := ParseLine(g.cmd)
		var buf bytes.Buffer
		if err := WriteRules(&buf, m, rules.NAT, cmd.Chain, 0, false); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if got := lines[len(lines)-1]; got != g.save {
			t.Errorf("%s\n got  %s\n want %s", g.cmd, got, g.save)
			continue
		}
		m2 := applyAll(t, rules.NewModel(), "iptables -t nat "+g.save)
		if r1, r2 := lastRule(m, rules.NAT, cmd.Chain), lastRule(m2, rules.NAT, cmd.Chain); !rules.SameRule(r1, r2) {
			t.Errorf("%s: reparsed rule differs:\n %+v\n %+v", g.save, r1, r2)
		}
		buf.Reset()
		if err := WriteList(&buf, m, rules.NAT, cmd.Chain, 0, ListOptions{Numeric: true}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), g.list) {
			t.Errorf("%s: -L -n\n%s\nlacks %q", g.cmd, buf.String(), g.list)
		}
		// iptables-save and iptables-restore: the whole table round-trips.
		var save bytes.Buffer
		if err := WriteSave(&save, m, SaveOptions{Tables: []rules.TableID{rules.NAT}}); err != nil {
			t.Fatal(err)
		}
		m3, _ := restoreString(t, save.String(), RestoreOptions{})
		if !m.Equal(m3) {
			t.Errorf("%s: iptables-save | iptables-restore changed the model:\n%s", g.cmd, save.String())
		}
		if _, err := rules.Compile(m, []string{"lo", "eth0"}, rules.Options{}); err != nil {
			t.Errorf("%s: compile: %v", g.cmd, err)
		}
	}
}

func TestFullConeErrors(t *testing.T) {
	for _, e := range []struct{ cmd, want string }{
		{"iptables -t nat -A POSTROUTING -j FULLCONENAT --to-destination 1.2.3.4", `unknown option "--to-destination"`},
		{"iptables -t nat -A POSTROUTING -j FULLCONENAT --nat-type 1", `unknown option "--nat-type"`},
		{"iptables -t nat -A POSTROUTING -j FULLCONENAT --to-source 1.2.3.4:1000", `--to-source takes addresses only`},
		{"iptables -t nat -A POSTROUTING -j FULLCONENAT --to-source 1.2.3.9-1.2.3.4", `reversed`},
		{"iptables -t nat -A POSTROUTING -j FULLCONENAT --to-source nowhere", `nowhere`},
		{"iptables -t nat -A POSTROUTING -j FULLCONENAT --to-ports 1000", `port range needs -p tcp or -p udp`},
		{"iptables -t nat -A POSTROUTING -p udp -j FULLCONENAT --to-ports 2000-1000", `2000-1000`},
		{"iptables -t nat -A POSTROUTING -j FULLCONENAT --persistent", `--persistent goes with --to-source`},
		{"iptables -A FORWARD -j FULLCONENAT", `only valid in nat table`},
		{"iptables -t nat -A INPUT -j FULLCONENAT", `FULLCONENAT`},
		{"iptables -t nat -A POSTROUTING -j FULLCONENAT --to-source", `--to-source`},
	} {
		wantRefused(t, e.cmd, e.want)
	}
}
