package bench

import (
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"xnat/control/iptables"
	"xnat/dataplane"
	"xnat/dataplane/header"
	"xnat/dataplane/rules"
	"xnat/dataplane/topo"
	"xnat/flowtable"
)

func init() {
	Register(Scenario{
		Name:    "pipeline",
		Summary: "the packet pipeline on one core over synthetic frames: Mpps, ns/packet, new connections/s",
		Run:     runPipeline,
	})
}

// PipelineResult is one row of the pipeline scenario.
type PipelineResult struct {
	Flows        int     `json:"flows"`
	Impl         string  `json:"impl"` // the flow table implementation measured: avx2 or go
	Proto        string  `json:"proto"`
	Ports        string  `json:"ports"`
	NAT          string  `json:"nat"`        // MASQUERADE or FULLCONENAT
	TCPWindow    bool    `json:"tcp_window"` // TCP window tracking on (as in xnatd)
	Batch        int     `json:"batch"`
	Mpps         float64 `json:"mpps"`
	NsPerPkt     float64 `json:"ns_per_pkt"`
	NewPerSec    float64 `json:"new_per_sec,omitempty"`
	AllocsPerPkt float64 `json:"allocs_per_pkt"`
	// The harness alone (refilling frames as an RX ring would, no
	// pipeline), in the same run: what ns_per_pkt includes that is not
	// xnat's.
	HarnessNsPerPkt float64 `json:"harness_ns_per_pkt"`
}

func runPipeline(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("pipeline", flag.ContinueOnError)
	fs.SetOutput(w)
	flows := fs.String("flows", "1000,1000000", "active connections: one number or a comma-separated list (up to 4000000)")
	proto := fs.String("proto", "udp", "udp or tcp")
	batch := fs.Int("batch", 64, "frames per batch (1 to 256)")
	newConns := fs.Bool("new", false, "also measure new connections per second")
	ports := fs.String("ports", "shared", "source ports: shared (64 per host, so a kept port's reply tuple is taken for nearly every connection and the allocator searches) or distinct (every kept port is free)")
	dur := fs.Duration("time", 2*time.Second, "how long the established-traffic measurement runs")
	jsonOut := fs.Bool("json", false, "one JSON object per line")
	impl := implFlag(fs)
	window := fs.String("tcp-window", "on", "TCP window tracking (Linux's tcp_in_window): on (as xnatd runs), off, or both (each row twice)")
	fullCone := fs.Bool("fullcone", false, "measure each row twice, with MASQUERADE and with FULLCONENAT (endpoint-independent mappings) in POSTROUTING")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *proto != "udp" && *proto != "tcp" {
		return fmt.Errorf("--proto %q: want udp or tcp", *proto)
	}
	if *ports != "shared" && *ports != "distinct" {
		return fmt.Errorf("--ports %q: want shared or distinct", *ports)
	}
	if *batch < 1 || *batch > 256 {
		return fmt.Errorf("--batch %d: want 1 to 256", *batch)
	}
	if *dur <= 0 {
		return fmt.Errorf("--time %v: want a positive duration", *dur)
	}
	var windows []bool
	switch *window {
	case "on":
		windows = []bool{true}
	case "off":
		windows = []bool{false}
	case "both":
		windows = []bool{true, false}
	default:
		return fmt.Errorf("--tcp-window %q: want on, off or both", *window)
	}
	impls, restore, err := parseImpls(*impl)
	if err != nil {
		return err
	}
	defer restore()
	ns, err := intList(*flows, 1, 4_000_000)
	if err != nil {
		return fmt.Errorf("--flows: %w", err)
	}
	rep := report{w: w, json: *jsonOut}
	for _, n := range ns {
		nats := []string{NATMasquerade}
		if *fullCone {
			nats = append(nats, NATFullCone)
		}
		for _, im := range impls {
			if err := flowtable.SetImpl(im); err != nil {
				return err
			}
			for _, nat := range nats {
				for _, win := range windows {
					r, err := MeasurePipelineOpts(n, *proto, *ports, nat, win, *batch, *newConns, *dur)
					if err != nil {
						return err
					}
					nps := "-"
					if r.NewPerSec > 0 {
						nps = humanize.Comma(int64(r.NewPerSec))
					}
					wt := "on"
					if !r.TCPWindow {
						wt = "off"
					}
					if err := rep.add(r, []string{humanize.Comma(int64(n)), r.Impl, r.Proto, r.NAT, wt, strconv.Itoa(r.Batch), dec2(r.Mpps), dec1(r.NsPerPkt), dec1(r.HarnessNsPerPkt), nps, dec2(r.AllocsPerPkt)}); err != nil {
						return err
					}
				}
			}
		}
	}
	return rep.table([]string{"flows", "impl", "proto", "nat", "tcp window", "batch", "Mpps", "ns/pkt", "harness ns/pkt", "new conns/s", "allocs/pkt"})
}

