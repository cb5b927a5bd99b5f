package bench

import (
	"flag"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"

	"xnat/flowtable"
)

func init() {
	Register(Scenario{
		Name:    "flowtable",
		Summary: "connection table: bytes/connection, lookups, inserts, 2-core scaling, vs map+RWMutex",
		Run:     runFlowtable,
	})
}

// FlowtableResult is one row of the flowtable scenario. The JSON keys are
// the ones the README and CI read.
type FlowtableResult struct {
	Flows           int     `json:"flows"`
	Impl            string  `json:"impl"` // the flow table implementation measured: avx2 or go
	BytesPerFlow    float64 `json:"bytes_per_flow"`
	LookupNs        float64 `json:"lookup_ns"`
	LookupBatchNs   float64 `json:"lookup_batch_ns"`
	InsertDeleteNs  float64 `json:"insert_delete_ns"`
	ParallelSpeedup float64 `json:"parallel_speedup"`
	VsMutexMap      float64 `json:"vs_mutex_map"`
	// The mixed workload again with its lookups batched on both sides
	// (LookupBatch; one read lock per batch on the peer).
	VsMutexMapBatched float64 `json:"vs_mutex_map_batched"`

	// The peer, a map[Tuple]*Flow under a sync.RWMutex, in the same run.
	PeerBytesPerFlow   float64 `json:"peer_bytes_per_flow"`
	PeerLookupNs       float64 `json:"peer_lookup_ns"`
	PeerInsertDeleteNs float64 `json:"peer_insert_delete_ns"`
	MixedMops          float64 `json:"mixed_mops"`
	PeerMixedMops      float64 `json:"peer_mixed_mops"`
	MixedBatchMops     float64 `json:"mixed_batch_mops"`
	PeerMixedBatchMops float64 `json:"peer_mixed_batch_mops"`
	Workers            int     `json:"workers"`
}

func runFlowtable(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("flowtable", flag.ContinueOnError)
	fs.SetOutput(w)
	flows := fs.String("flows", "1000000", "connections in the table: one number or a comma-separated list (up to 10000000 each)")
	jsonOut := fs.Bool("json", false, "one JSON object per line instead of a table")
	dur := fs.Duration("time", time.Second, "how long each timed measurement runs")
	workers := fs.Int("workers", 2, "goroutines for the parallel measurements")
	impl := implFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	ns, err := intList(*flows, 64, 10_000_000)
	if err != nil {
		return fmt.Errorf("--flows: %w", err)
	}
	if *workers < 1 || *workers > 255 {
		return fmt.Errorf("--workers %d: want 1 to 255", *workers)
	}
	if *dur <= 0 {
		return fmt.Errorf("--time %v: want a positive duration", *dur)
	}
	impls, restore, err := parseImpls(*impl)
	if err != nil {
		return err
	}
	defer restore()
	rep := report{w: w, json: *jsonOut}
	for _, n := range ns {
		for _, im := range impls {
			if err := flowtable.SetImpl(im); err != nil {
				return err
			}
			r, err := MeasureFlowtable(n, *workers, *dur)
			if err != nil {
				return err
			}
			if err := rep.add(r,
				[]string{humanize.Comma(int64(n)), "xnat flowtable (" + r.Impl + ")", dec1(r.BytesPerFlow), dec1(r.LookupNs), dec1(r.LookupBatchNs), dec1(r.InsertDeleteNs), fmt.Sprintf("%.2fx", r.ParallelSpeedup), dec2(r.MixedMops), fmt.Sprintf("%.1fx", r.VsMutexMap), dec2(r.MixedBatchMops), fmt.Sprintf("%.1fx", r.VsMutexMapBatched)},
				[]string{"", "map+RWMutex", dec1(r.PeerBytesPerFlow), dec1(r.PeerLookupNs), "-", dec1(r.PeerInsertDeleteNs), "-", dec2(r.PeerMixedMops), "1.0x", dec2(r.PeerMixedBatchMops), "1.0x"},
			); err != nil {
				return err
			}
		}
	}
	return rep.table([]string{"flows", "table", "B/conn", "lookup ns", "batch ns/key", "ins+del ns", fmt.Sprintf("lookup x%d cores", *workers), "mixed Mops", "vs peer", "batched Mops", "vs peer"})
}

