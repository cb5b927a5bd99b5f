package iptables

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"xnat/dataplane/rules"
)

// seedRules are the iptables examples of the seed documents
// (shared/seeds), in the corrected form where the source has a typo, with
// the line iptables -S / iptables-save prints for them.
var seedRules = []struct {
	setup []string // commands run first (user chains)
	cmd   string
	save  string
}{
	{nil, "iptables -t nat -A POSTROUTING -j MASQUERADE", "-A POSTROUTING -j MASQUERADE"},
	{nil, "iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE", "-A POSTROUTING -o eth0 -j MASQUERADE"},
	{nil, "iptables -t nat -A POSTROUTING -s 10.8.0.0/255.255.255.0 -o eth0 -j SNAT --to-source 192.168.5.3",
		"-A POSTROUTING -s 10.8.0.0/24 -o eth0 -j SNAT --to-source 192.168.5.3"},
	{nil, "iptables -t nat -A POSTROUTING -s 10.8.0.0/255.255.255.0 -o eth0 -j SNAT --to-source 192.168.5.3-192.168.5.5",
		"-A POSTROUTING -s 10.8.0.0/24 -o eth0 -j SNAT --to-source 192.168.5.3-192.168.5.5"},
	{nil, "iptables -t nat -A POSTROUTING -s 10.8.0.0/255.255.255.0 -o eth0 -j MASQUERADE",
		"-A POSTROUTING -s 10.8.0.0/24 -o eth0 -j MASQUERADE"},
	{nil, "iptables -t nat -A POSTROUTING -p tcp -o eth0 -j SNAT --to-source 194.236.50.155-194.236.50.160:1024-32000",
		"-A POSTROUTING -o eth0 -p tcp -j SNAT --to-source 194.236.50.155-194.236.50.160:1024-32000"},
	{nil, "iptables -t nat -A PREROUTING -p tcp -d 15.45.23.67 --dport 80 -j DNAT --to-destination 192.168.1.1-192.168.1.10:80-100",
		"-A PREROUTING -d 15.45.23.67/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 192.168.1.1-192.168.1.10:80-100"},
	{nil, "iptables -t nat -A PREROUTING -p tcp -d 15.45.23.67 --dport 80 -j DNAT --to-destination 192.168.1.10",
		"-A PREROUTING -d 15.45.23.67/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 192.168.1.10"},
	{nil, "iptables -t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination 13.37.42.1:80",
		"-A PREROUTING -p tcp -m tcp --dport 80 -j DNAT --to-destination 13.37.42.1:80"},
	{nil, "iptables -t nat -A POSTROUTING -p TCP -j MASQUERADE --to-ports 1025", "-A POSTROUTING -p tcp -j MASQUERADE --to-ports 1025"},
	{nil, "iptables -t nat -A POSTROUTING -p TCP -j MASQUERADE --to-ports 1024-31000", "-A POSTROUTING -p tcp -j MASQUERADE --to-ports 1024-31000"},
	{[]string{"iptables -t nat -N KUBE-POSTROUTING"}, `iptables -t nat -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -m mark --mark 0x4000/0x4000 -j MASQUERADE`,
		`-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -m mark --mark 0x4000/0x4000 -j MASQUERADE`},
	{[]string{"iptables -t nat -N KUBE-MARK-MASQ"}, "iptables -t nat -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
		"-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"},
	{[]string{"iptables -t nat -N KUBE-MARK-MASQ", "iptables -t nat -N KUBE-SEP-4O42NEVCZU5SLG2F"},
		`iptables -t nat -A KUBE-SEP-4O42NEVCZU5SLG2F -s 172.16.65.3/32 -m comment --comment "default/yscheduler-service:" -j KUBE-MARK-MASQ`,
		`-A KUBE-SEP-4O42NEVCZU5SLG2F -s 172.16.65.3/32 -m comment --comment "default/yscheduler-service:" -j KUBE-MARK-MASQ`},
	{[]string{"iptables -t nat -N KUBE-MARK-MASQ", "iptables -t nat -N KUBE-SERVICES"},
		`iptables -t nat -A KUBE-SERVICES -d 172.30.80.38/32 -p tcp -m comment --comment "default/yscheduler-service: external IP" -m tcp --dport 8081 -j KUBE-MARK-MASQ`,
		`-A KUBE-SERVICES -d 172.30.80.38/32 -p tcp -m comment --comment "default/yscheduler-service: external IP" -m tcp --dport 8081 -j KUBE-MARK-MASQ`},
	{nil, "iptables -A INPUT -m state --state RELATED,ESTABLISHED", "-A INPUT -m state --state RELATED,ESTABLISHED"},
	{nil, "iptables -A FORWARD -p TCP --dport 22 -j REJECT --reject-with tcp-reset", "-A FORWARD -p tcp -m tcp --dport 22 -j REJECT --reject-with tcp-reset"},
	{nil, "iptables -A FORWARD -p tcp --dport 22 -j MARK --set-mark 2", "-A FORWARD -p tcp -m tcp --dport 22 -j MARK --set-xmark 0x2/0xffffffff"},
	{nil, "iptables -A INPUT -m mark --mark 1", "-A INPUT -m mark --mark 0x1"},
	{nil, `iptables -A INPUT -p tcp -j LOG --log-prefix "INPUT packets"`, `-A INPUT -p tcp -j LOG --log-prefix "INPUT packets"`},
	{nil, "iptables -A FORWARD -p tcp -j LOG --log-level debug", "-A FORWARD -p tcp -j LOG --log-level 7"},
	{nil, "iptables -A INPUT -p icmp -m limit --limit 6/m --limit-burst 5 -j ACCEPT", "-A INPUT -p icmp -m limit --limit 6/min -j ACCEPT"},
	{[]string{"iptables -N tcp_packets"}, "iptables -A INPUT -p tcp -j tcp_packets", "-A INPUT -p tcp -j tcp_packets"},
	{nil, "iptables -A INPUT -p tcp --sport 22", "-A INPUT -p tcp -m tcp --sport 22"},
	{nil, "iptables -A INPUT -p tcp --sport 22:80", "-A INPUT -p tcp -m tcp --sport 22:80"},
	{nil, "iptables -A INPUT -p tcp ! --sport 22", "-A INPUT -p tcp -m tcp ! --sport 22"},
	{nil, "iptables -A INPUT -p tcp ! --sport 22:80", "-A INPUT -p tcp -m tcp ! --sport 22:80"},
	{nil, "iptables -A INPUT -p udp --dport 53", "-A INPUT -p udp -m udp --dport 53"},
	{nil, "iptables -A INPUT -p tcp -m iprange --src-range 192.168.1.13-192.168.2.19", "-A INPUT -p tcp -m iprange --src-range 192.168.1.13-192.168.2.19"},
	{nil, "iptables -A INPUT -p tcp -m iprange ! --dst-range 192.168.1.13-192.168.2.19", "-A INPUT -p tcp -m iprange ! --dst-range 192.168.1.13-192.168.2.19"},
	{nil, "iptables -A INPUT -p tcp -m length --length 1400", "-A INPUT -p tcp -m length --length 1400"},
	{nil, "iptables -A INPUT -p tcp -m length --length 1400:1500", "-A INPUT -p tcp -m length --length 1400:1500"},
	{nil, "iptables -A INPUT -p tcp -m length ! --length 1400:1500", "-A INPUT -p tcp -m length ! --length 1400:1500"},
	{nil, "iptables -A INPUT -m mac --mac-source 00:00:00:00:00:01", "-A INPUT -m mac --mac-source 00:00:00:00:00:01"},
	{nil, "iptables -A INPUT -p tcp -m multiport --source-port 22,53,80,110", "-A INPUT -p tcp -m multiport --sports 22,53,80,110"},
	{nil, "iptables -A INPUT -p tcp -m multiport --destination-port 22,53,80,110", "-A INPUT -p tcp -m multiport --dports 22,53,80,110"},
	{nil, "iptables -A INPUT -p tcp -m multiport --port 22,53,80,110", "-A INPUT -p tcp -m multiport --ports 22,53,80,110"},
	{nil, "iptables -A INPUT -s 192.168.1.1", "-A INPUT -s 192.168.1.1/32"},
	{nil, "iptables -A INPUT -s 192.168.1.0/24", "-A INPUT -s 192.168.1.0/24"},
	{nil, "iptables -A INPUT -s ! 192.168.0.0/24", "-A INPUT ! -s 192.168.0.0/24"},
	{nil, "iptables -A INPUT -d 192.168.1.1", "-A INPUT -d 192.168.1.1/32"},
	{nil, "iptables -A INPUT -i eth0", "-A INPUT -i eth0"},
	{nil, "iptables -A INPUT -i eth+", "-A INPUT -i eth+"},
	{nil, "iptables -A INPUT -i ! eth0", "-A INPUT ! -i eth0"},
	{nil, "iptables -A FORWARD -o eth0", "-A FORWARD -o eth0"},
	{nil, "iptables -A INPUT -f", "-A INPUT -f"},
	{nil, "iptables -A INPUT ! -f", "-A INPUT ! -f"},
	{nil, "iptables -A INPUT -p tcp", "-A INPUT -p tcp"},
	{nil, "iptables -R INPUT 1 -s 192.168.0.1 -j DROP", "-A INPUT -s 192.168.0.1/32 -j DROP"},
	{nil, "iptables -I INPUT 1 -p tcp --dport 80 -j ACCEPT", "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT"},
}

