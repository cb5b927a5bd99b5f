package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"xnat/dataplane/rules"
)

func TestRulesScenarioJSON(t *testing.T) {
	s, err := Lookup("rules")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := s.Run([]string{"--rules", "0,10,200", "--duration", "2ms", "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines: %q", len(lines), out.String())
	}
	for i, l := range lines {
		var r map[string]float64
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"rules", "new_ns", "established_ns", "linear_new_ns", "linear_established_ns"} {
			if _, ok := r[k]; !ok {
				t.Fatalf("line %d lacks %q: %s", i, k, l)
			}
		}
		if r["rules"] != []float64{0, 10, 200}[i] || r["new_ns"] <= 0 || r["established_ns"] <= 0 {
			t.Fatalf("line %d: %s", i, l)
		}
	}
	if err := s.Run([]string{"--rules", "x"}, &out); err == nil {
		t.Error("bad --rules accepted")
	}
}

// TestRulesScenarioHits checks the scenario measures what it says: hit
// packets are DNATed and accepted by their rule, miss packets fall to the
// DROP policy, and the classifier agrees with the scan.
func TestRulesScenarioHits(t *testing.T) {
	m := RulesModel(50, 1)
	rs, err := rules.Compile(m, []string{"eth0", "eth1"}, rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hits := 0
	for k, p := range RulesPackets(50, 2) {
		q := p
		d := rs.NAT(rules.Prerouting, &p, 0, 0)
		v := rs.Filter(rules.Forward, &p, 0, 0)
		post := rs.NAT(rules.Postrouting, &p, 0, 0)
		if v != rs.FilterLinear(rules.Forward, &q, 0, 0) {
			t.Fatalf("packet %d: classifier and scan disagree", k)
		}
		hit := k%2 == 0
		if hit {
			hits++
		}
		if (d.Kind == rules.NATDNAT) != hit || (v.Action == rules.Accept) != hit || post.Kind != rules.NATMasquerade {
			t.Fatalf("packet %d (hit %v): %v %v %v", k, hit, d.Kind, v, post.Kind)
		}
	}
	if hits != 512 {
		t.Fatalf("%d hits", hits)
	}
	if _, err := RunRules(50, time.Millisecond); err != nil {
		t.Fatal(err)
	}
}
