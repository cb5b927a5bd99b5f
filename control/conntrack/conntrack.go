package conntrack

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"xnat/flowtable"
)

// Command is what a conntrack command line asks for.
type Command uint8

const (
	List   Command = iota + 1 // -L, --dump
	Delete                    // -D, --delete
	Flush                     // -F, --flush
	Count                     // -C, --count
	Stats                     // -S, --stats
)

// Filter selects connections, as conntrack's filter options do. Zero
// fields match anything.
type Filter struct {
	Proto    uint8  // -p
	Src, Dst uint32 // -s, -d: the original direction's addresses
	HasSrc   bool
	HasDst   bool
	SPort    uint16 // --sport (original direction)
	DPort    uint16 // --dport
	HasSPort bool
	HasDPort bool
	State    flowtable.State // --state (TCP)
	HasState bool
	Mark     uint32 // --mark v[/mask]
	MarkMask uint32
	HasMark  bool
}

// Args is a parsed conntrack command line.
type Args struct {
	Command Command
	Filter  Filter
	Output  string // -o extended|... (only the default is supported; kept for errors)
}

// ErrUsage wraps every command-line error.
var ErrUsage = errors.New("conntrack usage")

func usage(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, a...))
}

// Parse reads a conntrack command line (the words after "conntrack").
func Parse(words []string) (*Args, error) {
	a := &Args{}
	setCmd := func(c Command, w string) error {
		if a.Command != 0 {
			return usage("only one command at a time (%q given after another)", w)
		}
		a.Command = c
		return nil
	}
	for i := 0; i < len(words); i++ {
		w := words[i]
		val := func() (string, error) {
			if i+1 >= len(words) {
				return "", usage("option %q needs a value", w)
			}
			i++
			return words[i], nil
		}
		var err error
		switch w {
		case "-L", "--dump":
			err = setCmd(List, w)
		case "-D", "--delete":
			err = setCmd(Delete, w)
		case "-F", "--flush":
			err = setCmd(Flush, w)
		case "-C", "--count":
			err = setCmd(Count, w)
		case "-S", "--stats":
			err = setCmd(Stats, w)
		case "-p", "--proto", "--protonum":
			var v string
			if v, err = val(); err == nil {
				a.Filter.Proto, err = parseProto(v)
			}
		case "-s", "--src", "--orig-src":
			var v string
			if v, err = val(); err == nil {
				a.Filter.Src, err = parseAddr(w, v)
				a.Filter.HasSrc = true
			}
		case "-d", "--dst", "--orig-dst":
			var v string
			if v, err = val(); err == nil {
				a.Filter.Dst, err = parseAddr(w, v)
				a.Filter.HasDst = true
			}
		case "--sport", "--orig-port-src":
			var v string
			if v, err = val(); err == nil {
				a.Filter.SPort, err = parsePort(w, v)
				a.Filter.HasSPort = true
			}
		case "--dport", "--orig-port-dst":
			var v string
			if v, err = val(); err == nil {
				a.Filter.DPort, err = parsePort(w, v)
				a.Filter.HasDPort = true
			}
		case "--state":
			var v string
			if v, err = val(); err == nil {
				a.Filter.State, err = parseState(v)
				a.Filter.HasState = true
			}
		case "-m", "--mark":
			var v string
			if v, err = val(); err == nil {
				a.Filter.Mark, a.Filter.MarkMask, err = parseMark(v)
				a.Filter.HasMark = true
			}
		case "-o", "--output":
			var v string
			if v, err = val(); err == nil && v != "default" {
				err = usage("output format %q is not supported by xnat (only the default)", v)
			}
		default:
			err = usage("unknown argument %q", w)
		}
		if err != nil {
			return nil, err
		}
	}
	if a.Command == 0 {
		return nil, usage("no command given (-L, -D, -F, -C or -S)")
	}
	if (a.Filter.HasSPort || a.Filter.HasDPort) && a.Filter.Proto != flowtable.ProtoTCP && a.Filter.Proto != flowtable.ProtoUDP {
		return nil, usage("--sport and --dport need -p tcp or -p udp")
	}
	if a.Filter.HasState && a.Filter.Proto != flowtable.ProtoTCP {
		return nil, usage("--state needs -p tcp")
	}
	if (a.Command == Flush || a.Command == Stats || a.Command == Count) && a.Filter != (Filter{}) {
		return nil, usage("filters go with -L and -D only")
	}
	return a, nil
}

func parseProto(v string) (uint8, error) {
	switch strings.ToLower(v) {
	case "tcp":
		return flowtable.ProtoTCP, nil
	case "udp":
		return flowtable.ProtoUDP, nil
	case "icmp":
		return flowtable.ProtoICMP, nil
	}
	n, err := strconv.ParseUint(v, 10, 8)
	if err != nil || n == 0 {
		return 0, usage("unknown protocol %q", v)
	}
	return uint8(n), nil
}

func parseAddr(opt, v string) (uint32, error) {
	a, err := netip.ParseAddr(v)
	if err != nil || !a.Is4() {
		return 0, usage("%s %q: not an IPv4 address", opt, v)
	}
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), nil
}

func parsePort(opt, v string) (uint16, error) {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return 0, usage("%s %q: not a port", opt, v)
	}
	return uint16(n), nil
}