// PipelineBed is a one-core dataplane with an inside and an outside port,
// MASQUERADE on the outside, and frames for n connections from inside
// hosts to 256 servers behind the gateway.
type PipelineBed struct {
	DP    *dataplane.Dataplane
	Table *flowtable.Table
	Pools *dataplane.Pools
	tmpl  []benchTmpl // one original frame per connection
}

// benchTmpl is a connection's original frame, in a fixed 64 bytes so that
// Run refills a frame with a few vector moves, as a NIC's DMA would
// without the CPU: the harness's share of each packet is measured apart
// (harness ns/pkt), and a call to memmove per frame was a third of it.
type benchTmpl struct {
	b [benchTmplLen]byte
	n int
}

const benchTmplLen = 64

var (
	benchMACIn  = [6]byte{2, 0, 0, 0, 0, 1}
	benchMACOut = [6]byte{2, 0, 0, 0, 1, 1}
	benchMACGW  = [6]byte{2, 0, 0, 0, 1, 0xfe}
)

// NewPipelineBed builds the dataplane and the connections' first frames,
// with shared source ports (see benchFrame).
func NewPipelineBed(n int, proto string) (*PipelineBed, error) {
	return newPipelineBed(n, proto, "shared", NATMasquerade, true)
}

// The source NAT targets the pipeline scenario compares.
const (
	NATMasquerade = "MASQUERADE"
	// NATFullCone is FULLCONENAT in POSTROUTING and PREROUTING: every
	// connection of the bed has its own inside endpoint, so each new
	// connection also makes a mapping.
	NATFullCone = "FULLCONENAT"
)

// NewPipelineBedNAT is NewPipelineBed with the given source NAT target.
func NewPipelineBedNAT(n int, proto, nat string) (*PipelineBed, error) {
	return newPipelineBed(n, proto, "shared", nat, true)
}

func newPipelineBed(n int, proto, ports, nat string, window bool) (*PipelineBed, error) {
	tab, err := flowtable.New(flowtable.Config{Capacity: n + n/4 + 1024, Cores: 1, Proto: window})
	if err != nil {
		return nil, err
	}
	snap := &topo.Snapshot{
		Ifaces: []topo.Iface{
			{Index: 2, Name: "in0", MAC: benchMACIn, MTU: 1500, Up: true, Addrs: []topo.Prefix{{Addr: 0x0A000001, Len: 8}}},
			{Index: 3, Name: "out0", MAC: benchMACOut, MTU: 1500, Up: true, Addrs: []topo.Prefix{{Addr: 0xCB007101, Len: 24}}},
		},
		Routes: []topo.Route{
			{Dst: topo.Prefix{Addr: 0x0A000000, Len: 8}, IfIndex: 2},
			{Dst: topo.Prefix{Addr: 0xCB007100, Len: 24}, IfIndex: 3},
			{Dst: topo.Prefix{}, Gateway: 0xCB0071FE, IfIndex: 3},
		},
		Neighs: []topo.Neigh{{IfIndex: 3, IP: 0xCB0071FE, MAC: benchMACGW, State: topo.NeighValid}},
	}
	ruleText := "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o out0 -j MASQUERADE\nCOMMIT\n"
	switch nat {
	case NATMasquerade:
	case NATFullCone:
		ruleText = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A PREROUTING -i out0 -j FULLCONENAT\n-A POSTROUTING -o out0 -j FULLCONENAT\nCOMMIT\n"
	default:
		return nil, fmt.Errorf("bench: source NAT %q: want %s or %s", nat, NATMasquerade, NATFullCone)
	}
	m, _, err := iptables.Restore(strings.NewReader(ruleText), rules.NewModel(), iptables.RestoreOptions{})
	if err != nil {
		return nil, err
	}
	pools := dataplane.NewPools(1, nil)
	env, err := dataplane.NewEnv(dataplane.EnvConfig{Snapshot: snap, Inside: []string{"in0"}, Outside: []string{"out0"}, Model: m, Pools: pools})
	if err != nil {
		return nil, err
	}
	b := &PipelineBed{DP: dataplane.New(tab, pools, dataplane.NewSettings(), env), Table: tab, Pools: pools}
	b.tmpl = make([]benchTmpl, n)
	for i := range b.tmpl {
		f := benchFrame(i, proto, ports)
		if len(f) > benchTmplLen {
			return nil, fmt.Errorf("bench: a %d-byte frame exceeds the %d-byte template", len(f), benchTmplLen)
		}
		b.tmpl[i].n = copy(b.tmpl[i].b[:], f)
	}
	return b, nil
}

