package daemon

import (
	"net"
	"strings"
	"testing"
	"time"

	"xnat/flowtable"
	"xnat/internal/nattest"
)

var (
	ipAlt   = net.IPv4(192, 0, 2, 3) // the STUN server's alternate address
	ipThird = net.IPv4(192, 0, 2, 4) // a host the inside socket never contacts
)

// stunBed starts xnat with the rules and a STUN server with two addresses
// (192.0.2.2 and .3, ports 3478 and 3479) in the server's namespace.
func stunBed(t *testing.T, rules string) *bed {
	b := newBed(t, bedOpts{rules: rules})
	for _, a := range []string{"192.0.2.3/24", "192.0.2.4/24"} {
		must(t, b.sv.AddAddr("s0", a))
	}
	mac, err := b.sv.MAC("s0")
	must(t, err)
	for _, a := range []string{"192.0.2.3", "192.0.2.4"} {
		must(t, b.x.AddNeigh("x1", a, mac))
	}
	nattest.STUNServer(t, b.sv, ipSrv, ipAlt, 3478, 3479)
	return b
}

var (
	stunPrimary   = &net.UDPAddr{IP: ipSrv, Port: 3478}
	stunAlternate = &net.UDPAddr{IP: ipAlt, Port: 3479}
)

// TestFullConeBehaviourDiscovery: RFC 5780 discovery through FULLCONENAT
// finds endpoint-independent mapping and filtering; through MASQUERADE,
// address-and-port-dependent filtering. (MASQUERADE's mapping is not
// checked: the socket's port, from the kernel's ephemeral range, which
// xnat leaves to the box's own sockets, cannot be kept, and the port the
// search finds depends on the destination.)
func TestFullConeBehaviourDiscovery(t *testing.T) {
	for _, c := range []struct {
		name, rules, mapping, filtering string
	}{
		{"FULLCONENAT", nattest.FullConeRules, nattest.EndpointIndependent, nattest.EndpointIndependent},
		{"MASQUERADE", baseRules, "", nattest.AddressAndPortDependent},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := stunBed(t, c.rules)
			conn := nattest.ListenUDP(t, b.insA, ipA, 0)
			got, err := nattest.Discover(conn, stunPrimary, stunAlternate)
			if err != nil {
				t.Fatal(err)
			}
			if (c.mapping != "" && got.Mapping != c.mapping) || got.Filtering != c.filtering {
				t.Fatalf("mapping %s, filtering %s; want %s, %s", got.Mapping, got.Filtering, c.mapping, c.filtering)
			}
			if !got.Mapped.IP.Equal(ipExt) {
				t.Fatalf("mapped to %v, want an endpoint on %v", got.Mapped, ipExt)
			}
		})
	}
}

// TestFullConeThirdHost: one inside socket sees the same external endpoint
// from two servers, receives a datagram from a third host it never
// contacted and answers it from that endpoint; the mapping is listed with
// its connections. A second inside host reaches the first through its
// mapping (hairpinning), seen as its own mapping.
func TestFullConeThirdHost(t *testing.T) {
	b := stunBed(t, nattest.FullConeRules)
	conn := nattest.ListenUDP(t, b.insA, ipA, 0)
	m1, _, ok, err := nattest.STUNBinding(conn, stunPrimary, 0, 3, 300*time.Millisecond)
	if err != nil || !ok {
		t.Fatalf("server 1: %v %v", ok, err)
	}
	m2, _, ok, err := nattest.STUNBinding(conn, &net.UDPAddr{IP: ipAlt, Port: 3478}, 0, 3, 300*time.Millisecond)
	if err != nil || !ok {
		t.Fatalf("server 2: %v %v", ok, err)
	}
	if m1.String() != m2.String() || !m1.IP.Equal(ipExt) {
		t.Fatalf("mapped to %v by one server and %v by the other", m1, m2)
	}

	third := nattest.ListenUDP(t, b.sv, ipThird, 5555)
	must(t, conn.SetReadDeadline(time.Now().Add(3*time.Second)))
	buf := make([]byte, 1500)
	var from *net.UDPAddr
	for range 5 {
		if _, err := third.WriteToUDP([]byte("unsolicited hello"), m1); err != nil {
			t.Fatal(err)
		}
		must(t, conn.SetReadDeadline(time.Now().Add(500*time.Millisecond)))
		var n int
		if n, from, err = conn.ReadFromUDP(buf); err == nil {
			if string(buf[:n]) != "unsolicited hello" {
				t.Fatalf("got %q", buf[:n])
			}
			break
		}
	}
	if err != nil {
		t.Fatalf("the third host's datagram did not arrive: %v", err)
	}
	if !from.IP.Equal(ipThird) || from.Port != 5555 {
		t.Fatalf("datagram from %v, want %v:5555", from, ipThird)
	}
	if _, err := conn.WriteToUDP([]byte("answer"), from); err != nil {
		t.Fatal(err)
	}
	must(t, third.SetReadDeadline(time.Now().Add(2*time.Second)))
	n, src, err := third.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "answer" || src.String() != m1.String() {
		t.Fatalf("third host got %q from %v (%v), want \"answer\" from %v", buf[:n], src, err, m1)
	}

	// The mapping as the control plane lists it.
	var found bool
	out := make([]flowtable.FlowInfo, 64)
	n, _ = b.d.Dataplane().Mappings.List(0, out)
	for _, fi := range out[:n] {
		if fi.Reply.DstPort == uint16(m1.Port) && flowtable.FormatAddr(fi.Orig.Src) == ipA.String() {
			found = fi.Status&flowtable.FlagUserMask>>flowtable.FlagUserShift == 3
		}
	}
	if !found {
		t.Fatalf("mapping of %v not listed with its 3 connections: %+v", m1, out[:n])
	}
	c := b.d.Dataplane().TotalCounters()
	if c.MapCreated < 1 || c.MapReused < 1 || c.MapInbound < 1 {
		t.Fatalf("created %d reused %d inbound %d", c.MapCreated, c.MapReused, c.MapInbound)
	}

	// Hairpinning: B learns its own mapping, then sends to A's.
	connB := nattest.ListenUDP(t, b.insB, ipB, 0)
	mb, _, ok, err := nattest.STUNBinding(connB, stunPrimary, 0, 3, 300*time.Millisecond)
	if err != nil || !ok {
		t.Fatalf("B's binding: %v %v", ok, err)
	}
	for range 5 {
		if _, err := connB.WriteToUDP([]byte("hairpin"), m1); err != nil {
			t.Fatal(err)
		}
		must(t, conn.SetReadDeadline(time.Now().Add(500*time.Millisecond)))
		if n, from, err = conn.ReadFromUDP(buf); err == nil && string(buf[:n]) == "hairpin" {
			break
		}
	}
	if err != nil || from.String() != mb.String() {
		t.Fatalf("hairpinned datagram from %v (%v), want B's mapping %v", from, err, mb)
	}
	if _, err := conn.WriteToUDP([]byte("back"), from); err != nil {
		t.Fatal(err)
	}
	must(t, connB.SetReadDeadline(time.Now().Add(2*time.Second)))
	n, src, err = connB.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "back" || src.String() != m1.String() {
		t.Fatalf("B got %q from %v (%v), want \"back\" from %v", buf[:n], src, err, m1)
	}
	if !strings.HasPrefix(mb.IP.String(), "192.0.2.1") {
		t.Fatalf("B mapped to %v", mb)
	}
}

