package rules

import (
	"fmt"
	"strings"
)

// MaxDepth is how deeply user-defined chains may be nested by jumps. The
// evaluator keeps its return stack in a fixed array of this size.
const MaxDepth = 32

// RuleError locates a validation error: Index is the 0-based rule index in
// the chain, or -1 when the error concerns the chain itself.
type RuleError struct {
	Table TableID
	Chain string
	Index int
	Err   error
}

func (e *RuleError) Error() string {
	if e.Index < 0 {
		return fmt.Sprintf("%s chain %s: %v", e.Table, e.Chain, e.Err)
	}
	return fmt.Sprintf("%s chain %s rule %d: %v", e.Table, e.Chain, e.Index+1, e.Err)
}

func (e *RuleError) Unwrap() error { return e.Err }

// CheckRule checks what can be checked of a rule on its own, knowing the
// table and, when the rule is in a built-in chain, its hook (builtin
// false for a user-defined chain). Errors wrap ErrInvalid or
// ErrUnsupported.
func CheckRule(t TableID, chain string, builtin bool, hook Hook, r *Rule) error {
	if builtin {
		if r.InIface.Name != "" && (hook == Output || hook == Postrouting) {
			return fmt.Errorf("can't use -i with %s: %w", chain, ErrInvalid)
		}
		if r.OutIface.Name != "" && (hook == Prerouting || hook == Input) {
			return fmt.Errorf("can't use -o with %s: %w", chain, ErrInvalid)
		}
	}
	for _, n := range []string{r.InIface.Name, r.OutIface.Name} {
		if err := CheckIfaceName(n); err != nil {
			return err
		}
	}
	if r.Proto == 0 && r.ProtoInvert {
		return fmt.Errorf("rule would never match protocol: %w", ErrInvalid)
	}
	if r.Fragment && r.FragmentInvert {
		return fmt.Errorf("-f given twice: %w", ErrInvalid)
	}
	for i := range r.Matches {
		if err := checkMatch(r, &r.Matches[i]); err != nil {
			return err
		}
	}
	tg := &r.Target
	switch tg.Kind {
	case TargetDrop:
		if t == NAT {
			return fmt.Errorf("the \"nat\" table is not intended for filtering, the use of DROP is therefore inhibited: %w", ErrInvalid)
		}
	case TargetReject:
		if t != Filter {
			return fmt.Errorf("REJECT target: only valid in filter table, not %s: %w", t, ErrInvalid)
		}
		if tg.RejectWith == RejectTCPReset && (r.Proto != ProtoTCP || r.ProtoInvert) {
			return fmt.Errorf("--reject-with tcp-reset needs -p tcp: %w", ErrInvalid)
		}
		if int(tg.RejectWith) >= len(rejectNames) {
			return fmt.Errorf("bad reject type: %w", ErrInvalid)
		}
	case TargetSNAT, TargetDNAT, TargetMasquerade, TargetFullCone:
		if t != NAT {
			return fmt.Errorf("%s target: only valid in nat table, not %s: %w", tg.Kind, t, ErrInvalid)
		}
		nr := &tg.NAT
		if tg.Kind != TargetMasquerade && tg.Kind != TargetFullCone && nr.Flags&NATMapIPs == 0 {
			opt := "--to-source"
			if tg.Kind == TargetDNAT {
				opt = "--to-destination"
			}
			return fmt.Errorf("%s needs %s: %w", tg.Kind, opt, ErrInvalid)
		}
		if tg.Kind == TargetMasquerade && nr.Flags&NATMapIPs != 0 {
			return fmt.Errorf("MASQUERADE takes no address: %w", ErrInvalid)
		}
		if nr.Flags&NATMapIPs != 0 && nr.MinAddr > nr.MaxAddr {
			return fmt.Errorf("address range %s-%s is reversed: %w", FormatIP(nr.MinAddr), FormatIP(nr.MaxAddr), ErrInvalid)
		}
		if nr.Flags&NATProtoSpecified != 0 {
			if r.ProtoInvert || (r.Proto != ProtoTCP && r.Proto != ProtoUDP) {
				return fmt.Errorf("%s port range needs -p tcp or -p udp: %w", tg.Kind, ErrInvalid)
			}
			if nr.MinPort > nr.MaxPort {
				return fmt.Errorf("port range %d-%d is reversed: %w", nr.MinPort, nr.MaxPort, ErrInvalid)
			}
		}
		if tg.Kind == TargetFullCone && nr.Flags&NATPersistent != 0 && nr.Flags&NATMapIPs == 0 {
			return fmt.Errorf("FULLCONENAT --persistent goes with --to-source: %w", ErrInvalid)
		}
		if tg.Kind == TargetDNAT && nr.Flags&NATRandomFully != 0 {
			return fmt.Errorf("DNAT --random-fully: %w", ErrUnsupported)
		}
	case TargetLog:
		if tg.LogLevel > 7 {
			return fmt.Errorf("log level %d out of range 0-7: %w", tg.LogLevel, ErrInvalid)
		}
		if len(tg.LogPrefix) > MaxLogPrefix {
			return fmt.Errorf("log prefix longer than %d characters: %w", MaxLogPrefix, ErrInvalid)
		}
	case TargetConnmark:
		if tg.ConnmarkMode < ConnmarkSet || tg.ConnmarkMode > ConnmarkRestore {
			return fmt.Errorf("CONNMARK needs an action: %w", ErrInvalid)
		}
	case TargetJump, TargetGoto:
		if tg.Chain == "" {
			return fmt.Errorf("jump without a chain: %w", ErrInvalid)
		}
	case TargetNone, TargetAccept, TargetReturn, TargetMark:
	default:
		return fmt.Errorf("target %d: %w", tg.Kind, ErrInvalid)
	}
	return nil
}

