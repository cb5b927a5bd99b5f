package ha

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"xnat/flowtable"
	"xnat/internal/netns"
)

// TestLinkLoss runs two xnat links over a veth pair whose both ends drop
// 10% of the sync datagrams (lossySyncLink): connections come, change and
// go on the primary, and once the load ends FTFW has brought the backup's
// cache to the primary's table.
func TestLinkLoss(t *testing.T) {
	pa, pb := syncLink(t, "a", "b")
	lossySyncLink(t, pa, "s0")
	lossySyncLink(t, pb, "s1")
	primary := &recorder{cache: NewCache()}
	backup := &recorder{cache: NewCache()}
	la := openLink(t, pa, "10.9.0.1", "10.9.0.2", "s0", primary)
	lb := openLink(t, pb, "10.9.0.2", "10.9.0.1", "s1", backup)

	rng := rand.New(rand.NewPCG(1, 2))
	table := map[flowtable.Tuple]Conn{}
	for round := range 100 {
		for range 50 {
			i := rng.IntN(2000)
			c := conn(i)
			k := c.Orig()
			_, live := table[k]
			typ := TypeNew
			switch {
			case !live:
				table[k] = c
			case rng.IntN(3) == 0:
				typ = TypeDelete
				delete(table, k)
			default:
				typ = TypeUpdate
				c.Status |= IPSSeenReply | IPSAssured
				c.Timeout = uint32(round)
				table[k] = c
			}
			la.Send(typ, &c)
		}
		if err := la.Flush(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	primary.mu.Lock()
	for _, c := range table {
		primary.table = append(primary.table, c)
	}
	primary.mu.Unlock()

	waitFor(t, "the backup's cache to equal the primary's table", func() (bool, string) {
		var diff strings.Builder
		if n := backup.cache.Len(); n != len(table) {
			fmt.Fprintf(&diff, "backup holds %d, primary %d\n", n, len(table))
		}
		for k, v := range table {
			if got, ok := backup.cache.Get(k); !ok || got != v {
				fmt.Fprintf(&diff, "%v: backup %v %+v\n", k, ok, got)
				break
			}
		}
		return diff.Len() == 0, diff.String()
	})
	waitFor(t, "every message acknowledged", func() (bool, string) {
		st := la.Stats()
		return st.Unacked == 0, fmt.Sprintf("%+v", st)
	})
	sa, sb := la.Stats(), lb.Stats()
	if sb.Lost == 0 || sa.Retransmitted == 0 || sb.NackSent == 0 {
		t.Fatalf("no loss seen or repaired:\nprimary %+v\nbackup %+v", sa, sb)
	}
	t.Logf("primary sent %d messages, backup lost %d, primary retransmitted %d after %d NACKs, %d full resyncs; %d connections",
		sa.MsgSent, sb.Lost, sa.Retransmitted, sa.NackRecv, sa.ResendFull, len(table))
}

// TestLinkForeignPeer: a well-formed message from an address other than
// the configured peer's is dropped and counted; the same message from the
// peer is taken.
func TestLinkForeignPeer(t *testing.T) {
	pa, pb := syncLink(t, "a", "b")
	addr(t, pb, "s1", "10.9.0.3/24")
	rec := &recorder{cache: NewCache()}
	l := openLink(t, pa, "10.9.0.1", "10.9.0.2", "s0", rec)
	c := conn(1)
	msg := AppendConn(nil, TypeNew, FlagHello, 1, &c)
	send := func(from string) {
		t.Helper()
		if err := pb.Do(func() error {
			u, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(from)}, &net.UDPAddr{IP: net.ParseIP("10.9.0.1"), Port: syncPort})
			if err != nil {
				return err
			}
			defer u.Close()
			_, err = u.Write(msg)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	send("10.9.0.3")
	waitFor(t, "the foreign datagram counted", func() (bool, string) {
		st := l.Stats()
		return st.Foreign == 1, fmt.Sprintf("%+v", st)
	})
	if rec.cache.Len() != 0 || l.Stats().MsgRecv != 0 {
		t.Fatalf("foreign message taken: %+v", l.Stats())
	}
	send("10.9.0.2")
	waitFor(t, "the peer's message", func() (bool, string) {
		return rec.cache.Len() == 1, fmt.Sprintf("%+v", l.Stats())
	})
}

// lossySyncLink makes dev in ns lose 10% of its sync traffic: with tc
// netem on its egress where the kernel has netem, otherwise (a kernel
// built without CONFIG_NET_SCH_NETEM, such as this project's CI machine)
// with an iptables statistic match dropping 10% of the sync datagrams it
// receives. Either way each datagram is lost independently.
func lossySyncLink(t *testing.T, ns *netns.NS, dev string) {
	t.Helper()
	out, err := ns.Run("tc", "qdisc", "add", "dev", dev, "root", "netem", "loss", "10%")
	if err == nil {
		t.Logf("%s: tc netem loss 10%%", dev)
		return
	}
	if !strings.Contains(string(out), "qdisc kind is unknown") {
		t.Fatal(err)
	}
	t.Logf("%s: no netem in this kernel (%s); iptables statistic drops 10%%", dev, strings.TrimSpace(string(out)))
	run(t, ns, "iptables", "-A", "INPUT", "-i", dev, "-p", "udp", "--dport", fmt.Sprint(syncPort),
		"-m", "statistic", "--mode", "random", "--probability", "0.1", "-j", "DROP")
}
