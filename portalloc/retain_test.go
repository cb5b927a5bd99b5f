package portalloc

import (
	"testing"

	"xnat/flowtable"
)

func TestRetainAndExclusive(t *testing.T) {
	tab, err := flowtable.New(flowtable.Config{Capacity: 1024, Cores: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	const ext = 0xCB007101
	as, err := New(Pool{AddrLo: ext, AddrHi: ext, PortLo: 5000, PortHi: 5003}, 1, NewShared(1, nil))
	if err != nil {
		t.Fatal(err)
	}
	a := as[0]
	if !a.Retain(flowtable.ProtoUDP, ext, 5000) || a.Uses(flowtable.ProtoUDP, ext, 5000) != 1 {
		t.Fatal("Retain did not count")
	}
	if a.Retain(flowtable.ProtoUDP, ext, 6000) || a.Retain(flowtable.ProtoUDP, ext+1, 5000) || a.Retain(47, ext, 5000) {
		t.Fatal("Retain outside the slice")
	}
	if a.Stats().PortsInUse != 1 {
		t.Fatalf("ports in use %d", a.Stats().PortsInUse)
	}
	c := tab.Core(0)
	c.Enter()
	defer c.Exit()
	// Exclusive: the retained port is not given, though it is the
	// source's own and its reply tuple free.
	nf := flowtable.NewFlow{Orig: flowtable.MakeTuple(flowtable.ProtoUDP, 0x0A000002, 5000, 0xC6336407, 53), Status: uint32(flowtable.UDP)}
	nf.Reply = flowtable.MakeTuple(flowtable.ProtoUDP, 0xC6336407, 53, 0, 0)
	_, res, _ := a.Allocate(c, &nf, Options{Exclusive: true}, 0)
	if res != OK || nf.Reply.DstPort == 5000 {
		t.Fatalf("exclusive allocation: %v port %d", res, nf.Reply.DstPort)
	}
	// Not exclusive: the port is shared as ever.
	nf2 := nf
	nf2.Orig.Dst, nf2.Reply.Src = 0xC6336408, 0xC6336408
	if _, res, _ := a.Allocate(c, &nf2, Options{}, 0); res != OK || nf2.Reply.DstPort != 5000 {
		t.Fatalf("ordinary allocation: %v port %d", res, nf2.Reply.DstPort)
	}
	if a.Uses(flowtable.ProtoUDP, ext, 5000) != 2 {
		t.Fatalf("uses %d", a.Uses(flowtable.ProtoUDP, ext, 5000))
	}
	a.Unretain(flowtable.ProtoUDP, ext, 5000)
	a.Unretain(flowtable.ProtoUDP, ext, 5000)
	a.Unretain(flowtable.ProtoUDP, ext, 5000) // below zero: ignored
	if a.Uses(flowtable.ProtoUDP, ext, 5000) != 0 {
		t.Fatalf("uses after Unretain %d", a.Uses(flowtable.ProtoUDP, ext, 5000))
	}
}

func TestParity(t *testing.T) {
	tab, err := flowtable.New(flowtable.Config{Capacity: 4096, Cores: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	const ext = 0xCB007101
	as, err := New(Pool{AddrLo: ext, AddrHi: ext, PortLo: 1024, PortHi: 65535}, 1, NewShared(1, nil))
	if err != nil {
		t.Fatal(err)
	}
	a := as[0]
	c := tab.Core(0)
	c.Enter()
	defer func() { c.Exit() }()
	// Source ports below the pool: never kept, always searched for.
	for i := range 400 {
		sport := uint16(100 + i)
		nf := flowtable.NewFlow{Orig: flowtable.MakeTuple(flowtable.ProtoUDP, 0x0A000002, sport, 0xC6336407, 53), Status: uint32(flowtable.UDP)}
		nf.Reply = flowtable.MakeTuple(flowtable.ProtoUDP, 0xC6336407, 53, 0, 0)
		if _, res, _ := a.Allocate(c, &nf, Options{Exclusive: true, Parity: true}, 0); res != OK {
			t.Fatalf("allocation %d: %v", i, res)
		}
		if nf.Reply.DstPort&1 != sport&1 {
			t.Fatalf("source port %d got %d: parity not kept", sport, nf.Reply.DstPort)
		}
	}
	// A pool of two ports, one taken: the other parity serves. A table
	// of its own: the 400 connections above hold random ports of the
	// same remote endpoint, 5001 among them now and then.
	tab, err = flowtable.New(flowtable.Config{Capacity: 64, Cores: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	c.Exit()
	c = tab.Core(0)
	c.Enter()
	as, err = New(Pool{AddrLo: ext, AddrHi: ext, PortLo: 5000, PortHi: 5001}, 1, NewShared(1, nil))
	if err != nil {
		t.Fatal(err)
	}
	a = as[0]
	a.Retain(flowtable.ProtoUDP, ext, 5000)
	nf := flowtable.NewFlow{Orig: flowtable.MakeTuple(flowtable.ProtoUDP, 0x0A000002, 90, 0xC6336407, 53), Status: uint32(flowtable.UDP)}
	nf.Reply = flowtable.MakeTuple(flowtable.ProtoUDP, 0xC6336407, 53, 0, 0)
	if _, res, _ := a.Allocate(c, &nf, Options{Exclusive: true, Parity: true}, 0); res != OK || nf.Reply.DstPort != 5001 {
		t.Fatalf("fallback to the other parity: %v port %d", res, nf.Reply.DstPort)
	}
}
