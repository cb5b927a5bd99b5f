package iptables

import (
	"fmt"
	"io"
	"strings"
	"time"

	"xnat/dataplane/rules"
)

func fmtIP(a uint32) string { return rules.FormatIP(a) }

// saveAddr is " -s 10.0.0.0/8" as iptables-save prints it (/32 kept).
func saveAddr(b *strings.Builder, letter string, a rules.Addr) {
	if a.Mask == 0 && !a.Invert && a.IP == 0 {
		return
	}
	if a.Invert {
		b.WriteString(" !")
	}
	b.WriteString(" -" + letter + " " + fmtIP(a.IP) + "/")
	if n := maskLen(a.Mask); n >= 0 {
		fmt.Fprintf(b, "%d", n)
	} else {
		b.WriteString(fmtIP(a.Mask))
	}
}

func saveIface(b *strings.Builder, letter string, i rules.Iface) {
	if i.Name == "" || (i.Name == "+" && !i.Invert) {
		return
	}
	if i.Invert {
		b.WriteString(" !")
	}
	b.WriteString(" -" + letter + " " + i.Name)
}

// quote is iptables' xtables_save_string: bare when only [A-Za-z0-9_-],
// else double-quoted with " \ ' escaped.
func quote(s string) string {
	bare := s != ""
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			bare = false
			break
		}
	}
	if bare {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' || s[i] == '\'' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

func portsSave(r rules.PortRange) string {
	if r.Lo == r.Hi {
		return fmt.Sprint(r.Lo)
	}
	return fmt.Sprintf("%d:%d", r.Lo, r.Hi)
}

func inv(b bool) string {
	if b {
		return " !"
	}
	return ""
}

func natRange(r rules.NATRange) string {
	var b strings.Builder
	if r.Flags&rules.NATMapIPs != 0 {
		b.WriteString(fmtIP(r.MinAddr))
		if r.MaxAddr != r.MinAddr {
			b.WriteString("-" + fmtIP(r.MaxAddr))
		}
	}
	if r.Flags&rules.NATProtoSpecified != 0 {
		fmt.Fprintf(&b, ":%d", r.MinPort)
		if r.MaxPort != r.MinPort {
			fmt.Fprintf(&b, "-%d", r.MaxPort)
		}
	}
	return b.String()
}

// fullConeOpts formats a FULLCONENAT target's options in the order the
// xt_FULLCONENAT extension prints them: the address range (persistent
// only beside it), the ports, then the port randomisation flags.
func fullConeOpts(r rules.NATRange, to, persistent, ports, pfx string) string {
	var b strings.Builder
	if r.Flags&rules.NATMapIPs != 0 {
		b.WriteString(" " + to + fmtIP(r.MinAddr))
		if r.MaxAddr != r.MinAddr {
			b.WriteString("-" + fmtIP(r.MaxAddr))
		}
		if r.Flags&rules.NATPersistent != 0 {
			b.WriteString(" " + persistent)
		}
	}
	if r.Flags&rules.NATProtoSpecified != 0 {
		fmt.Fprintf(&b, " %s%d", ports, r.MinPort)
		if r.MaxPort != r.MinPort {
			fmt.Fprintf(&b, "-%d", r.MaxPort)
		}
	}
	if r.Flags&rules.NATRandom != 0 {
		b.WriteString(" " + pfx + "random")
	}
	if r.Flags&rules.NATRandomFully != 0 {
		b.WriteString(" " + pfx + "random-fully")
	}
	return b.String()
}

func natFlags(r rules.NATRange, pfx string) string {
	s := ""
	if r.Flags&rules.NATRandom != 0 {
		s += " " + pfx + "random"
	}
	if r.Flags&rules.NATRandomFully != 0 {
		s += " " + pfx + "random-fully"
	}
	if r.Flags&rules.NATPersistent != 0 {
		s += " " + pfx + "persistent"
	}
	return s
}

func matchSave(b *strings.Builder, m *rules.Match) {
	b.WriteString(" -m " + m.Kind.String())
	switch m.Kind {
	case rules.MatchTCP, rules.MatchUDP:
		if m.SrcPort != rules.AllPorts || m.SrcPortInvert {
			b.WriteString(inv(m.SrcPortInvert) + " --sport " + portsSave(m.SrcPort))
		}
		if m.DstPort != rules.AllPorts || m.DstPortInvert {
			b.WriteString(inv(m.DstPortInvert) + " --dport " + portsSave(m.DstPort))
		}
		if m.FlagsMask != 0 || m.FlagsInvert {
			b.WriteString(inv(m.FlagsInvert) + " --tcp-flags " + formatTCPFlags(m.FlagsMask) + " " + formatTCPFlags(m.FlagsCmp))
		}
	case rules.MatchICMP:
		b.WriteString(inv(m.Invert))
		if m.ICMPType == 0xFF && m.ICMPCodeMin == 0 && m.ICMPCodeMax == 0xFF {
			b.WriteString(" --icmp-type any")
		} else {
			fmt.Fprintf(b, " --icmp-type %d", m.ICMPType)
			if m.ICMPCodeMin != 0 || m.ICMPCodeMax != 0xFF {
				fmt.Fprintf(b, "/%d", m.ICMPCodeMin)
			}
		}
	case rules.MatchMultiport:
		b.WriteString(inv(m.Invert))
		b.WriteString(map[uint8]string{rules.MultiSource: " --sports ", rules.MultiDest: " --dports ", rules.MultiEither: " --ports "}[m.Multi])
		for i, p := range m.Ports {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(portsSave(p))
		}
	case rules.MatchIPRange:
		if m.SrcRange.Set {
			b.WriteString(inv(m.SrcRange.Invert) + " --src-range " + fmtIP(m.SrcRange.Lo) + "-" + fmtIP(m.SrcRange.Hi))
		}
		if m.DstRange.Set {
			b.WriteString(inv(m.DstRange.Invert) + " --dst-range " + fmtIP(m.DstRange.Lo) + "-" + fmtIP(m.DstRange.Hi))
		}
	case rules.MatchLength:
		b.WriteString(inv(m.Invert) + " --length " + portsSave(rules.PortRange{Lo: m.LengthMin, Hi: m.LengthMax}))
	case rules.MatchLimit:
		b.WriteString(" --limit " + formatRate(m.LimitAvg))
		if m.LimitBurst != rules.DefaultLimitBurst {
			fmt.Fprintf(b, " --limit-burst %d", m.LimitBurst)
		}
	case rules.MatchMAC:
		b.WriteString(inv(m.Invert) + " --mac-source " + fmtMAC(m.MAC))
	case rules.MatchMark:
		b.WriteString(inv(m.Invert) + " --mark " + fmtMark(m.Mark, m.MarkMask))
	case rules.MatchState:
		b.WriteString(inv(m.Invert) + " --state " + m.States.String())
	case rules.MatchConntrack:
		b.WriteString(inv(m.Invert) + " --ctstate " + m.States.String())
	case rules.MatchComment:
		b.WriteString(" --comment " + quote(m.Comment))
	}
}

func fmtMAC(m [6]byte) string {
	return fmt.Sprintf("%02X:%02X:%02X:%02X:%02X:%02X", m[0], m[1], m[2], m[3], m[4], m[5])
}

func fmtMark(v, m uint32) string {
	if m != 0xFFFFFFFF {
		return fmt.Sprintf("0x%x/0x%x", v, m)
	}
	return fmt.Sprintf("0x%x", v)
}

func targetName(t *rules.Target) string {
	switch t.Kind {
	case rules.TargetJump, rules.TargetGoto:
		return t.Chain
	}
	return t.Kind.String()
}

func targetSave(b *strings.Builder, t *rules.Target) {
	switch t.Kind {
	case rules.TargetNone:
		return
	case rules.TargetGoto:
		b.WriteString(" -g " + t.Chain)
		return
	}
	b.WriteString(" -j " + targetName(t))
	switch t.Kind {
	case rules.TargetReject:
		b.WriteString(" --reject-with " + t.RejectWith.String())
	case rules.TargetLog:
		if t.LogPrefix != "" {
			b.WriteString(" --log-prefix " + quote(t.LogPrefix))
		}
		if t.LogLevel != rules.DefaultLogLevel {
			fmt.Fprintf(b, " --log-level %d", t.LogLevel)
		}
	case rules.TargetMark:
		fmt.Fprintf(b, " --set-xmark 0x%x/0x%x", t.MarkValue, t.MarkMask)
	case rules.TargetConnmark:
		switch t.ConnmarkMode {
		case rules.ConnmarkSet:
			fmt.Fprintf(b, " --set-xmark 0x%x/0x%x", t.MarkValue, t.MarkMask)
		case rules.ConnmarkSave:
			fmt.Fprintf(b, " --save-mark --nfmask 0x%x --ctmask 0x%x", t.NfMask, t.CtMask)
		case rules.ConnmarkRestore:
			fmt.Fprintf(b, " --restore-mark --nfmask 0x%x --ctmask 0x%x", t.NfMask, t.CtMask)
		}
	case rules.TargetSNAT:
		b.WriteString(" --to-source " + natRange(t.NAT) + natFlags(t.NAT, "--"))
	case rules.TargetDNAT:
		b.WriteString(" --to-destination " + natRange(t.NAT) + natFlags(t.NAT, "--"))
	case rules.TargetMasquerade:
		if t.NAT.Flags&rules.NATProtoSpecified != 0 {
			b.WriteString(" --to-ports " + strings.TrimPrefix(natRange(t.NAT), ":"))
		}
		b.WriteString(natFlags(t.NAT, "--"))
	case rules.TargetFullCone:
		b.WriteString(fullConeOpts(t.NAT, "--to-source ", "--persistent", "--to-ports ", "--"))
	}
}

// RuleSpec formats a rule's specification as iptables-save does (the part
// after "-A CHAIN"), with " -c P B" before the target when counters is
// true (the -S -v form).
func RuleSpec(r *rules.Rule, counters bool) string {
	var b strings.Builder
	saveAddr(&b, "s", r.Src)
	saveAddr(&b, "d", r.Dst)
	saveIface(&b, "i", r.InIface)
	saveIface(&b, "o", r.OutIface)
	if r.Proto != 0 {
		b.WriteString(inv(r.ProtoInvert) + " -p ")
		if n := protoName(r.Proto, false); n != "" {
			b.WriteString(n)
		} else {
			fmt.Fprintf(&b, "%d", r.Proto)
		}
	}
	if r.Fragment || r.FragmentInvert {
		b.WriteString(inv(r.FragmentInvert) + " -f")
	}
	for i := range r.Matches {
		matchSave(&b, &r.Matches[i])
	}
	if counters {
		fmt.Fprintf(&b, " -c %d %d", r.Counters.Packets, r.Counters.Bytes)
	}
	targetSave(&b, &r.Target)
	return b.String()
}

// SaveOptions control WriteSave.
type SaveOptions struct {
	Tables   []rules.TableID // nil: every table
	Counters bool            // print counters ([p:b] before rules, real policy counters)
	Header   bool            // the "# Generated by"/"# Completed on" comment lines
	Now      time.Time       // time in the header lines
}

// WriteSave writes the model in iptables-save format.
func WriteSave(w io.Writer, m *rules.Model, opt SaveOptions) error {
	tables := opt.Tables
	if tables == nil {
		tables = []rules.TableID{rules.Filter, rules.NAT}
	}
	var b strings.Builder
	stamp := opt.Now.Format("Mon Jan _2 15:04:05 2006")
	for _, t := range tables {
		tb := &m.Tables[t]
		if opt.Header {
			fmt.Fprintf(&b, "# Generated by xnat iptables-save on %s\n", stamp)
		}
		fmt.Fprintf(&b, "*%s\n", t)
		for _, c := range tb.Chains {
			if c.Builtin {
				cnt := rules.Counters{}
				if opt.Counters {
					cnt = c.Counters
				}
				fmt.Fprintf(&b, ":%s %s [%d:%d]\n", c.Name, c.Policy, cnt.Packets, cnt.Bytes)
			} else {
				fmt.Fprintf(&b, ":%s - [0:0]\n", c.Name)
			}
		}
		for _, c := range tb.Chains {
			for i := range c.Rules {
				r := &c.Rules[i]
				if opt.Counters {
					fmt.Fprintf(&b, "[%d:%d] ", r.Counters.Packets, r.Counters.Bytes)
				}
				b.WriteString("-A " + c.Name + RuleSpec(r, false) + "\n")
			}
		}
		b.WriteString("COMMIT\n")
		if opt.Header {
			fmt.Fprintf(&b, "# Completed on %s\n", stamp)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteRules writes iptables -S output for a table, or one chain (chain
// != ""), or one rule of it (num > 0). verbose adds counters (-S -v).
func WriteRules(w io.Writer, m *rules.Model, t rules.TableID, chain string, num int, verbose bool) error {
	tb := &m.Tables[t]
	if chain != "" && tb.Chain(chain) < 0 {
		return &Error{Word: chain, Err: fmt.Errorf("chain %q: %w", chain, rules.ErrNoChain)}
	}
	var b strings.Builder
	if num == 0 {
		for _, c := range tb.Chains {
			if chain != "" && c.Name != chain {
				continue
			}
			if c.Builtin {
				fmt.Fprintf(&b, "-P %s %s", c.Name, c.Policy)
				if verbose {
					fmt.Fprintf(&b, " -c %d %d", c.Counters.Packets, c.Counters.Bytes)
				}
				b.WriteByte('\n')
			} else {
				fmt.Fprintf(&b, "-N %s\n", c.Name)
			}
		}
	}
	for _, c := range tb.Chains {
		if chain != "" && c.Name != chain {
			continue
		}
		if num > len(c.Rules) {
			return &Error{Err: fmt.Errorf("index of rule %d in chain %s too big: %w", num, c.Name, rules.ErrNoRule)}
		}
		for i := range c.Rules {
			if num == 0 || num == i+1 {
				b.WriteString("-A " + c.Name + RuleSpec(&c.Rules[i], verbose) + "\n")
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ListOptions are -L's flags.
type ListOptions struct {
	Numeric, Verbose, Exact, LineNumbers bool
}

func printNum(n uint64, exact, table bool) string {
	if exact {
		if table {
			return fmt.Sprintf("%8d ", n)
		}
		return fmt.Sprintf("%d ", n)
	}
	f := func(w int, n uint64, suffix string) string {
		if table {
			return fmt.Sprintf("%*d%s ", w, n, suffix)
		}
		return fmt.Sprintf("%d%s ", n, suffix)
	}
	if n <= 99999 {
		return f(5, n, "")
	}
	for _, s := range []string{"K", "M", "G"} {
		n = (n + 500) / 1000
		if n <= 9999 {
			return f(4, n, s)
		}
	}
	n = (n + 500) / 1000
	return f(4, n, "T")
}

func listAddr(a rules.Addr, numeric bool) string {
	if a.Mask == 0 && !numeric {
		return "anywhere"
	}
	s := fmtIP(a.IP)
	switch n := maskLen(a.Mask); {
	case n == 32:
	case n >= 0:
		s += fmt.Sprintf("/%d", n)
	default:
		s += "/" + fmtIP(a.Mask)
	}
	return s
}

func listPort(p uint16, numeric bool) string {
	if !numeric {
		if s := serviceName(p); s != "" {
			return s
		}
	}
	return fmt.Sprint(p)
}

func listPorts(b *strings.Builder, name string, r rules.PortRange, invert, numeric bool) {
	if r == rules.AllPorts && !invert {
		return
	}
	i := ""
	if invert {
		i = "!"
	}
	if r.Lo == r.Hi {
		b.WriteString(" " + name + ":" + i + listPort(r.Lo, numeric))
	} else {
		b.WriteString(" " + name + "s:" + i + listPort(r.Lo, numeric) + ":" + listPort(r.Hi, numeric))
	}
}

func matchList(b *strings.Builder, m *rules.Match, numeric bool) {
	switch m.Kind {
	case rules.MatchTCP, rules.MatchUDP:
		b.WriteString(" " + m.Kind.String())
		listPorts(b, "spt", m.SrcPort, m.SrcPortInvert, numeric)
		listPorts(b, "dpt", m.DstPort, m.DstPortInvert, numeric)
		if m.FlagsMask != 0 || m.FlagsInvert {
			b.WriteString(" flags:")
			if m.FlagsInvert {
				b.WriteString("!")
			}
			if numeric {
				fmt.Fprintf(b, "0x%02X/0x%02X", m.FlagsMask, m.FlagsCmp)
			} else {
				b.WriteString(formatTCPFlags(m.FlagsMask) + "/" + formatTCPFlags(m.FlagsCmp))
			}
		}
	case rules.MatchICMP:
		b.WriteString(" icmp")
		if !numeric {
			if n := icmpName(m.ICMPType, m.ICMPCodeMin, m.ICMPCodeMax); n != "" {
				b.WriteString(" ")
				if m.Invert {
					b.WriteString("!")
				}
				b.WriteString(n)
				return
			}
		}
		if m.Invert {
			b.WriteString(" !")
		}
		fmt.Fprintf(b, "type %d", m.ICMPType)
		if m.ICMPCodeMin == m.ICMPCodeMax {
			fmt.Fprintf(b, " code %d", m.ICMPCodeMin)
		} else if m.ICMPCodeMin != 0 || m.ICMPCodeMax != 0xFF {
			fmt.Fprintf(b, " codes %d-%d", m.ICMPCodeMin, m.ICMPCodeMax)
		}
	case rules.MatchMultiport:
		b.WriteString(" multiport ")
		b.WriteString(map[uint8]string{rules.MultiSource: "sports ", rules.MultiDest: "dports ", rules.MultiEither: "ports "}[m.Multi])
		if m.Invert {
			b.WriteString(" !")
		}
		for i, p := range m.Ports {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(listPort(p.Lo, numeric))
			if p.Lo != p.Hi {
				b.WriteString(":" + listPort(p.Hi, numeric))
			}
		}
	case rules.MatchIPRange:
		if m.SrcRange.Set {
			b.WriteString(" source IP range" + inv(m.SrcRange.Invert) + " " + fmtIP(m.SrcRange.Lo) + "-" + fmtIP(m.SrcRange.Hi))
		}
		if m.DstRange.Set {
			b.WriteString(" destination IP range" + inv(m.DstRange.Invert) + " " + fmtIP(m.DstRange.Lo) + "-" + fmtIP(m.DstRange.Hi))
		}
	case rules.MatchLength:
		b.WriteString(" length ")
		if m.Invert {
			b.WriteString("!")
		}
		b.WriteString(portsSave(rules.PortRange{Lo: m.LengthMin, Hi: m.LengthMax}))
	case rules.MatchLimit:
		fmt.Fprintf(b, " limit: avg %s burst %d", formatRate(m.LimitAvg), m.LimitBurst)
	case rules.MatchMAC:
		b.WriteString(" MAC" + inv(m.Invert) + " " + fmtMAC(m.MAC))
	case rules.MatchMark:
		b.WriteString(" mark match" + inv(m.Invert) + " " + fmtMark(m.Mark, m.MarkMask))
	case rules.MatchState:
		b.WriteString(inv(m.Invert) + " state " + m.States.String())
	case rules.MatchConntrack:
		b.WriteString(inv(m.Invert) + " ctstate " + m.States.String())
	case rules.MatchComment:
		b.WriteString(" /* " + m.Comment + " */")
	}
}

func markPrint(name string, v, m uint32) string {
	switch {
	case v == 0:
		return fmt.Sprintf(" %s and 0x%x", name, ^m)
	case v == m:
		return fmt.Sprintf(" %s or 0x%x", name, v)
	case m == 0:
		return fmt.Sprintf(" %s xor 0x%x", name, v)
	case m == 0xFFFFFFFF:
		return fmt.Sprintf(" %s set 0x%x", name, v)
	}
	return fmt.Sprintf(" %s xset 0x%x/0x%x", name, v, m)
}

func targetList(b *strings.Builder, t *rules.Target, numeric bool) {
	switch t.Kind {
	case rules.TargetReject:
		b.WriteString(" reject-with " + t.RejectWith.String())
	case rules.TargetLog:
		b.WriteString(" LOG")
		if numeric {
			fmt.Fprintf(b, " flags 0 level %d", t.LogLevel)
		} else {
			b.WriteString(" level " + rules.LogLevelNames[t.LogLevel&7])
		}
		if t.LogPrefix != "" {
			b.WriteString(" prefix \"" + t.LogPrefix + "\"")
		}
	case rules.TargetMark:
		b.WriteString(markPrint("MARK", t.MarkValue, t.MarkMask))
	case rules.TargetConnmark:
		switch t.ConnmarkMode {
		case rules.ConnmarkSet:
			b.WriteString(markPrint("CONNMARK", t.MarkValue, t.MarkMask))
		case rules.ConnmarkSave:
			switch {
			case t.NfMask == 0xFFFFFFFF && t.CtMask == 0xFFFFFFFF:
				b.WriteString(" CONNMARK save")
			case t.NfMask == t.CtMask:
				fmt.Fprintf(b, " CONNMARK save mask 0x%x", t.NfMask)
			default:
				fmt.Fprintf(b, " CONNMARK save nfmask 0x%x ctmask ~0x%x", t.NfMask, t.CtMask)
			}
		case rules.ConnmarkRestore:
			switch {
			case t.NfMask == 0xFFFFFFFF && t.CtMask == 0xFFFFFFFF:
				b.WriteString(" CONNMARK restore")
			case t.NfMask == t.CtMask:
				fmt.Fprintf(b, " CONNMARK restore mask 0x%x", t.NfMask)
			default:
				fmt.Fprintf(b, " CONNMARK restore ctmask 0x%x nfmask ~0x%x", t.CtMask, t.NfMask)
			}
		}
	case rules.TargetSNAT, rules.TargetDNAT:
		b.WriteString(" to:" + natRange(t.NAT) + natFlags(t.NAT, ""))
	case rules.TargetMasquerade:
		if t.NAT.Flags&rules.NATProtoSpecified != 0 {
			b.WriteString(" masq ports: " + strings.TrimPrefix(natRange(t.NAT), ":"))
		}
		b.WriteString(natFlags(t.NAT, ""))
	case rules.TargetFullCone:
		b.WriteString(fullConeOpts(t.NAT, "to:", "persistent", "masq ports: ", ""))
	}
}

func ruleLine(b *strings.Builder, r *rules.Rule, num int, o ListOptions) {
	if o.LineNumbers {
		fmt.Fprintf(b, "%-4d ", num)
	}
	if o.Verbose {
		b.WriteString(printNum(r.Counters.Packets, o.Exact, true))
		b.WriteString(printNum(r.Counters.Bytes, o.Exact, true))
	}
	fmt.Fprintf(b, "%-9s ", targetName(&r.Target))
	if r.ProtoInvert {
		b.WriteByte('!')
	} else {
		b.WriteByte(' ')
	}
	if n := protoName(r.Proto, o.Numeric); n != "" {
		fmt.Fprintf(b, "%-4s ", n)
	} else {
		fmt.Fprintf(b, "%-4d ", r.Proto)
	}
	if r.FragmentInvert {
		b.WriteByte('!')
	} else {
		b.WriteByte('-')
	}
	if r.Fragment || r.FragmentInvert {
		b.WriteByte('f')
	} else {
		b.WriteByte('-')
	}
	b.WriteByte(' ')
	if o.Verbose {
		any := "any"
		if o.Numeric {
			any = "*"
		}
		for k, i := range []rules.Iface{r.InIface, r.OutIface} {
			s := i.Name
			if s == "" {
				s = any
			}
			if i.Invert {
				s = "!" + s
			}
			if k == 0 {
				fmt.Fprintf(b, " %-6s ", s)
			} else {
				fmt.Fprintf(b, "%-6s ", s)
			}
		}
	}
	for _, a := range []rules.Addr{r.Src, r.Dst} {
		if a.Invert {
			b.WriteByte('!')
		} else {
			b.WriteByte(' ')
		}
		fmt.Fprintf(b, "%-19s ", listAddr(a, o.Numeric))
	}
	if r.Target.Kind == rules.TargetGoto {
		b.WriteString("[goto] ")
	}
	for i := range r.Matches {
		matchList(b, &r.Matches[i], o.Numeric)
	}
	targetList(b, &r.Target, o.Numeric)
	b.WriteByte('\n')
}

// WriteList writes iptables -L output for a table, one chain, or one rule
// (num > 0, the rule line only).
func WriteList(w io.Writer, m *rules.Model, t rules.TableID, chain string, num int, o ListOptions) error {
	tb := &m.Tables[t]
	if chain != "" && tb.Chain(chain) < 0 {
		return &Error{Word: chain, Err: fmt.Errorf("chain %q: %w", chain, rules.ErrNoChain)}
	}
	var b strings.Builder
	found := false
	for _, c := range tb.Chains {
		if chain != "" && c.Name != chain {
			continue
		}
		if num > 0 {
			if num > len(c.Rules) {
				return &Error{Err: fmt.Errorf("index of rule %d in chain %s too big: %w", num, c.Name, rules.ErrNoRule)}
			}
			ruleLine(&b, &c.Rules[num-1], num, o)
			continue
		}
		if found {
			b.WriteByte('\n')
		}
		found = true
		b.WriteString("Chain " + c.Name)
		if c.Builtin {
			b.WriteString(" (policy " + c.Policy.String())
			if o.Verbose {
				b.WriteString(" " + printNum(c.Counters.Packets, o.Exact, false) + "packets, " + printNum(c.Counters.Bytes, o.Exact, false) + "bytes")
			}
			b.WriteString(")\n")
		} else {
			fmt.Fprintf(&b, " (%d references)\n", tb.References(c.Name))
		}
		if o.LineNumbers {
			b.WriteString("num  ")
		}
		if o.Verbose {
			if o.Exact {
				b.WriteString("    pkts      bytes ")
			} else {
				b.WriteString(" pkts bytes ")
			}
		}
		fmt.Fprintf(&b, "%-9s ", "target")
		b.WriteString(" prot opt")
		if o.Verbose {
			fmt.Fprintf(&b, " %-6s %-6s ", "in", "out")
		}
		fmt.Fprintf(&b, " %-19s  %-19s \n", "source", "destination")
		for i := range c.Rules {
			ruleLine(&b, &c.Rules[i], i+1, o)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