// seedErrors are seed lines with a typo, or features xnat rejects: each
// must give an error naming the word, never a panic or acceptance.
var seedErrors = []struct {
	cmd, want string
}{
	{"iptables -t nat -A PREROUTING -p tcp –dport 80 -j DNAT –to-destination 13.37.42.1:80", `"–dport": it starts with a typographic dash`},
	{"iptables -t nat -A POSTROUTING -p tcp-o eth0 -j SNAT --to-source 194.236.50.155-194.236.50.160:1024-32000", `unknown protocol "tcp-o"`},
	{"iptables -t nat -A POSTROUTING -s 10.8.0.0/255.255.255.0 -o eth0 -j SNAT --to-source192.168.5.3", `unknown option "--to-source192.168.5.3"`},
	{"iptables -A INPUT -p tcp ! 22", `unexpected argument "22" after "!"`},
	{"iptables -A INPUT -p tcp ! 22:80", `unexpected argument "22:80" after "!"`},
	{"iptables -A INPUT -p tcp -sport 22:80", `unknown option "-sport"`},
	{"iptables-t nat -A POSTROUTING -s 10.8.0.0/255.255.255.0 -o eth0 -j MASQUERADE", `unknown command "iptables-t"`},
	{"iptables -t nat -A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080", `unknown target "REDIRECT": not supported by xnat`},
	{"iptables -t mangle -A PREROUTING -p tcp --dport 22 -j MARK --set-mark 2", `table "mangle": not supported by xnat`},
	{"iptables -t mangle -A INPUT -m mark --mark 1", `table "mangle": not supported by xnat`},
	{"iptables -D INPUT --dport 80 -j DROP", `unknown option "--dport" (port and flag matches need -p tcp or -p udp first)`},
	{"iptables -I INPUT 1 --dport 80 -j ACCEPT", `unknown option "--dport"`},
	{"iptables -A INPUT -p !tcp", `unknown protocol "!tcp"`},
	{"iptables -A FORWARD -j TPROXY --on-port 1", `unknown target "TPROXY": not supported by xnat`},
	{"iptables -t nat -A PREROUTING -j NETMAP --to 10.0.0.0/8", `unknown target "NETMAP": not supported by xnat`},
	{"iptables -t nat -A PREROUTING -j DROP", `"nat" table is not intended for filtering`},
	{"iptables -t nat -P PREROUTING DROP", `"nat" table is not intended for filtering`},
	{"iptables -t nat -A PREROUTING -j REJECT", `REJECT target: only valid in filter table`},
	{"iptables -A INPUT -m recent --set", `unknown match "recent": not supported by xnat`},
	{"iptables -A INPUT -s example.com", `host names are not supported by xnat`},
	{"iptables -A FORWARD -p udp -j REJECT --reject-with tcp-reset", `tcp-reset needs -p tcp`},
	{"iptables -t nat -A POSTROUTING -j SNAT", `SNAT needs --to-source`},
	{"iptables -t nat -A POSTROUTING -j SNAT --to-source 1.1.1.1:1025-65535", `port range needs -p tcp or -p udp`},
	{"iptables -A FORWARD -j LOG --log-tcp-sequence", `--log-tcp-sequence is not supported by xnat`},
	{"iptables -A FORWARD -m conntrack --ctorigsrc 1.2.3.4", `--ctorigsrc is not supported by xnat`},
	{"iptables -A OUTPUT -i eth0", `can't use -i with OUTPUT`},
	{"iptables -t nat -A PREROUTING -o eth0 -j ACCEPT", `can't use -o with PREROUTING`},
	{"iptables -A INPUT -p tcp --sport 80:22", `min > max`},
	{"iptables -A INPUT -m tcp --dport 1", `-m tcp needs -p tcp`},
	{"iptables -6 -A INPUT", `IPv6 (-6) is not supported by xnat`},
	{`iptables -A INPUT -m comment --comment "open`, `unterminated quoted string`},
}

