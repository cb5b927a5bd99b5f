package nattest

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"xnat/internal/netns"
)

// A STUN server and an RFC 5780 NAT behaviour-discovery client: enough of
// RFC 5389 for Binding requests with CHANGE-REQUEST, and answers with
// XOR-MAPPED-ADDRESS and OTHER-ADDRESS.

const (
	stunMagic          = 0x2112A442
	stunBindingRequest = 0x0001
	stunBindingSuccess = 0x0101
	attrChangeRequest  = 0x0003
	attrXorMapped      = 0x0020
	attrOtherAddress   = 0x802C
	changeIP           = 0x04
	changePort         = 0x02
)

// STUNServer answers Binding requests on two addresses times two ports
// (RFC 5780 section 4.1): primary (ip1, port1), alternate (ip2, port2).
// A request's answer leaves from the socket its CHANGE-REQUEST names.
func STUNServer(t testing.TB, ns *netns.NS, ip1, ip2 net.IP, port1, port2 int) {
	t.Helper()
	ips, ports := [2]net.IP{ip1, ip2}, [2]int{port1, port2}
	var socks [2][2]*net.UDPConn
	for i := range 2 {
		for j := range 2 {
			socks[i][j] = ListenUDP(t, ns, ips[i], ports[j])
		}
	}
	other := &net.UDPAddr{IP: ip2, Port: port2}
	for i := range 2 {
		for j := range 2 {
			go func() {
				buf := make([]byte, 1500)
				for {
					n, from, err := socks[i][j].ReadFromUDP(buf)
					if err != nil {
						return
					}
					tid, change, ok := parseRequest(buf[:n])
					if !ok {
						continue
					}
					oi, oj := i, j
					if change&changeIP != 0 {
						oi = 1 - i
					}
					if change&changePort != 0 {
						oj = 1 - j
					}
					_, _ = socks[oi][oj].WriteToUDP(stunResponse(tid, from, other), from)
				}
			}()
		}
	}
}

func parseRequest(b []byte) (tid [12]byte, change uint32, ok bool) {
	if len(b) < 20 || binary.BigEndian.Uint16(b) != stunBindingRequest || binary.BigEndian.Uint32(b[4:]) != stunMagic {
		return tid, 0, false
	}
	copy(tid[:], b[8:20])
	attrs := b[20:]
	if l := int(binary.BigEndian.Uint16(b[2:])); l <= len(attrs) {
		attrs = attrs[:l]
	}
	for len(attrs) >= 4 {
		typ, l := binary.BigEndian.Uint16(attrs), int(binary.BigEndian.Uint16(attrs[2:]))
		if 4+l > len(attrs) {
			break
		}
		if typ == attrChangeRequest && l == 4 {
			change = binary.BigEndian.Uint32(attrs[4:])
		}
		attrs = attrs[4+(l+3)&^3:]
	}
	return tid, change, true
}

func putAddr(b []byte, typ uint16, a *net.UDPAddr, xor bool) []byte {
	ip := a.IP.To4()
	port := uint16(a.Port)
	v := binary.BigEndian.Uint32(ip)
	if xor {
		port ^= stunMagic >> 16
		v ^= stunMagic
	}
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, 8)
	b = append(b, 0, 1) // IPv4
	b = binary.BigEndian.AppendUint16(b, port)
	return binary.BigEndian.AppendUint32(b, v)
}

func stunResponse(tid [12]byte, mapped, other *net.UDPAddr) []byte {
	var attrs []byte
	attrs = putAddr(attrs, attrXorMapped, mapped, true)
	attrs = putAddr(attrs, attrOtherAddress, other, false)
	b := binary.BigEndian.AppendUint16(nil, stunBindingSuccess)
	b = binary.BigEndian.AppendUint16(b, uint16(len(attrs)))
	b = binary.BigEndian.AppendUint32(b, stunMagic)
	b = append(b, tid[:]...)
	return append(b, attrs...)
}

