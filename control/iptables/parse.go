package iptables

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"xnat/dataplane/rules"
)

// Op is an iptables command.
type Op uint8

const (
	OpNone Op = iota
	OpAppend
	OpInsert
	OpDelete
	OpReplace
	OpCheck
	OpFlush
	OpZero
	OpNewChain
	OpDeleteChain
	OpRename
	OpPolicy
	OpList
	OpListRules
)

var opLetters = map[Op]string{
	OpAppend: "-A", OpInsert: "-I", OpDelete: "-D", OpReplace: "-R", OpCheck: "-C", OpFlush: "-F",
	OpZero: "-Z", OpNewChain: "-N", OpDeleteChain: "-X", OpRename: "-E", OpPolicy: "-P",
	OpList: "-L", OpListRules: "-S",
}

func (o Op) String() string { return opLetters[o] }

// Command is one parsed iptables command line.
type Command struct {
	Op      Op
	Table   rules.TableID
	Chain   string // "" when the command takes an optional chain and none was given
	NewName string // -E
	Num     int    // 1-based rule number (-I, -D N, -R, -Z/-L/-S CHAIN N); 0: none
	HasRule bool   // a rule specification was given (-A, -I, -D spec, -R, -C)
	Rule    rules.Rule
	Policy  rules.Policy

	Numeric, Verbose, Exact, LineNumbers bool
	TableSet                             bool // -t was given
	CountersSet                          bool // -c was given
}

type optDef struct {
	name string
	args int
}

var matchOptDefs = map[rules.MatchKind][]optDef{
	rules.MatchTCP:       {{"source-port", 1}, {"sport", 1}, {"destination-port", 1}, {"dport", 1}, {"tcp-flags", 2}, {"syn", 0}, {"tcp-option", 1}},
	rules.MatchUDP:       {{"source-port", 1}, {"sport", 1}, {"destination-port", 1}, {"dport", 1}},
	rules.MatchICMP:      {{"icmp-type", 1}},
	rules.MatchMultiport: {{"source-ports", 1}, {"sports", 1}, {"destination-ports", 1}, {"dports", 1}, {"ports", 1}},
	rules.MatchIPRange:   {{"src-range", 1}, {"dst-range", 1}},
	rules.MatchLength:    {{"length", 1}},
	rules.MatchLimit:     {{"limit", 1}, {"limit-burst", 1}},
	rules.MatchMAC:       {{"mac-source", 1}},
	rules.MatchMark:      {{"mark", 1}},
	rules.MatchState:     {{"state", 1}},
	rules.MatchConntrack: {{"ctstate", 1}, {"ctproto", 1}, {"ctorigsrc", 1}, {"ctorigdst", 1}, {"ctreplsrc", 1}, {"ctrepldst", 1}, {"ctorigsrcport", 1}, {"ctorigdstport", 1}, {"ctreplsrcport", 1}, {"ctrepldstport", 1}, {"ctstatus", 1}, {"ctexpire", 1}, {"ctdir", 1}},
	rules.MatchComment:   {{"comment", 1}},
}

var targetOptDefs = map[rules.TargetKind][]optDef{
	rules.TargetReject:     {{"reject-with", 1}},
	rules.TargetLog:        {{"log-level", 1}, {"log-prefix", 1}, {"log-tcp-sequence", 0}, {"log-tcp-options", 0}, {"log-ip-options", 0}, {"log-uid", 0}, {"log-macdecode", 0}},
	rules.TargetMark:       {{"set-mark", 1}, {"set-xmark", 1}, {"and-mark", 1}, {"or-mark", 1}, {"xor-mark", 1}},
	rules.TargetConnmark:   {{"set-mark", 1}, {"set-xmark", 1}, {"save-mark", 0}, {"restore-mark", 0}, {"and-mark", 1}, {"or-mark", 1}, {"xor-mark", 1}, {"mask", 1}, {"nfmask", 1}, {"ctmask", 1}},
	rules.TargetSNAT:       {{"to-source", 1}, {"random", 0}, {"random-fully", 0}, {"persistent", 0}},
	rules.TargetDNAT:       {{"to-destination", 1}, {"random", 0}, {"random-fully", 0}, {"persistent", 0}},
	rules.TargetMasquerade: {{"to-ports", 1}, {"random", 0}, {"random-fully", 0}},
	rules.TargetFullCone:   {{"to-source", 1}, {"persistent", 0}, {"to-ports", 1}, {"random", 0}, {"random-fully", 0}},
}

// Targets and matches iptables has that xnat rejects by name.
var unsupportedTargets = map[string]bool{
	"REDIRECT": true, "NETMAP": true, "TPROXY": true, "NOTRACK": true, "CT": true, "TOS": true,
	"TTL": true, "MIRROR": true, "QUEUE": true, "NFQUEUE": true, "ULOG": true, "NFLOG": true,
	"TCPMSS": true, "CLASSIFY": true, "DSCP": true, "ECN": true, "SET": true, "TEE": true,
	"AUDIT": true, "CHECKSUM": true, "CLUSTERIP": true, "CONNSECMARK": true, "SECMARK": true,
	"HMARK": true, "IDLETIMER": true, "LED": true, "RATEEST": true, "SYNPROXY": true, "TRACE": true,
	"TCPOPTSTRIP": true, "HL": true, "DNPT": true, "SNPT": true, "CONNLIMIT": true,
}