func applyAll(t *testing.T, m *rules.Model, lines ...string) *rules.Model {
	t.Helper()
	for _, l := range lines {
		cmd, err := ParseLine(l)
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		if m, err = Apply(m, cmd); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
	}
	return m
}

func TestSeedRulesGolden(t *testing.T) {
	for _, g := range seedRules {
		m := applyAll(t, rules.NewModel(), g.setup...)
		if strings.HasPrefix(g.cmd, "iptables -R") {
			m = applyAll(t, m, "iptables -A INPUT -j ACCEPT")
		}
		m = applyAll(t, m, g.cmd)
		cmd, _ := ParseLine(g.cmd)
		var buf bytes.Buffer
		if err := WriteRules(&buf, m, cmd.Table, cmd.Chain, 0, false); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		got := lines[len(lines)-1]
		if got != g.save {
			t.Errorf("%s\n got  %s\n want %s", g.cmd, got, g.save)
			continue
		}
		// The printed form parses back to the same rule and prints identically.
		pre := "iptables "
		if cmd.Table == rules.NAT {
			pre += "-t nat "
		}
		m2 := applyAll(t, applyAll(t, rules.NewModel(), g.setup...), pre+g.save)
		r1 := lastRule(m, cmd.Table, cmd.Chain)
		r2 := lastRule(m2, cmd.Table, cmd.Chain)
		if !rules.SameRule(r1, r2) {
			t.Errorf("%s: reparsed rule differs:\n %+v\n %+v", g.save, r1, r2)
		}
	}
}

