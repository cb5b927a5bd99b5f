package iptables

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"xnat/dataplane/rules"
)

// protoModel is FORWARD with "-p N -j ACCEPT" for every N, then
// "! -p 47 -j DROP": the rules the golden files were made from.
func protoModel(t *testing.T) *rules.Model {
	t.Helper()
	var lines []string
	for n := range 256 {
		lines = append(lines, fmt.Sprintf("iptables -A FORWARD -p %d -j ACCEPT", n))
	}
	lines = append(lines, "iptables -A FORWARD ! -p 47 -j DROP")
	return applyAll(t, rules.NewModel(), lines...)
}

func goldenLines(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func compareLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d lines, want %d", what, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s line %d:\n got  %q\n want %q", what, i+1, got[i], want[i])
		}
	}
}

// TestProtocolNamesGolden: the -p of every protocol number as
// iptables-save, -S and -L print it. The golden files are what iptables
// 1.8.9 (legacy and nft alike) printed on a Debian system with netbase's
// /etc/protocols for these rules.
func TestProtocolNamesGolden(t *testing.T) {
	m := protoModel(t)
	wantSave := goldenLines(t, "protocols-save.golden")

	var buf bytes.Buffer
	if err := WriteSave(&buf, m, SaveOptions{Tables: []rules.TableID{rules.Filter}}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.HasPrefix(l, "-A FORWARD") {
			got = append(got, l)
		}
	}
	compareLines(t, "iptables-save", got, wantSave)

	buf.Reset()
	if err := WriteRules(&buf, m, rules.Filter, "FORWARD", 0, false); err != nil {
		t.Fatal(err)
	}
	got = strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")[1:] // after -P FORWARD
	compareLines(t, "-S", got, wantSave)

	buf.Reset()
	if err := WriteList(&buf, m, rules.Filter, "FORWARD", 0, ListOptions{}); err != nil {
		t.Fatal(err)
	}
	got = strings.Split(strings.TrimSuffix(trimRight(buf.String()), "\n"), "\n")[2:] // after the two header lines
	compareLines(t, "-L", got, goldenLines(t, "protocols-list.golden"))

	// Every saved line reads back as the rule it came from.
	back := rules.NewModel()
	for _, l := range wantSave {
		back = applyAll(t, back, "iptables "+l)
	}
	if !back.Equal(m) {
		var b1, b2 bytes.Buffer
		WriteRules(&b1, m, rules.Filter, "FORWARD", 0, false)
		WriteRules(&b2, back, rules.Filter, "FORWARD", 0, false)
		t.Errorf("save lines read back differ:\n%s\n----\n%s", b2.String(), b1.String())
	}
}

// TestProtocolNamesNumeric: -L -n prints only iptables' built-in names
// and numbers for the rest (the database is not consulted under -n).
// iptables 1.8.9 printed every protocol as a number under -n; later
// releases print these names again, and so does xnat.
func TestProtocolNamesNumeric(t *testing.T) {
	m := protoModel(t)
	var buf bytes.Buffer
	if err := WriteList(&buf, m, rules.Filter, "FORWARD", 0, ListOptions{Numeric: true}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(trimRight(buf.String()), "\n")[2:]
	want := map[int]string{
		0: "all ", 1: "icmp", 4: "4   ", 6: "tcp ", 17: "udp ", 33: "dccp", 41: "41  ", 47: "47  ",
		50: "esp ", 51: "ah  ", 58: "ipv6-icmp", 89: "89  ", 108: "ipcomp", 112: "112 ", 132: "sctp",
		135: "mobility-header", 136: "udplite", 253: "253 ",
	}
	for n, name := range want {
		if w := "ACCEPT     " + name + " --  0.0.0.0/0            0.0.0.0/0"; lines[n] != w {
			t.Errorf("-L -n, protocol %d:\n got  %q\n want %q", n, lines[n], w)
		}
	}
	if w := "DROP      !47   --  0.0.0.0/0            0.0.0.0/0"; lines[256] != w {
		t.Errorf("-L -n, ! -p 47:\n got  %q\n want %q", lines[256], w)
	}
}

// TestParseProto: -p takes what iptables takes (checked against iptables
// 1.8.9 with /etc/protocols present).
func TestParseProto(t *testing.T) {
	good := map[string]uint8{
		"tcp": 6, "TCP": 6, "Tcp": 6, "udp": 17, "icmp": 1, "gre": 47, "GRE": 47, "Gre": 47,
		"icmpv6": 58, "ipv6-icmp": 58, "mh": 135, "ipv6-mh": 135, "mobility-header": 135,
		"dccp": 33, "ipcomp": 108, "all": 0, "ALL": 0, "0": 0, "00": 0, "0x0": 0,
		"010": 8, "0x2F": 47, "0x2f": 47, " 47": 47, "+47": 47, "47": 47, "255": 255,
		"hopopt": 0, "ip": 0, "IP": 0, "ipv6-route": 43, "ax.25": 93, "esp": 50, "ah": 51,
		"sctp": 132, "udplite": 136, "ipv6": 41, "ipencap": 4, "ospf": 89, "vrrp": 112,
		"l2tp": 115, "pim": 103, "isis": 124, "ipip": 94, "mpls-in-ip": 137, "ethernet": 143,
	}
	for s, want := range good {
		got, err := parseProto(s)
		if err != nil || got != want {
			t.Errorf("parseProto(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"256", "-1", "", "47 ", "ip-encap", "IP-ENCAP", "mptcp", "262", "08", "0x", "0x100", "1_0", "0b1", "+", "tcpx"} {
		if n, err := parseProto(s); err == nil {
			t.Errorf("parseProto(%q) = %d, accepted", s, n)
		} else if !strings.Contains(err.Error(), "unknown protocol") {
			t.Errorf("parseProto(%q): %v", s, err)
		}
	}
	// Every name printed parses back to its number.
	for n := range 256 {
		for _, numeric := range []bool{false, true} {
			if name := protoName(uint8(n), numeric); name != "" {
				if got, err := parseProto(name); err != nil || got != uint8(n) {
					t.Errorf("protocol %d printed %q parses as %d, %v", n, name, got, err)
				}
			}
		}
	}
}