// implFlag adds --impl to a scenario's flags.
func implFlag(fs *flag.FlagSet) *string {
	return fs.String("impl", "auto", "flow table implementation: auto (the vector code on the CPUs it was measured faster on, else go), go, or avx2 (the vector code on any CPU that runs it); a comma-separated list measures each size under each in turn")
}

// parseImpls reads --impl: implementations the CPU can run, each checked
// with flowtable.SetImpl. restore puts back the one in use before; the
// caller sets each in turn.
func parseImpls(list string) (impls []flowtable.Impl, restore func(), err error) {
	prev := flowtable.ActiveImpl()
	restore = func() { flowtable.SetImpl(prev) }
	defer restore()
	for _, name := range strings.Split(list, ",") {
		impl, err := flowtable.ParseImpl(strings.TrimSpace(name))
		if err == nil {
			err = flowtable.SetImpl(impl)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("--impl: %w", err)
		}
		impls = append(impls, impl)
	}
	return impls, restore, nil
}

func dec1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
func dec2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// flowKeys gives connection i its tuples: 10.x.y.z:port to one of 256
// servers on 443, translated to one of 256 external addresses. Every i has
// its own original and reply tuple.
func flowKeys(i int) flowtable.NewFlow {
	u := uint32(i)
	o := flowtable.MakeTuple(flowtable.ProtoTCP, 0x0A000000|u>>6, uint16(1024+u&63), 0xC6336400|u&255, 443)
	r := flowtable.MakeTuple(flowtable.ProtoTCP, o.Dst, 443, 0xCB007100|(u>>16)&255, uint16(u))
	return flowtable.NewFlow{Orig: o, Reply: r, Status: uint32(flowtable.TCPEstablished) | flowtable.FlagAssured | flowtable.FlagSeenReply}
}