// generic long options; the value is the short letter they stand for.
var longGeneric = []struct {
	name  string
	short byte
}{
	{"append", 'A'}, {"insert", 'I'}, {"delete", 'D'}, {"replace", 'R'}, {"check", 'C'},
	{"flush", 'F'}, {"zero", 'Z'}, {"new-chain", 'N'}, {"delete-chain", 'X'}, {"rename-chain", 'E'},
	{"policy", 'P'}, {"list", 'L'}, {"list-rules", 'S'}, {"table", 't'}, {"source", 's'}, {"src", 's'},
	{"destination", 'd'}, {"dst", 'd'}, {"protocol", 'p'}, {"in-interface", 'i'},
	{"out-interface", 'o'}, {"jump", 'j'}, {"goto", 'g'}, {"match", 'm'}, {"fragment", 'f'},
	{"numeric", 'n'}, {"verbose", 'v'}, {"exact", 'x'}, {"line-numbers", '#'}, {"set-counters", 'c'},
	{"wait", 'w'}, {"ipv4", '4'}, {"ipv6", '6'},
}

type matchState struct {
	idx  int // index in rule.Matches
	seen map[string]bool
}

type parser struct {
	words   []string
	pos     int
	cmd     Command
	seen    map[byte]bool
	matches []matchState
	tseen   map[string]bool
	tname   string // -j/-g word
	invert  bool
	nfmask  uint32
	ctmask  uint32
	nfSet   bool
	ctSet   bool
	restore bool
}

// Parse parses the words of one iptables command line, without the
// program name (as a shell has split them). In restore mode (the lines of
// an iptables-restore file) -t is refused and the table is given.
func Parse(words []string) (*Command, error) {
	return parse(words, false, rules.Filter)
}

// ParseLine tokenizes a command line and parses it; a leading "iptables"
// word is skipped.
func ParseLine(line string) (*Command, error) {
	words, err := Tokenize(line)
	if err != nil {
		return nil, err
	}
	if len(words) > 0 && !strings.HasPrefix(words[0], "-") && words[0] != "!" {
		if words[0] != "iptables" {
			return nil, errf(words[0], "unknown command %q (expected iptables): %w", words[0], ErrUsage)
		}
		words = words[1:]
	}
	return Parse(words)
}

func parse(words []string, restore bool, table rules.TableID) (cmd *Command, err error) {
	p := &parser{words: words, seen: map[byte]bool{}, tseen: map[string]bool{}, restore: restore}
	p.cmd.Table = table
	p.cmd.Rule.ID = rules.NewRuleID()
	for p.pos < len(p.words) {
		if err := p.step(); err != nil {
			return nil, err
		}
	}
	if p.invert {
		return nil, errf("!", "\"!\" at the end of the line negates nothing: %w", ErrSyntax)
	}
	if err := p.finish(); err != nil {
		return nil, err
	}
	return &p.cmd, nil
}

func (p *parser) next(opt string) (string, error) {
	if p.pos >= len(p.words) {
		return "", errf(opt, "option %q requires an argument: %w", opt, ErrMissingArg)
	}
	w := p.words[p.pos]
	p.pos++
	return w, nil
}

// arg takes an option's argument, honouring the old intrapositioned
// negation "--opt ! value".
func (p *parser) arg(opt string) (string, error) {
	w, err := p.next(opt)
	if err != nil {
		return "", err
	}
	if w == "!" {
		if p.invert {
			return "", errf("!", "multiple \"!\" flags not allowed: %w", ErrSyntax)
		}
		p.invert = true
		return p.next(opt)
	}
	return w, nil
}

// optional returns the next word when it is not an option.
func (p *parser) optional() (string, bool) {
	if p.pos < len(p.words) {
		w := p.words[p.pos]
		if w != "" && w[0] != '-' && w != "!" {
			p.pos++
			return w, true
		}
	}
	return "", false
}

func (p *parser) takeInvert() bool {
	inv := p.invert
	p.invert = false
	return inv
}

func (p *parser) step() error {
	w := p.words[p.pos]
	p.pos++
	switch {
	case w == "!":
		if p.invert {
			return errf(w, "multiple \"!\" flags not allowed: %w", ErrSyntax)
		}
		p.invert = true
		return nil
	case strings.HasPrefix(w, "--") && len(w) > 2:
		return p.long(w)
	case len(w) == 2 && w[0] == '-' && w[1] != '-':
		return p.short(w[1], w)
	case strings.HasPrefix(w, "-") && len(w) > 2:
		return errf(w, "unknown option %q (long options take two dashes): %w", w, ErrUnknownOption)
	}
	for _, dash := range []string{"–", "—", "−"} {
		if strings.HasPrefix(w, dash) {
			return errf(w, "unknown argument %q: it starts with a typographic dash %q, not \"--\": %w", w, dash, ErrSyntax)
		}
	}
	if !utf8.ValidString(w) {
		return errf(w, "bad argument %q: not valid UTF-8: %w", w, ErrSyntax)
	}
	if p.invert {
		return errf(w, "unexpected argument %q after \"!\" (\"!\" must come before an option): %w", w, ErrSyntax)
	}
	return errf(w, "unexpected argument %q: %w", w, ErrSyntax)
}

