package dataplane

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"xnat/control/iptables"
	"xnat/dataplane/header"
	"xnat/dataplane/rules"
	"xnat/dataplane/topo"
	"xnat/flowtable"
)

// The test topology: inside port in0 (10.0.0.1/24) with hosts A and B,
// outside port out0 (203.0.113.1/24) with the gateway .254 and a
// directly connected peer .9; remote hosts are behind the gateway.
var (
	macIn0  = [6]byte{2, 0, 0, 0, 0, 1}
	macOut0 = [6]byte{2, 0, 0, 0, 1, 1}
	macA    = [6]byte{2, 0, 0, 0, 0, 2}
	macB    = [6]byte{2, 0, 0, 0, 0, 3}
	macGW   = [6]byte{2, 0, 0, 0, 1, 0xfe}
	macPeer = [6]byte{2, 0, 0, 0, 1, 9}

	addrIn0  = ip4(10, 0, 0, 1)
	addrA    = ip4(10, 0, 0, 2)
	addrB    = ip4(10, 0, 0, 3)
	addrExt  = ip4(203, 0, 113, 1)
	addrGW   = ip4(203, 0, 113, 254)
	addrPeer = ip4(203, 0, 113, 9)
	remote   = ip4(198, 51, 100, 7)
)

const (
	portIn  = 0
	portOut = 1
)

// Where the headers of an untagged test frame without IP options start,
// and where an ICMP error's quoted datagram starts in one.
const (
	offIP    = header.EthernetLen
	offL4    = offIP + header.IPv4MinLen
	offQuote = offL4 + header.ICMPLen
)

func ip4(a, b, c, d byte) uint32 { return uint32(a)<<24 | uint32(b)<<16 | uint32(c)<<8 | uint32(d) }

func netIP(a uint32) net.IP { return net.IPv4(byte(a>>24), byte(a>>16), byte(a>>8), byte(a)).To4() }

func testSnapshot(outMTU int) *topo.Snapshot {
	return &topo.Snapshot{
		Ifaces: []topo.Iface{
			{Index: 2, Name: "in0", MAC: macIn0, MTU: 1500, Up: true, Addrs: []topo.Prefix{{Addr: addrIn0, Len: 24}}},
			{Index: 3, Name: "out0", MAC: macOut0, MTU: outMTU, Up: true, Addrs: []topo.Prefix{{Addr: addrExt, Len: 24}}},
		},
		Routes: []topo.Route{
			{Dst: topo.Prefix{Addr: ip4(10, 0, 0, 0), Len: 24}, IfIndex: 2},
			{Dst: topo.Prefix{Addr: ip4(203, 0, 113, 0), Len: 24}, IfIndex: 3},
			{Dst: topo.Prefix{}, Gateway: addrGW, IfIndex: 3},
		},
		Neighs: []topo.Neigh{
			{IfIndex: 2, IP: addrA, MAC: macA, State: topo.NeighValid},
			{IfIndex: 2, IP: addrB, MAC: macB, State: topo.NeighValid},
			{IfIndex: 3, IP: addrGW, MAC: macGW, State: topo.NeighValid},
			{IfIndex: 3, IP: addrPeer, MAC: macPeer, State: topo.NeighValid},
		},
	}
}

