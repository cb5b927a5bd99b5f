// Package iptables is xnat's control-plane view of the rules: iptables
// command lines and iptables-save files in, the same listings out.
//
//   - Tokenize splits a line as iptables-restore does (blanks separate
//     words; double or single quotes group, backslash escapes inside
//     quotes). ParseLine and Parse turn a command line (-t -A -I -D -R -C
//     -F -Z -N -X -E -P -L -S, long forms, --opt=value, unique prefixes of
//     long options as getopt allows, "! --opt" and the old "--opt ! v")
//     into a Command. As in iptables, -p tcp/udp/icmp loads its match on
//     first use of one of its options, so "-p tcp --dport 22" is the rule
//     "-p tcp -m tcp --dport 22".
//   - Apply runs a rule or chain command on a model copy-on-write: the old
//     model is never touched, so a rejected command changes nothing.
//   - Restore reads an iptables-save file (*table, :CHAIN POLICY
//     [pkts:bytes], [pkts:bytes] -A ..., COMMIT); each table is validated
//     at its COMMIT; any error returns nothing, so a file with an error
//     changes nothing. WriteSave writes the same format, normalised as
//     iptables-save normalises (masks as prefix lengths, /32 kept as
//     iptables-save keeps it, implicit -m tcp, MARK as --set-xmark, log
//     levels as numbers, rates in the largest exact unit).
//   - WriteList formats -L [-n] [-v] [-x] [--line-numbers] with iptables'
//     column layout and match texts; WriteRules formats -S [-v].
//
// Every error is an *Error: Line (in a file), the offending Word, and Err,
// which names the word and the reason and wraps a sentinel
// (rules.ErrUnsupported for what xnat does not implement — REDIRECT,
// NETMAP, TPROXY, the mangle/raw/security tables, matches and options not
// listed in package rules — ErrUnknownOption, ErrBadValue,
// rules.ErrNoChain, ...). The message reads like
//
//	line 7: unknown target "TPROXY": not supported by xnat
//
// Host names are not resolved (addresses must be numeric); service names
// are taken from a small built-in table, and protocol names (-p gre, as
// iptables prints them) from a built-in copy of a Linux system's protocols
// database, so nothing is read from /etc at run time; -w is accepted and
// ignored (commits are atomic, there is no lock to wait for).
package iptables