func (p *parser) setOp(op Op, word string) error {
	if p.cmd.Op != OpNone {
		return errf(word, "cannot use %s with %s: %w", word, p.cmd.Op, ErrUsage)
	}
	if p.invert {
		return errf(word, "\"!\" cannot negate %s: %w", word, ErrSyntax)
	}
	p.cmd.Op = op
	return nil
}

func (p *parser) chainArg(word string) (string, error) {
	c, err := p.next(word)
	if err != nil {
		return "", err
	}
	if c == "" || c[0] == '-' || c == "!" {
		return "", errf(c, "%s needs a chain name, got %q: %w", word, c, ErrMissingArg)
	}
	return c, nil
}

func (p *parser) numArg(word string, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, errf(s, "invalid rule number %q for %s: %w", s, word, ErrBadValue)
	}
	return n, nil
}

func (p *parser) short(c byte, word string) error {
	var err error
	switch c {
	case 'A', 'I', 'D', 'R', 'C', 'N', 'E', 'P':
		op := map[byte]Op{'A': OpAppend, 'I': OpInsert, 'D': OpDelete, 'R': OpReplace, 'C': OpCheck, 'N': OpNewChain, 'E': OpRename, 'P': OpPolicy}[c]
		if err = p.setOp(op, word); err != nil {
			return err
		}
		if p.cmd.Chain, err = p.chainArg(word); err != nil {
			return err
		}
		switch op {
		case OpInsert:
			if s, ok := p.optional(); ok {
				if p.cmd.Num, err = p.numArg(word, s); err != nil {
					return err
				}
			}
		case OpDelete:
			if s, ok := p.optional(); ok {
				if p.cmd.Num, err = p.numArg(word, s); err != nil {
					return err
				}
			}
		case OpReplace:
			s, err := p.next(word)
			if err != nil {
				return err
			}
			if p.cmd.Num, err = p.numArg(word, s); err != nil {
				return err
			}
		case OpRename:
			if p.cmd.NewName, err = p.chainArg(word); err != nil {
				return err
			}
		case OpPolicy:
			s, err := p.next(word)
			if err != nil {
				return err
			}
			switch s {
			case "ACCEPT":
				p.cmd.Policy = rules.PolicyAccept
			case "DROP":
				p.cmd.Policy = rules.PolicyDrop
			default:
				return errf(s, "bad policy %q (ACCEPT or DROP): %w", s, ErrBadValue)
			}
		}
		return nil
	case 'F', 'Z', 'X', 'L', 'S':
		op := map[byte]Op{'F': OpFlush, 'Z': OpZero, 'X': OpDeleteChain, 'L': OpList, 'S': OpListRules}[c]
		// -L -Z together is a valid iptables combination; xnat keeps one.
		if err = p.setOp(op, word); err != nil {
			return err
		}
		if s, ok := p.optional(); ok {
			p.cmd.Chain = s
			if op == OpZero || op == OpList || op == OpListRules {
				if s, ok := p.optional(); ok {
					if p.cmd.Num, err = p.numArg(word, s); err != nil {
						return err
					}
				}
			}
		}
		return nil
	case 't':
		if p.restore {
			return errf(word, "the -t option cannot be used in iptables-restore: %w", ErrUsage)
		}
		if p.seen['t'] {
			return errf(word, "multiple -t flags not allowed: %w", ErrUsage)
		}
		p.seen['t'] = true
		s, err := p.next(word)
		if err != nil {
			return err
		}
		t, err := rules.ParseTable(s)
		if err != nil {
			return &Error{Word: s, Err: err}
		}
		p.cmd.Table = t
		p.cmd.TableSet = true
		return nil
	case 's', 'd', 'p', 'i', 'o', 'f':
		return p.header(c, word)
	case 'j', 'g':
		return p.jump(c, word)
	case 'm':
		if p.invert {
			return errf(word, "unexpected \"!\" before -m: %w", ErrSyntax)
		}
		name, err := p.next(word)
		if err != nil {
			return err
		}
		return p.loadMatch(name)
	case 'n':
		p.cmd.Numeric = true
		return nil
	case 'v':
		p.cmd.Verbose = true
		return nil
	case 'x':
		p.cmd.Exact = true
		return nil
	case '#':
		p.cmd.LineNumbers = true
		return nil
	case 'c':
		if p.seen['c'] {
			return errf(word, "multiple -c flags not allowed: %w", ErrUsage)
		}
		p.seen['c'] = true
		a, err := p.next(word)
		if err != nil {
			return err
		}
		b, err := p.next(word)
		if err != nil {
			return err
		}
		pk, e1 := strconv.ParseUint(a, 10, 64)
		by, e2 := strconv.ParseUint(b, 10, 64)
		if e1 != nil || e2 != nil {
			return errf(a, "-c needs packet and byte counts, got %q %q: %w", a, b, ErrBadValue)
		}
		p.cmd.Rule.Counters = rules.Counters{Packets: pk, Bytes: by}
		p.cmd.CountersSet = true
		return nil
	case 'w':
		// xnat commits atomically and has no xtables lock to wait for.
		if s, ok := p.optional(); ok {
			if _, err := strconv.ParseUint(s, 10, 32); err != nil {
				return errf(s, "-w takes seconds, got %q: %w", s, ErrBadValue)
			}
		}
		return nil
	case '4':
		return nil
	case '6':
		return errf(word, "IPv6 (-6) is %w", rules.ErrUnsupported)
	case 'h':
		return errf(word, "help (-h) is not available here: %w", ErrUsage)
	}
	return errf(word, "unknown option %q: %w", word, ErrUnknownOption)
}

