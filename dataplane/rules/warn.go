package rules

import "fmt"

// Warnings lists what in m has no effect in xnat: rules in, and DROP
// policies of, built-in chains no forwarded packet traverses (filter
// INPUT/OUTPUT, nat INPUT/OUTPUT). They are kept, listed and saved.
func Warnings(m *Model) []string {
	var w []string
	for t := TableID(0); t < NumTables; t++ {
		for _, c := range m.Tables[t].Chains {
			if !c.Builtin || Effective(t, c.Hook) {
				continue
			}
			if len(c.Rules) > 0 {
				w = append(w, fmt.Sprintf("%s %s: %d rule(s) have no effect: xnat forwards and does not deliver or send local traffic", t, c.Name, len(c.Rules)))
			}
			if c.Policy == PolicyDrop {
				w = append(w, fmt.Sprintf("%s %s: policy DROP has no effect: xnat forwards and does not deliver or send local traffic", t, c.Name))
			}
		}
	}
	return w
}
