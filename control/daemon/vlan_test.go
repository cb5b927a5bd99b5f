package daemon

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"xnat/dataplane"
	"xnat/dataplane/xdpprog"
	"xnat/internal/nattest"
	"xnat/internal/netns"
)

// udpFrame is an Ethernet frame from src to dst (IPv4 and MAC), UDP to
// port, with an 802.1Q tag of VLAN vid unless vid is negative.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, port uint16, vid int) []byte {
	f := append([]byte(nil), dstMAC...)
	f = append(f, srcMAC...)
	if vid >= 0 {
		f = binary.BigEndian.AppendUint16(f, unix.ETH_P_8021Q)
		f = binary.BigEndian.AppendUint16(f, uint16(vid))
	}
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_IP)
	payload := []byte("tagged")
	ip := make([]byte, 20+8)
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)+len(payload)))
	copy(ip[12:], src.To4())
	copy(ip[16:], dst.To4())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(ip[20:], 40000)
	binary.BigEndian.PutUint16(ip[22:], port)
	binary.BigEndian.PutUint16(ip[24:], uint16(8+len(payload))) // checksum 0: none
	return append(append(f, ip...), payload...)
}

// inject sends raw frames on a link of ns.
func inject(t *testing.T, ns *netns.NS, link string, frames ...[]byte) {
	t.Helper()
	ix, err := ns.Index(link)
	must(t, err)
	must(t, ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: ix, Halen: 6}); err != nil {
				return err
			}
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	}))
}

// TestVLANTaggedNotForwarded: inside host A puts on its link frames
// tagged for VLAN 100, addressed to the router's MAC address, carrying
// UDP to the server; the router's inside interface has no VLAN, so none
// of them leaves on the outside, tagged or not. The same frame untagged
// does. Run against Linux (ip_forward = 1) in the same topology too.
func TestVLANTaggedNotForwarded(t *testing.T) {
	const port = 9003
	eachRouter(t, baseRules, func(t *testing.T, r *router) {
		xMAC, err := r.x.MAC("x0a")
		must(t, err)
		aMAC, err := r.insA.MAC("a0")
		must(t, err)
		out := capture(t, r.sv, "s0", port)
		// The path works (the server's address resolved) before the
		// raw frames.
		udpEcho(t, r.sv, ipSrv, 7000)
		c := udpDial(t, r.insA, nil, &net.UDPAddr{IP: ipSrv, Port: 7000})
		if _, err := ask(c, "untagged", 4); err != nil {
			t.Fatalf("untagged: %v", err)
		}
		const n = 10
		frames := make([][]byte, n)
		for i := range frames {
			frames[i] = udpFrame(aMAC, xMAC, ipA, ipSrv, port, 100)
		}
		inject(t, r.insA, "a0", frames...)
		time.Sleep(200 * time.Millisecond)
		if got := out.Load(); got != 0 {
			t.Fatalf("%d of %d tagged datagrams left on the outside", got, n)
		}
		if r.d != nil {
			var counted uint64
			for _, p := range r.d.Stats().Programs {
				counted += p.Counters[xdpprog.CtrPassVLAN]
			}
			dc := r.d.Dataplane().TotalCounters()
			counted += dc.Drop(dataplane.ReasonVLAN)
			if counted < n {
				t.Fatalf("%d tagged frames counted (pass_vlan, vlan), want %d at least", counted, n)
			}
		}
		inject(t, r.insA, "a0", udpFrame(aMAC, xMAC, ipA, ipSrv, port, -1))
		nattest.Eventually(t, "the untagged frame forwarded", 2*time.Second, func() bool { return out.Load() == 1 })
	})
}
