// Package sysctl is xnat's run-time settings by the names a network
// engineer knows: the conntrack sysctls (net.netfilter.nf_conntrack_*)
// for the connection table, the reverse-path filter's
// (net.ipv4.conf.{all,default,IF}.rp_filter), and xnat's own keys
// (xnat.*). A set of
// changes is validated as a whole before any is applied, so a rejected
// change leaves every value as it was.
package sysctl

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"xnat/dataplane"
	"xnat/flowtable"
	"xnat/portalloc"
)

// Target is what the keys read and change.
type Target struct {
	Table    *flowtable.Table
	Settings *dataplane.Settings
	Limiter  *portalloc.SourceLimiter // may be nil: xnat.per_source_max and _ports are then read-only 0
	// Ifaces are the dataplane's interfaces in port ID order, each with
	// its own net.ipv4.conf.IF.rp_filter key (a dot in a name is written
	// as a slash, as Linux writes eth0.100's keys: net.ipv4.conf.eth0/100).
	Ifaces []string
	// Mappings is the full-cone mapping table (may be nil: the
	// xnat.fullcone_* keys then read 0 and refuse changes).
	Mappings *flowtable.Table
}

// Errors.
var (
	ErrUnknown  = errors.New("unknown key")
	ErrReadOnly = errors.New("read-only key")
	ErrValue    = errors.New("invalid value")
)

// Key is one setting.
type Key struct {
	Name     string
	Help     string
	ReadOnly bool
	get      func(t *Target) int64
	check    func(t *Target, v int64) error // nil: any value get accepts
	set      func(t *Target, v int64)
}

const nf = "net.netfilter."

var keys []Key