func lastRule(m *rules.Model, t rules.TableID, chain string) rules.Rule {
	c := m.Tables[t].Chains[m.Tables[t].Chain(chain)]
	return c.Rules[len(c.Rules)-1]
}

// wantRefused checks that line, parsed and applied to an empty model, is
// refused with an *Error whose text contains want.
func wantRefused(t *testing.T, line, want string) {
	t.Helper()
	cmd, err := ParseLine(line)
	if err == nil {
		_, err = Apply(rules.NewModel(), cmd)
	}
	if err == nil {
		t.Errorf("%s: accepted", line)
		return
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s:\n error %q\n want it to contain %q", line, err, want)
	}
	var ie *Error
	if !errors.As(err, &ie) {
		t.Errorf("%s: error %T is not *Error", line, err)
	}
}

func TestSeedErrors(t *testing.T) {
	for _, e := range seedErrors {
		wantRefused(t, e.cmd, e.want)
	}
	// Unsupported features are told apart with errors.Is.
	_, err := ParseLine("iptables -t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 8080")
	if !errors.Is(err, rules.ErrUnsupported) {
		t.Errorf("REDIRECT error %v does not wrap ErrUnsupported", err)
	}
}

// TestNormalisation checks rules against the form real iptables-save
// prints for them (iptables' own extension test expectations).
func TestNormalisation(t *testing.T) {
	cases := []struct{ table, in, out string }{
		{"filter", "-A INPUT -p tcp -m tcp --sport 1024:", "-A INPUT -p tcp -m tcp --sport 1024:65535"},
		{"filter", "-A INPUT -p tcp -m tcp --sport :", "-A INPUT -p tcp -m tcp"},
		{"filter", "-A INPUT -p tcp -m tcp ! --sport :", "-A INPUT -p tcp -m tcp ! --sport 0:65535"},
		{"filter", "-A INPUT -p tcp -m tcp --dport :4", "-A INPUT -p tcp -m tcp --dport 0:4"},
		{"filter", "-A INPUT -p tcp -m tcp --dport 4:4", "-A INPUT -p tcp -m tcp --dport 4"},
		{"filter", "-A INPUT -p tcp -m tcp --syn", "-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN"},
		{"filter", "-A INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,PSH,ACK,URG SYN", "-A INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,PSH,ACK,URG SYN"},
		{"filter", "-A INPUT -m tcp --dport 1 -p tcp", "-A INPUT -p tcp -m tcp --dport 1"},
		{"filter", "-A INPUT -m tcp --dport 1 -p 6", "-A INPUT -p tcp -m tcp --dport 1"},
		{"filter", "-A INPUT -m udp --dport 1 -p 17", "-A INPUT -p udp -m udp --dport 1"},
		{"filter", "-A INPUT -p tcp -m comment --comment foo -m tcp --dport 22", "-A INPUT -p tcp -m comment --comment foo -m tcp --dport 22"},
		{"filter", "-A INPUT -p icmp -m icmp --icmp-type echo-reply", "-A INPUT -p icmp -m icmp --icmp-type 0"},
		{"filter", "-A INPUT -p icmp -m icmp --icmp-type any", "-A INPUT -p icmp -m icmp --icmp-type any"},
		{"filter", "-A INPUT -p icmp -m icmp --icmp-type 255/0:255", "-A INPUT -p icmp -m icmp --icmp-type any"},
		{"filter", "-A INPUT -p icmp --icmp-type port-unreachable", "-A INPUT -p icmp -m icmp --icmp-type 3/3"},
		{"filter", "-A INPUT -m length --length :2", "-A INPUT -m length --length 0:2"},
		{"filter", "-A INPUT -m length --length 4:", "-A INPUT -m length --length 4:65535"},
		{"filter", "-A INPUT -m limit --limit 1/sec", "-A INPUT -m limit --limit 1/sec"},
		{"filter", "-A INPUT -m limit --limit 1000/hour", "-A INPUT -m limit --limit 1000/hour"},
		{"filter", "-A INPUT -m limit --limit 1000/day", "-A INPUT -m limit --limit 1000/day"},
		{"filter", "-A INPUT -m limit --limit 1/sec --limit-burst 1", "-A INPUT -m limit --limit 1/sec --limit-burst 1"},
		{"filter", "-A INPUT -m limit", "-A INPUT -m limit --limit 3/hour"},
		{"filter", "-A INPUT -m mark --mark 4294967295", "-A INPUT -m mark --mark 0xffffffff"},
		{"filter", "-A INPUT -m mark --mark 0x0/0xff0", "-A INPUT -m mark --mark 0x0/0xff0"},
		{"filter", "-A INPUT -m conntrack --ctstate SNAT,DNAT", "-A INPUT -m conntrack --ctstate SNAT,DNAT"},
		{"filter", "-A INPUT -m conntrack --ctstate ESTABLISHED,NEW,RELATED", "-A INPUT -m conntrack --ctstate NEW,RELATED,ESTABLISHED"},
		{"filter", "-A INPUT -m conntrack ! --ctstate INVALID", "-A INPUT -m conntrack ! --ctstate INVALID"},
		{"filter", "-A INPUT -m state --state NEW,RELATED", "-A INPUT -m state --state NEW,RELATED"},
		{"filter", "-A INPUT -m mac --mac-source 42:01:02:03:04:0a", "-A INPUT -m mac --mac-source 42:01:02:03:04:0A"},
		{"filter", "-A INPUT -p udp -m multiport --ports 53,1024:65535", "-A INPUT -p udp -m multiport --ports 53,1024:65535"},
		{"filter", "-A INPUT -j MARK --set-xmark 0x0", "-A INPUT -j MARK --set-xmark 0x0/0xffffffff"},
		{"filter", "-A INPUT -j MARK --set-xmark 4294967295", "-A INPUT -j MARK --set-xmark 0xffffffff/0xffffffff"},
		{"filter", "-A INPUT -j MARK --and-mark 0xff", "-A INPUT -j MARK --set-xmark 0x0/0xffffff00"},
		{"filter", "-A INPUT -j MARK --or-mark 0x4000", "-A INPUT -j MARK --set-xmark 0x4000/0x4000"},
		{"filter", "-A INPUT -j CONNMARK --restore-mark", "-A INPUT -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff"},
		{"filter", "-A INPUT -j CONNMARK --save-mark --nfmask 0xfffffff --ctmask 0xffffffff", "-A INPUT -j CONNMARK --save-mark --nfmask 0xfffffff --ctmask 0xffffffff"},
		{"filter", "-A INPUT -j CONNMARK --set-mark 0x1/0xff", "-A INPUT -j CONNMARK --set-xmark 0x1/0xff"},
		{"filter", "-A INPUT -j REJECT", "-A INPUT -j REJECT --reject-with icmp-port-unreachable"},
		{"filter", "-A INPUT -j REJECT --reject-with icmp-admin-prohibited", "-A INPUT -j REJECT --reject-with icmp-admin-prohibited"},
		{"filter", `-A INPUT -j LOG --log-prefix "test: " --log-level alert`, `-A INPUT -j LOG --log-prefix "test: " --log-level 1`},
		{"filter", "-A INPUT -j LOG --log-level warning", "-A INPUT -j LOG"},
		{"filter", "-A INPUT -s 10.1.2.3/8", "-A INPUT -s 10.0.0.0/8"},
		{"filter", "-A INPUT -s 10.0.0.0/255.0.255.0", "-A INPUT -s 10.0.0.0/255.0.255.0"},
		{"filter", "-A INPUT -i +", "-A INPUT"},
		{"filter", "-A INPUT -p 47", "-A INPUT -p gre"},
		{"filter", "-A INPUT -p GRE", "-A INPUT -p gre"},
		{"filter", "-A INPUT -p 0x32", "-A INPUT -p esp"},
		{"filter", "-A INPUT -p 253", "-A INPUT -p 253"},
		{"filter", "-A INPUT -p all", "-A INPUT"},
		{"filter", "-A INPUT --protocol=udp --destination-port=53", "-A INPUT -p udp -m udp --dport 53"},
		{"filter", "-A INPUT -p tcp --dport ssh", "-A INPUT -p tcp -m tcp --dport 22"},
		{"nat", "-A PREROUTING -j DNAT --to-destination 1.1.1.1-1.1.1.10", "-A PREROUTING -j DNAT --to-destination 1.1.1.1-1.1.1.10"},
		{"nat", "-A PREROUTING -p tcp -j DNAT --to-destination 1.1.1.1:ssh", "-A PREROUTING -p tcp -j DNAT --to-destination 1.1.1.1:22"},
		{"nat", "-A POSTROUTING -j SNAT --to-source 1.1.1.1 --random --random-fully --persistent", "-A POSTROUTING -j SNAT --to-source 1.1.1.1 --random --random-fully --persistent"},
		{"nat", "-A POSTROUTING -j MASQUERADE --random-fully", "-A POSTROUTING -j MASQUERADE --random-fully"},
		{"nat", "-A POSTROUTING -p udp -j MASQUERADE --to-ports 1024-65535", "-A POSTROUTING -p udp -j MASQUERADE --to-ports 1024-65535"},
		{"nat", "-A PREROUTING -j DNAT --to 10.0.0.1", "-A PREROUTING -j DNAT --to-destination 10.0.0.1"},
	}
	for _, c := range cases {
		pre := "iptables "
		if c.table == "nat" {
			pre += "-t nat "
		}
		m := applyAll(t, rules.NewModel(), pre+c.in)
		cmd, _ := ParseLine(pre + c.in)
		r := lastRule(m, cmd.Table, cmd.Chain)
		if got := "-A " + cmd.Chain + RuleSpec(&r, false); got != c.out {
			t.Errorf("%s\n got  %s\n want %s", c.in, got, c.out)
		}
	}
	bad := []string{
		"-A INPUT -p tcp -m tcp --sport 65536", "-A INPUT -p tcp -m tcp --dport -1", "-A INPUT -p tcp -m tcp --sport 4:3",
		"-A INPUT -m mac --mac-source 42:01:02:03:04", "-A INPUT -m mac --mac-source 42:01:02:03:04:05:06", "-A INPUT -m mac",
		"-A INPUT -m mark --mark 4294967296", "-A INPUT -m mark --mark -1", "-A INPUT -m length --length 0:65536",
		"-A INPUT -m length --length 4:3", "-A INPUT -m conntrack --ctstate wrong", "-A INPUT -m state wrong", "-A INPUT -m comment",
		"-A INPUT -m comment --comment", "-A INPUT -j MARK", "-A INPUT -j MARK --set-xmark 4294967296", "-A INPUT -j CONNMARK",
		"-A INPUT -j LOG --log-level bad", "-A INPUT -j LOG --log-prefix", "-A INPUT -m icmp", "-A INPUT -p tcp -m multiport --sports 1024:65536",
		"-A INPUT -p tcp -m multiport --ports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", "-A INPUT -p tcp --multiport", "-A INPUT -m multiport",
		"-A INPUT -m comment --comment " + strings.Repeat("x", 256),
	}
	for _, b := range bad {
		if _, err := ParseLine("iptables " + b); err == nil {
			t.Errorf("%s: accepted", b)
		}
	}
	if _, err := ParseLine("iptables -A INPUT -m comment --comment " + strings.Repeat("x", 255)); err != nil {
		t.Errorf("255-character comment: %v", err)
	}
}