// benchFrame is connection i's frame from inside: 10.x.y.z:port to one of
// 256 servers 198.51.100.0/24 on port 443, 64 bytes on the wire for UDP.
// With shared ports, each host's 64 connections use source ports 10000 to
// 10063, so the reply tuples of kept ports are only 256 (a server × a
// port) and all but the first connections' are taken: the allocator
// searches for nearly every one. With distinct ports, connection i's
// source port is 10000 + i/256, and every kept port's reply tuple is free.
func benchFrame(i int, proto, ports string) []byte {
	u := uint32(i)
	src := 0x0A000000 | (u >> 6) + 2
	sport := uint16(10000 + u&63)
	if ports == "distinct" {
		sport = uint16(10000 + u>>8)
	}
	dst := 0xC6336400 | u&255
	l4len := header.UDPLen + 18
	p := uint8(header.ProtoUDP)
	if proto == "tcp" {
		l4len, p = header.TCPMinLen+6, header.ProtoTCP
	}
	f := make([]byte, header.EthernetLen+header.IPv4MinLen+l4len)
	eth := header.Ethernet(f)
	eth.SetDst(benchMACIn)
	eth.SetSrc([6]byte{2, 0, 0, 0, 0, 2})
	eth.SetType(header.EtherTypeIPv4)
	ip := header.IPv4(f[header.EthernetLen:])
	ip[0] = 0x45
	ip.SetTotalLen(uint16(header.IPv4MinLen + l4len))
	ip.SetTTL(64)
	ip.SetProtocol(p)
	ip.SetSrc(src)
	ip.SetDst(dst)
	ip.SetChecksum(ip.ComputeChecksum())
	l4 := f[header.EthernetLen+header.IPv4MinLen:]
	binary.BigEndian.PutUint16(l4[0:2], sport)
	binary.BigEndian.PutUint16(l4[2:4], 443)
	if proto == "tcp" {
		t := header.TCP(l4)
		t.SetSeq(1)
		t.SetAck(1)
		t.SetDataOffset(header.TCPMinLen)
		t.SetFlags(header.TCPAck) // tcp_loose picks it up as established
		t.SetWindow(1000)
		t.SetChecksum(header.Checksum(l4, header.PseudoSum(src, dst, p, uint16(l4len))))
	} else {
		u := header.UDP(l4)
		u.SetLength(uint16(l4len))
		u.SetChecksum(header.Checksum(l4, header.PseudoSum(src, dst, p, uint16(l4len))))
	}
	return f
}

// Run processes frames of connections [from, from+count) in batches of
// batch, refilling each frame from its template first as an RX ring
// would deliver it. Every frame's capacity must hold a template (64
// bytes); Run leaves each frame at its capacity, the bytes received being
// sizes[i] (as Pipeline.Process takes them). It returns how many frames
// were forwarded.
func (b *PipelineBed) Run(from, count, batch int, frames [][]byte, sizes []int, in []uint16, out []dataplane.Result, skipPipeline bool) int {
	p := b.DP.Pipeline(0)
	fwd := 0
	tmpl := b.tmpl
	next := from % len(tmpl) // the next connection's template, stepped without a division
	frames, sizes, in, out = frames[:batch], sizes[:batch], in[:batch], out[:batch]
	// Each frame at its capacity once, so that refilling it is a copy of
	// the template and its size.
	for j := range frames {
		frames[j] = frames[j][:cap(frames[j])]
	}
	for done := 0; done < count; done += batch {
		k := min(batch, count-done)
		fr, sz := frames[:k], sizes[:k]
		for j := range fr {
			t := &tmpl[next]
			if next++; next == len(tmpl) {
				next = 0
			}
			*(*[benchTmplLen]byte)(fr[j]) = t.b
			sz[j] = t.n
		}
		if skipPipeline {
			fwd += k
			continue
		}
		p.Process(fr, sz, in[:k], out[:k])
		for _, r := range out[:k] {
			if r.Action == dataplane.ActForward {
				fwd++
			}
		}
	}
	return fwd
}

