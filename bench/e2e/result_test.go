package e2e

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"testing"
	"time"
)

const ctStat = `entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
000003e8  00000000 00000000 00000000 00000002 00000000 00000000 00000000 00000000 00000001 000000db 00000008 00000000  00000000 00000000 00000000 00000000
000003e8  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000105 0000000c 00000000  00000000 00000000 00000000 00000003
`

const snmp = `Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits
Ip: 1 64 100 1 2 90 0 3 0 0 4 5 0 0 0 0 0 0 0 90
Icmp: InMsgs InErrors
Icmp: 7 0
`

func TestParseProcFiles(t *testing.T) {
	cs, err := ParseConntrackStat([]byte(ctStat))
	if err != nil {
		t.Fatal(err)
	}
	if cs["drop"] != 0xdb+0x105 || cs["early_drop"] != 20 || cs["insert_failed"] != 1 || cs["entries"] != 1000 || cs["search_restart"] != 3 {
		t.Fatalf("conntrack stat %v", cs)
	}
	if _, err := ParseConntrackStat([]byte("a b\n1\n")); err == nil {
		t.Error("short line accepted")
	}
	ip, err := ParseSNMP([]byte(snmp), "Ip")
	if err != nil {
		t.Fatal(err)
	}
	if ip["InDiscards"] != 3 || ip["OutDiscards"] != 4 || ip["OutNoRoutes"] != 5 || ip["InHdrErrors"] != 1 || ip["ForwDatagrams"] != 90 {
		t.Fatalf("snmp %v", ip)
	}
	if _, err := ParseSNMP([]byte(snmp), "Tcp"); err == nil {
		t.Error("missing protocol found")
	}
}

func TestAccounting(t *testing.T) {
	o := &Outcome{
		Point: Point{Target: "kernel", Proto: UDP, Size: 64, Flows: 10},
		Sent:  1000, Received: 900, Reflected: 900, Replies: 890,
		TargetDrops: map[string]uint64{"table_full": 60},
		PathDrops:   map[string]uint64{"srv0_rx_dropped": 30, "gen0_rx_dropped": 10},
		Bad:         map[string]uint64{"l4_checksum": 10},
		Elapsed:     time.Second,
	}
	if o.Counted() != 110 {
		t.Fatalf("counted %d", o.Counted())
	}
	// 1900 sent = 1790 received + 110 drops.
	if o.Unaccounted() != 0 {
		t.Fatalf("unaccounted %d", o.Unaccounted())
	}
	o.Replies = 880
	if o.Unaccounted() != 10 {
		t.Fatalf("unaccounted %d after losing 10 replies", o.Unaccounted())
	}
	if o.PPS() != 900 || math.Abs(o.Loss()-0.1) > 1e-12 {
		t.Fatalf("pps %v loss %v", o.PPS(), o.Loss())
	}
	tf := &Outcome{Sent: 1000, SentNew: 300, RecvEst: 700, RecvNew: 180, TargetDrops: map[string]uint64{"table_full": 115, "insert_failed": 5}}
	e, n, f := TableFullCheck(tf)
	if e != 0 || n != 120 || f != 120 {
		t.Fatalf("table full check %d %d %d", e, n, f)
	}
	d := delta(map[string]uint64{"a": 5, "b": 7}, map[string]uint64{"a": 9, "b": 7, "c": 1})
	if len(d) != 2 || d["a"] != 4 || d["c"] != 1 {
		t.Fatalf("delta %v", d)
	}
}

func sampleResults() []Result {
	mk := func(target, sc string, flows int, pps float64) Result {
		o := &Outcome{Point: Point{Target: target, Proto: UDP, Size: 64, Flows: flows, Queues: 1}, FrameLen: 60, Sent: uint64(pps), Received: uint64(pps), Elapsed: time.Second}
		o.Latency.Record(20_000)
		o.Latency.Record(40_000)
		return ResultOf(sc, o)
	}
	return []Result{
		mk("xdp_drop", ScHeadroom, 1000, 900_000),
		mk("kernel", ScThroughput, 1, 200_000), mk("xnat", ScThroughput, 1, 500_000),
		mk("kernel", ScThroughput, 1000, 180_000), mk("xnat", ScThroughput, 1000, 450_000),
		mk("kernel", ScThroughput, 1_000_000, 90_000), mk("xnat", ScThroughput, 1_000_000, 300_000),
	}
}

func TestResultJSONAndRatios(t *testing.T) {
	rs := sampleResults()
	SetRatios(rs)
	for _, r := range rs {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"target", "scenario", "pps", "gbps", "loss", "p50_us", "p99_us", "new_per_sec"} {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: key %q missing in %s", r.Target, k, b)
			}
		}
		_, hasRatio := m["ratio_vs_kernel"]
		if hasRatio != (r.Target != "xdp_drop") {
			t.Errorf("%s %s: ratio present=%v", r.Target, r.Scenario, hasRatio)
		}
		if r.Target == "xnat" && r.Flows == 1000 && (*r.Ratio < 2.49 || *r.Ratio > 2.51) {
			t.Errorf("ratio %v, want 2.5", *r.Ratio)
		}
		if math.Abs(r.Gbps-r.PPS*64*8/1e9) > 1e-9 || math.Abs(r.P50-20) > 20.0/subCount || r.P99 != 40 {
			t.Errorf("gbps %v p50 %v p99 %v", r.Gbps, r.P50, r.P99)
		}
		if len(r.Row()) != len(Header) {
			t.Errorf("row of %d cells for %d columns", len(r.Row()), len(Header))
		}
	}
	// One target: no ratio.
	one := sampleResults()[1:2]
	SetRatios(one)
	if one[0].Ratio != nil {
		t.Error("ratio with one target")
	}
}

func TestPlotIsWellFormedSVG(t *testing.T) {
	var buf bytes.Buffer
	if err := WritePlot(&buf, sampleResults()); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&buf)
	polylines, circles, root := 0, 0, ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG does not parse: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			switch se.Name.Local {
			case "polyline":
				polylines++
			case "circle":
				circles++
			}
		}
	}
	if root != "svg" || polylines != 2 || circles != 6 {
		t.Fatalf("root %q, %d series, %d points; want svg, 2, 6", root, polylines, circles)
	}
	if err := WritePlot(io.Discard, sampleResults()[:1]); err == nil {
		t.Fatal("plot without throughput results")
	}
}
