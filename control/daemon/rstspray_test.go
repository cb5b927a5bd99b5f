package daemon

import (
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"xnat/dataplane/header"
	"xnat/flowtable"
	"xnat/internal/netns"
)

// sendRSTs writes n TCP resets from src:sport to dst:dport, at random
// sequence numbers (half with ACK, at random acknowledgement numbers),
// through a raw socket of ns.
func sendRSTs(t *testing.T, ns *netns.NS, src net.IP, sport uint16, dst net.IP, dport uint16, n int, rng *rand.Rand) {
	t.Helper()
	s, d := ip4(src), ip4(dst)
	must(t, ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var sa unix.SockaddrInet4
		copy(sa.Addr[:], dst.To4())
		for i := range n {
			b := make([]byte, header.IPv4MinLen+header.TCPMinLen)
			ip := header.IPv4(b)
			ip.SetVersionIHL(header.IPv4VersionIHL5)
			ip.SetTotalLen(uint16(len(b)))
			ip.SetTTL(64)
			ip.SetProtocol(header.ProtoTCP)
			ip.SetSrc(s)
			ip.SetDst(d)
			ip.SetChecksum(ip.ComputeChecksum())
			tcp := header.TCP(b[header.IPv4MinLen:])
			tcp.SetSrcPort(sport)
			tcp.SetDstPort(dport)
			tcp.SetSeq(rng.Uint32())
			tcp.SetDataOffset(header.TCPMinLen)
			flags := uint8(header.TCPRst)
			if i%2 == 1 {
				flags |= header.TCPAck
				tcp.SetAck(rng.Uint32())
			}
			tcp.SetFlags(flags)
			tcp.SetChecksum(header.Checksum(tcp, header.PseudoSum(s, d, header.ProtoTCP, header.TCPMinLen)))
			if err := unix.Sendto(fd, b, 0, &sa); err != nil {
				return err
			}
		}
		return nil
	}))
}

// TestRSTSprayKeepsConnections: 200 resets at random sequence numbers,
// sent from the outside as the peer, at the external port of a
// MASQUERADE'd connection and at the DNAT port of a DNAT'd one, leave
// both ESTABLISHED: past the CLOSE timeout they still carry data, real
// TCP sockets at both ends. The resets are counted invalid.
func TestRSTSprayKeepsConnections(t *testing.T) {
	b := newBed(t, bedOpts{})
	// A CLOSE timeout short enough to wait out.
	must(t, b.d.SetTimeout("nf_conntrack_tcp_timeout_close", 2*time.Second))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))

	// MASQUERADE: A to the server.
	srvPeers := tcpServer(t, b.sv, ipSrv, 9000)
	masq, err := tcpDial(t, b.insA, fmtAddr(ipSrv, 9000), 2*time.Second)
	must(t, err)
	peer := <-srvPeers
	_, extPortS, _ := net.SplitHostPort(peer)
	extAddr, err := net.ResolveTCPAddr("tcp4", net.JoinHostPort(ipExt.String(), extPortS))
	must(t, err)
	must(t, roundTrip(masq, []byte("before, masquerade")))

	// DNAT: the server to A's web server through 192.0.2.1:8080.
	webPeers := tcpServer(t, b.insA, ipA, 80)
	dnat, err := tcpDial(t, b.sv, fmtAddr(ipExt, 8080), 2*time.Second)
	must(t, err)
	<-webPeers
	must(t, roundTrip(dnat, []byte("before, dnat")))

	before := b.d.Table().TotalStats().Invalid
	created := b.d.Dataplane().TotalCounters().Created
	sendRSTs(t, b.sv, ipSrv, 9000, ipExt, uint16(extAddr.Port), 200, rng)
	sendRSTs(t, b.sv, ipSrv, port(dnat.LocalAddr()), ipExt, 8080, 200, rng)
	eventually(t, "400 resets counted invalid", func() bool { return b.d.Table().TotalStats().Invalid-before >= 380 })

	time.Sleep(3 * time.Second) // past the CLOSE timeout
	must(t, roundTrip(masq, []byte("after, masquerade")))
	must(t, roundTrip(dnat, []byte("after, dnat")))
	for _, k := range []flowtable.Tuple{
		flowtable.MakeTuple(flowtable.ProtoTCP, ip4(ipA), port(masq.LocalAddr()), ip4(ipSrv), 9000),
		flowtable.MakeTuple(flowtable.ProtoTCP, ip4(ipSrv), port(dnat.LocalAddr()), ip4(ipExt), 8080),
	} {
		fi, _, ok := b.d.Table().Get(k)
		if !ok || fi.State() != flowtable.TCPEstablished || !fi.Assured() {
			t.Errorf("%v: %v (found %v), want ESTABLISHED and ASSURED", k, fi.State(), ok)
		}
	}
	// The same two connections: none was torn down and picked up again.
	if n := b.d.Dataplane().TotalCounters().Created - created; n != 0 {
		t.Errorf("%d connections created after the spray", n)
	}
	t.Logf("invalid: %d of 400 resets", b.d.Table().TotalStats().Invalid-before)
}