func (p *parser) header(c byte, word string) error {
	if p.seen[c] {
		return errf(word, "multiple -%c flags not allowed: %w", c, ErrUsage)
	}
	p.seen[c] = true
	r := &p.cmd.Rule
	if c == 'f' {
		if p.takeInvert() {
			r.FragmentInvert = true
		} else {
			r.Fragment = true
		}
		return nil
	}
	v, err := p.arg(word)
	if err != nil {
		return err
	}
	inv := p.takeInvert()
	switch c {
	case 's', 'd':
		a, err := parseNet(v)
		if err != nil {
			return &Error{Word: v, Err: fmt.Errorf("%s: %w", word, err)}
		}
		a.Invert = inv
		if c == 's' {
			r.Src = a
		} else {
			r.Dst = a
		}
	case 'p':
		n, err := parseProto(v)
		if err != nil {
			return &Error{Word: v, Err: err}
		}
		r.Proto, r.ProtoInvert = n, inv
		if n == 0 && inv {
			return errf(v, "rule would never match protocol: %w", ErrBadValue)
		}
	case 'i', 'o':
		if err := rules.CheckIfaceName(v); err != nil || v == "" {
			if err == nil {
				err = fmt.Errorf("empty interface name: %w", ErrBadValue)
			}
			return &Error{Word: v, Err: err}
		}
		if v == "+" && !inv {
			// "+" matches every interface: iptables keeps no condition.
			v = ""
		}
		if c == 'i' {
			r.InIface = rules.Iface{Name: v, Invert: inv}
		} else {
			r.OutIface = rules.Iface{Name: v, Invert: inv}
		}
	}
	return nil
}

func (p *parser) jump(c byte, word string) error {
	if p.invert {
		return errf(word, "unexpected \"!\" before %s: %w", word, ErrSyntax)
	}
	if p.tname != "" {
		return errf(word, "multiple -j/-g flags not allowed: %w", ErrUsage)
	}
	name, err := p.next(word)
	if err != nil {
		return err
	}
	p.tname = name
	t := &p.cmd.Rule.Target
	if k, ok := rules.TargetByName(name); ok {
		if c == 'g' {
			return errf(name, "-g needs a user-defined chain, not %q: %w", name, ErrBadValue)
		}
		t.Kind = k
		switch k {
		case rules.TargetLog:
			t.LogLevel = rules.DefaultLogLevel
		case rules.TargetReject:
			t.RejectWith = rules.RejectPortUnreachable
		}
		return nil
	}
	if unsupportedTargets[name] {
		return errf(name, "unknown target %q: %w", name, rules.ErrUnsupported)
	}
	if err := rules.CheckChainName(name); err != nil {
		return &Error{Word: name, Err: fmt.Errorf("bad target %q: %w", name, err)}
	}
	if _, ok := rules.HookByName(rules.Filter, name); ok {
		return errf(name, "cannot jump to built-in chain %q: %w", name, ErrBadValue)
	}
	t.Kind = rules.TargetJump
	if c == 'g' {
		t.Kind = rules.TargetGoto
	}
	t.Chain = name
	return nil
}

var unsupportedMatches = map[string]bool{
	"recent": true, "hashlimit": true, "connlimit": true, "set": true, "string": true, "owner": true,
	"addrtype": true, "physdev": true, "u32": true, "bpf": true, "cgroup": true, "policy": true,
	"time": true, "statistic": true, "quota": true, "connbytes": true, "dscp": true, "tos": true,
	"ttl": true, "ecn": true, "helper": true, "pkttype": true, "socket": true, "rpfilter": true,
	"sctp": true, "dccp": true, "esp": true, "ah": true, "udplite": true, "connmark": true,
	"devgroup": true, "realm": true, "cluster": true, "cpu": true, "nfacct": true, "osf": true,
	"ipvs": true, "rateest": true, "tcpmss": true, "ipcomp": true, "l2tp": true, "geoip": true,
	"mh": true, "frag": true, "hl": true, "ipv6header": true, "rt": true, "hbh": true, "dst": true,
	"eui64": true, "condition": true, "account": true, "fuzzy": true, "iface": true, "lscan": true,
}

func (p *parser) loadMatch(name string) error {
	k, ok := rules.MatchByName(strings.ToLower(name))
	if !ok {
		if unsupportedMatches[strings.ToLower(name)] {
			return errf(name, "unknown match %q: %w", name, rules.ErrUnsupported)
		}
		return errf(name, "unknown match %q: no such match module (%w)", name, rules.ErrUnsupported)
	}
	m := rules.Match{Kind: k}
	switch k {
	case rules.MatchTCP, rules.MatchUDP:
		m.SrcPort, m.DstPort = rules.AllPorts, rules.AllPorts
	case rules.MatchICMP:
		m.ICMPType, m.ICMPCodeMin, m.ICMPCodeMax = 0xFF, 0, 0xFF
	case rules.MatchLength:
		m.LengthMin, m.LengthMax = 0, 0xFFFF
	case rules.MatchLimit:
		m.LimitAvg, m.LimitBurst = rules.DefaultLimitAvg, rules.DefaultLimitBurst
	case rules.MatchMark:
		m.MarkMask = 0xFFFFFFFF
	}
	p.cmd.Rule.Matches = append(p.cmd.Rule.Matches, m)
	p.matches = append(p.matches, matchState{idx: len(p.cmd.Rule.Matches) - 1, seen: map[string]bool{}})
	return nil
}

