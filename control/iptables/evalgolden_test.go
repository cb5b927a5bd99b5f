package iptables

import (
	"fmt"
	"strings"
	"testing"

	"xnat/dataplane/rules"
)

func ipv4(s string) uint32 {
	a, err := parseIP(s)
	if err != nil {
		panic(err)
	}
	return a
}

func compileLines(t *testing.T, ifaces []string, lines ...string) *rules.Ruleset {
	t.Helper()
	m := applyAll(t, rules.NewModel(), lines...)
	rs, err := rules.Compile(m, ifaces, rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestSeedEvaluation evaluates the seed documents' rule sets on sample
// packets (eth0 is the Internet side, eth1 the LAN).
func TestSeedEvaluation(t *testing.T) {
	ifaces := []string{"lo", "eth0", "eth1"}
	const eth0, eth1 = 1, 2

	t.Run("masquerade", func(t *testing.T) {
		rs := compileLines(t, ifaces, "iptables -t nat -A POSTROUTING -s 10.8.0.0/255.255.255.0 -o eth0 -j MASQUERADE")
		p := rules.Packet{Src: ipv4("10.8.0.7"), Dst: ipv4("8.8.8.8"), Proto: rules.ProtoTCP, InIf: eth1, OutIf: eth0, CtState: rules.CtNew}
		if d := rs.NAT(rules.Postrouting, &p, 0, 0); d.Kind != rules.NATMasquerade {
			t.Errorf("LAN → eth0: %v", d.Kind)
		}
		p.Src = ipv4("10.9.0.7")
		if d := rs.NAT(rules.Postrouting, &p, 0, 0); d.Kind != rules.NATNone {
			t.Errorf("other source: %v", d.Kind)
		}
		p.Src, p.OutIf = ipv4("10.8.0.7"), eth1
		if d := rs.NAT(rules.Postrouting, &p, 0, 0); d.Kind != rules.NATNone {
			t.Errorf("out eth1: %v", d.Kind)
		}
	})
	t.Run("snat ranges", func(t *testing.T) {
		rs := compileLines(t, ifaces,
			"iptables -t nat -A POSTROUTING -p tcp -o eth0 -j SNAT --to-source 194.236.50.155-194.236.50.160:1024-32000",
			"iptables -t nat -A POSTROUTING -s 10.8.0.0/255.255.255.0 -o eth0 -j SNAT --to-source 192.168.5.3-192.168.5.5")
		p := rules.Packet{Src: ipv4("10.8.0.7"), Dst: ipv4("8.8.8.8"), Proto: rules.ProtoTCP, SrcPort: 40000, DstPort: 443, OutIf: eth0}
		d := rs.NAT(rules.Postrouting, &p, 0, 0)
		want := rules.NATRange{MinAddr: ipv4("194.236.50.155"), MaxAddr: ipv4("194.236.50.160"), MinPort: 1024, MaxPort: 32000, Flags: rules.NATMapIPs | rules.NATProtoSpecified}
		if d.Kind != rules.NATSNAT || d.Range != want {
			t.Errorf("tcp: %+v", d)
		}
		p.Proto = rules.ProtoUDP
		d2 := rs.NAT(rules.Postrouting, &p, 0, 0)
		if d2.Kind != rules.NATSNAT || d2.Range.MinAddr != ipv4("192.168.5.3") || d2.Range.MaxAddr != ipv4("192.168.5.5") || d2.Range.Flags&rules.NATProtoSpecified != 0 {
			t.Errorf("udp: %+v", d2)
		}
		if d.Target == d2.Target {
			t.Error("two SNAT targets share an ID")
		}
	})
	t.Run("dnat backend range", func(t *testing.T) {
		rs := compileLines(t, ifaces, "iptables -t nat -A PREROUTING -p tcp -d 15.45.23.67 --dport 80 -j DNAT --to-destination 192.168.1.1-192.168.1.10:80-100")
		seen := map[uint32]int{}
		for sp := uint16(1000); sp < 3000; sp++ {
			p := rules.Packet{Src: ipv4("1.2.3.4"), Dst: ipv4("15.45.23.67"), Proto: rules.ProtoTCP, SrcPort: sp, DstPort: 80, InIf: eth0}
			d := rs.NAT(rules.Prerouting, &p, 0, 0)
			if d.Kind != rules.NATDNAT {
				t.Fatalf("not DNATed: %+v", d)
			}
			a, port := d.Pick(uint32(sp) * 0x9E3779B1)
			if a < ipv4("192.168.1.1") || a > ipv4("192.168.1.10") || port < 80 || port > 100 {
				t.Fatalf("backend %s:%d", rules.FormatIP(a), port)
			}
			seen[a]++
		}
		if len(seen) != 10 {
			t.Errorf("%d backends used", len(seen))
		}
		p := rules.Packet{Dst: ipv4("15.45.23.67"), Proto: rules.ProtoTCP, DstPort: 81}
		if d := rs.NAT(rules.Prerouting, &p, 0, 0); d.Kind != rules.NATNone {
			t.Errorf("port 81: %v", d.Kind)
		}
	})
	t.Run("mark then match", func(t *testing.T) {
		// The Kubernetes rules of the seed: PREROUTING marks service
		// traffic, POSTROUTING masquerades what is marked.
		rs := compileLines(t, ifaces,
			"iptables -t nat -N KUBE-MARK-MASQ", "iptables -t nat -N KUBE-SERVICES", "iptables -t nat -N KUBE-POSTROUTING",
			"iptables -t nat -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
			`iptables -t nat -A KUBE-SERVICES -d 172.30.80.38/32 -p tcp -m comment --comment "default/yscheduler-service: external IP" -m tcp --dport 8081 -j KUBE-MARK-MASQ`,
			`iptables -t nat -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -m mark --mark 0x4000/0x4000 -j MASQUERADE`,
			"iptables -t nat -A PREROUTING -j KUBE-SERVICES", "iptables -t nat -A POSTROUTING -j KUBE-POSTROUTING")
		p := rules.Packet{Src: ipv4("10.0.0.5"), Dst: ipv4("172.30.80.38"), Proto: rules.ProtoTCP, DstPort: 8081, Mark: 0x1}
		if d := rs.NAT(rules.Prerouting, &p, 0, 0); d.Kind != rules.NATNone || p.Mark != 0x4001 {
			t.Fatalf("PREROUTING: %v mark %#x", d.Kind, p.Mark)
		}
		if d := rs.NAT(rules.Postrouting, &p, 0, 0); d.Kind != rules.NATMasquerade {
			t.Errorf("marked: %v", d.Kind)
		}
		q := rules.Packet{Src: ipv4("10.0.0.5"), Dst: ipv4("172.30.80.38"), Proto: rules.ProtoTCP, DstPort: 8080}
		rs.NAT(rules.Prerouting, &q, 0, 0)
		if d := rs.NAT(rules.Postrouting, &q, 0, 0); d.Kind != rules.NATNone || q.Mark != 0 {
			t.Errorf("unmarked: %v mark %#x", d.Kind, q.Mark)
		}
	})
	t.Run("limit 6/m burst 5 and policy DROP", func(t *testing.T) {
		rs := compileLines(t, ifaces,
			"iptables -A FORWARD -p icmp -m limit --limit 6/m --limit-burst 5 -j ACCEPT", "iptables -P FORWARD DROP")
		var passed []int
		for s := 0; s < 31; s++ {
			p := rules.Packet{Proto: rules.ProtoICMP, ICMPType: 8, Length: 84}
			if rs.Filter(rules.Forward, &p, 0, int64(s)*1e9).Action == rules.Accept {
				passed = append(passed, s)
			}
		}
		if got := fmt.Sprint(passed); got != "[0 1 2 3 4 10 20 30]" {
			t.Errorf("pings passed at seconds %s, want [0 1 2 3 4 10 20 30]", got)
		}
		p := rules.Packet{Proto: rules.ProtoTCP}
		if rs.Filter(rules.Forward, &p, 0, 0).Action != rules.Drop {
			t.Error("tcp not dropped by the policy")
		}
	})
	t.Run("user chain with RETURN", func(t *testing.T) {
		rs := compileLines(t, ifaces,
			"iptables -N tcp_packets",
			"iptables -A tcp_packets -p tcp --dport 22 -j ACCEPT",
			"iptables -A tcp_packets -s 192.168.1.0/24 -j RETURN",
			"iptables -A tcp_packets -j REJECT --reject-with icmp-admin-prohibited",
			"iptables -A FORWARD -p tcp -j tcp_packets",
			"iptables -A FORWARD -s 192.168.1.0/24 -p tcp --dport 80 -j ACCEPT",
			"iptables -P FORWARD DROP")
		cases := []struct {
			src  string
			port uint16
			want rules.Verdict
		}{
			{"8.8.8.8", 22, rules.Verdict{Action: rules.Accept}},
			{"8.8.8.8", 80, rules.Verdict{Action: rules.Reject, Reject: rules.RejectAdminProhibited}},
			{"192.168.1.9", 80, rules.Verdict{Action: rules.Accept}},
			{"192.168.1.9", 443, rules.Verdict{Action: rules.Drop}},
		}
		for _, c := range cases {
			p := rules.Packet{Src: ipv4(c.src), Proto: rules.ProtoTCP, DstPort: c.port, Length: 60}
			if got := rs.Filter(rules.Forward, &p, 0, 0); got != c.want {
				t.Errorf("%s:%d: %v, want %v", c.src, c.port, got, c.want)
			}
		}
		rs.Flush(0)
		if c, _ := rs.PolicyCounters(rules.Filter, "FORWARD"); c != (rules.Counters{Packets: 1, Bytes: 60}) {
			t.Errorf("policy counters %+v", c)
		}
		if c, _ := rs.RuleCounters(rules.Filter, "tcp_packets", 1); c != (rules.Counters{Packets: 2, Bytes: 120}) {
			t.Errorf("RETURN rule counters %+v", c)
		}
		// counters appear in -L -v through the rule set's model
		var b strings.Builder
		if err := WriteList(&b, rs.Model(), rules.Filter, "FORWARD", 0, ListOptions{Numeric: true, Verbose: true}); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(b.String(), "Chain FORWARD (policy DROP 1 packets, 60 bytes)\n") || !strings.Contains(b.String(), "    4   240 tcp_packets  tcp") {
			t.Errorf("-L -v:\n%s", b.String())
		}
	})
	t.Run("reject tcp-reset and state", func(t *testing.T) {
		rs := compileLines(t, ifaces,
			"iptables -A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT",
			"iptables -A FORWARD -p TCP --dport 22 -j REJECT --reject-with tcp-reset")
		p := rules.Packet{Proto: rules.ProtoTCP, DstPort: 22, CtState: rules.CtNew}
		if v := rs.Filter(rules.Forward, &p, 0, 0); v != (rules.Verdict{Action: rules.Reject, Reject: rules.RejectTCPReset}) {
			t.Errorf("new ssh: %v", v)
		}
		p.CtState = rules.CtEstablished | rules.CtSNAT
		if v := rs.Filter(rules.Forward, &p, 0, 0); v.Action != rules.Accept {
			t.Errorf("established ssh: %v", v)
		}
	})
}