// STUNBinding sends a Binding request from conn to server (with
// CHANGE-REQUEST flags change, 0 for none) and returns the mapped address
// and the answer's source; ok is false when no answer came (attempts
// tries of wait each).
func STUNBinding(conn *net.UDPConn, server *net.UDPAddr, change uint32, attempts int, wait time.Duration) (mapped, from *net.UDPAddr, ok bool, err error) {
	var tid [12]byte
	if _, err := rand.Read(tid[:]); err != nil {
		return nil, nil, false, err
	}
	req := binary.BigEndian.AppendUint16(nil, stunBindingRequest)
	req = binary.BigEndian.AppendUint16(req, 8)
	req = binary.BigEndian.AppendUint32(req, stunMagic)
	req = append(req, tid[:]...)
	req = binary.BigEndian.AppendUint16(req, attrChangeRequest)
	req = binary.BigEndian.AppendUint16(req, 4)
	req = binary.BigEndian.AppendUint32(req, change)
	buf := make([]byte, 1500)
	for range attempts {
		if _, err := conn.WriteToUDP(req, server); err != nil {
			return nil, nil, false, err
		}
		deadline := time.Now().Add(wait)
		for {
			if err := conn.SetReadDeadline(deadline); err != nil {
				return nil, nil, false, err
			}
			n, src, err := conn.ReadFromUDP(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return nil, nil, false, err
			}
			if m, ok := parseResponse(buf[:n], tid); ok {
				return m, src, true, nil
			}
		}
	}
	return nil, nil, false, nil
}

func parseResponse(b []byte, tid [12]byte) (*net.UDPAddr, bool) {
	if len(b) < 20 || binary.BigEndian.Uint16(b) != stunBindingSuccess || binary.BigEndian.Uint32(b[4:]) != stunMagic ||
		[12]byte(b[8:20]) != tid {
		return nil, false
	}
	attrs := b[20:]
	for len(attrs) >= 12 {
		typ, l := binary.BigEndian.Uint16(attrs), int(binary.BigEndian.Uint16(attrs[2:]))
		if typ == attrXorMapped && l == 8 && attrs[5] == 1 {
			port := binary.BigEndian.Uint16(attrs[6:]) ^ stunMagic>>16
			v := binary.BigEndian.Uint32(attrs[8:]) ^ stunMagic
			return &net.UDPAddr{IP: net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4(), Port: int(port)}, true
		}
		if 4+l > len(attrs) {
			break
		}
		attrs = attrs[4+(l+3)&^3:]
	}
	return nil, false
}

// NAT behaviours (RFC 4787 section 4.1 and 5; RFC 5780 section 4.3, 4.4).
const (
	EndpointIndependent     = "endpoint-independent"
	AddressDependent        = "address-dependent"
	AddressAndPortDependent = "address-and-port-dependent"
)

// Behaviour is what discovery found.
type Behaviour struct {
	Mapping, Filtering string
	// Mapped is the external endpoint of test I.
	Mapped *net.UDPAddr
}

// Discover runs RFC 5780's mapping (4.3) and filtering (4.4) tests from
// conn against a server whose primary address is primary and alternate
// address alternate (alternate IP and alternate port).
func Discover(conn *net.UDPConn, primary, alternate *net.UDPAddr) (Behaviour, error) {
	const attempts, wait = 3, 300 * time.Millisecond
	var b Behaviour
	m1, _, ok, err := STUNBinding(conn, primary, 0, attempts, wait)
	if err != nil || !ok {
		return b, fmt.Errorf("test I: no answer from %v (%v)", primary, err)
	}
	b.Mapped = m1
	m2, _, ok, err := STUNBinding(conn, &net.UDPAddr{IP: alternate.IP, Port: primary.Port}, 0, attempts, wait)
	if err != nil || !ok {
		return b, fmt.Errorf("mapping test II: no answer (%v)", err)
	}
	switch {
	case m2.String() == m1.String():
		b.Mapping = EndpointIndependent
	default:
		m3, _, ok, err := STUNBinding(conn, alternate, 0, attempts, wait)
		if err != nil || !ok {
			return b, fmt.Errorf("mapping test III: no answer (%v)", err)
		}
		b.Mapping = AddressAndPortDependent
		if m3.String() == m2.String() {
			b.Mapping = AddressDependent
		}
	}
	// Filtering: test II asks for the answer from the alternate address
	// and port, test III from the primary address's alternate port.
	if _, from, ok, err := STUNBinding(conn, primary, changeIP|changePort, attempts, wait); err != nil {
		return b, err
	} else if ok && from.IP.Equal(alternate.IP) && from.Port == alternate.Port {
		b.Filtering = EndpointIndependent
		return b, nil
	}
	if _, from, ok, err := STUNBinding(conn, primary, changePort, attempts, wait); err != nil {
		return b, err
	} else if ok && from.IP.Equal(primary.IP) && from.Port == alternate.Port {
		b.Filtering = AddressDependent
		return b, nil
	}
	b.Filtering = AddressAndPortDependent
	return b, nil
}