type cand struct {
	kind  int // 0 generic, 1 match, 2 target
	mi    int // match state index
	short byte
	def   optDef
}

func (p *parser) candidates(name string, exact bool) []cand {
	var out []cand
	ok := func(n string) bool {
		if exact {
			return n == name
		}
		return strings.HasPrefix(n, name)
	}
	for _, g := range longGeneric {
		if ok(g.name) {
			out = append(out, cand{kind: 0, short: g.short, def: optDef{g.name, 0}})
		}
	}
	for i := len(p.matches) - 1; i >= 0; i-- {
		k := p.cmd.Rule.Matches[p.matches[i].idx].Kind
		for _, d := range matchOptDefs[k] {
			if ok(d.name) {
				out = append(out, cand{kind: 1, mi: i, def: d})
			}
		}
	}
	for _, d := range targetOptDefs[p.cmd.Rule.Target.Kind] {
		if ok(d.name) {
			out = append(out, cand{kind: 2, def: d})
		}
	}
	return out
}

func (p *parser) long(word string) error {
	name := word[2:]
	var value string
	hasValue := false
	if i := strings.IndexByte(name, '='); i >= 0 {
		name, value, hasValue = name[:i], name[i+1:], true
	}
	cs := p.candidates(name, true)
	if len(cs) == 0 {
		cs = p.candidates(name, false)
		if len(cs) > 1 {
			// The same option name in several loaded modules is resolved
			// to the most recently loaded one, as for exact names.
			first := cs[0]
			same := true
			for _, c := range cs[1:] {
				if c.def.name != first.def.name {
					same = false
				}
			}
			if !same {
				var names []string
				for _, c := range cs {
					names = append(names, "--"+c.def.name)
				}
				return errf(word, "option %q is ambiguous (%s): %w", word, strings.Join(names, ", "), ErrUnknownOption)
			}
		}
	}
	if len(cs) == 0 {
		// Implicit protocol match: -p tcp/udp/icmp loads its match on
		// first use of one of its options.
		r := &p.cmd.Rule
		var k rules.MatchKind
		switch {
		case r.Proto == rules.ProtoTCP && !r.ProtoInvert:
			k = rules.MatchTCP
		case r.Proto == rules.ProtoUDP && !r.ProtoInvert:
			k = rules.MatchUDP
		case r.Proto == rules.ProtoICMP && !r.ProtoInvert:
			k = rules.MatchICMP
		}
		if k != 0 {
			found := false
			for _, d := range matchOptDefs[k] {
				if d.name == name {
					found = true
				}
			}
			if !found {
				for _, d := range matchOptDefs[k] {
					if strings.HasPrefix(d.name, name) {
						found = true
					}
				}
			}
			if found {
				if err := p.loadMatch(k.String()); err != nil {
					return err
				}
				cs = p.candidates(name, true)
				if len(cs) == 0 {
					cs = p.candidates(name, false)
				}
			}
		}
	}
	if len(cs) == 0 {
		hint := ""
		switch name {
		case "dport", "sport", "destination-port", "source-port", "tcp-flags", "syn":
			hint = " (port and flag matches need -p tcp or -p udp first)"
		case "icmp-type":
			hint = " (needs -p icmp first)"
		case "to-source", "to-destination", "to-ports", "reject-with", "log-prefix", "log-level", "set-mark", "set-xmark":
			hint = " (it belongs to a target: give -j first)"
		}
		if strings.HasPrefix(name, "to-source") || strings.HasPrefix(name, "to-destination") {
			if len(name) > len("to-source") {
				hint = " (a blank is missing between the option and its value?)"
			}
		}
		return errf(word, "unknown option %q%s: %w", word, hint, ErrUnknownOption)
	}
	c := cs[0]
	if c.kind == 0 {
		if hasValue {
			// put the value back as the next word
			p.words = append(p.words[:p.pos], append([]string{value}, p.words[p.pos:]...)...)
		}
		return p.short(c.short, word)
	}
	var args []string
	if hasValue {
		args = append(args, value)
	}
	for len(args) < c.def.args {
		v, err := p.arg(word)
		if err != nil {
			return err
		}
		args = append(args, v)
	}
	if hasValue && c.def.args == 0 {
		return errf(word, "option --%s takes no argument: %w", c.def.name, ErrBadValue)
	}
	inv := p.takeInvert()
	if c.kind == 1 {
		ms := &p.matches[c.mi]
		return p.matchOpt(&p.cmd.Rule.Matches[ms.idx], ms, c.def.name, args, inv, word)
	}
	return p.targetOpt(c.def.name, args, inv, word)
}

func canon(name string) string {
	switch name {
	case "source-port":
		return "sport"
	case "destination-port":
		return "dport"
	case "source-ports":
		return "sports"
	case "destination-ports":
		return "dports"
	}
	return name
}

