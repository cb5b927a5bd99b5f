package api_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"xnat/control/api"
	"xnat/control/api/apitest"
	"xnat/control/conntrack"
	"xnat/control/sysctl"
	"xnat/flowtable"
)

var ctx = context.Background()

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// usageErr reports whether err is the daemon refusing a malformed request.
func usageErr(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Usage()
}

func refusedErr(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Status == http.StatusUnprocessableEntity
}

// TestStatsAndConntrack: traffic through the daemon shows in the stats
// (per interface, connections created) and in the conntrack listing,
// whose entries convert back to the conntrack -L line; filters select;
// deleting a connection makes its next packet create a new one.
func TestStatsAndConntrack(t *testing.T) {
	b := apitest.New(t, apitest.Options{})
	c := b.Client()
	b.UDPEcho(7000)
	conn := b.UDPDial(b.InsA, apitest.IPA, 40000, 7000)
	got, err := apitest.Ask(conn, "one")
	if err != nil || !strings.HasPrefix(got, "192.0.2.1:") || !strings.HasSuffix(got, "|one") {
		t.Fatalf("through xnat: %q, %v", got, err)
	}
	st, err := c.Stats(ctx)
	must(t, err)
	if len(st.Interfaces) != 3 || st.Interfaces[0].Name != "x0a" || st.Interfaces[0].Role != "inside" || st.Interfaces[2].Role != "outside" {
		t.Fatalf("interfaces %+v", st.Interfaces)
	}
	if st.Interfaces[0].RxPackets < 1 || st.Interfaces[2].TxPackets < 1 || st.Interfaces[2].RxPackets < 1 || st.Interfaces[0].TxPackets < 1 {
		t.Fatalf("no traffic counted: %+v", st.Interfaces)
	}
	if st.Connections.Entries != 1 || st.Connections.Created != 1 || st.Connections.Capacity != 4096 || st.Connections.Max != 4096 {
		t.Fatalf("connections %+v", st.Connections)
	}
	if len(st.Drops) == 0 || st.Drops[0].Name == "" || len(st.XDP) != 3 || len(st.Rings) != 3 || len(st.Workers) != 1 || len(st.Cores) != 1 {
		t.Fatalf("sections missing: drops %d xdp %d rings %d workers %d cores %d", len(st.Drops), len(st.XDP), len(st.Rings), len(st.Workers), len(st.Cores))
	}
	if want := b.D.Stats().Pipeline.Forwarded; st.Pipeline.Forwarded == 0 || st.Pipeline.Forwarded > want {
		t.Fatalf("forwarded %d, daemon says %d", st.Pipeline.Forwarded, want)
	}

	l, err := c.Conntrack(ctx, &conntrack.Filter{})
	must(t, err)
	if len(l.Conns) != 1 {
		t.Fatalf("%d connections listed, want 1", len(l.Conns))
	}
	cn := l.Conns[0]
	if cn.ProtoName != "udp" || cn.Orig.Src != "10.0.1.2" || cn.Orig.SPort != 40000 || cn.Orig.Dst != "192.0.2.2" || cn.Orig.DPort != 7000 ||
		cn.Reply.Src != "192.0.2.2" || cn.Reply.Dst != "192.0.2.1" || cn.Unreplied || cn.Timeout <= 0 {
		t.Fatalf("connection %+v", cn)
	}
	fi, err := cn.FlowInfo()
	must(t, err)
	var line bytes.Buffer
	must(t, conntrack.WriteEntry(&line, &fi, l.Acct))
	re := regexp.MustCompile(`^udp +17 \d+ src=10\.0\.1\.2 dst=192\.0\.2\.2 sport=40000 dport=7000 src=192\.0\.2\.2 dst=192\.0\.2\.1 sport=7000 dport=\d+ mark=0 use=1\n$`)
	if !re.MatchString(line.String()) {
		t.Fatalf("conntrack line %q", line.String())
	}
	for _, f := range []struct {
		args []string
		n    int
	}{
		{[]string{"-L", "-p", "udp"}, 1}, {[]string{"-L", "-p", "tcp"}, 0}, {[]string{"-L", "-s", "10.0.1.2"}, 1},
		{[]string{"-L", "-s", "10.0.2.2"}, 0}, {[]string{"-L", "-p", "udp", "--sport", "40000", "--dport", "7000"}, 1},
		{[]string{"-L", "-p", "udp", "--dport", "7001"}, 0}, {[]string{"-L", "-d", "192.0.2.2", "--mark", "0"}, 1},
		{[]string{"-L", "--mark", "1"}, 0},
	} {
		a, err := conntrack.Parse(f.args)
		must(t, err)
		l, err := c.Conntrack(ctx, &a.Filter)
		must(t, err)
		if len(l.Conns) != f.n {
			t.Errorf("%q: %d connections, want %d", f.args, len(l.Conns), f.n)
		}
	}
	if n, err := c.ConntrackCount(ctx); err != nil || n != 1 {
		t.Fatalf("count %d, %v", n, err)
	}
	cs, err := c.ConntrackStats(ctx)
	must(t, err)
	var ins uint64
	for _, cc := range cs.Cores {
		ins += cc.Insert
	}
	if len(cs.Cores) != b.D.Table().Cores() || ins != 1 { // one line per worker core, as conntrack -S per CPU
		t.Fatalf("conntrack stats %+v", cs.Cores)
	}

	// -D with a filter that matches nothing, then the connection.
	a, _ := conntrack.Parse([]string{"-D", "-p", "udp", "--sport", "40001"})
	if n, err := c.ConntrackDelete(ctx, &a.Filter); err != nil || n != 0 {
		t.Fatalf("delete of nothing: %d, %v", n, err)
	}
	a, _ = conntrack.Parse([]string{"-D", "-p", "udp", "--sport", "40000"})
	if n, err := c.ConntrackDelete(ctx, &a.Filter); err != nil || n != 1 {
		t.Fatalf("delete: %d, %v", n, err)
	}
	apitest.Eventually(t, "the connection to go", func() bool { n, _ := c.ConntrackCount(ctx); return n == 0 })
	if got, err := apitest.Ask(conn, "two"); err != nil || !strings.HasSuffix(got, "|two") {
		t.Fatalf("after -D: %q, %v", got, err)
	}
	st2, err := c.Stats(ctx)
	must(t, err)
	if st2.Connections.Created != st.Connections.Created+1 || st2.Connections.Entries != 1 {
		t.Fatalf("after -D and a packet: created %d (was %d), entries %d", st2.Connections.Created, st.Connections.Created, st2.Connections.Entries)
	}
	if n, err := c.ConntrackFlush(ctx); err != nil || n != 1 {
		t.Fatalf("flush: %d, %v", n, err)
	}

	// A malformed filter is the client's fault.
	_, err = c.Conntrack(ctx, &conntrack.Filter{HasSPort: true, SPort: 1})
	if !usageErr(err) || !strings.Contains(err.Error(), "--sport") {
		t.Fatalf("--sport without -p: %v", err)
	}
}

