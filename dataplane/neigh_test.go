package dataplane

import (
	"sync"
	"sync/atomic"
	"testing"

	"xnat/dataplane/topo"
)

func tn(ix int, ip uint32, last byte, st topo.NeighState) topo.Neigh {
	return topo.Neigh{IfIndex: ix, IP: ip, MAC: [6]byte{2, 0, 0, 0, byte(ip >> 8), last}, State: st}
}

// TestNeighTable: entries change one at a time; only changes the cores
// act on (state class, address, every failure) move the generation; a
// delete leaves the entry gone; Sync reconciles with a dump; growth past
// the first array keeps every entry.
func TestNeighTable(t *testing.T) {
	nt := NewNeighTable()
	g := nt.Gen()
	nt.Update(tn(2, 10, 1, topo.NeighValid), true)
	if n, ok := nt.Lookup(2, 10); !ok || n.State != topo.NeighValid || n.MAC != tn(2, 10, 1, 0).MAC || nt.Gen() == g {
		t.Fatalf("after add: %+v %v, gen %d", n, ok, nt.Gen())
	}
	g = nt.Gen()
	nt.Update(tn(2, 10, 1, topo.NeighValid), true) // REACHABLE -> STALE: the same to the dataplane
	if nt.Gen() != g {
		t.Fatal("an unchanged neighbour moved the generation")
	}
	nt.Update(tn(2, 10, 2, topo.NeighValid), true)
	if n, _ := nt.Lookup(2, 10); n.MAC != tn(2, 10, 2, 0).MAC || nt.Gen() == g {
		t.Fatalf("new address not taken: %+v", n)
	}
	nt.Update(tn(2, 10, 0, topo.NeighFailed), true)
	g = nt.Gen()
	nt.Update(tn(2, 10, 0, topo.NeighFailed), true)
	if nt.Gen() == g {
		t.Fatal("a second failure did not move the generation")
	}
	nt.Update(tn(2, 10, 0, 0), false)
	if _, ok := nt.Lookup(2, 10); ok {
		t.Fatal("deleted neighbour still found")
	}
	if _, ok := nt.Lookup(3, 10); ok {
		t.Fatal("a neighbour on another interface found")
	}
	// Growth and Sync.
	var list []topo.Neigh
	for i := range 3000 {
		list = append(list, tn(4, uint32(0x0a000000+i), byte(i), topo.NeighValid))
	}
	nt.Sync(list)
	for _, n := range list {
		if got, ok := nt.Lookup(4, n.IP); !ok || got.MAC != n.MAC {
			t.Fatalf("%x after growth: %+v %v", n.IP, got, ok)
		}
	}
	nt.Sync(list[:10])
	if _, ok := nt.Lookup(4, list[10].IP); ok {
		t.Fatal("Sync left a neighbour the dump did not list")
	}
	if _, ok := nt.Lookup(4, list[9].IP); !ok {
		t.Fatal("Sync lost a listed neighbour")
	}
}

// TestNeighTableConcurrent: cores read while the writer changes and grows
// the table (run with -race); a reader never sees a key without its
// value.
func TestNeighTableConcurrent(t *testing.T) {
	nt := NewNeighTable()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				s := nt.slots.Load()
				for i := range uint32(2000) {
					if _, v := s.lookup(5, i); v != 0 && neighState(v) == neighGone && v>>4&0xfff == 0 {
						t.Error("a key without its value")
						return
					}
				}
			}
		}()
	}
	for round := range 3 {
		for i := range uint32(2000) {
			nt.Update(tn(5, i, byte(round), topo.NeighValid), true)
		}
		for i := range uint32(2000) {
			nt.Update(tn(5, i, 0, 0), i%2 == 0)
		}
	}
	stop.Store(true)
	wg.Wait()
}
