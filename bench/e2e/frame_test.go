package e2e

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var testEP = Endpoints{
	SrcMAC: [6]byte{2, 0, 0, 0, 0, 1}, DstMAC: [6]byte{2, 0, 0, 0, 0, 2},
	SrcBase: FlowBase, Dst: SrvAddr,
}

// reference recomputes both checksums of frame b with gopacket, an
// implementation independent of this package's, and returns them.
func reference(t *testing.T, b []byte) (ip, l4 uint16) {
	t.Helper()
	pkt := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	ip4, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip4 == nil {
		t.Fatal("no IPv4 layer")
	}
	opts := gopacket.SerializeOptions{ComputeChecksums: true}
	buf := gopacket.NewSerializeBuffer()
	var l4layer gopacket.SerializableLayer
	var payload []byte
	switch l := pkt.TransportLayer().(type) {
	case *layers.UDP:
		if err := l.SetNetworkLayerForChecksum(ip4); err != nil {
			t.Fatal(err)
		}
		l4layer, payload = l, l.Payload
	case *layers.TCP:
		if err := l.SetNetworkLayerForChecksum(ip4); err != nil {
			t.Fatal(err)
		}
		l4layer, payload = l, l.Payload
	default:
		t.Fatalf("transport %T", l)
	}
	if err := gopacket.SerializeLayers(buf, opts, ip4, l4layer, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	out := buf.Bytes()
	ip = binary.BigEndian.Uint16(out[10:])
	if ip4.Protocol == layers.IPProtocolUDP {
		l4 = binary.BigEndian.Uint16(out[20+6:])
	} else {
		l4 = binary.BigEndian.Uint16(out[20+16:])
	}
	return ip, l4
}

func TestFramesChecksumsMatchGopacket(t *testing.T) {
	flows := []uint32{0, 1, 63999, 64000, 1_000_000, MaxFlows - 1}
	for _, p := range []Proto{UDP, TCP} {
		for _, size := range []int{64, 128, 1500, 1518} {
			tm, err := NewTemplate(p, FrameLen(p, size), testEP)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range flows {
				for _, syn := range []bool{false, true} {
					buf := make([]byte, MaxFrame)
					tm.Prime(buf)
					s := Stamp{Flow: f, Seq: 0xdeadbeef ^ f, Time: 0x0123456789abcdef + int64(f)}
					tm.Write(buf, FlowBase, s, syn)
					b := buf[:tm.Len]
					ip, l4 := reference(t, b)
					if got := binary.BigEndian.Uint16(b[offIP+10:]); got != ip {
						t.Fatalf("%v size %d flow %d: IPv4 checksum %#04x, gopacket %#04x", p, size, f, got, ip)
					}
					if got := binary.BigEndian.Uint16(b[tm.csumOff:]); got != l4 {
						t.Fatalf("%v size %d flow %d syn %v: L4 checksum %#04x, gopacket %#04x", p, size, f, syn, got, l4)
					}
					full := make([]byte, MaxFrame)
					tm.Prime(full)
					tm.WriteFull(full, FlowBase, s, syn)
					if !bytes.Equal(full[:tm.Len], b) {
						t.Fatalf("%v size %d flow %d: Write and WriteFull differ", p, size, f)
					}
					// The frame's tuple and stamp read back.
					src, sport, dport := FlowTuple(FlowBase, f)
					e := Expect{Src: src, PortLo: sport, PortHi: sport, Dst: SrvAddr, Proto: p}
					var pr Parsed
					if v := Check(b, &e, &pr); v != OK {
						t.Fatalf("%v size %d flow %d: Check %v", p, size, f, v)
					}
					if pr.Stamp != s || pr.Dport != dport {
						t.Fatalf("stamp %+v dport %d, want %+v %d", pr.Stamp, pr.Dport, s, dport)
					}
					if p == TCP && syn != (pr.Flags&0x02 != 0) {
						t.Fatalf("flags %#x for syn=%v", pr.Flags, syn)
					}
				}
			}
		}
	}
}

func TestFrameLen(t *testing.T) {
	if got := FrameLen(UDP, 64); got != 60 {
		t.Errorf("UDP 64: %d", got)
	}
	if got := FrameLen(TCP, 64); got != MinLen(TCP) || got != 72 {
		t.Errorf("TCP 64: %d", got)
	}
	if got := FrameLen(UDP, 1518); got != MaxFrame {
		t.Errorf("UDP 1518: %d", got)
	}
	if _, err := NewTemplate(UDP, MaxFrame+1, testEP); err == nil {
		t.Error("oversized template accepted")
	}
	if _, err := NewTemplate(UDP, MinLen(UDP)-1, testEP); err == nil {
		t.Error("undersized template accepted")
	}
}

func TestCheckRejects(t *testing.T) {
	tm, err := NewTemplate(UDP, 100, testEP)
	if err != nil {
		t.Fatal(err)
	}
	good := make([]byte, tm.Len)
	tm.Prime(good)
	tm.Write(good, FlowBase, Stamp{Flow: 70000, Seq: 1, Time: 5}, false)
	src, _, _ := FlowTuple(FlowBase, 70000)
	e := Expect{Src: src, Dst: SrvAddr, Proto: UDP}
	var p Parsed
	if v := Check(good, &e, &p); v != OK {
		t.Fatalf("good frame: %v", v)
	}
	cases := []struct {
		name   string
		mutate func(b []byte, e *Expect)
		want   Verdict
	}{
		{"short", func(b []byte, e *Expect) {}, BadShort},
		{"ethertype", func(b []byte, e *Expect) { b[12] = 0x86 }, BadEther},
		{"ihl", func(b []byte, e *Expect) { b[offIP] = 0x46 }, BadIPHeader},
		{"ip checksum", func(b []byte, e *Expect) { b[offIP+8]-- }, BadIPChecksum},
		{"protocol", func(b []byte, e *Expect) { e.Proto = TCP }, BadProto},
		{"payload bit", func(b []byte, e *Expect) { b[len(b)-1] ^= 1 }, BadL4Checksum},
		{"source", func(b []byte, e *Expect) { e.Src = DUTOut }, BadSource},
		{"port range", func(b []byte, e *Expect) { e.PortLo, e.PortHi = 1, 2 }, BadSource},
		{"destination", func(b []byte, e *Expect) { e.Dst = GenAddr }, BadDest},
	}
	for _, c := range cases {
		b := append([]byte(nil), good...)
		ee := e
		c.mutate(b, &ee)
		if c.name == "short" {
			b = b[:30]
		}
		if v := Check(b, &ee, &p); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
}

func TestReflectKeepsChecksums(t *testing.T) {
	for _, p := range []Proto{UDP, TCP} {
		for _, syn := range []bool{false, true} {
			tm, err := NewTemplate(p, FrameLen(p, 200), testEP)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, tm.Len)
			tm.Prime(b)
			tm.Write(b, FlowBase, Stamp{Flow: 123456, Seq: 9, Time: 77}, syn)
			Reflect(b)
			ip, l4 := reference(t, b)
			if binary.BigEndian.Uint16(b[offIP+10:]) != ip || binary.BigEndian.Uint16(b[tm.csumOff:]) != l4 {
				t.Fatalf("%v syn=%v: reflected checksums differ from gopacket's", p, syn)
			}
			e := Expect{Src: SrvAddr, Proto: p, Reply: true, SrcBase: FlowBase}
			var pr Parsed
			if v := Check(b, &e, &pr); v != OK {
				t.Fatalf("%v syn=%v: reply Check %v", p, syn, v)
			}
			if p == TCP {
				want := uint8(0x10)
				if syn {
					want = 0x12
				}
				if pr.Flags != want {
					t.Fatalf("reply flags %#x, want %#x", pr.Flags, want)
				}
			}
		}
	}
}

// BenchmarkStamp compares the per-send work: headers and stamp written
// with checksums adjusted from the template's (RFC 1624) against the same
// with both checksums recomputed.
func BenchmarkStamp(b *testing.B) {
	for _, size := range []int{64, 1500} {
		tm, err := NewTemplate(UDP, FrameLen(UDP, size), testEP)
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, MaxFrame)
		tm.Prime(buf)
		for _, m := range []struct {
			name string
			f    func([]byte, uint32, Stamp, bool)
		}{{"incremental", tm.Write}, {"full", tm.WriteFull}} {
			b.Run(m.name+"/"+itoa(size), func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					m.f(buf, FlowBase, Stamp{Flow: uint32(i) & 0xfffff, Seq: uint32(i), Time: int64(i)}, false)
				}
			})
		}
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