// TestSysctl: the listing has every key; a change of several keys with one
// bad value changes nothing; a good one changes all; unknown and
// read-only keys are refused with their reasons.
func TestSysctl(t *testing.T) {
	b := apitest.New(t, apitest.Options{})
	c := b.Client()
	all, err := c.Sysctl(ctx)
	must(t, err)
	cfg := b.D.Config()
	keys := (&sysctl.Target{Ifaces: cfg.Interfaces()}).Keys()
	if len(all) != len(keys) || len(keys) != len(sysctl.Keys())+len(cfg.Interfaces()) {
		t.Fatalf("%d values for %d keys", len(all), len(keys))
	}
	for i, k := range keys {
		if all[i].Name != k.Name || all[i].ReadOnly != k.ReadOnly {
			t.Fatalf("value %d: %+v, key %s", i, all[i], k.Name)
		}
	}
	const maxKey, udpKey, psKey = "net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_udp_timeout", "xnat.per_source_max"
	before, err := c.Sysctl(ctx, maxKey, udpKey, psKey)
	must(t, err)
	udpDefault, err := flowtable.DefaultTimeout("nf_conntrack_udp_timeout")
	must(t, err)
	if len(before) != 3 || before[0].Value != int64(b.D.Table().Max()) || before[1].Value != int64(udpDefault/time.Second) {
		t.Fatalf("values %+v", before)
	}
	for _, bad := range [][]api.SysctlValue{
		{{Name: maxKey, Value: 100}, {Name: udpKey, Value: 0}},
		{{Name: maxKey, Value: 100}, {Name: "net.netfilter.nf_conntrack_bogus", Value: 1}},
		{{Name: maxKey, Value: 100}, {Name: udpKey, Value: 45}, {Name: maxKey, Value: 1 << 40}},
	} {
		if _, err := c.SysctlSet(ctx, bad); !usageErr(err) {
			t.Fatalf("%+v: %v, want a usage error", bad, err)
		}
		after, err := c.Sysctl(ctx, maxKey, udpKey, psKey)
		must(t, err)
		for i := range after {
			if after[i].Value != before[i].Value {
				t.Fatalf("a refused change changed %s: %d -> %d", after[i].Name, before[i].Value, after[i].Value)
			}
		}
	}
	_, err = c.SysctlSet(ctx, []api.SysctlValue{{Name: maxKey, Value: 100}, {Name: "net.netfilter.nf_conntrack_count", Value: 3}})
	if !refusedErr(err) || !strings.Contains(err.Error(), "read-only") || b.D.Table().Max() == 100 {
		t.Fatalf("read-only key: %v (max %d)", err, b.D.Table().Max())
	}
	got, err := c.SysctlSet(ctx, []api.SysctlValue{{Name: maxKey, Value: 100}, {Name: udpKey, Value: 45}, {Name: psKey, Value: 7}})
	must(t, err)
	if len(got) != 3 || b.D.Table().Max() != 100 || b.D.Dataplane().Pools.Limiter().Limit() != 7 {
		t.Fatalf("after set: %+v, max %d", got, b.D.Table().Max())
	}
	if d, _ := b.D.Table().Timeout("nf_conntrack_udp_timeout"); d != 45*time.Second {
		t.Fatalf("udp timeout %v", d)
	}
	if _, err := c.Sysctl(ctx, "nope"); !usageErr(err) || !strings.Contains(err.Error(), "unknown key") {
		t.Fatalf("unknown key: %v", err)
	}
}