func init() {
	keys = []Key{
		{Name: nf + "nf_conntrack_max", Help: "connections the table holds at most (up to its capacity)",
			get:   func(t *Target) int64 { return int64(t.Table.Max()) },
			check: func(t *Target, v int64) error { return rangeCheck(v, 1, int64(t.Table.Capacity())) },
			set:   func(t *Target, v int64) { _ = t.Table.SetMax(int(v)) }},
		{Name: nf + "nf_conntrack_count", Help: "connections now", ReadOnly: true,
			get: func(t *Target) int64 { return int64(t.Table.Count()) }},
		{Name: nf + "nf_conntrack_buckets", Help: "index buckets (16 slots each)", ReadOnly: true,
			get: func(t *Target) int64 { return int64(t.Table.Buckets()) }},
		{Name: nf + "nf_conntrack_acct", Help: "per-connection counters (set at start)", ReadOnly: true,
			get: func(t *Target) int64 { return b2i(t.Table.Acct()) }},
		{Name: nf + "nf_conntrack_tcp_loose", Help: "pick up TCP connections already established (0 or 1)",
			get:   func(t *Target) int64 { return b2i(t.Settings.TCPLoose.Load()) },
			check: func(_ *Target, v int64) error { return rangeCheck(v, 0, 1) },
			set:   func(t *Target, v int64) { t.Settings.TCPLoose.Store(v == 1) }},
		{Name: nf + "nf_conntrack_tcp_be_liberal", Help: "accept TCP segments out of window (0 or 1)",
			get:   func(t *Target) int64 { return b2i(t.Settings.TCPBeLiberal.Load()) },
			check: func(_ *Target, v int64) error { return rangeCheck(v, 0, 1) },
			set:   func(t *Target, v int64) { t.Settings.TCPBeLiberal.Store(v == 1) }},
		{Name: nf + "nf_conntrack_tcp_ignore_invalid_rst", Help: "accept TCP resets below the acknowledged data (0 or 1)",
			get:   func(t *Target) int64 { return b2i(t.Settings.TCPIgnoreInvalidRst.Load()) },
			check: func(_ *Target, v int64) error { return rangeCheck(v, 0, 1) },
			set:   func(t *Target, v int64) { t.Settings.TCPIgnoreInvalidRst.Store(v == 1) }},
		{Name: nf + "nf_conntrack_tcp_max_retrans", Help: "retransmissions of one segment after which nf_conntrack_tcp_timeout_max_retrans applies",
			get:   func(t *Target) int64 { return t.Settings.TCPMaxRetrans.Load() },
			check: func(_ *Target, v int64) error { return rangeCheck(v, 0, 255) },
			set:   func(t *Target, v int64) { t.Settings.TCPMaxRetrans.Store(v) }},
		{Name: "xnat.capacity", Help: "connections the table was sized for at start", ReadOnly: true,
			get: func(t *Target) int64 { return int64(t.Table.Capacity()) }},
		{Name: "xnat.per_source_max", Help: "connections one inside address may have through NAT (0: no limit)",
			get: func(t *Target) int64 {
				if t.Limiter == nil {
					return 0
				}
				return int64(t.Limiter.Limit())
			},
			check: limiterCheck,
			set:   func(t *Target, v int64) { _ = t.Limiter.SetLimit(int(v)) }},
		{Name: "xnat.per_source_ports", Help: "external ports one inside address may hold through NAT (0: no limit)",
			get: func(t *Target) int64 {
				if t.Limiter == nil {
					return 0
				}
				return int64(t.Limiter.PortLimit())
			},
			check: limiterCheck,
			set:   func(t *Target, v int64) { _ = t.Limiter.SetPortLimit(int(v)) }},
		{Name: "xnat.fullcone_max", Help: "full-cone mappings (FULLCONENAT) held at most (up to xnat.fullcone_capacity); at the limit a new inside endpoint's connection runs as MASQUERADE/SNAT, counted mappings failed",
			get: func(t *Target) int64 {
				if t.Mappings == nil {
					return 0
				}
				return int64(t.Mappings.Max())
			},
			check: func(t *Target, v int64) error {
				if t.Mappings == nil {
					return fmt.Errorf("%w: no mapping table", ErrReadOnly)
				}
				return rangeCheck(v, 1, int64(t.Mappings.Capacity()))
			},
			set: func(t *Target, v int64) { _ = t.Mappings.SetMax(int(v)) }},
		{Name: "xnat.fullcone_capacity", Help: "full-cone mappings the mapping table was sized for (xnat.capacity, at least 1024)", ReadOnly: true,
			get: func(t *Target) int64 {
				if t.Mappings == nil {
					return 0
				}
				return int64(t.Mappings.Capacity())
			}},
		{Name: "xnat.fullcone_count", Help: "full-cone mappings now", ReadOnly: true,
			get: func(t *Target) int64 {
				if t.Mappings == nil {
					return 0
				}
				return int64(t.Mappings.Count())
			}},
		{Name: "xnat.tcp_loose", Help: "the same as net.netfilter.nf_conntrack_tcp_loose",
			get:   func(t *Target) int64 { return b2i(t.Settings.TCPLoose.Load()) },
			check: func(_ *Target, v int64) error { return rangeCheck(v, 0, 1) },
			set:   func(t *Target, v int64) { t.Settings.TCPLoose.Store(v == 1) }},
		{Name: "xnat.icmp_ratelimit", Help: "ICMP errors each core may send per second (0: none)",
			get:   func(t *Target) int64 { return t.Settings.ICMPRate.Load() },
			check: func(_ *Target, v int64) error { return rangeCheck(v, 0, 1_000_000) },
			set:   func(t *Target, v int64) { t.Settings.ICMPRate.Store(v) }},
		{Name: "xnat.icmp_burst", Help: "ICMP errors each core may send at once",
			get:   func(t *Target) int64 { return t.Settings.ICMPBurst.Load() },
			check: func(_ *Target, v int64) error { return rangeCheck(v, 1, 1_000_000) },
			set:   func(t *Target, v int64) { t.Settings.ICMPBurst.Store(v) }},
		{Name: "net.ipv4.neigh.default.unres_qlen_bytes", Help: "bytes of frames each core holds per next hop being resolved (each frame charged its 2 KiB buffer)",
			get:   func(t *Target) int64 { return t.Settings.UnresQlenBytes.Load() },
			check: func(_ *Target, v int64) error { return rangeCheck(v, 0, 1<<31-1) },
			set:   func(t *Target, v int64) { t.Settings.UnresQlenBytes.Store(v) }},
		rpKey("all", "reverse-path filter of every interface (0 off, 1 strict, 2 loose); an interface's mode is the larger of this and its own",
			func(t *Target) *atomic.Int32 { return &t.Settings.RPFilter.All }),
		rpKey("default", "reverse-path filter Linux gives interfaces created later (0 off, 1 strict, 2 loose)",
			func(t *Target) *atomic.Int32 { return &t.Settings.RPFilter.Default }),
		{Name: "xnat.sweep_budget", Help: "records each core's expiry sweep examines per batch (0: paced, one pass over the core's connections a second)",
			get:   func(t *Target) int64 { return t.Settings.SweepBudget.Load() },
			check: func(_ *Target, v int64) error { return rangeCheck(v, 0, 65536) },
			set:   func(t *Target, v int64) { t.Settings.SweepBudget.Store(v) }},
	}
	for _, name := range flowtable.TimeoutNames() {
		keys = append(keys, Key{Name: nf + name, Help: "seconds",
			get: func(t *Target) int64 {
				d, _ := t.Table.Timeout(name)
				return int64(d / time.Second)
			},
			check: func(_ *Target, v int64) error {
				return rangeCheck(v, 1, int64(flowtable.MaxTimeout/time.Second))
			},
			set: func(t *Target, v int64) { _ = t.Table.SetTimeout(name, time.Duration(v)*time.Second) }})
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
}

// rpKey is net.ipv4.conf.WHICH.rp_filter over the value v gives.
func rpKey(which, help string, v func(t *Target) *atomic.Int32) Key {
	return Key{Name: "net.ipv4.conf." + which + ".rp_filter", Help: help,
		get:   func(t *Target) int64 { return int64(v(t).Load()) },
		check: func(_ *Target, x int64) error { return rangeCheck(x, dataplane.RPFilterOff, dataplane.RPFilterLoose) },
		set:   func(t *Target, x int64) { v(t).Store(int32(x)) }}
}

// RPFilterKey is the name of an interface's rp_filter key.
func RPFilterKey(iface string) string {
	return "net.ipv4.conf." + strings.ReplaceAll(iface, ".", "/") + ".rp_filter"
}

// Keys lists the target's keys, sorted by name: every fixed key (the
// package's Keys) and each interface's rp_filter.
func (t *Target) Keys() []Key {
	out := Keys()
	for id, name := range t.Ifaces {
		if id >= dataplane.MaxPorts {
			break
		}
		k := rpKey("", "reverse-path filter of "+name+" (0 off, 1 strict, 2 loose)",
			func(t *Target) *atomic.Int32 { return &t.Settings.RPFilter.If[id] })
		k.Name = RPFilterKey(name)
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func limiterCheck(t *Target, v int64) error {
	if t.Limiter == nil {
		return fmt.Errorf("%w: no per-source limiter in this daemon", ErrReadOnly)
	}
	return rangeCheck(v, 0, portalloc.MaxSourceLimit)
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func rangeCheck(v, lo, hi int64) error {
	if v < lo || v > hi {
		return fmt.Errorf("%w: %d is out of range (%d to %d)", ErrValue, v, lo, hi)
	}
	return nil
}

// Keys lists every fixed key, sorted by name: those of every target
// (Target.Keys adds the interfaces').
func Keys() []Key { return append([]Key(nil), keys...) }

func lookup(t *Target, name string) (*Key, error) {
	for i := range keys {
		if keys[i].Name == name {
			return &keys[i], nil
		}
	}
	if strings.HasPrefix(name, "net.ipv4.conf.") {
		for _, k := range t.Keys() {
			if k.Name == name {
				return &k, nil
			}
		}
	}
	return nil, fmt.Errorf("%w %q", ErrUnknown, name)
}

// Get returns a key's value.
func Get(t *Target, name string) (int64, error) {
	k, err := lookup(t, name)
	if err != nil {
		return 0, err
	}
	return k.get(t), nil
}

// Value is one key and its value.
type Value struct {
	Name  string `json:"name"`
	Value int64  `json:"value"`
}

// All returns every key with its value, sorted by name.
func All(t *Target) []Value {
	ks := t.Keys()
	out := make([]Value, len(ks))
	for i := range ks {
		out[i] = Value{ks[i].Name, ks[i].get(t)}
	}
	return out
}

// Assignment is a parsed "name=value".
type Assignment struct {
	Name  string
	Value int64
}

// ParseAssignment reads "name=value" (spaces around '=' allowed, as
// sysctl accepts).
func ParseAssignment(s string) (Assignment, error) {
	name, val, ok := strings.Cut(s, "=")
	name, val = strings.TrimSpace(name), strings.TrimSpace(val)
	if !ok || name == "" {
		return Assignment{}, fmt.Errorf("%w: %q is not name=value", ErrValue, s)
	}
	v, err := strconv.ParseInt(val, 10, 64)
	if err != nil {
		return Assignment{}, fmt.Errorf("%w: %s=%q is not a whole number", ErrValue, name, val)
	}
	return Assignment{name, v}, nil
}

// Set applies assignments: all of them, or — when any key is unknown,
// read-only or given a bad value — none, with the first reason.
func Set(t *Target, as []Assignment) error {
	ks := make([]*Key, len(as))
	for i, a := range as {
		k, err := lookup(t, a.Name)
		if err != nil {
			return err
		}
		if k.ReadOnly {
			return fmt.Errorf("%w %q", ErrReadOnly, a.Name)
		}
		if err := k.check(t, a.Value); err != nil {
			return fmt.Errorf("%s: %w", a.Name, err)
		}
		ks[i] = k
	}
	for i, k := range ks {
		k.set(t, as[i].Value)
	}
	return nil
}