// CheckIfaceName checks an -i/-o name as iptables does.
func CheckIfaceName(n string) error {
	if len(n) > MaxIfaceName {
		return fmt.Errorf("interface name %q must be shorter than 16 characters: %w", n, ErrInvalid)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c == '/' || c <= ' ' || c >= 0x7f || c == ':' {
			return fmt.Errorf("invalid interface name %q: %w", n, ErrInvalid)
		}
		if c == '+' && i != len(n)-1 {
			return fmt.Errorf("interface name %q: '+' is only a wildcard at the end: %w", n, ErrInvalid)
		}
	}
	return nil
}

func portProto(r *Rule) bool {
	return !r.ProtoInvert && (r.Proto == ProtoTCP || r.Proto == ProtoUDP)
}

func checkMatch(r *Rule, m *Match) error {
	switch m.Kind {
	case MatchTCP, MatchUDP:
		want := uint8(ProtoTCP)
		if m.Kind == MatchUDP {
			want = ProtoUDP
		}
		if r.Proto != want || r.ProtoInvert {
			return fmt.Errorf("-m %s needs -p %s: %w", m.Kind, m.Kind, ErrInvalid)
		}
		if m.SrcPort.Lo > m.SrcPort.Hi || m.DstPort.Lo > m.DstPort.Hi {
			return fmt.Errorf("port range is reversed: %w", ErrInvalid)
		}
		if m.Kind == MatchUDP && (m.FlagsMask != 0 || m.FlagsInvert) {
			return fmt.Errorf("--tcp-flags in -m udp: %w", ErrInvalid)
		}
	case MatchICMP:
		if r.Proto != ProtoICMP || r.ProtoInvert {
			return fmt.Errorf("-m icmp needs -p icmp: %w", ErrInvalid)
		}
		if m.ICMPCodeMin > m.ICMPCodeMax {
			return fmt.Errorf("icmp code range is reversed: %w", ErrInvalid)
		}
	case MatchMultiport:
		if !portProto(r) {
			return fmt.Errorf("multiport needs -p tcp or -p udp: %w", ErrInvalid)
		}
		if m.Multi < MultiSource || m.Multi > MultiEither {
			return fmt.Errorf("multiport needs --sports, --dports or --ports: %w", ErrInvalid)
		}
		n := 0
		for _, p := range m.Ports {
			if p.Lo > p.Hi {
				return fmt.Errorf("multiport range %d:%d is reversed: %w", p.Lo, p.Hi, ErrInvalid)
			}
			n++
			if p.Lo != p.Hi {
				n++
			}
		}
		if len(m.Ports) == 0 || n > 15 {
			return fmt.Errorf("multiport takes 1 to 15 ports (a range counts as two): %w", ErrInvalid)
		}
	case MatchIPRange:
		if !m.SrcRange.Set && !m.DstRange.Set {
			return fmt.Errorf("iprange needs --src-range or --dst-range: %w", ErrInvalid)
		}
		if (m.SrcRange.Set && m.SrcRange.Lo > m.SrcRange.Hi) || (m.DstRange.Set && m.DstRange.Lo > m.DstRange.Hi) {
			return fmt.Errorf("iprange range is reversed: %w", ErrInvalid)
		}
	case MatchLength:
		if m.LengthMin > m.LengthMax {
			return fmt.Errorf("length range is reversed: %w", ErrInvalid)
		}
	case MatchLimit:
		if m.LimitAvg == 0 {
			return fmt.Errorf("limit rate too fast: %w", ErrInvalid)
		}
		if m.LimitBurst == 0 || m.LimitBurst > 10000 {
			return fmt.Errorf("limit burst %d out of range 1-10000: %w", m.LimitBurst, ErrInvalid)
		}
	case MatchState, MatchConntrack:
		if m.States == 0 {
			return fmt.Errorf("%s needs a state: %w", m.Kind, ErrInvalid)
		}
	case MatchComment:
		if len(m.Comment) > MaxComment {
			return fmt.Errorf("comment longer than %d characters: %w", MaxComment, ErrInvalid)
		}
	case MatchMAC, MatchMark:
	default:
		return fmt.Errorf("match %d: %w", m.Kind, ErrUnsupported)
	}
	return nil
}

