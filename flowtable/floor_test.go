package flowtable

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// zeroMask is 0, in a variable so that the compiler cannot fold it: the
// floor below uses it to make a record's address depend on its bucket's
// load, as a real lookup's does.
var zeroMask uint32

// BenchmarkLookupBatchFloor is LookupBatch beside the floor the memory
// system sets for its access pattern, on the same table and keys in the
// same run: "lookup" is LookupBatch; "floor" touches exactly the lines a
// batch reads, in the same dependent passes (each key's first bucket,
// then its record's one or two lines, whose address waits for the
// bucket's load), with the positions computed beforehand and nothing
// compared. The floor's touches are loads, and a load that misses holds
// one of L1's few miss buffers until its line arrives; since LookupBatch
// prefetches into L2 instead (PREFETCHT1), which keeps many more misses
// in flight, it runs below this "floor" at a million connections. The
// floor is what loads alone reach on this access pattern.
func BenchmarkLookupBatchFloor(b *testing.B) {
	for _, n := range []int{1000, 100_000, 1_000_000} {
		t, keys := floorTable(b, n)
		type pos struct {
			b   uint64
			rec uint32
		}
		at := make([]pos, len(keys))
		for i := range keys {
			b1, _, _ := t.place(t.h.hash(&keys[i]))
			r := t.lookup(&keys[i], 1, new(uint64))
			if r == 0 {
				b.Fatalf("key %d not found", i)
			}
			at[i] = pos{b1, r.idx()}
		}
		c := t.Core(0)
		b.Run(fmt.Sprintf("%d/lookup", n), func(b *testing.B) {
			var refs [batchMax]Ref
			for i := 0; i < b.N; i += batchMax {
				off := i & (len(keys) - 1) &^ (batchMax - 1)
				c.Enter()
				c.LookupBatch(keys[off:off+batchMax], refs[:], 1)
				c.Exit()
			}
		})
		b.Run(fmt.Sprintf("%d/floor", n), func(b *testing.B) {
			var deps [batchMax]uint32
			var sink uint32
			for i := 0; i < b.N; i += batchMax {
				off := i & (len(keys) - 1) &^ (batchMax - 1)
				batch := at[off : off+batchMax]
				for j := range batch {
					deps[j] = t.buckets[batch[j].b][0].Load() & zeroMask
				}
				for j := range batch {
					f := &t.recs[batch[j].rec^deps[j]]
					sink += f.orig.Src + f.status.Load()
				}
			}
			c.sink += sink
		})
	}
}

// floorTable fills a one-core table with n random connections and
// returns keys of random ones in either direction, a power of two of
// them.
func floorTable(b *testing.B, n int) (*Table, []Tuple) {
	b.Helper()
	t, err := New(Config{Capacity: n, Cores: 1, Seed: 7})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	c := t.Core(0)
	flows := make([]NewFlow, 0, n)
	c.Enter()
	for len(flows) < n {
		o := MakeTuple(ProtoUDP, rng.Uint32(), uint16(rng.Uint32()), rng.Uint32(), 53)
		nf := NewFlow{Orig: o, Reply: MakeTuple(ProtoUDP, o.Dst, 53, 0xCB007101, uint16(rng.Uint32())), Status: uint32(UDPStream) | FlagSeenReply | FlagAssured}
		if _, res := c.Insert(&nf, 1); res == Inserted {
			flows = append(flows, nf)
		}
		if len(flows)%256 == 0 {
			c.Exit()
			c.Enter()
		}
	}
	c.Exit()
	keys := make([]Tuple, 1<<20)
	if n < 1<<18 {
		keys = keys[:1<<16]
	}
	for i := range keys {
		nf := &flows[rng.IntN(n)]
		keys[i] = nf.Orig
		if rng.IntN(2) == 1 {
			keys[i] = nf.Reply
		}
	}
	return t, keys
}