func (p *parser) matchOpt(m *rules.Match, ms *matchState, name string, args []string, inv bool, word string) error {
	name = canon(name)
	key := name
	if m.Kind == rules.MatchMultiport {
		key = "ports"
	}
	if ms.seen[key] {
		return errf(word, "multiple --%s options in one -m %s not allowed: %w", name, m.Kind, ErrUsage)
	}
	ms.seen[key] = true
	bad := func(err error) error { return &Error{Word: args[0], Err: fmt.Errorf("--%s: %w", name, err)} }
	noInv := func() error {
		if inv {
			return errf(word, "--%s cannot be negated: %w", name, ErrSyntax)
		}
		return nil
	}
	switch name {
	case "sport", "dport":
		r, err := parsePortRange(args[0])
		if err != nil {
			return bad(err)
		}
		if name == "sport" {
			m.SrcPort, m.SrcPortInvert = r, inv
		} else {
			m.DstPort, m.DstPortInvert = r, inv
		}
	case "tcp-flags", "syn":
		if ms.seen["flags"] {
			return errf(word, "--syn and --tcp-flags together not allowed: %w", ErrUsage)
		}
		ms.seen["flags"] = true
		if name == "syn" {
			m.FlagsMask, m.FlagsCmp = rules.TCPFin|rules.TCPSyn|rules.TCPRst|rules.TCPAck, rules.TCPSyn
		} else {
			mask, err := parseTCPFlags(args[0])
			if err != nil {
				return bad(err)
			}
			cmp, err := parseTCPFlags(args[1])
			if err != nil {
				return &Error{Word: args[1], Err: fmt.Errorf("--tcp-flags: %w", err)}
			}
			m.FlagsMask, m.FlagsCmp = mask, cmp
		}
		m.FlagsInvert = inv
	case "tcp-option":
		return errf(word, "option --tcp-option is %w", rules.ErrUnsupported)
	case "icmp-type":
		t, lo, hi, err := parseICMPType(args[0])
		if err != nil {
			return bad(err)
		}
		m.ICMPType, m.ICMPCodeMin, m.ICMPCodeMax, m.Invert = t, lo, hi, inv
	case "sports", "dports", "ports":
		m.Multi = map[string]uint8{"sports": rules.MultiSource, "dports": rules.MultiDest, "ports": rules.MultiEither}[name]
		m.Ports = nil
		for _, s := range strings.Split(args[0], ",") {
			r, err := parsePortRange(s)
			if err != nil {
				return bad(err)
			}
			m.Ports = append(m.Ports, r)
		}
		m.Invert = inv
	case "src-range", "dst-range":
		i := strings.IndexByte(args[0], '-')
		if i < 0 {
			return bad(fmt.Errorf("range %q needs FROM-TO: %w", args[0], ErrBadValue))
		}
		lo, err := parseIP(args[0][:i])
		if err != nil {
			return bad(err)
		}
		hi, err := parseIP(args[0][i+1:])
		if err != nil {
			return bad(err)
		}
		if lo > hi {
			return bad(fmt.Errorf("range %q is reversed: %w", args[0], ErrBadValue))
		}
		ar := rules.AddrRange{Lo: lo, Hi: hi, Set: true, Invert: inv}
		if name == "src-range" {
			m.SrcRange = ar
		} else {
			m.DstRange = ar
		}
	case "length":
		r, err := parsePortRange(args[0])
		if err != nil {
			return bad(fmt.Errorf("invalid length %q: %w", args[0], ErrBadValue))
		}
		m.LengthMin, m.LengthMax, m.Invert = r.Lo, r.Hi, inv
	case "limit":
		if err := noInv(); err != nil {
			return err
		}
		avg, err := parseRate(args[0])
		if err != nil {
			return bad(err)
		}
		m.LimitAvg = avg
	case "limit-burst":
		if err := noInv(); err != nil {
			return err
		}
		n, err := strconv.ParseUint(args[0], 10, 32)
		if err != nil || n == 0 || n > 10000 {
			return bad(fmt.Errorf("bad --limit-burst %q (1 to 10000): %w", args[0], ErrBadValue))
		}
		m.LimitBurst = uint32(n)
	case "mac-source":
		mac, err := parseMAC(args[0])
		if err != nil {
			return bad(err)
		}
		m.MAC, m.Invert = mac, inv
	case "mark":
		v, mask, err := parseMarkMask(args[0])
		if err != nil {
			return bad(err)
		}
		m.Mark, m.MarkMask, m.Invert = v, mask, inv
	case "state", "ctstate":
		var st rules.CtState
		for _, s := range strings.Split(args[0], ",") {
			b, ok := rules.CtStateByName(strings.ToUpper(s))
			if !ok || (name == "state" && (b == rules.CtSNAT || b == rules.CtDNAT)) {
				return bad(fmt.Errorf("bad %s %q: %w", name, s, ErrBadValue))
			}
			st |= b
		}
		if name == "state" && inv {
			// xt_state has no invert flag: iptables stores the complement.
			st = ^st & (rules.CtInvalid | rules.CtNew | rules.CtRelated | rules.CtEstablished | rules.CtUntracked)
			inv = false
		}
		m.States, m.Invert = st, inv
	case "comment":
		if err := noInv(); err != nil {
			return err
		}
		if len(args[0]) > rules.MaxComment {
			return bad(fmt.Errorf("comment longer than %d characters: %w", rules.MaxComment, ErrBadValue))
		}
		m.Comment = args[0]
	default:
		return errf(word, "conntrack option --%s is %w (only --ctstate is)", name, rules.ErrUnsupported)
	}
	return nil
}