// usableHooks lists, per target and match that restricts it, the hooks it
// may be reached from (iptables/kernel rules).
func targetHooks(k TargetKind) []Hook {
	switch k {
	case TargetDNAT:
		return []Hook{Prerouting, Output}
	case TargetSNAT:
		return []Hook{Input, Postrouting}
	case TargetMasquerade:
		return []Hook{Postrouting}
	case TargetFullCone:
		return []Hook{Prerouting, Postrouting}
	case TargetReject:
		return []Hook{Input, Forward, Output}
	}
	return nil
}

func hookList(hs []Hook) string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = h.String()
	}
	return strings.Join(s, "/")
}

// Validate checks a whole model: every rule (CheckRule), jumps to
// existing user-defined chains, no loops, nesting within MaxDepth, and the
// hooks each target and match is reached from. The error is a *RuleError.
func Validate(m *Model) error {
	for t := TableID(0); t < NumTables; t++ {
		if err := ValidateTable(t, &m.Tables[t]); err != nil {
			return err
		}
	}
	return nil
}

// ValidateTable validates one table (see Validate).
func ValidateTable(t TableID, tb *Table) error {
	idx := map[string]int{}
	for i := range tb.Chains {
		c := &tb.Chains[i]
		if _, dup := idx[c.Name]; dup {
			return &RuleError{t, c.Name, -1, ErrChainExists}
		}
		idx[c.Name] = i
		if c.Builtin {
			if h, ok := HookByName(t, c.Name); !ok || h != c.Hook {
				return &RuleError{t, c.Name, -1, fmt.Errorf("not a built-in chain of %s: %w", t, ErrInvalid)}
			}
			if t == NAT && c.Policy == PolicyDrop {
				return &RuleError{t, c.Name, -1, fmt.Errorf("the \"nat\" table is not intended for filtering, the use of DROP is therefore inhibited: %w", ErrInvalid)}
			}
		} else if err := CheckChainName(c.Name); err != nil {
			return &RuleError{t, c.Name, -1, err}
		}
	}
	for _, h := range BuiltinHooks(t) {
		if _, ok := idx[h.String()]; !ok {
			return &RuleError{t, h.String(), -1, fmt.Errorf("built-in chain missing: %w", ErrInvalid)}
		}
	}
	for i := range tb.Chains {
		c := &tb.Chains[i]
		for j := range c.Rules {
			r := &c.Rules[j]
			if err := CheckRule(t, c.Name, c.Builtin, c.Hook, r); err != nil {
				return &RuleError{t, c.Name, j, err}
			}
			if r.Target.Kind == TargetJump || r.Target.Kind == TargetGoto {
				k, ok := idx[r.Target.Chain]
				if !ok {
					return &RuleError{t, c.Name, j, fmt.Errorf("jump to %q: %w", r.Target.Chain, ErrNoChain)}
				}
				if tb.Chains[k].Builtin {
					return &RuleError{t, c.Name, j, fmt.Errorf("jump to built-in chain %q: %w", r.Target.Chain, ErrInvalid)}
				}
			}
		}
	}
	// Loops and nesting depth: a depth-first search over the jump graph
	// (memoised, so shared sub-chains cost nothing more).
	n := len(tb.Chains)
	color := make([]uint8, n) // 0 white, 1 grey, 2 black
	depth := make([]int, n)   // most jumps (pushes) below a chain
	var visit func(ci int) error
	visit = func(ci int) error {
		color[ci] = 1
		c := &tb.Chains[ci]
		for j := range c.Rules {
			r := &c.Rules[j]
			if r.Target.Kind != TargetJump && r.Target.Kind != TargetGoto {
				continue
			}
			k := idx[r.Target.Chain]
			switch color[k] {
			case 1:
				return &RuleError{t, c.Name, j, fmt.Errorf("jump to %q closes a loop: %w", r.Target.Chain, ErrLoop)}
			case 0:
				if err := visit(k); err != nil {
					return err
				}
			}
			d := depth[k]
			if r.Target.Kind == TargetJump {
				d++
			}
			if d > depth[ci] {
				depth[ci] = d
			}
			if depth[ci] >= MaxDepth {
				return &RuleError{t, c.Name, j, fmt.Errorf("more than %d nested jumps: %w", MaxDepth, ErrTooDeep)}
			}
		}
		color[ci] = 2
		return nil
	}
	for i := 0; i < n; i++ {
		if color[i] == 0 {
			if err := visit(i); err != nil {
				return err
			}
		}
	}
	// Which hooks reach each chain.
	hooks := make([]uint8, n)
	for i := range tb.Chains {
		if !tb.Chains[i].Builtin {
			continue
		}
		bit := uint8(1) << tb.Chains[i].Hook
		stack := []int{i}
		hooks[i] |= bit
		for len(stack) > 0 {
			ci := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			for _, r := range tb.Chains[ci].Rules {
				if r.Target.Kind == TargetJump || r.Target.Kind == TargetGoto {
					k := idx[r.Target.Chain]
					if hooks[k]&bit == 0 {
						hooks[k] |= bit
						stack = append(stack, k)
					}
				}
			}
		}
	}
	for ci := range tb.Chains {
		c := &tb.Chains[ci]
		for h := Hook(0); h < NumHooks; h++ {
			if hooks[ci]&(1<<h) == 0 {
				continue
			}
			for j := range c.Rules {
				r := &c.Rules[j]
				if allowed := targetHooks(r.Target.Kind); allowed != nil && !hookIn(h, allowed) {
					return &RuleError{t, c.Name, j, fmt.Errorf("%s target used from hook %s, but only usable from %s: %w", r.Target.Kind, h, hookList(allowed), ErrInvalid)}
				}
				for _, m := range r.Matches {
					if m.Kind == MatchMAC && !hookIn(h, []Hook{Prerouting, Input, Forward}) {
						return &RuleError{t, c.Name, j, fmt.Errorf("mac match used from hook %s, but only usable from PREROUTING/INPUT/FORWARD: %w", h, ErrInvalid)}
					}
				}
				if r.InIface.Name != "" && (h == Output || h == Postrouting) {
					return &RuleError{t, c.Name, j, fmt.Errorf("-i used from hook %s: %w", h, ErrInvalid)}
				}
				if r.OutIface.Name != "" && (h == Prerouting || h == Input) {
					return &RuleError{t, c.Name, j, fmt.Errorf("-o used from hook %s: %w", h, ErrInvalid)}
				}
			}
		}
	}
	return nil
}

