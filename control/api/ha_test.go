package api_test

import (
	"context"
	"strings"
	"testing"

	"xnat/control/api/apitest"
	"xnat/control/ha"
)

// TestHA: xnatd with an [ha] section sends its connections to the peer
// as they are made, shows the peer's in its external cache, and takes
// flush, resync and bulk requests; without the section the routes refuse.
func TestHA(t *testing.T) {
	b := apitest.New(t, apitest.Options{HA: apitest.HASync()})
	peer := b.StartHAPeer()
	link := peer.Link

	// A connection through the daemon reaches the peer, translated.
	b.UDPEcho(7000)
	conn := b.UDPDial(b.InsA, apitest.IPA, 0, 7000)
	if _, err := apitest.Ask(conn, "one"); err != nil {
		t.Fatal(err)
	}
	var synced ha.Conn
	apitest.Eventually(t, "the connection at the peer", func() bool {
		for _, c := range peer.Cache.List() {
			if c.Proto == 17 && c.DstPort == 7000 {
				synced = c
				return c.Status&ha.IPSSeenReply != 0
			}
		}
		return false
	})
	if r := synced.Reply(); r.Dst != 0xc0000201 || synced.Has&ha.HasSNAT == 0 {
		t.Fatalf("synced %s", synced.String())
	}

	cl := b.Client()
	bg := context.Background()
	st, err := cl.HAStatus(bg)
	must(t, err)
	if st.Peer != "10.0.1.2" || st.Local != "10.0.1.1:3780" || st.Link.MsgSent == 0 || st.EventsSent == 0 {
		t.Fatalf("status %+v", st)
	}

	// The peer's connection in the daemon's external cache.
	c := ha.Conn{Proto: 6, Src: 0x0a000905, Dst: 0xc6336402, SrcPort: 40000, DstPort: 443, Status: ha.IPSSeenReply | ha.IPSAssured,
		TCPState: 3, SNAT: 0xc0000201, SPAT: 20001, Has: ha.HasTCPState | ha.HasSNAT | ha.HasSPAT}
	link.Send(ha.TypeNew, &c)
	must(t, link.Flush())
	want := "tcp ESTABLISHED src=10.0.9.5 dst=198.51.100.2 sport=40000 dport=443 src=198.51.100.2 dst=192.0.2.1 sport=443 dport=20001 [ASSURED]"
	apitest.Eventually(t, "the peer's connection in the cache", func() bool {
		l, err := cl.HACache(bg)
		return err == nil && len(l.Conns) == 1 && l.Conns[0] == want
	})
	n, err := cl.HAFlush(bg)
	must(t, err)
	if l, _ := cl.HACache(bg); n != 1 || len(l.Conns) != 0 {
		t.Fatalf("flushed %d, left %v", n, l.Conns)
	}

	// Resync asks the peer; bulk sends the table again.
	must(t, cl.HAResync(bg))
	apitest.Eventually(t, "the peer asked for its table", func() bool { return peer.Resyncs() == 1 })
	peer.Cache.Flush()
	must(t, cl.HABulk(bg))
	apitest.Eventually(t, "the bulk send at the peer", func() bool {
		_, ok := peer.Cache.Get(synced.Orig())
		return ok
	})
	if st, _ := cl.HAStatus(bg); st.Bulks != 1 || st.Link.Malformed != 0 {
		t.Fatalf("status %+v", st)
	}
}

func TestHANotConfigured(t *testing.T) {
	b := apitest.New(t, apitest.Options{})
	_, err := b.Client().HAStatus(context.Background())
	if !refusedErr(err) || !strings.Contains(err.Error(), "not configured") {
		t.Fatalf("%v", err)
	}
	if _, err := b.Client().HACommit(context.Background()); !refusedErr(err) || !strings.Contains(err.Error(), "not configured") {
		t.Fatalf("commit: %v", err)
	}
}
