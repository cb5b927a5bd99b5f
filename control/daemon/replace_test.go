package daemon

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"xnat/control/iptables"
	"xnat/dataplane/rules"
)

// TestRulesReplacedUnderTraffic: a UDP flow and a TCP connection keep
// working, with the same translation, while the rule set is replaced 50
// times; the counters of a rule present in every set carry over (its
// count ends equal to the packets it saw); a rules file that does not parse
// leaves the rules in force; a reload replaces every table, the ones the
// file does not name included.
func TestRulesReplacedUnderTraffic(t *testing.T) {
	const withFilter = baseRules + "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -p udp -j ACCEPT\nCOMMIT\n"
	b := newBed(t, bedOpts{rules: withFilter})
	m1 := b.d.Rules()
	cmd, err := iptables.ParseLine("-A FORWARD -p tcp -j ACCEPT")
	must(t, err)
	m2, err := iptables.Apply(m1, cmd)
	must(t, err)

	udpEcho(t, b.sv, ipSrv, 7000)
	tcpServer(t, b.sv, ipSrv, 9000)
	u := udpDial(t, b.insB, &net.UDPAddr{IP: ipB, Port: 5000}, &net.UDPAddr{IP: ipSrv, Port: 7000})
	c, err := tcpDial(t, b.insA, fmtAddr(ipSrv, 9000), 2*time.Second)
	must(t, err)

	const replacements = 50
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range replacements {
			m := m1
			if i%2 == 0 {
				m = m2
			}
			if err := b.d.ReplaceRules(m); err != nil {
				errc <- err
				return
			}
			select {
			case <-stop:
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	const exchanges = 150
	seenAs := ""
	for i := range exchanges {
		got, err := ask(u, "x", 1)
		if err != nil {
			close(stop)
			t.Fatalf("UDP exchange %d during replacements: %v", i, err)
		}
		from, _, _ := strings.Cut(got, "|")
		if seenAs == "" {
			seenAs = from
		} else if from != seenAs {
			t.Fatalf("UDP flow seen as %s, then %s", seenAs, from)
		}
		if err := roundTrip(c, []byte("tcp during replacements")); err != nil {
			t.Fatalf("TCP exchange %d during replacements: %v", i, err)
		}
	}
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	s := b.d.Stats()
	if s.RuleReplacements != replacements {
		t.Fatalf("%d replacements counted, want %d", s.RuleReplacements, replacements)
	}
	if s.Conns != 2 || s.Table.Insert != 2 {
		t.Fatalf("%d connections, %d inserted; want the same 2 throughout", s.Conns, s.Table.Insert)
	}
	// Every UDP packet (request and answer) passed the udp rule once.
	var last rules.Counters
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err := b.d.Dataplane().Env().Rules.RuleCounters(rules.Filter, "FORWARD", 0)
		must(t, err)
		last = got
		if got.Packets == 2*exchanges {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("udp rule counted %d packets, want %d", last.Packets, 2*exchanges)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// A broken file is refused; the rules in force stay.
	must(t, writeFile(b.rulesFile, "*filter\n-A FORWARD -j NOSUCHTARGET\nCOMMIT\n"))
	if err := b.d.ReloadRules(); err == nil {
		t.Fatal("a broken rules file was accepted")
	}
	if got, want := saveText(t, b.d.Rules()), saveText(t, m1); got != want {
		t.Fatalf("the rules changed after a failed reload:\n%s\nwant\n%s", got, want)
	}
	if got, err := ask(u, "after", 1); err != nil || !strings.HasPrefix(got, seenAs) {
		t.Fatalf("after the failed reload: %q, %v", got, err)
	}

	// The file is the whole rule set: reloading one that names only the
	// nat table empties the filter table (a change made meanwhile
	// through the API goes too), as a restart with that file would.
	must(t, b.d.ReplaceRules(m2))
	must(t, writeFile(b.rulesFile, baseRules))
	must(t, b.d.ReloadRules())
	fresh, err := ParseRules([]byte(baseRules))
	must(t, err)
	if got, want := saveText(t, b.d.Rules()), saveText(t, fresh); got != want {
		t.Fatalf("after reloading a nat-only file:\n%s\nwant\n%s", got, want)
	}
}

func saveText(t *testing.T, m *rules.Model) string {
	var sb strings.Builder
	must(t, iptables.WriteSave(&sb, m, iptables.SaveOptions{}))
	return sb.String()
}

// TestStop: Stop detaches every XDP program and closes the sockets; a
// stopped daemon refuses changes; Stop twice is harmless.
func TestStop(t *testing.T) {
	b := newBed(t, bedOpts{})
	attached := func() (n int) {
		for _, l := range []string{"x0a", "x0b", "x1"} {
			link, err := b.x.Link(l)
			must(t, err)
			if x := link.Attrs().Xdp; x != nil && x.Attached {
				n++
			}
		}
		return n
	}
	if n := attached(); n != 3 {
		t.Fatalf("%d interfaces with XDP while running, want 3", n)
	}
	must(t, b.d.Stop())
	if n := attached(); n != 0 {
		t.Fatalf("%d interfaces still with XDP after Stop", n)
	}
	for q, ss := range b.d.Stats().Sockets {
		if len(ss) != 0 {
			t.Fatalf("queue %d: %d sockets still answer after Stop", q, len(ss))
		}
	}
	if err := b.d.ReplaceRules(rules.NewModel()); !errors.Is(err, ErrStopped) {
		t.Fatalf("ReplaceRules after Stop: %v, want ErrStopped", err)
	}
	must(t, b.d.Stop())
}