// TestListFormat compares -L output with iptables' own test expectation
// (legacy and nft agree on it) and the -n/-v/-x/--line-numbers variants.
func TestListFormat(t *testing.T) {
	m := applyAll(t, rules.NewModel(),
		"iptables -A FORWARD -i eth2 -o eth3 -s 10.0.0.1 -d 10.0.0.2 -j ACCEPT",
		"iptables -I FORWARD 2 -i eth2 -o eth3 -s 10.0.0.4 -d 10.0.0.5 -j ACCEPT")
	want := `Chain INPUT (policy ACCEPT 0 packets, 0 bytes)
 pkts bytes target     prot opt in     out     source               destination

Chain FORWARD (policy ACCEPT 0 packets, 0 bytes)
 pkts bytes target     prot opt in     out     source               destination
    0     0 ACCEPT     all  --  eth2   eth3    10.0.0.1             10.0.0.2
    0     0 ACCEPT     all  --  eth2   eth3    10.0.0.4             10.0.0.5

Chain OUTPUT (policy ACCEPT 0 packets, 0 bytes)
 pkts bytes target     prot opt in     out     source               destination
`
	var buf bytes.Buffer
	if err := WriteList(&buf, m, rules.Filter, "", 0, ListOptions{Numeric: true, Verbose: true}); err != nil {
		t.Fatal(err)
	}
	if got := trimRight(buf.String()); got != want {
		t.Errorf("-L -n -v:\n%s\nwant:\n%s", got, want)
	}
	m = applyAll(t, rules.NewModel(),
		"iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE",
		"iptables -t nat -A PREROUTING -p tcp -d 15.45.23.67 --dport 80 -j DNAT --to-destination 192.168.1.1-192.168.1.10:80-100",
		`iptables -t nat -A POSTROUTING -m comment --comment "k8s snat" -m mark --mark 0x4000/0x4000 -j MASQUERADE`,
		"iptables -t nat -A POSTROUTING -p tcp -j MASQUERADE --to-ports 1024-31000 --random",
		"iptables -t nat -A POSTROUTING -s 10.8.0.0/24 -j SNAT --to-source 192.168.5.3-192.168.5.5 --persistent",
	)
	m.Tables[rules.NAT].Chains[3].Rules[0].Counters = rules.Counters{Packets: 123456, Bytes: 98765432}
	buf.Reset()
	if err := WriteList(&buf, m, rules.NAT, "POSTROUTING", 0, ListOptions{Numeric: true, Verbose: true, LineNumbers: true}); err != nil {
		t.Fatal(err)
	}
	want = `Chain POSTROUTING (policy ACCEPT 0 packets, 0 bytes)
num   pkts bytes target     prot opt in     out     source               destination
1     123K   99M MASQUERADE  all  --  *      eth0    0.0.0.0/0            0.0.0.0/0
2        0     0 MASQUERADE  all  --  *      *       0.0.0.0/0            0.0.0.0/0            /* k8s snat */ mark match 0x4000/0x4000
3        0     0 MASQUERADE  tcp  --  *      *       0.0.0.0/0            0.0.0.0/0            masq ports: 1024-31000 random
4        0     0 SNAT       all  --  *      *       10.8.0.0/24          0.0.0.0/0            to:192.168.5.3-192.168.5.5 persistent
`
	if got := trimRight(buf.String()); got != want {
		t.Errorf("-L -n -v --line-numbers:\n%s\nwant:\n%s", got, want)
	}
	buf.Reset()
	WriteList(&buf, m, rules.NAT, "PREROUTING", 0, ListOptions{Numeric: true})
	want = `Chain PREROUTING (policy ACCEPT)
target     prot opt source               destination
DNAT       tcp  --  0.0.0.0/0            15.45.23.67          tcp dpt:80 to:192.168.1.1-192.168.1.10:80-100
`
	if got := trimRight(buf.String()); got != want {
		t.Errorf("-L -n:\n%s\nwant:\n%s", got, want)
	}
	buf.Reset()
	WriteList(&buf, m, rules.NAT, "POSTROUTING", 1, ListOptions{Numeric: true, Verbose: true, Exact: true})
	if got, want := trimRight(buf.String()), "  123456 98765432 MASQUERADE  all  --  *      eth0    0.0.0.0/0            0.0.0.0/0\n"; got != want {
		t.Errorf("-L -v -x -n POSTROUTING 1:\n%q\nwant\n%q", got, want)
	}
	// Without -n: anywhere, service names, interface "any".
	m = applyAll(t, rules.NewModel(),
		"iptables -A FORWARD -p tcp --dport 22 -j ACCEPT",
		"iptables -A FORWARD -p icmp --icmp-type echo-request -j ACCEPT",
		"iptables -A FORWARD -p tcp --syn -m limit --limit 6/m -j LOG --log-prefix FWD",
		"iptables -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"iptables -A FORWARD -j REJECT")
	buf.Reset()
	WriteList(&buf, m, rules.Filter, "FORWARD", 0, ListOptions{})
	want = `Chain FORWARD (policy ACCEPT)
target     prot opt source               destination
ACCEPT     tcp  --  anywhere             anywhere             tcp dpt:ssh
ACCEPT     icmp --  anywhere             anywhere             icmp echo-request
LOG        tcp  --  anywhere             anywhere             tcp flags:FIN,SYN,RST,ACK/SYN limit: avg 6/min burst 5 LOG level warning prefix "FWD"
ACCEPT     all  --  anywhere             anywhere             ctstate RELATED,ESTABLISHED
REJECT     all  --  anywhere             anywhere             reject-with icmp-port-unreachable
`
	if got := trimRight(buf.String()); got != want {
		t.Errorf("-L:\n%s\nwant:\n%s", got, want)
	}
	buf.Reset()
	WriteList(&buf, m, rules.Filter, "FORWARD", 2, ListOptions{Numeric: true})
	if got := trimRight(buf.String()); got != "ACCEPT     icmp --  0.0.0.0/0            0.0.0.0/0            icmptype 8\n" {
		t.Errorf("-L -n FORWARD 2: %q", got)
	}
}

func trimRight(s string) string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	return strings.Join(lines, "\n")
}

