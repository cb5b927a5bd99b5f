package main

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"

	"xnat/control/api"
	"xnat/control/api/apitest"
	"xnat/control/ha"
	"xnat/internal/conntrackd"
	"xnat/internal/nattest"
)

// TestHACommands: xnatctl ha status, cache, flush, resync and bulk
// against xnatd with an [ha] section and a peer link, text and JSON, and
// their usage errors.
func TestHACommands(t *testing.T) {
	b := apitest.New(t, apitest.Options{HA: apitest.HASync()})
	sock := b.Socket
	peer := b.StartHAPeer()
	link := peer.Link

	c := ha.Conn{Proto: 17, Src: 0x0a000905, Dst: 0xc6336402, SrcPort: 5353, DstPort: 53, Status: ha.IPSSeenReply,
		SNAT: 0xc0000201, Has: ha.HasSNAT}
	link.Send(ha.TypeNew, &c)
	if err := link.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "udp src=10.0.9.5 dst=198.51.100.2 sport=5353 dport=53 src=198.51.100.2 dst=192.0.2.1 sport=53 dport=5353\n"
	apitest.Eventually(t, "the peer's connection", func() bool {
		return xnatctl(t, "--socket", sock, "ha", "cache").stdout == want
	})
	r := ok(t, sock, "ha", "status")
	for _, line := range []string{"local", "10.0.1.1:3780", "peer", "10.0.1.2", "external cache", "peer sequence (last received)"} {
		if !strings.Contains(r.stdout, line) {
			t.Errorf("status lacks %q:\n%s", line, r.stdout)
		}
	}
	var st api.HAStatus
	decodeJSON(t, ok(t, sock, "--json", "ha", "status").stdout, &st)
	if st.Cache != 1 || st.Peer != "10.0.1.2" || st.Link.MsgRecv == 0 {
		t.Fatalf("status %+v", st)
	}
	var l api.HACache
	decodeJSON(t, ok(t, sock, "--json", "ha", "cache").stdout, &l)
	if len(l.Conns) != 1 || l.Conns[0]+"\n" != want {
		t.Fatalf("cache %+v", l)
	}
	var f api.HAFlushed
	decodeJSON(t, ok(t, sock, "--json", "ha", "flush").stdout, &f)
	if f.Flushed != 1 || ok(t, sock, "ha", "cache").stdout != "" {
		t.Fatalf("flush %+v", f)
	}
	// (The node asks for the peer's table by itself too, once the pool
	// check's grace period ends: count from here.)
	before := peer.Resyncs()
	ok(t, sock, "ha", "resync")
	apitest.Eventually(t, "the resync request at the peer", func() bool { return peer.Resyncs() > before })
	ok(t, sock, "ha", "bulk")

	// The role keepalived's notify hook records.
	if r := ok(t, sock, "ha", "status"); !strings.Contains(r.stdout, "role") || !strings.Contains(r.stdout, "unknown") {
		t.Errorf("status before a role was recorded:\n%s", r.stdout)
	}
	ok(t, sock, "ha", "role", "MASTER")
	decodeJSON(t, ok(t, sock, "--json", "ha", "status").stdout, &st)
	if st.Role != "primary" || st.RoleSince.IsZero() {
		t.Fatalf("role after MASTER: %q since %v", st.Role, st.RoleSince)
	}
	var role api.HARole
	decodeJSON(t, ok(t, sock, "--json", "ha", "role", "backup").stdout, &role)
	if role.Role != "backup" || !strings.Contains(ok(t, sock, "ha", "status").stdout, "backup (since") {
		t.Fatalf("role %+v", role)
	}
	if r := xnatctl(t, "--socket", sock, "ha", "role", "leader"); r.code != 2 || !strings.Contains(r.stderr, "unknown HA role") {
		t.Errorf("ha role leader: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, args := range [][]string{{"ha"}, {"ha", "promote"}, {"ha", "status", "extra"}, {"ha", "role"}, {"ha", "role", "primary", "extra"}, {"ha", "cache", "-x"}} {
		if r := xnatctl(t, append([]string{"--socket", sock}, args...)...); r.code != 2 {
			t.Errorf("%q: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
}

// TestHACommit: xnatctl ha commit takes a connection the peer synced (a
// masquerade to the outside address's port 20123) into xnatd's table;
// the inside host's next datagrams of that connection leave with port
// 20123, and the answers, steered to xnat on the box's own address, come
// back to it.
func TestHACommit(t *testing.T) {
	b := apitest.New(t, apitest.Options{HA: apitest.HASync()})
	sock := b.Socket
	link := b.StartHAPeer().Link
	b.UDPEcho(7000)
	ext := binary.BigEndian.Uint32(apitest.IPExt.To4())
	c := ha.Conn{Proto: 17, Src: binary.BigEndian.Uint32(apitest.IPA.To4()), Dst: binary.BigEndian.Uint32(apitest.IPSrv.To4()),
		SrcPort: 5353, DstPort: 7000, Status: ha.IPSSeenReply | ha.IPSAssured | ha.IPSSrcNAT,
		SNAT: ext, SPAT: 20123, Has: ha.HasSNAT | ha.HasSPAT}
	link.Send(ha.TypeNew, &c)
	if err := link.Flush(); err != nil {
		t.Fatal(err)
	}
	apitest.Eventually(t, "the peer's connection in the cache", func() bool {
		return strings.Contains(xnatctl(t, "--socket", sock, "ha", "cache").stdout, "dport=20123")
	})
	r := ok(t, sock, "ha", "commit")
	if !strings.Contains(r.stderr, "1 connections committed.") {
		t.Fatalf("commit: %q", r.stderr)
	}
	if l := ok(t, sock, "conntrack", "-L").stdout; !strings.Contains(l, "sport=5353 dport=7000") || !strings.Contains(l, "dport=20123") {
		t.Fatalf("committed connection not in the table:\n%s", l)
	}
	conn := b.UDPDial(b.InsA, apitest.IPA, 5353, 7000)
	got, err := nattest.Ask(conn, "after commit", 5)
	if err != nil {
		t.Fatalf("no answer through the committed connection: %v", err)
	}
	if want := apitest.IPExt.String() + ":20123|after commit"; got != want {
		t.Fatalf("answer %q, want %q", got, want)
	}
	// Committing again finds it there.
	var res api.HACommitted
	decodeJSON(t, ok(t, sock, "--json", "ha", "commit").stdout, &res)
	if res.Committed != 0 || res.Exists != 1 {
		t.Fatalf("second commit %+v", res)
	}
	var st api.HAStatus
	decodeJSON(t, ok(t, sock, "--json", "ha", "status").stdout, &st)
	if st.Commits != 2 || st.LastCommit == nil || st.LastCommit.Exists != 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestHAConntrackdPeer: xnatd's sync peer is a real conntrackd (in the
// inside host A's namespace, on the sync link). A connection through xnat
// reaches conntrackd's external cache (conntrackd -e) and, committed
// (conntrackd -c), that kernel's table with xnat's translation (conntrack
// -L); a connection in that kernel's table reaches xnat's external cache
// (xnatctl ha cache -L).
func TestHAConntrackdPeer(t *testing.T) {
	conntrackd.RequireTools(t)
	b := apitest.New(t, apitest.Options{HA: apitest.HASync()})
	sock := b.Socket
	// NAT loaded in conntrackd's namespace, so that a commit keeps the
	// translation.
	if out, err := b.InsA.Run("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "a0", "-j", "MASQUERADE"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// conntrackd's configuration reads "a0" as a number: it is given
	// the interface by an alternative name.
	if out, err := b.InsA.Run("ip", "link", "property", "add", "dev", "a0", "altname", "sync0"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	cd := conntrackd.Start(t, b.InsA, "10.0.1.2", "10.0.1.1", conntrackd.UDP("10.0.1.2", "10.0.1.1", "sync0"))

	// xnat to conntrackd: a datagram from inside host B, masqueraded.
	b.UDPEcho(7001)
	conn := b.UDPDial(b.InsB, apitest.IPB, 41001, 7001)
	if got, err := apitest.Ask(conn, "hello"); err != nil || !strings.HasPrefix(got, "192.0.2.1:") {
		t.Fatalf("echo through xnat: %q %v", got, err)
	}
	ext := strings.TrimPrefix(strings.SplitN(mustAsk(t, conn), "|", 2)[0], "192.0.2.1:")
	orig := "src=10.0.2.2 dst=192.0.2.2 sport=41001 dport=7001"
	apitest.Eventually(t, "xnat's connection in conntrackd's external cache", func() bool {
		return strings.Contains(cd.Ctl(t, "-e"), orig)
	})
	cd.Ctl(t, "-c")
	reply := "src=192.0.2.2 dst=192.0.2.1 sport=7001 dport=" + ext
	apitest.Eventually(t, "the committed connection in that kernel's table", func() bool {
		out, err := b.InsA.Run("conntrack", "-L", "-p", "udp")
		return err == nil && strings.Contains(string(out), orig+" "+reply)
	})

	// conntrackd to xnat: a connection put in its kernel's table.
	if out, err := b.InsA.Run("conntrack", "-I", "-p", "udp", "-s", "10.1.0.5", "-d", "198.51.100.7", "--sport", "1234", "--dport", "53",
		"-t", "100", "-u", "SEEN_REPLY"); err != nil {
		t.Fatalf("conntrack -I: %v\n%s", err, out)
	}
	want := "udp src=10.1.0.5 dst=198.51.100.7 sport=1234 dport=53 src=198.51.100.7 dst=10.1.0.5 sport=53 dport=1234"
	apitest.Eventually(t, "conntrackd's connection in xnat's external cache", func() bool {
		return strings.Contains(xnatctl(t, "--socket", sock, "ha", "cache", "-L").stdout, want)
	})
	var st api.HAStatus
	decodeJSON(t, ok(t, sock, "--json", "ha", "status").stdout, &st)
	if st.Link.Malformed != 0 || st.Link.Unsupported != 0 || st.Link.MsgRecv == 0 {
		t.Fatalf("link %+v", st.Link)
	}
	if s := cd.Ctl(t, "-s"); !strings.Contains(s, "0 Malformed msgs") {
		t.Fatalf("conntrackd counted malformed messages from xnat:\n%s", s)
	}
}

func mustAsk(t *testing.T, conn *net.UDPConn) string {
	t.Helper()
	got, err := apitest.Ask(conn, "again")
	if err != nil {
		t.Fatal(err)
	}
	return got
}