// TestFullConeAddressChange: when the outside address goes away, its
// mappings go with its connections, and the inside socket gets a new
// mapping on the new address.
func TestFullConeAddressChange(t *testing.T) {
	b := newBed(t, bedOpts{rules: nattest.FullConeRules})
	udpEcho(t, b.sv, ipSrv, 7000)
	c := udpDial(t, b.insA, &net.UDPAddr{IP: ipA, Port: 5000}, &net.UDPAddr{IP: ipSrv, Port: 7000})
	if got, err := ask(c, "before", 1); err != nil || !strings.HasPrefix(got, "192.0.2.1:") {
		t.Fatalf("before the change: %q, %v", got, err)
	}
	if n := b.d.Dataplane().Mappings.Count(); n != 1 {
		t.Fatalf("%d mappings", n)
	}
	must(t, b.x.DelAddr("x1", "192.0.2.1/24"))
	must(t, b.x.AddAddr("x1", "192.0.2.3/24"))
	eventually(t, "the flush", func() bool { return b.d.Stats().Flushed == 1 && b.d.Dataplane().Mappings.Count() == 0 })
	if got, err := ask(c, "after", 4); err != nil || !strings.HasPrefix(got, "192.0.2.3:") {
		t.Fatalf("after the change the server saw %q (%v), want the new address", got, err)
	}
	eventually(t, "the new mapping", func() bool {
		out := make([]flowtable.FlowInfo, 4)
		n, _ := b.d.Dataplane().Mappings.List(0, out)
		return n == 1 && flowtable.FormatAddr(out[0].Reply.Dst) == "192.0.2.3"
	})
	if c := b.d.Dataplane().TotalCounters(); c.MapCreated != 2 || c.MapFailed != 0 {
		t.Fatalf("created %d failed %d", c.MapCreated, c.MapFailed)
	}
}

// TestFullConeAcrossQueues: a mapping made by one queue's worker admits a
// datagram that arrives on the other queue's worker. Which queue a flow
// arrives on is the veth's choice (the sender's transmit queue), so
// endpoints are tried until one's mapping owner and its inbound datagram's
// worker differ.
func TestFullConeAcrossQueues(t *testing.T) {
	b := stunBed(t, nattest.FullConeRules)
	third := nattest.ListenUDP(t, b.sv, ipThird, 0)
	dp := b.d.Dataplane()
	buf := make([]byte, 1500)
	for i := range 32 {
		conn := nattest.ListenUDP(t, b.insA, ipA, 0)
		m, _, ok, err := nattest.STUNBinding(conn, stunPrimary, 0, 3, 300*time.Millisecond)
		if err != nil || !ok {
			t.Fatalf("endpoint %d: binding %v %v", i, ok, err)
		}
		owner := -1
		out := make([]flowtable.FlowInfo, 64)
		n, _ := dp.Mappings.List(0, out)
		for _, fi := range out[:n] {
			if int(fi.Reply.DstPort) == m.Port {
				owner = fi.Owner
			}
		}
		if owner < 0 {
			t.Fatalf("endpoint %d: mapping %v not listed", i, m)
		}
		before := dp.Counters()
		var got bool
		for range 4 {
			if _, err := third.WriteToUDP([]byte("x"), m); err != nil {
				t.Fatal(err)
			}
			must(t, conn.SetReadDeadline(time.Now().Add(500*time.Millisecond)))
			if _, _, err := conn.ReadFromUDP(buf); err == nil {
				got = true
				break
			}
		}
		if !got {
			t.Fatalf("endpoint %d: the third host's datagram to %v did not arrive", i, m)
		}
		after := dp.Counters()
		for c := range after {
			if after[c].MapInbound > before[c].MapInbound && c != owner {
				t.Logf("endpoint %d: mapping made on core %d, inbound admitted on core %d", i, owner, c)
				return
			}
		}
	}
	t.Fatal("32 endpoints' inbound datagrams all arrived on the worker that made their mapping")
}