func TestListRulesFormat(t *testing.T) {
	m := applyAll(t, rules.NewModel(),
		"iptables -N tcp_packets", "iptables -P INPUT DROP",
		"iptables -A INPUT -p tcp -j tcp_packets", "iptables -A tcp_packets -p tcp --dport 22 -j ACCEPT",
		"iptables -A tcp_packets -j RETURN", "iptables -A FORWARD -g tcp_packets")
	m.Tables[rules.Filter].Chains[0].Rules[0].Counters = rules.Counters{Packets: 3, Bytes: 180}
	var buf bytes.Buffer
	WriteRules(&buf, m, rules.Filter, "", 0, false)
	want := `-P INPUT DROP
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N tcp_packets
-A INPUT -p tcp -j tcp_packets
-A FORWARD -g tcp_packets
-A tcp_packets -p tcp -m tcp --dport 22 -j ACCEPT
-A tcp_packets -j RETURN
`
	if buf.String() != want {
		t.Errorf("-S:\n%s\nwant:\n%s", buf.String(), want)
	}
	buf.Reset()
	WriteRules(&buf, m, rules.Filter, "INPUT", 0, true)
	if want := "-P INPUT DROP -c 0 0\n-A INPUT -p tcp -c 3 180 -j tcp_packets\n"; buf.String() != want {
		t.Errorf("-S INPUT -v:\n%q\nwant %q", buf.String(), want)
	}
	buf.Reset()
	WriteList(&buf, m, rules.Filter, "FORWARD", 0, ListOptions{Numeric: true})
	if !strings.Contains(buf.String(), "tcp_packets  all  --  0.0.0.0/0            0.0.0.0/0           [goto] ") {
		t.Errorf("goto listing: %q", buf.String())
	}
	buf.Reset()
	WriteList(&buf, m, rules.Filter, "tcp_packets", 0, ListOptions{Numeric: true})
	if !strings.HasPrefix(buf.String(), "Chain tcp_packets (2 references)\n") {
		t.Errorf("user chain header: %q", buf.String())
	}
}

// TestRestoreNilBase: restoring onto no model starts from an empty one.
func TestRestoreNilBase(t *testing.T) {
	m, tables, err := Restore(strings.NewReader("*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n"), nil, RestoreOptions{})
	if err != nil || m == nil || len(tables) != 1 {
		t.Fatalf("Restore onto nil: %v %v %v", m, tables, err)
	}
}