// TestIptables: commands change the rules in force through the daemon;
// a bad command line, a command the model refuses, and a bad restore
// file each leave the rules exactly as they were.
func TestIptables(t *testing.T) {
	b := apitest.New(t, apitest.Options{})
	c := b.Client()
	save := func() string {
		s, err := c.Save(ctx, true, nil)
		must(t, err)
		return s
	}
	replacements := func() uint64 { return b.D.Stats().RuleReplacements }
	r, err := c.Iptables(ctx, strings.Fields("-A FORWARD -p udp --dport 9999 -j DROP"))
	must(t, err)
	if !r.Changed || b.D.Rules().Tables[0].Chains[1].Rules == nil {
		t.Fatalf("append: %+v", r)
	}
	b.UDPEcho(7000)
	conn := b.UDPDial(b.InsA, apitest.IPA, 0, 7000)
	if _, err := apitest.Ask(conn, "x"); err != nil {
		t.Fatal(err)
	}
	r, err = c.Iptables(ctx, strings.Fields("-t nat -L POSTROUTING -n -v -x"))
	must(t, err)
	if !strings.Contains(r.Output, "Chain POSTROUTING (policy ACCEPT") || !regexp.MustCompile(`(?m)^ +[1-9]\d* +\d+ MASQUERADE +all +-- +\* +x1 `).MatchString(r.Output) {
		t.Fatalf("-L -n -v -x:\n%s", r.Output)
	}
	_, err = c.Iptables(ctx, strings.Fields("-t nat -Z POSTROUTING"))
	must(t, err)
	r, err = c.Iptables(ctx, strings.Fields("-t nat -S POSTROUTING -v"))
	must(t, err)
	if !strings.Contains(r.Output, "-A POSTROUTING -o x1 -c 0 0 -j MASQUERADE") {
		t.Fatalf("-S -v after -Z:\n%s", r.Output)
	}
	if _, err := c.Iptables(ctx, strings.Fields("-C FORWARD -p udp --dport 9999 -j DROP")); err != nil {
		t.Fatalf("-C of an existing rule: %v", err)
	}

	before, n := save(), replacements()
	for _, bad := range []struct {
		args  string
		usage bool
		says  string
	}{
		{"-A FORWARD -j TPROXY", true, "TPROXY"},
		{"-A FORWARD --bogus", true, "--bogus"},
		{"-t mangle -L", true, "mangle"},
		{"-D FORWARD 5", false, ""},
		{"-X NOSUCH", false, "NOSUCH"},
		{"-C FORWARD -p tcp -j DROP", false, ""},
		{"-A FORWARD -j NOSUCHCHAIN", false, "NOSUCHCHAIN"},
	} {
		_, err := c.Iptables(ctx, strings.Fields(bad.args))
		if err == nil || usageErr(err) != bad.usage || (!bad.usage && !refusedErr(err)) || !strings.Contains(err.Error(), bad.says) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v (usage %v)", bad.args, err, usageErr(err))
		}
	}
	badFile := "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -j ACCEPT\nCOMMIT\n*nat\n-A POSTROUTING -j TPROXY\nCOMMIT\n"
	if _, err := c.Restore(ctx, &api.RestoreRequest{Rules: badFile}); !refusedErr(err) || !strings.Contains(err.Error(), "line 6") {
		t.Fatalf("bad restore file: %v", err)
	}
	if _, err := c.Restore(ctx, &api.RestoreRequest{Rules: "*filter\n-A FORWARD -j ACCEPT\n", Test: true}); !refusedErr(err) {
		t.Fatalf("file without COMMIT: %v", err)
	}
	if after := save(); stripCounters(after) != stripCounters(before) || replacements() != n {
		t.Fatalf("refused changes changed the rules (replacements %d -> %d):\n%s\n----\n%s", n, replacements(), before, after)
	}
	good := "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -o x1 -j ACCEPT\n-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n"
	r, err = c.Restore(ctx, &api.RestoreRequest{Rules: good})
	must(t, err)
	if !r.Changed || replacements() != n+1 {
		t.Fatalf("restore: %+v", r)
	}
	s := save()
	if !strings.Contains(s, ":FORWARD DROP") || !strings.Contains(s, "-A FORWARD -o x1 -j ACCEPT") || !strings.Contains(s, "-A POSTROUTING -o x1 -j MASQUERADE") {
		t.Fatalf("after restore (nat kept, filter replaced):\n%s", s)
	}
	if strings.Contains(s, "9999") {
		t.Fatalf("restore kept the old filter table:\n%s", s)
	}
	if _, err := apitest.Ask(conn, "after restore"); err != nil {
		t.Fatalf("traffic after the restore: %v", err)
	}
	ev := b.S.Events(0)
	var sources []string
	for _, e := range ev {
		if e.Kind == api.KindRulesReplaced {
			sources = append(sources, e.Source)
		}
	}
	if len(sources) != 2 || !strings.Contains(sources[0], "-A FORWARD") || sources[1] != "xnatctl iptables-restore" {
		t.Fatalf("rules_replaced events: %q", sources)
	}
}

