package iptables

import (
	"errors"
	"fmt"
)

// Error is a parse or apply error. Line is the 1-based line of a restore
// file (0 for a single command line), Word the offending word when there
// is one. Err says why, naming the word; it wraps one of the sentinels
// below or of package rules (rules.ErrUnsupported, rules.ErrNoChain, ...).
type Error struct {
	Line int
	Word string
	Err  error
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Sentinel errors.
var (
	ErrUnknownOption = errors.New("unknown option")
	ErrBadValue      = errors.New("bad value")
	ErrMissingArg    = errors.New("missing argument")
	ErrUsage         = errors.New("bad command")
	ErrSyntax        = errors.New("syntax error")
)

func errf(word string, format string, args ...any) *Error {
	return &Error{Word: word, Err: fmt.Errorf(format, args...)}
}

// Tokenize splits a line into words as iptables-restore does: words are
// separated by blanks; double or single quotes group a word (the quotes
// are removed), and inside quotes a backslash escapes the next character.
// An unterminated quote is an error.
func Tokenize(line string) ([]string, error) {
	var words []string
	var cur []byte
	inWord := false
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == '\\' && i+1 < len(line) {
				i++
				cur = append(cur, line[i])
			} else if c == quote {
				quote = 0
			} else {
				cur = append(cur, c)
			}
		case c == '"' || c == '\'':
			quote = c
			inWord = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, string(cur))
				cur = cur[:0]
				inWord = false
			}
		default:
			cur = append(cur, c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, &Error{Err: fmt.Errorf("unterminated quoted string %q: %w", string(cur), ErrSyntax)}
	}
	if inWord {
		words = append(words, string(cur))
	}
	return words, nil
}
