package rules

import (
	"fmt"
	"testing"
)

// benchModel mirrors the xnat-bench rules scenario: n "-s A/32 -p tcp
// --dport P -j ACCEPT" rules in FORWARD with policy DROP.
func benchModel(n int) (*Model, []Packet) {
	m := NewModel()
	f := chainOf(m, Filter, "FORWARD")
	f.Policy = PolicyDrop
	for i := 0; i < n; i++ {
		f.Rules = append(f.Rules, rule(Target{Kind: TargetAccept}, src(ip(10, 0, uint32(i>>8), uint32(i)), 0xffffffff), tcpDport(uint16(1000+i))))
	}
	ps := make([]Packet, 256)
	for k := range ps {
		i := k * 7919 % (n + n/2 + 1)
		ps[k] = Packet{Src: ip(10, 0, uint32(i>>8), uint32(i)), Proto: ProtoTCP, DstPort: uint16(1000 + i), Length: 576, CtState: CtEstablished}
	}
	return m, ps
}

func BenchmarkFilter(b *testing.B) {
	for _, n := range []int{0, 10, 100, 1000} {
		m, ps := benchModel(n)
		rs, err := Compile(m, nil, Options{})
		if err != nil {
			b.Fatal(err)
		}
		for _, linear := range []bool{false, true} {
			name := fmt.Sprintf("rules=%d/classifier", n)
			if linear {
				name = fmt.Sprintf("rules=%d/linear", n)
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					p := ps[i&255]
					if linear {
						rs.FilterLinear(Forward, &p, 0, 0)
					} else {
						rs.Filter(Forward, &p, 0, 0)
					}
					if i&63 == 63 {
						rs.Flush(0)
					}
				}
			})
		}
	}
}

func BenchmarkCompile1000(b *testing.B) {
	m, _ := benchModel(1000)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Compile(m, nil, Options{Cores: 2}); err != nil {
			b.Fatal(err)
		}
	}
}
