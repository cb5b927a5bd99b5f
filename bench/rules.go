package bench

import (
	"flag"
	"fmt"
	"io"
	"math/rand"
	"sort"
	"strconv"
	"strings"
	"time"

	"xnat/dataplane/rules"
)

// The rules scenario measures rule evaluation per packet, compiled with
// the classifier and, as the peer in the same run, by a linear scan of the
// same compiled rules:
//
//   - new: a connection's first packet — nat PREROUTING, filter FORWARD,
//     nat POSTROUTING;
//   - established: a later packet — filter FORWARD only (nat verdicts are
//     stored with the connection).
//
// The rule set has N address/port rules in filter FORWARD (-s A/32 -p tcp
// --dport P -j ACCEPT, policy DROP) and N DNAT rules in nat PREROUTING
// (-d A/32 -p tcp --dport P -j DNAT), then a MASQUERADE in POSTROUTING. It
// has no "--ctstate ESTABLISHED -j ACCEPT" first rule, which would make
// established packets cost one rule whatever N is: established packets
// go through the same N rules as new ones. Packets cycle through 1024
// tuples, half hitting a random rule, half matching none (the worst case
// for the scan).
func init() {
	Register(Scenario{Name: "rules", Summary: "rule evaluation ns/packet: classifier vs linear scan, 0..N rules", Run: runRules})
}

// RulesResult is one line of the rules scenario.
type RulesResult struct {
	Rules               int     `json:"rules"`
	NewNs               float64 `json:"new_ns"`
	EstablishedNs       float64 `json:"established_ns"`
	LinearNewNs         float64 `json:"linear_new_ns"`
	LinearEstablishedNs float64 `json:"linear_established_ns"`
}

// RulesModel builds the scenario's rule set with n rules per chain.
func RulesModel(n int, seed int64) *rules.Model {
	rnd := rand.New(rand.NewSource(seed))
	m := rules.NewModel()
	tb := &m.Tables[rules.Filter]
	fwd := &tb.Chains[tb.Chain("FORWARD")]
	fwd.Policy = rules.PolicyDrop
	nt := &m.Tables[rules.NAT]
	pre := &nt.Chains[nt.Chain("PREROUTING")]
	post := &nt.Chains[nt.Chain("POSTROUTING")]
	for i := 0; i < n; i++ {
		fwd.Rules = append(fwd.Rules, rules.Rule{
			ID:    rules.NewRuleID(),
			Src:   rules.Addr{IP: benchAddr(10, i), Mask: 0xFFFFFFFF},
			Proto: rules.ProtoTCP,
			Matches: []rules.Match{{Kind: rules.MatchTCP, SrcPort: rules.AllPorts,
				DstPort: rules.PortRange{Lo: benchPort(i), Hi: benchPort(i)}}},
			Target: rules.Target{Kind: rules.TargetAccept},
		})
		backend := benchAddr(192, rnd.Intn(1<<16))
		pre.Rules = append(pre.Rules, rules.Rule{
			ID:      rules.NewRuleID(),
			Dst:     rules.Addr{IP: benchAddr(198, i), Mask: 0xFFFFFFFF},
			Proto:   rules.ProtoTCP,
			Matches: []rules.Match{{Kind: rules.MatchTCP, SrcPort: rules.AllPorts, DstPort: rules.PortRange{Lo: benchPort(i), Hi: benchPort(i)}}},
			Target: rules.Target{Kind: rules.TargetDNAT, NAT: rules.NATRange{MinAddr: backend, MaxAddr: backend + 3,
				MinPort: 8080, MaxPort: 8080, Flags: rules.NATMapIPs | rules.NATProtoSpecified}},
		})
	}
	post.Rules = append(post.Rules, rules.Rule{ID: rules.NewRuleID(), OutIface: rules.Iface{Name: "eth1"},
		Target: rules.Target{Kind: rules.TargetMasquerade}})
	return m
}

func benchAddr(first uint32, i int) uint32 { return first<<24 | uint32(i)<<4 | 1 }
func benchPort(i int) uint16               { return uint16(1000 + i%2000) }

// RulesPackets returns the scenario's packets for n rules.
func RulesPackets(n int, seed int64) []rules.Packet {
	rnd := rand.New(rand.NewSource(seed))
	ps := make([]rules.Packet, 1024)
	for k := range ps {
		p := rules.Packet{Proto: rules.ProtoTCP, SrcPort: uint16(20000 + k), Length: 576, InIf: 0, OutIf: 1, TCPFlags: rules.TCPSyn}
		if n > 0 && k%2 == 0 {
			// hits DNAT rule i in PREROUTING and filter rule i in FORWARD
			i := rnd.Intn(n)
			p.Src, p.Dst, p.DstPort = benchAddr(10, i), benchAddr(198, i), benchPort(i)
		} else {
			p.Src, p.Dst, p.DstPort = benchAddr(11, k), benchAddr(199, k), 9
		}
		ps[k] = p
	}
	return ps
}

