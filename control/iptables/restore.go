package iptables

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"xnat/dataplane/rules"
)

// RestoreOptions are iptables-restore's flags.
type RestoreOptions struct {
	// Counters keeps the counters in the file ([p:b] and -c), as
	// iptables-restore -c does; without it they are zero.
	Counters bool
	// NoFlush adds to the tables instead of replacing them (-n).
	NoFlush bool
}

// MaxLineLength bounds a restore file's lines.
const MaxLineLength = 1 << 20

// Restore reads an iptables-save format file and applies it to base,
// returning the new model and the tables the file contained, in order.
// It follows iptables-restore:
//
//   - Only the tables the file names change; every other table of base is
//     returned as it was.
//   - A table section ("*filter" ... "COMMIT") first flushes the table:
//     every rule goes and every user chain is deleted; the built-in chains'
//     policies stay as they were unless a ":CHAIN POLICY" line sets them
//     (as iptables-legacy-restore does; iptables-nft-restore recreates the
//     table, so its policies fall back to ACCEPT).
//   - With NoFlush nothing is flushed: rules are added to the chains as
//     they are; ":CHAIN - [p:b]" creates a user chain, or flushes it when
//     it exists (declaring it again later in the section flushes it
//     again); ":BUILTIN POLICY" sets the policy and leaves the rules.
//   - ":BUILTIN - [p:b]" leaves the policy as it is; declaring a built-in
//     chain twice is allowed, the last policy counts. Without NoFlush a
//     user chain declared twice is an error (iptables-legacy-restore's
//     "chain exists"); a policy other than "-" on a user chain is one too.
//   - Policy counters and rule counters are kept only with Counters.
//   - A table may have several sections; each is applied in turn as
//     another run of iptables-restore would apply it.
//
// Unlike iptables-restore, which commits each table at its COMMIT, a file
// is all or nothing: each section is validated at its COMMIT, and on any
// error nothing is returned, so a file with an error changes nothing.
// Errors are *Error with the line number.
func Restore(r io.Reader, base *rules.Model, opt RestoreOptions) (*rules.Model, []rules.TableID, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), MaxLineLength)
	if base == nil {
		base = rules.NewModel() // restoring onto nothing: an empty rule set
	}
	m := base.Clone()
	var tables []rules.TableID
	var work *rules.Model
	var cur rules.TableID
	inTable := false
	declared := map[string]bool{}
	lineOf := map[uint64]int{}
	line := 0
	lerr := func(err error) error {
		var e *Error
		if errors.As(err, &e) {
			ne := *e
			ne.Line = line
			return &ne
		}
		return &Error{Line: line, Err: err}
	}
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		switch {
		case text[0] == '*':
			if inTable {
				return nil, nil, lerr(fmt.Errorf("table %q not committed before %q (COMMIT expected): %w", cur, text, ErrSyntax))
			}
			t, err := rules.ParseTable(strings.TrimSpace(text[1:]))
			if err != nil {
				return nil, nil, lerr(&Error{Word: text[1:], Err: err})
			}
			cur, inTable = t, true
			work = m.Clone()
			declared = map[string]bool{}
			if !opt.NoFlush {
				tb := &work.Tables[t]
				kept := tb.Chains[:0]
				for _, c := range tb.Chains {
					if c.Builtin {
						c.Rules = nil
						kept = append(kept, c)
					}
				}
				tb.Chains = kept
			}
		case text == "COMMIT":
			if !inTable {
				return nil, nil, lerr(fmt.Errorf("COMMIT outside a table: %w", ErrSyntax))
			}
			if err := rules.ValidateTable(cur, &work.Tables[cur]); err != nil {
				var re *rules.RuleError
				if errors.As(err, &re) && re.Index >= 0 {
					tb := &work.Tables[cur]
					if ci := tb.Chain(re.Chain); ci >= 0 && re.Index < len(tb.Chains[ci].Rules) {
						if l, ok := lineOf[tb.Chains[ci].Rules[re.Index].ID]; ok {
							return nil, nil, &Error{Line: l, Err: err}
						}
					}
				}
				return nil, nil, lerr(err)
			}
			m.Tables[cur] = work.Tables[cur]
			if !slices.Contains(tables, cur) {
				tables = append(tables, cur)
			}
			inTable = false
		case !inTable:
			return nil, nil, lerr(fmt.Errorf("%q outside a table (expected *filter or *nat first): %w", firstWord(text), ErrSyntax))
		case text[0] == ':':
			if err := declareChain(work, cur, text, declared, opt); err != nil {
				return nil, nil, lerr(err)
			}
		default:
			if err := restoreRule(work, cur, text, opt, lineOf, line); err != nil {
				return nil, nil, lerr(err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, &Error{Line: line + 1, Err: fmt.Errorf("reading: %w", err)}
	}
	if inTable {
		return nil, nil, &Error{Line: line + 1, Err: fmt.Errorf("COMMIT expected for table %q: %w", cur, ErrSyntax)}
	}
	return m, tables, nil
}

func firstWord(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return s
}

// parseCounters parses "[P:B]".
func parseCounters(s string) (rules.Counters, error) {
	if len(s) < 5 || s[0] != '[' || s[len(s)-1] != ']' {
		return rules.Counters{}, fmt.Errorf("bad counters %q (want [packets:bytes]): %w", s, ErrSyntax)
	}
	p, b, ok := strings.Cut(s[1:len(s)-1], ":")
	pk, e1 := strconv.ParseUint(p, 10, 64)
	by, e2 := strconv.ParseUint(b, 10, 64)
	if !ok || e1 != nil || e2 != nil {
		return rules.Counters{}, fmt.Errorf("bad counters %q (want [packets:bytes]): %w", s, ErrSyntax)
	}
	return rules.Counters{Packets: pk, Bytes: by}, nil
}

func declareChain(m *rules.Model, t rules.TableID, text string, declared map[string]bool, opt RestoreOptions) error {
	f := strings.Fields(text[1:])
	if len(f) < 2 || len(f) > 3 {
		return &Error{Word: text, Err: fmt.Errorf("bad chain line %q (want :CHAIN POLICY [packets:bytes]): %w", text, ErrSyntax)}
	}
	name, pol := f[0], f[1]
	var cnt rules.Counters
	if len(f) == 3 {
		c, err := parseCounters(f[2])
		if err != nil {
			return &Error{Word: f[2], Err: err}
		}
		cnt = c
	}
	tb := &m.Tables[t]
	if _, builtin := rules.HookByName(t, name); builtin {
		c := &tb.Chains[tb.Chain(name)]
		switch pol {
		case "-":
			return nil // the policy and its counters stay
		case "ACCEPT":
			c.Policy = rules.PolicyAccept
		case "DROP":
			if t == rules.NAT {
				return &Error{Word: pol, Err: fmt.Errorf("policy DROP in nat: the \"nat\" table is not intended for filtering, the use of DROP is therefore inhibited: %w", rules.ErrInvalid)}
			}
			c.Policy = rules.PolicyDrop
		default:
			return &Error{Word: pol, Err: fmt.Errorf("bad policy %q for built-in chain %s (ACCEPT or DROP): %w", pol, name, ErrBadValue)}
		}
		if opt.Counters {
			c.Counters = cnt
		}
		return nil
	}
	if pol != "-" {
		return &Error{Word: name, Err: fmt.Errorf("can't set policy %q on %q: not a built-in chain of %s: %w", pol, name, t, ErrBadValue)}
	}
	if err := rules.CheckChainName(name); err != nil {
		return &Error{Word: name, Err: err}
	}
	if declared[name] && !opt.NoFlush {
		return &Error{Word: name, Err: fmt.Errorf("chain %q declared twice: %w", name, rules.ErrChainExists)}
	}
	declared[name] = true
	if ci := tb.Chain(name); ci >= 0 {
		tb.Chains[ci].Rules = nil // -n: an existing chain is flushed
		return nil
	}
	return tb.AddChain(name)
}

func restoreRule(m *rules.Model, t rules.TableID, text string, opt RestoreOptions, lineOf map[uint64]int, line int) error {
	var cnt *rules.Counters
	if text[0] == '[' {
		end := strings.IndexByte(text, ']')
		if end < 0 {
			return &Error{Word: text, Err: fmt.Errorf("bad counters in %q: %w", text, ErrSyntax)}
		}
		c, err := parseCounters(text[:end+1])
		if err != nil {
			return &Error{Word: text[:end+1], Err: err}
		}
		cnt = &c
		text = text[end+1:]
	}
	words, err := Tokenize(text)
	if err != nil {
		return err
	}
	cmd, err := parse(words, true, t)
	if err != nil {
		return err
	}
	switch cmd.Op {
	case OpList, OpListRules:
		return &Error{Word: cmd.Op.String(), Err: fmt.Errorf("%s cannot be used in a restore file: %w", cmd.Op, ErrUsage)}
	}
	if cnt != nil {
		cmd.Rule.Counters = *cnt
	}
	if cmd.HasRule {
		lineOf[cmd.Rule.ID] = line
	}
	return applyInPlace(m, cmd, opt.Counters)
}