var tcpStates = map[string]flowtable.State{
	"SYN_SENT": flowtable.TCPSynSent, "SYN_RECV": flowtable.TCPSynRecv, "ESTABLISHED": flowtable.TCPEstablished,
	"FIN_WAIT": flowtable.TCPFinWait, "CLOSE_WAIT": flowtable.TCPCloseWait, "LAST_ACK": flowtable.TCPLastAck,
	"TIME_WAIT": flowtable.TCPTimeWait, "CLOSE": flowtable.TCPClose, "SYN_SENT2": flowtable.TCPSynSent2,
}

func parseState(v string) (flowtable.State, error) {
	s, ok := tcpStates[strings.ToUpper(v)]
	if !ok {
		return 0, usage("unknown TCP state %q", v)
	}
	return s, nil
}

func parseMark(v string) (uint32, uint32, error) {
	m, mask, hasMask := strings.Cut(v, "/")
	mv, err := strconv.ParseUint(m, 0, 32)
	if err != nil {
		return 0, 0, usage("--mark %q: not a 32-bit value", v)
	}
	mk := uint64(0xffffffff)
	if hasMask {
		if mk, err = strconv.ParseUint(mask, 0, 32); err != nil {
			return 0, 0, usage("--mark %q: bad mask", v)
		}
	}
	return uint32(mv), uint32(mk), nil
}

// Match reports whether a connection passes the filter.
func (f *Filter) Match(fi *flowtable.FlowInfo) bool {
	o := &fi.Orig
	switch {
	case f.Proto != 0 && o.Proto != f.Proto,
		f.HasSrc && o.Src != f.Src,
		f.HasDst && o.Dst != f.Dst,
		f.HasSPort && o.SrcPort != f.SPort,
		f.HasDPort && o.DstPort != f.DPort,
		f.HasState && fi.State() != f.State,
		f.HasMark && fi.Mark&f.MarkMask != f.Mark&f.MarkMask:
		return false
	}
	return true
}

// WriteEntry writes one connection as `conntrack -L` prints it:
//
//	tcp      6 431999 ESTABLISHED src=… dst=… sport=… dport=… src=… dst=… sport=… dport=… [ASSURED] mark=0 use=1
//	udp      17 29 src=… dst=… sport=… dport=… [UNREPLIED] src=… dst=… sport=… dport=… mark=0 use=1
//
// With accounting on, packets= and bytes= follow each direction's tuple.
func WriteEntry(w io.Writer, fi *flowtable.FlowInfo, acct bool) error {
	var b strings.Builder
	o := &fi.Orig
	fmt.Fprintf(&b, "%-8s %d %d ", flowtable.ProtoName(o.Proto), o.Proto, int64(fi.Expires.Seconds()))
	if st := fi.State(); st.IsTCP() {
		b.WriteString(st.String())
		b.WriteByte(' ')
	}
	writeTuple(&b, &fi.Orig, true)
	if acct {
		fmt.Fprintf(&b, "packets=%d bytes=%d ", fi.Counters[0].Packets, fi.Counters[0].Bytes)
	}
	if fi.Unreplied() {
		b.WriteString("[UNREPLIED] ")
	}
	writeTuple(&b, &fi.Reply, false)
	if acct {
		fmt.Fprintf(&b, "packets=%d bytes=%d ", fi.Counters[1].Packets, fi.Counters[1].Bytes)
	}
	if fi.Assured() {
		b.WriteString("[ASSURED] ")
	}
	fmt.Fprintf(&b, "mark=%d use=1\n", fi.Mark)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeTuple writes "src=… dst=… sport=… dport=… " (ICMP: type, code, id).
func writeTuple(b *strings.Builder, t *flowtable.Tuple, orig bool) {
	fmt.Fprintf(b, "src=%s dst=%s ", flowtable.FormatAddr(t.Src), flowtable.FormatAddr(t.Dst))
	switch t.Proto {
	case flowtable.ProtoTCP, flowtable.ProtoUDP:
		fmt.Fprintf(b, "sport=%d dport=%d ", t.SrcPort, t.DstPort)
	case flowtable.ProtoICMP:
		// An echo request's tuple carries its identifier as SrcPort, its
		// reply's as DstPort (flowtable.Tuple's convention).
		typ, id := 8, t.SrcPort
		if !orig || t.SrcPort == 0 && t.DstPort != 0 {
			typ, id = 0, t.DstPort
		}
		fmt.Fprintf(b, "type=%d code=0 id=%d ", typ, id)
	}
}

// WriteStats writes per-core statistics as `conntrack -S` does.
func WriteStats(w io.Writer, stats []flowtable.Stats) error {
	for cpu, s := range stats {
		if _, err := fmt.Fprintf(w, "cpu=%-4d\tfound=%d invalid=%d insert=%d insert_failed=%d drop=%d early_drop=%d error=0 search_restart=%d\n",
			cpu, s.Found, s.Invalid, s.Insert, s.InsertFailed, s.Drop, s.EarlyDrop, s.SearchRestart); err != nil {
			return err
		}
	}
	return nil
}

// Summary is conntrack's closing line after -L or -D, on standard error:
// "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown."
func Summary(cmd Command, n int) string {
	verb := "shown"
	if cmd == Delete {
		verb = "deleted"
	}
	return fmt.Sprintf("xnat conntrack (conntrack-tools format): %d flow entries have been %s.", n, verb)
}