// SampleKeys returns keys of random existing connections of a table
// filled by NewFilledTable, in either direction: a power of two of them
// (4n, at most 2^20), so that measurements walk them with a mask.
func SampleKeys(n int, seed uint64) []flowtable.Tuple {
	count := min(1<<20, 1<<bits.Len(uint(4*n-1)))
	rng := rand.New(rand.NewPCG(seed, 1))
	keys := make([]flowtable.Tuple, count)
	for i := range keys {
		nf := flowKeys(rng.IntN(n))
		keys[i] = nf.Orig
		if rng.IntN(2) == 1 {
			keys[i] = nf.Reply
		}
	}
	return keys
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// NewFilledTable builds a table of capacity n, with workers cores, holding
// n connections (flowKeys 0..n-1), each inserted through core i%workers so
// that every core's share is filled alike.
func NewFilledTable(n, workers int) (*flowtable.Table, error) {
	tab, err := flowtable.New(flowtable.Config{Capacity: n, Cores: workers})
	if err != nil {
		return nil, err
	}
	for w := range workers {
		c := tab.Core(w)
		c.Enter()
		for j := w; j < n; j += workers {
			if (j/workers)%256 == 0 {
				c.Exit()
				c.Enter()
			}
			nf := flowKeys(j)
			if _, res := c.Insert(&nf, 0); res != flowtable.Inserted {
				c.Exit()
				return nil, fmt.Errorf("filling the table: connection %d: %w", j, res.Err())
			}
		}
		c.Exit()
	}
	return tab, nil
}

// MakeRoom deletes the connections with the highest numbers from a table
// filled by NewFilledTable(n), enough for the insert measurements of
// workers cores to work below the limit rather than at it.
func MakeRoom(tab *flowtable.Table, n, workers int) {
	for i := n - min(n/2, 1100*workers+64); i < n; i++ {
		tab.Delete(flowKeys(i).Orig)
	}
}

// MeasureFlowtable runs every flowtable measurement at n connections, and
// the same on the map+RWMutex peer.
func MeasureFlowtable(n, workers int, dur time.Duration) (FlowtableResult, error) {
	res := FlowtableResult{Flows: n, Impl: flowtable.ActiveImpl().String(), Workers: workers}
	keys := SampleKeys(n, 99)

	// Ours.
	before := heapInUse()
	tab, err := NewFilledTable(n, workers)
	if err != nil {
		return res, err
	}
	res.BytesPerFlow = float64(heapInUse()-before) / float64(n)
	res.LookupNs = timePerOp(dur, func(iters int) {
		c := tab.Core(0)
		now := flowtable.Time(1)
		for i := 0; i < iters; i += 64 {
			c.Enter()
			for j := range 64 {
				if c.Lookup(&keys[(i+j)&(len(keys)-1)], now) == 0 {
					panic("bench: key not found")
				}
			}
			c.Exit()
		}
	}, 64)
	res.LookupBatchNs = timePerOp(dur, func(iters int) {
		c := tab.Core(0)
		var refs [64]flowtable.Ref
		for i := 0; i < iters; i += 64 {
			off := i & (len(keys) - 1) &^ 63
			c.Enter()
			c.LookupBatch(keys[off:off+64], refs[:], 1)
			c.Exit()
			if refs[5] == 0 {
				panic("bench: key not found")
			}
		}
	}, 64)
	MakeRoom(tab, n, workers)
	res.InsertDeleteNs = timePerOp(dur, InsertDelete(tab, 0, n), 64)
	one := throughput(dur, 1, LookupWorker(tab, keys))
	many := throughput(dur, workers, LookupWorker(tab, keys))
	res.ParallelSpeedup = many / one
	mixed := NewMixed(n, workers)
	res.MixedMops = throughput(dur, workers, mixed.Worker(tab, keys, false)) / 1e6
	res.MixedBatchMops = throughput(dur, workers, mixed.Worker(tab, keys, true)) / 1e6
	tab = nil
	runtime.GC()

	// The peer.
	before = heapInUse()
	peer := NewMutexMap(n)
	res.PeerBytesPerFlow = float64(heapInUse()-before) / float64(n)
	res.PeerLookupNs = timePerOp(dur, func(iters int) {
		for i := range iters {
			if peer.lookup(&keys[i&(len(keys)-1)]) == nil {
				panic("bench: key not found in peer")
			}
		}
	}, 1)
	res.PeerInsertDeleteNs = timePerOp(dur, func(iters int) {
		for i := range iters {
			nf := flowKeys(n + i%(1<<20))
			peer.insert(&nf)
			peer.delete(&nf)
		}
	}, 1)
	mixed = NewMixed(n, workers)
	res.PeerMixedMops = throughput(dur, workers, mixed.PeerWorker(peer, keys, false)) / 1e6
	res.PeerMixedBatchMops = throughput(dur, workers, mixed.PeerWorker(peer, keys, true)) / 1e6
	res.VsMutexMap = res.MixedMops / res.PeerMixedMops
	res.VsMutexMapBatched = res.MixedBatchMops / res.PeerMixedBatchMops
	return res, nil
}

// timePerOp runs fn with a growing iteration count until it takes dur, and
// returns ns per iteration.
func timePerOp(dur time.Duration, fn func(iters int), step int) float64 {
	iters := step * 16
	for {
		start := time.Now()
		fn(iters)
		el := time.Since(start)
		if el >= dur || iters >= 1<<34 {
			return float64(el.Nanoseconds()) / float64(iters)
		}
		next := int(float64(iters) * 1.2 * float64(dur) / float64(max(el, time.Microsecond)))
		iters = max(min(next, 100*iters), iters+step) / step * step
	}
}

// Throughput is throughput, for go test -bench: operations per second of
// workers goroutines running fn for dur.
func Throughput(dur time.Duration, workers int, fn func(w int, stop *atomic.Bool) int) float64 {
	return throughput(dur, workers, fn)
}

// throughput measures fn three times over dur/3 each and returns the best
// rate: on a shared machine the best run is the least disturbed one.
func throughput(dur time.Duration, workers int, fn func(w int, stop *atomic.Bool) int) float64 {
	best := 0.0
	for range 3 {
		best = max(best, throughputOnce(dur/3, workers, fn))
	}
	return best
}

// throughputOnce runs workers goroutines, each calling fn(worker, stop)
// until stop is set, and returns operations per second over all of them.
func throughputOnce(dur time.Duration, workers int, fn func(w int, stop *atomic.Bool) int) float64 {
	var wg sync.WaitGroup
	counts := make([]int, workers)
	stops := make([]atomic.Bool, workers)
	start := time.Now()
	var mu sync.Mutex
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			n := fn(w, &stops[w])
			mu.Lock()
			counts[w] = n
			mu.Unlock()
		}()
	}
	time.Sleep(dur)
	for w := range stops {
		stops[w].Store(true)
	}
	wg.Wait()
	el := time.Since(start)
	total := 0
	for _, n := range counts {
		total += n
	}
	return float64(total) / el.Seconds()
}