func hookIn(h Hook, hs []Hook) bool {
	for _, x := range hs {
		if x == h {
			return true
		}
	}
	return false
}

// CheckChainName checks a user-defined chain name as iptables does.
func CheckChainName(n string) error {
	if n == "" {
		return fmt.Errorf("empty chain name: %w", ErrInvalid)
	}
	if len(n) > MaxChainName {
		return fmt.Errorf("chain name %q longer than %d characters: %w", n, MaxChainName, ErrInvalid)
	}
	if n[0] == '-' || n[0] == '!' {
		return fmt.Errorf("invalid chain name %q: %w", n, ErrInvalid)
	}
	for i := 0; i < len(n); i++ {
		if n[i] <= ' ' || n[i] >= 0x7f {
			return fmt.Errorf("invalid chain name %q: %w", n, ErrInvalid)
		}
	}
	if _, ok := TargetByName(n); ok {
		return fmt.Errorf("chain name %q may not clash with target name: %w", n, ErrInvalid)
	}
	if _, ok := HookByName(NAT, n); ok {
		return fmt.Errorf("chain name %q is a built-in chain name: %w", n, ErrInvalid)
	}
	if n == "FORWARD" {
		return fmt.Errorf("chain name %q is a built-in chain name: %w", n, ErrInvalid)
	}
	return nil
}

// FormatIP formats a big-endian IPv4 value as dotted quad.
func FormatIP(a uint32) string {
	return fmt.Sprintf("%d.%d.%d.%d", a>>24, a>>16&0xff, a>>8&0xff, a&0xff)
}