// newMinTime is how long MeasurePipeline times connection creation at
// the least.
const newMinTime = 250 * time.Millisecond

// create sends the first frame of each of the bed's n connections
// through the pipeline, and fails unless every one is forwarded.
func (b *PipelineBed) create(n, batch int, frames [][]byte, sizes []int, in []uint16, out []dataplane.Result) error {
	if got := b.Run(0, n, batch, frames, sizes, in, out, false); got != n {
		c := b.DP.TotalCounters()
		return fmt.Errorf("creating %d connections forwarded only %d (table_full %d, out_of_ports %d, no_neighbour %d)",
			n, got, c.Drops[dataplane.ReasonTableFull], c.Drops[dataplane.ReasonOutOfPorts], c.Drops[dataplane.ReasonNoNeighbour])
	}
	return nil
}

// MeasurePipeline runs the pipeline scenario at n connections, with
// MASQUERADE.
func MeasurePipeline(n int, proto, ports string, batch int, measureNew bool, dur time.Duration) (PipelineResult, error) {
	return MeasurePipelineOpts(n, proto, ports, NATMasquerade, true, batch, measureNew, dur)
}

// MeasurePipelineNAT runs the pipeline scenario at n connections with
// the source NAT target nat (NATMasquerade or NATFullCone).
func MeasurePipelineNAT(n int, proto, ports, nat string, batch int, measureNew bool, dur time.Duration) (PipelineResult, error) {
	return MeasurePipelineOpts(n, proto, ports, nat, true, batch, measureNew, dur)
}

// MeasurePipelineOpts runs the pipeline scenario at n connections with
// the source NAT target nat, and TCP window tracking on or off (window).
func MeasurePipelineOpts(n int, proto, ports, nat string, window bool, batch int, measureNew bool, dur time.Duration) (PipelineResult, error) {
	res := PipelineResult{Flows: n, Impl: flowtable.ActiveImpl().String(), Proto: proto, Ports: ports, Batch: batch, NAT: nat, TCPWindow: window}
	b, err := newPipelineBed(n, proto, ports, nat, window)
	if err != nil {
		return res, err
	}
	frames := make([][]byte, batch)
	for i := range frames {
		frames[i] = make([]byte, 0, 2048)
	}
	sizes := make([]int, batch)
	in := make([]uint16, batch) // port 0: inside
	out := make([]dataplane.Result, batch)

	// New connections: the first packet of each of the n connections,
	// into the empty table. One pass is too short to time at small n (a
	// thousand connections take well under a millisecond), so with
	// measureNew passes repeat on fresh beds, built untimed, until
	// newMinTime of creating has been timed; the first bed carries on.
	// Each pass starts after a collection of the garbage the beds before
	// it left: the pipeline allocates nothing, so a gateway's packets
	// never run beside a collection, and a cycle the harness set off
	// would share the timed pass's caches and memory.
	runtime.GC()
	start := time.Now()
	if err := b.create(n, batch, frames, sizes, in, out); err != nil {
		return res, err
	}
	created, spent := n, time.Since(start)
	for measureNew && spent < newMinTime {
		fresh, err := newPipelineBed(n, proto, ports, nat, window)
		if err != nil {
			return res, err
		}
		runtime.GC()
		start := time.Now()
		if err := fresh.create(n, batch, frames, sizes, in, out); err != nil {
			return res, err
		}
		spent += time.Since(start)
		created += n
	}
	if measureNew {
		res.NewPerSec = float64(created) / spent.Seconds()
	}

	// Established traffic: the connections in a shuffled-by-stride order,
	// so consecutive frames hit unrelated parts of the table.
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	mallocs := ms.Mallocs
	total := 0
	start = time.Now()
	for time.Since(start) < dur {
		const chunk = 1 << 16
		if b.Run(total*7919%n, chunk, batch, frames, sizes, in, out, false) != chunk {
			return res, fmt.Errorf("established traffic was not all forwarded")
		}
		total += chunk
	}
	el := time.Since(start)
	runtime.ReadMemStats(&ms)
	res.AllocsPerPkt = float64(ms.Mallocs-mallocs) / float64(total)
	res.NsPerPkt = float64(el.Nanoseconds()) / float64(total)
	res.Mpps = float64(total) / el.Seconds() / 1e6

	// The harness alone, same frames, same order.
	hstart := time.Now()
	b.Run(0, total, batch, frames, sizes, in, out, true)
	res.HarnessNsPerPkt = float64(time.Since(hstart).Nanoseconds()) / float64(total)
	return res, nil
}
