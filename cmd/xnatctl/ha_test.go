package main

import (
	"strings"
	"testing"

	"xnat/control/api"
	"xnat/control/api/apitest"
	"xnat/control/ha"
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
		SNAT: 0xc6336401, Has: ha.HasSNAT}
	link.Send(ha.TypeNew, &c)
	if err := link.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "udp src=10.0.9.5 dst=198.51.100.2 sport=5353 dport=53 src=198.51.100.2 dst=198.51.100.1 sport=53 dport=5353\n"
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
	ok(t, sock, "ha", "resync")
	apitest.Eventually(t, "the resync request at the peer", func() bool { return peer.Resyncs() == 1 })
	ok(t, sock, "ha", "bulk")
	for _, args := range [][]string{{"ha"}, {"ha", "promote"}, {"ha", "status", "extra"}} {
		if r := xnatctl(t, append([]string{"--socket", sock}, args...)...); r.code != 2 {
			t.Errorf("%q: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
}