func (p *parser) targetOpt(name string, args []string, inv bool, word string) error {
	if inv {
		return errf(word, "target option --%s cannot be negated: %w", name, ErrSyntax)
	}
	t := &p.cmd.Rule.Target
	seenKey := name
	switch name {
	case "set-mark", "set-xmark", "save-mark", "restore-mark", "and-mark", "or-mark", "xor-mark":
		seenKey = "action"
	}
	if p.tseen[seenKey] {
		return errf(word, "%s: only one --%s (or other action) allowed: %w", t.Kind, name, ErrUsage)
	}
	p.tseen[seenKey] = true
	bad := func(err error) error { return &Error{Word: args[0], Err: fmt.Errorf("--%s: %w", name, err)} }
	switch t.Kind {
	case rules.TargetReject:
		rt, ok := rules.RejectByName(args[0])
		if !ok {
			return bad(fmt.Errorf("unknown reject type %q: %w", args[0], rules.ErrUnsupported))
		}
		t.RejectWith = rt
	case rules.TargetLog:
		switch name {
		case "log-level":
			lv := -1
			for i, n := range rules.LogLevelNames {
				if strings.EqualFold(n, args[0]) {
					lv = i
				}
			}
			switch strings.ToLower(args[0]) {
			case "warn":
				lv = 4
			case "err":
				lv = 3
			case "panic":
				lv = 0
			}
			if lv < 0 {
				n, err := strconv.ParseUint(args[0], 10, 8)
				if err != nil || n > 7 {
					return bad(fmt.Errorf("log level %q not known: %w", args[0], ErrBadValue))
				}
				lv = int(n)
			}
			t.LogLevel = uint8(lv)
		case "log-prefix":
			if len(args[0]) > rules.MaxLogPrefix {
				return bad(fmt.Errorf("prefix longer than %d characters: %w", rules.MaxLogPrefix, ErrBadValue))
			}
			if args[0] == "" {
				return bad(fmt.Errorf("empty prefix: %w", ErrBadValue))
			}
			t.LogPrefix = args[0]
		default:
			return errf(word, "LOG option --%s is %w", name, rules.ErrUnsupported)
		}
	case rules.TargetMark, rules.TargetConnmark:
		conn := t.Kind == rules.TargetConnmark
		switch name {
		case "set-xmark", "set-mark":
			v, m, err := parseMarkMask(args[0])
			if err != nil {
				return bad(err)
			}
			if name == "set-mark" {
				m |= v
			}
			t.MarkValue, t.MarkMask = v, m
			t.ConnmarkMode = rules.ConnmarkSet
		case "and-mark":
			v, err := parseUint32(args[0])
			if err != nil {
				return bad(err)
			}
			t.MarkValue, t.MarkMask, t.ConnmarkMode = 0, ^v, rules.ConnmarkSet
		case "or-mark":
			v, err := parseUint32(args[0])
			if err != nil {
				return bad(err)
			}
			t.MarkValue, t.MarkMask, t.ConnmarkMode = v, v, rules.ConnmarkSet
		case "xor-mark":
			v, err := parseUint32(args[0])
			if err != nil {
				return bad(err)
			}
			t.MarkValue, t.MarkMask, t.ConnmarkMode = v, 0, rules.ConnmarkSet
		case "save-mark", "restore-mark":
			t.ConnmarkMode = rules.ConnmarkSave
			if name == "restore-mark" {
				t.ConnmarkMode = rules.ConnmarkRestore
			}
		case "mask", "nfmask", "ctmask":
			v, err := parseUint32(args[0])
			if err != nil {
				return bad(err)
			}
			if name != "ctmask" {
				p.nfmask, p.nfSet = v, true
			}
			if name != "nfmask" {
				p.ctmask, p.ctSet = v, true
			}
		}
		if !conn && t.ConnmarkMode != 0 {
			t.ConnmarkMode = 0
		}
	case rules.TargetSNAT, rules.TargetDNAT, rules.TargetMasquerade, rules.TargetFullCone:
		switch name {
		case "to-source", "to-destination":
			if t.Kind == rules.TargetFullCone && strings.Contains(args[0], ":") {
				return bad(fmt.Errorf("FULLCONENAT --to-source takes addresses only (ports go in --to-ports): %w", ErrBadValue))
			}
			nr, err := parseNATRange(args[0])
			if err != nil {
				return bad(err)
			}
			t.NAT.MinAddr, t.NAT.MaxAddr = nr.MinAddr, nr.MaxAddr
			if t.Kind != rules.TargetFullCone {
				t.NAT.MinPort, t.NAT.MaxPort = nr.MinPort, nr.MaxPort
			}
			t.NAT.Flags |= nr.Flags
		case "to-ports":
			pr, err := parsePortDash(args[0])
			if err != nil {
				return bad(err)
			}
			t.NAT.MinPort, t.NAT.MaxPort = pr.Lo, pr.Hi
			t.NAT.Flags |= rules.NATProtoSpecified
		case "random":
			t.NAT.Flags |= rules.NATRandom
		case "random-fully":
			t.NAT.Flags |= rules.NATRandomFully
		case "persistent":
			t.NAT.Flags |= rules.NATPersistent
		}
	}
	return nil
}