func measure(d time.Duration, f func(i int)) float64 {
	// calibrate
	n := 1000
	for {
		start := time.Now()
		for i := 0; i < n; i++ {
			f(i)
		}
		el := time.Since(start)
		if el >= d {
			return float64(el.Nanoseconds()) / float64(n)
		}
		if el < d/10 {
			n *= 10
		} else {
			n = int(float64(n)*float64(d)/float64(el)) + 1
		}
	}
}

// RunRules measures one rule-set size.
func RunRules(n int, d time.Duration) (RulesResult, error) {
	m := RulesModel(n, 1)
	rs, err := rules.Compile(m, []string{"eth0", "eth1"}, rules.Options{})
	if err != nil {
		return RulesResult{}, err
	}
	pkts := RulesPackets(n, 2)
	mask := len(pkts) - 1
	res := RulesResult{Rules: n}
	for _, linear := range []bool{false, true} {
		newNs := measure(d, func(i int) {
			p := pkts[i&mask]
			p.CtState = rules.CtNew
			if linear {
				rs.NATLinear(rules.Prerouting, &p, 0, int64(i))
				rs.FilterLinear(rules.Forward, &p, 0, int64(i))
				rs.NATLinear(rules.Postrouting, &p, 0, int64(i))
			} else {
				rs.NAT(rules.Prerouting, &p, 0, int64(i))
				rs.Filter(rules.Forward, &p, 0, int64(i))
				rs.NAT(rules.Postrouting, &p, 0, int64(i))
			}
			if i&63 == 63 {
				rs.Flush(0)
			}
		})
		estNs := measure(d, func(i int) {
			p := pkts[i&mask]
			p.CtState = rules.CtEstablished
			if linear {
				rs.FilterLinear(rules.Forward, &p, 0, int64(i))
			} else {
				rs.Filter(rules.Forward, &p, 0, int64(i))
			}
			if i&63 == 63 {
				rs.Flush(0)
			}
		})
		if linear {
			res.LinearNewNs, res.LinearEstablishedNs = newNs, estNs
		} else {
			res.NewNs, res.EstablishedNs = newNs, estNs
		}
	}
	return res, nil
}

func runRules(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("rules", flag.ContinueOnError)
	max := fs.String("rules", "1000", "largest rule count (sizes 0, 10, 100, 1000... up to it), or a comma list of counts")
	dur := fs.Duration("duration", 200*time.Millisecond, "measuring time per figure")
	jsonOut := fs.Bool("json", false, "one JSON object per line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var sizes []int
	if strings.Contains(*max, ",") {
		for _, s := range strings.Split(*max, ",") {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return fmt.Errorf("bad --rules %q", *max)
			}
			sizes = append(sizes, n)
		}
	} else {
		n, err := strconv.Atoi(*max)
		if err != nil || n < 0 || n > 100000 {
			return fmt.Errorf("bad --rules %q (0 to 100000)", *max)
		}
		for s := 0; s <= n; {
			sizes = append(sizes, s)
			if s == 0 {
				s = 10
			} else {
				s *= 10
			}
		}
		if sizes[len(sizes)-1] != n {
			sizes = append(sizes, n)
		}
	}
	sort.Ints(sizes)
	rep := report{w: w, json: *jsonOut}
	var results []RulesResult
	for _, n := range sizes {
		r, err := RunRules(n, *dur)
		if err != nil {
			return err
		}
		results = append(results, r)
		if err := rep.add(r, []string{strconv.Itoa(n), rulesF1(r.NewNs), rulesF1(r.EstablishedNs), rulesF1(r.LinearNewNs), rulesF1(r.LinearEstablishedNs)}); err != nil {
			return err
		}
	}
	if err := rep.table([]string{"rules", "new_ns", "established_ns", "linear_new_ns", "linear_established_ns"}); err != nil || *jsonOut {
		return err
	}
	var at10, atMax *RulesResult
	for i := range results {
		if results[i].Rules == 10 {
			at10 = &results[i]
		}
		atMax = &results[i]
	}
	if at10 != nil && atMax.Rules > 10 {
		fmt.Fprintf(w, "\nclassifier at %d rules / at 10 rules: new %.2fx, established %.2fx (target <= 5x); linear scan: new %.2fx, established %.2fx\n",
			atMax.Rules, atMax.NewNs/at10.NewNs, atMax.EstablishedNs/at10.EstablishedNs,
			atMax.LinearNewNs/at10.LinearNewNs, atMax.LinearEstablishedNs/at10.LinearEstablishedNs)
	}
	return nil
}

func rulesF1(x float64) string { return strconv.FormatFloat(x, 'f', 1, 64) }