var countersRE = regexp.MustCompile(`\[\d+:\d+\]|# .*\n`)

func stripCounters(s string) string { return countersRE.ReplaceAllString(s, "") }

// TestTableFullEvents: with the limit at 4 and four ASSURED connections,
// new connections are dropped; a table_full event appears while the drops
// are counted, with the drops since it began, also on a follower's
// stream; once the table is flushed and drops stop, table_not_full.
func TestTableFullEvents(t *testing.T) {
	const limit = 4
	b := apitest.New(t, apitest.Options{MaxConns: limit, API: api.Options{MonitorInterval: 20 * time.Millisecond,
		FullRepeat: 200 * time.Millisecond, ClearAfter: 300 * time.Millisecond}})
	c := b.Client()
	followed := make(chan api.Event, 64)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_ = c.FollowEvents(fctx, 0, func(e api.Event) error { followed <- e; return nil })
	}()
	var ln net.Listener
	must(t, b.Srv.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", "192.0.2.2:9000")
		return err
	}))
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	dial := func(timeout time.Duration) (net.Conn, error) {
		var c net.Conn
		err := b.InsA.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp4", "192.0.2.2:9000", timeout)
			return err
		})
		return c, err
	}
	for i := range limit {
		cn, err := dial(2 * time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		defer cn.Close()
		_, err = cn.Write([]byte("hi"))
		must(t, err)
		buf := make([]byte, 2)
		must(t, cn.SetReadDeadline(time.Now().Add(2*time.Second)))
		_, err = io.ReadFull(cn, buf)
		must(t, err)
	}
	apitest.Eventually(t, "four ASSURED connections", func() bool {
		l, err := c.Conntrack(ctx, &conntrack.Filter{})
		n := 0
		for _, cn := range l.Conns {
			if cn.Assured {
				n++
			}
		}
		return err == nil && n == limit
	})
	if _, err := dial(500 * time.Millisecond); err == nil {
		t.Fatal("a connection got through a full table")
	}
	var full api.Event
	apitest.Eventually(t, "a table_full event", func() bool {
		for _, e := range b.S.Events(0) {
			if e.Kind == api.KindTableFull {
				full = e
				return true
			}
		}
		return false
	})
	st, err := c.Stats(ctx)
	must(t, err)
	if full.Drops < 1 || full.Drops > st.Drop("table_full") || full.Msg != "nf_conntrack: table full, dropping packet" ||
		full.Conns != limit || full.Max != limit || full.Level != "WARN" || full.Seq == 0 {
		t.Fatalf("event %+v, table_full drops %d", full, st.Drop("table_full"))
	}
	select {
	case e := <-followed:
		for e.Kind != api.KindTableFull {
			e = <-followed
		}
		if e.Seq != full.Seq {
			t.Fatalf("followed %+v, recorded %+v", e, full)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event on the followed stream")
	}
	if b.S.Events(full.Seq - 1)[0].Seq != full.Seq {
		t.Fatal("Events(after) does not start after the sequence number")
	}
	_, err = c.ConntrackFlush(ctx)
	must(t, err)
	var clear api.Event
	apitest.Eventually(t, "a table_not_full event", func() bool {
		for _, e := range b.S.Events(full.Seq) {
			if e.Kind == api.KindTableNotFull {
				clear = e
				return true
			}
		}
		return false
	})
	st, err = c.Stats(ctx)
	must(t, err)
	if clear.Drops < full.Drops || clear.Drops > st.Drop("table_full") || clear.Duration == "" {
		t.Fatalf("table_not_full %+v (table_full drops %d)", clear, st.Drop("table_full"))
	}
	// The listing over the API ends at the last event.
	l, err := c.Events(ctx, 0)
	must(t, err)
	if len(l.Events) == 0 || l.Next != l.Events[len(l.Events)-1].Seq {
		t.Fatalf("event list %+v", l)
	}
}

// TestAddressEventAndMetrics: an address added to an outside interface is
// an event; the Prometheus endpoint serves the daemon's counters.
func TestAddressEventAndMetrics(t *testing.T) {
	b := apitest.New(t, apitest.Options{})
	b.UDPEcho(7000)
	conn := b.UDPDial(b.InsB, apitest.IPB, 0, 7000)
	if _, err := apitest.Ask(conn, "m"); err != nil {
		t.Fatal(err)
	}
	must(t, b.X.AddAddr("x1", "192.0.2.9/24"))
	apitest.Eventually(t, "an address_changed event", func() bool {
		for _, e := range b.S.Events(0) {
			if e.Kind == api.KindAddressChanged && e.Interface == "x1" && len(e.Addrs) == 2 && e.Addrs[1] == "192.0.2.9/24" {
				return true
			}
		}
		return false
	})
	addr, err := b.S.ServeMetrics("127.0.0.1:0")
	must(t, err)
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	must(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(t, err)
	st := b.D.Stats()
	text := string(body)
	for _, want := range []string{
		fmt.Sprintf("xnat_connections %d\n", st.Conns),
		fmt.Sprintf("xnat_connections_max %d\n", st.Max),
		fmt.Sprintf("xnat_connections_created_total %d\n", st.Pipeline.Created),
		"xnat_drops_total{reason=\"table_full\"} 0\n",
		fmt.Sprintf("xnat_interface_packets_total{direction=\"rx\",interface=\"x0b\",role=\"inside\"} %d\n", st.Pipeline.Ports[1].RxPackets),
		"xnat_xdp_packets_total{action=\"to_xnat_forward\",interface=\"x0b\",mode=\"native\"}",
		"xnat_xsk_rx_total{interface=\"x1\",queue=\"0\"}",
		"xnat_xdp_packets_total{action=\"pass_broadcast\",interface=\"x0b\",mode=\"native\"}",
		"xnat_mappings_created_total 0\n",
		"xnat_neigh_queued_total ",
		"xnat_mappings_inbound_total 0\n",
		"xnat_drops_total{reason=\"rp_filter\"}",
		"xnat_drops_total{reason=\"neigh_failed\"}",
		"go_goroutines",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if st.Pipeline.Ports[1].RxPackets == 0 {
		t.Fatal("no packets counted on x0b")
	}
}

// TestSocket: the socket is mode 0600; a live socket is not replaced by a
// second server, but by ListenReplacing (whose socket the first server's
// Close leaves); a stale one is; a client of a missing socket is told
// xnatd is not running.
func TestSocket(t *testing.T) {
	b := apitest.New(t, apitest.Options{})
	fi, err := os.Stat(b.Socket)
	must(t, err)
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v", fi.Mode())
	}
	if err := b.S.Listen(b.Socket); err == nil || !strings.Contains(err.Error(), "another daemon") {
		t.Fatalf("second Listen on a live socket: %v", err)
	}
	stale := b.Dir + "/stale.sock"
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	must(t, err)
	l.SetUnlinkOnClose(false)
	l.Close()
	must(t, b.S.Listen(stale))
	if _, err := api.NewClient(stale).ConntrackCount(ctx); err != nil {
		t.Fatalf("on the replaced stale socket: %v", err)
	}
	_, err = api.NewClient(b.Dir + "/none.sock").Stats(ctx)
	if !errors.Is(err, api.ErrNotRunning) || err.Error() != "xnatd is not running: no socket at "+b.Dir+"/none.sock" {
		t.Fatalf("missing socket: %v", err)
	}
	// A takeover's server replaces the live socket; the old server's
	// Close leaves the new one's in place, and the new one's removes it.
	next := api.New(b.D, api.Options{})
	must(t, next.ListenReplacing(b.Socket))
	must(t, b.S.Close())
	if _, err := api.NewClient(b.Socket).ConntrackCount(ctx); err != nil {
		t.Fatalf("on the replacing socket after the old server closed: %v", err)
	}
	must(t, next.Close())
	if _, err := os.Lstat(b.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the replacing server's Close left its socket: %v", err)
	}
	plain := b.Dir + "/plain"
	must(t, os.WriteFile(plain, nil, 0o600))
	if err := b.S.Listen(plain); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a file: %v", err)
	}
}