// finish checks the command as a whole.
func (p *parser) finish() error {
	c := &p.cmd
	r := &c.Rule
	hasSpec := len(p.seen) > 0 && (p.seen['s'] || p.seen['d'] || p.seen['p'] || p.seen['i'] || p.seen['o'] || p.seen['f']) ||
		len(r.Matches) > 0 || p.tname != ""
	switch c.Op {
	case OpNone:
		return errf("", "no command specified (one of -A -I -D -R -C -F -Z -N -X -E -P -L -S): %w", ErrUsage)
	case OpAppend, OpInsert, OpReplace, OpCheck:
		c.HasRule = true
	case OpDelete:
		if c.Num > 0 && hasSpec {
			return errf("", "-D takes a rule number or a rule specification, not both: %w", ErrUsage)
		}
		if c.Num == 0 {
			c.HasRule = true
		}
	default:
		if hasSpec {
			return errf("", "%s takes no rule specification: %w", c.Op, ErrUsage)
		}
		if p.seen['c'] && c.Op != OpPolicy {
			return errf("-c", "%s takes no counters: %w", c.Op, ErrUsage)
		}
	}
	if c.Op == OpNewChain || c.Op == OpRename {
		name := c.Chain
		if c.Op == OpRename {
			name = c.NewName
		}
		if err := rules.CheckChainName(name); err != nil {
			return &Error{Word: name, Err: err}
		}
	}
	if !c.HasRule {
		return nil
	}
	// Match checks that depend on -p given anywhere on the line.
	for i := range r.Matches {
		m := &r.Matches[i]
		switch m.Kind {
		case rules.MatchTCP, rules.MatchUDP, rules.MatchICMP:
			if !p.matchSeenAny(i) && m.Kind == rules.MatchICMP {
				return errf("icmp", "-m icmp needs --icmp-type: %w", ErrMissingArg)
			}
		case rules.MatchMultiport:
			if m.Multi == 0 {
				return errf("multiport", "-m multiport needs --sports, --dports or --ports: %w", ErrMissingArg)
			}
		case rules.MatchIPRange:
			if !m.SrcRange.Set && !m.DstRange.Set {
				return errf("iprange", "-m iprange needs --src-range or --dst-range: %w", ErrMissingArg)
			}
		case rules.MatchLength, rules.MatchMAC, rules.MatchMark, rules.MatchState, rules.MatchConntrack, rules.MatchComment:
			if !p.matchSeenAny(i) {
				return errf(m.Kind.String(), "-m %s needs an option (%s): %w", m.Kind, optNames(m.Kind), ErrMissingArg)
			}
		}
	}
	t := &r.Target
	switch t.Kind {
	case rules.TargetMark:
		if !p.tseen["action"] {
			return errf("MARK", "MARK needs one of --set-xmark, --set-mark, --and-mark, --or-mark, --xor-mark: %w", ErrMissingArg)
		}
	case rules.TargetConnmark:
		if !p.tseen["action"] {
			return errf("CONNMARK", "CONNMARK needs one of --set-xmark, --set-mark, --save-mark, --restore-mark, --and-mark, --or-mark, --xor-mark: %w", ErrMissingArg)
		}
		if t.ConnmarkMode == rules.ConnmarkSet && (p.tseen["mask"] || p.tseen["nfmask"] || p.tseen["ctmask"]) {
			return errf("CONNMARK", "CONNMARK --mask/--nfmask/--ctmask go with --save-mark or --restore-mark: %w", ErrUsage)
		}
		if t.ConnmarkMode == rules.ConnmarkSet {
			t.NfMask, t.CtMask = 0, 0
		} else {
			t.NfMask, t.CtMask = 0xFFFFFFFF, 0xFFFFFFFF
			if p.nfSet {
				t.NfMask = p.nfmask
			}
			if p.ctSet {
				t.CtMask = p.ctmask
			}
		}
	case rules.TargetSNAT:
		if !p.tseen["to-source"] {
			return errf("SNAT", "SNAT needs --to-source: %w", ErrMissingArg)
		}
	case rules.TargetDNAT:
		if !p.tseen["to-destination"] {
			return errf("DNAT", "DNAT needs --to-destination: %w", ErrMissingArg)
		}
	}
	var hook rules.Hook
	builtin := false
	if h, ok := rules.HookByName(c.Table, c.Chain); ok {
		hook, builtin = h, true
	}
	if err := rules.CheckRule(c.Table, c.Chain, builtin, hook, r); err != nil {
		word := p.tname
		return &Error{Word: word, Err: err}
	}
	return nil
}

func (p *parser) matchSeenAny(i int) bool {
	for _, ms := range p.matches {
		if ms.idx == i {
			return len(ms.seen) > 0
		}
	}
	return false
}

func optNames(k rules.MatchKind) string {
	var s []string
	for _, d := range matchOptDefs[k] {
		s = append(s, "--"+d.name)
	}
	return strings.Join(s, ", ")
}
