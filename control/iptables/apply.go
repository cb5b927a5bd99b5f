package iptables

import (
	"errors"
	"fmt"

	"xnat/dataplane/rules"
)

// Apply applies a chain- or rule-changing command to m and returns the new
// model; m itself is never changed, so a rejected command changes
// nothing. -L, -S and -C return m unchanged (-C returns an error wrapping
// rules.ErrNoRule when no rule matches).
func Apply(m *rules.Model, cmd *Command) (*rules.Model, error) {
	switch cmd.Op {
	case OpList, OpListRules:
		return m, nil
	}
	n := m.Clone()
	if err := applyInPlace(n, cmd, true); err != nil {
		return nil, err
	}
	if cmd.Op == OpCheck {
		return m, nil
	}
	if err := rules.ValidateTable(cmd.Table, &n.Tables[cmd.Table]); err != nil {
		return nil, &Error{Err: err}
	}
	return n, nil
}

func noChain(name string) error {
	return &Error{Word: name, Err: fmt.Errorf("chain %q: %w", name, rules.ErrNoChain)}
}

func ruleNumErr(word string, num int, chain string) error {
	return &Error{Word: word, Err: fmt.Errorf("index of rule %d in chain %s too big: %w", num, chain, rules.ErrNoRule)}
}

// applyInPlace changes m. keepCounters says whether the command's
// counters (-c, or [p:b] in a restore file) are kept.
func applyInPlace(m *rules.Model, cmd *Command, keepCounters bool) error {
	tb := &m.Tables[cmd.Table]
	ci := -1
	if cmd.Chain != "" {
		ci = tb.Chain(cmd.Chain)
	}
	needChain := func() error {
		if ci < 0 {
			return noChain(cmd.Chain)
		}
		return nil
	}
	r := cmd.Rule.Clone()
	if !keepCounters {
		r.Counters = rules.Counters{}
	}
	if cmd.HasRule && cmd.Op != OpDelete && cmd.Op != OpCheck {
		if k := r.Target.Kind; k == rules.TargetJump || k == rules.TargetGoto {
			ti := tb.Chain(r.Target.Chain)
			if ti < 0 {
				return &Error{Word: r.Target.Chain, Err: fmt.Errorf("unknown target %q: no such chain or target (%w)", r.Target.Chain, rules.ErrNoChain)}
			}
		}
	}
	switch cmd.Op {
	case OpAppend:
		if err := needChain(); err != nil {
			return err
		}
		tb.Chains[ci].Rules = append(tb.Chains[ci].Rules, r)
	case OpInsert:
		if err := needChain(); err != nil {
			return err
		}
		c := &tb.Chains[ci]
		pos := 0
		if cmd.Num > 0 {
			pos = cmd.Num - 1
		}
		if pos > len(c.Rules) {
			return &Error{Err: fmt.Errorf("index of insertion %d in chain %s too big: %w", cmd.Num, c.Name, rules.ErrNoRule)}
		}
		c.Rules = append(c.Rules, rules.Rule{})
		copy(c.Rules[pos+1:], c.Rules[pos:])
		c.Rules[pos] = r
	case OpDelete, OpCheck:
		if err := needChain(); err != nil {
			return err
		}
		c := &tb.Chains[ci]
		pos := cmd.Num - 1
		if cmd.HasRule {
			pos = -1
			for i := range c.Rules {
				if rules.SameRule(c.Rules[i], r) {
					pos = i
					break
				}
			}
			if pos < 0 {
				return &Error{Err: fmt.Errorf("bad rule (does a matching rule exist in chain %s?): %w", c.Name, rules.ErrNoRule)}
			}
		} else if pos >= len(c.Rules) {
			return ruleNumErr(fmt.Sprint(cmd.Num), cmd.Num, c.Name)
		}
		if cmd.Op == OpDelete {
			c.Rules = append(c.Rules[:pos], c.Rules[pos+1:]...)
		}
	case OpReplace:
		if err := needChain(); err != nil {
			return err
		}
		c := &tb.Chains[ci]
		if cmd.Num > len(c.Rules) {
			return ruleNumErr(fmt.Sprint(cmd.Num), cmd.Num, c.Name)
		}
		c.Rules[cmd.Num-1] = r
	case OpFlush, OpZero:
		if cmd.Chain != "" {
			if err := needChain(); err != nil {
				return err
			}
		}
		for i := range tb.Chains {
			c := &tb.Chains[i]
			if cmd.Chain != "" && c.Name != cmd.Chain {
				continue
			}
			if cmd.Op == OpFlush {
				c.Rules = nil
				continue
			}
			if cmd.Num > 0 {
				if cmd.Num > len(c.Rules) {
					return ruleNumErr(fmt.Sprint(cmd.Num), cmd.Num, c.Name)
				}
				c.Rules[cmd.Num-1].Counters = rules.Counters{}
				continue
			}
			c.Counters = rules.Counters{}
			for j := range c.Rules {
				c.Rules[j].Counters = rules.Counters{}
			}
		}
	case OpNewChain:
		if err := tb.AddChain(cmd.Chain); err != nil {
			return &Error{Word: cmd.Chain, Err: err}
		}
	case OpDeleteChain:
		var del []string
		if cmd.Chain != "" {
			if err := needChain(); err != nil {
				return err
			}
			if tb.Chains[ci].Builtin {
				return &Error{Word: cmd.Chain, Err: fmt.Errorf("cannot delete chain %q: %w", cmd.Chain, rules.ErrBuiltinChain)}
			}
			del = []string{cmd.Chain}
		} else {
			for _, c := range tb.Chains {
				if !c.Builtin {
					del = append(del, c.Name)
				}
			}
		}
		gone := map[string]bool{}
		for _, d := range del {
			gone[d] = true
		}
		for _, d := range del {
			c := &tb.Chains[tb.Chain(d)]
			if len(c.Rules) > 0 {
				return &Error{Word: d, Err: fmt.Errorf("cannot delete chain %q: %w", d, rules.ErrChainNotEmpty)}
			}
			for _, o := range tb.Chains {
				if gone[o.Name] {
					continue
				}
				for _, rr := range o.Rules {
					if (rr.Target.Kind == rules.TargetJump || rr.Target.Kind == rules.TargetGoto) && rr.Target.Chain == d {
						return &Error{Word: d, Err: fmt.Errorf("cannot delete chain %q: %w", d, rules.ErrChainInUse)}
					}
				}
			}
		}
		kept := tb.Chains[:0]
		for _, c := range tb.Chains {
			if !gone[c.Name] {
				kept = append(kept, c)
			}
		}
		tb.Chains = kept
	case OpRename:
		if err := needChain(); err != nil {
			return err
		}
		if tb.Chains[ci].Builtin {
			return &Error{Word: cmd.Chain, Err: fmt.Errorf("cannot rename chain %q: %w", cmd.Chain, rules.ErrBuiltinChain)}
		}
		if tb.Chain(cmd.NewName) >= 0 {
			return &Error{Word: cmd.NewName, Err: fmt.Errorf("chain %q: %w", cmd.NewName, rules.ErrChainExists)}
		}
		tb.Chains[ci].Name = cmd.NewName
		for i := range tb.Chains {
			for j := range tb.Chains[i].Rules {
				t := &tb.Chains[i].Rules[j].Target
				if (t.Kind == rules.TargetJump || t.Kind == rules.TargetGoto) && t.Chain == cmd.Chain {
					t.Chain = cmd.NewName
				}
			}
		}
		tb.SortChains()
	case OpPolicy:
		if err := needChain(); err != nil {
			return err
		}
		c := &tb.Chains[ci]
		if !c.Builtin {
			return &Error{Word: cmd.Chain, Err: fmt.Errorf("cannot set policy of user-defined chain %q: %w", cmd.Chain, rules.ErrInvalid)}
		}
		if cmd.Table == rules.NAT && cmd.Policy == rules.PolicyDrop {
			return &Error{Word: "DROP", Err: fmt.Errorf("the \"nat\" table is not intended for filtering, the use of DROP is therefore inhibited: %w", rules.ErrInvalid)}
		}
		c.Policy = cmd.Policy
		if cmd.CountersSet && keepCounters {
			c.Counters = cmd.Rule.Counters
		}
	default:
		return &Error{Err: fmt.Errorf("command %s cannot change rules: %w", cmd.Op, ErrUsage)}
	}
	return nil
}

// IsNoRule reports whether err says a rule or rule number does not exist.
func IsNoRule(err error) bool { return errors.Is(err, rules.ErrNoRule) }