// InsertDelete returns a loop that inserts iters connections absent from a
// table filled by NewFilledTable(n) and deletes each, with the owner's
// sweep retiring and recycling records as a worker does.
func InsertDelete(tab *flowtable.Table, core, n int) func(iters int) {
	return func(iters int) {
		c := tab.Core(core)
		var gone [64]flowtable.Gone
		for i := 0; i < iters; i += 64 {
			c.Enter()
			for j := range 64 {
				nf := flowKeys(n + (i+j)%(1<<20))
				r, res := c.Insert(&nf, 1)
				if res != flowtable.Inserted {
					panic("bench: insert: " + res.String())
				}
				c.Kill(r)
			}
			c.Sweep(1, 128, gone[:])
			c.Exit()
		}
	}
}

// LookupWorker is the parallel lookup workload: worker w looks up keys
// through core w until stop is set, and returns how many it did.
func LookupWorker(tab *flowtable.Table, keys []flowtable.Tuple) func(int, *atomic.Bool) int {
	return func(w int, stop *atomic.Bool) int {
		c := tab.Core(w)
		done := 0
		for off := w * 4096; !stop.Load(); off += 64 {
			c.Enter()
			for j := range 64 {
				c.Lookup(&keys[(off+j)&(len(keys)-1)], 1)
			}
			c.Exit()
			done += 64
		}
		return done
	}
}

// Mixed is the mixed workload: of every 64 operations, 56 look up a
// random existing connection, 4 insert a new one and 4 delete one this
// worker inserted earlier, so the table stays at n connections. Each
// worker's insert and delete positions live here, across runs: a run
// goes on where the last one stopped, so runs after runs (the best of
// three, then the batched variant) leave no more than one run's worth of
// connections behind, however many there are.
type Mixed struct {
	n        int
	ins, del []int
}

// NewMixed prepares the mixed workload for a table (or peer) holding n
// connections, for up to workers workers.
func NewMixed(n, workers int) *Mixed {
	return &Mixed{n: n, ins: make([]int, workers), del: make([]int, workers)}
}

// Worker runs the workload on tab. With batch, the 56 lookups are one
// LookupBatch, as the pipeline looks up a batch of frames (and the peer
// takes its read lock once for them); without, each is a lookup of its
// own on both.
func (m *Mixed) Worker(tab *flowtable.Table, keys []flowtable.Tuple, batch bool) func(int, *atomic.Bool) int {
	return func(w int, stop *atomic.Bool) int {
		c := tab.Core(w)
		var gone [64]flowtable.Gone
		var refs [56]flowtable.Ref
		base := m.n + w<<22
		ins, del := m.ins[w], m.del[w]
		done := 0
		for off := w * 4096; !stop.Load(); off += 64 {
			c.Enter()
			if o := off & (len(keys) - 1); batch {
				c.LookupBatch(keys[o:o+56], refs[:], 1)
			} else {
				for j := range refs {
					refs[j] = c.Lookup(&keys[o+j], 1)
				}
			}
			for range 4 {
				nf := flowKeys(base + ins%(1<<20))
				ins++
				c.Insert(&nf, 1)
			}
			for range 4 {
				if ins-del > 1024 {
					nf := flowKeys(base + del%(1<<20))
					del++
					if r := c.Lookup(&nf.Orig, 1); r != 0 {
						c.Kill(r)
					}
				}
			}
			c.Sweep(1, 64, gone[:])
			c.Exit()
			done += 64
		}
		m.ins[w], m.del[w] = ins, del
		return done
	}
}