const masqRules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o out0 -j MASQUERADE
COMMIT
`

type testbed struct {
	t   testing.TB
	tab *flowtable.Table
	dp  *Dataplane
}

func model(t testing.TB, text string) *rules.Model {
	t.Helper()
	m, _, err := iptables.Restore(strings.NewReader(text), rules.NewModel(), iptables.RestoreOptions{})
	if err != nil {
		t.Fatalf("rules: %v", err)
	}
	return m
}

func newTestbed(t testing.TB, ruleText string, outMTU int, cores int) *testbed {
	t.Helper()
	tab, err := flowtable.New(flowtable.Config{Capacity: 4096, Cores: cores, Seed: 5, Acct: true, Proto: true})
	if err != nil {
		t.Fatal(err)
	}
	pools := NewPools(cores, nil)
	env, err := NewEnv(EnvConfig{Snapshot: testSnapshot(outMTU), Inside: []string{"in0"}, Outside: []string{"out0"}, Model: model(t, ruleText), Pools: pools})
	if err != nil {
		t.Fatal(err)
	}
	return &testbed{t: t, tab: tab, dp: New(tab, pools, NewSettings(), env)}
}

// run processes one frame on core 0 and returns the result and the frame.
func (tb *testbed) run(frame []byte, in uint16) (Result, []byte) {
	return tb.runOn(0, frame, in)
}

func (tb *testbed) runOn(core int, frame []byte, in uint16) (Result, []byte) {
	buf := make([]byte, len(frame), 2048)
	copy(buf, frame)
	frames := [][]byte{buf}
	sizes := []int{len(buf)}
	out := make([]Result, 1)
	tb.dp.Pipeline(core).Process(frames, sizes, []uint16{in}, out)
	return out[0], buf[:max(out[0].Len, 0)]
}

// pkt builds a frame with gopacket.
type pkt struct {
	srcMAC, dstMAC [6]byte
	src, dst       uint32
	ttl            uint8
	df             bool
	id             uint16
	l4             gopacket.SerializableLayer
	payload        []byte
	vlan           bool
	options        bool // a Router Alert option: a 24-byte IPv4 header
}

func (p pkt) bytes(t testing.TB) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: p.srcMAC[:], DstMAC: p.dstMAC[:], EthernetType: layers.EthernetTypeIPv4}
	ttl := p.ttl
	if ttl == 0 {
		ttl = 64
	}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Id: p.id, SrcIP: netIP(p.src), DstIP: netIP(p.dst)}
	if p.df {
		ip.Flags = layers.IPv4DontFragment
	}
	if p.options {
		ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
	}
	var ls []gopacket.SerializableLayer
	if p.vlan {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, eth, &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4})
	} else {
		ls = append(ls, eth)
	}
	switch l := p.l4.(type) {
	case *layers.TCP:
		ip.Protocol = layers.IPProtocolTCP
		l.SetNetworkLayerForChecksum(ip)
	case *layers.UDP:
		ip.Protocol = layers.IPProtocolUDP
		l.SetNetworkLayerForChecksum(ip)
	case *layers.ICMPv4:
		ip.Protocol = layers.IPProtocolICMPv4
	}
	ls = append(ls, ip, p.l4, gopacket.Payload(p.payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func udpPkt(srcMAC, dstMAC [6]byte, src uint32, sport uint16, dst uint32, dport uint16) pkt {
	return pkt{srcMAC: srcMAC, dstMAC: dstMAC, src: src, dst: dst, l4: &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}, payload: []byte("hello xnat")}
}

func tcpPkt(srcMAC, dstMAC [6]byte, src uint32, sport uint16, dst uint32, dport uint16, flags uint8, seq, ack uint32) pkt {
	l := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: seq, Ack: ack, Window: 1000,
		SYN: flags&0x02 != 0, ACK: flags&0x10 != 0, FIN: flags&0x01 != 0, RST: flags&0x04 != 0, PSH: flags&0x08 != 0}
	return pkt{srcMAC: srcMAC, dstMAC: dstMAC, src: src, dst: dst, l4: l}
}

func icmpPkt(srcMAC, dstMAC [6]byte, src, dst uint32, typ, code uint8, id, seq uint16, payload []byte) pkt {
	return pkt{srcMAC: srcMAC, dstMAC: dstMAC, src: src, dst: dst, l4: &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: id, Seq: seq}, payload: payload}
}

// decoded is a frame as gopacket decodes it, after checking that every
// checksum in it is what a full recomputation gives.
type decoded struct {
	eth  *layers.Ethernet
	ip   *layers.IPv4
	tcp  *layers.TCP
	udp  *layers.UDP
	icmp *layers.ICMPv4
	// for ICMP errors: the quoted datagram
	inner *layers.IPv4
}

func decode(t testing.TB, frame []byte) decoded {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("decoding %x: %v", frame, el.Error())
	}
	var d decoded
	d.eth, _ = p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	d.ip, _ = p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	d.tcp, _ = p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	d.udp, _ = p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	d.icmp, _ = p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if d.ip == nil {
		t.Fatalf("no IPv4 in %x", frame)
	}
	verifyChecksums(t, frame)
	if d.icmp != nil && (d.icmp.TypeCode.Type() == 3 || d.icmp.TypeCode.Type() == 11) {
		q := gopacket.NewPacket(d.icmp.Payload, layers.LayerTypeIPv4, gopacket.Default)
		d.inner, _ = q.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	}
	return d
}

// verifyChecksums recomputes every checksum of a frame with gopacket and
// compares the bytes.
func verifyChecksums(t testing.TB, frame []byte) {
	t.Helper()
	if err := checksumError(frame); err != "" {
		t.Fatal(err)
	}
}

// checksumError is verifyChecksums' check, returning what is wrong.
func checksumError(frame []byte) string {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	var ls []gopacket.SerializableLayer
	var ip *layers.IPv4
	zeroUDPAt := -1
	off := 0 // where the current layer starts
	for _, l := range p.Layers() {
		start := off
		off += len(l.LayerContents())
		switch v := l.(type) {
		case *layers.IPv4:
			ip = v
			ls = append(ls, v)
		case *layers.TCP:
			v.SetNetworkLayerForChecksum(ip)
			ls = append(ls, v)
		case *layers.UDP:
			if v.Checksum == 0 { // no checksum: must stay zero
				zeroUDPAt = start + 6
			}
			v.SetNetworkLayerForChecksum(ip)
			ls = append(ls, v)
		case *layers.ICMPv4:
			ls = append(ls, v, gopacket.Payload(v.Payload))
		case gopacket.SerializableLayer:
			ls = append(ls, v)
		}
		if _, ok := l.(*layers.ICMPv4); ok {
			break
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ls...); err != nil {
		return "reserializing: " + err.Error()
	}
	got := buf.Bytes()
	if zeroUDPAt >= 0 && zeroUDPAt+2 <= len(got) {
		got[zeroUDPAt], got[zeroUDPAt+1] = 0, 0
	}
	if len(got) > len(frame) && bytes.Count(got[len(frame):], []byte{0}) == len(got)-len(frame) {
		got = got[:len(frame)] // Ethernet padding the serializer adds; the NIC pads on the wire
	}
	if len(got) > len(frame) || !bytes.Equal(got, frame[:len(got)]) {
		return fmt.Sprintf("checksums differ from a full recomputation:\n got %x\nwant %x", frame[:min(len(got), len(frame))], got)
	}
	return ""
}

func ipEq(t testing.TB, what string, got net.IP, want uint32) {
	t.Helper()
	if !got.Equal(netIP(want)) {
		t.Errorf("%s = %v, want %v", what, got, netIP(want))
	}
}

func macEq(t testing.TB, what string, got net.HardwareAddr, want [6]byte) {
	t.Helper()
	if !bytes.Equal(got, want[:]) {
		t.Errorf("%s = %v, want %v", what, got, net.HardwareAddr(want[:]))
	}
}

func expect(t testing.TB, r Result, a Action, port uint16) {
	t.Helper()
	if r.Action != a || (a != ActDrop && r.Port != port) {
		t.Fatalf("result %v (reason %v) on port %d, want %v on port %d", r.Action, r.Reason, r.Port, a, port)
	}
}

func neighFor(ifindex int, ip uint32, last byte) topo.Neigh {
	return topo.Neigh{IfIndex: ifindex, IP: ip, MAC: [6]byte{2, 0, 0, 0, 9, last}, State: topo.NeighValid}
}