// MutexMap is the Go-idiomatic peer: a map from each direction's tuple to
// a heap-allocated flow, under a sync.RWMutex.
type MutexMap struct {
	mu sync.RWMutex
	m  map[flowtable.Tuple]*peerFlow
}

type peerFlow struct {
	orig, reply flowtable.Tuple
	status      uint32
	mark        uint32
	last        int64
}

// NewMutexMap builds the peer holding connections 0..n-1.
func NewMutexMap(n int) *MutexMap {
	p := &MutexMap{m: make(map[flowtable.Tuple]*peerFlow)}
	for i := range n {
		nf := flowKeys(i)
		p.insert(&nf)
	}
	return p
}

// lookup finds a connection and, as any connection tracker must, checks
// it has not expired: the peer reads its flow as xnat reads its record.
func (p *MutexMap) lookup(k *flowtable.Tuple) *peerFlow {
	p.mu.RLock()
	f := p.m[*k]
	p.mu.RUnlock()
	if f == nil || peerNow-f.last > peerTimeout {
		return nil
	}
	return f
}

// lookupBatch is lookup over several keys under one read lock.
func (p *MutexMap) lookupBatch(keys []flowtable.Tuple, out []*peerFlow) {
	p.mu.RLock()
	for i := range keys {
		out[i] = p.m[keys[i]]
	}
	p.mu.RUnlock()
	for i, f := range out[:len(keys)] {
		if f != nil && peerNow-f.last > peerTimeout {
			out[i] = nil
		}
	}
}

const (
	peerNow     = 1
	peerTimeout = 432000
)

func (p *MutexMap) insert(nf *flowtable.NewFlow) {
	f := &peerFlow{orig: nf.Orig, reply: nf.Reply, status: nf.Status, mark: nf.Mark}
	p.mu.Lock()
	if _, ok := p.m[nf.Orig]; !ok {
		p.m[nf.Orig] = f
		p.m[nf.Reply] = f
	}
	p.mu.Unlock()
}

func (p *MutexMap) delete(nf *flowtable.NewFlow) {
	p.mu.Lock()
	if f, ok := p.m[nf.Orig]; ok {
		delete(p.m, f.orig)
		delete(p.m, f.reply)
	}
	p.mu.Unlock()
}

// PeerWorker is Worker on the peer.
func (m *Mixed) PeerWorker(p *MutexMap, keys []flowtable.Tuple, batch bool) func(int, *atomic.Bool) int {
	return func(w int, stop *atomic.Bool) int {
		base := m.n + w<<22
		ins, del := m.ins[w], m.del[w]
		done := 0
		var found [56]*peerFlow
		for off := w * 4096; !stop.Load(); off += 64 {
			if o := off & (len(keys) - 1); batch {
				p.lookupBatch(keys[o:o+56], found[:])
			} else {
				for j := range found {
					found[j] = p.lookup(&keys[o+j])
				}
			}
			for range 4 {
				nf := flowKeys(base + ins%(1<<20))
				ins++
				p.insert(&nf)
			}
			for range 4 {
				if ins-del > 1024 {
					nf := flowKeys(base + del%(1<<20))
					del++
					p.delete(&nf)
				}
			}
			done += 64
		}
		m.ins[w], m.del[w] = ins, del
		return done
	}
}
